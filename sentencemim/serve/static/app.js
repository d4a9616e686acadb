// sentencemim's page: every panel calls the JSON API (/api/...) and shows the answer.
// Hand-written, no dependencies.
"use strict";

const $ = (id) => document.getElementById(id);
const SVG = "http://www.w3.org/2000/svg";

async function api(path, body) {
  const opts = body === undefined ? {} : {
    method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body)};
  const r = await fetch("/api/" + path, opts);
  let data;
  try { data = await r.json(); } catch (e) { data = {error: r.status + " " + r.statusText}; }
  if (!r.ok) throw new Error(data.error || (r.status + " " + r.statusText));
  return data;
}

function num(id) { return Number($(id).value); }

function decoding() {
  return {method: $("dec-method").value, temperature: num("dec-temperature"), top_k: num("dec-top-k"),
          top_p: num("dec-top-p"), beam_size: num("dec-beam"), max_len: num("dec-max-len"),
          ban_unk: $("dec-ban-unk").checked};
}

function lines(id) { return $(id).value.split("\n").map((s) => s.trim()).filter((s) => s.length); }

function cell(tr, text, cls) {
  const td = document.createElement("td");
  td.textContent = text;
  if (cls) td.className = cls;
  tr.appendChild(td);
  return td;
}

function oovNote(oov) { return oov && oov.length ? " Out of vocabulary (read as <unk>): " + oov.join(", ") + "." : ""; }

// run `fn` for a button: clear the panel's error, show it if the call fails
function wire(button, prefix, fn) {
  $(button).addEventListener("click", async () => {
    $(prefix + "-error").textContent = "";
    $(button).disabled = true;
    try { await fn(); } catch (e) { $(prefix + "-error").textContent = e.message; }
    finally { $(button).disabled = false; }
  });
}

// ---------------------------------------------------------------- tabs
document.querySelectorAll("#tabs button").forEach((b) => b.addEventListener("click", () => {
  document.querySelectorAll("#tabs button").forEach((x) => x.classList.toggle("active", x === b));
  document.querySelectorAll(".panel").forEach((p) => p.classList.toggle("active", p.id === "panel-" + b.dataset.panel));
  if (b.dataset.panel === "map") loadMap();
}));

// ---------------------------------------------------------------- reconstruct
wire("rec-run", "rec", async () => {
  const d = await api("reconstruct", {sentences: lines("rec-input"), mode: $("rec-mode").value,
                                      scale: num("rec-scale"), seed: num("rec-seed"), decoding: decoding()});
  const body = $("rec-out").tBodies[0];
  body.replaceChildren();
  for (const r of d.rows) {
    const tr = body.insertRow();
    cell(tr, r.input); cell(tr, r.text, "out"); cell(tr, r.length, "num");
  }
  $("rec-note").textContent = d.z + "; " + d.decoding + "; seed " + d.seed + "." + oovNote(d.oov);
});

// ---------------------------------------------------------------- interpolate
wire("int-run", "int", async () => {
  const d = await api("interpolate", {a: $("int-a").value, b: $("int-b").value, steps: num("int-steps"),
                                      codes: $("int-codes").value, seed: num("int-seed"), decoding: decoding()});
  const body = $("int-out").tBodies[0];
  body.replaceChildren();
  const longest = Math.max(1, ...d.steps.map((s) => s.length));
  for (const s of d.steps) {
    const tr = body.insertRow();
    cell(tr, s.t.toFixed(2), "num"); cell(tr, s.text, "out"); cell(tr, s.length, "num");
    const bar = document.createElement("div");
    bar.className = "bar";
    bar.style.width = (100 * s.length / longest) + "px";
    cell(tr, "").appendChild(bar);
  }
  $("int-note").textContent = d.z + "; " + d.decoding + "; seed " + d.seed + "." + oovNote(d.oov);
});

// ---------------------------------------------------------------- sample
wire("smp-run", "smp", async () => {
  const d = await api("sample", {n: num("smp-n"), std: num("smp-std"), seed: num("smp-seed"), decoding: decoding()});
  $("smp-out").replaceChildren(...d.samples.map((s) => {
    const li = document.createElement("li");
    li.textContent = s.text + "  (" + s.length + " words)";
    return li;
  }));
  $("smp-note").textContent = d.prior + "; " + d.decoding + "; seed " + d.seed + ".";
});

// ---------------------------------------------------------------- question answering
wire("qa-answer-run", "qa-answer", async () => {
  const lengths = [...document.querySelectorAll(".qa-length")].filter((c) => c.checked).map((c) => c.value);
  const d = await api("qa/answer", {question: $("qa-question").value, lengths: lengths,
                                    sample: $("qa-sample").checked, seed: num("qa-seed")});
  const body = $("qa-answer-out").tBodies[0];
  body.replaceChildren();
  for (const a of d.answers) {
    const tr = body.insertRow();
    cell(tr, a.length); cell(tr, a.answer || "(no '?' in the decoded sentence)", "out"); cell(tr, a.decoded);
  }
  $("qa-answer-note").textContent = d.z + "; " + d.decoding + "." + oovNote(d.oov);
});

wire("qa-rank-run", "qa-rank", async () => {
  const d = await api("qa/rank", {question: $("qa-question").value, answers: lines("qa-candidates"),
                                  variant: $("qa-variant").value, seed: 0});
  const body = $("qa-rank-out").tBodies[0];
  body.replaceChildren();
  for (const c of [...d.candidates].sort((x, y) => x.rank - y.rank)) {
    const tr = body.insertRow();
    cell(tr, c.rank, "num"); cell(tr, c.score.toFixed(3), "num"); cell(tr, c.answer);
  }
  $("qa-rank-note").textContent = d.score + "." + oovNote(d.oov);
});

// ---------------------------------------------------------------- latent map
let mapState = null;  // {points, sx, sy}

function scaler(values, lo, hi) {
  const min = Math.min(...values), max = Math.max(...values);
  const span = max - min || 1;
  return (v) => lo + (hi - lo) * (v - min) / span;
}

function svgEl(name, attrs) {
  const el = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  return el;
}

async function loadMap() {
  if (mapState) return;
  let d;
  try { d = await api("map"); } catch (e) { $("map-error").textContent = e.message; return; }
  const svg = $("map-svg");
  svg.replaceChildren();
  const sx = scaler(d.points.map((p) => p.x), 20, 880), sy = scaler(d.points.map((p) => p.y), 380, 20);
  mapState = {points: d.points, sx: sx, sy: sy};
  const tip = $("map-tip");
  d.points.forEach((p, i) => {
    const c = svgEl("circle", {cx: sx(p.x), cy: sy(p.y), r: 4, class: "pt", "data-i": i});
    c.addEventListener("mouseenter", () => {
      tip.textContent = p.sentence;
      tip.hidden = false;
      tip.style.left = (c.getBoundingClientRect().left - $("map-wrap").getBoundingClientRect().left + 8) + "px";
      tip.style.top = (c.getBoundingClientRect().top - $("map-wrap").getBoundingClientRect().top + 8) + "px";
    });
    c.addEventListener("mouseleave", () => { tip.hidden = true; });
    c.addEventListener("click", () => reconstructPoint(p, c));
    svg.appendChild(c);
  });
  $("map-what").textContent = d.what + ".";
}

async function reconstructPoint(p, circle) {
  document.querySelectorAll("#map-svg .pt.picked").forEach((x) => x.classList.remove("picked"));
  circle.classList.add("picked");
  $("map-error").textContent = "";
  try {
    const d = await api("reconstruct", {sentences: [p.sentence], mode: "mean", decoding: decoding()});
    $("map-rec").textContent = "";
    const b = document.createElement("b");
    b.textContent = p.sentence;
    $("map-rec").append(b, " \u2192 ", d.rows[0].text, "  (" + d.z + "; " + d.decoding + ")");
  } catch (e) { $("map-error").textContent = e.message; }
}

wire("nb-run", "nb", async () => {
  const d = await api("neighbors", {text: $("nb-text").value, k: num("nb-k"), metric: $("nb-metric").value});
  $("nb-out").replaceChildren(...d.neighbors.map((n) => {
    const li = document.createElement("li");
    li.textContent = n.sentence + "  (" + n.distance.toFixed(4) + ")";
    return li;
  }));
  $("nb-note").textContent = "query: " + d.query + "; " + d.distance + "." + oovNote(d.oov);
  await loadMap();
  if (!mapState) return;
  const svg = $("map-svg");
  svg.querySelectorAll(".query").forEach((x) => x.remove());
  svg.querySelectorAll(".near").forEach((x) => x.classList.remove("near"));
  for (const n of d.neighbors) {
    if (n.point !== null) svg.querySelector('[data-i="' + n.point + '"]').classList.add("near");
  }
  const [qx, qy] = d.query_xy;
  svg.appendChild(svgEl("path", {d: "M" + mapState.sx(qx) + " " + (mapState.sy(qy) - 8) + " l6 14 h-12 z",
                                  class: "query"}));
});

// ---------------------------------------------------------------- model description
api("info").then((d) => {
  const parts = [d.model, "objective " + (d.objective || "unknown"), "latent " + d.latent_dim,
                 "vocabulary " + d.vocab_size];
  if (d.step !== null && d.step !== undefined) parts.push("step " + d.step);
  if (d.corpus) parts.push("corpus " + d.corpus);
  parts.push(d.index ? "index: " + d.index.sentences + " sentences" : "no index (start with --index FILE for the map)");
  $("model-info").textContent = parts.join(" \u00b7 ");
}).catch((e) => { $("model-info").textContent = "model description unavailable: " + e.message; });

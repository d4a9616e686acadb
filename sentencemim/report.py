"""`smim report RUN... --out DIR`: the paper's analyses as a Markdown page with PNG figures.

For every run (run directory, model directory or checkpoint) on its corpus's test split:

    table  NLL bounds  MELBO (eqn 16, test-set prior), ELBO (analytic KL, single sample), IWAE_K
                       and the tightest held-out bound (sentencemim.eval.heldout: method and
                       settings chosen on validation sentences, with ESS, Pareto k-hat and
                       the bound at several K) under N(0, I) and under a training-set
                       aggregate prior; true NLL on corpus synthetic. PPL in both <eos> conventions.
    table  latent      KL, MI estimate, active units, kNN entropy vs N(0, I) (Table 6)
    table  BLEU        three decoding modes (Table 7)
    fig 3  histograms of log p(x_i|z_j) and log q(z_i|x_j), i = j vs i != j
    fig 5  MELBO vs test-subset size K (mean, std over trials), extrapolated to the size at
           which it would reach a held-out NLL (the run's own IWAE, other runs', --reference-nll)
    fig 6  histograms of per-sentence bounds (paper Figs. 6-8)

DIR gets report.md, fig*.png, results.json (every number, labelled) and one
per-sentence .npz per run. matplotlib (extra `plot`) is imported lazily, Agg backend.
"""

from __future__ import annotations

import json
import math
import os
import platform
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from .config import ReportConfig  # noqa: F401 - defined with the other configs; imported from here too
from .errors import UserError
from .eval import bounds
from .eval.evaluate import BOUND_ORDER, eval_extras, evaluate
from .eval.heldout import format_heldout
from .eval.stages import Stages
from .eval.terms import melbo_size_to_match, melbo_vs_size, per_sentence_arrays


def analyse_run(name: str, model, vocab, info: dict, ds, train_ds, cfg: ReportConfig, progress=True,
                heldout=None, valid=(None, ""), stages=None) -> dict:
    """Everything the page shows for one model; per-sentence arrays under 'per_sentence'.
    heldout: an eval.heldout.HeldoutConfig; valid: (sentences to choose its settings on, label);
    stages: an eval.stages.Stages that keeps finished stages, so an interrupted analysis resumes."""
    st = stages if stages is not None else Stages()
    corpus = info.get("train", {}).get("corpus")
    t0 = time.perf_counter()
    rep = evaluate(model, ds, vocab, n_z=cfg.n_z, repeats=cfg.repeats, seed=cfg.seed, batch_size=cfg.batch_size,
                   progress=progress, max_rows=cfg.max_rows, device=cfg.device, precision=cfg.precision,
                   objective=info.get("train", {}).get("objective"), heldout=heldout, valid_ds=valid[0],
                   valid_what=valid[1], bound_sentences=cfg.bound_sentences, stages=st,
                   **eval_extras(model, vocab, ds, corpus, train_ds, cfg.iwae_k, cfg.agg_prior_m, cfg.seed,
                                 cfg.batch_size, cfg.device))
    rep["timing_s"]["evaluate_total"] = time.perf_counter() - t0 + st.resumed_seconds()  # + earlier processes'
    sub = ds.subset(min(cfg.fig3_n, len(ds)), cfg.seed)
    cross = st.run("fig3_cross", lambda: bounds.cross_terms(model, sub, cfg.max_rows, cfg.seed, cfg.device,
                                                           cfg.precision))
    rep["timing_s"]["fig3_cross_terms"] = st.seconds["fig3_cross"]
    n = len(sub)
    off = ~np.eye(n, dtype=bool)
    rep["fig3"] = {"n": n, "what": f"{n} test sentences, one z_j ~ q(z|x_j) each",
                   **{f"{k}_{part}": float(v[sel].mean()) for k, v in cross.items()
                      for part, sel in (("same_mean", np.eye(n, dtype=bool)), ("other_mean", off))}}
    rec = rep["per_sentence"]["rec"]
    N = len(rec)
    sizes = np.unique(np.round(np.logspace(0, math.log10(N), 25)).astype(int))
    rep["fig5"] = {**melbo_vs_size(rec, sizes, cfg.fig5_trials, cfg.seed), "N": N, "rec_mean": float(rec.mean()),
                   "what": "MELBO (eqn 16) of random subsets of K test sentences, N_z = "
                           f"{cfg.n_z}: mean rec(subset) + log K; mean and std over {cfg.fig5_trials} subsets"}
    mc = model.cfg
    return {"name": name, "objective": info.get("train", {}).get("objective"), "latent_dim": mc.latent_dim,
            "hidden_dim": mc.hidden_dim, "corpus": corpus, "step": info.get("step"), "report": rep,
            "cross": {k: v for k, v in cross.items()}}


HELDOUT_KEYS = ("iwae", "iwae_train_prior", "heldout", "heldout_train_prior")


def _targets(runs: list[dict], i: int, reference: dict) -> dict:
    """NLLs (nats/sentence) the MELBO of run i is extrapolated to (Fig. 5): every held-out bound of
    run i itself; of each other latent run only its lowest held-out bound (all of them made the
    per-run figures unreadable once a page had several runs); the exact NLL of a language-model
    run; then the reference values."""
    out = {}
    for j, r in enumerate(runs):
        rep = r["report"]
        if "exact" in rep:
            out[f"exact NLL, language model ({r['name']})"] = rep["exact"]["nll_per_sentence"]
            continue
        keys = [k for k in HELDOUT_KEYS if k in rep]
        if j != i and keys:
            keys = [min(keys, key=lambda k: rep[k]["nll_per_sentence"])]
        for key in keys:
            who = "this model" if j == i else f"{r['name']}'s lowest"
            out[f"{rep[key]['bound']}, prior {SHORT_PRIOR[key]} ({who})"] = rep[key]["nll_per_sentence"]
        if "truth" in rep and j == i:
            out["true NLL (HMM)"] = rep["truth"]["nll_per_sentence"]
    out.update(reference)
    return out


# --------------------------------------------------------------------------- figures
def _plt():
    try:
        import matplotlib
    except ImportError:
        raise UserError("smim report draws figures with matplotlib: pip install 'sentencemim[plot]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _fig3(run, path):
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    n = run["cross"]["log_px"].shape[0]
    eye = np.eye(n, dtype=bool)
    for ax, key, title in ((axes[0], "log_px", r"(a) $\log p(x_i|z_j)$, nats"),
                           (axes[1], "log_qz", r"(b) $\log q(z_i|x_j)$, nats")):
        m = run["cross"][key]
        lo = np.percentile(m, 0.5)
        bins = np.linspace(lo, m.max(), 61)  # shared, so the two histograms are comparable
        for sel, label in ((eye, "i = j"), (~eye, "i != j")):
            v = m[sel]
            ax.hist(np.clip(v, lo, None), bins=bins, density=True, alpha=0.6, label=f"{label} ({sel.sum()})")
        ax.set_title(title)
        ax.legend()
    fig.suptitle(f"Fig. 3: {run['name']} ({run['objective']}, d={run['latent_dim']}), "
                 f"{n} test sentences, z_j ~ q(z|x_j); values below the 0.5th percentile drawn at it")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _fig5(run, targets, path, max_log10=60):
    plt = _plt()
    f = run["report"]["fig5"]
    K, mean, std = np.array(f["sizes"]), np.array(f["mean"]), np.array(f["std"])
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(K, mean, color="C0", label="MELBO of K random test sentences (mean)")
    ax.fill_between(K, mean - std, mean + std, color="C0", alpha=0.3, label="1 std over subsets")
    ax.plot([f["N"]], [mean[-1]], "o", color="C0", ms=6)  # the MELBO of the whole evaluated set
    # targets further than 10^max_log10 sentences away are listed in the text only
    reach = {k: melbo_size_to_match(f["rec_mean"], t) for k, t in targets.items()}
    shown = {k: lk for k, lk in reach.items() if math.log10(f["N"]) < lk <= max_log10}
    if shown:
        ks = np.logspace(math.log10(f["N"]), max(shown.values()), 50)
        ax.plot(ks, f["rec_mean"] + np.log(ks), "k--", label="extrapolated: mean rec + log K")
    colours = plt.get_cmap("tab20").colors[2:]  # 18 colours, none the MELBO's blue
    for i, (label, lk) in enumerate(shown.items()):
        t = targets[label]
        ax.plot([10 ** lk], [t], "x", color=colours[i % len(colours)], ms=9, label=f"{label}: {t:.1f} at K=10^{lk:.1f}")
    ax.set_xscale("log")
    ax.set_xlabel("test-set size K")
    ax.set_ylabel("NLL bound, nats/sentence")
    ax.set_title(f"Fig. 5: MELBO vs set size, {run['name']}")
    # below the axes, so that no entry hides the curve or a marker (bbox_inches keeps it in the file)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(0, -0.16), frameon=False)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


SHORT_PRIOR = {"melbo": "test-set aggregate posterior", "elbo": "N(0,I)", "iwae": "N(0,I)", "heldout": "N(0,I)",
               "iwae_train_prior": "training aggregate posterior",
               "heldout_train_prior": "training aggregate posterior", "truth": "HMM"}


def _fig6(run, path):
    plt = _plt()
    per, rep = run["report"]["per_sentence"], run["report"]
    col = {k: "true_nll" if k == "truth" else k for k in BOUND_ORDER}  # report key -> per-sentence key
    keys = [k for k in BOUND_ORDER if col[k] in per and not k.startswith("elbo_single")]
    # one x range for all; a bound whose bulk lies far outside it is named, not drawn
    lo = min(np.percentile(per[col[k]], 0.5) for k in keys)
    hi = max(np.percentile(per[col[k]], 99.5) for k in keys if k not in ("iwae_train_prior", "heldout_train_prior"))
    fig, ax = plt.subplots(figsize=(7, 4))
    off = []
    for i, key in enumerate(keys):
        v = per[col[key]]
        label = f"{rep[key]['bound']}, prior {SHORT_PRIOR[key]} (mean {v.mean():.1f})"
        if np.median(v) > hi:
            off.append(label)
            continue
        ax.hist(v, bins=np.linspace(lo, hi, 61), alpha=0.45, color=f"C{i}", label=label)
        ax.axvline(v.mean(), color=f"C{i}", ls="--")
    ax.set_xlabel("per-sentence NLL bound, nats (lower is better)"
                  + ("\noff scale: " + "; ".join(off) if off else ""))
    ax.set_title(f"Figs. 6-8: per-sentence bounds, {run['name']} ({run['objective']}, d={run['latent_dim']})")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --------------------------------------------------------------------------- page
def _f(x, fmt=".2f"):
    return "n/a" if x is None else format(x, fmt) if abs(x) < 1e6 else format(x, ".3g")


def markdown(runs: list[dict], cfg: ReportConfig, targets: list[dict], command: str) -> str:
    L = ["# SentenceMIM evaluation report", "",
         f"Made by `{command}` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
         f"{platform.machine()} CPU, torch threads {_threads()}. Settings: `{json.dumps(asdict(cfg))}`.", "",
         "All NLLs are nats per sentence, upper bounds on -log p(x) unless marked exact. PPL = exp(sum of "
         "sentence NLLs / tokens) with the tokens counted as words + one <eos> per sentence; "
         "**[w+eos]** keeps the <eos> terms in the numerator (the default), **[paper]** drops them from the "
         "numerator only (the authors' code; n/a where the bound does not split into tokens). The MELBO uses "
         "the test set's own aggregated posterior as prior: it is *not* a held-out likelihood.", ""]
    if cfg.precision != "fp32":
        from .eval.terms import PRECISION_WHAT
        L += [f"**Approximate numbers:** {PRECISION_WHAT[cfg.precision]}.", ""]
    for r, slug in zip(runs, file_stems(runs)):
        rep = r["report"]
        L += [f"## {r['name']}: {r['objective']}, latent {r['latent_dim']}, hidden {r['hidden_dim']}, "
              f"corpus {r['corpus']}, step {r['step']}", "",
              f"{rep['sentences']} {cfg.split} sentences, {rep['tokens_words_eos']} tokens (words + <eos>).", "",
              "| bound | prior | samples | NLL | PPL [w+eos] | PPL [paper] |" +
              (" gap to true NLL |" if "truth" in rep else ""),
              "|---|---|---|---|---|---|" + ("---|" if "truth" in rep else "")]
        for key in BOUND_ORDER:
            if key not in rep:
                continue
            b = rep[key]
            std = f" ({b['nll_per_sentence_std']:.2f})" if key == "melbo" else ""
            row = (f"| {_cell(b['bound'])} | {_cell(b['prior'])} | {_cell(b['samples'])} | {b['nll_per_sentence']:.2f}{std} | "
                   f"{_f(b['ppl_words_eos'])} | {_f(b['ppl_paper'])} |")
            if "truth" in rep:
                row += f" {b['nll_per_sentence'] - rep['truth']['nll_per_sentence']:+.2f} |"
            L.append(row)
        for key in ("heldout", "heldout_train_prior"):
            if key in rep:
                L += [""] + ["- " + _cell(line.strip()) for line in format_heldout(rep[key])]
        rc = rep["reconstruction"]
        L += ["", f"Reconstruction -log p(x|z), {'z = mean (AE)' if 'AE' in rc['what'] else 'z ~ q(z|x)'}: "
                  f"{rc['nll_per_sentence']:.2f} nats/sentence "
                  f"(z = mean: {rc['nll_per_sentence_at_mean_z']:.2f}); MELBO (std) is over "
                  f"{rep['melbo']['repeats']} repeats; log N = {rep['melbo']['log_N']:.2f}.", ""]
        a = rep.get("latent")
        if a:
            L += ["| latent (Table 6) | value |", "|---|---|",
                  f"| KL(q(z\\|x) \\|\\| N(0,I)), analytic, mean | {rep['kl']['mean']:.2f} nats |",
                  f"| MI estimate I(x;z) (He et al. 2019; at most log N = {math.log(rep['sentences']):.2f}) | "
                  f"{a['mutual_information']:.2f} nats |",
                  f"| active units (Var_x E_q[z_u] > 0.01) | {a['active_units']} / {a['dim']} |",
                  f"| kNN entropy (k=3, max-norm) of z ~ q(z\\|x), one per sentence | {a['entropy_z']['entropy']:.2f} nats |",
                  f"| kNN entropy of the posterior means (the AE's code) | {a['entropy_mu']['entropy']:.2f} nats "
                  f"({a['entropy_mu']['duplicates_removed']} duplicate rows removed) |",
                  f"| N(0, I_{a['dim']}) entropy d/2 (1 + log 2 pi) | {a['entropy_std_normal']:.2f} nats |", "",
                  "The kNN estimator reads high above ~16 dimensions (docs/evaluation.md): compare entropies of "
                  "models with the same d and N only.", ""]
        if "bleu_modes" in rep:
            L += ["| BLEU (Table 7): reconstruction | sentence BLEU-1, averaged (paper's) | corpus BLEU-1 | "
                  "corpus BLEU-4 |", "|---|---|---|---|"]
            L += [f"| {_cell(b['what'])} | {b['sentence_bleu1']:.4f} | {b['corpus_bleu1']:.4f} | {b['corpus_bleu4']:.4f} |"
                  for b in rep["bleu_modes"]]
            ex = rep["bleu_modes"][0]["examples"][:3]
            L += ["", "Examples (reference -> reconstruction, z ~ q, greedy):", ""]
            L += [f"- `{ref}` -> `{hyp}`" for ref, hyp in ex]
            L.append("")
        f3 = rep["fig3"]
        L += [f"![Fig. 3]({slug}-fig3.png)", "",
              f"Fig. 3 ({f3['what']}): mean log p(x_i|z_j) {f3['log_px_same_mean']:.1f} (i = j) vs "
              f"{f3['log_px_other_mean']:.1f} (i != j) nats; mean log q(z_i|x_j) {f3['log_qz_same_mean']:.1f} vs "
              f"{f3['log_qz_other_mean']:.1f}.", ""]
        f5 = rep["fig5"]
        L += [f"![Fig. 5]({slug}-fig5.png)", "", f"Fig. 5: {f5['what']}. At K = N = {f5['N']}: "
              f"{f5['mean'][-1]:.2f} nats; std at K = {f5['sizes'][len(f5['sizes']) // 2]}: "
              f"{f5['std'][len(f5['sizes']) // 2]:.2f}. Extrapolated with the mean reconstruction term fixed "
              f"({f5['rec_mean']:.2f}), the MELBO would equal:", ""]
        for label, t in targets[runs.index(r)].items():
            lk = melbo_size_to_match(f5["rec_mean"], t)
            L.append(f"- {label} = {t:.2f} nats/sentence: " + (
                f"at a test set of K = 10^{lk:.1f} sentences" if lk >= 0 else
                "never (the MELBO is above it at every K >= 1: its reconstruction term alone exceeds it)"))
        L += ["", f"![Figs. 6-8]({slug}-fig6.png)", "",
              "Per-sentence bounds: MELBO_i = -log p(x_i|z_i) + log N (eqn 16 summand), ELBO_i (analytic KL), "
              "IWAE_i under both priors" + (", true NLL_i" if "truth" in rep else "") + ".", ""]
        t = rep["timing_s"]
        L += ["Measured time (seconds): " + ", ".join(f"{k} {v:.0f}" for k, v in t.items()), ""]
    return "\n".join(L)


def _cell(text) -> str:
    """Markdown table cell: a literal | would end the cell."""
    return str(text).replace("|", "\\|")


def _threads():
    import torch
    return torch.get_num_threads()


def run_labels(paths) -> list[str]:
    """Each run's name on the page: its folder's name (a checkpoint file: its folder's and its
    own), or as many trailing parts of its path as tell it apart from the other runs' (runs/a/smim
    and runs/b/smim are a/smim and b/smim). The parts are those of the path as given, made
    absolute but not resolved, so a link keeps the name it was given by. A run given twice is
    refused: its results would be reported twice under one name."""
    real = [Path(p).resolve() for p in paths]
    for i, p in enumerate(real):
        if p in real[:i]:
            raise UserError(f"{paths[i]} is given twice (as {paths[real.index(p)]} too); give each run once")
    full = [Path(os.path.abspath(p)).parts[1:] for p in paths]  # without the root
    labels = []
    for i, p in enumerate(full):
        k = 2 if real[i].is_file() else 1
        while k < len(p) and any(q[-k:] == p[-k:] for j, q in enumerate(full) if j != i):
            k += 1
        labels.append("/".join(p[-k:]) or "/")
    return labels


def file_stems(runs) -> list[str]:
    """File-name stems for the runs' figures and arrays, one per run and all different (two names
    may map to one stem: a.b and a-b)."""
    out = []
    for run in runs:
        base = "".join(c if c.isalnum() or c in "-_" else "-" for c in run["name"])
        slug, n = base, 1
        while slug in out:
            n += 1
            slug = f"{base}-{n}"
        out.append(slug)
    return out


def write_report(runs: list[dict], out: str | Path, cfg: ReportConfig, command: str,
                 reference: dict | None = None, heldout=None) -> Path:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    targets = [_targets(runs, i, reference or {}) for i in range(len(runs))]
    results = []
    for r, tg, slug in zip(runs, targets, file_stems(runs)):
        _fig3(r, out / f"{slug}-fig3.png")
        _fig5(r, tg, out / f"{slug}-fig5.png")
        _fig6(r, out / f"{slug}-fig6.png")
        np.savez_compressed(out / f"{slug}-per-sentence.npz", **per_sentence_arrays(r["report"]["per_sentence"]))
        rep = {k: v for k, v in r["report"].items() if k != "per_sentence"}
        rep["fig5"]["log10_size_to_match"] = {k: melbo_size_to_match(rep["fig5"]["rec_mean"], t) for k, t in tg.items()}
        results.append({k: v for k, v in r.items() if k not in ("report", "cross")} | {"report": rep})
    (out / "results.json").write_text(json.dumps({"command": command, "config": asdict(cfg), "runs": results,
                                                  "heldout_config": asdict(heldout) if heldout else None},
                                                 indent=1, default=float))
    (out / "report.md").write_text(markdown(runs, cfg, targets, command))
    return out / "report.md"


def parse_reference(items) -> dict:
    """--reference-nll 'LABEL=NATS' pairs."""
    out = {}
    for item in items or ():
        label, sep, value = item.rpartition("=")
        try:
            out[label] = float(value)
        except ValueError:
            sep = ""
        if not sep or not label:
            raise UserError(f"--reference-nll expects LABEL=NATS, got {item!r}")
    return out

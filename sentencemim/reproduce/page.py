"""The results page of a reproduction: our numbers beside the paper's (Tables 2, 6, 7;
Figs. 3, 5, 6 through report.write_report), what was run, and computed checks."""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import asdict
from pathlib import Path

from .driver import _fmt_s, eval_settings, heldout_settings
from ..errors import UserError
from .fmt import _n
from .heldout_tables import (_best_held_out, _lm_on, _on_bound_sentences, _reference_table, ais_subset_table,
                             tightest_table)
from .plan import VARIANTS, Run, commit, machine, read_json, steps_per_epoch, utc


def _paper_nll(bound: dict, rep: dict) -> float:
    """NLL/sentence in the paper's convention (the <eos> terms out of the numerator) from its PPL."""
    return math.log(bound["ppl_paper"]) * rep["tokens_words_eos"] / rep["sentences"]


_SEED_COLUMNS = (  # (heading, value from an analysis, format)
    ("MELBO PPL (paper conv.)", lambda rep: rep["melbo"]["ppl_paper"], ".2f"),
    ("BLEU (z ~ q, sampling T=1)", lambda rep: rep.get("bleu", {}).get("sentence_bleu1"), ".3f"),
    ("KL", lambda rep: rep["kl"]["mean"], ".2f"),
    ("MI", lambda rep: rep["latent"]["mutual_information"], ".2f"),
    ("active units", lambda rep: rep["latent"]["active_units"], ".0f"),
    ("ELBO [words+<eos>]", lambda rep: rep.get("elbo", {}).get("nll_per_sentence"), ".2f"),
    ("IWAE N(0,I) [words+<eos>]", lambda rep: rep.get("iwae", {}).get("nll_per_sentence"), ".2f"),
)


def _seed_table(analyses: list) -> list[str]:
    """Mean and range over seeds of the main numbers, for every model run with more than one seed."""
    groups: dict[str, list] = {}
    for r, a in analyses:
        groups.setdefault(r.key, []).append((r, a))
    multi = {k: g for k, g in groups.items() if len(g) > 1}
    if not multi:
        return []
    L = ["", "## Seeds", "",
         "Models trained with more than one seed (same data, settings and step count; the seed sets the "
         "initialisation, batch order, dropout and sampling): mean over seeds, and [min, max].", "",
         "| model | seeds | step | " + " | ".join(h for h, _, _ in _SEED_COLUMNS) + " |",
         "|---|---|---|" + "---|" * len(_SEED_COLUMNS)]
    for g in multi.values():
        cells = []
        for _, get, fmt in _SEED_COLUMNS:
            vals = [get(a["report"]) for _, a in g]
            if any(v is None for v in vals):
                cells.append("-")
                continue
            cells.append(f"{_n(sum(vals) / len(vals), fmt)} [{_n(min(vals), fmt)}, {_n(max(vals), fmt)}]")
        steps = sorted({a["step"] for _, a in g})
        L.append(f"| {g[0][0].label} | {', '.join(str(r.seed) for r, _ in g)} | {', '.join(map(str, steps))} | "
                 + " | ".join(cells) + " |")
    return L


_MODES = (("sample", "sample"), ("sample", "greedy"), ("mean", "greedy"))  # the paper's first
_MODE_HEAD = {("sample", "sample"): "z ~ q, sampling T=1 (paper's mode; mean (std) over repeats)",
              ("sample", "greedy"): "z ~ q, greedy", ("mean", "greedy"): "z = mean, greedy"}


def _metrics_dir(run: Run) -> Path:
    """Where a run's metrics.jsonl lives (an external snapshot's is in its source run)."""
    ext = read_json(run.out / "reproduce.json", {}).get("external")
    return Path(ext["source"]) if ext and not (run.out / "metrics.jsonl").exists() else run.out


def learning_curves(analyses: list, figdir: Path, rel, lab) -> list[str]:
    """Validation curves against epoch (the training objective, the reconstruction term and the
    lr, with its decays marked) of every run, one figure each, and the reconstruction terms of
    all runs in one figure (curves.plot_curves)."""
    from ..curves import plot_curves
    dirs = [(r, _metrics_dir(r)) for r, _ in analyses]
    dirs = [(r, d) for r, d in dirs if (d / "metrics.jsonl").exists()]
    if not dirs:
        return []
    figdir.mkdir(parents=True, exist_ok=True)
    L = ["", "## Learning curves", "",
         "Validation at the end of every epoch (and at step 0) against epochs: the training objective, the "
         "reconstruction term -log p(x|z) per sentence [words+<eos>] (for the GRU LM: its exact NLL) and the learning "
         "rate; dotted lines mark the lr decays (x0.25 after 2 epochs without improvement). Drawn by `smim curves` "
         "from each run's metrics.jsonl.", ""]
    plot_curves([d for _, d in dirs], figdir / "curves-reconstruction.png", x="epoch",
                metrics=("rec_per_sentence", "lr"), labels=[lab(r) for r, _ in dirs],
                title="validation reconstruction term and lr")
    L += ["All runs:", "", f"![curves]({rel}/curves-reconstruction.png)", ""]
    for r, d in dirs:
        plot_curves([d], figdir / f"{r.name}-curves.png", x="epoch", labels=[lab(r)], title=lab(r))
        L += [f"{lab(r)}:", "", f"![curves {r.name}]({rel}/{r.name}-curves.png)", ""]
    return L


def _run_facts(run: Run, a: dict) -> dict:
    """Steps, epochs, wall times and commands of a run, from its own records."""
    rec = read_json(run.out / "reproduce.json", {"sessions": []})
    ext = rec.get("external")
    spe = steps_per_epoch(_metrics_dir(run) / "metrics.jsonl", run.out / "config.json")
    sessions = rec["sessions"]
    gaps, reached = [], 0  # steps no recorded session covers (drivers killed before 613699a recorded nothing)
    running = None  # a session still training when the page is written (a run evaluated part-way)
    for s in sorted(sessions, key=lambda s: s["step_from"]):
        if s["step_from"] > reached:
            gaps.append((reached, s["step_from"]))
        if s.get("status") == "running":
            running = s
        reached = max(reached, s.get("step_to", a["step"] if running is s else s["step_from"]))
    if sessions and a["step"] > reached:
        gaps.append((reached, a["step"]))
    return {"step": a["step"], "epochs": a["step"] / spe if spe else None, "sessions": sessions, "running": running,
            "train_wall_s": sum(s.get("wall_s", 0.0) for s in sessions) if sessions else ext and ext.get("wall_s"),
            "unrecorded_steps": gaps, "external": ext, "eval_wall_s": a["wall_s"]}


# where a run stands, from its directory (progress.state_row writes the rows)
STATE_HEADER = ["| run | state | step | epochs (budget) | best validation objective (epoch) | its reconstruction "
                "term (LM: exact NLL) | lr now | lr decays at epochs | earliest lr stop (epoch) | training tokens/s "
                "(last log) |", "|---|---|---|---|---|---|---|---|---|---|"]


def write_page(cfg: dict, analyses: list, command: str, pending: list[str] = ()) -> Path:
    """The results page (Tables 2, 6, 7; Figs. 3, 5, 6 via report.write_report) beside the paper.
    `pending`: a STATE_HEADER row for each of the config's runs with no evaluation yet."""
    from ..report import file_stems, write_report
    rc, _ = eval_settings(cfg, None)
    rep_cfg = cfg.get("report", {})
    # the language models (no latent) have an exact NLL and nothing else: they are the reference
    # column of the held-out table, not rows of the paper's tables
    lms = [(r, a) for r, a in analyses if a["report"].get("language_model")]
    everything, analyses = analyses, [(r, a) for r, a in analyses if not a["report"].get("language_model")]
    if not analyses:
        raise UserError("no evaluated latent-variable model to report (only language models)")
    page = Path(rep_cfg.get("page", "docs/results/results.md"))
    figdir = Path(rep_cfg.get("figures", page.with_suffix("")))
    runs = [a for _, a in analyses]
    # runs with their own held-out settings (run_heldout) carry them under settings.heldout
    # Fig. 5 also extrapolates each MELBO to the language models' exact NLL, where the language
    # model was evaluated on the same sentences as every run (its mean is not comparable otherwise)
    lm_nll = {f"exact NLL, language model ({a['name']})": a["report"]["exact"]["nll_per_sentence"]
              for _, a in lms if "exact" in a["report"]
              and all(r["report"].get("sentences") == a["report"].get("sentences") for r in runs)}
    write_report(runs, figdir, rc, command + " (report.write_report)", reference=lm_nll,
                 heldout=None if cfg.get("run_heldout") else heldout_settings(cfg))
    rel = figdir.relative_to(page.parent) if figdir.is_relative_to(page.parent) else figdir
    paper = rep_cfg.get("paper", {})
    facts = [_run_facts(r, a) for r, a in everything]
    first = runs[0]["report"]
    n_seeds = Counter(r.key for r, _ in analyses)

    def lab(r: Run) -> str:  # the paper's label, with the seed where a model has several
        return r.label + (f" s{r.seed}" if n_seeds[r.key] > 1 else "")
    L = [f"# {rep_cfg.get('title', cfg.get('name', 'Results'))}", "",
         f"Generated by `{command}` on {utc()} from the config `{cfg['_path']}` (commit {commit()}). "
         "Every number of ours below comes from the runs listed under *What was run*; "
         f"the paper's numbers are from its {rep_cfg.get('paper_tables', 'Tables 2, 6 and 7')}.", ""]
    if cfg.get("description"):
        L += [cfg["description"], ""]
    L += ["## What was run", "",
          f"Machine: {rep_cfg.get('machine', machine())}.", "",
          "| run | model | checkpoint evaluated | step | epochs | training wall time | evaluation wall time | "
          "trained at commit |", "|---|---|---|---|---|---|---|---|"]
    for (r, a), f in zip(everything, facts):
        commits = sorted({s["commit"] for s in f["sessions"]}) or ["(external)"]
        ext = f["external"]
        tw = _fmt_s(f["train_wall_s"]) if f["train_wall_s"] else "-"
        if f["running"]:  # its record is closed when it ends, or by the next session if it was killed
            tw = (f"{tw} before step {f['running']['step_from']}, then a session recorded as running (started "
                  f"{f['running']['started']}: still training, or killed before its record was closed)")
        if f["unrecorded_steps"]:
            tw = (f"at least {tw} (no record of steps "
                  + ", ".join(f"{a_}-{b_}" for a_, b_ in f["unrecorded_steps"]) + ": killed sessions)")
        if ext:
            tw += f" (another session's run {ext['source']}; {ext.get('wall_from', 'from its file times')})"
        L.append(f"| {r.name} | {r.label} | {a['checkpoint']} | {f['step']} | {_n(f['epochs'])} | {tw} | "
                 f"{_fmt_s(f['eval_wall_s'])} | {', '.join(commits)} |")
    if pending:
        L += ["", f"**Not on this page yet:** {len(pending)} run(s) of the config have no finished evaluation "
              "(not started, still training, or trained with their evaluation still to finish). Where they stand "
              "(validation, nats per sentence, words + `<eos>`):", "",
              *STATE_HEADER, *pending]
    L += ["", f"Evaluation settings (all runs): `{json.dumps({**asdict(rc), 'device': None})}`: "
          f"{first['sentences']} {rc.split} sentences"
          + (" (a fixed random subset, seed " + str(rc.seed) + ")" if rc.max_sentences else " (the whole split)")
          + f", {first['tokens_words_eos']} tokens (words + <eos>).", ""]
    if rep_cfg.get("commands"):
        L += ["Driver commands, in the order run:", "", "```", *rep_cfg["commands"], "```", ""]
    L += ["Training commands (each session, as recorded by the driver):", "", "```"]
    for (r, a), f in zip(everything, facts):
        for s in f["sessions"]:
            L.append(f"# {r.name}: steps {s['step_from']} -> {s.get('step_to', '?')}, "
                     f"{_fmt_s(s['wall_s']) if 'wall_s' in s else 'still running'}, {s['started']}"
                     + (f" ({s['status']}: ended at its last checkpoint)" if s.get("status") == "killed" else ""))
            L.append(s["command"])
        if f["external"]:
            e = f["external"]
            L.append(f"# {r.name}: snapshot of {e['source']}/checkpoint-{e['checkpoint']}.pt at step {e['step']}, "
                     f"copied {e['copied']}")
    L += ["```", ""]

    L += learning_curves(everything, figdir, rel, lab)

    # Table 2
    L += [f"## {rep_cfg.get('main_table', 'Table 2')} analogue: MELBO (paper's convention) and BLEU", "",
          "MELBO = eqn 16 with the test set's own aggregate posterior as prior (N_z = "
          f"{rc.n_z}, mean (std) over {rc.repeats} repeats). *Paper convention*: the <eos> terms are left out of "
          "the NLL numerator, while the PPL denominator counts words + <eos> (the authors' public demo code). log N = "
          f"{first['melbo']['log_N']:.2f} here (N = {first['sentences']} evaluated sentences; the paper evaluates "
          f"whole test sets, e.g. log N = {math.log(3761):.2f} for PTB's 3,761 sentences), and the MELBO of one "
          "model on test sets of different sizes can differ by up to the difference of their log N. "
          "BLEU: sentence BLEU-1 averaged, reconstruction from z ~ q(z|x) decoded by sampling at temperature 1 "
          f"(the authors' code), mean over {rc.repeats} repeats, as the paper's; Table 7 below adds our greedy "
          "modes.", "",
          "| model | step | MELBO NLL (paper conv.) | paper NLL | MELBO PPL (paper conv.) | paper PPL | "
          "MELBO NLL [words+<eos>] | BLEU | paper BLEU |", "|---|---|---|---|---|---|---|---|---|"]
    for r, a in analyses:
        rep, p = a["report"], paper.get(r.key, {})
        m = rep["melbo"]
        std = m.get("ppl_paper_std")
        L.append(f"| {lab(r)} | {a['step']} | {_paper_nll(m, rep):.2f} | {_n(p.get('melbo_nll'))} | "
                 f"{_n(m['ppl_paper'])} ({_n(std, '.2f')}) | {_n(p.get('melbo_ppl'))} | "
                 f"{m['nll_per_sentence']:.2f} ({m['nll_per_sentence_std']:.2f}) | "
                 f"{_n(rep.get('bleu', {}).get('sentence_bleu1'), '.3f')} | {_n(p.get('bleu'), '.3f')} |")
    L += ["", "### Held-out bounds (words + <eos>)", "",
          "Upper bounds on -log p(x) that use no test data in the prior, nats per sentence with the <eos> term "
          "included (PPL = exp(NLL sum / (words + <eos>))). The paper's NLL\\* (ELBO) of sVAE is given for "
          "reference; it leaves the <eos> term out.", "",
          f"| model | rec. -log p(x\\|z) | KL | ELBO (PPL) | IWAE_{rc.iwae_k}, N(0,I) (PPL) | "
          f"IWAE_{rc.iwae_k}, training aggregate prior M={rc.agg_prior_m} (PPL) | paper ELBO NLL\\* [KL] |"
          + (" GRU LM exact NLL (PPL) | best bound - LM |" if lms else ""),
          "|---|---|---|---|---|---|---|" + ("---|---|" if lms else "")]
    lm = lms[0][1]["report"]["exact"] if lms else None
    for r, a in analyses:
        rep, p = a["report"], paper.get(r.key, {})

        def b(key):
            x = rep.get(key)
            return f"{_n(x['nll_per_sentence'])} ({_n(x['ppl_words_eos'])})" if x else "-"
        pe = f"{p['elbo_nll']} [{p.get('kl', '-')}]" if "elbo_nll" in p else "-"
        row = (f"| {lab(r)} | {rep['reconstruction']['nll_per_sentence']:.2f} | {rep['kl']['mean']:.2f} | "
               f"{b('elbo')} | {b('iwae')} | {b('iwae_train_prior')} | {pe} |")
        if lm:
            k = _best_held_out(rep)
            x = _lm_on(lms[0], rep)
            gap = _on_bound_sentences(rep, k) - x if k and x is not None else None
            row += f" {_n(lm['nll_per_sentence'])} ({_n(lm['ppl_words_eos'])}) | {_n(gap, '+.2f')} |"
        L.append(row)
    if lm:
        L += ["", f"GRU LM: {lms[0][0].name} at step {lms[0][1]['step']}, the same decoder with no latent; its NLL is "
              "exact, so a latent model whose best held-out bound is below it models the test set better than the "
              "language model does (the bound is an upper bound on its NLL)."]

    if any(a["report"].get("bound_subset") for _, a in analyses):
        L += ["", "IWAE columns: on the subset of sentences stated below the next table; ELBO, reconstruction and "
              "KL: on every sentence; *best bound - LM*: the lowest held-out bound minus the GRU LM's exact NLL, both "
              "on the same sentences."]
    L += tightest_table(analyses, lab, lms)
    L += ais_subset_table(analyses, lab, lms)
    L += _reference_table(rep_cfg.get("references"), analyses, lab, lms)

    # Table 6
    L += ["", "## Table 6 analogue: latent entropy and information", "",
          "kNN (Kozachenko-Leonenko, k=3, max-norm) entropy in nats of one z ~ q(z|x) per test sentence, and of "
          "the posterior means (the AE's code); N(d) = d/2 (1 + log 2 pi). The paper compares sMIM's z with the "
          "AE's code. MI: He et al. (2019) estimate, at most log N. The estimator reads high above ~16 dims, and "
          "entropies of different N are not comparable.", "",
          "| model | N(d) | H(z ~ q) | H(posterior mean) | paper | KL | MI | active units |",
          "|---|---|---|---|---|---|---|---|"]
    for r, a in analyses:
        lat, p = a["report"]["latent"], paper.get(r.key, {})
        L.append(f"| {lab(r)} | {lat['entropy_std_normal']:.2f} | {lat['entropy_z']['entropy']:.2f} | "
                 f"{lat['entropy_mu']['entropy']:.2f} | {_n(p.get('entropy'))} | {a['report']['kl']['mean']:.2f} | "
                 f"{lat['mutual_information']:.2f} | {lat['active_units']} / {lat['dim']} |")

    # Table 7
    L += ["", "## Table 7 analogue: reconstruction BLEU", "",
          "Sentence BLEU-1 (with brevity penalty) averaged over the test sentences, three decoding modes; the "
          "paper's column is its Table 7 (sMIM, AE) or Table 2 (sVAE).", "",
          "| model | " + " | ".join(_MODE_HEAD[m] for m in _MODES) + " | paper |", "|---|---|---|---|---|"]
    for r, a in analyses:
        modes = {(m["z"], m["decoding"]): m for m in a["report"].get("bleu_modes", [])}
        cells = []
        for key in _MODES:
            m = modes.get(key)
            sd = f" ({m['sentence_bleu1_std']:.3f})" if m and m.get("repeats", 1) > 1 else ""
            cells.append(f"{m['sentence_bleu1']:.3f}{sd}" if m else "-")
        L.append(f"| {lab(r)} | {' | '.join(cells)} | {_n(paper.get(r.key, {}).get('bleu'), '.3f')} |")

    L += _seed_table(analyses)

    # checks, computed
    L += ["", "## Checks (computed from the tables above)", ""]
    by = {(r.variant, r.latent_dim): a for r, a in analyses if r.seed == analyses[0][0].seed}
    if max(n_seeds.values()) > 1:
        L.append(f"Across models, seed {analyses[0][0].seed} only; the seed table above gives the spread.")
        L.append("")
    for v in VARIANTS:
        ds = sorted(d for (vv, d) in by if vv == v)
        if len(ds) > 1:
            row = lambda f: " -> ".join(f(by[(v, d)]) for d in ds)  # noqa: E731
            L.append(f"- {VARIANTS[v][1].format(d='d')}, d = {' -> '.join(map(str, ds))}: KL "
                     f"{row(lambda a: _n(a['report']['kl']['mean']))}, MI "
                     f"{row(lambda a: _n(a['report']['latent']['mutual_information']))}, BLEU "
                     f"{row(lambda a: _n(a['report'].get('bleu', {}).get('sentence_bleu1'), '.3f'))} "
                     f"(steps {row(lambda a: str(a['step']))}).")
    for d in sorted({d for _, d in by}):
        here = [(v, by[(v, d)]) for v in VARIANTS if (v, d) in by]
        if len(here) > 1:
            parts = [f"{VARIANTS[v][1].format(d=d)}: MI {a['report']['latent']['mutual_information']:.2f}, "
                     f"KL {a['report']['kl']['mean']:.2f}, IWAE N(0,I) "
                     f"{_n(a['report'].get('iwae', {}).get('nll_per_sentence'))}, IWAE train-prior "
                     f"{_n(a['report'].get('iwae_train_prior', {}).get('nll_per_sentence'))}" for v, a in here]
            L.append(f"- d = {d}: " + "; ".join(parts) + ".")
    for r, a in analyses:
        rep = a["report"]
        k = _best_held_out(rep)
        if k is not None:
            best, mel = _on_bound_sentences(rep, k), _on_bound_sentences(rep, "melbo")
            on = (f" (both on the {rep['bound_subset']['n']} sentences of the held-out bounds)"
                  if rep.get("bound_subset") else "")
            L.append(f"- {lab(r)}: MELBO {mel:.2f} vs its best held-out bound "
                     f"{best:.2f} ({rep[k]['bound']}, prior {rep[k]['prior']}) [words+<eos>]{on}: MELBO minus "
                     f"held-out = {mel - best:+.2f} nats.")
    L.append(f"- MI estimates are capped at log N = {math.log(first['sentences']):.2f} nats (N = {first['sentences']} "
             "evaluated sentences), so models at the cap cannot be ranked by it.")
    if rep_cfg.get("notes"):
        L += ["", "## Notes", "", "Written by hand from the numbers above (the config's report.notes); "
              "re-check them when the runs change.", ""]
        L += [f"- {note}" for note in rep_cfg["notes"]]

    # figures
    L += ["", "## Figures", "",
          f"Made by `smim report`'s figure code from the same evaluations; the full per-run report with every "
          f"bound and the Fig. 5 extrapolations is [{rel}/report.md]({rel}/report.md).", ""]
    for title, suffix, what in (("Fig. 3: cross terms log p(x_i|z_j), log q(z_i|x_j)", "fig3",
                                 f"{rc.fig3_n} test sentences"),
                                ("Fig. 5: MELBO vs test-set size", "fig5", f"{rc.fig5_trials} subsets per size"),
                                ("Fig. 6: per-sentence bounds", "fig6", "all evaluated sentences")):
        L += [f"### {title} ({what})", ""]
        for (r, a), slug in zip(analyses, file_stems(runs)):  # the file names write_report gave them
            L += [f"{lab(r)}, step {a['step']}:", "", f"![{suffix} {r.name}]({rel}/{slug}-{suffix}.png)", ""]
    page.parent.mkdir(parents=True, exist_ok=True)
    page.write_text("\n".join(L) + "\n")
    return page

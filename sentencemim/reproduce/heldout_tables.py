"""The results page's held-out tables: each run's tightest held-out bound with its method,
ESS and convergence beside the GRU language model's exact NLL on the same sentences; AIS on a
subset of them; and the paper's reference models beside every run's best held-out bound."""

from __future__ import annotations

from .fmt import _n


_HELD_OUT = ("elbo", "iwae", "iwae_train_prior", "heldout", "heldout_train_prior")


def _on_bound_sentences(rep: dict, key: str) -> float:
    """rep[key]'s NLL per sentence on the sentences of the importance-weighted bounds (all, or the
    `bound_subset` of an evaluation with bound_sentences), so that bounds compare like for like."""
    per, sub = rep.get("per_sentence", {}), rep.get("bound_subset")
    if not sub or rep[key].get("subset") or key not in per:
        return rep[key]["nll_per_sentence"]
    return float(per[key][per["bound_index"]].mean())


def _best_held_out(rep: dict) -> str | None:
    """The key of the lowest held-out bound in an analysis report (None if it has none), compared on
    the same sentences."""
    held = [k for k in _HELD_OUT if k in rep]
    return min(held, key=lambda k: _on_bound_sentences(rep, k)) if held else None


def _lm_on_index(lm: tuple | None, rep: dict, index) -> float | None:
    """The GRU LM's exact NLL per sentence on the sentences `index` of rep's split."""
    import numpy as np  # not at import: `smim --help` loads this module and must stay light
    if lm is None:
        return None
    nll = lm[1]["report"].get("per_sentence", {}).get("nll")
    if nll is None or len(nll) != rep["sentences"]:
        return None
    return float(np.asarray(nll)[np.asarray(index)].mean())


def _lm_on(lm: tuple | None, rep: dict) -> float | None:
    """The GRU LM's exact NLL per sentence on the sentences of rep's importance-weighted bounds."""
    if lm is None:
        return None
    idx = rep.get("per_sentence", {}).get("bound_index")
    on_them = None if idx is None else _lm_on_index(lm, rep, idx)
    if on_them is not None:
        return on_them
    lrep = lm[1]["report"]  # no per-sentence values to take the subset of: its mean, on the same split only
    return lrep["exact"]["nll_per_sentence"] if lrep["sentences"] == rep["sentences"] else None


def _convergence(b: dict) -> str:
    """The bound at each sample count (or AIS step count), e.g. 'K=1: 130.2, K=10: 121.9, K=100: 120.1'."""
    tag = "T" if "steps" in b else "K"
    return ", ".join(f"{tag}={k}: {_n(v)}" for k, v in b.get("convergence", {}).items())


def _rechosen(b: dict) -> str:
    r = b.get("rechosen")
    return "" if not r else (f" (re-chosen; the evaluation had chosen {r['was']}, {_n(r['was_nll_per_sentence'])}: "
                             f"{r['why']})")


def tightest_table(analyses: list, lab, lms: list) -> list[str]:
    """#12's table: per model and prior, the tightest held-out bound with its method, K or steps,
    ESS and k-hat, beside q-only IWAE, the MELBO and the GRU LM's exact NLL on the same sentences."""
    rows = [(r, a, key) for r, a in analyses for key in ("heldout", "heldout_train_prior") if key in a["report"]]
    if not rows:
        return []
    lm = lms[0] if lms else None
    L = ["", "### Tightest held-out bounds (sentencemim.eval.heldout)", "",
         "For each model and prior: the tightest valid upper bound on -log p(x) that the methods give, the method "
         "and its settings chosen on validation sentences (never on the scored ones), its sample count, effective "
         "sample size (ESS, per sentence, mean / min) and Pareto k-hat of the weights (above 0.7 the estimate "
         "is not to be trusted), the mean bound over the first K samples (AIS: at each step count T; still falling "
         "at the largest K means not converged), beside q-only IWAE on the same samples, the MELBO (test-set prior: **not held "
         "out**) and the GRU LM's exact NLL on the same sentences. Nats per sentence, words + <eos>.", "",
         "| model | step | prior | sentences | tightest bound (PPL) | method [settings] | K / steps | ESS mean / min "
         "| k-hat median | convergence | q-only IWAE | MELBO (all sentences) |"
         + (" GRU LM exact NLL | bound - LM |" if lm else ""),
         "|---|---|---|---|---|---|---|---|---|---|---|---|" + ("---|---|" if lm else "")]
    for r, a, key in rows:
        rep = a["report"]
        b = rep[key]
        q = rep.get("iwae" if key == "heldout" else "iwae_train_prior", {}).get("nll_per_sentence")
        n = b.get("sentences", rep["sentences"])
        unit = f"T={b['steps']}, {b['k']} chains" if "steps" in b else f"K={b['k']}"
        row = (f"| {lab(r)} | {a['step']} | {b['prior']} | {n} of {rep['sentences']} | {_n(b['nll_per_sentence'])} "
               f"({_n(b['ppl_words_eos'])}) | {b['method']} [{b['settings']}]{_rechosen(b)} | {unit} | {b['ess_mean']:.1f} / "
               f"{b['ess_min']:.1f} of {b['k']} | {_n(b['khat_median'])} | {_convergence(b)} | {_n(q)} | "
               f"{_n(rep['melbo']['nll_per_sentence'])} |")
        if lm:
            x = _lm_on(lm, rep)
            row += f" {_n(x)} | {_n(None if x is None else b['nll_per_sentence'] - x, '+.2f')} |"
        L.append(row)
    subs = {(a["report"]["bound_subset"]["n"], a["report"]["sentences"]) for _, a, _ in rows
            if a["report"].get("bound_subset")}
    if subs:
        L += ["", "The importance-weighted bounds (this table, IWAE) are on a fixed random subset of the test "
              "sentences (" + ", ".join(f"{n} of {N}" for n, N in sorted(subs)) + "; subsets of one seed are nested), "
              "the costly part of an evaluation; the MELBO, ELBO, reconstruction and BLEU are on every sentence. "
              "The GRU LM column is its exact NLL on the same subset."]
    return L


def ais_subset_table(analyses: list, lab, lms: list) -> list[str]:
    """AIS on a fixed random subset of the bound sentences (heldout `ais_sentences`), beside the
    chosen importance-sampling method, q-only IWAE and the GRU LM's exact NLL on the same sentences."""
    rows = [(r, a, key, a["report"][key]["ais_subset"]) for r, a in analyses
            for key in ("heldout", "heldout_train_prior")
            if key in a["report"] and "methods" in a["report"][key].get("ais_subset", {})]
    if not rows:
        return []
    lm = lms[0] if lms else None
    L = ["", "### AIS on a subset of the same sentences", "",
         "AIS (annealed importance sampling with HMC transitions, from the prior or, for ais_fitted, from the "
         "Gaussian fitted per sentence; `ais_sentences` in the config) costs "
         "hundreds of importance-sampling passes per sentence, so it runs on a fixed random subset of the "
         "sentences above and is not part of the choice of the reported bound. Beside it, on the same "
         "sentences: the chosen method of the table above and q-only IWAE (the same samples), and the GRU LM's "
         "exact NLL. AIS's bound at each step count T shows whether it has converged (still falling: not "
         "converged). Nats per sentence, words + <eos>.", "",
         "| model | step | prior | sentences | AIS method | bound at T | ESS mean / min | chosen method on them "
         "| q-only IWAE on them |" + (" GRU LM exact NLL on them | AIS - LM |" if lm else ""),
         "|---|---|---|---|---|---|---|---|---|" + ("---|---|" if lm else "")]
    for r, a, key, sub in rows:
        rep = a["report"]
        chosen = rep[key]["method"]
        ch = sub["methods"].get(chosen, {}).get("nll_per_sentence")
        q = sub["methods"].get("q", {}).get("nll_per_sentence")
        x = _lm_on_index(lm, rep, sub["index_in_split"]) if lm and "index_in_split" in sub else None
        for name, m in sub["methods"].items():
            if "steps" not in m:
                continue
            row = (f"| {lab(r)} | {a['step']} | {rep[key]['prior']} | {sub['sentences']} of {sub['of']} | {name} "
                   f"[{m['settings']}] | {_convergence(m)} | {m['ess_mean']:.1f} / {m['ess_min']:.1f} of {m['k']} | "
                   f"{_n(ch)} ({chosen}) | {_n(q)} |")
            if lm:
                row += f" {_n(x)} | {_n(None if x is None else m['nll_per_sentence'] - x, '+.2f')} |"
            L.append(row)
    return L


def _reference_table(refs: dict | None, analyses: list, lab, lms: list = ()) -> list[str]:
    """The paper's reference models (e.g. its auto-regressive rows) beside every run's best held-out bound.
    `refs`: {"title", "text", "rows": [{"name", "ppl", "nll", "note"}]} from the config's report section."""
    if not refs and not lms:
        return []
    refs = refs or {}
    L = ["", "### " + refs.get("title", "Beside the reference models"), ""]
    if refs.get("text"):
        L += [refs["text"], ""]
    L += ["| model | NLL per sentence | PPL | what bounds it |", "|---|---|---|---|"]
    for row in refs.get("rows", []):
        L.append(f"| {row['name']} (paper) | {_n(row.get('nll'))} | {_n(row.get('ppl'))} | {row.get('note', '-')} |")
    for r, a in lms:
        b = a["report"]["exact"]
        L.append(f"| {lab(r)}, step {a['step']} (ours) | {_n(b['nll_per_sentence'])} | {_n(b['ppl_words_eos'])} | "
                 "exact NLL, not a bound; words + <eos> |")
    for r, a in analyses:
        rep = a["report"]
        k = _best_held_out(rep)
        if k is None:
            continue
        b = rep[k]
        on = f", on {b['subset']['n']} of {b['subset']['of']} test sentences" if b.get("subset") else ""
        L.append(f"| {lab(r)}, step {a['step']} (ours) | {_n(b['nll_per_sentence'])} | {_n(b['ppl_words_eos'])} | "
                 f"its best held-out bound: {b['bound']}, prior {b['prior']}, words + <eos>{on} |")
    return L

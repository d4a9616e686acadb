"""Apply the current validation choice of the held-out method to finished evaluations
(RUN/analysis.json and .npz, or their copies in docs/results/.../analyses/), without scoring
anything again.

Why: until 2026-12-01 a Pareto k-hat whose tail fit overflowed (a few weights far above the
rest) was NaN, and the choice passed NaN as "too few weights to tell". It is now +inf, never a
pass (sentencemim.eval.proposals.pareto_khat). On the PTB sVAE (512) that changes the choice
from a Gaussian fitted per sentence (ESS 2.6 of 100) to q itself. Every figure needed is
already kept: each method's validation score and k-hat, and q's test values, which are the
q-only IWAE's own samples (ps_iwae, ps_iwae_train_prior). So the choice is redone on those
validation figures with the current rule; where it lands on q, the reported bound becomes q's,
and the entry records what it was and why ("rechosen"). A choice that lands on a method
other than q, or the one already reported, is left as it is (the first would need a test pass).

    python benchmarks/reproduce/rechoose_heldout.py RUN_OR_ANALYSIS_JSON [...] [--dry-run]

Tested in tests/test_reproduce.py.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np

from sentencemim.eval.heldout import _pick
from sentencemim.eval.terms import bound_entry

WHY = ("re-chosen on the kept validation figures after the k-hat fix of 2026-12-01 (a tail too extreme to fit "
       "counts as k-hat +inf, no longer as a pass); no test sentence was scored again")


def _khat(x, k: int) -> float:
    """A kept validation k-hat: NaN meant 'no fit' for K < 20, else a tail fit that overflowed (+inf now)."""
    return math.inf if (x is None or (isinstance(x, float) and math.isnan(x))) and k >= 20 else x


def rechoose(report: dict, per: dict) -> list[str]:
    """Redo the choice of report["heldout"] and report["heldout_train_prior"] in place (and the
    chosen per-sentence values in `per`, the npz arrays). Returns what it did, one line each."""
    done = []
    for tag in ("", "_train_prior"):
        key = "heldout" + tag
        b = report.get(key)
        if not b or "methods" not in b:
            continue
        k = b["k"]
        cands = {m: (v["valid_score"], None, _khat(v.get("valid_khat_median"), k))
                 for m, v in {**b["methods"], **b.get("validation_only", {})}.items()}
        new, old = _pick(cands), b["method"]
        if new == old:
            done.append(f"{key}: {old} stays")
            continue
        if new != "q" or f"iwae{tag}" not in per:
            done.append(f"{key}: the rule now picks {new} over {old}, but {new}'s test values are not kept: left as is")
            continue
        q = b["methods"]["q"]
        values = np.asarray(per[f"iwae{tag}"], dtype=np.float64)
        if not math.isclose(values.mean(), q["nll_per_sentence"], rel_tol=1e-9):
            raise ValueError(f"{key}: ps_iwae{tag} (mean {values.mean()}) is not q's test bound "
                             f"({q['nll_per_sentence']}): not the same samples")
        tokens = np.asarray(per["tokens"])[np.asarray(per["bound_index"])] if "bound_index" in per \
            else np.asarray(per["tokens"])
        samples = b["samples"].replace(b["methods"][old]["samples"], q["samples"], 1)
        entry = bound_entry("tightest (q)", b["prior"], samples, values, tokens)
        keep = {f: b[f] for f in ("chosen_on", "methods", "validation_only", "ais_subset", "bdmc", "sentences", "subset")
                if f in b}
        entry["what"] += b["what"][b["what"].index("; the method with"):] if "; the method with" in b["what"] else ""
        entry.update({f: q[f] for f in ("settings", "k", "ess_mean", "ess_median", "ess_min", "khat_median",
                                        "khat_share_above_0.7", "convergence", "convergence_what",
                                        "valid_nll_per_sentence") if f in q})
        entry.update(method="q", **keep, rechosen={"was": old, "was_nll_per_sentence": b["nll_per_sentence"],
                                                    "why": WHY})
        report[key] = entry
        per[key] = values
        done.append(f"{key}: {old} ({b['nll_per_sentence']:.2f}) -> q ({entry['nll_per_sentence']:.2f})")
    return done


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("paths", nargs="+", help="run directories (analysis.json inside) or analysis JSON files (.npz beside)")
    ap.add_argument("--dry-run", action="store_true")
    args = ap.parse_args(argv)
    for p in map(Path, args.paths):
        js = p / "analysis.json" if p.is_dir() else p
        npz = js.with_suffix(".npz")
        if not js.exists() or not npz.exists():
            print(f"{p}: no {js.name} with its {npz.name}", file=sys.stderr)
            return 2
        a = json.loads(js.read_text())
        arrays = dict(np.load(npz))
        per = {name[3:]: v for name, v in arrays.items() if name.startswith("ps_")}
        lines = rechoose(a["report"], per)
        for line in lines:
            print(f"{js}: {line}")
        if not args.dry_run and any("->" in line for line in lines):
            arrays.update({f"ps_{name}": v for name, v in per.items()})
            np.savez_compressed(npz, **arrays)
            js.write_text(json.dumps(a, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

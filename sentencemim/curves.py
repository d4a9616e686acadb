"""Validation curves of several training runs, from their metrics.jsonl (`smim curves`).

    from sentencemim.curves import plot_curves
    plot_curves(["runs/ptb-smim512", "runs/ptb-ae512"], "docs/ptb-curves.png", x="epoch")

One panel per quantity of the `valid` records (default: the validation loss, the
reconstruction -log p(x|z) per sentence and the learning rate), one line per run,
the learning-rate decays (`lr_decay` events) marked by dotted vertical lines in the
run's colour. x is the training step, or the epoch = step / steps per epoch (the
step of the run's first end-of-epoch validation; before that, an estimate from the
training-set size and batch size, said so in the axis label).

matplotlib (extra `plot`) is imported when a figure is drawn, with the Agg backend.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from .errors import UserError
from .rundir import check_output_file

# key of a `valid` record -> (panel title, y label, log scale)
PANELS = {
    "loss": ("validation loss (the training objective, beta = 1)", "nats / sentence", False),
    "rec_per_sentence": ("validation reconstruction -log p(x|z), z ~ q(z|x) (AE: mean)",
                         "nats / sentence (words + <eos>)", False),
    "kl_per_sentence": ("validation KL(q(z|x) || N(0, I))", "nats / sentence", False),
    "ppl_rec_words_eos": ("validation reconstruction PPL [words+<eos>]", "perplexity", True),
    "lr": ("learning rate", "lr", True),
    "active_units": ("active units (Var_x E_q[z_u] > 0.01)", "units", False),
    "mutual_information": ("MI estimate I(x; z)", "nats", False),
}
DEFAULT_METRICS = ("loss", "rec_per_sentence", "lr")
X_AXES = ("step", "epoch")


@dataclass
class RunCurves:
    """The validation records and lr decays of one run directory."""

    path: Path
    label: str
    valid: list = field(default_factory=list)  # `valid` records, in file order
    decays: list = field(default_factory=list)  # steps of `lr_decay` events
    steps_per_epoch: float | None = None
    epoch_estimated: bool = False


def read_run(run_dir: str | Path, label: str | None = None) -> RunCurves:
    """Parse RUN/metrics.jsonl (and RUN/config.json for the label and batch size)."""
    run = Path(run_dir)
    path = run / "metrics.jsonl"
    if not path.is_file():
        raise UserError(f"{run}: no metrics.jsonl (is it a training run directory?)")
    cfg = {}
    if (run / "config.json").is_file():
        try:
            cfg = json.loads((run / "config.json").read_text())
        except json.JSONDecodeError:
            cfg = {}
    train, model = cfg.get("train", {}), cfg.get("model", {})
    if label is None:
        what = ", ".join(x for x in (train.get("objective"), f"d={model['latent_dim']}" if "latent_dim" in model
                                     else None) if x)
        label = f"{run.name} ({what})" if what else run.name
    out = RunCurves(run, label)
    train_sentences = None
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            raise UserError(f"{path}:{lineno}: not a JSON record") from None
        kind = rec.get("kind")
        if kind == "valid":
            out.valid.append(rec)
            if out.steps_per_epoch is None and rec.get("epoch") == 1 and rec.get("step"):
                out.steps_per_epoch = float(rec["step"])  # the first end-of-epoch validation
        elif kind == "event" and rec.get("event") == "lr_decay":
            out.decays.append(rec["step"])
        elif kind == "event" and rec.get("event") in ("start", "resume"):
            train_sentences = rec.get("train_sentences", train_sentences)
    if not out.valid:
        raise UserError(f"{path}: no validation records to plot")
    if out.steps_per_epoch is None and train_sentences and train.get("batch_size"):
        out.steps_per_epoch = math.ceil(train_sentences / train["batch_size"])
        out.epoch_estimated = True
    return out


def plot_curves(run_dirs, out_png: str | Path, x: str = "step", metrics=DEFAULT_METRICS,
                labels=None, title: str | None = None, dpi: int = 110, out_name: str = "out_png") -> Path:
    """Draw the validation curves of `run_dirs` into `out_png`; returns its path. `out_name`:
    what an error about the output file calls it (the CLI: --out)."""
    check_output_file(out_png, out_name)  # before any work
    if x not in X_AXES:
        raise UserError(f"x must be one of {', '.join(X_AXES)}, got {x!r}")
    unknown = [m for m in metrics if m not in PANELS]
    if unknown or not metrics:
        raise UserError(f"unknown metric(s) {', '.join(unknown) or '(none given)'}; choose from {', '.join(PANELS)}")
    run_dirs = list(run_dirs)
    if not run_dirs:
        raise UserError("no run directories given")
    if labels is not None and len(labels) != len(run_dirs):
        raise UserError(f"{len(labels)} labels for {len(run_dirs)} runs")
    runs = [read_run(r, labels[i] if labels else None) for i, r in enumerate(run_dirs)]
    if x == "epoch":
        missing = [r.path.name for r in runs if not r.steps_per_epoch]
        if missing:
            raise UserError(f"cannot place {', '.join(missing)} on an epoch axis (no epoch end and no batch size); "
                            f"use --x step")
    out = Path(out_png)
    try:
        import matplotlib
    except ImportError:
        raise UserError("smim curves draws with matplotlib: pip install 'sentencemim[plot]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def xs(run, steps):
        return [s / run.steps_per_epoch for s in steps] if x == "epoch" else list(steps)

    fig, axes = plt.subplots(1, len(metrics), figsize=(4.6 * len(metrics), 3.6), squeeze=False)
    for i, run in enumerate(runs):
        color = f"C{i % 10}"
        for ax, key in zip(axes[0], metrics):
            pts = [(r["step"], r[key]) for r in run.valid if r.get(key) is not None]
            if pts:
                steps, ys = zip(*pts)
                ax.plot(xs(run, steps), ys, marker=".", markersize=4, lw=1.2, color=color,
                        label=run.label if ax is axes[0][0] else None)
            for d in xs(run, run.decays):
                ax.axvline(d, color=color, ls=":", lw=1)
    estimated = any(r.epoch_estimated for r in runs)
    xlabel = ("epoch" + (" (estimated from training sentences / batch size)" if estimated else "")
              if x == "epoch" else "training step")
    for ax, key in zip(axes[0], metrics):
        name, ylabel, log = PANELS[key]
        ax.set_title(name, fontsize=9)
        ax.set_xlabel(xlabel, fontsize=8)
        ax.set_ylabel(ylabel, fontsize=8)
        if log:
            ax.set_yscale("log")
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
    if any(r.decays for r in runs):
        axes[0][0].plot([], [], color="gray", ls=":", lw=1, label="lr decay")
    axes[0][0].legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=dpi)
    plt.close(fig)
    return out

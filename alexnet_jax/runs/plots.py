"""Training curves from a run's `metrics.jsonl`: loss and top-1/top-5 error against steps
(top-5 only for more than 5 classes; the run's own evaluations, not `--mode=eval`'s
re-evaluations; metrics.jsonl of any version, read through rundir.read_metrics).

`train.train_and_evaluate` calls `plot_training_curves(workdir)` at the end of every run, so each
workdir holds `training_curves.png` next to its metrics. For ImageNet runs the paper's single-CNN
validation errors (40.7% top-1, 18.2% top-5; docs/PAPER.md, "Results") are drawn for comparison.
The run's files are read through rundir.py.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence

from matplotlib.figure import Figure

from alexnet_jax.runs import rundir

PAPER_TOP1_ERROR = 0.407  # one CNN, ILSVRC2012 validation (docs/PAPER.md, "Results")
PAPER_TOP5_ERROR = 0.182
FIGSIZE_INCHES = (12.0, 4.5)
DPI = 100  # the PNG is FIGSIZE_INCHES * DPI pixels: 1200 x 450


def _series(records: Sequence[dict], split: str, key: str) -> tuple[list[int], list[float]]:
    """(steps, values) of `key` for one split, without re-evaluations."""
    chosen = [r for r in records if r.get("split") == split and key in r and not r.get("reeval")]
    return [int(r["step"]) for r in chosen], [float(r[key]) for r in chosen]


_LABELS = {"loss": "loss", "top1_error": "top-1 error", "top5_error": "top-5 error"}
_COLOURS = {"loss": "C0", "top1_error": "C0", "top5_error": "C1"}
_STYLES = {  # train: every logged step, thin; eval: the points where it ran
    "train": dict(alpha=0.5, linewidth=1),
    "eval": dict(marker="o", markersize=3, linewidth=1.5),
}


def _plot_split(ax, records: Sequence[dict], split: str, key: str) -> None:
    steps, values = _series(records, split, key)
    if steps:
        colour = "C3" if (split, key) == ("eval", "loss") else _COLOURS[key]
        ax.plot(steps, values, label=f"{split} {_LABELS[key]}", color=colour, **_STYLES[split])


def _draw_paper_errors(ax, top5: bool) -> None:
    """Dashed lines at the paper's one-CNN validation errors, labelled at the left edge."""
    lines = ((PAPER_TOP1_ERROR, "top-1"), (PAPER_TOP5_ERROR, "top-5"))
    for value, label in lines if top5 else lines[:1]:
        ax.axhline(value, color="gray", linestyle="--", linewidth=1)
        ax.annotate(
            f"paper {label} {value:.1%}",
            (0.0, value),
            xycoords=("axes fraction", "data"),
            xytext=(4, 3),
            textcoords="offset points",
            color="gray",
            fontsize="small",
        )


def plot_training_curves(workdir: str, out_path: str | None = None) -> str:
    """Writes a PNG of train/eval loss and top-1/top-5 error against steps; returns its path.

    Args:
      workdir: a run directory with `metrics.jsonl` (and `config.json`, read for the dataset).
      out_path: where to write; default `workdir/training_curves.png`.
    """
    records = rundir.read_metrics(workdir)
    out_path = out_path or rundir.curves_path(workdir)
    config = rundir.read_config_dict(workdir) or {}  # curves need only the metrics
    top5 = rundir.shows_top5(config.get("num_classes"))
    # A bare Figure renders with Agg and leaves pyplot's global state (and backend) untouched.
    fig = Figure(figsize=FIGSIZE_INCHES, dpi=DPI)
    ax_loss, ax_err = fig.subplots(1, 2)
    for split in ("train", "eval"):
        _plot_split(ax_loss, records, split, "loss")
        _plot_split(ax_err, records, split, rundir.TOP1_ERROR)
        if top5:
            _plot_split(ax_err, records, split, rundir.TOP5_ERROR)
    if config.get("dataset") == "imagenet2012":
        _draw_paper_errors(ax_err, top5)
    ax_loss.set(title="Cross-entropy loss", xlabel="step", ylabel="loss")
    title = "Top-1 / top-5 error" if top5 else "Top-1 error"
    ax_err.set(title=title, xlabel="step", ylabel="error", ylim=(0.0, 1.0))
    for ax in (ax_loss, ax_err):
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize="small")
    details = ", ".join(str(config[k]) for k in ("dataset", "variant") if k in config)
    fig.suptitle(os.path.basename(os.path.normpath(workdir)) + (f" ({details})" if details else ""))
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    save_figure(fig, out_path)
    return out_path


def save_figure(fig, path: str) -> None:
    """Saves `fig` as a PNG at `path` whole or not at all (rundir.write_atomically)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=fig.dpi)
    rundir.write_atomically(path, buffer.getvalue())

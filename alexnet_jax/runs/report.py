"""What a run tells its user on the console: a start banner, a line per logged step and per
evaluation, and a final summary (printed on stdout through core/console.py).

The banner says where the run computes (devices, mesh, processes), on what (dataset sizes,
classes), for how long (steps per epoch, total), in which workdir and whether it is new or
resumed; the summary says what it did (steps, time, images/s), how well (final and best
evaluation) and where its files are. All read only the config, the experiment and the run
directory (rundir.py).

Quality is told as the paper tells it, in error rates, one format everywhere:
`top-1 err 37.50%  top-5 err 12.50%` (top-5 only for more than 5 classes).
"""

from __future__ import annotations

import math
import os
from typing import Any

import jax

from alexnet_jax.runs import rundir


def _devices() -> str:
    devices = jax.devices()
    kinds = sorted({d.device_kind for d in devices})
    platform = devices[0].platform.upper() if devices else "?"
    return f"{len(devices)} {platform} device(s) ({', '.join(kinds)})"


def banner(
    config: Any,
    workdir: str,
    mesh: jax.sharding.Mesh,
    num_train_examples: int,
    num_eval_examples: int,
    steps_per_epoch: int,
    num_steps: int,
    start_step: int,
    num_params: int,
) -> str:
    """A few lines that describe the run before its first step."""
    mesh_text = " x ".join(f"{name}={size}" for name, size in mesh.shape.items())
    state = f"resumed at step {start_step}" if start_step else "new run"
    params = num_params
    lines = [
        f"run: {os.path.abspath(workdir)} ({state})",
        f"devices: {_devices()}, {jax.process_count()} process(es); mesh {mesh_text}",
        f"data: {config.dataset}, {num_train_examples} train / {num_eval_examples} eval "
        f"examples, {config.num_classes} classes; augmentation on the {config.augment_on}",
        f"model: {config.variant} ({params / 1e6:.1f}M parameters, {config.dtype}); "
        f"{config.optimizer} lr {config.learning_rate:g} ({config.schedule})",
        f"schedule: batch {config.batch_size}, {steps_per_epoch} steps per epoch, "
        f"{num_steps} steps in all",
    ]
    return "\n".join(lines)


def format_errors(metrics: dict, num_classes: int | None) -> str:
    """`top-1 err 37.50%  top-5 err 12.50%`: the run's error rates as every console line shows
    them (top-5 only where it means something: rundir.shows_top5)."""
    text = f"top-1 err {100 * metrics[rundir.TOP1_ERROR]:.2f}%"
    if rundir.shows_top5(num_classes) and rundir.TOP5_ERROR in metrics:
        text += f"  top-5 err {100 * metrics[rundir.TOP5_ERROR]:.2f}%"
    return text


def step_line(step: int, scalars: dict, num_classes: int | None, eta: str) -> str:
    """One logged training interval: the training batches' loss and errors, the optimizer,
    speed and ETA."""
    return (
        f"step {step}  loss {scalars['loss']:.4f}  {format_errors(scalars, num_classes)}  "
        f"lr {scalars['learning_rate']:.2g}  |g| {scalars['grad_norm']:.3g}  "
        f"{scalars['images_per_sec']:.1f} img/s  {scalars['step_time_ms']:.0f} ms/step  "
        f"ETA {eta}"
    )


def eval_line(step: int, metrics: dict, num_classes: int | None, reeval: bool = False) -> str:
    """One evaluation, as training and `--mode=eval` print it."""
    examples = f"{int(metrics['num_examples'])} examples"
    if reeval:
        examples += "; a re-evaluation, kept apart from the run's own"
    return (
        f"eval at step {step}: loss {metrics['loss']:.4f}  "
        f"{format_errors(metrics, num_classes)}  ({examples})"
    )


def _run_evals(workdir: str) -> list[dict]:
    return rundir.run_evals(rundir.read_metrics(workdir))


def _format_eval(record: dict, num_classes: int | None) -> str:
    return f"{format_errors(record, num_classes)} (step {record['step']})"


def final_eval(workdir: str, step: int) -> dict | None:
    """The run's own evaluation at `step` or later from metrics.jsonl, or None."""
    done = [r for r in _run_evals(workdir) if r["step"] >= step]
    return done[-1] if done else None


def summary(
    workdir: str,
    start_step: int,
    step: int,
    seconds: float,
    batch_size: int,
    num_classes: int | None = None,
    stopped: bool = False,
) -> str:
    """What the run did, how well (its final and its best evaluation: the lowest top-1 error,
    the earliest of equals; "last eval" for a run `stopped` before its end, whose final one is
    still to come), and where its files are."""
    evals = _run_evals(workdir) if os.path.exists(rundir.metrics_path(workdir)) else []
    images = (step - start_step) * batch_size
    speed = f", {images / seconds:.1f} img/s" if seconds > 0 and images else ""
    lines = [f"done: steps {start_step}-{step} in {seconds:.0f} s{speed}"]
    if evals:
        last = "last eval" if stopped else "final eval"
        lines.append(f"{last}: {_format_eval(evals[-1], num_classes)}")
        finite = [r for r in evals if math.isfinite(r[rundir.TOP1_ERROR])]  # (NaN is no best)
        if finite:
            best = min(finite, key=lambda r: r[rundir.TOP1_ERROR])
            lines.append(f"best eval: {_format_eval(best, num_classes)}")
    lines.append(
        f"files: {os.path.abspath(workdir)} (metrics.jsonl, {rundir.CURVES_FILE}, checkpoints/, "
        "TensorBoard: tensorboard --logdir " + os.path.dirname(os.path.abspath(workdir)) + ")"
    )
    return "\n".join(lines)


def already_finished(
    workdir: str, step: int, record: dict, num_classes: int | None, by_steps: bool = False
) -> str:
    """The message of a rerun of a run that finished at `step` with final eval `record`;
    `by_steps`: its length is config.num_train_steps (> 0), which num_epochs does not change."""
    longer = (
        f"raise --config.num_train_steps (now {step}; it overrides num_epochs)"
        if by_steps
        else "raise --config.num_epochs (or set num_train_steps)"
    )
    return (
        f"The run in {os.path.abspath(workdir)} already finished at step {step}: final eval "
        f"{_format_eval(record, num_classes)}. Nothing to do; to evaluate again use --mode=eval, "
        f"to train longer {longer}."
    )

"""What a run tells its user on the console: a start banner and a final summary.

The banner says where the run computes (devices, mesh, processes), on what (dataset sizes,
classes), for how long (steps per epoch, total), in which workdir and whether it is new or
resumed; the summary says what it did (steps, time, images/s), how well (final and best
evaluation) and where its files are. Both read only the config, the experiment and the run
directory (rundir.py).
"""

from __future__ import annotations

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


def _eval_records(workdir: str) -> list[dict]:
    return [r for r in rundir.read_metrics(workdir) if r.get("split") == "eval"]


def _format_eval(record: dict) -> str:
    return (
        f"top-1 error {1 - record['top1']:.4f}, top-5 error {1 - record['top5']:.4f} "
        f"(step {record['step']})"
    )


def final_eval(workdir: str, step: int) -> dict | None:
    """The run's evaluation at `step` or later from metrics.jsonl, or None."""
    done = [r for r in _eval_records(workdir) if r["step"] >= step]
    return done[-1] if done else None


def summary(workdir: str, start_step: int, step: int, seconds: float, batch_size: int) -> str:
    """What the run did, how well, and where its files are."""
    evals = _eval_records(workdir) if os.path.exists(rundir.metrics_path(workdir)) else []
    images = (step - start_step) * batch_size
    speed = f", {images / seconds:.1f} img/s" if seconds > 0 and images else ""
    lines = [f"done: steps {start_step}-{step} in {seconds:.0f} s{speed}"]
    if evals:
        best = max(evals, key=lambda r: r["top1"])
        lines.append(f"final eval: {_format_eval(evals[-1])}")
        lines.append(f"best eval: {_format_eval(best)}")
    lines.append(
        f"files: {os.path.abspath(workdir)} (metrics.jsonl, {rundir.CURVES_FILE}, checkpoints/, "
        "TensorBoard: tensorboard --logdir " + os.path.dirname(os.path.abspath(workdir)) + ")"
    )
    return "\n".join(lines)


def eval_line(step: int, metrics: dict[str, float]) -> str:
    """One evaluation's result as `--mode=eval` prints it."""
    return (
        f"eval at step {step}: top-1 error {1 - metrics['top1']:.4f}, top-5 error "
        f"{1 - metrics['top5']:.4f}, loss {metrics['loss']:.4f} "
        f"({int(metrics['num_examples'])} examples)"
    )


def already_finished(workdir: str, step: int, record: dict) -> str:
    """The message of a rerun of a run that finished at `step` with final eval `record`."""
    return (
        f"The run in {os.path.abspath(workdir)} already finished at step {step}: final eval "
        f"{_format_eval(record)}. Nothing to do; to evaluate again use --mode=eval, to train "
        "longer raise --config.num_epochs (or num_train_steps)."
    )

"""Metric output (TensorBoard, console, metrics.jsonl) and progress/ETA.

Quality is written as error rates (rundir.TOP1_ERROR, TOP5_ERROR), the paper's convention, under
the same names in metrics.jsonl and TensorBoard ("train/top1_error", "eval/top5_error") and in
the console lines (report.step_line, report.eval_line). Only process 0 writes files; every
process prints its lines (console.py; main.py shows process 0's only, unless
--log_all_processes).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import socket
import time

import jax
import numpy as np
from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.plugins.scalar import summary_v2
from tensorboard.summary.writer.record_writer import RecordWriter

from alexnet_jax.core import console
from alexnet_jax.core.errors import DataError, storage_error, storage_errors_as
from alexnet_jax.runs import report, rundir

# What the train step returns for each step, averaged over the steps of a logged interval.
TRAIN_METRICS = ("loss", rundir.TOP1_ERROR, rundir.TOP5_ERROR, "learning_rate", "grad_norm")


class Progress:
    """Training speed and ETA from wall-clock time between two log calls.

    images_per_sec and step_time_ms are the training steps' own: the seconds spent in
    evaluations and checkpoint saves in between (`exclude`) are left out, so they compare with
    the bare step (benchmarks/train_step.py). eta_seconds is the average time per step since the
    first log (its interval holds the compilation) times the steps left: evaluations and saves
    included, as the rest of the run will have them.
    """

    def __init__(self, start_step: int, num_steps: int, batch_size: int):
        self.num_steps, self.batch_size = num_steps, batch_size
        self.last_step, self.last_time = start_step, time.perf_counter()
        self.excluded = 0.0
        self.first: tuple[int, float] | None = None  # (step, time) of the first log

    def exclude(self, seconds: float) -> None:
        """Leaves `seconds` (an evaluation, a checkpoint save) out of the next speed."""
        self.excluded += seconds

    def update(self, step: int) -> dict[str, float]:
        now = time.perf_counter()
        steps = max(step - self.last_step, 1)
        step_time = max(now - self.last_time - self.excluded, 1e-9) / steps
        if self.first is None:
            self.first, average = (step, now), step_time
        else:
            average = (now - self.first[1]) / max(step - self.first[0], 1)
        self.last_step, self.last_time, self.excluded = step, now, 0.0
        return {
            "images_per_sec": self.batch_size / step_time,
            "step_time_ms": 1000.0 * step_time,
            "eta_seconds": average * max(self.num_steps - step, 0),
        }


def _truncate_jsonl(path: str, after_step: int) -> int | None:
    """Drops lines logged after `after_step` by a run that was then interrupted (kept: <= step),
    and a cut-off last line of a crashed write (with a warning, rundir.read_jsonl). Returns how
    many records were kept, or None when there is no such file."""
    if not os.path.exists(path):
        return None
    kept = [r for r in rundir.read_jsonl(path) if r.get("step", 0) <= after_step]
    rundir.rewrite_jsonl(path, kept)
    return len(kept)


class ScalarEvents:
    """A TensorBoard events file of scalars, written with TensorBoard's own protos and record
    format: what tf.summary.scalar writes, without importing TensorFlow (~5 s per process).

    A training run's file opens with SessionLog.START, TensorBoard's restart marker: a resumed
    run's events after its checkpoint's step in earlier files (logged by the interrupted run) are
    discarded, as metrics.jsonl's lines after the checkpoint are. Every write is flushed, so the
    file holds what was logged up to a kill and a full disk is reported at the step that meets
    it.
    """

    _opened = itertools.count()  # files opened by this process: part of each file's name

    def __init__(self, logdir: str, start_step: int | None = 0):
        """A training run's events from `start_step` + 1 on replace those of earlier files;
        None (an evaluation appended to a run): no restart marker, nothing is replaced."""
        names = (
            f"{time.time():.0f}",
            socket.gethostname(),
            str(os.getpid()),
            f"{next(self._opened):06d}",  # padded: TensorBoard reads files in name order
        )
        self.path = os.path.join(logdir, "events.out.tfevents." + ".".join(names) + ".v2")
        self._file = open(self.path, "xb")  # noqa: SIM115 (closed by close(); never overwrites)
        self._records = RecordWriter(self._file)
        try:
            self._append(event_pb2.Event(file_version="brain.Event:2"))
            if start_step is not None:
                start = event_pb2.SessionLog(status=event_pb2.SessionLog.START)
                self._append(event_pb2.Event(step=start_step + 1, session_log=start))
        except BaseException:  # a full disk already: no open file is left behind
            with contextlib.suppress(OSError):
                self._file.close()
            raise

    def _append(self, event) -> None:
        event.wall_time = time.time()
        self._records.write(event.SerializeToString())
        self._records.flush()

    def write_scalars(self, step: int, scalars: dict[str, float]) -> None:
        summary = summary_pb2.Summary()
        for tag, value in scalars.items():
            summary.MergeFrom(summary_v2.scalar_pb(tag, float(value)))
        self._append(event_pb2.Event(step=step, summary=summary))

    def close(self) -> None:
        self._records.close()


class MetricsWriter:
    """Writes train/eval metrics to TensorBoard, `workdir/metrics.jsonl` and the console."""

    def __init__(self, workdir: str, start_step: int | None = 0, num_classes: int | None = None):
        """`start_step`: lines after it (from an interrupted run) are dropped; None keeps all.
        `num_classes`: the model's, for the console lines (top-5 error only for more than 5)."""
        self.is_writer = jax.process_index() == 0
        self.workdir, self.num_classes = workdir, num_classes
        self.jsonl_path = rundir.metrics_path(workdir)
        self.summary = None
        if self.is_writer:
            os.makedirs(workdir, exist_ok=True)
            kept = None if start_step is None else _truncate_jsonl(self.jsonl_path, start_step)
            if start_step and not kept:  # (a checkpoint's save writes its step's row first)
                what = "is missing" if kept is None else "holds no metrics"  # (pass 18, #43)
                console.warning(
                    f"{self.jsonl_path} {what}: the metrics of steps 0-{start_step} are lost, "
                    "and the run's final and best evaluations count from here on."
                )
            with storage_errors_as(lambda e: storage_error("the TensorBoard events", workdir, e)):
                self.summary = ScalarEvents(workdir, start_step)

    def _write(
        self,
        step: int,
        split: str,
        scalars: dict[str, float],
        reeval: bool = False,
        labels: dict | None = None,
    ) -> None:
        """One line of metrics.jsonl and the scalars in TensorBoard, tagged "<split>/<name>"
        ("reeval/<name>" for a re-evaluation, so that the run's curve keeps one point a step)."""
        if not self.is_writer:
            return
        what = f"the {split} metrics of step {step}"
        if moved := rundir.moved_away(self.workdir, what):  # (not into another folder)
            raise moved
        tag = "reeval" if reeval else split
        record = {"step": step, "split": split, **scalars, **(labels or {})}
        record.update({"reeval": True} if reeval else {})
        events = f"the TensorBoard events of step {step}"  # (not "metrics": pass 19, #10)
        with storage_errors_as(lambda e: storage_error(events, self.workdir, e)):
            self.summary.write_scalars(step, {f"{tag}/{k}": v for k, v in scalars.items()})
        with storage_errors_as(lambda e: storage_error(what, self.workdir, e)):
            rundir.append_jsonl(self.jsonl_path, record)

    def write_train(
        self, step: int, step_metrics: list[tuple[int, dict]], speed: dict, counts: dict
    ) -> None:
        """Averages the per-step metrics since the last call; prints them and writes them with
        speed and counts.

        `counts` are running totals: skipped non-finite steps, undecodable images seen, epochs.
        """
        scalars = {k: float(np.mean([m[k] for _, m in step_metrics])) for k in TRAIN_METRICS}
        scalars.update(speed)
        scalars.update(counts)
        eta = _format_seconds(speed["eta_seconds"])
        console.info(console.stamped(report.step_line(step, scalars, self.num_classes, eta)))
        self._write(step, "train", scalars)

    def write_eval(
        self,
        step: int,
        metrics: dict[str, float],
        reeval: bool = False,
        echo: bool = True,
        labels: dict | None = None,
    ) -> None:
        """Prints (unless not `echo`) then writes one evaluation (`loop.evaluate`'s metrics).

        labels: what was evaluated (`--mode=eval`: eval_split, eval_crops), kept in the line.
        reeval: `--mode=eval` of a step the run evaluated before: the line is marked
        "reeval" in metrics.jsonl (readers keep the run's own, rundir.run_evals) and its
        TensorBoard tags are "reeval/..." (the run's eval curve stays one point per step).
        """
        if echo:
            line = report.eval_line(step, metrics, self.num_classes, reeval)
            console.info(console.stamped(line))
        self._write(step, "eval", dict(metrics), reeval, labels)

    def close(self, raise_errors: bool = True) -> None:
        """Flushes and closes the TensorBoard file. raise_errors=False (another error is on its
        way out): a failed flush is only logged."""
        if self.summary is None:
            return
        summary, self.summary = self.summary, None
        try:
            with storage_errors_as(
                lambda e: storage_error("the TensorBoard events", self.workdir, e)
            ):
                summary.close()
        except DataError as e:
            if raise_errors:
                raise
            console.warning(str(e))


def _format_seconds(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m{seconds % 60:02d}s"

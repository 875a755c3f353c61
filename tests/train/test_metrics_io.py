"""metrics_io: the logged training speed leaves evaluations and saves out while the ETA keeps them
(a fake clock); the TensorBoard events file, written without TensorFlow, reads back in
TensorBoard's and TensorFlow's own readers, and a resumed run's events replace the interrupted
run's from its checkpoint on."""

import itertools
import json
import os

import numpy as np
import pytest

from alexnet_jax.train import metrics_io


def test_speed_leaves_out_evaluations_and_saves_the_eta_keeps_them(monkeypatch):
    now = [100.0]
    monkeypatch.setattr(metrics_io.time, "perf_counter", lambda: now[0])
    progress = metrics_io.Progress(start_step=0, num_steps=100, batch_size=32)
    now[0] += 20.0  # 10 steps, the first holding a 10 s compile
    first = progress.update(10)
    assert first["step_time_ms"] == pytest.approx(2000.0)
    assert first["eta_seconds"] == pytest.approx(2.0 * 90)  # no better estimate yet
    now[0] += 10.0  # 10 steps of 1 s ...
    progress.exclude(3.0)  # ... and an evaluation of 3 s
    progress.exclude(2.0)  # ... and a checkpoint save of 2 s
    now[0] += 5.0
    second = progress.update(20)
    assert second["step_time_ms"] == pytest.approx(1000.0)
    assert second["images_per_sec"] == pytest.approx(32.0)
    assert second["eta_seconds"] == pytest.approx(1.5 * 80)  # 15 s per 10 steps since step 10
    now[0] += 10.0
    third = progress.update(30)  # nothing excluded this time: back to the plain interval
    assert third["step_time_ms"] == pytest.approx(1000.0)
    assert third["eta_seconds"] == pytest.approx(25.0 / 20 * 70)


def _eval(loss: float) -> dict:
    return {"loss": loss, "top1_error": 0.5, "top5_error": 0.25, "num_examples": 8}


@pytest.mark.parametrize("files_opened_before", [0, 8])
def test_tensorboard_events_read_back_and_a_resume_replaces_the_cut_off_steps(
    tmp_path, monkeypatch, files_opened_before
):
    """A run logs steps 1-3 and is killed after its checkpoint at step 2; the resumed run logs
    step 3 again with another value; then an evaluation (--mode=eval) appends step 4.
    TensorBoard's reader gives each step once, with the resumed run's value, and loses nothing
    to the evaluation, as metrics.jsonl; TensorFlow's record reader checks every record's CRC.
    With 8 files opened before in the process, the three are its 9th-11th: their names sort in
    that order (an unpadded "10" sorted before "8" and TensorBoard lost the resume; CI saw it)."""
    import tensorflow as tf
    from tensorboard.backend.event_processing import plugin_event_accumulator

    opened = itertools.count(files_opened_before)
    monkeypatch.setattr(metrics_io.ScalarEvents, "_opened", opened)
    workdir = str(tmp_path)
    first = metrics_io.MetricsWriter(workdir)
    for step, loss in [(1, 3.0), (2, 2.5), (3, 2.25)]:
        first.write_eval(step, _eval(loss))
    first.summary._records._writer.flush()  # as a kill leaves it: no close()
    resumed = metrics_io.MetricsWriter(workdir, start_step=2)
    resumed.write_eval(3, _eval(2.0))
    resumed.close()
    evaluation = metrics_io.MetricsWriter(workdir, start_step=None)  # --mode=eval appends
    evaluation.write_eval(4, _eval(1.75))
    evaluation.close()

    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        jsonl = [(r["step"], r["loss"]) for r in map(json.loads, f)]
    assert jsonl == [(1, 3.0), (2, 2.5), (3, 2.0), (4, 1.75)]  # eval replaced nothing
    reader = plugin_event_accumulator.EventAccumulator(workdir)  # what TensorBoard uses
    reader.Reload()
    tensors = reader.Tensors("eval/loss")
    events = [(e.step, float(tf.make_ndarray(e.tensor_proto))) for e in tensors]
    assert events == jsonl
    assert {"eval/top1_error", "eval/top5_error", "eval/num_examples"} <= set(
        reader.Tags()["tensors"]
    )
    files = sorted(f for f in os.listdir(workdir) if f.startswith("events.out.tfevents."))
    assert len(files) == 3
    records = [
        tf.compat.v1.Event.FromString(r.numpy())
        for name in files
        for r in tf.data.TFRecordDataset(os.path.join(workdir, name))  # checks the CRCs
    ]
    scalars = [v for r in records for v in r.summary.value if v.tag == "eval/top1_error"]
    np.testing.assert_allclose([tf.make_ndarray(v.tensor) for v in scalars], [0.5] * 5)

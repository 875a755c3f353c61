"""metrics_io.Progress: the logged training speed leaves evaluations and saves out; the ETA keeps
them (a fake clock)."""

import pytest

from alexnet_jax import metrics_io


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

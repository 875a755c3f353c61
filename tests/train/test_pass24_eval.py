"""Hostile pass 24, `--mode=eval`: a run whose checkpoints are gone (#56), and an evaluation of
other data than the run's own (#38). In process, on a tiny synthetic run (no data read)."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest

from alexnet_jax.core.errors import DataError, UserError
from alexnet_jax.runs import rundir
from alexnet_jax.train import config_lib, loop
from tests.conftest import write_tiny_run


def _tiny_synthetic_run(root: str) -> str:
    return write_tiny_run(root, dataset="synthetic", synthetic_eval_examples=8, num_classes=4)


def test_eval_of_a_finished_run_without_checkpoints_says_to_restore_them(tmp_path):
    """#56: eval of a finished run whose checkpoints/ is gone said `train first`, which training
    then refused (it would start over). It says, as predict does, that the run reached its step
    and its checkpoints are to be restored; a run with no history still says `train first`."""
    workdir = _tiny_synthetic_run(str(tmp_path))
    rundir.record_finished(workdir, 1)
    shutil.rmtree(rundir.checkpoint_dir(workdir))
    config = config_lib.load_config(workdir)
    with pytest.raises(DataError, match=r"reached step 1 .* restore that folder from a copy"):
        loop.evaluate_checkpoint(config, workdir)
    assert rundir.reached_step(workdir) == 1
    os.remove(os.path.join(workdir, rundir.HISTORY_FILE))  # never trained: train first
    with pytest.raises(UserError, match=r"No checkpoint in .*: train first \(--mode=train\)"):
        loop.evaluate_checkpoint(config, workdir)


def test_eval_of_other_data_at_an_unevaluated_step_is_kept_apart(tmp_path, capsys):
    """#38: an eval with another data folder (an EVAL_FIELDS override) of a step the run never
    evaluated was recorded as the run's own evaluation (its final result in compare), nothing
    saying which data. It is a marked "reeval" line naming the data; the same eval with the
    run's own data (an owed evaluation) stays the run's own."""
    workdir = _tiny_synthetic_run(str(tmp_path))
    elsewhere = str(tmp_path / "elsewhere")
    config = config_lib.load_config(workdir)
    metrics = loop.evaluate_checkpoint(config, workdir, {"data_dir": elsewhere})
    assert np.isfinite(metrics["loss"])
    assert "kept apart from the run's own" in capsys.readouterr().out
    (row,) = rundir.read_metrics(workdir)
    assert (row["step"], row["reeval"], row["data_dir"]) == (1, True, elsewhere)
    assert rundir.run_evals(rundir.read_metrics(workdir)) == []
    loop.evaluate_checkpoint(config_lib.load_config(workdir), workdir)
    assert "kept apart" not in capsys.readouterr().out
    (own,) = rundir.run_evals(rundir.read_metrics(workdir))
    assert (own["step"], own.get("reeval"), own.get("data_dir")) == (1, None, None)


def test_eval_with_the_runs_own_data_path_written_another_way_is_the_runs_own(tmp_path, capsys):
    """Pass 25, #38: `--config.data_dir=/x/../tfds/`, the run's own folder written another way,
    was kept apart as an evaluation of other data: the paths were compared as text. They are
    compared as the folders they name; another folder is still kept apart."""
    workdir = _tiny_synthetic_run(str(tmp_path))
    config = config_lib.load_config(workdir)
    same = os.path.join(str(tmp_path), "x", "..", os.path.basename(config.data_dir)) + os.sep
    loop.evaluate_checkpoint(config, workdir, {"data_dir": same})
    assert "kept apart" not in capsys.readouterr().out
    (own,) = rundir.run_evals(rundir.read_metrics(workdir))
    assert (own["step"], own.get("reeval"), own.get("data_dir")) == (1, None, None)


def test_eval_on_a_device_count_that_does_not_divide_the_training_batch(tmp_path):
    """Pass 26, #29: `--mode=eval` of a batch-8 run on 3 devices was refused by the training
    batch's rule (its advice, another batch size, then refused by eval): an evaluation never
    splits config.batch_size, only config.eval_batch_size must divide."""
    import jax

    devices = jax.device_count()
    assert devices > 1, "conftest gives this process several CPU devices"
    workdir = write_tiny_run(
        str(tmp_path), dataset="synthetic", synthetic_eval_examples=devices,
        num_classes=4, batch_size=devices + 1, eval_batch_size=devices,
    )  # fmt: skip
    metrics = loop.evaluate_checkpoint(config_lib.load_config(workdir), workdir)
    assert metrics["num_examples"] == devices

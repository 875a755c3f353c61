"""Figure 1 (configs/figure1.py, models' `cifar4`, alexnet_jax/tools/figure1.py) and the ablation
sweep presets (sweeps/paper_ablations.py, sweeps/miniature_ablations.py).

The cifar4 net against its hand count, cuda-convnet's pooling on hand-made inputs, CIFAR-10's tfds
records read whole at 32x32, the 25% marking on hand-made metrics.jsonl files, the Figure 1 config
training a few steps on synthetic 32x32 data, and the presets: every arm valid, the miniature
one's printed commands exactly the runs the sweep plans, inside its 15-minute budget.
"""

import importlib.util
import json
import math
import os
import shlex

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow as tf

from alexnet_jax.core.errors import DataError
from alexnet_jax.data import data_sources, preprocessing
from alexnet_jax.data.recipe import Recipe
from alexnet_jax.model import cifar4, models
from alexnet_jax.runs import rundir
from alexnet_jax.tools import figure1, sweep
from alexnet_jax.train import sharding
from configs import figure1 as figure1_config

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


# ---- The net -----------------------------------------------------------------------------------


def test_cifar4_has_the_80sec_layers_and_their_hand_counted_parameters():
    """layers-80sec.cfg: conv 5x5 3->32, 32->32, 32->64 (pad 2), pools 32 -> 16 -> 8 -> 4, fc64
    on 4*4*64, fc10. Weights + biases: 2,432 + 25,632 + 51,264 + 65,600 + 650 = 145,578, with
    either activation and either pooling; the logits are (B, 10) float32."""
    shapes = {
        "conv1": {"kernel": (5, 5, 3, 32), "bias": (32,)},
        "conv2": {"kernel": (5, 5, 32, 32), "bias": (32,)},
        "conv3": {"kernel": (5, 5, 32, 64), "bias": (64,)},
        "fc64": {"kernel": (4 * 4 * 64, 64), "bias": (64,)},
        "fc10": {"kernel": (64, 10), "bias": (10,)},
    }
    hand_count = (75 * 32 + 32) + (800 * 32 + 32) + (800 * 64 + 64) + (1024 * 64 + 64) + 650
    assert hand_count == 145_578
    for activation, pool_window in (("relu", 3), ("tanh", 2)):
        config = figure1_config.get_config()
        config.activation, config.pool_window = activation, pool_window
        model = models.create_model(config)
        params = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((2, 32, 32, 3)))["params"]
        assert jax.tree_util.tree_map(lambda a: a.shape, params) == shapes
        assert models.param_count(params) == hand_count
    variables = jax.jit(model.init)(jax.random.key(0), jnp.zeros((2, 32, 32, 3)))
    logits = jax.jit(model.apply)(variables, jnp.ones((2, 32, 32, 3)))
    assert logits.shape == (2, 10)
    assert logits.dtype == jnp.float32
    assert bool(jnp.all(jnp.isfinite(logits)))
    assert models.layer_macs("cifar4", 32, 10)["fc64"] == 1024 * 64


def test_cifar4_pooling_is_cuda_convnets_overhanging_windows():
    """cuda-convnet pools to ceil((n - 3) / 2) + 1 outputs (5 -> 2 here, where VALID gives 2 and
    6 -> 3 where VALID gives 2): the last window hangs past the edge; a max ignores the overhang,
    an average divides by the cells inside the image."""
    assert [cifar4.pool_size(n, 3, 2) for n in (32, 16, 8, 6, 5)] == [16, 8, 4, 3, 2]
    x = jnp.arange(36.0).reshape(1, 6, 6, 1)
    got_max = cifar4.pool(x, "max", 3, 2, "reduce_window")[0, :, :, 0]
    np.testing.assert_array_equal(got_max, [[14, 16, 17], [26, 28, 29], [32, 34, 35]])
    got_avg = cifar4.pool(x, "avg", 3, 2, "reduce_window")[0, :, :, 0]
    # Window (rows 4-5, cols 4-5) holds 28, 29, 34, 35: mean 31.5; rows 0-2 x cols 4-5: 4 5 10 11
    # 16 17, mean 10.5.
    assert got_avg[2, 2] == pytest.approx(31.5)
    assert got_avg[0, 2] == pytest.approx(10.5)
    assert got_avg[0, 0] == pytest.approx(np.mean([0, 1, 2, 6, 7, 8, 12, 13, 14]))


def test_cifar10_records_are_read_whole_without_crop_or_flip(tmp_path):
    """A TFRecord in tfds cifar10's layout (PNG `image`, `label`, `id`): figure1's recipe hands
    the model the stored 32x32 pixels unchanged, keyed by `id`."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    path = str(tmp_path / "cifar10-train.tfrecord-00000-of-00001")
    with tf.io.TFRecordWriter(path) as writer:
        for i, image in enumerate(images):
            feature = {
                "image": tf.train.Feature(
                    bytes_list=tf.train.BytesList(value=[tf.io.encode_png(image).numpy()])
                ),
                "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[i])),
                "id": tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"train_%d" % i])),
            }
            writer.write(
                tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()
            )
    shard = data_sources.RecordShard((path,), (0,), (3,), key_field=data_sources.CIFAR10_KEY)
    records = next(iter(shard.epoch_records(None).batch(3)))
    examples = shard.materialize(records)
    assert examples["key"].numpy().tolist() == [b"train_0", b"train_1", b"train_2"]
    assert examples["label"].numpy().tolist() == [0, 1, 2]
    recipe = Recipe.from_config(figure1_config.get_config())
    for i in range(3):
        seed = tf.constant([7, i], tf.int64)
        view, flip, offset = preprocessing.train_example(examples["image"][i], seed, recipe)
        np.testing.assert_array_equal(view.numpy(), images[i])
        assert not bool(flip)
        assert not np.any(offset.numpy())


def test_missing_cifar10_is_one_data_error_saying_how_to_build_it(tmp_path):
    """Without tfds' cifar10 in data_dir, prepare() downloads nothing: a DataError naming the
    folder and the one command that builds it; the folder stays empty."""
    from alexnet_jax.core.errors import DataError
    from alexnet_jax.data import input_pipeline

    config = figure1_config.get_config()
    config.data_dir = str(tmp_path / "tfds")
    with pytest.raises(DataError) as missing:
        input_pipeline.prepare(config)
    message = str(missing.value)
    assert f"CIFAR-10 is not prepared in config.data_dir={config.data_dir!r}" in message
    assert "tfds.builder('cifar10', data_dir=" in message
    assert "download_and_prepare()" in message
    assert not any(p.is_file() for p in tmp_path.rglob("*"))


def test_the_figure1_config_trains_on_synthetic_32px_data(tmp_path):
    """configs/figure1.py with synthetic 32x32 data for 3 steps: it trains, the loss is finite,
    and each train line carries the epoch figure1.py plots against."""
    from alexnet_jax.train import loop

    config = figure1_config.get_config()
    config.dataset, config.normalization = "synthetic", "mean_std"
    config.synthetic_train_examples, config.synthetic_eval_examples = 64, 8
    config.batch_size = config.eval_batch_size = 8
    config.num_train_steps, config.log_every_steps = 3, 1
    config.eval_every_steps, config.checkpoint_every_steps = 3, 100
    workdir = str(tmp_path / "run")
    loop.train_and_evaluate(config, workdir)
    records = rundir.read_metrics(workdir)
    lines = [r for r in records if r["split"] == "train"]
    assert [r["step"] for r in lines] == [1, 2, 3]
    assert all(math.isfinite(r["loss"]) for r in lines)
    assert [r["epoch"] for r in lines] == [1 / 8, 2 / 8, 3 / 8]  # 8 steps of 8 per epoch
    assert rundir.finished_step(workdir) == 3


# ---- The figure --------------------------------------------------------------------------------


def _write_run(workdir, lines, version="new"):
    """metrics.jsonl of (step, epoch, training top-1 error) train lines, as main.py writes them
    now ("new": error rates) or wrote them before errors were the convention ("old": accuracy)."""
    os.makedirs(workdir)
    with open(rundir.config_path(workdir), "w") as f:  # the arm's activation, as a run records it
        json.dump({"activation": "tanh"} if "tanh" in workdir.split(os.sep) else {}, f)
    with open(rundir.metrics_path(workdir), "w") as f:
        for step, epoch, error in lines:
            record = {"step": step, "split": "train", "loss": 1.0}
            record.update({"top1_error": error} if version == "new" else {"top1": 1.0 - error})
            if version == "new":  # 100 ms per step (older files: no step times)
                record["step_time_ms"] = 100.0
            f.write(json.dumps({**record, "epoch": epoch}) + "\n")


@pytest.mark.parametrize("version", ["new", "old"])
def test_figure1_marks_the_first_epoch_at_25_percent_as_computed_by_hand(tmp_path, capsys, version):
    """4 steps per epoch; each line weighted by the steps it covers. relu: epoch 1 (0.7 + 0.5) / 2
    = 0.6, epoch 2 (0.3 + 0.16) / 2 = 0.23: reached at epoch 2. tanh: epoch 1 0.8, epoch 2 one
    line of 4 steps at 0.26 (not reached), epoch 3 a line of 1 step at 0.36 and one of 3 at 0.2:
    (0.36 + 3 * 0.2) / 4 = 0.24, reached at epoch 3 (unweighted, 0.28 would not be). Ratio 1.5.
    The same from runs written before errors were the convention."""
    sweep_dir = tmp_path / "figure1"
    relu = [(2, 0.5, 0.7), (4, 1.0, 0.5), (6, 1.5, 0.3), (8, 2.0, 0.16)]
    tanh = [(2, 0.5, 0.9), (4, 1.0, 0.7), (8, 2.0, 0.26), (9, 2.25, 0.36), (12, 3.0, 0.2)]
    _write_run(str(sweep_dir / "relu"), relu, version)
    _write_run(str(sweep_dir / "tanh"), tanh, version)
    figure1.main([f"--sweep_dir={sweep_dir}"])
    out = capsys.readouterr().out
    timed = version == "new"  # steps 1-8 and 1-12 of 100 ms: the seconds of training to there
    assert f"relu: 25% training error at epoch 2{' (1 s of training)' if timed else ''}\n" in out
    assert f"tanh: 25% training error at epoch 3{' (1 s of training)' if timed else ''}\n" in out
    records = rundir.read_metrics(str(sweep_dir / "tanh"))
    assert figure1.seconds_to_epoch(records, 3) == (pytest.approx(1.2) if timed else None)
    assert figure1.seconds_to_epoch(records, 2) == (pytest.approx(0.8) if timed else None)
    assert "ratio tanh / relu: 1.50" in out
    with open(sweep_dir / "figure1.png", "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    curve = figure1.training_error_by_epoch(rundir.read_metrics(str(sweep_dir / "tanh")))
    assert curve == [(1, pytest.approx(0.8)), (2, pytest.approx(0.26)), (3, pytest.approx(0.24))]
    assert figure1.first_epoch_at_most(curve, 0.2) is None


# ---- The sweep presets -------------------------------------------------------------------------


def _load(path):
    spec = importlib.util.spec_from_file_location("_preset", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_paper_ablation_arms_each_change_the_one_thing_they_name(monkeypatch):
    """Every arm of sweeps/paper_ablations.py is a valid config of configs/imagenet.py; the
    parameter counts are the baseline's (60,965,224) but for the half net (59,798,312, the
    code's layers-145-half.cfg), and each arm sets only its ablation's fields."""
    monkeypatch.chdir(REPO)
    plan = sweep.make_sweep("sweeps/paper_ablations.py", None, [], None)
    runs = {r.arm: r for r in sweep.plan_runs(plan, "runs/x")}
    assert list(runs) == ["baseline", "no_lrn", "pool_2x2", "one_tower_half", "no_dropout"]
    counts = {
        arm: models.param_count(sharding.abstract_params(models.create_model(r.config)))
        for arm, r in runs.items()
    }
    assert counts == {
        "baseline": 60_965_224,
        "no_lrn": 60_965_224,
        "pool_2x2": 60_965_224,
        "one_tower_half": 59_798_312,
        "no_dropout": 60_965_224,
    }
    base = runs["baseline"].config.to_dict()
    changed = {
        arm: sorted(k for k, v in r.config.to_dict().items() if base[k] != v)
        for arm, r in runs.items()
    }
    assert changed == {
        "baseline": [],
        "no_lrn": ["block1_order", "lrn", "spatial_norm2"],
        "pool_2x2": ["pool_window"],  # the stride stays 2
        "one_tower_half": ["variant", "width"],
        "no_dropout": ["dropout_rate"],
    }


def test_the_miniature_preset_prints_what_the_sweep_runs_within_its_budget(monkeypatch, capsys):
    """sweeps/miniature_ablations.py: --print_commands prints exactly the runs the sweep plans
    (one per arm, the paper table's five), each a valid 4-epoch (48-step) config, and the
    estimated time from the measured step time stays under 15 minutes."""
    monkeypatch.chdir(REPO)
    path = "sweeps/miniature_ablations.py"
    sweep.main([f"--sweep={path}", "--print_commands"])
    printed = capsys.readouterr().out.splitlines()
    plan = sweep.make_sweep(path, None, [], None)
    runs = sweep.plan_runs(plan, os.path.join("runs", "miniature_ablations"))
    assert printed == [shlex.join(r.command) for r in runs]
    arms = ["baseline", "no_lrn", "pool_2x2", "one_tower_half", "no_dropout"]
    assert [r.arm for r in runs] == arms
    for run in runs:
        assert run.config.num_epochs == 4.0
        assert tuple(run.config.lr_drop_epochs) == (3,)
        assert run.config.dataset == "miniature"
    preset = _load(path)
    assert pytest.approx(5 * 40 + 30 + (4 * 1.4 + 0.7) * 48) == preset.ESTIMATED_SECONDS
    assert preset.ESTIMATED_SECONDS < 15 * 60


def test_the_objects_ablation_sweep_is_the_preset_with_one_change_per_arm(monkeypatch):
    """sweeps/objects_ablations.py (#26): 6 arms x 3 training seeds = 18 runs, each the preset
    configs/objects.py with a final-only checkpoint and its arm's change; the arms differ from
    the two-tower baseline only in the ablation's own fields."""
    monkeypatch.chdir(REPO)
    plan = sweep.make_sweep("sweeps/objects_ablations.py", None, [], None)
    runs = sweep.plan_runs(plan, os.path.join("runs", "objects_ablations"))
    arms = ["baseline", "no_lrn", "pool_2x2", "one_tower_half", "no_dropout", "tanh"]
    assert [(r.arm, r.seed) for r in runs] == [(a, s) for a in arms for s in (0, 1, 2)]
    preset = _load("configs/objects.py").get_config().to_dict()
    base = next(r for r in runs if r.arm == "baseline" and r.seed == 0).config.to_dict()
    assert sorted(k for k, v in base.items() if preset[k] != v) == [
        "checkpoint_every_steps",
        "variant",
    ]
    assert base["variant"] == "paper"
    assert base["miniature_task"] == "objects"
    changed = {
        (r.arm, r.seed): sorted(k for k, v in r.config.to_dict().items() if base[k] != v)
        for r in runs
    }
    expected = {
        "baseline": [],
        "no_lrn": ["lrn"],
        "pool_2x2": ["pool_window"],  # the stride stays 2
        "one_tower_half": ["variant", "width"],
        "no_dropout": ["dropout_rate"],
        "tanh": ["activation"],
    }
    assert changed == {
        (a, s): sorted(expected[a] + (["seed"] if s else [])) for a in arms for s in (0, 1, 2)
    }


def test_figure1_draws_the_threshold_it_was_given(tmp_path, monkeypatch):
    """--threshold=0.3 drew the 25% line and title (the plot took its default): the figure said
    25% beside epochs counted at 30%. The title, the line and the marks follow the flag."""
    sweep_dir = tmp_path / "figure1"
    _write_run(str(sweep_dir / "relu"), [(4, 1.0, 0.5), (8, 2.0, 0.28)])
    _write_run(str(sweep_dir / "tanh"), [(4, 1.0, 0.6), (8, 2.0, 0.4), (12, 3.0, 0.29)])
    drawn = []
    monkeypatch.setattr(figure1.plots, "save_figure", lambda fig, path: drawn.append(fig))
    figure1.main([f"--sweep_dir={sweep_dir}", "--threshold=0.3"])
    (ax,) = drawn[0].axes
    assert ax.get_title() == "Figure 1: epochs to 30% training error"
    marks = [tuple(line.get_xydata()[0]) for line in ax.get_lines() if line.get_marker() == "o"]
    assert marks == [(2.0, 0.3), (3.0, 0.3)]
    levels = {tuple(line.get_ydata()) for line in ax.get_lines() if line.get_linestyle() == "-."}
    assert levels == {(0.3, 0.3)}


def test_figure1_on_the_objects_task_is_figure1s_net_and_training_on_its_pictures(monkeypatch):
    """configs/figure1_objects.py (#26): configs/figure1.py's net, rates, batch and
    preprocessing; configs/objects.py's data (its task, classes, picture sides, held-out split),
    with 500 pictures per class; sweeps/figure1_objects.py: the relu and tanh arms."""
    monkeypatch.chdir(REPO)
    plan = sweep.make_sweep("sweeps/figure1_objects.py", None, [], None)
    runs = {r.arm: r.config.to_dict() for r in sweep.plan_runs(plan, "runs/x")}
    assert list(runs) == ["relu", "tanh"]
    net = figure1_config.get_config().to_dict()
    task = _load("configs/objects.py").get_config().to_dict()
    data = {"dataset", "data_dir", "miniature_dir", "miniature_task", "num_classes",
            "miniature_image_sides", "eval_split", "miniature_train_per_class",
            "miniature_val_per_class", "shuffle_buffer_size", "eval_batch_size",
            "log_every_steps", "checkpoint_every_steps"}  # fmt: skip
    relu = runs["relu"]
    assert {k for k in net if net[k] != relu[k]} <= data  # the net and its training unchanged
    own = {"miniature_train_per_class", "shuffle_buffer_size", "eval_batch_size",
           "log_every_steps", "checkpoint_every_steps"}  # fmt: skip
    assert {k: relu[k] for k in data - own} == {k: task[k] for k in data - own}
    assert (relu["miniature_train_per_class"], relu["variant"], relu["input_size"]) == (
        500,
        "cifar4",
        32,
    )
    assert {k for k in relu if relu[k] != runs["tanh"][k]} == {"activation"}


def test_figure1_claims_no_epoch_a_run_did_not_reach(tmp_path, capsys):
    """Pass 7, #42: runs of one step (1/32 of an epoch) printed "90% training error at epoch 1"
    and a ratio. A last, unfinished epoch counts at the epoch reached (relu seed 0: 1.5, where
    the second half of epoch 2 is at 20%), a run of less than one epoch is left out with a
    warning (relu seed 1), and an arm with no run of one epoch is one error line."""
    sweep_dir = tmp_path / "figure1"
    _write_run(str(sweep_dir / "relu" / "seed_0"), [(2, 0.5, 0.6), (4, 1.0, 0.5), (6, 1.5, 0.2)])
    _write_run(str(sweep_dir / "relu" / "seed_1"), [(1, 0.25, 0.9)])
    _write_run(str(sweep_dir / "tanh"), [(4, 1.0, 0.5), (8, 2.0, 0.24)])
    figure1.main([f"--sweep_dir={sweep_dir}"])
    captured = capsys.readouterr()
    assert "relu: 25% training error at epoch 1.5 (1 s of training)\n" in captured.out
    assert "ratio tanh / relu: 1.33" in captured.out
    assert captured.err == (
        f"warning: left out of arm relu: {sweep_dir / 'relu' / 'seed_1'} reached epoch 0.25, "
        "less than one epoch.\n"
    )

    one_step = tmp_path / "one_step"
    for arm in ("relu", "tanh"):
        _write_run(str(one_step / arm), [(1, 1 / 32, 0.875)])
    with pytest.raises(SystemExit) as exit_info:
        figure1.main([f"--sweep_dir={one_step}", "--threshold=0.9"])
    assert exit_info.value.code == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("error: Figure 1 counts epochs, and no run of arm(s) relu, tanh in ")
    assert f"{one_step / 'relu'} reached epoch 0.0312" in line


def test_an_arm_named_tanh_that_trained_relu_is_refused(tmp_path):
    """Hostile pass 21, #49: a sweep whose `tanh` arm trained with activation=relu (a misnamed
    arm) drew and counted its curve as tanh's: "ratio tanh / relu: 1.00 (the paper: about 6)",
    figure1.png written, no word. An arm named after an activation must have trained it."""
    sweep_dir = tmp_path / "figure1"
    curve = [(2, 0.5, 0.7), (4, 1.0, 0.5), (8, 2.0, 0.16)]
    for arm in ("relu", "tanh"):
        _write_run(str(sweep_dir / arm), curve, "new")
        (sweep_dir / arm / "config.json").write_text(json.dumps({"activation": "relu"}))
    with pytest.raises(DataError, match=r"The arm tanh's run .* trained with activation='relu'"):
        figure1.arm_records(str(sweep_dir), ["relu", "tanh"])
    assert not (sweep_dir / "figure1.png").exists()

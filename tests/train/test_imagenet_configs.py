"""Both ImageNet configs end to end through main.py on a generated ILSVRC2012 archive (in a file
of its own so that pytest-xdist's --dist loadfile can run it beside tests/train/test_main.py)."""

import os

import pytest

from alexnet_jax.data import image_store, miniature
from alexnet_jax.runs import rundir
from alexnet_jax.train import config_lib
from tests.conftest import QUICK_COMPILES
from tests.train.test_main import REPO, _jsonl, _run_main


@pytest.fixture(scope="module")
def shared_dirs(tmp_path_factory, jax_cache_dir):
    """What tests/train/test_main.py's helpers take: a data folder and the compilation cache."""
    root = tmp_path_factory.mktemp("imagenet_configs")
    return {"data": str(root / "data"), "cache": jax_cache_dir, "root": root}


def test_both_imagenet_configs_run_end_to_end_on_a_miniature_ilsvrc_archive(
    shared_dirs, tmp_path, monkeypatch
):
    """configs/imagenet.py (run 145: paper variant at 224 with conv1's overhang, the mean image,
    parameter groups, 10-crop eval) as docs/DATA.md feeds an accelerator (augment_on=device, from
    the 256x256 image store) and configs/imagenet_paper.py (the text; host augmentation) with
    manual_dir pointing at two generated ILSVRC2012 tars: built once by the real imagenet2012
    builder, the mean image computed once, each trained 2 steps and evaluated."""
    manual_dir = str(tmp_path / "ilsvrc")
    spec = miniature.MiniatureSpec(
        num_classes=3, train_per_class=6, val_per_class=2, side_range=(120, 260)
    )
    miniature.generate(manual_dir, spec)
    flags = {
        "manual_dir": manual_dir,
        "data_dir": str(tmp_path / "tfds"),
        "num_train_steps": 2,
        "batch_size": 4,
        "eval_batch_size": 4,
        "log_every_steps": 1,
        "checkpoint_every_steps": 2,
        "shuffle_buffer_size": 32,
    }
    store = {"augment_on": "device", "image_store_dir": str(tmp_path / "store")}
    for name, value in QUICK_COMPILES.items():  # 2 steps each: 70 -> 62 CPU-s
        monkeypatch.setenv(name, value)
    for name, extra in (("imagenet", store), ("imagenet_paper", {})):
        workdir = str(tmp_path / name)
        args = [f"--config={os.path.join(REPO, 'configs', name + '.py')}", f"--workdir={workdir}"]
        args += [f"--config.{k}={v}" for k, v in {**flags, **extra}.items()]
        code, _, err = _run_main(shared_dirs, args, timeout=600, narrow=True)  # fc6/fc7 narrowed
        assert code == 0, err[-3000:]
        eval_line = [x for x in _jsonl(workdir) if x["split"] == "eval"][-1]
        assert eval_line["step"] == 2
        assert eval_line["num_examples"] == 6  # 3 classes x 2 validation images, 10 crops each
        config = config_lib.load_config(workdir)
        assert (config.variant, config.eval_crops, config.num_classes) == ("paper", 10, 1000)
        assert config.normalization == "mean_image"
        assert rundir.read_mean_image(workdir, 227, "src").shape == (
            256,
            256,
            3,
        )  # the run's own copy
    mean_images = os.listdir(os.path.join(flags["data_dir"], "mean_images"))
    assert len([f for f in mean_images if f.endswith(".npy")]) == 1  # once, for both runs
    (stored,) = os.listdir(store["image_store_dir"])  # the training split, 18 squares
    manifest = os.path.join(store["image_store_dir"], stored, image_store.MANIFEST)
    assert image_store.data_sources.read_json(manifest)["num_examples"] == 18

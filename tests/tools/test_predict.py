"""Predictions on image files of any mode, the ImageNet class table, and safe weight-file loading.

The model is a randomly initialised 1000-class torchvision-variant AlexNet written as a `.pth`
through `convert.to_torch_state_dict`, so the `--weights` path (and its safety checks) is what runs.
"""

import io
import os
import pathlib
import pickle
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
import torch
from PIL import Image
from tensorflow_datasets.datasets.imagenet2012 import imagenet_common

from alexnet_jax.core.errors import UserError
from alexnet_jax.data import image_files, imagenet_classes, preprocessing
from alexnet_jax.data.recipe import Recipe
from alexnet_jax.interop import convert, weights_io
from alexnet_jax.tools import load, predict
from alexnet_jax.tools.predict import Prediction


def random_params(variant: str = "torchvision", num_classes: int = 1000, seed: int = 0):
    """Flax params with He-uniform scale (numpy: no compilation), every shape of the variant."""
    rng = np.random.default_rng(seed)
    params = {}
    for layer, shapes in convert.flax_param_shapes(variant, num_classes).items():
        fan_in = int(np.prod(shapes["kernel"][:-1]))
        params[layer] = {
            "kernel": (rng.random(shapes["kernel"], np.float32) * 2 - 1) * np.sqrt(6 / fan_in),
            "bias": rng.random(shapes["bias"], np.float32) * 0.1,
        }
    return params


@pytest.fixture(scope="module")
def state_dict() -> dict:
    """torch tensors of a random 1000-class torchvision AlexNet, via to_torch_state_dict."""
    return convert.to_torch_state_dict(random_params(), "torchvision")


@pytest.fixture(scope="module")
def weights_path(tmp_path_factory, state_dict) -> str:
    path = str(tmp_path_factory.mktemp("weights") / "alexnet.pth")
    torch.save(state_dict, path)
    return path


def write_image(path: pathlib.Path, mode: str, size=(333, 250), fmt: str = "JPEG") -> str:
    """A random-noise picture of `size` saved in Pillow `mode` and format `fmt`."""
    pixels = np.random.default_rng(len(mode)).integers(0, 256, (size[1], size[0], 3), np.uint8)
    image = Image.fromarray(pixels)
    if mode == "P":
        image = image.quantize(64)
    elif mode == "RGBA":
        image = image.convert("RGBA")
        image.putalpha(Image.fromarray(pixels[..., 0]))
    else:
        image = image.convert(mode)
    image.save(path, format=fmt)
    return str(path)


# ---- The class table --------------------------------------------------------------------------


def test_class_table_has_1000_unique_synsets_in_tfds_label_order():
    # The file tfds's imagenet2012 builder gives its ClassLabel: label i is line i.
    tfds_synsets = pathlib.Path(imagenet_common.label_names_file()).read_text().split()
    classes = imagenet_classes.load_classes()
    assert len(tfds_synsets) == 1000
    assert [c.synset for c in classes] == tfds_synsets
    assert len({c.synset for c in classes}) == 1000
    assert [c.index for c in classes] == list(range(1000))
    assert classes[0].lemmas == "tench, Tinca tinca"
    assert classes[0].name == "tench"
    assert all(c.lemmas for c in classes)


# ---- Predictions ------------------------------------------------------------------------------


def test_predict_png_grayscale_and_cmyk_jpeg_with_imported_weights(weights_path, tmp_path):
    images = [
        write_image(tmp_path / "rgb.png", "RGB", (300, 200), "PNG"),
        write_image(tmp_path / "gray.jpg", "L", (180, 260)),
        write_image(tmp_path / "cmyk.jpg", "CMYK", (500, 240)),
        write_image(tmp_path / "rgba.png", "RGBA", (100, 120), "PNG"),
        write_image(tmp_path / "palette.png", "P", (256, 256), "PNG"),
    ]
    config, params = predict.load_model(None, weights_path, "torchvision")
    assert (config.num_classes, config.input_size) == (1000, 224)
    results = predict.predict(params, config, images, batch_size=2)
    table = imagenet_classes.load_classes()
    assert len(results) == len(images)
    for top5 in results:
        assert len(top5) == 5
        probs = [p.prob for p in top5]
        assert probs == sorted(probs, reverse=True)
        assert all(0.0 <= p <= 1.0 for p in probs)
        assert sum(probs) <= 1.0 + 1e-6
        assert len({p.index for p in top5}) == 5
        for p in top5:
            assert isinstance(p, Prediction)
            assert (p.synset, p.name) == (table[p.index].synset, table[p.index].lemmas)
    # Batching does not change a result.
    alone = predict.predict(params, config, images[1:2])[0]
    assert [p.index for p in alone] == [p.index for p in results[1]]
    np.testing.assert_allclose([p.prob for p in alone], [p.prob for p in results[1]], rtol=1e-4)
    # Hostile pass 16, #26, #27: one path given as a str (read as a list of its letters: "Cannot
    # read image s") is that image; a top_k below 1 (1 class, or none, with no word) is refused.
    one = predict.predict(params, config, str(images[1]))[0]
    assert [p.index for p in one] == [p.index for p in alone]
    for top_k in (0, -3):
        with pytest.raises(UserError, match=r"top_k must be an integer >= 1"):
            predict.predict(params, config, images[1:2], top_k=top_k)


def test_predict_command_line_prints_top5_with_names(weights_path, tmp_path):
    image = write_image(tmp_path / "cat.jpg", "RGB")
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "alexnet_jax.tools.predict",
            f"--weights={weights_path}",
            "--variant=torchvision",
            image,
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
        env={**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": ""},
    )
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.splitlines()
    start = lines.index(image)
    ranked = lines[start + 1 : start + 6]
    assert [line.split(".")[0].strip() for line in ranked] == ["1", "2", "3", "4", "5"]
    synsets = {c.synset for c in imagenet_classes.load_classes()}
    assert all(line.split()[2] in synsets for line in ranked)


def test_single_image_preprocessing_equals_the_pipeline_eval_view():
    """NumPy preprocessing == preprocessing.eval_views + normalize_batch (a lossless PNG, so the
    decoders agree): up to one uint8 level at a few bilinear rounding ties."""
    rng = np.random.default_rng(3)
    for (h, w), (resize, crop), norm in [
        ((300, 451), (256, 227), "mean"),
        ((100, 80), (256, 224), "mean_std"),
        ((1000, 333), (72, 64), "mean_std"),
    ]:
        buffer = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (h, w, 3), np.uint8)).save(buffer, format="PNG")
        recipe = Recipe(input_size=crop, resize_size=resize, normalization=norm)
        views = preprocessing.eval_views(tf.constant(buffer.getvalue()), recipe)
        expected = preprocessing.normalize_batch(views[None], recipe).numpy()[0, 0]
        config = weights_io.imported_weights_config("torchvision")
        config.resize_size, config.input_size, config.normalization = resize, crop, norm
        got = image_files.preprocess_image(Image.open(buffer), config)
        level = 1.0 if norm == "mean" else 1.0 / (255 * 0.224)
        assert got.shape == expected.shape == (crop, crop, 3)
        assert np.abs(got - expected).max() <= level * 1.01 + 1e-4
        assert np.mean(np.abs(got - expected) > 1e-4) < 1e-3


@pytest.mark.parametrize("mode", ["I;16", "LA", "1", "F"])
def test_unusual_modes_become_rgb(mode):
    image = Image.new(mode, (40, 30))
    rgb = image_files._to_rgb(image)
    assert rgb.mode == "RGB"
    assert rgb.size == (40, 30)


def test_unreadable_image_is_one_data_error(tmp_path):
    bad = tmp_path / "not_an_image.jpg"
    bad.write_bytes(b"definitely not a JPEG")
    config = weights_io.imported_weights_config("torchvision")
    with pytest.raises(predict.DataError, match=r"not_an_image\.jpg"):
        image_files.load_image(str(bad), config)


# ---- Weight files never run code --------------------------------------------------------------


class TouchOnUnpickle:
    """Unpickling this object calls pathlib.Path.touch(marker): code execution made visible."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


def plant(path: pathlib.Path, marker: pathlib.Path, how: str) -> str:
    payload = {"features.0.weight": TouchOnUnpickle(str(marker))}
    if how == "torch.save":
        torch.save(payload, path)
    else:  # a raw pickle under a .pth name (torch's legacy format path)
        path.write_bytes(pickle.dumps(payload, protocol=2))
    return str(path)


@pytest.mark.parametrize("how", ["torch.save", "pickle"])
def test_a_pth_whose_pickle_runs_code_is_refused_and_never_runs(tmp_path, how):
    # The payload is live: an unrestricted unpickler does run it.
    live_marker = tmp_path / "live_marker"
    live = plant(tmp_path / "live.pth", live_marker, how)
    if how == "torch.save":
        torch.load(live, weights_only=False)
    else:
        pickle.loads(pathlib.Path(live).read_bytes())
    assert live_marker.exists()

    marker = tmp_path / "marker"
    path = plant(tmp_path / "evil.pth", marker, how)
    with pytest.raises(weights_io.WeightsFileError, match="refused") as refused:
        weights_io.load_weights(path, "torchvision")
    assert "weights_only=True" in str(refused.value)
    with pytest.raises(weights_io.WeightsFileError):
        predict.load_model(None, path, "torchvision")
    assert not marker.exists()


def test_a_state_dict_with_a_wrong_shape_is_refused_naming_the_key(tmp_path, state_dict):
    wrong = {**state_dict, "features.3.weight": torch.zeros(192, 64, 3, 3)}
    torch.save(wrong, tmp_path / "wrong.pth")
    expected = r"'features\.3\.weight': expected shape \(192, 64, 5, 5\)"
    with pytest.raises(weights_io.WeightsFileError, match=expected):
        weights_io.load_weights(str(tmp_path / "wrong.pth"), "torchvision")


def test_a_file_holding_anything_but_tensors_is_refused_naming_the_key(tmp_path, state_dict):
    torch.save({**state_dict, "epoch": 90}, tmp_path / "checkpoint.pth")
    with pytest.raises(weights_io.WeightsFileError, match="'epoch' is a int, not a tensor"):
        weights_io.load_weights(str(tmp_path / "checkpoint.pth"), "torchvision")
    torch.save([state_dict["features.0.bias"]], tmp_path / "list.pth")
    with pytest.raises(weights_io.WeightsFileError, match="list, not a dict"):
        weights_io.load_weights(str(tmp_path / "list.pth"), "torchvision")


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (lambda t: t.to(torch.int32), r"'features\.3\.weight' holds int32, not floating-point"),
        (lambda t: t.fill_(float("nan")), r"'features\.3\.weight' holds NaN or Inf values"),
    ],
)
def test_weights_that_are_not_finite_floats_are_refused_naming_the_tensor(
    tmp_path, state_dict, bad, message
):
    """A .pth whose tensor is int32 (once cast silently) or holds NaN (predict printed `nan%`,
    --mode=eval a NaN loss, both exit 0), and the same in .npz (Flax layout): one refusal."""
    changed = {**state_dict, "features.3.weight": bad(state_dict["features.3.weight"].clone())}
    torch.save(changed, tmp_path / "bad.pth")
    with pytest.raises(weights_io.WeightsFileError, match=message):
        weights_io.load_weights(str(tmp_path / "bad.pth"), "torchvision")
    params = convert.from_torch_state_dict(state_dict, "torchvision")
    params["conv2"]["kernel"] = bad(torch.from_numpy(params["conv2"]["kernel"].copy())).numpy()
    flat = {f"{layer}/{name}": v for layer, d in params.items() for name, v in d.items()}
    np.savez(tmp_path / "bad.npz", **flat)
    with pytest.raises(weights_io.WeightsFileError, match=r"'conv2/kernel' holds"):
        weights_io.load_weights(str(tmp_path / "bad.npz"), "torchvision")


def test_parameters_and_sparse_tensors_are_read_as_weights_and_meta_tensors_refused(
    tmp_path, state_dict
):
    """Hostile pass 16, #33-#35: a .pth of nn.Parameter values (a dict of a model's parameters,
    requires_grad), or with a sparse tensor, ended predict and --mode=eval in a traceback
    ("Can't call numpy() on Tensor that requires grad"; "can't convert Sparse layout tensor");
    one of meta-device tensors (shapes, no values) too. The first two are the same weights; the
    third is refused in one line."""
    expected = weights_io.load_weights(_saved(tmp_path / "plain.pth", state_dict), "torchvision")
    parameters = {k: torch.nn.Parameter(v.clone()) for k, v in state_dict.items()}
    sparse = {**state_dict, "classifier.6.bias": state_dict["classifier.6.bias"].to_sparse()}
    for name, changed in (("parameters", parameters), ("sparse", sparse)):
        params = weights_io.load_weights(_saved(tmp_path / f"{name}.pth", changed), "torchvision")
        for layer, arrays in expected.items():
            for key, array in arrays.items():
                np.testing.assert_array_equal(params[layer][key], array)  # exact
    meta = {k: torch.empty(v.shape, device="meta") for k, v in state_dict.items()}
    with pytest.raises(weights_io.WeightsFileError, match=r"holds no values \(it is on PyTorch"):
        weights_io.load_weights(_saved(tmp_path / "meta.pth", meta), "torchvision")


def _saved(path, state_dict) -> str:
    torch.save(state_dict, path)
    return str(path)


def test_wrong_variant_is_refused_naming_the_keys(weights_path):
    with pytest.raises(weights_io.WeightsFileError, match=r"missing key 'features\.4\.weight'"):
        weights_io.load_weights(weights_path, "one_tower")


# ---- Runs that subtract the training set's mean image -------------------------------------------


def test_a_mean_image_run_predicts_with_its_own_mean_image_and_is_not_exported(
    tmp_path, monkeypatch
):
    """normalization="mean_image": the run keeps its mean image (rundir.MEAN_IMAGE_FILE);
    predict subtracts its center crop (exactly "mean" preprocessing plus the RGB mean minus that
    crop), refuses to guess without it, figures undo it, and export refuses the run (no weights
    format here carries the image) instead of writing a file that preprocesses wrongly. (All in
    this process, with fc6/fc7 narrowed, tests/multihost_worker.py: 3M instead of 57M parameters
    written, read and run.)"""
    from alexnet_jax.core.errors import DataError, UserError
    from alexnet_jax.data import imagenet_stats
    from alexnet_jax.runs import rundir
    from alexnet_jax.tools import export, figures
    from tests import multihost_worker
    from tests.conftest import write_tiny_run

    multihost_worker.narrow_fc_layers(monkeypatch.setattr)
    workdir = write_tiny_run(str(tmp_path), normalization="mean_image")
    rng = np.random.default_rng(0)
    mean = rng.uniform(0, 255, (72, 72, 3)).astype(np.float32)  # resize_size 72
    np.save(tmp_path / "mean.npy", mean)
    rundir.save_mean_image(workdir, str(tmp_path / "mean.npy"))
    np.testing.assert_array_equal(rundir.read_mean_image(workdir, 64, "src.npy"), mean)
    np.testing.assert_array_equal(rundir.read_mean_image(workdir), mean)  # (docs/USAGE.md's call)
    # Hostile pass 3, #32-#34: a mean image of the wrong size, of NaN, or missing is one message
    # naming the file and where to copy it from (predict printed nan%, or blamed the photo).
    path = os.path.join(workdir, rundir.MEAN_IMAGE_FILE)
    for damaged, problem in (
        (np.zeros((16, 16, 3), np.float32), r"shape \(16, 16, 3\)"),
        (np.full((72, 72, 3), np.nan, np.float32), "not all numbers in 0..255"),
        (None, "cannot be read"),
    ):
        if damaged is None:
            os.remove(path)
        else:
            np.save(path, damaged)
        with pytest.raises(DataError, match=rf"{problem}.*copy it again from src\.npy"):
            rundir.read_mean_image(workdir, 64, "src.npy")
    rundir.save_mean_image(workdir, str(tmp_path / "mean.npy"))

    config, params = load.load_run(workdir)
    photo = str(tmp_path / "photo.png")
    Image.fromarray(rng.integers(0, 256, (90, 120, 3), dtype=np.uint8)).save(photo)
    with pytest.raises(UserError, match=r"mean_image=rundir\.read_mean_image"):
        predict.predict(params, config, [photo])
    got = image_files.load_image(photo, config, mean)
    config.normalization = "mean"
    crop = mean[4:68, 4:68]  # the central 64 of 72
    want = image_files.load_image(photo, config) + 255.0 * imagenet_stats.RGB_MEAN - crop
    np.testing.assert_allclose(got, want, atol=1e-4)
    pixels = np.clip(np.round(got + crop), 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(figures.to_display(got, "mean_image", crop), pixels)
    config.normalization = "mean_image"
    assert len(predict.predict(params, config, [photo], mean_image=mean)[0]) == 4

    with pytest.raises(UserError, match="normalization='mean_image'"):
        export.export_run(workdir, str(tmp_path / "model.pth"))
    assert not os.path.exists(tmp_path / "model.pth")

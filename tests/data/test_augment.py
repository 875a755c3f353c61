"""The device path (config.augment_on="device", alexnet_jax/data/augment.py): uint8 batches from the
host, the paper's augmentation and the normalization in jitted JAX on the mesh.

Proves: the device draws have the host path's distributions (the same statistical checks pass on
both); they are applied as drawn (known pixels); eval views are bit for bit the host path's;
a run resumed mid-epoch and 1 or 8 devices give the same augmented batches; at most 196,608
image bytes per training example cross to the device; the random_resized crop is refused.
"""

import io
import os

import jax
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from alexnet_jax.core.errors import ConfigError
from alexnet_jax.data import augment, data_sources, imagenet_stats, input_pipeline, preprocessing
from alexnet_jax.data.recipe import Recipe
from alexnet_jax.train import config_lib, experiment, sharding
from configs import default

MEAN_255 = 255.0 * imagenet_stats.RGB_MEAN
NUM_TRAIN = 5  # gradient images: an epoch is 5 examples
draw = jax.jit(augment.draw, static_argnums=(0, 1))  # (recipe, seed, example_id, epoch)


# ---- Data: gradients to train on (pixels encode their position), odd images to evaluate -------


def _encoded(pixels: np.ndarray, fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt, quality=90)
    return buffer.getvalue()


def _gradient(image_id: int) -> np.ndarray:
    """256x256 with R = x, G = y, B = 40 * image_id + 20."""
    y, x = np.mgrid[0:256, 0:256]
    return np.stack([x, y, np.full_like(x, 40 * image_id + 20)], -1).astype(np.uint8)


def _photo(rng, height: int, width: int) -> np.ndarray:
    """Smooth random colours with some texture: a resize has real work to do."""
    small = rng.integers(0, 256, (height // 16 + 2, width // 16 + 2, 3), dtype=np.uint8)
    smooth = np.asarray(Image.fromarray(small).resize((width, height), Image.BILINEAR))
    noise = rng.integers(-20, 21, (height, width, 3))
    return np.clip(smooth.astype(int) + noise, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """Image folder: train = 5 gradient PNGs (2 classes); val = JPEGs and a PNG of odd shapes
    (wide, tall, smaller than 256, grayscale)."""
    root = tmp_path_factory.mktemp("augment")
    rng = np.random.default_rng(0)
    for image_id in range(NUM_TRAIN):
        cls = ("ant", "bee")[image_id % 2]
        (root / "train" / cls).mkdir(parents=True, exist_ok=True)
        (root / "train" / cls / f"g{image_id}.png").write_bytes(
            _encoded(_gradient(image_id), "PNG")
        )
    shapes = [(300, 457, "JPEG"), (391, 260, "JPEG"), (180, 203, "JPEG"), (262, 262, "PNG")]
    for k, (h, w, fmt) in enumerate(shapes):
        cls = ("ant", "bee")[k % 2]
        (root / "val" / cls).mkdir(parents=True, exist_ok=True)
        (root / "val" / cls / f"v{k}.{fmt.lower()}").write_bytes(_encoded(_photo(rng, h, w), fmt))
    gray = Image.fromarray(_photo(rng, 240, 320)[..., 0], "L")
    buffer = io.BytesIO()
    gray.save(buffer, format="JPEG")
    (root / "val" / "bee" / "gray.jpeg").write_bytes(buffer.getvalue())
    return str(root)


def _config(root, **overrides):
    c = default.get_config()
    c.update(
        dataset="image_folder",
        image_folder=root,
        data_dir=os.path.join(root, "data"),
        num_classes=2,
        normalization="mean",
        augment_on="device",
        batch_size=8,
        eval_batch_size=8,
    )
    c.update(overrides)
    return c


def _take(iterator, n):
    return [next(iterator) for _ in range(n)]


# ---- Distributions: the same checks on the host path's and the device path's draws -----------

N_DRAWS = 20_000


def _check_statistics(offset, flip, rgb, margin: int, std: float) -> None:
    """Crop offsets uniform on 0..margin (chi-square per axis and joint, p = 1e-6 critical
    values), flips Binomial(N, 1/2) (5 sigma), lighting mean 0 and covariance
    255^2 V^T diag(lambda^2 std^2) V (5-sigma bounds)."""
    n, bins = len(offset), margin + 1
    assert offset.min() == 0  # covers 0..margin
    assert offset.max() == margin
    for axis in (0, 1):
        counts = np.bincount(offset[:, axis], minlength=bins)
        assert ((counts - n / bins) ** 2 / (n / bins)).sum() < 80.44  # chi2.isf(1e-6, 29)
    joint = np.bincount(offset[:, 0] * bins + offset[:, 1], minlength=bins * bins)
    expected = n / bins**2  # 22 per cell: top and left independent
    assert ((joint - expected) ** 2 / expected).sum() < 1115.1  # chi2.isf(1e-6, 899)
    assert abs(flip.sum() - n / 2) < 5 * np.sqrt(n) / 2
    vecs = np.float64(imagenet_stats.PCA_EIGVECS)
    vals = imagenet_stats.PCA_EIGVALS
    target = 255.0**2 * (vals * std) ** 2  # the covariance in the eigenbasis: diagonal
    rgb = rgb.astype(np.float64)
    assert (np.abs(rgb.mean(0)) < 5 * np.sqrt(np.diag(vecs.T @ np.diag(target) @ vecs) / n)).all()
    in_basis = vecs @ np.cov(rgb.T) @ vecs.T
    np.testing.assert_allclose(np.diag(in_basis), target, rtol=5 * np.sqrt(2 / n))
    off_diagonal = in_basis - np.diag(np.diag(in_basis))
    assert (np.abs(off_diagonal) < 5 * np.sqrt(np.outer(target, target) / n)).all()


def _example_ids(n: int) -> tf.Tensor:
    names = tf.constant([f"n{i % 1000:08d}/n{i % 1000:08d}_{i}.JPEG" for i in range(n)])
    return data_sources.example_ids(names)


def test_device_draws_pass_the_host_paths_statistical_checks():
    """20,000 examples of one epoch, drawn by each path from (seed, epoch, file-name hash):
    the same uniformity, binomial and covariance checks hold for both."""
    recipe, seed, epoch = Recipe(), 0, 3
    ids = _example_ids(N_DRAWS)
    seeds = input_pipeline._augment_seeds(
        seed, tf.fill([N_DRAWS], tf.constant(epoch, tf.int64)), ids
    )
    host = (
        tf.data.Dataset.from_tensor_slices(seeds)
        .map(lambda s: preprocessing.train_draws(s, recipe)[1:])
        .batch(N_DRAWS)
    )
    offset, flip, rgb = (t.numpy() for t in next(iter(host)))
    _check_statistics(offset, flip, rgb, margin=29, std=0.1)

    words = data_sources.example_id_words(ids).numpy()
    epochs = np.full([N_DRAWS], epoch, np.int32)
    draws = draw(recipe, seed, words, epochs)
    _check_statistics(*(np.asarray(d) for d in draws), margin=29, std=0.1)
    assert not np.array_equal(np.asarray(draws.offset), offset)  # other generators, other draws


def test_device_lighting_stops_at_pca_lighting_stop_epoch():
    recipe = Recipe(pca_lighting_stop_epoch=2)
    words = data_sources.example_id_words(_example_ids(8)).numpy()
    rgb = draw(recipe, 0, words, np.array([0, 1, 2, 3, 0, 1, 2, 67], np.int32)).rgb
    lit = np.abs(np.asarray(rgb)).sum(1) > 0
    np.testing.assert_array_equal(lit, [True, True, False, False, True, True, False, False])


# ---- The draws applied: known pixels -----------------------------------------------------------


def test_crops_flips_and_lighting_applied_as_drawn(folder):
    """Each augmented image is the square's window at the drawn offset, mirrored when drawn so,
    plus the drawn lighting offset: R = left + x (or reversed), G = top + y, B = the image's."""
    config = _config(folder, batch_size=5)
    exp = experiment.build(config, sharding.single_device_mesh())
    batches = _take(input_pipeline.create_train_iterator(config, local_batch_size=5), 2)
    flips = set()
    for epoch, batch in enumerate(batches):  # a batch of 5 is an epoch
        np.testing.assert_array_equal(batch["epoch"], epoch)
        assert batch["image"].dtype == np.uint8
        assert batch["image"].shape == (5, 256, 256, 3)
        images = np.asarray(exp.train_inputs(sharding.to_global_batch(batch, exp.mesh))["image"])
        draws = draw(Recipe.from_config(config), 0, batch["example_id"], batch["epoch"])
        offset, flip, rgb = (np.asarray(d) for d in draws)
        pixels = images + MEAN_255 - rgb[:, None, None, :]  # the crop's own values
        y, x = np.mgrid[0:227, 0:227]
        for i in range(5):
            red = offset[i, 1] + (226 - x if flip[i] else x)
            np.testing.assert_allclose(pixels[i, ..., 0], red, atol=1e-3)
            np.testing.assert_allclose(pixels[i, ..., 1], offset[i, 0] + y, atol=1e-3)
            blue = pixels[i, 0, 0, 2]
            assert (round(float(blue)) - 20) % 40 == 0
            np.testing.assert_allclose(pixels[i, ..., 2], blue, atol=1e-3)
            assert 0 < np.abs(rgb[i]).max() < 15
            flips.add(bool(flip[i]))
    assert flips == {False, True}


# ---- Eval views: bit for bit the host path's ---------------------------------------------------


@pytest.mark.parametrize(
    ("eval_crops", "normalization", "dtype"),
    [(1, "mean_std", "float32"), (10, "mean_image", "float32"), (10, "mean_std", "bfloat16")],
)
def test_eval_views_bit_identical_to_the_host_path(folder, eval_crops, normalization, dtype):
    """Same uint8 views (the center view; or the square the ten are cut from, as the host cuts
    them), same float32 arithmetic: every normalized value equal, padding included."""
    fields = dict(eval_crops=eval_crops, normalization=normalization, input_dtype=dtype)
    host_config = _config(folder, augment_on="host", **fields)
    device_config = _config(folder, **fields)
    input_pipeline.prepare(device_config)  # the mean image, once
    mean = input_pipeline.load_mean_image(device_config)
    exp = experiment.build(device_config, sharding.single_device_mesh(), mean_image=mean)
    host = list(input_pipeline.create_eval_iterator(host_config, local_batch_size=4))
    device = list(input_pipeline.create_eval_iterator(device_config, local_batch_size=4))
    assert len(host) == len(device) == 2
    for h, d in zip(host, device, strict=True):
        assert d["image"].dtype == np.uint8
        views = np.asarray(exp.eval_inputs(sharding.to_global_batch(d, exp.mesh))["image"])
        assert views.dtype == h["image"].dtype
        assert views.shape == (4, eval_crops, 227, 227, 3)
        np.testing.assert_array_equal(views, h["image"])
        np.testing.assert_array_equal(d["label"], h["label"])
        np.testing.assert_array_equal(d["mask"], h["mask"])


# ---- Exact resume, device-count independence, bytes -------------------------------------------


def test_resumed_mid_epoch_gives_the_same_augmented_batches(folder):
    """Batches of 2 over 5-example epochs: resumed after 3 steps (epoch 1, position 1), the next
    3 augmented batches equal the uninterrupted run's, bit for bit."""
    config = _config(folder, batch_size=2)
    exp = experiment.build(config, sharding.single_device_mesh())
    augmented = lambda b: np.asarray(
        exp.train_inputs(sharding.to_global_batch(b, exp.mesh))["image"]
    )
    full = _take(input_pipeline.create_train_iterator(config, local_batch_size=2), 6)
    resumed = _take(
        input_pipeline.create_train_iterator(config, local_batch_size=2, start_example=6), 3
    )
    for a, b in zip(full[3:], resumed, strict=True):
        np.testing.assert_array_equal(a["epoch"], b["epoch"])
        np.testing.assert_array_equal(augmented(a), augmented(b))
    assert not np.array_equal(augmented(full[0]), augmented(full[3]))


def test_one_and_eight_devices_give_the_same_augmented_batch(folder):
    """The batch of 8 split over 8 fake CPU devices: the same bits as on 1, and no collective
    in the program (each device augments its own examples)."""
    config = _config(folder)
    batch = next(input_pipeline.create_train_iterator(config, local_batch_size=8))
    outputs = []
    for devices in (jax.devices()[:1], jax.devices()[:8]):
        exp = experiment.build(config, sharding.make_mesh(config, devices))
        global_batch = sharding.to_global_batch(batch, exp.mesh)
        outputs.append(jax.device_get(exp.train_inputs(global_batch)))
    hlo = exp.train_inputs.lower(global_batch).compile().as_text()
    for collective in ("all-gather", "all-reduce", "all-to-all", "collective-permute"):
        assert collective not in hlo
    for key in outputs[0]:
        np.testing.assert_array_equal(outputs[0][key], outputs[1][key])


def test_at_most_196608_image_bytes_per_training_example_cross_to_the_device(folder):
    """256 x 256 x 3 uint8 = 196,608 bytes (the host path's float32 227 crop: 618,348); with the
    label, mask, id and epoch, 196,625 bytes per example."""
    device = next(input_pipeline.create_train_iterator(_config(folder), local_batch_size=4))
    assert device["image"].nbytes / 4 == 196_608
    assert sum(v.nbytes for v in device.values()) / 4 == 196_625
    host = next(
        input_pipeline.create_train_iterator(_config(folder, augment_on="host"), local_batch_size=4)
    )
    assert host["image"].nbytes / 4 == 227 * 227 * 3 * 4


def test_device_path_refuses_the_random_resized_crop(folder):
    with pytest.raises(ConfigError) as error:
        config_lib.validate_config(_config(folder, train_crop="random_resized", input_size=224))
    assert str(error.value) == (
        "config.augment_on must be 'host' with config.train_crop='random_resized' (the device "
        "path implements the paper's crop only), got 'device'."
    )

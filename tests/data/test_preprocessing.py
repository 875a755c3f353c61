"""The one resize (`preprocessing.resample`): views match PIL on photographs, and the pre-resize
cache resizes exactly as a direct crop does.

References are PIL's `Image.resize(size, Image.BILINEAR)` (antialiased when downscaling), which
torchvision's `Resize` uses on PIL images: the eval view against `Resize(256)` +
`CenterCrop(crop)`, the Inception-style train view against crop-then-resize (`RandomResizedCrop`).
The pictures are matplotlib's sample data: its one photograph, a landscape part of it at a
non-integer scale, and a small drawn picture (upscaled, through the PNG decoder).
"""

import io

import numpy as np
import pytest
import tensorflow as tf
from matplotlib import cbook
from PIL import Image

from alexnet_jax.data import preprocessing
from alexnet_jax.data.recipe import Recipe


def _encode(pixels: np.ndarray, fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return buffer.getvalue()


@pytest.fixture(scope="module")
def pictures() -> dict[str, bytes]:
    """name -> encoded bytes (the photograph exactly as matplotlib ships it)."""
    with cbook.get_sample_data("grace_hopper.jpg") as f:
        photo = f.read()  # 600x512 (h x w) JPEG: shorter side 512 -> 256, a factor of 2
    pixels = np.asarray(Image.open(io.BytesIO(photo)).convert("RGB"))
    with cbook.get_sample_data("Minduka_Present_Blue_Pack.png") as f:
        drawn = Image.open(f).convert("RGBA")  # 128x128, transparent background
    white = Image.new("RGBA", drawn.size, (255, 255, 255, 255))
    drawn = np.asarray(Image.alpha_composite(white, drawn).convert("RGB"))
    return {
        "grace_hopper_600x512": photo,
        "grace_hopper_391x512": _encode(pixels[60:451], "JPEG"),  # factor 1.527, like 500x375
        "present_128x97_png": _encode(drawn[10:107], "PNG"),  # upscaled by 2.64
    }


def _pil_eval_view(data: bytes, resize: int, crop: int) -> np.ndarray:
    """torchvision's Resize(resize) + CenterCrop(crop) on a PIL image, written out."""
    image = Image.open(io.BytesIO(data)).convert("RGB")
    width, height = image.size
    short = min(width, height)
    width, height = int(resize * width / short), int(resize * height / short)
    image = image.resize((width, height), Image.BILINEAR)
    top, left = round((height - crop) / 2.0), round((width - crop) / 2.0)  # CenterCrop's
    return np.asarray(image.crop((left, top, left + crop, top + crop)))


def _mean_and_max_difference(a, b) -> tuple[float, float]:
    difference = np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))
    return float(difference.mean()), float(difference.max())


@pytest.mark.parametrize("crop", [224, 227])
@pytest.mark.parametrize(
    "name", ["grace_hopper_600x512", "grace_hopper_391x512", "present_128x97_png"]
)
def test_eval_view_matches_pil_resize_then_center_crop(pictures, name, crop):
    """Within 1 grey level on average (measured: 0.11-0.16; PIL rounds to 8 bits between its
    two passes). The decoded window and its sub-pixel offset make resize-then-crop exact, borders
    included; the window at whole original pixels resized without antialiasing (the code before)
    was off by 2.6-11 grey levels here, and by 8.8-10 on the 391x512 photograph even when
    antialiased."""
    recipe = Recipe(input_size=crop, resize_size=256)
    view = preprocessing.eval_views(tf.constant(pictures[name]), recipe).numpy()[0]
    mean, largest = _mean_and_max_difference(view, _pil_eval_view(pictures[name], 256, crop))
    assert mean <= 1.0, (name, crop, mean)
    assert largest <= 2, (name, crop, largest)  # a shifted window differs by tens of levels


def test_random_resized_view_matches_pil_crop_then_resize(pictures):
    """The Inception-style train view: the window alone resized (torchvision's RandomResizedCrop
    on a PIL image), each axis by its own factor."""
    data = pictures["grace_hopper_600x512"]
    top, left, height, width = 50, 30, 300, 410
    view = preprocessing.decode_view(
        tf.constant(data),
        lambda shape: preprocessing.window_resized_plan(
            tf.constant([top, left, height, width]), [224, 224]
        ),
    )
    image = Image.open(io.BytesIO(data)).convert("RGB")
    want = image.crop((left, top, left + width, top + height)).resize((224, 224), Image.BILINEAR)
    mean, largest = _mean_and_max_difference(view, want)
    assert mean <= 1.0
    assert largest <= 2


def test_cache_and_direct_crops_go_through_one_resize(pictures, monkeypatch):
    """Every view and the cache call `resample`, and a paper crop taken directly from the original
    is the same crop of the resized (cache) image: equal but for float rounding ties before the
    cache's JPEG re-encoding; after it, they differ by exactly that JPEG's error."""
    calls = []
    resample = preprocessing.resample
    monkeypatch.setattr(
        preprocessing, "resample", lambda image, plan: calls.append(plan) or resample(image, plan)
    )
    data = tf.constant(pictures["grace_hopper_391x512"])
    seed = tf.constant([1, 2], tf.int64)
    for recipe in (Recipe(), Recipe(train_crop="random_resized")):
        preprocessing.train_example(data, seed, recipe)
    for crops in (1, 10):
        preprocessing.eval_views(data, Recipe(eval_crops=crops))
    cached = preprocessing.reencode_resized(data, 256)
    assert len(calls) == 5

    offset = [3, 21]  # (top, left) of the 227 crop inside the central 256 square
    crop = lambda image: preprocessing.decode_view(
        image, lambda shape: preprocessing.paper_crop_plan(shape, offset, 256, 227)
    ).numpy()
    direct = crop(data)
    resized = preprocessing.resize_shorter_side(data, 256).numpy()
    assert resized.shape == (256, 335, 3)  # torchvision's rule: floor(256 * 512 / 391)
    top, left = offset[0], (335 - 256) // 2 + offset[1]
    window = (slice(top, top + 227), slice(left, left + 227))
    mean, largest = _mean_and_max_difference(direct, resized[window])
    assert largest <= 1
    assert mean < 0.01

    decoded = tf.io.decode_jpeg(cached, dct_method="INTEGER_ACCURATE").numpy()
    np.testing.assert_array_equal(crop(cached), decoded[window])  # a cached image: no resample
    jpeg_error, _ = _mean_and_max_difference(resized[window], decoded[window])
    mean, _ = _mean_and_max_difference(direct, decoded[window])
    assert abs(mean - jpeg_error) < 0.01, (mean, jpeg_error)  # about 2.4 grey levels


@pytest.mark.parametrize(("shape", "size"), [((380, 451), (227, 227)), ((40, 97), (224, 100))])
def test_resample_is_tf_image_resize_with_antialiasing(shape, size):
    """The two one-axis passes give `tf.image.resize(..., antialias=True)` bit for bit, down and
    up."""
    image = tf.constant(np.random.default_rng(0).integers(0, 256, (*shape, 3), np.uint8))
    plan = preprocessing.window_resized_plan(tf.constant([0, 0, *shape]), size)
    want = tf.image.resize(image, size, method="bilinear", antialias=True)
    want = tf.cast(tf.clip_by_value(tf.round(want), 0.0, 255.0), tf.uint8)
    np.testing.assert_array_equal(preprocessing.resample(image, plan), want)

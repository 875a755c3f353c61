"""Hostile pass 20: pictures TensorFlow's decoder must not be given as they are (decode_rgb).

#56: an animated WebP made TensorFlow's decoder corrupt the heap and abort the process (exit 134)
in training, the caches' builds and the evaluation; it is now an undecodable example, skipped and
named. #59: an 8-bit palette BMP was read as its colour indices in grey; its colour table is now
applied, as Pillow (predict) reads it.
"""

import io
import os
import struct
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from alexnet_jax.data import preprocessing
from tests.conftest import png

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _frames(side: int = 24) -> list[Image.Image]:
    """Three RGB frames of different colours and patterns."""
    frames = []
    for k in range(3):
        pixels = np.zeros((side, side, 3), np.uint8)
        pixels[:, : side // 2] = (200, 40 * k, 0)
        pixels[:, side // 2 :] = (0, 90, 60 * k)
        frames.append(Image.fromarray(pixels))
    return frames


def _animated_webp(path: str) -> None:
    frames = _frames()
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)


# Run apart from pytest: before the fix the decoder aborted the interpreter (SIGABRT).
_ANIMATED_FOLDER = """
import os, sys
from alexnet_jax.core import runtime
runtime.import_tensorflow_quietly()
from alexnet_jax.data import data_sources, input_pipeline
from configs import default
tmp, root = sys.argv[1], sys.argv[2]
config = default.get_config()
config.dataset, config.image_folder, config.num_classes = "image_folder", root, 2
config.data_dir = os.path.join(tmp, "tfds")
config.resized_cache_dir = os.path.join(tmp, "cache")  # the cache's build decodes every file
info = input_pipeline.prepare(config)
source = data_sources.open_source(config, build=False)
manifest = data_sources.read_json(
    os.path.join(data_sources.cache_dir(config, source), data_sources.CACHE_MANIFEST)
)
print("cache left out", manifest["undecodable_files"])
config.resized_cache_dir = ""  # the files themselves, as the reported training run read them
train = input_pipeline.create_train_iterator(config, local_batch_size=info.num_train_examples)
next(train)
print("train skipped", train.num_undecodable)
evals = input_pipeline.create_eval_iterator(config, local_batch_size=4)
list(evals)
print("eval skipped", evals.num_undecodable)
"""


def test_an_animated_webp_in_an_image_folder_is_skipped_and_named_not_a_crash(tmp_path):
    """#56: `frames[0].save(path, save_all=True, ...)` of 3 frames in train/<class>/ and val/
    aborted training with "corrupted double-linked list" (exit 134). Now the resize cache's
    build leaves it out and names it, training and evaluation skip it with their warning, and
    a still WebP beside it is read."""
    root = str(tmp_path / "images")
    for split, count in (("train", 2), ("val", 1)):
        for c, name in enumerate(("ant", "bee")):
            for k in range(count):
                png(os.path.join(root, split, name, f"{k}.png"), 40 + 80 * c + k)
        _animated_webp(os.path.join(root, split, "ant", "moving.webp"))
    _frames()[0].save(os.path.join(root, "train", "bee", "still.webp"))
    proc = subprocess.run(
        [sys.executable, "-c", _ANIMATED_FOLDER, str(tmp_path), root],
        cwd=REPO, capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONPATH": REPO},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert "cache left out ['train/ant/moving.webp']" in lines, proc.stdout
    assert "train skipped 1" in lines, proc.stdout
    assert "eval skipped 1" in lines, proc.stdout
    warnings = [w for w in proc.stderr.splitlines() if w.startswith("warning: ")]
    for said, named in [
        ("The pre-resize cache left out 1 undecodable", "train/ant/moving.webp"),
        ("Skipped 1 training image(s) that could not be read", "train/ant/moving.webp"),
        ("Evaluation skipped 1 image(s) that could not be read", "val/ant/moving.webp"),
    ]:
        assert any(said in w and w.endswith(named) for w in warnings), (said, warnings)
    assert not any("still.webp" in w for w in warnings), warnings


@pytest.mark.parametrize(
    ("mode", "options"), [("RGB", {}), ("RGB", {"lossless": True}), ("RGBA", {"quality": 80})]
)
def test_only_the_animation_flag_refuses_a_webp_a_still_one_decodes_as_pillow_reads_it(
    mode, options
):
    """#56's check reads the VP8X chunk's animation flag, the one TensorFlow's decoder takes its
    crashing path by: a still WebP (lossy, lossless, with alpha) decodes as before, equal to
    Pillow's pixels, and only the animated file of the same frames is flagged."""
    frame, buffer = _frames()[0], io.BytesIO()
    frame.convert(mode).save(buffer, format="WEBP", **options)
    still = buffer.getvalue()
    expected = np.asarray(Image.open(io.BytesIO(still)).convert("RGB"))
    np.testing.assert_array_equal(preprocessing.decode_rgb(tf.constant(still)).numpy(), expected)
    assert not bool(preprocessing.is_animated_webp(tf.constant(still)))
    animated = io.BytesIO()
    frames = _frames()
    frames[0].save(animated, "WEBP", save_all=True, append_images=frames[1:], duration=100)
    assert bool(preprocessing.is_animated_webp(tf.constant(animated.getvalue())))
    # The check refuses the file before decode_image (safe here: it never runs).
    with pytest.raises(tf.errors.InvalidArgumentError, match="an animated WebP"):
        preprocessing.decode_rgb(tf.constant(animated.getvalue()))


def _regions(width: int) -> np.ndarray:
    """A 48 x `width` RGB picture of 3 coloured regions."""
    pixels = np.zeros((48, width, 3), np.uint8)
    pixels[:] = (200, 0, 0)
    pixels[16:32] = (0, 150, 30)
    pixels[32:, 10:] = (20, 40, 250)
    return pixels


def _bmp(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="BMP")
    return buffer.getvalue()


def _top_down(data: bytes) -> bytes:
    """The same BMP stored top-down: rows in reverse order and a negative height."""
    data = bytearray(data)
    offset, width, height, bits = (struct.unpack_from(f, data, at)[0] for f, at in
                                   (("<I", 10), ("<i", 18), ("<i", 22), ("<H", 28)))  # fmt: skip
    row = (width * bits + 31) // 32 * 4
    rows = [data[offset + k * row : offset + (k + 1) * row] for k in range(height)]
    data[offset : offset + row * height] = b"".join(reversed(rows))
    struct.pack_into("<i", data, 22, -height)
    return bytes(data)


def _pillow(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


@pytest.mark.parametrize(
    ("width", "palette", "top_down"),
    [(48, "WEB", False), (37, "WEB", False), (37, "ADAPTIVE", False), (37, "WEB", True)],
)
def test_a_palette_bmp_decodes_to_its_colours_as_pillow_reads_it(width, palette, top_down):
    """#59: `Image.fromarray(a).convert("P").save("pal.bmp")` of red was read as [14 14 14],
    its colour index, where Pillow (predict) reads [204 0 0]. Now the colour table is applied:
    equal to Pillow's pixels, with Pillow's 226-colour web palette (dithered) and a 3-colour one,
    an odd width (rows padded to 4 bytes) and a top-down file."""
    image = Image.fromarray(_regions(width))
    if palette == "WEB":
        image = image.convert("P")
    else:
        image = image.convert("P", palette=Image.Palette.ADAPTIVE, colors=3)
    data = _top_down(_bmp(image)) if top_down else _bmp(image)
    expected = _pillow(data)
    assert (expected[..., 0] != expected[..., 2]).any()  # colours (dithered for "WEB"), not grey
    np.testing.assert_array_equal(preprocessing.decode_rgb(tf.constant(data)).numpy(), expected)


def test_a_palette_bmp_value_past_its_table_is_black_unless_the_table_is_grey():
    """Pillow's two readings of an 8-bit BMP, matched exactly: a colour table of 3 entries
    makes a value past it black; a table whose entries are their own grey levels is read as
    greyscale, so a value past it stays its own grey (as TensorFlow read every 8-bit BMP)."""
    indices = np.array([[0, 1, 2, 5]] * 4, np.uint8)
    for table in ([200, 0, 0, 0, 150, 30, 20, 40, 250], [0, 0, 0, 1, 1, 1, 2, 2, 2]):
        image = Image.fromarray(indices, "P")
        image.putpalette(table)
        data = _bmp(image)
        assert struct.unpack_from("<I", data, 46)[0] == 3  # biClrUsed: 3 entries
        decoded = preprocessing.decode_rgb(tf.constant(data)).numpy()
        np.testing.assert_array_equal(decoded, _pillow(data))
    assert decoded[0, 3].tolist() == [5, 5, 5]  # the grey table: value 5 is grey 5


def _rle8_bmp(indices: np.ndarray, colours: list, size: int) -> bytes:
    """A bottom-up RLE8 BMP of `indices` (rows of one value: each row one run) whose pixel data
    is padded after the end-of-bitmap code to `size` bytes."""
    height, width = indices.shape
    codes = b"".join(bytes([width, row[0], 0, 0]) for row in indices[::-1])  # run, end of line
    codes = (codes + b"\0\1").ljust(size, b"\0")
    table = b"".join(bytes([b, g, r, 0]) for r, g, b in colours)
    offset = 14 + 40 + len(table)
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 8, 1, size, 0, 0, len(colours), 0)
    return b"BM" + struct.pack("<IHHI", offset + size, 0, 0, offset) + info + table + codes


def test_a_run_length_encoded_palette_bmp_is_refused_not_read_as_pixels():
    """TensorFlow's decoder ignores a BMP's compression field: an RLE8 file whose data is as
    long as the raw rows would be (here padded after its end code) was read code by code as
    pixels. It is refused as undecodable, where Pillow decodes it."""
    indices = np.zeros((8, 16), np.uint8)
    indices[4:] = 1
    data = _rle8_bmp(indices, [(200, 0, 0), (0, 150, 30)], size=16 * 8)  # the raw rows' size
    assert _pillow(data)[-1, 0].tolist() == [0, 150, 30]  # a valid file: Pillow reads it
    with pytest.raises(tf.errors.InvalidArgumentError, match="compressed palette BMP"):
        preprocessing.decode_rgb(tf.constant(data))


@pytest.mark.parametrize("kind", ["grey", "grey_top_down", "rgb", "rgb_top_down", "rgba"])
def test_grey_and_true_colour_bmps_decode_as_before(kind):
    """The other BMPs TensorFlow read correctly are unchanged by #59's colour table: 8-bit grey
    (an identity table), 24-bit and 32-bit, bottom-up and top-down, all equal to Pillow's pixels
    and to TensorFlow's own decoding (grey replicated, alpha dropped)."""
    mode = {"grey": "L", "rgb": "RGB", "rgba": "RGBA"}[kind.removesuffix("_top_down")]
    image = Image.fromarray(_regions(37)).convert(mode)
    data = _top_down(_bmp(image)) if kind.endswith("_top_down") else _bmp(image)
    decoded = preprocessing.decode_rgb(tf.constant(data)).numpy()
    np.testing.assert_array_equal(decoded, _pillow(data))
    tf_own = tf.io.decode_image(data, channels=0, expand_animations=False).numpy()
    tf_own = np.repeat(tf_own, 3, axis=-1) if tf_own.shape[-1] == 1 else tf_own[..., :3]
    np.testing.assert_array_equal(decoded, tf_own)


def test_a_palette_bmp_whose_table_claims_over_256_colours_is_refused_as_pillow_refuses_it():
    """Hostile pass 21, #51: an 8-bit BMP whose biClrUsed says 300 was read by training (its
    table cut to 256) and refused by predict (Pillow: "invalid palette size"). Training refuses
    it too: an undecodable example, named, as in predict."""
    image = Image.fromarray(_regions(37)).convert("P")
    data = bytearray(_bmp(image))
    data[46:50] = (300).to_bytes(4, "little")  # biClrUsed
    with pytest.raises(ValueError, match="invalid palette size"):
        _pillow(bytes(data))
    with pytest.raises(tf.errors.InvalidArgumentError, match="compressed palette BMP"):
        preprocessing.decode_rgb(tf.constant(bytes(data)))


def _bitfields_bmp(rgba: np.ndarray, masks: tuple[int, int, int, int]) -> bytes:
    """A 32-bit top-down BMP, BI_BITFIELDS with `masks` (red, green, blue, alpha) in a 56-byte
    header; each pixel's bytes hold the channels where the masks put them."""
    import struct

    h, w, _ = rgba.shape
    pixel = np.zeros((h, w), np.uint32)
    for channel, mask in enumerate(masks):
        pixel |= rgba[..., channel].astype(np.uint32) << ((mask & -mask).bit_length() - 1)
    data = pixel.astype("<u4").tobytes()
    dib = struct.pack("<IiiHHIIiiII", 56, w, -h, 1, 32, 3, len(data), 2835, 2835, 0, 0)
    dib += struct.pack("<IIII", *masks)
    return b"BM" + struct.pack("<IHHI", 14 + len(dib) + len(data), 0, 0, 14 + len(dib)) + dib + data


def test_a_bmp_with_unusual_colour_masks_is_refused_and_the_usual_ones_read_as_pillow():
    """Hostile pass 22, #18: a 32-bit BI_BITFIELDS BMP whose masks put the channels in RGBA order
    was read by TensorFlow's decoder with red and blue swapped (it ignores the masks), trained
    on with no word; predict (Pillow) read it right. Refused as undecodable; the usual masks
    (red 0xFF0000, green 0xFF00, blue 0xFF) decode as Pillow reads them."""
    rgba = np.zeros((4, 6, 4), np.uint8)
    rgba[..., 0], rgba[..., 1], rgba[..., 2], rgba[..., 3] = 95, 130, 194, 255
    unusual = _bitfields_bmp(rgba, (0xFF, 0xFF00, 0xFF0000, 0xFF000000))
    assert _pillow(unusual)[0, 0].tolist() == [95, 130, 194]
    with pytest.raises(tf.errors.InvalidArgumentError):
        preprocessing.decode_rgb(tf.constant(unusual))
    usual = _bitfields_bmp(rgba, (0xFF0000, 0xFF00, 0xFF, 0xFF000000))
    np.testing.assert_array_equal(
        preprocessing.decode_rgb(tf.constant(usual)).numpy(), _pillow(usual)
    )

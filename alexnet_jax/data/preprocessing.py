"""Per-example image preprocessing in TensorFlow: decoding, the paper's crops, flips, PCA lighting.

Every random choice uses a `tf.random.stateless_*` op and an explicit seed (`train_draws`), so an
augmentation is a pure function of (seed, epoch, example) and a resumed run reproduces it exactly.
The settings come as a `Recipe` (recipe.py). Images stay uint8
until a whole batch is normalized by one op (`normalize_batch`); per-example float work is slower.
With config.augment_on="device" the host only decodes each image's `center_square` and
alexnet_jax/data/augment.py does the crop, flip, lighting and normalization in JAX on the device.

Geometry (docs/PAPER.md, "Data and augmentation"): the paper rescales the shorter side to 256,
keeps the central 256x256 square and takes a random 227x227 (or 224) crop of it. Each view is a
crop of the image resized to shorter side 256 (`resized_shape`: torchvision's `Resize(256)` rule),
computed without resizing the whole image: `crop_of_resized` finds the window of the ORIGINAL
image that the crop's resampling kernel reaches, only that window is decoded (fused
`tf.io.decode_and_crop_jpeg`, accurate IDCT) and `resample` turns it into the crop with the exact
sub-pixel scale and offset, so the result equals resize-then-crop, borders included.

`resample` is the one resize of the project (train crops, eval views, the 10-crop square, the
pre-resize cache): antialiased bilinear, as PIL's `Image.resize(size, Image.BILINEAR)` that
torchvision uses. The eval center view equals torchvision's `Resize(256)` + `CenterCrop(224)` on
a PIL image to 0.1-0.2 grey levels on average (tests/data/test_preprocessing.py). An image
already at 256 (the pre-resize cache) is cropped without resampling; images smaller than the crop
are upscaled (plain bilinear).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import numpy as np

from alexnet_jax.core import runtime
from alexnet_jax.data import image_files, imagenet_stats
from alexnet_jax.data.recipe import Recipe, ten_crop_offsets

tf = runtime.tensorflow  # imported on first use


class ViewPlan(NamedTuple):
    """How one view is computed from an image: decode `window` ([top, left, height, width] of
    the image) and resample it to `size` ([height, width]) with `scale` and `translation`
    (float32 [2] each, ScaleAndTranslate's convention: output = input * scale + translation in
    pixel-edge coordinates)."""

    window: tf.Tensor
    size: tf.Tensor
    scale: tf.Tensor
    translation: tf.Tensor


def resized_shape(shape: tf.Tensor, size: int) -> tf.Tensor:
    """int32 [height, width] of an image of `shape` [h, w, ...] resized to shorter side `size`.

    torchvision's `Resize(size)` rule: the longer side becomes floor(size * long / short).
    """
    hw = tf.cast(shape[:2], tf.int32)
    return size * hw // tf.reduce_min(hw)


def crop_of_resized(shape: tf.Tensor, resized: tf.Tensor, top_left, crop_size) -> ViewPlan:
    """The crop [top_left, top_left + crop_size) of the image resized to `resized` [h, w].

    The window is every pixel of the original that the antialiased kernel of the crop's pixels
    reaches (clipped to the image), so the result equals a whole-image resize followed by the
    crop, borders included, with only the window decoded. An image already at `resized` (the
    pre-resize cache) gives scale 1 and a window equal to the crop: nothing to resample.
    """
    hw = tf.cast(shape[:2], tf.int32)
    top_left = tf.cast(top_left, tf.int32)
    crop_size = tf.cast(crop_size, tf.int32)
    scale = tf.cast(resized, tf.float32) / tf.cast(hw, tf.float32)
    reach = tf.where(tf.equal(scale, 1.0), 0.0, tf.maximum(1.0 / scale, 1.0))  # original px
    start = tf.cast(top_left, tf.float32) / scale - reach
    end = tf.cast(top_left + crop_size, tf.float32) / scale + reach
    low = tf.maximum(tf.cast(tf.floor(start), tf.int32), 0)
    high = tf.minimum(tf.cast(tf.math.ceil(end), tf.int32), hw)
    translation = tf.cast(low, tf.float32) * scale - tf.cast(top_left, tf.float32)
    return ViewPlan(tf.concat([low, high - low], 0), crop_size, scale, translation)


def window_resized_plan(window: tf.Tensor, size) -> ViewPlan:
    """`window` of the original resized to `size` on its own (crop, then resize: torchvision's
    RandomResizedCrop; the kernel does not reach outside the window)."""
    size = tf.cast(size, tf.int32)
    scale = tf.cast(size, tf.float32) / tf.cast(window[2:], tf.float32)
    return ViewPlan(window, size, scale, tf.zeros([2], tf.float32))


def paper_crop_plan(shape: tf.Tensor, offset, resize_size: int, crop_size: int) -> ViewPlan:
    """The paper's crop: shorter side to `resize_size`, central `resize_size` square, then the
    `crop_size` square at `offset` = (top, left) inside that square."""
    resized = resized_shape(shape, resize_size)
    square = (resized - resize_size) // 2
    return crop_of_resized(shape, resized, square + offset, [crop_size, crop_size])


def center_crop_plan(shape: tf.Tensor, resize_size: int, crop_size: int) -> ViewPlan:
    """torchvision's Resize(resize_size) + CenterCrop(crop_size): the crop's top-left is
    round((resized - crop_size) / 2), halves to even (Python's round, as CenterCrop)."""
    resized = resized_shape(shape, resize_size)
    top_left = tf.round(tf.cast(resized - crop_size, tf.float32) / 2.0)
    return crop_of_resized(shape, resized, top_left, [crop_size, crop_size])


def center_square_plan(shape: tf.Tensor, resize_size: int) -> ViewPlan:
    """The central `resize_size` square of the image resized to shorter side `resize_size`."""
    resized = resized_shape(shape, resize_size)
    return crop_of_resized(shape, resized, (resized - resize_size) // 2, [resize_size] * 2)


def random_resized_window(shape: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """Inception-style window: 8-100% of the area, aspect 3/4-4/3 (whole image if none fits)."""
    begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
        tf.cast(shape, tf.int32),
        bounding_boxes=tf.constant([0.0, 0.0, 1.0, 1.0], shape=[1, 1, 4]),
        seed=seed,
        min_object_covered=0.1,
        aspect_ratio_range=(3 / 4, 4 / 3),
        area_range=(0.08, 1.0),
        max_attempts=10,
        use_image_if_no_bounding_boxes=True,
    )
    return tf.stack([begin[0], begin[1], size[0], size[1]])


def _resample_first_axis(x: tf.Tensor, size, scale, translation) -> tf.Tensor:
    """[n, m] (any real dtype) -> float32 [size, m]: the antialiased triangle kernel along axis 0.

    ScaleAndTranslate vectorizes its pass over rows but not the one over columns (one pixel's
    channels at a time: 2.2 ms for 380 -> 227 px against 0.3 ms for plain bilinear), so each axis
    gets its own call as the first axis, the other axis and the channels folded into the width.
    """
    out = tf.raw_ops.ScaleAndTranslate(
        images=x[None, :, None, :],
        size=tf.stack([size, 1]),
        scale=tf.stack([scale, 1.0]),
        translation=tf.stack([translation, 0.0]),
        kernel_type="triangle",
        antialias=True,
    )
    return out[0, :, 0, :]


def resample(image: tf.Tensor, plan: ViewPlan) -> tf.Tensor:
    """The project's one resize: uint8 [h, w, 3] -> uint8 [*plan.size, 3], antialiased bilinear.

    A triangle kernel widened by the downscale factor, with normalized weights, as PIL's
    `Image.resize(size, Image.BILINEAR)` (plain bilinear when upscaling); rows, then columns, the
    order and float arithmetic of `tf.image.resize(..., antialias=True)`. Every view and the
    pre-resize cache go through it. No work when the plan is the identity.
    """
    (out_h, out_w), width = tf.unstack(plan.size), tf.shape(image)[1]

    def resize():
        rows = _resample_first_axis(
            tf.reshape(image, [tf.shape(image)[0], -1]), out_h, plan.scale[0], plan.translation[0]
        )  # (out_h, w * 3)
        columns = tf.transpose(tf.reshape(rows, [out_h, width, 3]), [1, 0, 2])  # (w, out_h, 3)
        resized = _resample_first_axis(
            tf.reshape(columns, [width, -1]), out_w, plan.scale[1], plan.translation[1]
        )  # (out_w, out_h * 3)
        resized = tf.transpose(tf.reshape(resized, [out_w, out_h, 3]), [1, 0, 2])
        return tf.cast(tf.clip_by_value(tf.round(resized), 0.0, 255.0), tf.uint8)

    identity = tf.reduce_all(
        [
            tf.reduce_all(tf.equal(plan.scale, 1.0)),
            tf.reduce_all(tf.equal(plan.translation, 0.0)),
            tf.reduce_all(tf.equal(tf.shape(image)[:2], plan.size)),
        ]
    )
    return tf.cond(identity, lambda: image, resize)


# The most pixels a picture may have, as Pillow's decompression-bomb limit (predict refuses
# larger ones through it): a larger one is an undecodable example. A 20000 x 20000 PNG of 1 MB
# decodes to 1.2 GB, and under a memory limit TensorFlow aborted in C++.
MAX_PIXELS = 2 * 89_478_485


# How pictures other than JPEGs are read (decode_rgb); bump it when that changes, so that the
# caches of an image folder (keyed by it: data_sources' cache_key) are made again. 2: GIFs by
# Pillow, a WebP with alpha read instead of skipped (hostile pass 8, #24 and #41). 3: an 8-bit
# BMP's colour table applied (hostile pass 20, #59: the indices were read as grey levels).
# 4: the BMPs that Pillow (predict) refuses or reads otherwise refused (hostile pass 22, #18-20).
DECODER_VERSION = 4


def gif_pixels(data: bytes) -> np.int64:
    """The pixels of the smallest canvas that holds a GIF's screen and every frame where its
    image descriptor places it (the block structure walked, the image data skipped); 0 when the
    structure is broken (decode_image then refuses the file)."""
    data, at = data.item() if isinstance(data, np.ndarray) else data, 13  # tf: a 0-d array

    def u16(i: int) -> int:
        return int.from_bytes(data[i : i + 2], "little")

    try:
        width, height = u16(6), u16(8)
        if data[10] & 0x80:  # a global colour table
            at += 3 * 2 ** ((data[10] & 7) + 1)
        while data[at] != 0x3B:  # up to the trailer
            if data[at] == 0x21:  # an extension: its label, then sub-blocks
                at += 2
            elif data[at] == 0x2C:  # an image: descriptor, colour table, LZW size, sub-blocks
                width = max(width, u16(at + 1) + u16(at + 5))
                height = max(height, u16(at + 3) + u16(at + 7))
                flags, at = data[at + 9], at + 10
                at += (3 * 2 ** ((flags & 7) + 1) if flags & 0x80 else 0) + 1
            else:
                return np.int64(0)
            while data[at]:  # sub-blocks of data[at] bytes, up to an empty one
                at += data[at] + 1
            at += 1
    except IndexError:  # cut short: the frames read so far count
        pass
    return np.int64(width * height)


def header_pixels(image_bytes: tf.Tensor) -> tf.Tensor:
    """int64 width * height of an encoded picture, read from its header alone (JPEG, PNG, GIF,
    BMP, WebP: lossy, lossless and extended); 0 for anything else (decode_image refuses it)."""
    head = tf.strings.substr(tf.strings.join([image_bytes, "\0" * 32]), 0, 32)
    b = tf.cast(tf.io.decode_raw(head, tf.uint8), tf.int64)

    def le(i: int, n: int) -> tf.Tensor:  # little-endian unsigned of bytes i .. i + n - 1
        return sum(b[i + k] * 256**k for k in range(n))

    def be(i: int, n: int) -> tf.Tensor:
        return sum(b[i + k] * 256 ** (n - 1 - k) for k in range(n))

    def starts(text: bytes, at: int = 0) -> tf.Tensor:
        return tf.equal(tf.strings.substr(image_bytes, at, len(text)), text)

    bmp_w, bmp_h = le(18, 4), le(22, 4)  # int32: a top-down bitmap's height is negative
    bmp_h = tf.where(bmp_h >= 2**31, 2**32 - bmp_h, bmp_h)
    sizes = [  # (is this format, width, height)
        (starts(b"\x89PNG\r\n\x1a\n"), be(16, 4), be(20, 4)),
        (starts(b"GIF8"), le(6, 2), le(8, 2)),
        (starts(b"BM"), bmp_w, bmp_h),
        (starts(b"WEBPVP8X", 8), 1 + le(24, 3), 1 + le(27, 3)),
        (
            starts(b"WEBPVP8L", 8),
            1 + le(21, 2) % 2**14,
            1 + (le(22, 3) // 2**6) % 2**14,
        ),
        (starts(b"WEBPVP8 ", 8), le(26, 2) % 2**14, le(28, 2) % 2**14),
    ]
    pixels = tf.constant(0, tf.int64)
    for is_format, width, height in sizes:
        pixels = tf.where(is_format, width * height, pixels)

    def gif() -> tf.Tensor:  # a frame may lie outside the screen: each one is read (rare)
        frames = tf.numpy_function(gif_pixels, [image_bytes], tf.int64, stateful=False)
        return tf.ensure_shape(frames, [])

    pixels = tf.cond(starts(b"GIF8"), gif, lambda: pixels)

    def jpeg() -> tf.Tensor:
        return tf.reduce_prod(tf.cast(tf.image.extract_jpeg_shape(image_bytes)[:2], tf.int64))

    return tf.cond(tf.io.is_jpeg(image_bytes), jpeg, lambda: pixels)


def _head(image_bytes: tf.Tensor, size: int) -> tf.Tensor:
    """int64 [size]: the first `size` bytes of an encoded picture, zeros past its end."""
    head = tf.strings.substr(tf.strings.join([image_bytes, "\0" * size]), 0, size)
    return tf.cast(tf.io.decode_raw(head, tf.uint8), tf.int64)


def _little_endian(b: tf.Tensor, i: int, n: int) -> tf.Tensor:
    """The unsigned little-endian number in bytes i .. i + n - 1 of `b` (int64 bytes)."""
    return sum(b[i + k] * 256**k for k in range(n))


def is_animated_webp(image_bytes: tf.Tensor) -> tf.Tensor:
    """bool: whether a picture is a WebP whose VP8X chunk sets the animation flag. TensorFlow's
    decoder takes its animation path by that flag alone, and there it corrupts the heap and
    aborts the process (hostile pass 20, #56: even one frame); an ANIM or ANMF chunk without
    the flag is refused by it with an error, like any broken file."""
    b = _head(image_bytes, 21)
    riff = tf.equal(tf.strings.substr(image_bytes, 0, 4), b"RIFF")
    vp8x = tf.equal(tf.strings.substr(image_bytes, 8, 8), b"WEBPVP8X")
    return riff & vp8x & tf.not_equal(tf.bitwise.bitwise_and(b[20], 2), 0)


def bmp_colours(image_bytes: tf.Tensor) -> tf.Tensor:
    """uint8 [256, 3]: the RGB colour of each pixel value of an 8-bit BMP, as Pillow reads it:
    its colour table (B, G, R, reserved entries after the DIB header: biClrUsed of them, 256
    when 0), black past the table's end; but the value itself when every entry is its own grey
    level, as Pillow then reads the file as greyscale (a value past the table stays grey)."""
    b = _head(image_bytes, 50)
    used = _little_endian(b, 46, 4)
    count = tf.where((used == 0) | (used > 256), tf.constant(256, tf.int64), used)
    length = tf.cast(tf.strings.length(image_bytes), tf.int64)
    start = tf.minimum(14 + _little_endian(b, 14, 4), length)  # a table past the end: zeros
    table = tf.strings.substr(tf.strings.join([image_bytes, "\0" * 1024]), start, 1024)
    table = tf.reverse(tf.reshape(tf.io.decode_raw(table, tf.uint8), [256, 4])[:, :3], [1])
    listed = (tf.range(256, dtype=tf.int64) < count)[:, None]  # (256, 1)
    table = tf.where(listed, table, tf.zeros_like(table))  # past the table: black
    grey = tf.cast(tf.tile(tf.range(256)[:, None], [1, 3]), tf.uint8)  # (256, 3): v is (v, v, v)
    is_grey = tf.reduce_all(tf.equal(table, grey) | ~listed)
    return tf.where(is_grey, grey, table)


def is_palette_bmp(image_bytes: tf.Tensor) -> tf.Tensor:
    """bool: whether a picture is a BMP of 8 bits per pixel with a DIB header of at least 40
    bytes (BITMAPINFOHEADER or later), so that its colour table has 4-byte entries where
    `bmp_colours` reads them. TensorFlow's decoder returns such a file's colour indices as one
    grey channel; 1 and 4 bits per pixel it refuses (skipped like any undecodable file)."""
    b = _head(image_bytes, 30)
    bmp = tf.equal(tf.strings.substr(image_bytes, 0, 2), b"BM")
    return bmp & (_little_endian(b, 14, 4) >= 40) & tf.equal(_little_endian(b, 28, 2), 8)


def decode_rgb(image_bytes: tf.Tensor) -> tf.Tensor:
    """uint8 [h, w, 3] of a whole encoded picture (PNG, GIF, BMP, WebP, JPEG): decoded with its
    own channels, then an alpha channel dropped (the colours under it kept) and grey replicated
    to RGB, as `decode_image(channels=3)` does for the formats it converts itself; a WebP with
    alpha, which it refuses, is read the same way (and as predict reads it: image_files). A GIF
    is read by Pillow (image_files.gif_rgb): TensorFlow decodes a first frame smaller than its
    screen at the frame's size, its pixels out of place, where Pillow composes the screen. An
    8-bit BMP's pixels are looked up in its colour table (`bmp_colours`), as Pillow reads it.
    An animated WebP (`is_animated_webp`: TensorFlow's decoder aborts the process on one) and
    a BMP of a form that predict (Pillow) reads otherwise (`image_files.refused_bmp`: a
    compressed palette BMP, unusual colour masks) raise an InvalidArgumentError, an
    undecodable example, before they reach TensorFlow's decoder."""

    def gif() -> tf.Tensor:
        image = tf.numpy_function(image_files.gif_rgb, [image_bytes], tf.uint8, stateful=False)
        return tf.ensure_shape(image, [None, None, 3])

    def other() -> tf.Tensor:
        # Refused before decode_image sees them: an undecodable example, not a crash or noise.
        head = tf.strings.substr(image_bytes, 0, 70)  # (all refused_bmp reads: no whole copy)
        bmp = tf.numpy_function(image_files.refused_bmp, [head], tf.bool, stateful=False)
        refused = is_animated_webp(image_bytes) | tf.ensure_shape(bmp, [])
        why = (
            "an animated WebP (it aborts the process), or a compressed palette BMP or another "
            "BMP form that predict refuses too (image_files.refused_bmp)"
        )
        readable = tf.debugging.Assert(tf.logical_not(refused), [why])
        with tf.control_dependencies([readable]):
            image = tf.io.decode_image(image_bytes, channels=0, expand_animations=False)
        grey = tf.shape(image)[-1] < 3
        return tf.case(
            [
                (grey & is_palette_bmp(image_bytes), lambda: palette(image)),
                (grey, lambda: tf.image.grayscale_to_rgb(image[..., :1])),
            ],
            default=lambda: image[..., :3],
        )

    def palette(indices: tf.Tensor) -> tf.Tensor:
        return tf.gather(bmp_colours(image_bytes), tf.cast(indices[..., 0], tf.int32))

    return tf.cond(tf.equal(tf.strings.substr(image_bytes, 0, 4), b"GIF8"), gif, other)


def decode_view(image_bytes: tf.Tensor, plan_fn) -> tf.Tensor:
    """Decodes the window of `plan_fn(shape)` from an encoded image and resamples it by the plan.

    JPEGs (including grayscale and CMYK ones) take the fused decode-and-crop path that only
    decodes the window, with the accurate integer IDCT (libjpeg's default, and PIL's: the fast
    one differs by about 1 grey level on average); anything else (PNG, GIF, BMP, WebP under any
    file name) is fully decoded by `decode_rgb` and sliced. Returns the view, uint8
    [*plan.size, 3]. An undecodable file, or one of more than MAX_PIXELS pixels by its header,
    raises an InvalidArgumentError, which the pipeline turns into a skipped, counted example.
    """

    def from_jpeg():
        plan = plan_fn(tf.image.extract_jpeg_shape(image_bytes))
        pixels = tf.io.decode_and_crop_jpeg(
            image_bytes, plan.window, channels=3, dct_method="INTEGER_ACCURATE"
        )
        return pixels, plan

    def from_other():
        image = decode_rgb(image_bytes)
        plan = plan_fn(tf.shape(image))
        begin, size = plan.window[:2], plan.window[2:]
        return tf.slice(image, tf.concat([begin, [0]], 0), tf.concat([size, [3]], 0)), plan

    too_large = tf.debugging.assert_less_equal(
        header_pixels(image_bytes),
        tf.constant(MAX_PIXELS, tf.int64),
        message=f"a picture of more than {MAX_PIXELS} pixels (a decompression bomb?)",
    )
    with tf.control_dependencies([too_large]):
        pixels, plan = tf.cond(tf.io.is_jpeg(image_bytes), from_jpeg, from_other)
    pixels = tf.ensure_shape(pixels, [None, None, 3])
    return tf.ensure_shape(resample(pixels, plan), [None, None, 3])


def pca_lighting_offset(seed: tf.Tensor, std: float) -> tf.Tensor:
    """The paper's lighting noise sum_i alpha_i lambda_i p_i, alpha_i ~ N(0, std^2), 0-255 scale.

    Returns float32 [3], the RGB value added to every pixel of one image. Its covariance over draws
    is 255^2 * V diag(lambda^2 std^2) V^T with V's rows the eigenvectors (imagenet_stats).
    """
    alphas = tf.random.stateless_normal([3], seed=seed, stddev=std)
    weights = alphas * tf.constant(imagenet_stats.PCA_EIGVALS)
    return 255.0 * tf.linalg.matvec(
        tf.constant(imagenet_stats.PCA_EIGVECS), weights, transpose_a=True
    )


class TrainDraws(NamedTuple):
    """One training example's random choices (host path): the seed of its crop window, the
    paper crop's (top, left) int32 [2] in the resize_size square, its flip (bool) and its PCA
    lighting offset (float32 [3], 0-255 scale; zero without lighting)."""

    crop_seed: tf.Tensor
    offset: tf.Tensor
    flip: tf.Tensor
    rgb: tf.Tensor


def train_draws(seed: tf.Tensor, recipe: Recipe) -> TrainDraws:
    """The random choices of one training example from its stateless seed (int64 [2]).

    Crop offsets are uniform in [0, resize_size - input_size] (convdata.py:253), the flip has
    p = 1/2 and the lighting alphas are N(0, pca_lighting_std^2).
    """
    crop_seed, flip_seed, light_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 3))
    max_offset = recipe.resize_size - recipe.input_size
    offset = tf.random.stateless_uniform([2], crop_seed, 0, max_offset + 1, dtype=tf.int32)
    flip = tf.constant(False)
    if recipe.random_flip:
        flip = tf.random.stateless_uniform([], flip_seed) < 0.5
    rgb = tf.zeros([3], tf.float32)
    if recipe.pca_lighting_std > 0:
        rgb = pca_lighting_offset(light_seed, recipe.pca_lighting_std)
    return TrainDraws(crop_seed, offset, flip, rgb)


def train_example(image_bytes: tf.Tensor, seed: tf.Tensor, recipe: Recipe):
    """One training view -> (uint8 [S, S, 3] crop, flip bool, lighting offset float32 [3]).

    `seed` (int64 [2]) determines every random choice (`train_draws`). The flip and the lighting
    offset are applied to the whole batch by `normalize_batch` (one fused loop, cheaper than per
    image).
    """
    draws = train_draws(seed, recipe)
    if recipe.train_crop == "paper":
        plan_fn = lambda shape: paper_crop_plan(
            shape, draws.offset, recipe.resize_size, recipe.input_size
        )
    else:
        plan_fn = lambda shape: window_resized_plan(
            random_resized_window(shape, draws.crop_seed), [recipe.input_size] * 2
        )
    image = tf.ensure_shape(decode_view(image_bytes, plan_fn), [recipe.input_size] * 2 + [3])
    return image, draws.flip, draws.rgb


def center_square(image_bytes: tf.Tensor, resize_size: int) -> tf.Tensor:
    """uint8 [R, R, 3]: the central resize_size square of the image resized to shorter side
    resize_size (the 10-crop views' source, and what the device path trains from)."""
    plan_fn = lambda shape: center_square_plan(shape, resize_size)
    return tf.ensure_shape(decode_view(image_bytes, plan_fn), [resize_size, resize_size, 3])


def ten_crops(square: tf.Tensor, crop_size: int) -> tf.Tensor:
    """uint8 [10, S, S, 3] from a [R, R, 3] square: the corners and center (ten_crop_offsets),
    then the same five flipped horizontally."""
    offsets = ten_crop_offsets(square.shape[0], crop_size)
    crops = [square[y : y + crop_size, x : x + crop_size] for y, x in offsets]
    return tf.stack(crops + [tf.reverse(c, axis=[1]) for c in crops])


def eval_views(image_bytes: tf.Tensor, recipe: Recipe) -> tf.Tensor:
    """The evaluation views of one image as uint8 [V, S, S, 3], V = recipe.eval_crops.

    1 view: the center crop, exactly torchvision's Resize(resize_size) + CenterCrop(input_size).
    10 views: `ten_crops` of the `center_square`.
    """
    size, square = recipe.input_size, recipe.resize_size
    if recipe.eval_crops == 1:
        plan_fn = lambda shape: center_crop_plan(shape, square, size)
        return tf.ensure_shape(decode_view(image_bytes, plan_fn), [size, size, 3])[None]
    return ten_crops(center_square(image_bytes, square), size)


def normalize_batch(
    images: tf.Tensor,
    recipe: Recipe,
    rgb_offsets: tf.Tensor | None = None,
    flips: tf.Tensor | None = None,
    mean_image: np.ndarray | None = None,
) -> tf.Tensor:
    """uint8 images [B, ..., 3] -> recipe.dtype, normalized; optionally flipped and lit first.

    `flips` (bool [B], 4-D images only) mirrors images horizontally; `rgb_offsets` [B, 3] adds
    each image's PCA lighting offset. "mean" then subtracts the ImageNet RGB mean on the 0-255
    scale (the paper's mean subtraction with the usual per-channel substitute); "mean_std" also
    divides by the RGB std (0-1 scale values); "mean_image" subtracts `mean_image` (float32
    [S, S, 3], the center crop of the training set's mean image) from every view, whatever its
    crop offset or flip, as the original code did (convdata.py: data_mean_crop).
    """
    extra_dims = len(images.shape) - 2  # broadcast over the spatial (and view) axes
    if recipe.normalization == "mean_image":
        if mean_image is None:
            raise ValueError("normalization 'mean_image' needs the mean image.")
        view_axes = [1] * (extra_dims - 2)  # [S, S, 3], or [1, S, S, 3] for [B, V, S, S, 3]
        shift = tf.constant(np.reshape(mean_image, view_axes + list(mean_image.shape)), tf.float32)
    else:
        shift = tf.constant(255.0 * imagenet_stats.RGB_MEAN)
        shift = tf.reshape(shift, [1] * (extra_dims + 1) + [3])
    if rgb_offsets is not None:
        shift = shift - tf.reshape(rgb_offsets, [-1] + [1] * extra_dims + [3])
    scale = tf.ones([3], tf.float32)
    if recipe.normalization == "mean_std":
        scale = tf.constant(1.0 / (255.0 * imagenet_stats.RGB_STD))
    if flips is None:
        flips = tf.zeros(tf.shape(images)[:1], tf.bool)
    fused = _fused_flip_shift_and_scale()
    return fused(images, flips, shift, scale, tf.dtypes.as_dtype(recipe.dtype))


@functools.cache  # one tf.function, made on first use (TensorFlow is imported lazily)
def _fused_flip_shift_and_scale():
    """(float(flip(images)) - shift) * scale as one fused XLA loop.

    On CPU TensorFlow's own broadcasting subtract costs about 0.3 ms per 227x227 image (more than
    half the decode of a 256 px JPEG), a per-image conditional flip about 0.05 ms; the fused loop
    does both for about a sixth of that.
    """
    return tf.function(_flip_shift_and_scale, jit_compile=True)


def _flip_shift_and_scale(images, flips, shift, scale, dtype: tf.DType) -> tf.Tensor:
    x = tf.cast(images, tf.float32)
    if len(images.shape) == 4:  # [B, H, W, 3]: mirror the W axis of the flipped images
        x = tf.where(tf.reshape(flips, [-1, 1, 1, 1]), tf.reverse(x, axis=[2]), x)
    return tf.cast((x - shift) * scale, dtype)


def resize_shorter_side(image_bytes: tf.Tensor, size: int) -> tf.Tensor:
    """Any encoded image -> uint8 [h, w, 3] with shorter side `size` (resized_shape's rule)."""

    def plan_fn(shape):
        resized = resized_shape(shape, size)
        return crop_of_resized(shape, resized, [0, 0], resized)

    return decode_view(image_bytes, plan_fn)


def reencode_resized(image_bytes: tf.Tensor, resize_size: int, quality: int = 90) -> tf.Tensor:
    """Any image -> JPEG bytes with its shorter side exactly `resize_size` (the pre-resize cache).

    The same resize as a direct crop (`resample`), so training from the cache differs from
    training from the originals only by the cache's JPEG re-encoding.
    """
    return tf.io.encode_jpeg(resize_shorter_side(image_bytes, resize_size), quality=quality)

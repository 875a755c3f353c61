"""Per-example image preprocessing in TensorFlow: decoding, the paper's crops, flips, PCA lighting.

Every random choice uses a `tf.random.stateless_*` op and an explicit seed, so an augmentation is a
pure function of (seed, epoch, example) and a resumed run reproduces it exactly. The settings
come as a `Recipe` (recipe.py). Images stay uint8
until a whole batch is normalized by one op (`normalize_batch`); per-example float work is slower.

Geometry (docs/PAPER.md, "Data and augmentation"): the paper rescales the shorter side to 256,
keeps the central 256x256 square and takes a random 227x227 (or 224) crop of it. `paper_window`
maps that crop back to a window of the ORIGINAL image, so only the window is decoded (fused
`tf.io.decode_and_crop_jpeg`) and then resized once to the crop size; an image already at 256
(the pre-resized cache) needs no resize at all. Images smaller than the crop are upscaled that way.
"""

import functools

import numpy as np
import tensorflow as tf

from alexnet_jax import imagenet_stats
from alexnet_jax.recipe import Recipe


def ten_crop_offsets(resize_size: int, crop_size: int) -> list[tuple[int, int]]:
    """(top, left) of the five 10-crop views in the resize_size square: top-left, top-right,
    bottom-left, bottom-right, center. Views 5..9 are the same five flipped horizontally."""
    m = resize_size - crop_size
    return [(0, 0), (0, m), (m, 0), (m, m), (m // 2, m // 2)]


def decode_window(image_bytes: tf.Tensor, window_fn) -> tf.Tensor:
    """Decodes the window `window_fn(shape)` = [top, left, height, width] of an encoded image.

    JPEGs (including grayscale and CMYK ones) take the fused decode-and-crop path that only decodes
    the window; anything else (PNG, GIF, BMP, WebP under any file name) is fully decoded by
    `tf.io.decode_image` and sliced. Returns uint8 [height, width, 3]. An undecodable file raises
    an InvalidArgumentError, which the pipeline turns into a skipped, counted example.
    """

    def from_jpeg():
        window = window_fn(tf.image.extract_jpeg_shape(image_bytes))
        return tf.io.decode_and_crop_jpeg(image_bytes, window, channels=3)

    def from_other():
        image = tf.io.decode_image(image_bytes, channels=3, expand_animations=False)
        window = window_fn(tf.shape(image))
        return tf.slice(
            image, tf.stack([window[0], window[1], 0]), tf.stack([window[2], window[3], 3])
        )

    image = tf.cond(tf.io.is_jpeg(image_bytes), from_jpeg, from_other)
    return tf.ensure_shape(image, [None, None, 3])


def paper_window(shape: tf.Tensor, offset: tf.Tensor, resize_size: int, crop_size: int):
    """Window of the original image equal to the paper's crop.

    The crop is: shorter side rescaled to `resize_size`, central `resize_size` square kept, then a
    `crop_size` square at `offset` = (top, left) inside that square. Returns int32 [4] =
    [top, left, size, size] in original pixels (size >= 1, inside the central square).
    """
    height, width = shape[0], shape[1]
    side = tf.minimum(height, width)
    scale = tf.cast(side, tf.float32) / resize_size
    size = tf.clip_by_value(tf.cast(tf.round(crop_size * scale), tf.int32), 1, side)
    scaled = tf.minimum(
        tf.cast(tf.round(tf.cast(offset, tf.float32) * scale), tf.int32), side - size
    )
    top = (height - side) // 2 + scaled[0]
    left = (width - side) // 2 + scaled[1]
    return tf.stack([top, left, size, size])


def center_square_window(shape: tf.Tensor) -> tf.Tensor:
    """Window [top, left, side, side] of the central square whose side is the shorter image side."""
    height, width = shape[0], shape[1]
    side = tf.minimum(height, width)
    return tf.stack([(height - side) // 2, (width - side) // 2, side, side])


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


def resize_to(image: tf.Tensor, size: int) -> tf.Tensor:
    """Bilinear resize of uint8 [h, w, 3] to uint8 [size, size, 3]; no work if already that size."""

    def resize():
        resized = tf.image.resize(image, [size, size], method="bilinear")
        return tf.cast(tf.clip_by_value(tf.round(resized), 0.0, 255.0), tf.uint8)

    shape = tf.shape(image)
    same = tf.logical_and(tf.equal(shape[0], size), tf.equal(shape[1], size))
    return tf.ensure_shape(tf.cond(same, lambda: image, resize), [size, size, 3])


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


def train_example(image_bytes: tf.Tensor, seed: tf.Tensor, recipe: Recipe):
    """One training view -> (uint8 [S, S, 3] crop, flip bool, lighting offset float32 [3]).

    `seed` (int64 [2]) determines every random choice. The flip and the lighting offset are
    applied to the whole batch by `normalize_batch` (one fused loop, cheaper than per image).
    """
    crop_seed, flip_seed, light_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 3))
    if recipe.train_crop == "paper":
        max_offset = recipe.resize_size - recipe.input_size
        offset = tf.random.stateless_uniform([2], crop_seed, 0, max_offset + 1, dtype=tf.int32)
        window_fn = lambda shape: paper_window(shape, offset, recipe.resize_size, recipe.input_size)
    else:
        window_fn = lambda shape: random_resized_window(shape, crop_seed)
    image = resize_to(decode_window(image_bytes, window_fn), recipe.input_size)
    flip = tf.constant(False)
    if recipe.random_flip:
        flip = tf.random.stateless_uniform([], flip_seed) < 0.5
    offset_rgb = tf.zeros([3], tf.float32)
    if recipe.pca_lighting_std > 0:
        offset_rgb = pca_lighting_offset(light_seed, recipe.pca_lighting_std)
    return image, flip, offset_rgb


def eval_views(image_bytes: tf.Tensor, recipe: Recipe) -> tf.Tensor:
    """The evaluation views of one image as uint8 [V, S, S, 3], V = recipe.eval_crops.

    1 view: the center crop (shorter side to resize_size, center crop input_size), decoded fused.
    10 views: the central square resized to resize_size x resize_size, then its top-left,
    top-right, bottom-left, bottom-right and center crops (ten_crop_offsets), then the same five
    flipped horizontally.
    """
    size, margin = recipe.input_size, recipe.resize_size - recipe.input_size
    if recipe.eval_crops == 1:
        offset = tf.constant([margin // 2, margin // 2], tf.int32)
        window_fn = lambda shape: paper_window(shape, offset, recipe.resize_size, size)
        return resize_to(decode_window(image_bytes, window_fn), size)[None]
    square = resize_to(decode_window(image_bytes, center_square_window), recipe.resize_size)
    crops = [
        square[y : y + size, x : x + size] for y, x in ten_crop_offsets(recipe.resize_size, size)
    ]
    return tf.stack(crops + [tf.reverse(c, axis=[1]) for c in crops])


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
    return _flip_shift_and_scale(images, flips, shift, scale, tf.dtypes.as_dtype(recipe.dtype))


@functools.partial(tf.function, jit_compile=True)
def _flip_shift_and_scale(images, flips, shift, scale, dtype: tf.DType) -> tf.Tensor:
    """(float(flip(images)) - shift) * scale as one fused XLA loop.

    On CPU TensorFlow's own broadcasting subtract costs about 0.3 ms per 227x227 image (more than
    half the decode of a 256 px JPEG), a per-image conditional flip about 0.05 ms; the fused loop
    does both for about a sixth of that.
    """
    x = tf.cast(images, tf.float32)
    if len(images.shape) == 4:  # [B, H, W, 3]: mirror the W axis of the flipped images
        x = tf.where(tf.reshape(flips, [-1, 1, 1, 1]), tf.reverse(x, axis=[2]), x)
    return tf.cast((x - shift) * scale, dtype)


def reencode_resized(image_bytes: tf.Tensor, resize_size: int, quality: int = 90) -> tf.Tensor:
    """Any image -> JPEG bytes with its shorter side exactly `resize_size` (the pre-resize cache).

    Antialiased (a one-time cost) so the cached image is as sharp as a direct resize.
    """
    image = tf.io.decode_image(image_bytes, channels=3, expand_animations=False)
    shape = tf.cast(tf.shape(image)[:2], tf.float32)
    scale = resize_size / tf.reduce_min(shape)
    new_shape = tf.maximum(tf.cast(tf.round(shape * scale), tf.int32), resize_size)
    resized = tf.image.resize(image, new_shape, method="bilinear", antialias=True)
    resized = tf.cast(tf.clip_by_value(tf.round(resized), 0.0, 255.0), tf.uint8)
    return tf.io.encode_jpeg(resized, quality=quality)

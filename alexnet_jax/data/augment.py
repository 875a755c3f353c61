"""The paper's training augmentation and the input normalization in JAX, inside the jitted steps.

With config.augment_on="device" the host ships uint8 pixels and the accelerator does the rest
(docs/PAPER.md, "Data and augmentation"); experiment.build puts `train_inputs` / `eval_inputs` in
front of the train and eval steps, so they run in the same program, on the same mesh, on the
batch as sharded over "data". The host's batches (input_pipeline):

    train  image uint8 [B, R, R, 3]  the central resize_size square of the image resized to
                                     shorter side R (196,608 bytes at R = 256, against 618,348
                                     for the host path's float32 227 crop)
           example_id uint32 [B, 2]  the example's stable id (a hash of its file name, as the host
                                     path seeds by), high and low words
           epoch int32 [B]           the epoch the example is drawn in
    eval   image uint8 [B, 1, S, S, 3] (the center view) or [B, R, R, 3] (the square the ten
           views are cut from)
           and label int32 [B], mask bool [B] for both.

Randomness: example i's key is fold_in(fold_in(fold_in(fold_in(key(seed), SALT), epoch), id_hi),
id_lo), split three ways for its crop, flip and lighting. It depends only on (seed, epoch, the
example's id), never on the device, the batch or the position in it: 1 or 8 devices, and a run
resumed mid-epoch, draw the same bits. The draws follow the host path's distributions (offsets
uniform in [0, R - S], flip with p = 1/2, lighting alphas N(0, std^2)), but are other numbers:
TensorFlow's Philox there, JAX's threefry here.

Same results as the host path: evaluation views are bit for bit the host path's (the same uint8
views, the same float32 arithmetic: (x - shift) * scale, then the cast); a training crop is cut
from the resampled square instead of resampled directly from the original, which differs from the
host path's crop at the same offset only where a resample rounds the other way (at most 1 grey
level; none from the 256 px cache, which is cut without resampling).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from alexnet_jax.data import imagenet_stats
from alexnet_jax.data.recipe import Recipe, ten_crop_offsets

SALT = 0xA06  # folded into key(seed) first: augmentation bits never equal initialization's


class Draws(NamedTuple):
    """One batch's random choices: crop (top, left) int32 [B, 2], flip bool [B], lighting
    offset float32 [B, 3] (0-255 scale, zero where there is no lighting)."""

    offset: jax.Array
    flip: jax.Array
    rgb: jax.Array


def example_keys(seed: int, example_id: jax.Array, epoch: jax.Array) -> jax.Array:
    """One key per example [B] from (seed, epoch [B], example_id uint32 [B, 2])."""
    base = jax.random.fold_in(jax.random.key(seed), SALT)

    def one(words, e):
        key = jax.random.fold_in(base, e)
        return jax.random.fold_in(jax.random.fold_in(key, words[0]), words[1])

    return jax.vmap(one)(example_id, epoch)


def pca_lighting_offset(key: jax.Array, std: float) -> jax.Array:
    """sum_i alpha_i lambda_i p_i with alpha_i ~ N(0, std^2), on the 0-255 scale: float32 [3]."""
    alphas = jax.random.normal(key, (3,), jnp.float32) * std
    weights = alphas * jnp.asarray(imagenet_stats.PCA_EIGVALS)
    return 255.0 * (weights @ jnp.asarray(imagenet_stats.PCA_EIGVECS))


def draw(recipe: Recipe, seed: int, example_id: jax.Array, epoch: jax.Array) -> Draws:
    """The crop offsets, flips and lighting offsets of a batch of examples (see Draws)."""
    margin = recipe.resize_size - recipe.input_size

    def one(key, e):
        crop_key, flip_key, light_key = jax.random.split(key, 3)
        offset = jax.random.randint(crop_key, (2,), 0, margin + 1, jnp.int32)
        flip = jnp.asarray(False)
        if recipe.random_flip:
            flip = jax.random.uniform(flip_key) < 0.5
        rgb = jnp.zeros([3], jnp.float32)
        if recipe.pca_lighting_std > 0:
            rgb = pca_lighting_offset(light_key, recipe.pca_lighting_std)
            if recipe.pca_lighting_stop_epoch > 0:  # the original run's lighting ended at 67
                rgb = jnp.where(e < recipe.pca_lighting_stop_epoch, rgb, 0.0)
        return offset, flip, rgb

    return Draws(*jax.vmap(one)(example_keys(seed, example_id, epoch), epoch))


def crop_and_flip(squares: jax.Array, offset: jax.Array, flip: jax.Array, size: int) -> jax.Array:
    """uint8 [B, R, R, 3] -> [B, size, size, 3]: each square's window at `offset` (top, left),
    mirrored horizontally where `flip`."""

    def one(square, top_left, mirrored):
        crop = jax.lax.dynamic_slice(square, (top_left[0], top_left[1], 0), (size, size, 3))
        return jnp.where(mirrored, crop[:, ::-1], crop)

    return jax.vmap(one)(squares, offset, flip)


def ten_views(squares: jax.Array, recipe: Recipe) -> jax.Array:
    """uint8 [B, R, R, 3] -> [B, 10, S, S, 3]: the paper's ten test patches, in
    preprocessing.eval_views' order (corners and center by ten_crop_offsets, then mirrored)."""
    size = recipe.input_size
    crops = [
        squares[:, y : y + size, x : x + size]
        for y, x in ten_crop_offsets(recipe.resize_size, size)
    ]
    return jnp.stack(crops + [c[:, :, ::-1] for c in crops], axis=1)


def normalize(
    images: jax.Array,
    recipe: Recipe,
    rgb_offsets: jax.Array | None = None,
    mean_image: np.ndarray | None = None,
) -> jax.Array:
    """uint8 [B, ..., 3] -> recipe.dtype: preprocessing.normalize_batch's arithmetic exactly.

    shift = the RGB mean on the 0-255 scale ("mean", "mean_std") or `mean_image` (float32 [S, S, 3],
    "mean_image"), minus each image's lighting offset; then (float32(x) - shift) * scale, scale
    = 1 / (255 std) for "mean_std", else 1; then the cast.
    """
    extra_dims = images.ndim - 2  # the spatial (and view) axes
    if recipe.normalization == "mean_image":
        if mean_image is None:
            raise ValueError("normalization 'mean_image' needs the mean image.")
        shift = jnp.asarray(np.asarray(mean_image, np.float32))  # broadcasts over B (and views)
    else:
        shift = jnp.asarray(255.0 * imagenet_stats.RGB_MEAN).reshape([1] * (extra_dims + 1) + [3])
    if rgb_offsets is not None:
        shift = shift - rgb_offsets.reshape([-1] + [1] * extra_dims + [3])
    x = images.astype(jnp.float32) - shift
    if recipe.normalization == "mean_std":
        x = x * jnp.asarray(1.0 / (255.0 * imagenet_stats.RGB_STD))
    return x.astype(jnp.dtype(recipe.dtype))


def train_inputs(
    batch: dict[str, jax.Array], *, recipe: Recipe, seed: int, mean_image: Any = None
) -> dict[str, jax.Array]:
    """A host train batch of uint8 squares -> the model's batch: random crop, flip, lighting,
    normalization, cast (image [B, S, S, 3] recipe.dtype, label, mask)."""
    draws = draw(recipe, seed, batch["example_id"], batch["epoch"])
    crops = crop_and_flip(batch["image"], draws.offset, draws.flip, recipe.input_size)
    image = normalize(crops, recipe, draws.rgb, mean_image)  # (B, S, S, 3)
    return {"image": image, "label": batch["label"], "mask": batch["mask"]}


def eval_inputs(
    batch: dict[str, jax.Array], *, recipe: Recipe, mean_image: Any = None
) -> dict[str, jax.Array]:
    """A host eval batch of uint8 views (or squares, for 10 views) -> the model's batch of
    normalized views (image [B, V, S, S, 3] recipe.dtype, label, mask)."""
    views = batch["image"]
    if recipe.eval_crops == 10:
        views = ten_views(views, recipe)  # (B, 10, S, S, 3)
    image = normalize(views, recipe, mean_image=mean_image)
    return {"image": image, "label": batch["label"], "mask": batch["mask"]}

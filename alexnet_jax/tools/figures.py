"""The paper's Figures 3 and 4 from a run's latest checkpoint, as PNG files.

    python -m alexnet_jax.tools.figures --workdir=runs/default      # -> runs/default/figures/

Figure 3 (`figure3_conv1_kernels.png`): the conv1 kernels (11x11x3) as a grid of colour patches,
each min-max normalised on its own; 96 kernels make an 8x12 grid (torchvision's 64: 8x8), and for
the two-tower `paper` variant the towers' 48 kernels are two 8x6 blocks side by side (the paper:
one tower learns mostly colour-agnostic kernels, the other colour-specific ones).

Figure 4 (`figure4_fc7_neighbours.png`): for a few validation images (first column), the training
images whose fc7 activations (the last 4096-d hidden layer, after its ReLU, eval mode) are nearest
in Euclidean distance. The training images are the un-augmented eval view (the input pipeline's
center crop applied to the training split); their features are computed in batches on the device
and only a running top-k per query is kept, so the whole ImageNet training set fits.

Each PNG carries a caption band saying what it shows: the run, its step and its data, so that a
figure of a short run on small data is not mistaken for the paper's (a net trained for 90 epochs
on ImageNet).
"""

from __future__ import annotations

import sys

if not __package__:  # run by its path, where Python cannot import the package
    sys.exit("error: run it as a module, from the repository: python -m alexnet_jax.tools.figures")

import functools
import io
import math
import os
from collections.abc import Iterable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import app, flags
from PIL import Image, ImageDraw, ImageFont

from alexnet_jax.core import console, errors
from alexnet_jax.core.errors import UserError, reported_as_exit
from alexnet_jax.data import imagenet_stats
from alexnet_jax.model.models import create_model
from alexnet_jax.runs import rundir
from alexnet_jax.tools import load
from alexnet_jax.train import sharding

FIGURE3 = "figure3_conv1_kernels.png"
FIGURE4 = "figure4_fc7_neighbours.png"
GRID_ROWS = 8  # kernels per column of Figure 3
PATCH_SCALE = 5  # each 11x11 kernel is drawn as 55x55 pixels
GAP = 2  # pixels between patches (Figure 3) ...
TOWER_GAP = 12  # ... and between the two towers' blocks
CELL_GAP = 4  # pixels between images in Figure 4 ...
QUERY_GAP = 12  # ... plus this after the query column
CAPTION_SIZE = 12  # caption font size in pixels (DejaVu Sans, shipped with matplotlib)
CAPTION_LINE = 16  # pixels per caption line
DEFAULT_OUT = "figures"  # the PNGs' directory inside the run, unless --out says otherwise

# ---- Figure 3 ---------------------------------------------------------------------------------


def _kernel_block(kernels: np.ndarray, rows: int) -> np.ndarray:
    """uint8 image of kernels [N, k, k, 3] (already in [0, 1]) in a rows x ceil(N / rows) grid."""
    n, k = kernels.shape[0], kernels.shape[1]
    cols, p = math.ceil(n / rows), k * PATCH_SCALE
    block = np.full((rows * (p + GAP) + GAP, cols * (p + GAP) + GAP, 3), 255, np.uint8)
    patches = np.repeat(np.repeat(kernels, PATCH_SCALE, axis=1), PATCH_SCALE, axis=2)
    for i, patch in enumerate(patches):
        y, x = GAP + (i // cols) * (p + GAP), GAP + (i % cols) * (p + GAP)
        block[y : y + p, x : x + p] = np.round(255 * patch).astype(np.uint8)
    return block


def conv1_kernel_image(kernel: np.ndarray, towers: int = 1) -> np.ndarray:
    """Figure 3 as uint8 [H, W, 3] from a conv1 kernel (k, k, 3, N) in HWIO layout.

    Each kernel is min-max normalised on its own; with `towers`=2 the first and second halves of
    the output channels (the paper's two GPUs) become two blocks side by side.
    """
    kernels = np.moveaxis(np.asarray(kernel, np.float32), -1, 0)  # (N, k, k, 3)
    low = kernels.min(axis=(1, 2, 3), keepdims=True)
    high = kernels.max(axis=(1, 2, 3), keepdims=True)
    kernels = (kernels - low) / np.maximum(high - low, 1e-12)
    blocks = [_kernel_block(tower, GRID_ROWS) for tower in np.split(kernels, towers)]
    spacer = np.full((blocks[0].shape[0], TOWER_GAP, 3), 255, np.uint8)
    parts = [blocks[0]]
    for block in blocks[1:]:
        parts += [spacer, block]
    return np.concatenate(parts, axis=1)


# ---- Figure 4: fc7 features and nearest neighbours --------------------------------------------


def make_fc7_fn(model: Any):
    """A jitted (params, images [B, S, S, 3]) -> the last hidden layer's activations, post-ReLU,
    eval mode: fc7 [B, 4096] of the AlexNets (the variant's `feature_layer`; cifar4's fc64).

    Flax's `capture_intermediates` records the output of that Dense layer; the ReLU that follows
    it in the model is applied here.
    """
    layer = model.feature_layer

    def fc7(params, images):
        _, state = model.apply(
            {"params": params},
            images,
            train=False,
            capture_intermediates=lambda mdl, method: mdl.name == layer and method == "__call__",
            mutable=["intermediates"],
        )
        return jax.nn.relu(state["intermediates"][layer]["__call__"][0].astype(jnp.float32))

    return jax.jit(fc7)


@functools.partial(jax.jit, static_argnames="k")
def _batch_top_k(queries: jax.Array, feats: jax.Array, mask: jax.Array, k: int):
    """(distances, indices) [Q, k'] of each query's nearest masked-in rows of feats [B, D]."""
    sq = (
        jnp.sum(queries**2, -1)[:, None] + jnp.sum(feats**2, -1)[None, :] - 2.0 * queries @ feats.T
    )  # (Q, B) squared Euclidean distances
    dist = jnp.sqrt(jnp.maximum(sq, 0.0))
    dist = jnp.where(mask[None, :], dist, jnp.inf)
    neg, idx = jax.lax.top_k(-dist, min(k, feats.shape[0]))
    return -neg, idx


def nearest_training_images(
    fc7_fn,
    params: Any,
    queries: np.ndarray,
    train_batches: Iterable[dict],
    k: int = 5,
    max_images: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """(distances [Q, k], images [Q, k, S, S, 3]) of each query image's k nearest training images.

    `train_batches` are eval-style batches ({"image": [B, 1, S, S, 3], "mask": [B]}); only a
    running top-k is kept on the host, so the split can be arbitrarily large. `max_images` > 0
    stops after that many training images. Missing neighbours (tiny splits) have distance inf.
    """
    query_feats = fc7_fn(params, queries)  # (Q, 4096)
    best_dist = np.full((len(queries), k), np.inf, np.float32)
    best_images = np.zeros((len(queries), k, *queries.shape[1:]), queries.dtype)
    seen = 0
    for batch in train_batches:
        images, mask = batch["image"][:, 0], np.asarray(batch["mask"], bool)  # (B, S, S, 3)
        if max_images:
            mask = mask & (seen + np.arange(len(mask)) < max_images)
        dist, idx = jax.device_get(_batch_top_k(query_feats, fc7_fn(params, images), mask, k=k))
        cand_dist = np.concatenate([best_dist, dist], axis=1)  # (Q, k + k')
        cand_images = np.concatenate([best_images, images[idx]], axis=1)
        order = np.argsort(cand_dist, axis=1, kind="stable")[:, :k]
        best_dist = np.take_along_axis(cand_dist, order, axis=1)
        best_images = cand_images[np.arange(len(queries))[:, None], order]
        seen += len(mask)
        if max_images and seen >= max_images:
            break
    return best_dist, best_images


def select_queries(eval_batches: Iterable[dict], num: int) -> np.ndarray:
    """The first `num` validation images [num, S, S, 3], preferring one per class."""
    chosen, spare, labels = [], [], set()
    for batch in eval_batches:
        for image, label, real in zip(
            batch["image"][:, 0], batch["label"], batch["mask"], strict=True
        ):
            if not real:
                continue
            (spare if int(label) in labels else chosen).append(image)
            labels.add(int(label))
        if len(chosen) >= num:
            break
    picked = (chosen + spare)[:num]
    if not picked:
        raise UserError("The evaluation split has no decodable images to use as queries.")
    return np.stack(picked)


def to_display(
    images: np.ndarray, normalization: str, mean_image: np.ndarray | None = None
) -> np.ndarray:
    """Model inputs (float, normalized as by the pipeline) back to uint8 RGB; "mean_image"
    needs the mean crop that was subtracted (input_pipeline.load_mean_image)."""
    x = np.asarray(images, np.float32)
    if normalization == "mean_std":
        x = x * (255.0 * imagenet_stats.RGB_STD)
    x = x + (mean_image if normalization == "mean_image" else 255.0 * imagenet_stats.RGB_MEAN)
    return np.clip(np.round(x), 0, 255).astype(np.uint8)


def neighbours_image(queries: np.ndarray, neighbours: np.ndarray, dist: np.ndarray) -> np.ndarray:
    """Figure 4 as uint8: one row per query, the query then its neighbours (nearest first).

    queries uint8 [Q, S, S, 3], neighbours uint8 [Q, k, S, S, 3]; slots with distance inf stay
    white. Size: height CELL_GAP + Q (S + CELL_GAP), width CELL_GAP + (k + 1)(S + CELL_GAP) +
    QUERY_GAP.
    """
    q, k, s = neighbours.shape[0], neighbours.shape[1], queries.shape[1]
    step = s + CELL_GAP
    canvas = np.full((CELL_GAP + q * step, CELL_GAP + (k + 1) * step + QUERY_GAP, 3), 255, np.uint8)
    for row in range(q):
        y = CELL_GAP + row * step
        canvas[y : y + s, CELL_GAP : CELL_GAP + s] = queries[row]
        for col in range(k):
            if np.isfinite(dist[row, col]):
                x = CELL_GAP + (col + 1) * step + QUERY_GAP
                canvas[y : y + s, x : x + s] = neighbours[row, col]
    return canvas


# ---- Putting it together ----------------------------------------------------------------------


def caption_font() -> ImageFont.FreeTypeFont:
    """DejaVu Sans, which matplotlib ships: Pillow's default bitmap font runs words together."""
    import matplotlib

    path = os.path.join(matplotlib.get_data_path(), "fonts", "ttf", "DejaVuSans.ttf")
    return ImageFont.truetype(path, CAPTION_SIZE)


def wrap_to_width(text: str, font: ImageFont.FreeTypeFont, width: float) -> list[str]:
    """`text`'s words in lines no wider than `width` pixels in `font` (a longer word alone)."""
    lines: list[str] = []
    for word in text.split():
        if lines and font.getlength(f"{lines[-1]} {word}") <= width:
            lines[-1] = f"{lines[-1]} {word}"
        else:
            lines.append(word)
    return lines


def with_caption(pixels: np.ndarray, caption: str) -> np.ndarray:
    """`pixels` with a white band below holding `caption` in black, wrapped to the width."""
    width, font = pixels.shape[1], caption_font()
    lines = wrap_to_width(caption, font, width - 2 * GAP)
    band = Image.new("RGB", (width, 2 * GAP + CAPTION_LINE * len(lines)), "white")
    draw = ImageDraw.Draw(band)
    for i, line in enumerate(lines):
        draw.text((GAP, GAP + i * CAPTION_LINE), line, fill="black", font=font)
    return np.concatenate([pixels, np.asarray(band)], axis=0)


def _trained_on(config: Any, step: int) -> str:
    note = ""
    if config.dataset != "imagenet2012":
        note = (
            " A short run on small data: the paper's figure shows a net trained for 90 epochs on"
            " ImageNet."
        )
    return f"{config.variant} net after {step} training steps on {config.dataset} data.{note}"


def save_png(pixels: np.ndarray, path: str) -> str:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    rundir.write_atomically(path, buffer.getvalue())  # an earlier figure stays whole
    return path


def write_figure3(params: Any, config: Any, out_dir: str, step: int) -> str:
    """Figure 3 of a model's params (trained `step` steps) into `out_dir`; returns the path."""
    towers = 2 if config.variant == "paper" else 1
    kernel = np.asarray(params["conv1"]["kernel"])
    pixels = conv1_kernel_image(kernel, towers)
    caption = f"Figure 3 layout: the {kernel.shape[-1]} conv1 kernels of the " + _trained_on(
        config, step
    )
    return save_png(with_caption(pixels, caption), os.path.join(out_dir, FIGURE3))


def _center_view_config(config: Any, split: str) -> ml_collections.ConfigDict:
    """A copy of the run's config whose eval iterator yields the single center view of `split`."""
    view = ml_collections.ConfigDict(config.to_dict())
    view.eval_split, view.eval_crops = split, 1
    return view


def write_figure4(
    params: Any,
    config: Any,
    out_dir: str,
    step: int,
    *,
    num_queries: int = 6,
    k: int = 5,
    max_train_images: int = 0,
    batch_size: int = 0,
) -> str:
    """Figure 4 (validation images and their fc7 nearest training images) into `out_dir`."""
    from alexnet_jax.data import input_pipeline

    batch_size = batch_size or int(config.eval_batch_size)
    val_config = _center_view_config(config, config.eval_split)
    train_config = _center_view_config(config, config.train_split)
    input_pipeline.prepare(val_config, training=False)  # reads both splits as eval views
    val = input_pipeline.create_eval_iterator(val_config, local_batch_size=batch_size)
    queries = select_queries(val, num_queries)  # (Q, S, S, 3)
    train = input_pipeline.create_eval_iterator(train_config, local_batch_size=batch_size)
    model = create_model(config)
    fc7_fn = make_fc7_fn(model)
    dist, neighbours = nearest_training_images(fc7_fn, params, queries, train, k, max_train_images)
    norm, mean = config.normalization, input_pipeline.load_mean_image(config)
    pixels = neighbours_image(
        to_display(queries, norm, mean), to_display(neighbours, norm, mean), dist
    )
    caption = (
        f"Figure 4 layout: {len(queries)} {config.eval_split} images (left) and the {k} "
        f"{config.train_split} images nearest to each in {model.feature_layer} activations, "
        "for the " + _trained_on(config, step)
    )
    return save_png(with_caption(pixels, caption), os.path.join(out_dir, FIGURE4))


MAX_NEIGHBOURS = 50  # Figure 4's row: the query and this many training images


def check_options(
    out_dir: str, num_queries: int = 6, k: int = 5, max_train_images: int = 0, batch_size: int = 0
) -> None:
    """One UserError for an option that cannot work (named by its flag), before anything is
    loaded: an output path that is a file (or lies under one), counts out of range."""
    place = os.path.abspath(out_dir)
    while not os.path.exists(place):  # the nearest existing ancestor must be a directory
        place = os.path.dirname(place)
    if not os.path.isdir(place):
        what = "is a file" if place == os.path.abspath(out_dir) else f"lies under the file {place}"
        raise UserError(f"--out={out_dir} {what}: --out must be a directory for the PNG files.")
    for flag, value, low in (
        ("num_queries", num_queries, 1),
        ("neighbours", k, 1),
        ("max_train_images", max_train_images, 0),
        ("batch_size", batch_size, 0),
    ):
        if value < low:
            raise UserError(f"--{flag} must be an integer >= {low}, got {value}.")
    if k > MAX_NEIGHBOURS:  # (1000: a 231,247-pixel-wide PNG, mostly blank: pass 19, #30)
        raise UserError(
            f"--neighbours={k}: at most {MAX_NEIGHBOURS} (each is one more image in every row of "
            "Figure 4; the paper shows 6)."
        )
    if 0 < max_train_images < k:
        raise UserError(
            f"--neighbours={k} needs at least as many training images: --max_train_images="
            f"{max_train_images} (0: all)."
        )


def make_figures(workdir: str, out_dir: str = "", **figure4_options: Any) -> list[str]:
    """Figures 3 and 4 of the latest checkpoint in `workdir`, written to `out_dir` (default:
    `workdir/figures`)."""
    out_dir = out_dir or os.path.join(workdir, DEFAULT_OUT)
    rundir.refuse_inside_checkpoints(out_dir, "--out")  # (hostile pass 4, #56)
    check_options(out_dir, **figure4_options)
    config, params, step = load.load_params_and_step(workdir, sharding.single_device_mesh())
    rundir.check_data_mean_image(workdir, config)  # (figure 4 undoes it: pass 26, #15-#16)
    errors.make_directory(out_dir, "--out")  # once the run loaded: a wrong --workdir makes none
    return [
        write_figure3(params, config, out_dir, step),
        write_figure4(params, config, out_dir, step, **figure4_options),
    ]


# ---- Command line -----------------------------------------------------------------------------


def define_flags() -> None:
    """The command line's flags; defined only when run as a program, so importing stays free."""
    flags.DEFINE_string("workdir", None, "The training run to draw.", required=True)
    flags.DEFINE_string("out", "", "Directory for the PNG files (default: <workdir>/figures).")
    flags.DEFINE_integer("num_queries", 6, "Figure 4: validation images (rows).")
    flags.DEFINE_integer("neighbours", 5, "Figure 4: nearest training images per row.")
    flags.DEFINE_integer(
        "max_train_images", 0, "Figure 4: search only the first N training images (0: all)."
    )
    flags.DEFINE_integer("batch_size", 0, "Images per device call (0: the run's eval batch).")


def main(argv: Sequence[str]) -> None:
    FLAGS = flags.FLAGS
    from alexnet_jax.core import runtime

    runtime.quiet_native_logs()
    runtime.quiet_library_logs()
    with reported_as_exit():
        if len(argv) > 1:  # (absl's UsageError printed the whole docstring, and exited 1)
            raise UserError(f"unexpected arguments {argv[1:]}: figures takes only flags.")
        runtime.check_environment()
        runtime.start_backend()
        runtime.load_tensorflow()
        paths = make_figures(
            FLAGS.workdir,
            FLAGS.out,
            num_queries=FLAGS.num_queries,
            k=FLAGS.neighbours,
            max_train_images=FLAGS.max_train_images,
            batch_size=FLAGS.batch_size,
        )
    for path in paths:
        console.out(f"wrote {path}")


if __name__ == "__main__":
    define_flags()
    app.run(main, flags_parser=errors.parse_flags)

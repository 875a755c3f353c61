"""Top-5 predictions for image files, from a training run or from imported PyTorch weights.

    python -m alexnet_jax.predict --workdir=runs/default photo.jpg scan.png
    python -m alexnet_jax.predict --weights=model.pth photo.jpg  # from alexnet_jax.export
    python -m alexnet_jax.predict --weights=alexnet-owt-7be5be79.pth cat.jpg  # torchvision's

Each image (JPEG/PNG/anything Pillow reads, any size, any mode: RGB, L, CMYK, RGBA, P, 16-bit) is
preprocessed like the evaluation pipeline's center view (shorter side resized to
`config.resize_size`, center crop `config.input_size`, the pipeline's normalization), the images are
run in fixed-size batches on the default JAX device, and the softmax's top 5 are reported with
class names: ImageNet lemmas for 1000-class models, the drawn shapes for the miniature dataset,
folder names for image folders, else the class index.

A weights file written by alexnet_jax.export records its conventions (variant, input and resize
size, normalization, LRN convention, class names: weights_io.read_conventions), and `--weights`
preprocesses and runs the model by them, so it predicts what `--workdir` of the same run does. A
file that records none (torchvision's, any PyTorch state dict) gets PyTorch's conventions
(`imported_weights_config`): mean/std normalization, shorter side 256, alpha / n LRN, the
variant's published input size, `--variant` (default torchvision).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import app, flags
from PIL import Image

from alexnet_jax import imagenet_classes, imagenet_stats, miniature, rundir, runtime, weights_io
from alexnet_jax.errors import DataError, UserError, reported_as_exit
from alexnet_jax.models import VARIANTS, AlexNet, create_model, default_input_size, model_fields
from alexnet_jax.recipe import Recipe


class Prediction(NamedTuple):
    """One of an image's top classes: label index, synset (or None), readable name, probability."""

    index: int
    synset: str | None
    name: str
    prob: float


# ---- Preprocessing ----------------------------------------------------------------------------


def _to_rgb(image: Image.Image) -> Image.Image:
    """RGB view of any Pillow mode; transparency is composited over white, 16-bit is rescaled."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):  # 16/32-bit grayscale: scale to 8 bits
        pixels = np.asarray(image, np.float32)
        scale = 255.0 / max(float(pixels.max()), 255.0) if image.mode == "I" else 1.0 / 257.0
        image = Image.fromarray(np.clip(pixels * scale, 0, 255).astype(np.uint8))
    elif image.mode == "F":
        image = Image.fromarray(np.clip(np.asarray(image), 0, 255).astype(np.uint8))
    has_alpha = image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info
    if has_alpha:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def center_crop_geometry(height: int, width: int, resize_size: int, crop_size: int):
    """((resized height, width), (top, left)) of torchvision's Resize(resize_size) +
    CenterCrop(crop_size), as `preprocessing.center_crop_plan`: the longer side becomes
    floor(resize_size * long / short), the offsets round((resized - crop_size) / 2)."""
    short = min(height, width)
    resized = (resize_size * height // short, resize_size * width // short)
    return resized, tuple(round((r - crop_size) / 2.0) for r in resized)


def _triangle_weights(in_size: int, out_size: int, scale, translation: float) -> np.ndarray:
    """float32 [out_size, in_size] weights of TensorFlow's ScaleAndTranslate on one axis with
    the antialiased triangle kernel (`preprocessing.resample`), in its float32 arithmetic."""
    inv_scale = np.float32(1.0 / float(scale))
    kernel_scale = max(inv_scale, np.float32(1.0))
    sample = (np.arange(out_size, dtype=np.float32) + np.float32(0.5)) * inv_scale
    sample = sample + (-inv_scale * np.float32(translation))
    position = np.arange(in_size, dtype=np.float32)[None] + np.float32(0.5) - sample[:, None]
    weights = np.maximum(np.float32(0.0), 1 - np.abs(position) * (np.float32(1.0) / kernel_scale))
    return weights / weights.sum(axis=1, keepdims=True)


def resize_center_crop(pixels: np.ndarray, resize_size: int, crop_size: int) -> np.ndarray:
    """uint8 [h, w, 3] -> uint8 [crop_size, crop_size, 3]: the shorter side resized to
    resize_size with antialiased bilinear filtering, then the center crop (the pipeline's
    single eval view, torchvision's Resize + CenterCrop). Only the rows and columns that the
    crop's kernels reach enter the matrix products."""
    x = pixels.astype(np.float32)
    resized, top_left = center_crop_geometry(*x.shape[:2], resize_size, crop_size)
    for axis in (0, 1):  # rows, then columns
        scale = np.float32(resized[axis]) / np.float32(x.shape[axis])
        weights = _triangle_weights(x.shape[axis], crop_size, scale, -top_left[axis])
        used = np.flatnonzero(weights.any(axis=0))
        used = np.arange(used[0], used[-1] + 1)
        x = np.tensordot(weights[:, used], np.take(x, used, axis), axes=(1, axis))
        x = np.moveaxis(x, 0, axis)
    return np.clip(np.round(x), 0, 255).astype(np.uint8)


def normalize(
    pixels: np.ndarray, normalization: str, mean_image: np.ndarray | None = None
) -> np.ndarray:
    """uint8 RGB -> float32 model input, as `preprocessing.normalize_batch` (no lighting offset).

    "mean": minus the ImageNet mean on the 0-255 scale; "mean_std": also divided by 255 * std;
    "mean_image": minus the center crop of `mean_image` (a run's, rundir.read_mean_image).
    """
    if normalization == "mean_image":
        if mean_image is None:
            raise UserError(
                "This model subtracts its training set's mean image (normalization='mean_image'): "
                "pass mean_image=rundir.read_mean_image(workdir) (predict --workdir does)."
            )
        size = pixels.shape[-2]
        top, left = (mean_image.shape[0] - size) // 2, (mean_image.shape[1] - size) // 2
        crop = mean_image[top : top + size, left : left + size]
        return pixels.astype(np.float32) - crop.astype(np.float32)
    x = pixels.astype(np.float32) - np.float32(255.0) * imagenet_stats.RGB_MEAN
    if normalization == "mean_std":
        x = x * (np.float32(1.0) / (np.float32(255.0) * imagenet_stats.RGB_STD))
    return x


def preprocess_image(
    image: Image.Image, config: Any, mean_image: np.ndarray | None = None
) -> np.ndarray:
    """(input_size, input_size, 3) float32 model input from a PIL image: the eval center view.

    The input pipeline's single-view evaluation (preprocessing.eval_views, normalize_batch) in
    NumPy: shorter side resized to resize_size (antialiased bilinear), center crop input_size,
    then normalized.
    """
    pixels = np.asarray(_to_rgb(image))  # (h, w, 3) uint8
    crop = resize_center_crop(pixels, config.resize_size, config.input_size)
    return normalize(crop, config.normalization, mean_image)


def load_image(path: str, config: Any, mean_image: np.ndarray | None = None) -> np.ndarray:
    """Reads and preprocesses one image file; unreadable files raise DataError naming the path."""
    try:
        with Image.open(path) as image:
            image.load()
            return preprocess_image(image, config, mean_image)
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise DataError(f"Cannot read image {path}: {e}") from e


# ---- Class names ------------------------------------------------------------------------------


def _image_folder_classes(config: Any) -> list[str] | None:
    """Sorted class folder names of an image_folder dataset, when they match the model."""
    train_dir = os.path.join(config.get("image_folder", ""), "train")  # as input_pipeline
    if not os.path.isdir(train_dir):
        return None
    folders = sorted(e.name for e in os.scandir(train_dir) if e.is_dir())
    return folders if len(folders) == config.num_classes else None


def known_class_names(config: Any) -> list[tuple[str | None, str]] | None:
    """(synset or None, readable name) for every output class, or None when only indices are
    known.

    Names recorded in a weights file (`config.class_names`, from `weights_config`) come first.
    1000 classes: the ImageNet table. The miniature dataset's classes are the first synsets of the
    same order, each drawn as one shape. Image folders: the folder names.
    """
    n = config.num_classes
    if "class_names" in config:  # a weights file's conventions: its names, or none
        names, synsets = config.class_names, config.get("class_synsets")
        if not names:
            return None
        return [(synsets[i] if synsets else None, name) for i, name in enumerate(names)]
    dataset = config.get("dataset", "")
    if dataset == "image_folder" and (folders := _image_folder_classes(config)):
        return [(None, folder) for folder in folders]
    if n == imagenet_classes.NUM_CLASSES and dataset in ("imagenet2012", "", None):
        return [(c.synset, c.lemmas) for c in imagenet_classes.load_classes()]
    if dataset == "miniature":
        table, shapes = imagenet_classes.load_classes(), miniature.SHAPES
        return [(table[i].synset, f"{shapes[i % len(shapes)]} (miniature)") for i in range(n)]
    return None


def class_names(config: Any) -> list[tuple[str | None, str]]:
    """(synset or None, readable name) for every output class of the model `config` describes:
    `known_class_names`, else "class <index>"."""
    return known_class_names(config) or [(None, f"class {i}") for i in range(config.num_classes)]


# ---- Inference --------------------------------------------------------------------------------


# The variant of a weights file that records no conventions when --variant is not given.
DEFAULT_IMPORT_VARIANT = "torchvision"


def weights_config(conventions: Any) -> ml_collections.ConfigDict:
    """The model and preprocessing fields of weights with these conventions
    (weights_io.CONVENTION_FIELDS, the forward options recorded or their defaults; CLASS_FIELDS
    kept when present, else no class names)."""
    recorded = weights_io.with_option_defaults(conventions)
    model = AlexNet(
        conventions["variant"],
        num_classes=conventions["num_classes"],
        input_size=conventions["input_size"],
        lrn_convention=conventions["lrn_convention"],
        pool_impl="reduce_window",
        **{field: recorded[field] for field in weights_io.OPTION_DEFAULTS},
    )
    recipe = Recipe(
        input_size=model.input_size,
        resize_size=conventions["resize_size"],
        normalization=conventions["normalization"],
    )
    classes = {field: conventions.get(field) for field in weights_io.CLASS_FIELDS}
    return ml_collections.ConfigDict(
        {"dataset": "", **model_fields(model), **recipe.config_fields(), **classes}
    )


def imported_weights_config(variant: str, num_classes: int = 1000) -> ml_collections.ConfigDict:
    """The model and preprocessing fields for PyTorch-trained weights of `variant` (a file that
    records no conventions).

    PyTorch models take mean/std-normalized 224 (torchvision) crops of 256-resized images, and
    torch.nn.LocalResponseNorm divides alpha by n (convert.py), hence "cuda_convnet". Class names:
    the ImageNet table for 1000 classes.
    """
    config = weights_config(
        {
            "variant": variant,
            "num_classes": num_classes,
            "input_size": default_input_size(variant),
            **weights_io.PYTORCH_CONVENTIONS,
        }
    )
    del config["class_names"], config["class_synsets"]  # none recorded: the dataset's
    config.dataset = "imagenet2012" if num_classes == 1000 else ""
    return config


def _top_k(probs: np.ndarray, names: Sequence[tuple[str | None, str]], k: int) -> list:
    order = np.argsort(-probs, kind="stable")[:k]
    return [Prediction(int(i), names[i][0], names[i][1], float(probs[i])) for i in order]


def predict(
    params: Any,
    config: Any,
    images: Sequence[str],
    *,
    batch_size: int = 32,
    top_k: int = 5,
    mean_image: np.ndarray | None = None,
) -> list[list[Prediction]]:
    """The top-k (index, synset or None, name, probability) of each image file, most likely first.

    Args:
      params: the model's Flax params ({"conv1": {...}, ...}).
      config: a run's config (rundir.load_config) or `imported_weights_config(...)`.
      images: image file paths.
      batch_size: images per device call; the last batch is padded, so one compilation serves all.
      top_k: how many classes to return per image (at most the number of classes).
      mean_image: for a run with normalization "mean_image", its rundir.read_mean_image.
    """
    model = create_model(config)
    apply = jax.jit(lambda p, x: jax.nn.softmax(model.apply({"params": p}, x, train=False)))
    params = jax.device_put(params)
    names = class_names(config)
    dtype = jnp.dtype(config.get("input_dtype", "float32"))
    batch_size = max(1, min(batch_size, len(images)))
    results = []
    for start in range(0, len(images), batch_size):
        paths = images[start : start + batch_size]
        batch = np.stack([load_image(path, config, mean_image) for path in paths])  # (b,S,S,3)
        padded = np.zeros((batch_size, *batch.shape[1:]), batch.dtype)
        padded[: len(paths)] = batch
        probs = np.asarray(apply(params, jnp.asarray(padded, dtype)))[: len(paths)]
        results.extend(_top_k(p, names, min(top_k, config.num_classes)) for p in probs)
    return results


# ---- Command line -----------------------------------------------------------------------------


def define_flags() -> None:
    """The command line's flags; defined only when run as a program, so importing stays free."""
    flags.DEFINE_string("workdir", None, "A training run: its config and latest checkpoint.")
    flags.DEFINE_string(
        "weights", None, "Instead of --workdir: a PyTorch .pth/.safetensors state dict or a .npz."
    )
    flags.DEFINE_enum(
        "variant",
        None,
        list(VARIANTS),
        "Variant of a --weights file that does not record it (default: "
        f"{DEFAULT_IMPORT_VARIANT}); a file exported here records its own.",
    )
    flags.DEFINE_integer("batch_size", 32, "Images per device call.")
    flags.DEFINE_integer("top_k", 5, "Classes to print per image.")


def _check_variant_flag(variant: str | None, actual: str, source: str) -> None:
    if variant and variant != actual:
        raise UserError(
            f"--variant={variant} contradicts {source}, which is an AlexNet of variant "
            f"{actual!r}: leave --variant out (it is only needed for files that do not record "
            "their variant) or give the right file."
        )


def load_weights_file(path: str, variant: str | None = None) -> tuple[Any, Any]:
    """(config, params) from a weights file, run by the conventions it records (`variant`, if
    given, must agree with them); a file that records none: `imported_weights_config` of
    `variant` (default DEFAULT_IMPORT_VARIANT)."""
    conventions = weights_io.read_conventions(path)
    if conventions is None:
        variant = variant or DEFAULT_IMPORT_VARIANT
        params = weights_io.load_weights(path, variant)
        return imported_weights_config(variant, int(params["fc8"]["bias"].shape[0])), params
    _check_variant_flag(variant, conventions["variant"], path)
    config = weights_config(conventions)
    params = weights_io.load_weights(path, config.variant, config.num_classes, config.width)
    return config, params


def load_model(
    workdir: str | None, weights: str | None, variant: str | None = None
) -> tuple[Any, Any]:
    """(config, params) from a run directory or from a weights file (`load_weights_file`)."""
    if bool(workdir) == bool(weights):
        raise UserError("Give exactly one of --workdir (a training run) or --weights (a file).")
    if weights:
        return load_weights_file(weights, variant)
    config, params = rundir.load_run(workdir)
    _check_variant_flag(variant, config.variant, f"the run in {workdir}")
    return config, params


def format_predictions(path: str, predictions: Sequence[Prediction]) -> str:
    """Lines like `  1.  87.12%  n02123045  tabby, tabby cat` under the image path."""
    lines = [path]
    for rank, p in enumerate(predictions, start=1):
        lines.append(f"  {rank}. {100 * p.prob:6.2f}%  {p.synset or '-':<10}  {p.name}")
    return "\n".join(lines)


def main(argv: Sequence[str]) -> None:
    FLAGS = flags.FLAGS
    images = list(argv[1:])
    if not images:
        raise app.UsageError("Give one or more image files after the flags.")
    runtime.quiet_native_logs()
    runtime.quiet_library_logs()
    with reported_as_exit():
        missing = [path for path in images if not os.path.isfile(path)]
        if missing:  # before the model is loaded
            raise DataError(f"No such image file(s): {', '.join(missing)}")
        config, params = load_model(FLAGS.workdir, FLAGS.weights, FLAGS.variant)
        mean_image = None
        if FLAGS.workdir and config.normalization == "mean_image":
            mean_image = rundir.read_mean_image(FLAGS.workdir)
        results = predict(
            params,
            config,
            images,
            batch_size=FLAGS.batch_size,
            top_k=FLAGS.top_k,
            mean_image=mean_image,
        )
    print(f"# {jax.devices()[0].platform} device, variant {config.variant}")
    for path, predictions in zip(images, results, strict=True):
        print(format_predictions(path, predictions))


if __name__ == "__main__":
    define_flags()
    app.run(main)

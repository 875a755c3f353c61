"""Top-5 predictions for image files, from a training run or from imported PyTorch weights.

    python -m alexnet_jax.tools.predict --workdir=runs/default photo.jpg scan.png
    python -m alexnet_jax.tools.predict --weights=model.pth photo.jpg  # written by export
    python -m alexnet_jax.tools.predict --weights=alexnet-owt-7be5be79.pth cat.jpg  # torchvision's

Each image (JPEG/PNG/anything Pillow reads, any size, any mode: RGB, L, CMYK, RGBA, P, 16-bit) is
preprocessed like the evaluation pipeline's center view (shorter side resized to
`config.resize_size`, center crop `config.input_size`, the pipeline's normalization), the images are
run in fixed-size batches on the default JAX device, and the softmax's top 5 are reported with
class names: ImageNet lemmas for 1000-class models, the drawn shapes for the miniature dataset,
folder names for image folders, else the class index.

A weights file written by alexnet_jax.tools.export records its conventions (variant, input and
resize size, normalization, LRN convention, class names: weights_io.read_conventions), and
`--weights` preprocesses and runs the model by them, so it predicts what `--workdir` of the same
run does. A file that records none (torchvision's, any PyTorch state dict) gets PyTorch's
conventions (`weights_io.imported_weights_config`): mean/std normalization, shorter side 256,
alpha / n LRN, the variant's published input size, `--variant` (default torchvision).
"""

from __future__ import annotations

import sys

if not __package__:  # run by its path, where Python cannot import the package
    sys.exit("error: run it as a module, from the repository: python -m alexnet_jax.tools.predict")

import os
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from alexnet_jax.core import console, runtime
from alexnet_jax.core.errors import DataError, UserError, parse_flags, reported_as_exit
from alexnet_jax.data import image_files, imagenet_classes, miniature, objects
from alexnet_jax.interop import weights_io
from alexnet_jax.interop.convert import VARIANTS
from alexnet_jax.model.models import create_model
from alexnet_jax.runs import rundir
from alexnet_jax.tools import load


class Prediction(NamedTuple):
    """One of an image's top classes: label index, synset (or None), readable name, probability."""

    index: int
    synset: str | None
    name: str
    prob: float


# ---- Class names ------------------------------------------------------------------------------


def _image_folder_classes(config: Any) -> list[str] | None:
    """Sorted class folder names of an image_folder dataset, when they match the model: as the
    run recorded them at its start (tools/load.py), else as the folder holds them now."""
    recorded = config.get("class_folders")
    if recorded and len(recorded) == config.num_classes:
        return list(recorded)
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
    same order, each drawn as one shape (or, with miniature_task="objects", as one kind of object).
    Image folders: the folder names.
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
    if dataset == "miniature" and config.get("miniature_task", "shapes") == "objects":
        table = imagenet_classes.load_classes()
        return [(table[i].synset, objects.class_name(i)) for i in range(n)]
    if dataset == "miniature":
        table, shapes = imagenet_classes.load_classes(), miniature.SHAPES
        return [(table[i].synset, f"{shapes[i % len(shapes)]} (miniature)") for i in range(n)]
    return None


def class_names(config: Any) -> list[tuple[str | None, str]]:
    """(synset or None, readable name) for every output class of the model `config` describes:
    `known_class_names`, else "class <index>"."""
    return known_class_names(config) or [(None, f"class {i}") for i in range(config.num_classes)]


# ---- Inference --------------------------------------------------------------------------------


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
      config: a run's config (config_lib.load_config) or `weights_io.imported_weights_config(...)`.
      images: image file paths (or one path).
      batch_size: images per device call; the last batch is padded, so one compilation serves all.
      top_k: how many classes to return per image (at most the number of classes).
      mean_image: for a run with normalization "mean_image", its rundir.read_mean_image.
    """
    if isinstance(images, str | os.PathLike):  # one file (a str is no list of its letters)
        images = [images]
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise UserError(f"top_k must be an integer >= 1, got {top_k!r}.")
    model = create_model(config)
    apply = jax.jit(lambda p, x: jax.nn.softmax(model.apply({"params": p}, x, train=False)))
    params = jax.device_put(params)
    names = class_names(config)
    dtype = jnp.dtype(config.get("input_dtype", "float32"))
    batch_size = max(1, min(batch_size, len(images)))
    results = []
    for start in range(0, len(images), batch_size):
        paths = images[start : start + batch_size]
        batch = np.stack(
            [image_files.load_image(path, config, mean_image) for path in paths]
        )  # (b,S,S,3)
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
        f"{weights_io.DEFAULT_IMPORT_VARIANT}); a file exported here records its own.",
    )
    flags.DEFINE_integer("batch_size", 32, "Images per device call.", lower_bound=1)
    flags.DEFINE_integer("top_k", 5, "Classes to print per image.", lower_bound=1)


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
    `variant` (default weights_io.DEFAULT_IMPORT_VARIANT)."""
    conventions = weights_io.read_conventions(path)
    if conventions is None:
        variant = variant or weights_io.DEFAULT_IMPORT_VARIANT
        params = weights_io.load_weights(path, variant)
        config = weights_io.imported_weights_config(variant, int(params["fc8"]["bias"].shape[0]))
        console.warning(
            f"{path} records no conventions (export records them), so it is read as PyTorch-"
            f"trained {variant} weights: mean/std-normalized {config.input_size}-pixel crops of "
            f"images resized to {config.resize_size}. Weights trained otherwise (a run here, "
            "saved without export) predict wrongly this way: export the run, or predict with "
            "--workdir."
        )
        return config, params
    _check_variant_flag(variant, conventions["variant"], path)
    config = weights_io.weights_config(conventions)
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
    config, params = load.load_run(workdir)
    _check_variant_flag(variant, config.variant, f"the run in {workdir}")
    return config, params


def format_predictions(path: str, predictions: Sequence[Prediction]) -> str:
    """Lines like `  1.  87.12%  n02123045  tabby, tabby cat` under the image path; a control
    character in a name (a newline) is escaped (console.printable), one line per prediction."""
    lines = [console.printable(path)]
    for rank, p in enumerate(predictions, start=1):
        synset, name = console.printable(p.synset or "-"), console.printable(p.name)
        lines.append(f"  {rank}. {100 * p.prob:6.2f}%  {synset:<10}  {name}")
    return "\n".join(lines)


def main(argv: Sequence[str]) -> None:
    FLAGS = flags.FLAGS
    images = list(argv[1:])
    runtime.quiet_native_logs()
    runtime.quiet_library_logs()
    with reported_as_exit():
        if not images:
            raise UserError(
                "no image given: name one or more image files after the flags, e.g. "
                "python -m alexnet_jax.tools.predict --workdir=runs/default photo.jpg"
            )
        for path in images:  # before the model is loaded
            if os.path.isdir(path):
                raise DataError(f"{path} is a folder, not an image: name the image files in it.")
            if os.path.exists(path) and not os.path.isfile(path):  # a device, a FIFO, a link
                raise DataError(
                    f"{path} is not a regular file (a device or a FIFO, or a link to one), so it "
                    "is no image: name an image file."
                )
        missing = [path for path in images if not os.path.isfile(path)]
        if missing:
            raise DataError(f"No such image file(s): {', '.join(missing)}")
        runtime.check_environment()
        runtime.start_backend()
        config, params = load_model(FLAGS.workdir, FLAGS.weights, FLAGS.variant)
        mean_image = None
        if FLAGS.workdir and config.normalization == "mean_image":
            from alexnet_jax.data import input_pipeline  # (not at import: tools stay light)

            source = rundir.check_data_mean_image(FLAGS.workdir, config)  # (None: data gone)
            where = source or os.path.join(config.data_dir, input_pipeline.MEAN_IMAGE_DIR)
            mean_image = rundir.read_mean_image(FLAGS.workdir, int(config.input_size), where)
        results = predict(
            params,
            config,
            images,
            batch_size=FLAGS.batch_size,
            top_k=FLAGS.top_k,
            mean_image=mean_image,
        )
    console.out(f"# {jax.devices()[0].platform} device, variant {config.variant}")
    for path, predictions in zip(images, results, strict=True):
        console.out(format_predictions(path, predictions))


if __name__ == "__main__":
    define_flags()
    app.run(main, flags_parser=parse_flags)

"""The data fields of a config: which dataset, and the recipe that turns its images into inputs.

A plain-Python module (no TensorFlow), so that config validation and the tools that rebuild a
run's preprocessing (predict) read the same declaration as the tf.data pipeline
(preprocessing.py, input_pipeline.py) without importing it.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from alexnet_jax.core import rules
from alexnet_jax.core.errors import ConfigError
from alexnet_jax.data import miniature

DATASETS = ("imagenet2012", "image_folder", "miniature", "synthetic", "cifar10")
TRAIN_CROPS = ("paper", "random_resized")  # the paper's 256-square crop, or Inception-style
# Minus the RGB mean (the usual reading of the paper), also divided by the RGB std, or minus the
# training set's mean image (the paper's §2 and the original code: one value per pixel).
NORMALIZATIONS = ("mean", "mean_std", "mean_image")
EVAL_CROPS = (1, 10)  # the center crop, or the paper's 10 patches
INPUT_DTYPES = ("float32", "bfloat16")  # dtype of the images handed to the model
# Where the training augmentation and the normalization run: in tf.data on the host (float
# batches), or in the jitted steps on the accelerator (uint8 batches; alexnet_jax/data/augment.py).
AUGMENT_ON = ("host", "device")

_CASTS = {"int": int, "float": float, "str": str, "bool": bool}  # Recipe's annotations


@dataclasses.dataclass(frozen=True)
class Recipe:
    """The preprocessing settings of a config, as plain values TF functions can close over.

    Each attribute is the config field of the same name, except `dtype` (config.input_dtype).
    """

    input_size: int = 227  # side of the crop handed to the model
    resize_size: int = 256  # the paper's shorter-side rescale and center square
    train_crop: str = "paper"  # one of TRAIN_CROPS
    random_flip: bool = True
    pca_lighting_std: float = 0.1  # std of the lighting alphas; 0 disables it
    pca_lighting_stop_epoch: int = 0  # > 0: no lighting noise from this epoch on (0: never stops)
    normalization: str = "mean"  # one of NORMALIZATIONS
    eval_crops: int = 1  # one of EVAL_CROPS
    dtype: str = "float32"  # dtype of the normalized images (config.input_dtype)
    augment_on: str = "host"  # one of AUGMENT_ON

    @staticmethod
    def config_field(attribute: str) -> str:
        """The config field behind a Recipe attribute."""
        return "input_dtype" if attribute == "dtype" else attribute

    @classmethod
    def from_config(cls, config: Any) -> Recipe:
        # Config values may be numpy scalars or tuples; the casts make them plain Python values.
        return cls(
            **{
                f.name: _CASTS[f.type](config[cls.config_field(f.name)])
                for f in dataclasses.fields(cls)
            }
        )

    def config_fields(self) -> dict[str, Any]:
        """The config fields (name -> value) that `from_config` turns back into this recipe."""
        return {self.config_field(f.name): getattr(self, f.name) for f in dataclasses.fields(self)}


def ten_crop_offsets(resize_size: int, crop_size: int) -> list[tuple[int, int]]:
    """(top, left) of the five 10-crop views in the resize_size square: top-left, top-right,
    bottom-left, bottom-right, center. Views 5..9 are the same five flipped horizontally."""
    m = resize_size - crop_size
    return [(0, 0), (0, m), (m, 0), (m, m), (m // 2, m // 2)]


def _miniature_problem(c: Any) -> str | None:
    """What is wrong with the miniature archive the config asks for (None: nothing)."""
    if c.dataset != "miniature":
        return None
    try:
        miniature.MiniatureSpec.from_config(c).validate()
    except (ValueError, TypeError) as e:
        return str(e)
    return None


def _whole_split(field: str) -> rules.Rule:
    return rules.Rule(
        field,
        "a whole split for image folders (no [start:end] slice)",
        lambda c: c.dataset != "image_folder" or "[" not in c[field],
    )


# The data fields' rules (part of config_lib.RULES); checked in this order.
RULES = (
    rules.choice("dataset", DATASETS),
    rules.choice("train_crop", TRAIN_CROPS),
    rules.choice("normalization", NORMALIZATIONS),
    rules.Rule(
        "normalization",
        "'mean' or 'mean_std' with synthetic data (it has no images to average)",
        lambda c: c.normalization != "mean_image" or c.dataset != "synthetic",
    ),
    rules.choice("input_dtype", INPUT_DTYPES),
    rules.choice("augment_on", AUGMENT_ON),
    rules.Rule(
        "augment_on",
        "'host' with config.train_crop='random_resized' (the device path implements the paper's "
        "crop only)",
        lambda c: c.augment_on == "host" or c.train_crop == "paper",
    ),
    rules.Rule(
        "image_store_dir",
        "'' (no store) unless config.augment_on='device' (the store holds the uncropped "
        "squares the device augments) and config.dataset is not 'synthetic'",
        lambda c: not c.image_store_dir or (c.augment_on == "device" and c.dataset != "synthetic"),
    ),
    rules.Rule(
        "image_store_dir",
        "'' when config.resized_cache_dir is set (the store replaces the JPEG cache: set one)",
        lambda c: not (c.image_store_dir and c.resized_cache_dir),
    ),
    # An empty path would build in the current directory, without a word.
    rules.Rule("data_dir", "a folder (not empty)", lambda c: bool(str(c.data_dir).strip())),
    rules.Rule(
        "miniature_dir",
        "a folder (not empty) for the miniature dataset",
        lambda c: c.dataset != "miniature" or bool(str(c.miniature_dir).strip()),
    ),
    rules.Rule(
        "image_folder",
        "a folder (not empty) for dataset 'image_folder'",
        lambda c: c.dataset != "image_folder" or bool(str(c.image_folder).strip()),
    ),
    rules.Rule("eval_crops", "1 or 10", lambda c: c.eval_crops in EVAL_CROPS),
    rules.Rule(  # one output learns nothing: its softmax is 1 whatever the input
        "num_classes",
        "an integer >= 2",
        lambda c: rules.is_int(c.num_classes) and c.num_classes >= 2,
    ),
    *(
        rules.Rule(  # (an empty evaluation set was found only after the training)
            field,
            f"a positive integer (synthetic data: {what})",
            lambda c, field=field: c.dataset != "synthetic" or rules.positive_int(field).ok(c),
        )
        for field, what in (
            ("synthetic_eval_examples", "the evaluation set's size"),
            ("synthetic_train_examples", "the examples of an epoch"),
        )
    ),
    rules.number_at_least("pca_lighting_std", 0),
    rules.Rule(
        "pca_lighting_stop_epoch",
        "an integer >= 0 (0: lighting noise in every epoch)",
        lambda c: rules.is_int(c.pca_lighting_stop_epoch) and c.pca_lighting_stop_epoch >= 0,
    ),
    rules.positive_int("shuffle_buffer_size"),
    _whole_split("train_split"),
    _whole_split("eval_split"),
    rules.Rule(
        "num_classes / config.miniature_train_per_class / config.miniature_val_per_class / "
        "config.miniature_image_sides / config.miniature_corrupt_files / "
        "config.miniature_task",
        lambda c: f"an archive that can be generated: {_miniature_problem(c)}",
        lambda c: _miniature_problem(c) is None,
    ),
    rules.Rule(
        "resize_size",
        lambda c: f">= config.input_size={c.input_size} (the crop is taken from the resized image)",
        lambda c: rules.is_int(c.resize_size) and c.resize_size >= c.input_size,
    ),
)


# ---- Where the data lies, against the run's other folders ----------------------------------------


def check_outside_image_folder(
    config, workdir: str | None = None, training: bool = True, flag: str = "--workdir"
) -> None:
    """Raises ConfigError when `workdir` (`flag`), config.resized_cache_dir or
    config.image_store_dir (the last two only when `training`, which builds them) lies inside
    config.image_folder, or config.data_dir (where the mean image is written: hostile pass 26,
    #68) inside one of its split folders, real paths compared: every file there is training
    data, so a run's training_curves.png became an image of the class it sat in, and a folder
    made there (even by a refused run) a class with no image that refused every later run.
    Creates nothing, so the entry points run it before any folder is made. The converse, an
    image folder inside a workdir, is fine; so is a data_dir beside its split folders."""
    folder = config.get("image_folder", "") if config.get("dataset") == "image_folder" else ""
    if not isinstance(folder, str) or not folder.strip():
        return  # no image folder (validate_config names an empty or non-string one)
    data = os.path.realpath(os.path.expanduser(folder))
    named = [(flag, workdir)] if workdir else []
    fields = ("resized_cache_dir", "image_store_dir") if training else ()
    named += [(f"--config.{f}", config.get(f)) for f in fields if isinstance(config.get(f), str)]
    inside = [(given, path, data) for given, path in named]  # (flag, its path, the folder)
    if isinstance(config.get("data_dir"), str):  # (the data_dir beside train/ and val/ is fine)
        splits = [os.path.join(data, s) for s in ("train", "val", "test")]
        inside += [("--config.data_dir", config.data_dir, split) for split in splits]
    for given, path, root in inside:
        if not path.strip():
            continue
        real = os.path.realpath(os.path.expanduser(path))
        if real == root or real.startswith(root.rstrip(os.sep) + os.sep):
            raise ConfigError(
                f"{given}={path} lies inside the image folder {folder} (--config.image_folder), "
                f"whose files are the training data: choose a {given.lstrip('-')} outside it."
            )

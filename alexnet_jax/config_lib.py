"""Config validation: every wrong value is one `ConfigError` whose message names the field.

Run once at start (main.py and `train_and_evaluate`), before any data is read or compiled.
"""

from __future__ import annotations

from typing import Any

from alexnet_jax import optim
from alexnet_jax.errors import ConfigError
from alexnet_jax.models import INITS, LRN_CONVENTIONS, POOL_IMPLS, VARIANTS

DATASETS = ("imagenet2012", "image_folder", "miniature", "synthetic")
DTYPES = ("float32", "bfloat16")
LRN_IMPLS = ("auto", "conv", "reduce_window", "slices")
TRAIN_CROPS = ("paper", "random_resized")
NORMALIZATIONS = ("mean", "mean_std")


def _choice(config: Any, field: str, choices: tuple[str, ...]) -> None:
    value = config[field]
    if value not in choices:
        raise ConfigError(f"config.{field} must be one of {list(choices)}, got {value!r}.")


def _positive(config: Any, field: str, allow_zero: bool = False) -> None:
    value = config[field]
    ok = isinstance(value, int | float) and (value >= 0 if allow_zero else value > 0)
    if not ok:
        bound = ">= 0" if allow_zero else "> 0"
        raise ConfigError(f"config.{field} must be a number {bound}, got {value!r}.")


def _divisible(config: Any, field: str, num_devices: int) -> None:
    value = config[field]
    if value % num_devices:
        raise ConfigError(
            f"config.{field}={value} is not divisible by the {num_devices} devices of the "
            f"'data' mesh axis: choose a multiple of {num_devices} "
            f"(e.g. --config.{field}={max(num_devices, value // num_devices * num_devices)})."
        )


def _validate_data(config: Any) -> None:
    _choice(config, "dataset", DATASETS)
    _choice(config, "train_crop", TRAIN_CROPS)
    _choice(config, "normalization", NORMALIZATIONS)
    _choice(config, "input_dtype", DTYPES)
    if config.eval_crops not in (1, 10):
        raise ConfigError(f"config.eval_crops must be 1 or 10, got {config.eval_crops!r}.")
    if not isinstance(config.num_classes, int) or config.num_classes < 1:
        raise ConfigError(
            f"config.num_classes must be a positive integer, got {config.num_classes!r}."
        )
    _positive(config, "pca_lighting_std", allow_zero=True)
    if config.resize_size < config.input_size:
        raise ConfigError(
            f"config.resize_size={config.resize_size} must be >= config.input_size="
            f"{config.input_size} (the crop is taken from the resized image)."
        )


def _validate_model(config: Any) -> None:
    _choice(config, "variant", VARIANTS)
    _choice(config, "init_scheme", INITS)
    _choice(config, "lrn_convention", LRN_CONVENTIONS)
    _choice(config, "lrn_impl", LRN_IMPLS)
    _choice(config, "pool_impl", POOL_IMPLS)
    _choice(config, "dtype", DTYPES)
    if config.variant != "torchvision" and config.input_size not in (224, 227):
        raise ConfigError(
            f"config.input_size must be 227 (unpadded conv1) or 224 (padded) for variant "
            f"{config.variant!r}, got {config.input_size!r}."
        )
    if config.variant == "torchvision" and config.input_size < 63:
        raise ConfigError(f"config.input_size must be >= 63, got {config.input_size!r}.")
    if not 0.0 <= config.dropout_rate < 1.0:
        raise ConfigError(f"config.dropout_rate must be in [0, 1), got {config.dropout_rate!r}.")


def _validate_loop(config: Any, num_devices: int) -> None:
    for field in ("batch_size", "eval_batch_size"):
        if not isinstance(config[field], int) or config[field] < 1:
            raise ConfigError(f"config.{field} must be a positive integer, got {config[field]!r}.")
        _divisible(config, field, num_devices)
    if config.num_train_steps <= 0:
        _positive(config, "num_epochs")
    for field in ("log_every_steps", "checkpoint_every_steps", "keep_checkpoints"):
        if not isinstance(config[field], int) or config[field] < 1:
            raise ConfigError(f"config.{field} must be a positive integer, got {config[field]!r}.")
    if not isinstance(config.eval_every_steps, int) or config.eval_every_steps < 0:
        raise ConfigError(
            f"config.eval_every_steps must be an integer >= 0 (0: once per epoch), "
            f"got {config.eval_every_steps!r}."
        )
    if not isinstance(config.seed, int):
        raise ConfigError(f"config.seed must be an integer, got {config.seed!r}.")


def validate_config(config: Any, num_devices: int) -> None:
    """Raises ConfigError (naming the field) for the first invalid value of `config`.

    Args:
      config: a ConfigDict with the fields of configs/default.py.
      num_devices: size of the mesh's "data" axis, which the global batch sizes must divide.
    """
    _validate_data(config)
    _validate_model(config)
    optim.validate_optimizer_config(config)
    _validate_loop(config, num_devices)

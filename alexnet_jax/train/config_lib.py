"""Config validation: one table of rules (RULES); each wrong value is one ConfigError naming
the field.

The rules stand next to the fields' owners (recipe.RULES for the data, models.RULES for the
network, optim.RULES for the optimizer, LOOP_RULES below for the training loop), so the allowed
values come from the module that uses them; rules.py says how a broken rule is reported. Run once
at start (experiment.build, input_pipeline.prepare), before any data is read or compiled.
"""

from __future__ import annotations

import os
from typing import Any

import ml_collections

from alexnet_jax.core import rules
from alexnet_jax.core.errors import ConfigError, DataError, UserError
from alexnet_jax.data import recipe
from alexnet_jax.model import models
from alexnet_jax.runs import rundir
from alexnet_jax.train import optim

LOOP_RULES = (
    rules.positive_int("batch_size"),
    rules.positive_int("eval_batch_size"),
    rules.Rule(  # a finite number even when num_train_steps decides: it is recorded and compared
        "num_epochs",
        "a number > 0 (or any finite number when config.num_train_steps > 0)",
        lambda c: rules.is_number(c.num_epochs) and (c.num_train_steps > 0 or c.num_epochs > 0),
    ),
    rules.positive_int("log_every_steps"),
    rules.positive_int("checkpoint_every_steps"),
    rules.positive_int("keep_checkpoints"),
    rules.Rule(
        "eval_every_steps",
        "an integer >= 0 (0: once per epoch)",
        lambda c: rules.is_int(c.eval_every_steps) and c.eval_every_steps >= 0,
    ),
    rules.Rule(
        "seed",
        "an integer in [0, 2**31)",
        lambda c: rules.is_int(c.seed) and 0 <= c.seed < 2**31,
    ),
    rules.Rule(
        "max_consecutive_skipped_steps",
        "an integer >= 0",
        lambda c: (
            rules.is_int(c.max_consecutive_skipped_steps) and c.max_consecutive_skipped_steps >= 0
        ),
    ),
    rules.Rule(
        "mesh_shape",
        "() (all devices on 'data'), (data,) or (data, tower) with positive sizes",
        lambda c: (
            isinstance(c.mesh_shape, tuple | list)
            and len(c.mesh_shape) <= 2
            and all(rules.is_int(n) and n >= 1 for n in c.mesh_shape)
        ),
    ),
    rules.Rule(
        "torch_weights",
        "a path (a string; empty: none)",
        lambda c: isinstance(c.torch_weights, str),
    ),
)

# Every rule of a config, checked in this order; the first one broken is reported.
RULES = (*recipe.RULES, *models.RULES, *optim.RULES, *LOOP_RULES)


def _divisible(config: Any, field: str, num_devices: int) -> None:
    value = config[field]
    if value % num_devices:
        raise ConfigError(
            f"config.{field}={value} is not divisible by the {num_devices} devices of the "
            f"'data' mesh axis: choose a multiple of {num_devices} "
            f"(e.g. --config.{field}={max(num_devices, value // num_devices * num_devices)})"
            + (
                f"; a resumed run keeps its batch size: resume it on a device count that divides "
                f"{value}, or change it on purpose with --allow_config_change."
                if field == "batch_size"
                else "."
            )
        )


def validate_config(config: Any, num_devices: int | None = None, training: bool = True) -> None:
    """Raises ConfigError (naming the field) for the first invalid value of `config`.

    Args:
      config: a ConfigDict with the fields of configs/default.py.
      num_devices: size of the mesh's "data" axis, which the global batch sizes must divide
        (None: not checked, as before the mesh exists).
      training: False for an evaluation, which never splits config.batch_size (a run of batch 8
        evaluated on 3 devices was refused for it: hostile pass 26, #29).
    """
    rules.check(config, RULES)
    if num_devices is not None:
        for field in ("batch_size", "eval_batch_size") if training else ("eval_batch_size",):
            _divisible(config, field, num_devices)


# The config's fields that name files or folders: main.py makes them absolute (`absolute_paths`).
PATH_FIELDS = ("data_dir", "manual_dir", "image_folder", "miniature_dir", "resized_cache_dir",
               "image_store_dir", "torch_weights")  # fmt: skip


def absolute_paths(config: Any) -> None:
    """Makes each non-empty path field of `config` absolute, a leading ~ (or ~user) expanded as
    the shell does in --workdir=~/... (a literal ~ made a folder named "~" under the cwd): a run
    records where its data is, so that an evaluation or a resume from another folder finds it
    (a relative one was looked for there, and its mean image computed again: hostile pass 26,
    #47, #80), and one folder written two ways (`x/../tfds/`) is one (#46)."""
    for field in PATH_FIELDS:
        value = config.get(field)
        if isinstance(value, str) and value.strip():  # (realpath: `link/../x` is where the
            config[field] = os.path.realpath(os.path.expanduser(value))  # shell finds it, #27)


def check_like(config: Any, like: Any) -> None:
    """Raises ConfigError when `config` (a run's config.json, read back) has a field that `like`
    (a config of this version) lacks, or an invalid value (validate_config)."""
    unknown = sorted(set(config) - set(like))
    if unknown:
        raise ConfigError(f"it has fields this version lacks: {unknown}")
    validate_config(config)


# ---- A run's config ----------------------------------------------------------------------------


def load_config(workdir: str) -> ml_collections.ConfigDict:
    """The config a run in `workdir` was trained with (its config.json), checked against the
    rules of every field (a damaged or foreign file is one message)."""
    rundir.check_is_directory(workdir)
    config = rundir.read_config_dict(workdir)
    path = rundir.config_path(workdir)
    if config is None:
        raise UserError(f"{path} not found: --workdir must be a directory written by main.py.")
    config = ml_collections.ConfigDict(config)
    try:
        validate_config(config)
    except ConfigError as e:
        raise DataError(f"{path} is not a valid run config: {e}") from None
    return config


def eval_config(workdir: str, overrides: dict[str, Any] | None = None) -> ml_collections.ConfigDict:
    """The run's own config with the command line's `overrides` of what is evaluated
    (rundir.EVAL_FIELDS); an override of any other field that differs from the run is refused."""
    return rundir.apply_eval_overrides(load_config(workdir), workdir, overrides)

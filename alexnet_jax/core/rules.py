"""Config rules: (field, what it must be, test) and the one way a broken rule is reported.

Each module that owns config fields declares their rules next to them (recipe.RULES,
models.RULES, optim.RULES, config_lib's loop rules); config_lib.RULES is the one table of all
of them. A broken rule is one ConfigError: `config.<field> must be <requirement>, got <value>.`
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import numpy as np

from alexnet_jax.core.errors import ConfigError


class Rule(NamedTuple):
    field: str  # "a" or, for a rule on several fields, "a / config.b" (checked present: "a", "b")
    requirement: str | Callable[[Any], str]  # or a function of the config, for relative rules
    ok: Callable[[Any], bool]


_FLOAT32_MAX = float(np.finfo(np.float32).max)


def is_number(value: Any) -> bool:
    """An int or float (not a bool) that is finite even in float32, the devices' precision: no
    config field means anything at inf or NaN (an infinite number of epochs or learning rate
    overflows, or diverges, later), and 1e300 becomes inf on the device."""
    numeric = isinstance(value, int | float | np.integer | np.floating)
    return numeric and not isinstance(value, bool) and abs(float(value)) <= _FLOAT32_MAX


def _out_of_float32(value: Any) -> bool:
    """A number that is_number refuses only for its size: inf, NaN, or beyond float32."""
    numeric = isinstance(value, int | float | np.integer | np.floating)
    return numeric and not isinstance(value, bool) and not is_number(value)


def is_int(value: Any) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def choice(field: str, choices: Sequence[Any]) -> Rule:
    return Rule(field, f"one of {list(choices)}", lambda c: c[field] in choices)


def positive_int(field: str) -> Rule:
    return Rule(field, "a positive integer", lambda c: is_int(c[field]) and c[field] >= 1)


def number_at_least(field: str, low: float) -> Rule:
    return Rule(field, f"a number >= {low:g}", lambda c: is_number(c[field]) and c[field] >= low)


def check(config: Any, rules: Sequence[Rule]) -> None:
    """Raises ConfigError for the first rule `config` breaks, or for a field it lacks."""
    for field, requirement, ok in rules:
        names = field.split(" / config.")
        for name in names:
            if name not in config:
                raise ConfigError(f"config.{name} is missing (see configs/default.py).")
        if not ok(config):
            text = requirement(config) if callable(requirement) else requirement
            got = f", got {_one_line(config[field])}" if len(names) == 1 else ""
            if got and _out_of_float32(config[field]):  # (1e39 ">= 0": pass 20, #52)
                text += f" and finite in float32 (at most {_FLOAT32_MAX:.1e} in size)"
            raise ConfigError(f"config.{field} must be {text}{got}.")


def _one_line(value: Any) -> str:
    """`value` for a one-line message: a nested section (param_groups) as compact JSON."""
    if hasattr(value, "to_dict"):
        return json.dumps(value.to_dict(), default=str)
    return repr(value)

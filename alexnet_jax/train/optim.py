"""Optimizers and learning-rate schedules: the paper's SGD, the usual Optax SGD, step and plateau.

The paper (section 5) writes momentum SGD with the learning rate *inside* the velocity:

    v <- m v - wd lr w - lr g ;  w <- w + v

Optax and PyTorch keep the lr *outside* (t <- m t + g + wd w ; w <- w - lr t). With a constant
lr the two are the same trajectory (v = -lr t), but right after an lr drop they differ: the paper's
form keeps the full old velocity, the Optax form shrinks it by the drop factor at once. Both exist
(`config.optimizer`), and both are wrapped so the training loop can read the lr used by the last
update and scale it host-side (the reduce-on-plateau schedule) through `current_learning_rate` and
`set_lr_scale`, without touching Optax internals.
"""

import itertools
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax

from alexnet_jax.core import rules
from alexnet_jax.core.errors import ConfigError

OPTIMIZERS = ("paper_sgd", "sgd")

ScalarOrSchedule = float | jax.Array | optax.Schedule


# ---- The paper's SGD ---------------------------------------------------------------------------


class PaperSgdState(NamedTuple):
    """State of `paper_sgd`: the update count (for schedules) and the velocity v (>= float32)."""

    count: jax.Array
    velocity: optax.Updates


def paper_sgd(
    learning_rate: ScalarOrSchedule, momentum: float = 0.9, weight_decay: float = 5e-4
) -> optax.GradientTransformation:
    """The paper's momentum SGD: v <- m v - wd lr w - lr g, and the update returned is v.

    `learning_rate` is a number or an Optax schedule of the step count (0 for the first update).
    Every argument may also be injected by `optax.inject_hyperparams`, which is how
    `create_optimizer` exposes the lr in the optimizer state. `update` needs `params` (the decay).
    """

    def init_fn(params: optax.Params) -> PaperSgdState:
        # The velocity accumulates many small steps: never keep it in less than float32.
        velocity = jax.tree.map(
            lambda p: jnp.zeros(jnp.shape(p), jnp.promote_types(p.dtype, jnp.float32)), params
        )
        return PaperSgdState(count=jnp.zeros([], jnp.int32), velocity=velocity)

    def update_fn(updates, state, params=None):
        if params is None:
            raise ValueError(
                "paper_sgd needs the parameters for its weight decay: "
                "call tx.update(grads, opt_state, params)."
            )
        lr = learning_rate(state.count) if callable(learning_rate) else learning_rate

        def new_velocity(v, g, w):
            g, w = g.astype(v.dtype), w.astype(v.dtype)
            # The lr multiplies the new gradient only; the old velocity keeps the lr it was made
            # with. This is where the paper's rule differs from optax.sgd after an lr drop.
            return momentum * v - lr * (weight_decay * w + g)

        velocity = jax.tree.map(new_velocity, state.velocity, updates, params)
        new_updates = jax.tree.map(lambda v, w: v.astype(w.dtype), velocity, params)
        return new_updates, PaperSgdState(optax.safe_increment(state.count), velocity)

    return optax.GradientTransformation(init_fn, update_fn)


# ---- The usual Optax SGD -----------------------------------------------------------------------


def optax_sgd(
    learning_rate: ScalarOrSchedule,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    decoupled_weight_decay: bool = False,
) -> optax.GradientTransformation:
    """`optax.sgd` with weight decay, coupled (added to the gradient) or decoupled.

    Coupled: t <- m t + g + wd w ; w <- w - lr t (L2 regularisation, as in PyTorch's SGD).
    Decoupled: t <- m t + g ; w <- w - lr t - lr wd w (the decay bypasses the momentum).
    """
    if decoupled_weight_decay:
        return optax.chain(
            optax.trace(decay=momentum),
            optax.add_decayed_weights(weight_decay),
            optax.scale_by_learning_rate(learning_rate),
        )
    return optax.chain(
        optax.add_decayed_weights(weight_decay), optax.sgd(learning_rate, momentum=momentum)
    )


# ---- The lr as a visible, host-scalable hyperparameter -----------------------------------------


def with_lr_scale(
    make_tx: Callable[[jax.Array], optax.GradientTransformation], schedule: optax.Schedule
) -> optax.GradientTransformation:
    """Wraps `make_tx(lr)` so the lr is `schedule(step) * lr_scale`, both visible in the state.

    Built on `optax.inject_hyperparams`: the state is an `InjectStatefulHyperparamsState` whose
    `hyperparams` dict holds `learning_rate` (the lr the last update used; before any update, the
    lr the first one will use) and `lr_scale` (float32, 1.0 at init, set by `set_lr_scale`).
    """

    def scaled(learning_rate, lr_scale):
        return make_tx(learning_rate * lr_scale)

    inner = optax.inject_hyperparams(scaled, hyperparam_dtype=jnp.float32)(
        learning_rate=schedule, lr_scale=1.0
    )

    def show_scaled_lr(state):
        # inject_hyperparams stores the raw schedule value; store the lr actually applied instead.
        # Harmless for the next update: a scheduled hyperparameter is recomputed from its schedule
        # each step, never read back from `hyperparams` (documented Optax behaviour).
        hp = state.hyperparams
        lr = hp["learning_rate"] * hp["lr_scale"]
        return state._replace(hyperparams={**hp, "learning_rate": lr})

    def init_fn(params):
        return show_scaled_lr(inner.init(params))

    def update_fn(updates, state, params=None, **extra_args):
        updates, state = inner.update(updates, state, params, **extra_args)
        return updates, show_scaled_lr(state)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def _is_hyperparam_value(path: Any, value: Any) -> bool:
    # inject_hyperparams keeps the values in `hyperparams` and a schedule's own state, under the
    # same name, in `hyperparams_states`: pick the array.
    del path
    return isinstance(value, jax.Array | np.ndarray)


def current_learning_rate(opt_state: optax.OptState) -> jax.Array:
    """The lr used by the most recent update (float32 scalar), for logging; works inside jit.

    Searches the whole state, so it also works when the optimizer is wrapped further (for example
    by `optax.apply_if_finite`). With parameter groups it is the default group's lr.
    """
    found = optax.tree_utils.tree_get_all_with_path(
        opt_state, "learning_rate", _is_hyperparam_value
    )
    if not found:
        raise ValueError(
            "opt_state has no 'learning_rate' hyperparameter: make the optimizer with "
            "create_optimizer."
        )
    # With parameter groups, the lr of the parameters no group claims (DEFAULT_GROUP).
    for path, lr in found:
        if jax.tree_util.DictKey(DEFAULT_GROUP) in path:
            return lr
    return found[0][1]


def set_lr_scale(opt_state: optax.OptState, scale: float | jax.Array) -> optax.OptState:
    """Returns a copy of `opt_state` whose `lr_scale` is `scale`; later updates use lr * scale.
    With parameter groups every group's scale is set (a plateau drop divides all of them).

    The host-side half of reduce-on-plateau. The value keeps the state's dtype (float32, not weakly
    typed), so a jitted step that takes the state does not recompile when the scale changes.
    """
    found = optax.tree_utils.tree_get_all_with_path(opt_state, "lr_scale", _is_hyperparam_value)
    if not found:
        raise ValueError(
            "opt_state has no 'lr_scale' hyperparameter: make the optimizer with create_optimizer."
        )
    new = jnp.asarray(scale, dtype=found[0][1].dtype)
    return optax.tree_utils.tree_set(opt_state, _is_hyperparam_value, lr_scale=new)


# ---- Schedules ---------------------------------------------------------------------------------


_LAST_COUNT = int(np.iinfo(np.int32).max)  # optax's update count is an int32


def epochs_to_step_boundaries(
    drop_epochs: Sequence[float], steps_per_epoch: int, factor: float
) -> dict[int, float]:
    """Maps drop epochs to `{step: factor}` for `optax.piecewise_constant_schedule`.

    Epoch e starts at step round(e * steps_per_epoch); the drop applies from that step on (the first
    step of the epoch). Epochs landing on the same step multiply their factors. A step past the
    update count's range (int32) is never reached and is kept at its end: a drop at epoch 1e18
    was an OverflowError traceback at the first step (hostile pass 20, #51).
    """
    boundaries: dict[int, float] = {}
    for epoch in drop_epochs:
        step = min(round(float(epoch) * steps_per_epoch), _LAST_COUNT)
        boundaries[step] = boundaries.get(step, 1.0) * factor
    return boundaries


def constant_schedule(lr: float, setting: Callable[[str], Any], steps_per_epoch: int):
    """The lr unchanged ("constant"; also "plateau", whose drops come from `lr_scale`, set
    host-side from `plateau_update`)."""
    return optax.constant_schedule(lr)


def step_schedule(lr: float, setting: Callable[[str], Any], steps_per_epoch: int):
    """lr multiplied by `lr_drop_factor` at each epoch in `lr_drop_epochs` (one factor for all
    drops, or one per drop): the paper's "divided by 10" (section 5)."""
    drop_epochs, factors = setting("lr_drop_epochs"), setting("lr_drop_factor")
    if len(drop_epochs) == 0:
        return optax.constant_schedule(lr)
    if rules.is_number(factors):
        factors = [factors] * len(drop_epochs)
    boundaries: dict[int, float] = {}
    for epoch, factor in zip(drop_epochs, factors, strict=True):
        for step, f in epochs_to_step_boundaries([epoch], steps_per_epoch, factor).items():
            boundaries[step] = boundaries.get(step, 1.0) * f
    return optax.piecewise_constant_schedule(lr, boundaries)


# The lr schedules by name (`config.schedule`): (lr, setting, steps_per_epoch) -> an optax
# schedule of the update count, where setting(name) reads a config field (or a parameter group's
# own value of it). A new schedule is one function and one entry here.
SCHEDULES: dict[str, Callable[..., optax.Schedule]] = {
    "constant": constant_schedule,
    "step": step_schedule,
    "plateau": constant_schedule,
}
HOST_SCHEDULES = ("plateau",)  # driven by the training loop from evaluations: not per group


def make_schedule(
    config: Any, steps_per_epoch: int, group: Mapping[str, Any] | None = None
) -> optax.Schedule:
    """The lr schedule of `config.schedule` (SCHEDULES), a function of the update count (0 =
    first), then the warm-up ramp, if any. `group`: a parameter group's settings, which replace
    the config's (see `param_groups`). The config is validated (RULES) at the entry point."""
    if steps_per_epoch < 1:
        raise ValueError(f"steps_per_epoch must be >= 1, got {steps_per_epoch}.")
    setting = lambda name: (group or {}).get(name, config[name])
    schedule = SCHEDULES[setting("schedule")]
    base = schedule(float(setting("learning_rate")), setting, steps_per_epoch)
    return with_warmup(base, round(float(config.warmup_epochs) * steps_per_epoch))


def with_warmup(schedule: optax.Schedule, warmup_steps: int) -> optax.Schedule:
    """`schedule` times a linear ramp: update i (0 = first) gets (i + 1) / warmup_steps of it until
    the ramp reaches 1, so the first update is already a small step, never a zero one."""
    if warmup_steps <= 0:
        return schedule

    def warmed_up(count):  # (a float: warmup_epochs=1e30 overflowed an int, pass 20 #50)
        ramp = jnp.minimum(1.0, (jnp.asarray(count, jnp.float32) + 1.0) / float(warmup_steps))
        return schedule(count) * ramp

    return warmed_up


# ---- Parameter groups -------------------------------------------------------------------------

# The optimizer settings a parameter group may set for its parameters (the rest follow the config).
GROUP_SETTINGS = ("learning_rate", "weight_decay", "schedule", "lr_drop_epochs", "lr_drop_factor")
DEFAULT_GROUP = "default"  # the parameters no group claims: the config's own settings


def param_name(path: Sequence[Any]) -> str:
    """'conv1/kernel' for the params pytree path of conv1's kernel: what group patterns match."""
    return "/".join(str(getattr(key, "key", key)) for key in path)


def param_group_labels(groups: Any) -> Callable[[Any], Any]:
    """A function params -> the same tree of group names, for `optax.partition`.

    A group claims the parameters whose name (`param_name`) its `params` regular expression matches
    in full; groups must be disjoint, every group must claim something, and the parameters no group
    claims form DEFAULT_GROUP. Broken patterns raise ConfigError naming the group.
    """

    def labels(params):
        def label(path, _):
            name = param_name(path)
            hits = [g for g, spec in groups.items() if re.fullmatch(spec["params"], name)]
            if len(hits) > 1:
                raise ConfigError(
                    f"config.param_groups: parameter {name!r} matches groups {hits}; a parameter "
                    "may belong to one group only, make the patterns disjoint."
                )
            return hits[0] if hits else DEFAULT_GROUP

        tree = jax.tree_util.tree_map_with_path(label, params)
        unused = sorted(set(groups) - set(jax.tree_util.tree_leaves(tree)))
        if unused:
            names = [param_name(p) for p, _ in jax.tree_util.tree_leaves_with_path(params)]
            raise ConfigError(
                f"config.param_groups: group(s) {unused} match no parameter; patterns match names "
                f"such as {names[:4]} in full."
            )
        return tree

    return labels


def _factors_ok(factors: Any, epochs: Any) -> bool:
    if rules.is_number(factors):
        return 0 <= factors < 1
    return (
        isinstance(factors, Sequence)
        and len(factors) == len(epochs)
        and all(rules.is_number(f) and 0 <= f < 1 for f in factors)
    )


def _group_problem(config: Any) -> str | None:
    """What is wrong with config.param_groups, or None."""
    groups = config.param_groups
    if not hasattr(groups, "items"):
        return "a mapping of group name -> settings"
    for name, spec in groups.items():
        where = f"group {name!r}"
        if name == DEFAULT_GROUP:
            return f"free of the name {DEFAULT_GROUP!r} (the parameters no group claims)"
        if not hasattr(spec, "items") or not isinstance(spec.get("params"), str):
            return f"settings with a 'params' regular expression ({where})"
        try:
            re.compile(spec["params"])
        except re.error as e:
            return f"valid regular expressions ({where}: {e})"
        unknown = sorted(set(spec.keys()) - {"params", *GROUP_SETTINGS})
        if unknown:
            return f"settings among {['params', *GROUP_SETTINGS]} ({where} has {unknown})"
        setting = lambda key: spec.get(key, config[key])  # noqa: B023 (used in this iteration)
        if "schedule" not in spec and config.schedule in HOST_SCHEDULES:
            return (
                f"groups that each set their own schedule when config.schedule="
                f"{config.schedule!r} ({where} sets none and would take {config.schedule!r}, "
                "the whole run's schedule, not a group's: its drops divide every group's "
                'learning rate). Give each group "schedule": "constant" or "step" in the '
                "config file, or train without groups: --config.param_groups={}"
            )
        checks = {
            "learning_rate": rules.is_number(setting("learning_rate"))
            and setting("learning_rate") >= 0,
            "weight_decay": rules.is_number(setting("weight_decay"))
            and setting("weight_decay") >= 0,
            "schedule": setting("schedule") in SCHEDULES
            and setting("schedule") not in HOST_SCHEDULES,
            "lr_drop_epochs": _increasing_epochs(setting("lr_drop_epochs")),
            "lr_drop_factor": _factors_ok(setting("lr_drop_factor"), setting("lr_drop_epochs")),
        }
        for key, ok in checks.items():
            if not ok:
                return (
                    f"valid settings ({where}: {key}={setting(key)!r}; learning_rate and "
                    "weight_decay >= 0, schedule 'constant' or 'step', lr_drop_factor in [0, 1) "
                    "or one such factor per lr_drop_epochs entry)"
                )
    return None


# ---- Reduce on plateau (host side) -------------------------------------------------------------


@flax.struct.dataclass
class PlateauState:
    """Reduce-on-plateau bookkeeping, a pytree of NumPy scalars (checkpointed with the train state).

    best_error: lowest validation error seen so far (inf before the first evaluation).
    evals_without_improvement: evaluations since the best one, or since the last drop.
    num_drops: lr drops made so far.
    scale: the lr multiplier to hand to `set_lr_scale` (factor ** num_drops).
    """

    best_error: np.ndarray
    evals_without_improvement: np.ndarray
    num_drops: np.ndarray
    scale: np.ndarray


def init_plateau() -> PlateauState:
    """The plateau state before any evaluation: no best error yet, no drops, scale 1."""
    return PlateauState(
        best_error=np.asarray(np.inf, np.float32),
        evals_without_improvement=np.asarray(0, np.int32),
        num_drops=np.asarray(0, np.int32),
        scale=np.asarray(1.0, np.float32),
    )


def plateau_update(
    state: PlateauState,
    val_error: float,
    *,
    patience: int,
    factor: float,
    max_drops: int,
    min_delta: float = 0.0,
) -> PlateauState:
    """Records one validation error; multiplies the scale by `factor` after a plateau.

    An error counts as an improvement when it is below best - min_delta (NaN never is). After
    `patience` evaluations in a row without improvement the scale drops, at most `max_drops` times
    (the paper divided by 10 three times), and the counter restarts so the next drop again waits
    `patience` evaluations at the new lr. Pure: returns a new state.
    """
    # Round to the stored precision first, so an error equal to the best one is not an improvement.
    val_error = float(np.float32(val_error))
    best, waited = float(state.best_error), int(state.evals_without_improvement)
    drops, scale = int(state.num_drops), float(state.scale)
    if val_error < best - min_delta:
        best, waited = val_error, 0
    else:
        waited += 1
        if waited >= patience and drops < max_drops:
            drops, scale, waited = drops + 1, scale * factor, 0
    return PlateauState(
        best_error=np.asarray(best, np.float32),
        evals_without_improvement=np.asarray(waited, np.int32),
        num_drops=np.asarray(drops, np.int32),
        scale=np.asarray(scale, np.float32),
    )


# ---- From the config ---------------------------------------------------------------------------


def _increasing_epochs(epochs: Any) -> bool:
    return (
        isinstance(epochs, Sequence)
        and all(rules.is_number(e) and e >= 0 for e in epochs)
        and all(a < b for a, b in itertools.pairwise(epochs))
    )


_SMALLEST_RATE = float(np.finfo(np.float32).tiny)  # the smallest normal float32, 1.18e-38

# The optimizer fields' rules (part of config_lib.RULES); checked in this order.
RULES = (
    rules.choice("optimizer", OPTIMIZERS),
    rules.choice("schedule", SCHEDULES),
    rules.Rule(  # (1e-46 is 0 in float32, the devices' precision: no update, and no word)
        "learning_rate",
        f"a number > 0 and at least {_SMALLEST_RATE:.3g} (smaller ones are 0 in float32)",
        lambda c: rules.is_number(c.learning_rate) and c.learning_rate >= _SMALLEST_RATE,
    ),
    rules.Rule(
        "momentum",
        "a number in [0, 1)",
        lambda c: rules.is_number(c.momentum) and 0 <= c.momentum < 1,
    ),
    rules.number_at_least("weight_decay", 0),
    rules.Rule(
        "decoupled_weight_decay",
        "a bool, and True only with optimizer='sgd'",
        lambda c: (
            isinstance(c.decoupled_weight_decay, bool)
            and (c.optimizer == "sgd" or not c.decoupled_weight_decay)
        ),
    ),
    rules.Rule(
        "lr_drop_factor",
        "a number in (0, 1)",
        lambda c: rules.is_number(c.lr_drop_factor) and 0 < c.lr_drop_factor < 1,
    ),
    rules.Rule(
        "lr_drop_epochs",
        "a strictly increasing sequence of epochs >= 0",
        lambda c: _increasing_epochs(c.lr_drop_epochs),
    ),
    rules.number_at_least("warmup_epochs", 0),
    rules.Rule(
        "param_groups", lambda c: _group_problem(c) or "", lambda c: _group_problem(c) is None
    ),
    rules.number_at_least("grad_clip_norm", 0),
    rules.Rule(
        "plateau_patience",
        "an integer >= 1",
        lambda c: rules.is_int(c.plateau_patience) and c.plateau_patience >= 1,
    ),
    rules.Rule(
        "plateau_max_drops",
        "an integer >= 0",
        lambda c: rules.is_int(c.plateau_max_drops) and c.plateau_max_drops >= 0,
    ),
)


def create_optimizer(config: Any, steps_per_epoch: int) -> optax.GradientTransformation:
    """The optimizer of `config`, its lr visible and scalable in the state (see `with_lr_scale`).

    The config is validated (RULES) at the entry point. For the "plateau" schedule the training
    loop feeds validation errors to `plateau_update` and hands the resulting scale to
    `set_lr_scale`. With
    `param_groups`, each group's parameters get their own lr, weight decay and schedule (an
    `optax.partition` by parameter name); the warm-up, momentum and clipping are shared. With
    `grad_clip_norm` > 0 the gradient is first rescaled to at most that global norm (before the
    weight decay is added).
    """

    def group_tx(group: Any) -> optax.GradientTransformation:
        momentum = float(config.momentum)
        weight_decay = float((group or {}).get("weight_decay", config.weight_decay))
        if config.optimizer == "paper_sgd":
            make_tx = lambda lr: paper_sgd(lr, momentum=momentum, weight_decay=weight_decay)
        else:
            decoupled = bool(config.decoupled_weight_decay)
            make_tx = lambda lr: optax_sgd(lr, momentum, weight_decay, decoupled)
        return with_lr_scale(make_tx, make_schedule(config, steps_per_epoch, group))

    groups = config.param_groups
    if len(groups) == 0:
        tx = group_tx(None)
    else:
        txs = {DEFAULT_GROUP: group_tx(None), **{name: group_tx(g) for name, g in groups.items()}}
        tx = optax.partition(txs, param_group_labels(groups))
    if float(config.grad_clip_norm) > 0:
        tx = optax.chain(optax.clip_by_global_norm(float(config.grad_clip_norm)), tx)
    return tx

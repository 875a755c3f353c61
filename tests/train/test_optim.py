"""Tests for alexnet_jax/train/optim.py: optimizers against float64 NumPy loops, schedules,
validation."""

import importlib.util
import os

import chex
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from alexnet_jax.core import rules
from alexnet_jax.core.errors import ConfigError, UserError
from alexnet_jax.train import config_lib, optim

MOMENTUM = 0.9


def _config(**overrides) -> ml_collections.ConfigDict:
    """The optimizer fields of a config (as in configs/default.py), with overrides."""
    fields = dict(
        optimizer="paper_sgd",
        learning_rate=0.05,
        momentum=MOMENTUM,
        weight_decay=0.01,
        decoupled_weight_decay=False,
        schedule="constant",
        lr_drop_epochs=(),
        lr_drop_factor=0.1,
        plateau_patience=1,
        plateau_max_drops=3,
        warmup_epochs=0.0,
        grad_clip_norm=0.0,
        param_groups=ml_collections.ConfigDict(),
    )
    fields.update(overrides)
    return ml_collections.ConfigDict(fields)


def _full_config(**overrides) -> ml_collections.ConfigDict:
    """configs/default.py with the optimizer fields of `_config` and overrides."""
    from configs import default

    return ml_collections.ConfigDict(
        {**default.get_config().to_dict(), **_config(**overrides).to_dict()}
    )


def _params(seed: int = 0) -> dict:
    """A small nested params pytree; values kept away from 0 so relative errors mean something."""
    rng = np.random.default_rng(seed)
    uniform = lambda *shape: jnp.asarray(rng.uniform(1.0, 2.0, shape), jnp.float32)
    return {"conv": {"kernel": uniform(3, 4), "bias": uniform(4)}, "fc": {"kernel": uniform(5)}}


def _grads(num_steps: int, like: dict, seed: int = 1) -> list:
    rng = np.random.default_rng(seed)
    make = lambda p: jnp.asarray(rng.uniform(-1.0, 1.0, p.shape), jnp.float32)
    return [jax.tree.map(make, like) for _ in range(num_steps)]


def _run(tx, params, grads):
    """Applies `tx` to the gradient sequence; returns params after each step, updates, lrs used."""
    state = tx.init(params)
    trajectory, updates_seen, lrs = [], [], []
    for g in grads:
        updates, state = tx.update(g, state, params)
        params = optax.apply_updates(params, updates)
        trajectory.append(params)
        updates_seen.append(updates)
        if isinstance(
            state, optax.InjectStatefulHyperparamsState | optax.transforms.PartitionState
        ):
            lrs.append(float(optim.current_learning_rate(state)))
    return trajectory, updates_seen, lrs


def _numpy_loop(rule, params, grads, lrs, *, wd, m=MOMENTUM):
    """Runs `rule(w, v, g, lr, wd, m) -> (w, v)` in float64 on each leaf; params after each step."""
    w = [np.asarray(x, np.float64) for x in jax.tree.leaves(params)]
    v = [np.zeros_like(x) for x in w]
    trajectory = []
    for g_tree, lr in zip(grads, lrs, strict=True):
        g = [np.asarray(x, np.float64) for x in jax.tree.leaves(g_tree)]
        w, v = zip(*[rule(*args, lr, wd, m) for args in zip(w, v, g, strict=True)], strict=True)
        trajectory.append(list(w))
    return trajectory


def _paper_rule(w, v, g, lr, wd, m):
    v = m * v - wd * lr * w - lr * g  # the paper: lr inside the velocity
    return w + v, v


def _sgd_coupled_rule(w, t, g, lr, wd, m):
    t = m * t + g + wd * w  # L2 decay added to the gradient, then momentum
    return w - lr * t, t


def _sgd_decoupled_rule(w, t, g, lr, wd, m):
    t = m * t + g  # momentum of the gradient only; the decay bypasses it
    return w - lr * t - lr * wd * w, t


def _assert_trajectories_close(got, want, rtol=1e-6):
    assert len(got) == len(want)
    for step, (got_params, want_leaves) in enumerate(zip(got, want, strict=True)):
        for got_leaf, want_leaf in zip(jax.tree.leaves(got_params), want_leaves, strict=True):
            np.testing.assert_allclose(got_leaf, want_leaf, rtol=rtol, err_msg=f"step {step}")


# A step schedule for 8 updates: 4 steps per epoch, lr 0.05 then 0.005 from step 4 (epoch 1).
DROP_CONFIG = dict(schedule="step", lr_drop_epochs=(1,))
STEPS_PER_EPOCH = 4
LRS = [0.05] * 4 + [0.005] * 4


@pytest.mark.parametrize("how", ["create_optimizer", "paper_sgd_with_schedule"])
def test_paper_sgd_matches_numpy_loop_across_an_lr_drop(how):
    config = _config(optimizer="paper_sgd", **DROP_CONFIG)
    if how == "create_optimizer":
        tx = optim.create_optimizer(config, STEPS_PER_EPOCH)
    else:  # the bare transformation, the schedule evaluated on its own step count
        schedule = optim.make_schedule(config, STEPS_PER_EPOCH)
        tx = optim.paper_sgd(schedule, momentum=MOMENTUM, weight_decay=config.weight_decay)
    params = _params()
    grads = _grads(len(LRS), params)
    got, _, lrs = _run(tx, params, grads)
    want = _numpy_loop(_paper_rule, params, grads, LRS, wd=config.weight_decay)
    _assert_trajectories_close(got, want)
    if how == "create_optimizer":
        np.testing.assert_allclose(lrs, LRS, rtol=1e-6)


def test_paper_and_optax_forms_agree_before_an_lr_drop_and_differ_right_after():
    # With a constant lr, v = -lr t makes the two forms the same trajectory (any coupled wd). At
    # the first step after a drop lr -> lr', the paper keeps the old velocity m v while optax.sgd
    # carries only m (lr'/lr) v: the updates differ by exactly m v (1 - lr'/lr).
    paper = optim.create_optimizer(_config(optimizer="paper_sgd", **DROP_CONFIG), STEPS_PER_EPOCH)
    sgd = optim.create_optimizer(_config(optimizer="sgd", **DROP_CONFIG), STEPS_PER_EPOCH)
    params = _params()
    grads = _grads(len(LRS), params)
    _, paper_updates, _ = _run(paper, params, grads)
    _, sgd_updates, _ = _run(sgd, params, grads)
    leaves = lambda tree: np.concatenate([np.ravel(x) for x in jax.tree.leaves(tree)])
    drop = LRS.index(0.005)
    for step in range(drop):
        np.testing.assert_allclose(
            leaves(paper_updates[step]), leaves(sgd_updates[step]), rtol=1e-5
        )
    velocity_before_drop = leaves(paper_updates[drop - 1])
    difference = leaves(paper_updates[drop]) - leaves(sgd_updates[drop])
    expected = MOMENTUM * velocity_before_drop * (1 - LRS[drop] / LRS[drop - 1])
    np.testing.assert_allclose(difference, expected, rtol=1e-4)
    assert np.max(np.abs(difference)) > 0.1 * np.max(np.abs(leaves(paper_updates[drop])))


@pytest.mark.parametrize(
    ("decoupled", "rule"), [(False, _sgd_coupled_rule), (True, _sgd_decoupled_rule)]
)
def test_optax_sgd_weight_decay_matches_numpy_loop(decoupled, rule):
    config = _config(optimizer="sgd", decoupled_weight_decay=decoupled, **DROP_CONFIG)
    tx = optim.create_optimizer(config, STEPS_PER_EPOCH)
    params = _params()
    grads = _grads(len(LRS), params)
    got, _, lrs = _run(tx, params, grads)
    _assert_trajectories_close(got, _numpy_loop(rule, params, grads, LRS, wd=config.weight_decay))
    np.testing.assert_allclose(lrs, LRS, rtol=1e-6)


def test_coupled_and_decoupled_decay_really_differ():
    params = _params()
    grads = _grads(3, params)
    final = []
    for decoupled in (False, True):
        tx = optim.create_optimizer(_config(optimizer="sgd", decoupled_weight_decay=decoupled), 1)
        final.append(_run(tx, params, grads)[0][-1]["fc"]["kernel"])
    assert not np.allclose(final[0], final[1], rtol=1e-6)


def test_paper_sgd_needs_params():
    tx = optim.paper_sgd(0.01)
    params = _params()
    state = tx.init(params)
    with pytest.raises(ValueError, match="params"):
        tx.update(params, state)


def test_paper_sgd_composes_with_inject_hyperparams():
    params = _params()
    grads = _grads(3, params)
    injected = optax.inject_hyperparams(optim.paper_sgd)(
        learning_rate=0.05, momentum=MOMENTUM, weight_decay=0.01
    )
    state = injected.init(params)
    assert set(state.hyperparams) == {"learning_rate", "momentum", "weight_decay"}
    got, _, _ = _run(injected, params, grads)
    want = _numpy_loop(_paper_rule, params, grads, [0.05] * 3, wd=0.01)
    _assert_trajectories_close(got, want)


def test_paper_sgd_velocity_is_float32_zeros():
    params = {"a": jnp.ones((2,), jnp.bfloat16), "b": jnp.ones((3,), jnp.float32)}
    state = optim.paper_sgd(0.01).init(params)
    assert jax.tree.map(lambda v: v.dtype, state.velocity) == {"a": jnp.float32, "b": jnp.float32}
    assert all(not np.any(np.asarray(v)) for v in jax.tree.leaves(state.velocity))


def test_step_schedule_drops_at_the_first_step_of_each_drop_epoch():
    config = _config(learning_rate=0.01, schedule="step", lr_drop_epochs=(2, 4))
    schedule = optim.make_schedule(config, steps_per_epoch=10)
    expected = {0: 0.01, 19: 0.01, 20: 0.001, 39: 0.001, 40: 0.0001, 1000: 0.0001}
    got = {step: float(schedule(step)) for step in expected}
    np.testing.assert_allclose(list(got.values()), list(expected.values()), rtol=1e-6)


def test_step_schedule_through_the_optimizer_uses_schedule_of_the_update_count():
    config = _config(learning_rate=0.01, schedule="step", lr_drop_epochs=(2, 4))
    tx = optim.create_optimizer(config, steps_per_epoch=10)
    params = {"w": jnp.ones((2,))}

    @jax.jit
    def step(state):
        _, state = tx.update(params, state, params)
        return state, optim.current_learning_rate(state)

    state, lrs = tx.init(params), []
    for _ in range(41):
        state, lr = step(state)
        lrs.append(float(lr))
    np.testing.assert_allclose(lrs, [0.01] * 20 + [0.001] * 20 + [0.0001], rtol=1e-6)


def test_drop_epochs_to_steps_round_and_merge():
    assert optim.epochs_to_step_boundaries((0.5, 2), 10, 0.1) == {5: 0.1, 20: 0.1}
    merged = optim.epochs_to_step_boundaries((1.0, 1.01), 10, 0.1)
    assert list(merged) == [10]
    np.testing.assert_allclose(merged[10], 0.01)


@pytest.mark.parametrize("schedule", ["constant", "plateau"])
def test_constant_and_plateau_schedules_are_constant(schedule):
    sched = optim.make_schedule(_config(learning_rate=0.01, schedule=schedule), 10)
    np.testing.assert_allclose([float(sched(s)) for s in (0, 10, 10_000)], [0.01] * 3, rtol=1e-6)


def test_plateau_drops_after_patience_at_most_max_drops_times():
    errors = [0.9, 0.8, 0.8, 0.85, 0.7, 0.75, 0.75, 0.75, 0.75, 0.75, 0.75, 0.75, 0.6]
    want_drops = [0, 0, 0, 1, 1, 1, 2, 2, 3, 3, 3, 3, 3]  # patience 2, counter reset per drop
    want_wait = [0, 0, 1, 0, 0, 1, 0, 1, 0, 1, 2, 3, 0]
    state, drops, waits = optim.init_plateau(), [], []
    for error in errors:
        state = optim.plateau_update(state, error, patience=2, factor=0.1, max_drops=3)
        drops.append(int(state.num_drops))
        waits.append(int(state.evals_without_improvement))
    assert drops == want_drops
    assert waits == want_wait
    np.testing.assert_allclose(float(state.scale), 1e-3, rtol=1e-6)
    np.testing.assert_allclose(float(state.best_error), 0.6, rtol=1e-6)


def test_plateau_patience_one_min_delta_and_nan():
    kw = dict(patience=1, factor=0.1, max_drops=3, min_delta=0.01)
    state = optim.plateau_update(optim.init_plateau(), 0.5, **kw)
    state = optim.plateau_update(state, 0.495, **kw)  # better, but by less than min_delta
    assert int(state.num_drops) == 1
    state = optim.plateau_update(state, float("nan"), **kw)  # NaN is never an improvement
    assert int(state.num_drops) == 2
    np.testing.assert_allclose(float(state.best_error), 0.5, rtol=1e-6)


def test_plateau_state_is_a_pytree_of_numpy_scalars():
    state = optim.plateau_update(optim.init_plateau(), 0.3, patience=1, factor=0.1, max_drops=3)
    leaves = jax.tree.leaves(state)
    assert len(leaves) == 4
    assert all(isinstance(x, np.ndarray) and x.shape == () for x in leaves)
    restored = jax.tree.unflatten(jax.tree.structure(state), leaves)
    assert isinstance(restored, optim.PlateauState)


@pytest.mark.parametrize("optimizer", ["paper_sgd", "sgd"])
def test_plateau_scale_reaches_the_optimizer_through_lr_scale(optimizer):
    config = _config(optimizer=optimizer, learning_rate=0.01, weight_decay=0.0, schedule="plateau")
    tx = optim.create_optimizer(config, steps_per_epoch=10)
    params = {"w": jnp.ones((3,))}
    grads = {"w": jnp.ones((3,))}
    state = tx.init(params)
    np.testing.assert_allclose(float(optim.current_learning_rate(state)), 0.01, rtol=1e-6)
    assert state.hyperparams["lr_scale"].dtype == jnp.float32

    plateau = optim.init_plateau()
    for error in (0.5, 0.5):  # patience 1: the second one drops the lr
        plateau = optim.plateau_update(plateau, error, patience=1, factor=0.1, max_drops=3)
    scaled = optim.set_lr_scale(state, plateau.scale)
    np.testing.assert_allclose(float(scaled.hyperparams["lr_scale"]), 0.1, rtol=1e-6)
    assert float(state.hyperparams["lr_scale"]) == 1.0  # set_lr_scale is pure

    updates, scaled = tx.update(grads, scaled, params)
    np.testing.assert_allclose(float(optim.current_learning_rate(scaled)), 0.001, rtol=1e-6)
    np.testing.assert_allclose(updates["w"], -0.001 * np.ones(3), rtol=1e-6)  # first step: -lr g


@pytest.mark.parametrize("optimizer", ["paper_sgd", "sgd"])
def test_jitted_update_does_not_recompile_when_lr_scale_changes(optimizer):
    config = _config(optimizer=optimizer, learning_rate=0.01, schedule="plateau")
    tx = optim.create_optimizer(config, steps_per_epoch=10)
    params = _params()
    grads = _grads(1, params)[0]

    chex.clear_trace_counter()  # parametrized: the counter is keyed by the function's code

    @jax.jit
    @chex.assert_max_traces(n=1)
    def train_step(params, opt_state):
        updates, opt_state = tx.update(grads, opt_state, params)
        return (
            optax.apply_updates(params, updates),
            opt_state,
            optim.current_learning_rate(opt_state),
        )

    opt_state, lrs = tx.init(params), []
    for scale in (1.0, 0.1, np.float32(0.01), jnp.asarray(0.001)):
        opt_state = optim.set_lr_scale(opt_state, scale)
        params, opt_state, lr = train_step(params, opt_state)
        lrs.append(float(lr))
    np.testing.assert_allclose(lrs, [0.01, 0.001, 1e-4, 1e-5], rtol=1e-6)


def test_lr_helpers_see_through_wrapping_optimizers():
    tx = optax.apply_if_finite(optim.create_optimizer(_config(learning_rate=0.02), 1), 3)
    state = optim.set_lr_scale(tx.init(_params()), 0.5)
    np.testing.assert_allclose(float(optim.current_learning_rate(state)), 0.02, rtol=1e-6)
    assert float(state.inner_state.hyperparams["lr_scale"]) == 0.5


def test_lr_helpers_reject_a_state_without_the_hyperparameters():
    state = optax.sgd(0.1).init(_params())
    with pytest.raises(ValueError, match="lr_scale"):
        optim.set_lr_scale(state, 0.1)
    with pytest.raises(ValueError, match="learning_rate"):
        optim.current_learning_rate(state)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("optimizer", "adam"),
        ("schedule", "cosine"),
        ("learning_rate", 0.0),
        ("learning_rate", -0.01),
        ("learning_rate", "0.01"),
        ("momentum", 1.0),
        ("momentum", -0.1),
        ("weight_decay", -1e-4),
        ("decoupled_weight_decay", True),  # with optimizer "paper_sgd"
        ("lr_drop_factor", 0.0),
        ("lr_drop_factor", 1.0),
        ("lr_drop_factor", 10.0),
        ("lr_drop_epochs", (47, 20)),
        ("lr_drop_epochs", (20, 20)),
        ("lr_drop_epochs", (-1, 20)),
        ("lr_drop_epochs", 20),
        ("plateau_patience", 0),
        ("plateau_patience", 1.5),
        ("plateau_max_drops", -1),
    ],
)
def test_invalid_optimizer_config_raises_config_error_naming_the_field(field, value):
    config = _config(**{field: value})
    with pytest.raises(ConfigError, match=rf"config\.{field}\b"):
        rules.check(config, optim.RULES)
    full = _full_config(**{field: value})
    with pytest.raises(UserError, match=rf"config\.{field}\b"):  # where every entry point checks
        config_lib.validate_config(full)


# ---- Warm-up, clipping, parameter groups ---------------------------------------------------------


def _numpy_loop_per_leaf(params, grads, lrs_per_leaf, wds, *, clip=0.0, m=MOMENTUM):
    """The paper's rule in float64 with each leaf's own lr sequence and decay; gradients first
    rescaled to global norm <= clip (over all leaves) when clip > 0."""
    w = [np.asarray(x, np.float64) for x in jax.tree.leaves(params)]
    v = [np.zeros_like(x) for x in w]
    trajectory = []
    for step, g_tree in enumerate(grads):
        g = [np.asarray(x, np.float64) for x in jax.tree.leaves(g_tree)]
        if clip > 0:
            norm = np.sqrt(sum(np.sum(x**2) for x in g))
            g = [x * min(1.0, clip / norm) for x in g]
        new = [
            _paper_rule(wi, vi, gi, lrs[step], wd, m)
            for wi, vi, gi, lrs, wd in zip(w, v, g, lrs_per_leaf, wds, strict=True)
        ]
        w, v = [list(x) for x in zip(*new, strict=True)]
        trajectory.append(list(w))
    return trajectory


def test_warmup_ramps_the_lr_linearly_from_the_first_update_then_follows_the_schedule():
    # 4 steps per epoch, 0.5 epoch of warm-up = 2 updates: lr x 1/2, x 1, then the step schedule.
    config = _config(warmup_epochs=0.5, **DROP_CONFIG)
    params = _params()
    grads = _grads(len(LRS), params)
    got, _, lrs = _run(optim.create_optimizer(config, STEPS_PER_EPOCH), params, grads)
    want_lrs = [0.025, 0.05, 0.05, 0.05, 0.005, 0.005, 0.005, 0.005]
    np.testing.assert_allclose(lrs, want_lrs, rtol=1e-6)
    want = _numpy_loop(_paper_rule, params, grads, want_lrs, wd=config.weight_decay)
    _assert_trajectories_close(got, want)


def test_gradient_clipping_rescales_to_the_global_norm_before_the_decay():
    params = _params()
    grads = [jax.tree.map(lambda g: 10.0 * g, g) for g in _grads(6, params)]  # norms ~ 20
    config = _config(grad_clip_norm=1.5)
    got, _, _ = _run(optim.create_optimizer(config, STEPS_PER_EPOCH), params, grads)
    n = len(jax.tree.leaves(params))
    want = _numpy_loop_per_leaf(params, grads, [[0.05] * 6] * n, [0.01] * n, clip=1.5)
    _assert_trajectories_close(got, want)


# Leaves in tree order: conv/bias, conv/kernel, fc/kernel. Biases: own lr, constant, no decay;
# conv kernels: own drops, the second one to 0 (frozen); the rest (fc) follows the config.
GROUPS = {
    "biases": {
        "params": r".*/bias",
        "learning_rate": 0.1,
        "weight_decay": 0.0,
        "schedule": "constant",
    },
    "conv": {"params": r"conv/kernel", "lr_drop_epochs": (1, 1.5), "lr_drop_factor": (0.1, 0.0)},
}


def test_param_groups_give_each_group_its_lr_decay_and_schedule_like_a_numpy_loop():
    config = _config(param_groups=ml_collections.ConfigDict(GROUPS), **DROP_CONFIG)
    params = _params()
    grads = _grads(len(LRS), params)
    got, _, lrs = _run(optim.create_optimizer(config, STEPS_PER_EPOCH), params, grads)
    bias_lrs, conv_lrs = [0.1] * 8, [0.05] * 4 + [0.005] * 2 + [0.0] * 2
    want = _numpy_loop_per_leaf(params, grads, [bias_lrs, conv_lrs, LRS], [0.0, 0.01, 0.01])
    _assert_trajectories_close(got, want)
    np.testing.assert_allclose(lrs, LRS, rtol=1e-6)  # the logged lr: the default group's


def test_lr_scale_reaches_every_parameter_group():
    config = _config(param_groups=ml_collections.ConfigDict(GROUPS))
    tx = optim.create_optimizer(config, STEPS_PER_EPOCH)
    params = _params()
    state = optim.set_lr_scale(tx.init(params), 0.0)  # a zero lr everywhere: only decay 0 moves
    grads = _grads(1, params)[0]
    updates, _ = tx.update(grads, state, params)
    for leaf in jax.tree.leaves(updates):
        np.testing.assert_array_equal(leaf, 0.0)


@pytest.mark.parametrize(
    ("groups", "message"),
    [
        ({"default": {"params": "fc/.*"}}, "free of the name 'default'"),
        ({"g": {"learning_rate": 0.1}}, "'params' regular expression"),
        ({"g": {"params": "conv/("}}, "valid regular expressions"),
        ({"g": {"params": "fc/.*", "lr": 0.1}}, r"has \['lr'\]"),
        ({"g": {"params": "fc/.*", "learning_rate": -1.0}}, "learning_rate=-1.0"),
        ({"g": {"params": "fc/.*", "schedule": "plateau"}}, "schedule='plateau'"),
        ({"g": {"params": "fc/.*", "lr_drop_epochs": (2, 1)}}, "lr_drop_epochs"),
        (
            {"g": {"params": "fc/.*", "lr_drop_epochs": (1, 2), "lr_drop_factor": (0.1,)}},
            "lr_drop_factor",
        ),
    ],
)
def test_invalid_param_groups_are_one_config_error(groups, message):
    config = _config(param_groups=ml_collections.ConfigDict(groups))
    with pytest.raises(ConfigError, match=rf"config\.param_groups must be .*{message}"):
        rules.check(config, optim.RULES)


@pytest.mark.parametrize(
    ("groups", "message"),
    [
        ({"a": {"params": r"conv/.*"}, "b": {"params": r".*/bias"}}, "matches groups"),
        ({"a": {"params": r"conv1/kernel"}}, "match no parameter"),
    ],
)
def test_overlapping_or_empty_param_groups_are_refused_at_init(groups, message):
    config = _config(param_groups=ml_collections.ConfigDict(groups))
    tx = optim.create_optimizer(config, STEPS_PER_EPOCH)
    with pytest.raises(ConfigError, match=message):
        tx.init(_params())


def test_missing_optimizer_field_raises_config_error():
    config = _config()
    del config["plateau_max_drops"]
    with pytest.raises(ConfigError, match=r"config\.plateau_max_drops is missing"):
        rules.check(config, optim.RULES)


def test_default_config_is_valid_and_makes_an_optimizer(repo_root):
    path = os.path.join(repo_root, "configs", "default.py")
    spec = importlib.util.spec_from_file_location("default_config", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config()
    rules.check(config, optim.RULES)
    tx = optim.create_optimizer(config, steps_per_epoch=10)
    state = tx.init(_params())
    # The demo recipe's warm-up: the first update of a 10-step epoch uses a tenth of the lr.
    first = config.learning_rate * min(1.0, 1.0 / (config.warmup_epochs * 10))
    np.testing.assert_allclose(float(optim.current_learning_rate(state)), first, rtol=1e-6)


def test_a_schedule_registered_from_outside_the_package_is_accepted_and_used(monkeypatch):
    """Adding a schedule is one function and one SCHEDULES entry (here from this test file): the
    config's rule takes the new name and create_optimizer runs it, warm-up and all."""
    cosine = lambda lr, setting, steps_per_epoch: optax.cosine_decay_schedule(
        lr, 4 * steps_per_epoch
    )
    monkeypatch.setitem(optim.SCHEDULES, "cosine", cosine)
    config = _full_config(schedule="cosine", learning_rate=0.1, warmup_epochs=0.0)
    config_lib.validate_config(config)
    tx = optim.create_optimizer(config, steps_per_epoch=10)
    _, _, lrs = _run(tx, _params(), _grads(40, _params()))  # the lr each update used
    np.testing.assert_allclose(lrs, [float(cosine(0.1, None, 10)(i)) for i in range(40)], rtol=1e-6)
    assert lrs[0] == pytest.approx(0.1)
    assert lrs[-1] < 0.001
    with pytest.raises(ConfigError, match=r"config\.schedule must be one of"):
        config_lib.validate_config(_full_config(schedule="cosine_typo"))


def test_plateau_with_parameter_groups_says_what_to_do():
    """Pass 7, #26: configs/figure1.py (groups without a schedule) with schedule=plateau blamed
    the groups' settings ("schedule='plateau'; ... schedule 'constant' or 'step'") and named no
    fix. The message says why a group cannot take 'plateau' and the two ways out; a group with
    its own schedule is fine under 'plateau' (its drops scale every group)."""
    groups = {"biases": {"params": ".*/bias", "learning_rate": 0.002}}
    config = _config(schedule="plateau", param_groups=ml_collections.ConfigDict(groups))
    with pytest.raises(ConfigError) as error:
        rules.check(config, optim.RULES)
    assert "group 'biases' sets none and would take 'plateau'" in str(error.value)
    assert 'Give each group "schedule": "constant" or "step" in the config file' in str(error.value)
    assert "or train without groups: --config.param_groups={}" in str(error.value)
    groups["biases"]["schedule"] = "constant"
    config = _config(schedule="plateau", param_groups=ml_collections.ConfigDict(groups))
    rules.check(config, optim.RULES)

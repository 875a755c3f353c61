"""What a config trains, on one mesh: the train state, the pure steps, and the one builder that
jits them (mesh -> model -> optimizer -> shardings -> jitted steps).

    exp = experiment.build(config, steps_per_epoch=100)
    state = exp.init_state()
    state, metrics = exp.train_step(state, sharding.to_global_batch(batch, exp.mesh))

The training loop, `--mode=eval`, the run loader, the benchmarks, the scripts and the tests all
build through here, so a change to the setup (a sharding, a donation, a model option) is made
once. The steps are pure: one SGD step on a global batch (`train_step`) and eval sums over a
batch (`eval_step`). Dropout masks are drawn for the global batch from `fold_in(key, step)` with
partitionable threefry, so each example's mask is the same on 1 or 8 devices: runs on different
device counts agree to float rounding, and a resumed run replays exactly.

With config.augment_on="device" the steps take the input pipeline's uint8 batches: each begins
with alexnet_jax.data.augment's `train_inputs` / `eval_inputs` (crop, flip, lighting,
normalization, cast) in the same jitted program, on the batch as sharded;
`Experiment.train_inputs` / `eval_inputs` are those functions jitted alone (what the model sees,
for tests and tools).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax

from alexnet_jax.data import augment
from alexnet_jax.data.recipe import Recipe
from alexnet_jax.model.layers import Net
from alexnet_jax.model.models import create_model
from alexnet_jax.train import config_lib, optim, sharding

# ---- The train state ------------------------------------------------------------------------


@flax.struct.dataclass
class TrainState:
    step: jax.Array  # int32 scalar: optimizer steps taken.
    params: Any
    opt_state: Any
    rng: jax.Array  # uint32 key data of the dropout key; folded with the step each step.
    plateau: optim.PlateauState  # reduce-on-plateau bookkeeping (host-updated after evals).
    skipped_steps: jax.Array  # int32: steps skipped for non-finite values (if configured).


def state_sharding(model: Any, tx: optax.GradientTransformation, mesh: jax.sharding.Mesh) -> Any:
    """Shardings of the TrainState (a pytree prefix): the optimizer state follows the params."""
    rep = sharding.replicated(mesh)
    if getattr(model, "mesh", None) is None:
        return rep
    params = sharding.abstract_params(model)
    return TrainState(
        step=rep,
        params=sharding.param_sharding(params, mesh),
        opt_state=sharding.param_sharding(jax.eval_shape(tx.init, params), mesh),
        rng=rep,
        plateau=rep,
        skipped_steps=rep,
    )


def create_train_state(
    config: Any, model: Any, tx: optax.GradientTransformation, mesh: jax.sharding.Mesh
) -> TrainState:
    """Initializes the state directly with its shardings (no host copy of the params)."""
    size = config.input_size

    def init(key: jax.Array) -> TrainState:
        params_key, dropout_key = jax.random.split(key)
        images = jnp.zeros((1, size, size, 3), jnp.float32)
        params = model.init(params_key, images, train=False)["params"]
        return TrainState(
            step=jnp.zeros((), jnp.int32),
            params=params,
            opt_state=tx.init(params),
            rng=jax.random.key_data(dropout_key),
            plateau=optim.init_plateau(),
            skipped_steps=jnp.zeros((), jnp.int32),
        )

    key = jax.random.key(config.seed)
    return jax.jit(init, out_shardings=state_sharding(model, tx, mesh))(key)


# ---- The steps ----------------------------------------------------------------------------------


def _topk_correct(logits: jax.Array, labels: jax.Array, k: int) -> jax.Array:
    """1.0 where the label is among the k highest logits (k clipped to the number of classes)."""
    k = min(k, logits.shape[-1])
    _, top = jax.lax.top_k(logits, k)
    return jnp.any(top == labels[:, None], axis=-1).astype(jnp.float32)


def _masked_mean(values: jax.Array, mask: jax.Array) -> jax.Array:
    mask = mask.astype(jnp.float32)
    return jnp.sum(values * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def train_step(
    state: TrainState,
    batch: dict[str, jax.Array],
    *,
    model: Any,
    tx: optax.GradientTransformation,
    skip_nonfinite: bool,
) -> tuple[TrainState, dict[str, jax.Array]]:
    """One SGD step on a global batch; returns the new state and this step's metrics (the
    batch's loss and top-1/top-5 error rates, the learning rate, the gradient norm)."""
    dropout_key = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)
    labels, mask = batch["label"], batch["mask"]

    def loss_fn(params):
        logits = model.apply(
            {"params": params}, batch["image"], train=True, rngs={"dropout": dropout_key}
        )
        losses = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
        return _masked_mean(losses, mask), logits

    (loss, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    grad_norm = optax.tree.norm(grads)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    new_state = state.replace(
        step=state.step + 1, params=optax.apply_updates(state.params, updates), opt_state=opt_state
    )
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    if skip_nonfinite:  # keep the old params/optimizer state, count the step as skipped
        kept = jax.tree_util.tree_map(
            lambda new, old: jnp.where(finite, new, old), new_state, state
        )
        new_state = kept.replace(
            step=state.step + 1, skipped_steps=state.skipped_steps + (~finite).astype(jnp.int32)
        )
    metrics = {
        "loss": loss,
        "top1_error": _masked_mean(1.0 - _topk_correct(logits, labels, 1), mask),
        "top5_error": _masked_mean(1.0 - _topk_correct(logits, labels, 5), mask),
        "learning_rate": optim.current_learning_rate(opt_state),
        "grad_norm": grad_norm,
        "finite": finite,
    }
    return new_state, metrics


def eval_step(params: Any, batch: dict[str, jax.Array], *, model: Any) -> dict[str, jax.Array]:
    """Sums of loss and of top-1/top-5 correct predictions ("top1", "top5": counts, turned into
    error rates once on the host by loop.evaluate) over the real (mask=True) examples of a
    batch of V views each.

    `image` is (B, V, H, W, 3); the softmax of the V views is averaged (the paper's 10-patch test),
    and the loss is the cross-entropy of that average.
    """
    images, labels, mask = batch["image"], batch["label"], batch["mask"]
    b, v = images.shape[:2]
    logits = model.apply({"params": params}, images.reshape((b * v, *images.shape[2:])))
    log_probs = jax.nn.log_softmax(logits).reshape((b, v, -1))  # (B, V, C)
    mean_log_probs = jax.nn.logsumexp(log_probs, axis=1) - jnp.log(v)  # log of mean softmax
    losses = -jnp.take_along_axis(mean_log_probs, labels[:, None], axis=-1)[:, 0]
    m = mask.astype(jnp.float32)
    return {
        "loss": jnp.sum(losses * m),
        "top1": jnp.sum(_topk_correct(mean_log_probs, labels, 1) * m),
        "top5": jnp.sum(_topk_correct(mean_log_probs, labels, 5) * m),
        "count": jnp.sum(m),
    }


# ---- The builder --------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Experiment:
    """A config's model, optimizer and jitted steps on one mesh."""

    config: Any
    mesh: jax.sharding.Mesh
    model: Net
    tx: optax.GradientTransformation
    steps_per_epoch: int  # the optimizer schedule's epoch length
    state_sharding: Any  # a TrainState-shaped pytree prefix of NamedShardings
    params_sharding: Any
    batch_sharding: jax.sharding.NamedSharding
    train_step: Callable  # (state, batch) -> (state, metrics); donates the state
    eval_step: Callable  # (params, batch of B x V views) -> sums of loss/top1/top5/count
    # augment_on="device": a host batch (uint8) -> the model's batch, as the steps begin; else None
    train_inputs: Callable | None = None
    eval_inputs: Callable | None = None

    def init_state(self) -> TrainState:
        """A fresh state from config.seed, created directly with its shardings."""
        return create_train_state(self.config, self.model, self.tx, self.mesh)

    def abstract_state(self) -> TrainState:
        """Shapes, dtypes and shardings of `init_state()`, computing nothing: a restore target."""
        shapes = jax.eval_shape(self.init_state)
        return jax.tree_util.tree_map(
            lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh),
            shapes,
            _expand_prefix(self.state_sharding, shapes),
        )


def _expand_prefix(prefix: Any, tree: Any) -> Any:
    """A sharding pytree prefix (one sharding for a whole subtree) expanded to `tree`'s leaves."""
    return jax.tree_util.tree_map(
        lambda sh, sub: jax.tree_util.tree_map(lambda _: sh, sub),
        prefix,
        tree,
        is_leaf=lambda x: isinstance(x, jax.sharding.Sharding),
    )


def _device_inputs(config: Any, mean_image: Any) -> tuple[Callable, Callable] | None:
    """augment_on="device": the functions that turn host batches into model batches."""
    if config.augment_on != "device":
        return None
    recipe = Recipe.from_config(config)
    return (
        functools.partial(
            augment.train_inputs, recipe=recipe, seed=int(config.seed), mean_image=mean_image
        ),
        functools.partial(augment.eval_inputs, recipe=recipe, mean_image=mean_image),
    )


def _after(inputs: Callable, step: Callable) -> Callable:
    """step(x, inputs(batch)): a step that begins with the device input stage."""
    return lambda x, batch: step(x, inputs(batch))


def build(
    config: Any,
    mesh: jax.sharding.Mesh | None = None,
    *,
    steps_per_epoch: int | None = None,
    mean_image: Any = None,
    training: bool = True,
) -> Experiment:
    """Validates `config` and builds its experiment on `mesh` (default: all devices,
    config.mesh_shape).

    steps_per_epoch: the epoch length of the learning-rate schedule (train split size // batch
      size; the training loop computes it from the data). None: 1, for users that only need the
      shapes (restoring a run's params), which the schedule does not change.
    mean_image: float32 [S, S, 3] (input_pipeline.load_mean_image), needed by the device path's
      steps with normalization "mean_image" (a ValueError when they are first called without it).
    training: False when only its evaluation runs (config.batch_size is then not split).
    """
    mesh = sharding.make_mesh(config) if mesh is None else mesh
    config_lib.validate_config(config, num_devices=mesh.shape[sharding.DATA], training=training)
    steps_per_epoch = 1 if steps_per_epoch is None else int(steps_per_epoch)
    model = create_model(config, mesh=sharding.tower_mesh(config, mesh))
    tx = optim.create_optimizer(config, steps_per_epoch)
    state_shardings = state_sharding(model, tx, mesh)
    params_shardings = sharding.params_sharding(model, mesh)
    batch_shardings = sharding.batch_sharding(mesh)
    train_fn = functools.partial(
        train_step, model=model, tx=tx, skip_nonfinite=config.skip_nonfinite_steps
    )
    eval_fn = functools.partial(eval_step, model=model)
    inputs = _device_inputs(config, mean_image)
    jitted_inputs = (None, None)
    if inputs is not None:
        train_fn, eval_fn = _after(inputs[0], train_fn), _after(inputs[1], eval_fn)
        jitted_inputs = tuple(
            jax.jit(f, in_shardings=batch_shardings, out_shardings=batch_shardings) for f in inputs
        )
    jitted_train = jax.jit(
        train_fn,
        in_shardings=(state_shardings, batch_shardings),
        out_shardings=(state_shardings, sharding.replicated(mesh)),
        donate_argnums=0,
    )
    jitted_eval = jax.jit(
        eval_fn,
        in_shardings=(params_shardings, batch_shardings),
        out_shardings=sharding.replicated(mesh),
    )
    return Experiment(
        config=config,
        mesh=mesh,
        model=model,
        tx=tx,
        steps_per_epoch=steps_per_epoch,
        state_sharding=state_shardings,
        params_sharding=params_shardings,
        batch_sharding=batch_shardings,
        train_step=jitted_train,
        eval_step=jitted_eval,
        train_inputs=jitted_inputs[0],
        eval_inputs=jitted_inputs[1],
    )

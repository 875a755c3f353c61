"""One builder for what a config trains: mesh -> model -> optimizer -> shardings -> jitted steps.

    exp = experiment.build(config, steps_per_epoch=100)
    state = exp.init_state()
    state, metrics = exp.train_step(state, sharding.to_global_batch(batch, exp.mesh))

The training loop, `--mode=eval`, the run-directory loader, the benchmarks, the scripts and the
tests all build through here, so a change to the setup (a sharding, a donation, a model option)
is made once.

With config.augment_on="device" the steps take the input pipeline's uint8 batches: each begins
with alexnet_jax.data.augment's `train_inputs` / `eval_inputs` (crop, flip, lighting, normalization,
cast) in the same jitted program, on the batch as sharded; `Experiment.train_inputs` /
`eval_inputs` are those functions jitted alone (what the model sees, for tests and tools).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import jax
import optax

from alexnet_jax.data import augment
from alexnet_jax.data.recipe import Recipe
from alexnet_jax.model.layers import Net
from alexnet_jax.model.models import create_model
from alexnet_jax.train import config_lib, optim, sharding, steps
from alexnet_jax.train.train_state import TrainState, create_train_state, state_sharding


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
) -> Experiment:
    """Validates `config` and builds its experiment on `mesh` (default: all devices,
    config.mesh_shape).

    steps_per_epoch: the epoch length of the learning-rate schedule (train split size // batch
      size; the training loop computes it from the data). None: 1, for users that only need the
      shapes (restoring a run's params), which the schedule does not change.
    mean_image: float32 [S, S, 3] (input_pipeline.load_mean_image), needed by the device path's
      steps with normalization "mean_image" (a ValueError when they are first called without it).
    """
    mesh = sharding.make_mesh(config) if mesh is None else mesh
    config_lib.validate_config(config, num_devices=mesh.shape[sharding.DATA])
    steps_per_epoch = 1 if steps_per_epoch is None else int(steps_per_epoch)
    model = create_model(config, mesh=sharding.tower_mesh(config, mesh))
    tx = optim.create_optimizer(config, steps_per_epoch)
    state_shardings = state_sharding(model, tx, mesh)
    params_shardings = sharding.params_sharding(model, mesh)
    batch_shardings = sharding.batch_sharding(mesh)
    train_fn = functools.partial(
        steps.train_step, model=model, tx=tx, skip_nonfinite=config.skip_nonfinite_steps
    )
    eval_fn = functools.partial(steps.eval_step, model=model)
    inputs = _device_inputs(config, mean_image)
    jitted_inputs = (None, None)
    if inputs is not None:
        train_fn, eval_fn = _after(inputs[0], train_fn), _after(inputs[1], eval_fn)
        jitted_inputs = tuple(
            jax.jit(f, in_shardings=batch_shardings, out_shardings=batch_shardings) for f in inputs
        )
    train_step = jax.jit(
        train_fn,
        in_shardings=(state_shardings, batch_shardings),
        out_shardings=(state_shardings, sharding.replicated(mesh)),
        donate_argnums=0,
    )
    eval_step = jax.jit(
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
        train_step=train_step,
        eval_step=eval_step,
        train_inputs=jitted_inputs[0],
        eval_inputs=jitted_inputs[1],
    )

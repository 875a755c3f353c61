"""One builder for what a config trains: mesh -> model -> optimizer -> shardings -> jitted steps.

    exp = experiment.build(config, steps_per_epoch=100)
    state = exp.init_state()
    state, metrics = exp.train_step(state, sharding.to_global_batch(batch, exp.mesh))

The training loop, `--mode=eval`, the run-directory loader, the benchmarks, the scripts and the
tests all build through here, so a change to the setup (a sharding, a donation, a model option)
is made once.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import jax
import optax

from alexnet_jax import config_lib, optim, sharding, steps
from alexnet_jax.models import AlexNet, create_model
from alexnet_jax.train_state import TrainState, create_train_state, state_sharding


@dataclasses.dataclass(frozen=True)
class Experiment:
    """A config's model, optimizer and jitted steps on one mesh."""

    config: Any
    mesh: jax.sharding.Mesh
    model: AlexNet
    tx: optax.GradientTransformation
    steps_per_epoch: int  # the optimizer schedule's epoch length
    state_sharding: Any  # a TrainState-shaped pytree prefix of NamedShardings
    params_sharding: Any
    batch_sharding: jax.sharding.NamedSharding
    train_step: Callable  # (state, batch) -> (state, metrics); donates the state
    eval_step: Callable  # (params, batch of B x V views) -> sums of loss/top1/top5/count

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


def build(
    config: Any, mesh: jax.sharding.Mesh | None = None, *, steps_per_epoch: int | None = None
) -> Experiment:
    """Validates `config` and builds its experiment on `mesh` (default: all devices,
    config.mesh_shape).

    steps_per_epoch: the epoch length of the learning-rate schedule (train split size // batch
      size; the training loop computes it from the data). None: 1, for users that only need the
      shapes (restoring a run's params), which the schedule does not change.
    """
    mesh = sharding.make_mesh(config) if mesh is None else mesh
    config_lib.validate_config(config, num_devices=mesh.shape[sharding.DATA])
    steps_per_epoch = 1 if steps_per_epoch is None else int(steps_per_epoch)
    model = create_model(config, mesh=sharding.tower_mesh(config, mesh))
    tx = optim.create_optimizer(config, steps_per_epoch)
    state_shardings = state_sharding(model, tx, mesh)
    params_shardings = sharding.params_sharding(model, mesh)
    batch_shardings = sharding.batch_sharding(mesh)
    train_step = jax.jit(
        functools.partial(
            steps.train_step, model=model, tx=tx, skip_nonfinite=config.skip_nonfinite_steps
        ),
        in_shardings=(state_shardings, batch_shardings),
        out_shardings=(state_shardings, sharding.replicated(mesh)),
        donate_argnums=0,
    )
    eval_step = jax.jit(
        functools.partial(steps.eval_step, model=model),
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
    )

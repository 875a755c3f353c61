"""The train state: params, optimizer state, step and dropout key, created already sharded."""

from __future__ import annotations

from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax

from alexnet_jax.train import optim, sharding


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

"""Training and evaluation: the train state, pure step functions on a device mesh, and the loop.

The steps are `jax.jit` functions with declared `NamedSharding`s over one mesh: the state is
replicated (on a ("data", "tower") mesh the paper's tower layers are split over "tower", see
`state_sharding` and parallel.py), the batch is split over the "data" axis and XLA inserts the
gradient all-reduce. Dropout masks are drawn for the global batch from `fold_in(key, step)` with
partitionable threefry, so each example's mask is the same on 1 or 8 devices: runs on different
device counts agree to float rounding, and a resumed run replays exactly.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
from collections.abc import Iterator
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from alexnet_jax import (
    checkpoint,
    config_lib,
    input_pipeline,
    metrics_io,
    optim,
    parallel,
    plots,
    weights_io,
)
from alexnet_jax.errors import ConfigError, UserError
from alexnet_jax.models import create_model

CONFIG_FILE = "config.json"


class NonFiniteError(RuntimeError):
    """Raised when a training step produced a NaN/Inf loss or gradient."""


@flax.struct.dataclass
class TrainState:
    step: jax.Array  # int32 scalar: optimizer steps taken.
    params: Any
    opt_state: Any
    rng: jax.Array  # uint32 key data of the dropout key; folded with the step each step.
    plateau: optim.PlateauState  # reduce-on-plateau bookkeeping (host-updated after evals).
    skipped_steps: jax.Array  # int32: steps skipped for non-finite values (if configured).


# ---- Mesh and placement -----------------------------------------------------------------------


def make_mesh(config: ml_collections.ConfigDict, devices: Any = None) -> jax.sharding.Mesh:
    """One mesh over all devices: axis "data" (and "tower" when config.mesh_shape has two sizes)."""
    devices = jax.devices() if devices is None else list(devices)
    n = len(devices)
    shape = tuple(config.mesh_shape) or (n,)
    if int(np.prod(shape)) != n or len(shape) not in (1, 2):
        raise ConfigError(
            f"config.mesh_shape={tuple(config.mesh_shape)} must be () or (data,) or (data, tower) "
            f"with a product equal to the {n} available devices."
        )
    names = ("data", "tower")[: len(shape)]
    return jax.make_mesh(
        shape, names, axis_types=(jax.sharding.AxisType.Auto,) * len(shape), devices=devices
    )


def batch_sharding(mesh: jax.sharding.Mesh) -> NamedSharding:
    return NamedSharding(mesh, P("data"))


def replicated(mesh: jax.sharding.Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def params_sharding(model: Any, mesh: jax.sharding.Mesh) -> Any:
    """Shardings of the params: replicated, except for a tower-parallel model (`model.mesh` set,
    parallel.py), whose tower layers keep each tower's kernels and biases on its own devices."""
    if getattr(model, "mesh", None) is None:
        return replicated(mesh)
    return parallel.param_sharding(parallel.abstract_params(model), mesh)


def state_sharding(model: Any, tx: optax.GradientTransformation, mesh: jax.sharding.Mesh) -> Any:
    """Shardings of the TrainState (a pytree prefix): the optimizer state follows the params."""
    if getattr(model, "mesh", None) is None:
        return replicated(mesh)
    params, rep = parallel.abstract_params(model), replicated(mesh)
    return TrainState(
        step=rep,
        params=parallel.param_sharding(params, mesh),
        opt_state=parallel.param_sharding(jax.eval_shape(tx.init, params), mesh),
        rng=rep,
        plateau=rep,
        skipped_steps=rep,
    )


def to_global_batch(batch: dict[str, np.ndarray], mesh: jax.sharding.Mesh) -> dict[str, jax.Array]:
    """Assembles each host's local batch into global arrays split over the "data" axis."""
    sharding = batch_sharding(mesh)
    return {
        k: jax.make_array_from_process_local_data(sharding, np.asarray(v)) for k, v in batch.items()
    }


def prefetch_to_mesh(
    batches: Iterator[dict[str, np.ndarray]], mesh: jax.sharding.Mesh, size: int = 2
) -> Iterator[dict[str, jax.Array]]:
    """Keeps `size` batches in flight to the devices so host-to-device copies overlap compute."""
    queue: list[dict[str, jax.Array]] = []
    for batch in batches:
        queue.append(to_global_batch(batch, mesh))
        if len(queue) > size:
            yield queue.pop(0)
    yield from queue


# ---- State and steps --------------------------------------------------------------------------


def create_train_state(
    config: ml_collections.ConfigDict, model: Any, tx: optax.GradientTransformation, mesh: Any
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
    """One SGD step on a global batch; returns the new state and this step's metrics."""
    dropout_key = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)
    labels, mask = batch["label"], batch["mask"]

    def loss_fn(params):
        logits = model.apply(
            {"params": params}, batch["image"], train=True, rngs={"dropout": dropout_key}
        )
        losses = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
        return _masked_mean(losses, mask), logits

    (loss, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    grad_norm = optax.global_norm(grads)
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
        "top1": _masked_mean(_topk_correct(logits, labels, 1), mask),
        "top5": _masked_mean(_topk_correct(logits, labels, 5), mask),
        "learning_rate": optim.current_learning_rate(opt_state),
        "grad_norm": grad_norm,
        "finite": finite,
    }
    return new_state, metrics


def eval_step(params: Any, batch: dict[str, jax.Array], *, model: Any) -> dict[str, jax.Array]:
    """Sums of loss/top-1/top-5 over the real (mask=True) examples of a batch of V views each.

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


def make_train_step(model: Any, tx: Any, mesh: Any, skip_nonfinite: bool):
    """`train_step` jitted with the state donated and shardings declared."""
    step = functools.partial(train_step, model=model, tx=tx, skip_nonfinite=skip_nonfinite)
    state = state_sharding(model, tx, mesh)
    return jax.jit(
        step,
        in_shardings=(state, batch_sharding(mesh)),
        out_shardings=(state, replicated(mesh)),
        donate_argnums=0,
    )


def make_eval_step(model: Any, mesh: Any):
    step = functools.partial(eval_step, model=model)
    params = params_sharding(model, mesh)
    return jax.jit(
        step, in_shardings=(params, batch_sharding(mesh)), out_shardings=replicated(mesh)
    )


def evaluate(eval_step_fn, params: Any, batches, mesh: Any) -> dict[str, float]:
    """Mean loss and top-1/top-5 accuracy over one pass of the eval split (padding excluded)."""
    totals = None
    for batch in prefetch_to_mesh(iter(batches), mesh):
        sums = eval_step_fn(params, batch)
        totals = sums if totals is None else jax.tree_util.tree_map(jnp.add, totals, sums)
    if totals is None:
        raise UserError("The evaluation split is empty: check config.eval_split and the data.")
    totals = jax.device_get(totals)
    count = max(float(totals["count"]), 1.0)
    return {
        "loss": float(totals["loss"]) / count,
        "top1": float(totals["top1"]) / count,
        "top5": float(totals["top5"]) / count,
        "num_examples": float(totals["count"]),
    }


# ---- The loop ---------------------------------------------------------------------------------


def total_train_steps(config: ml_collections.ConfigDict, steps_per_epoch: int) -> int:
    if config.num_train_steps > 0:
        return int(config.num_train_steps)
    return int(np.ceil(config.num_epochs * steps_per_epoch))


def _check_finite(step_metrics: list[tuple[int, dict]], skip_nonfinite: bool) -> None:
    """Raises NonFiniteError naming the first step whose loss or gradient was NaN/Inf."""
    if skip_nonfinite:
        return
    for step, metrics in step_metrics:
        if not bool(metrics["finite"]):
            raise NonFiniteError(
                f"Step {step}: the loss or gradient is NaN/Inf (loss={float(metrics['loss'])}, "
                f"grad_norm={float(metrics['grad_norm'])}). Stopped without saving; the last "
                "good checkpoint is kept. Lower config.learning_rate, or set "
                "config.skip_nonfinite_steps=True to skip such steps."
            )


def _update_plateau(state: TrainState, eval_metrics: dict, config, mesh) -> TrainState:
    """Host-side reduce-on-plateau: feeds the validation top-1 error, applies the new lr scale."""
    if config.schedule != "plateau":
        return state
    plateau = optim.plateau_update(
        jax.device_get(state.plateau),
        1.0 - eval_metrics["top1"],
        patience=config.plateau_patience,
        factor=config.lr_drop_factor,
        max_drops=config.plateau_max_drops,
    )
    opt_state = optim.set_lr_scale(state.opt_state, plateau.scale)
    new = state.replace(plateau=plateau, opt_state=opt_state)
    return jax.device_put(new, jax.tree.map(lambda x: x.sharding, state))


def _setup(config: ml_collections.ConfigDict):
    """Validated config -> (mesh, dataset info, steps per epoch, model, optimizer)."""
    mesh = make_mesh(config)
    config_lib.validate_config(config, mesh.shape["data"])
    info = input_pipeline.prepare(config)
    steps_per_epoch = info.num_train_examples // config.batch_size
    if steps_per_epoch < 1:
        raise ConfigError(
            f"config.batch_size={config.batch_size} exceeds the {info.num_train_examples} training "
            "examples: lower the batch size."
        )
    model = create_model(config, mesh=parallel.tower_mesh(config, mesh))
    return mesh, info, steps_per_epoch, model, optim.create_optimizer(config, steps_per_epoch)


def save_config(config: ml_collections.ConfigDict, workdir: str) -> None:
    """Writes the run's config to `workdir/config.json` (process 0), for tools that read the run."""
    if jax.process_index() == 0:
        os.makedirs(workdir, exist_ok=True)
        with open(os.path.join(workdir, CONFIG_FILE), "w") as f:
            f.write(config.to_json(indent=2))


def load_config(workdir: str) -> ml_collections.ConfigDict:
    """The config a run in `workdir` was trained with (saved by train_and_evaluate)."""
    path = os.path.join(workdir, CONFIG_FILE)
    if not os.path.exists(path):
        raise UserError(f"{path} not found: --workdir must be a directory written by main.py.")
    with open(path) as f:
        return ml_collections.ConfigDict(json.load(f))


def load_params(workdir: str, mesh: Any = None) -> tuple[ml_collections.ConfigDict, Any]:
    """(config, params) of the latest checkpoint in `workdir`, without touching the dataset.

    The params come back replicated over `mesh` (default: every device on one "data" axis,
    whatever mesh the run was trained on: checkpoints restore onto any topology).
    """
    config = load_config(workdir)
    if mesh is None:
        mesh = jax.make_mesh((jax.device_count(),), ("data",))
    model = create_model(config)
    tx = optim.create_optimizer(config, steps_per_epoch=1)  # the schedule does not change shapes
    target = jax.eval_shape(lambda: create_train_state(config, model, tx, mesh))
    target = jax.tree_util.tree_map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=replicated(mesh)), target
    )
    manager = checkpoint.create_manager(workdir, config.keep_checkpoints)
    restored = checkpoint.restore_latest(manager, target, already_abstract=True)
    manager.close()
    if restored is None:
        raise UserError(f"No checkpoint in {checkpoint.checkpoint_dir(workdir)}: train first.")
    return config, restored[0].params


def evaluate_checkpoint(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
    """Evaluates the latest checkpoint of `workdir` (or `config.torch_weights`, a PyTorch file).

    Uses `config.eval_crops` views per image; the result is logged to the workdir's metrics.
    """
    mesh, _, _, model, tx = _setup(config)
    if config.torch_weights:
        weights = weights_io.load_weights(
            config.torch_weights, config.variant, num_classes=config.num_classes
        )
        params = jax.device_put(weights, params_sharding(model, mesh))
        step = 0
    else:
        manager = checkpoint.create_manager(workdir, config.keep_checkpoints)
        restored = checkpoint.restore_latest(manager, create_train_state(config, model, tx, mesh))
        manager.close()
        if restored is None:
            raise UserError(
                f"No checkpoint in {checkpoint.checkpoint_dir(workdir)}: train first "
                "(--mode=train), point --workdir at a run, or set --config.torch_weights."
            )
        params, step = restored[0].params, int(restored[0].step)
    pc, pi = jax.process_count(), jax.process_index()
    eval_batches = input_pipeline.create_eval_iterator(
        config, local_batch_size=config.eval_batch_size // pc, process_index=pi, process_count=pc
    )
    metrics = evaluate(make_eval_step(model, mesh), params, eval_batches, mesh)
    writer = metrics_io.MetricsWriter(workdir, start_step=None)
    writer.write_eval(step, metrics)
    writer.close()
    return metrics


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
    """Trains `config` in `workdir`, resuming from its latest checkpoint; returns the final eval.

    Sections: setup -> restore -> loop (log, preemption, eval, checkpoint) -> final eval and save.
    """
    # -- Setup: mesh, config, data, model, optimizer.
    mesh, _, steps_per_epoch, model, tx = _setup(config)
    num_steps = total_train_steps(config, steps_per_epoch)
    eval_every = config.eval_every_steps or steps_per_epoch

    # -- Restore the latest checkpoint, if any.
    state = create_train_state(config, model, tx, mesh)
    manager = checkpoint.create_manager(workdir, config.keep_checkpoints)
    restored = checkpoint.restore_latest(manager, state)
    examples_consumed = 0
    if restored is not None:
        state, data_state = restored
        examples_consumed = int(data_state["examples_consumed"])
        logging.info("Resumed at step %d (%d examples seen).", int(state.step), examples_consumed)
    start_step = int(state.step)
    writer = metrics_io.MetricsWriter(workdir, start_step)
    save_config(config, workdir)

    # -- Loop.
    pc, pi = jax.process_count(), jax.process_index()
    train_iter = input_pipeline.create_train_iterator(
        config,
        local_batch_size=config.batch_size // pc,
        start_example=examples_consumed,
        process_index=pi,
        process_count=pc,
    )
    eval_batches = input_pipeline.create_eval_iterator(
        config, local_batch_size=config.eval_batch_size // pc, process_index=pi, process_count=pc
    )
    train_step_fn = make_train_step(model, tx, mesh, config.skip_nonfinite_steps)
    eval_step_fn = make_eval_step(model, mesh)
    preemption = metrics_io.PreemptionWatcher(manager)
    progress = metrics_io.Progress(start_step, num_steps, config.batch_size)
    pending: list[tuple[int, dict]] = []
    eval_metrics: dict[str, float] = {}

    def flush_train_metrics(step: int) -> None:
        host = [(s, jax.device_get(m)) for s, m in pending]
        pending.clear()
        _check_finite(host, config.skip_nonfinite_steps)
        if host:
            counts = {
                "skipped_steps": int(state.skipped_steps),
                "undecodable_images": train_iter.num_undecodable,
            }
            writer.write_train(step, host, progress.update(step), counts)

    def save(step: int) -> None:
        flush_train_metrics(step)  # never save after an unnoticed NaN
        checkpoint.save(
            manager,
            step,
            state,
            {
                "examples_consumed": examples_consumed + (step - start_step) * config.batch_size,
                "batch_size": config.batch_size,
            },
        )

    batches = prefetch_to_mesh(train_iter, mesh)
    step, preempted = start_step, False
    # Also on errors, in this order: commit the saves in flight (so the last good checkpoint is
    # kept), close the metrics, restore the SIGTERM handler. A failed close raises only if the
    # run was ending without an error, which it must not replace.
    with contextlib.ExitStack() as cleanup:
        cleanup.callback(preemption.close)
        cleanup.push(lambda kind, *_: writer.close(raise_errors=kind is None))
        cleanup.push(lambda kind, *_: checkpoint.close(manager, raise_errors=kind is None))
        while step < num_steps:
            state, metrics = train_step_fn(state, next(batches))
            step += 1
            pending.append((step, metrics))
            if step % config.log_every_steps == 0:
                flush_train_metrics(step)
            if preemption.reached(step):
                logging.warning("Preemption signal: saving step %d and exiting.", step)
                save(step)
                preempted = True
                break
            if step % eval_every == 0 and step < num_steps:
                flush_train_metrics(step)
                eval_metrics = evaluate(eval_step_fn, state.params, eval_batches, mesh)
                writer.write_eval(step, eval_metrics)
                state = _update_plateau(state, eval_metrics, config, mesh)
            if step % config.checkpoint_every_steps == 0 and step < num_steps:
                save(step)

        # -- Final evaluation and checkpoint.
        if not preempted:
            flush_train_metrics(step)
            eval_metrics = evaluate(eval_step_fn, state.params, eval_batches, mesh)
            writer.write_eval(step, eval_metrics)
            if manager.latest_step() != step:
                save(step)
    if preempted:
        return {}
    if jax.process_index() == 0:
        plots.plot_training_curves(workdir)
    return eval_metrics

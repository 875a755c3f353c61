"""The training loop: `train_and_evaluate(config, workdir)`, and `evaluate_checkpoint`.

The setup (mesh, model, optimizer, shardings, jitted steps) comes from experiment.build, the
pure steps from steps.py, the workdir's files from rundir.py. The state is replicated (on a
("data", "tower") mesh the paper's tower layers are split over "tower", see sharding.py and
parallel.py), the batch is split over the "data" axis and XLA inserts the gradient all-reduce.
"""

from __future__ import annotations

import contextlib
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from alexnet_jax import (
    checkpoint,
    config_lib,
    experiment,
    input_pipeline,
    metrics_io,
    optim,
    plots,
    rundir,
    sharding,
    weights_io,
)
from alexnet_jax.errors import ConfigError, NonFiniteError, UserError
from alexnet_jax.train_state import TrainState

# ---- Evaluation ------------------------------------------------------------------------------


def evaluate(eval_step_fn, params: Any, batches, mesh: Any) -> dict[str, float]:
    """Mean loss and top-1/top-5 accuracy over one pass of the eval split (padding excluded)."""
    totals = None
    for batch in sharding.prefetch_to_mesh(iter(batches), mesh):
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


def _build(config: ml_collections.ConfigDict) -> experiment.Experiment:
    """Validates the config, prepares the data and builds the experiment over all devices."""
    mesh = sharding.make_mesh(config)
    config_lib.validate_config(config, num_devices=mesh.shape[sharding.DATA])  # before any data
    info = input_pipeline.prepare(config)
    steps_per_epoch = info.num_train_examples // config.batch_size
    if steps_per_epoch < 1:
        raise ConfigError(
            f"config.batch_size={config.batch_size} exceeds the {info.num_train_examples} training "
            "examples: lower the batch size."
        )
    return experiment.build(config, mesh, steps_per_epoch=steps_per_epoch)


def _eval_batches(config: ml_collections.ConfigDict) -> input_pipeline.EvalIterable:
    """This host's part of the eval split, one pass per iteration."""
    pc, pi = jax.process_count(), jax.process_index()
    return input_pipeline.create_eval_iterator(
        config, local_batch_size=config.eval_batch_size // pc, process_index=pi, process_count=pc
    )


def evaluate_checkpoint(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
    """Evaluates the latest checkpoint of `workdir` (or `config.torch_weights`, a PyTorch file).

    Uses `config.eval_crops` views per image; the result is logged to the workdir's metrics.
    """
    exp = _build(config)
    if config.torch_weights:
        weights = weights_io.load_weights(
            config.torch_weights, config.variant, num_classes=config.num_classes
        )
        params = jax.device_put(weights, exp.params_sharding)
        step = 0
    else:
        manager = rundir.checkpoint_manager(workdir, config.keep_checkpoints)
        restored = checkpoint.restore_latest(manager, exp.abstract_state(), already_abstract=True)
        manager.close()
        if restored is None:
            raise UserError(
                f"No checkpoint in {rundir.checkpoint_dir(workdir)}: train first "
                "(--mode=train), point --workdir at a run, or set --config.torch_weights."
            )
        params, step = restored[0].params, int(restored[0].step)
    metrics = evaluate(exp.eval_step, params, _eval_batches(config), exp.mesh)
    writer = metrics_io.MetricsWriter(workdir, start_step=None)
    writer.write_eval(step, metrics)
    writer.close()
    return metrics


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
    """Trains `config` in `workdir`, resuming from its latest checkpoint; returns the final eval.

    Sections: setup -> restore -> loop (log, preemption, eval, checkpoint) -> final eval and save.
    """
    # -- Setup: mesh, config, data, model, optimizer, steps.
    exp = _build(config)
    mesh, steps_per_epoch = exp.mesh, exp.steps_per_epoch
    num_steps = total_train_steps(config, steps_per_epoch)
    eval_every = config.eval_every_steps or steps_per_epoch

    # -- Restore the latest checkpoint, if any; else a fresh state.
    manager = rundir.checkpoint_manager(workdir, config.keep_checkpoints)
    restored = checkpoint.restore_latest(manager, exp.abstract_state(), already_abstract=True)
    examples_consumed = 0
    if restored is not None:
        state, data_state = restored
        examples_consumed = int(data_state["examples_consumed"])
        logging.info("Resumed at step %d (%d examples seen).", int(state.step), examples_consumed)
    else:
        state = exp.init_state()
    start_step = int(state.step)
    writer = metrics_io.MetricsWriter(workdir, start_step)
    rundir.save_config(config, workdir)

    # -- Loop.
    pc, pi = jax.process_count(), jax.process_index()
    train_iter = input_pipeline.create_train_iterator(
        config,
        local_batch_size=config.batch_size // pc,
        start_example=examples_consumed,
        process_index=pi,
        process_count=pc,
    )
    eval_batches = _eval_batches(config)
    train_step_fn, eval_step_fn = exp.train_step, exp.eval_step
    preemption = checkpoint.PreemptionWatcher(manager)
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

    batches = sharding.prefetch_to_mesh(train_iter, mesh)
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

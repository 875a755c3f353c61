"""The training loop: `train_and_evaluate(config, workdir)`, and `evaluate_checkpoint`.

The setup (mesh, model, optimizer, shardings, jitted steps) and the pure steps come from
experiment.py; the run's records from runs/run.py. The state is replicated (on a
("data", "tower") mesh the paper's tower layers are split over "tower", see sharding.py and
parallel.py), the batch is split over the "data" axis and XLA inserts the gradient all-reduce.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import os
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from alexnet_jax.core import console
from alexnet_jax.core.errors import ConfigError, Interrupted, NonFiniteError, UserError
from alexnet_jax.data import data_sources, input_pipeline, recipe
from alexnet_jax.interop import weights_io
from alexnet_jax.model import models
from alexnet_jax.runs import report, rundir
from alexnet_jax.runs import run as run_lib
from alexnet_jax.runs.run import Run
from alexnet_jax.train import checkpoint, config_lib, experiment, metrics_io, optim, sharding
from alexnet_jax.train.experiment import TrainState

# ---- Evaluation ------------------------------------------------------------------------------


# Steps (train or evaluation) dispatched ahead of the device. Dispatch never waits for the
# device by itself: a host faster than it queued the whole eval split (50,000 steps on a CPU
# test), holding every batch in memory and starving XLA's collectives until a rendezvous timed
# out (abort); and with 2 CPU devices per process (launch), 100 queued train steps deadlocked
# XLA:CPU's gloo all-reduce (hostile pass 19, #46: one device's step waited in the all-reduce
# for the other's, which waited for a slot of the queue). Two keep the device busy.
_IN_FLIGHT = 2


def evaluate(
    eval_step_fn, params: Any, batches, mesh: Any, stop: Callable[[], bool] | None = None
) -> dict[str, float] | None:
    """Mean loss and top-1/top-5 error rates over one pass of the eval split (padding
    excluded): the device sums correct predictions, turned into errors here, once. None when
    `stop()` turned true between two batches (a Ctrl-C or SIGTERM: the evaluation is left)."""
    totals, in_flight = None, collections.deque()
    for batch in sharding.prefetch_to_mesh(iter(batches), mesh):
        if stop is not None and stop():
            return None
        sums = eval_step_fn(params, batch)
        totals = sums if totals is None else jax.tree_util.tree_map(jnp.add, totals, sums)
        in_flight.append(totals)  # (at most _IN_FLIGHT steps queued)
        if len(in_flight) > _IN_FLIGHT:
            jax.block_until_ready(in_flight.popleft())
    if totals is None:
        raise UserError("The evaluation split is empty: check config.eval_split and the data.")
    totals = jax.device_get(totals)
    count = max(float(totals["count"]), 1.0)
    return {
        "loss": float(totals["loss"]) / count,
        "top1_error": 1.0 - float(totals["top1"]) / count,
        "top5_error": 1.0 - float(totals["top5"]) / count,
        "num_examples": float(totals["count"]),
    }


# ---- The loop ---------------------------------------------------------------------------------


def total_train_steps(config: ml_collections.ConfigDict, steps_per_epoch: int) -> int:
    if config.num_train_steps > 0:
        return int(config.num_train_steps)
    return int(np.ceil(config.num_epochs * steps_per_epoch))


# What a diverged run's message says of its checkpoints; `train_and_evaluate` fills it in
# (`_kept`), where the saves in flight are committed.
KEPT = "<kept>"


def _kept(workdir: str) -> str:
    """What a diverged run leaves: its last checkpoint (by step), or nothing saved."""
    steps = rundir.saved_steps(workdir)
    if not steps:
        return "No checkpoint was saved: there is nothing to resume from."
    return f"The last good checkpoint, step {steps[-1]}, is kept."


def _check_finite(step_metrics: list[tuple[int, dict]], skip_nonfinite: bool) -> None:
    """Raises NonFiniteError naming the first step whose loss or gradient was NaN/Inf."""
    if skip_nonfinite:
        return
    for step, metrics in step_metrics:
        if not bool(metrics["finite"]):
            raise NonFiniteError(
                f"Step {step}: the loss or gradient is NaN/Inf (loss={float(metrics['loss'])}, "
                f"grad_norm={float(metrics['grad_norm'])}). Stopped without saving it. {KEPT} "
                "Lower config.learning_rate, or set "
                "config.skip_nonfinite_steps=True to skip such steps."
            )


# How to rerun with other values (hostile pass 17, #24: the same workdir refused them as a
# config change, and the message had not said so).
RERUN_CHANGED = (
    "To train with other values, use a new --workdir, or add --allow_config_change to go on in "
    "this one (the change is recorded in its config_history.jsonl)."
)


def likely_causes(config: Any) -> str:
    """What in `config` can make a run diverge, for the message that says it did."""
    causes = []
    if config.learning_rate > 0.1:
        causes.append(f"config.learning_rate={config.learning_rate:g} is high (the paper's: 0.01)")
    if config.pca_lighting_std > 1:
        causes.append(
            f"config.pca_lighting_std={config.pca_lighting_std:g} is large (the paper's: 0.1)"
        )
    if config.weight_decay * config.learning_rate > 1e-3:
        causes.append(
            f"config.weight_decay={config.weight_decay:g} is large for this learning rate "
            "(the paper's: 5e-4 at 0.01)"
        )
    if not config.grad_clip_norm and config.learning_rate > 0.01:
        causes.append("no gradient clipping (config.grad_clip_norm=0)")
    if not causes:
        return (
            f"Nothing in the config stands out (config.learning_rate={config.learning_rate:g}); "
            "a lower learning rate, a longer config.warmup_epochs or config.grad_clip_norm may "
            "help."
        )
    return f"Likely causes in this config: {'; '.join(causes)}."


SKIPPED_IN_A_ROW = "skipped_in_a_row"  # a checkpoint's data record: the streak it ends with


class _SkipCounter:
    """Steps skipped for non-finite values (config.skip_nonfinite_steps): each is logged, and more
    than config.max_consecutive_skipped_steps in a row stop the run (NonFiniteError).

    in_a_row: the streak a resumed run's checkpoint ended with (its data record's
    "skipped_in_a_row"): a resume continues it, so a run stops at the step the uninterrupted run
    stops at (hostile pass 17, #53: the count restarted at 0).
    """

    def __init__(self, config: ml_collections.ConfigDict, in_a_row: int = 0):
        self.enabled = bool(config.skip_nonfinite_steps)
        self.limit = int(config.max_consecutive_skipped_steps)
        self.total, self.in_a_row = 0, in_a_row

    def update(self, step_metrics: list[tuple[int, dict]]) -> None:
        if not self.enabled:
            return
        for step, metrics in step_metrics:
            if bool(metrics["finite"]):
                self.in_a_row = 0
                continue
            self.total += 1
            self.in_a_row += 1
            console.warning(
                f"Step {step}: the loss or gradient is NaN/Inf; update skipped ({self.in_a_row} "
                f"in a row, {self.total} in this session)."
            )
            if self.in_a_row > self.limit:
                raise NonFiniteError(
                    f"Steps {step - self.in_a_row + 1}-{step}: {self.in_a_row} steps in a row had "
                    f"a NaN/Inf loss or gradient (config.max_consecutive_skipped_steps="
                    f"{self.limit}): the run has diverged. {KEPT} Lower "
                    "config.learning_rate."
                )

    def summarize(self) -> None:
        if self.total:
            console.warning(f"{self.total} step(s) were skipped for NaN/Inf values.")


def _update_plateau(state: TrainState, eval_metrics: dict, config, mesh) -> TrainState:
    """Host-side reduce-on-plateau: feeds the validation top-1 error, applies the new lr scale."""
    if config.schedule != "plateau":
        return state
    plateau = optim.plateau_update(
        jax.device_get(state.plateau),
        eval_metrics["top1_error"],
        patience=config.plateau_patience,
        factor=config.lr_drop_factor,
        max_drops=config.plateau_max_drops,
    )
    opt_state = optim.set_lr_scale(state.opt_state, plateau.scale)
    new = state.replace(plateau=plateau, opt_state=opt_state)
    return jax.device_put(new, jax.tree.map(lambda x: x.sharding, state))


def _build(
    config: ml_collections.ConfigDict, training: bool = True
) -> tuple[experiment.Experiment, input_pipeline.DatasetInfo]:
    """Validates the config, prepares the data (training=False: what evaluation reads, see
    input_pipeline.prepare) and builds the experiment over all devices."""
    config_lib.validate_config(config)  # before the mesh and any data
    mesh = sharding.make_mesh(config)
    config_lib.validate_config(config, num_devices=mesh.shape[sharding.DATA], training=training)
    info = input_pipeline.prepare(config, training)
    steps_per_epoch = info.num_train_examples // config.batch_size
    if steps_per_epoch < 1 and not training:  # an evaluation trains nothing (torch_weights with
        steps_per_epoch = 1  # another config's batch size was refused: hostile pass 19, #35)
    if steps_per_epoch < 1:
        raise ConfigError(
            f"config.batch_size={config.batch_size} exceeds the {info.num_train_examples} training "
            "examples: lower the batch size."
        )
    mean = input_pipeline.load_mean_image(config) if config.augment_on == "device" else None
    exp = experiment.build(
        config, mesh, steps_per_epoch=steps_per_epoch, mean_image=mean, training=training
    )
    return exp, info


def _other_data(own: dict, config: ml_collections.ConfigDict) -> list[str]:
    """The data fields (rundir.EVAL_DATA_FIELDS) in which an evaluation's config names other data
    than the run's config `own`: paths compared as the folders they name, so the run's own data
    written another way (`/x/../tfds/`, `~/`) is the run's own (hostile pass 25, #38)."""

    def where(path):
        return os.path.realpath(os.path.expanduser(path)) if path else path

    return [k for k in rundir.EVAL_DATA_FIELDS if where(own.get(k)) != where(config[k])]


def _changed_data(config: ml_collections.ConfigDict, own: dict, workdir: str) -> list[str]:
    """The fields of the data's identity that changed since the run recorded it (run.json), said
    in a warning: an evaluation of that data is not the run's own. The identity is taken with
    the run's own eval_split: another one is told apart as such (hostile pass 27)."""
    view = ml_collections.ConfigDict(config.to_dict())
    view.eval_split = own.get("eval_split", config.eval_split)
    changed = rundir.dataset_changes(workdir, data_sources.dataset_identity(view)) or []
    if changed:
        console.warning(
            f"The data changed since the run recorded it ({', '.join(changed)}): this "
            "evaluation is kept apart from the run's own. Restore the data to evaluate the run "
            "on what it was trained and evaluated with."
        )
    return changed


def _eval_batches(config: ml_collections.ConfigDict) -> input_pipeline.EvalIterable:
    """This host's part of the eval split, one pass per iteration."""
    pc, pi = jax.process_count(), jax.process_index()
    return input_pipeline.create_eval_iterator(
        config, local_batch_size=config.eval_batch_size // pc, process_index=pi, process_count=pc
    )


def _check_finite_eval(step: int, metrics: dict[str, float]) -> None:
    """NonFiniteError when an evaluation's loss is NaN/Inf: the parameters have diverged."""
    if not np.isfinite(metrics["loss"]):
        raise NonFiniteError(
            f"The evaluation at step {step} gave a NaN/Inf loss ({metrics['loss']}): the "
            f"parameters have diverged. {KEPT} Lower config.learning_rate."
        )


def _check_weights_conventions(config: ml_collections.ConfigDict) -> None:
    """ConfigError when the config contradicts the conventions config.torch_weights was trained
    with: those the file records (exported here), or PyTorch's for a file that records none
    (torchvision's), and the forward options (the default network for a file that records none):
    the weights would be evaluated on inputs, or with an LRN or a network, they were not trained
    for."""
    recorded = weights_io.read_conventions(config.torch_weights)
    if recorded is None:
        expected = dict(weights_io.PYTORCH_CONVENTIONS)
        if config.variant == "torchvision":  # no LRN layer: its convention does not matter
            del expected["lrn_convention"]
        source = "records no conventions, so it is taken as PyTorch-trained (torchvision's inputs, "
        source += "nn.LocalResponseNorm's alpha / n)"
    else:
        expected = {field: recorded[field] for field in weights_io.CONVENTION_FIELDS}
        source = "records the conventions it was trained with"
    # The forward options: the default network where the file or the config has none.
    options = weights_io.with_option_defaults(recorded or {})
    expected.update((field, options[field]) for field in weights_io.OPTION_DEFAULTS)
    configured = weights_io.with_option_defaults(config.to_dict())
    differ = [
        f"{field}: file {value!r}, config {configured[field]!r}"
        for field, value in expected.items()
        if value != configured[field]
    ]
    if differ:
        raise ConfigError(
            f"{config.torch_weights} {source}, and the config contradicts them "
            f"({'; '.join(differ)}): set those --config fields to the file's values."
        )


def _check_trained_classes(config: ml_collections.ConfigDict, workdir: str) -> None:
    """ConfigError when an image folder is evaluated with weights trained on other classes, or on
    the same ones in another order: the folder's labels (the places of its sorted class folders)
    would not be the weights' (a run's classes as its run.json recorded them at its start; a
    weights file's recorded class names or synsets). Either way every metric would be wrong."""
    if config.dataset != "image_folder":
        return
    if config.torch_weights:
        recorded = weights_io.read_conventions(config.torch_weights) or {}
        trained = [recorded.get(field) for field in weights_io.CLASS_FIELDS]
        what = f"{config.torch_weights} records that its weights were"
    else:
        record = rundir.read_run_record(workdir) or {}
        trained = [record.get("dataset", {}).get("classes")]
        what = f"The run in {workdir} was"
    trained = [list(names) for names in trained if names]
    if not trained:
        return  # nothing recorded (torchvision's weights): nothing to compare
    folders = list(data_sources.open_source(config, build=False).classes)
    if folders not in trained:
        raise ConfigError(
            f"{what} trained on the classes {data_sources.name_list(trained[0], 10)} (in label "
            f"order), but the image folder {config.image_folder} has the class folders "
            f"{data_sources.name_list(folders, 10)}: its labels would not be the weights' and "
            "every metric would be wrong. Evaluate on a folder with the same class folders."
        )


def evaluate_checkpoint(
    config: ml_collections.ConfigDict, workdir: str, overrides: dict[str, Any] | None = None
) -> dict[str, float]:
    """Evaluates the latest checkpoint of `workdir` (or `config.torch_weights`, a PyTorch file).

    A run is evaluated with its own config (config.json); `overrides` (the command line's
    --config.* values) may change only what is evaluated (rundir.EVAL_FIELDS: split, crops,
    batch size, data paths). Without a run in `workdir`, `config` (with its torch_weights) is
    used. Uses `config.eval_crops` views per image; the result is printed, then appended to the
    workdir's metrics, marked "reeval" when the run evaluated that step before (its own
    evaluation stays the one its curves and summaries show).
    """
    own = rundir.read_config_dict(workdir)
    if own is not None:
        config = config_lib.eval_config(workdir, overrides)
    elif not config.torch_weights:
        raise UserError(
            f"{workdir} holds no run (no {rundir.CONFIG_FILE}): train first (--mode=train), point "
            "--workdir at a run, or set --config.torch_weights."
        )
    recipe.check_outside_image_folder(config, workdir, training=False)
    recorded = own is None or os.access(workdir, os.W_OK)  # a run shared read-only: print only
    if not recorded:
        console.warning(
            f"{workdir} is read-only: the evaluation is printed, not recorded in its "
            f"{rundir.METRICS_FILE}."
        )
    with (
        run_lib.removed_if_failed(workdir),
        rundir.exclusive(workdir) if recorded else contextlib.nullcontext(),
    ):
        _check_trained_classes(config, workdir)
        exp, _ = _build(config, training=False)  # no training-only cache or store is built
        moved = _other_data(own, config) if own is not None else []
        changed = [] if own is None or moved else _changed_data(config, own, workdir)
        if own is not None and not (moved or changed):  # (other data has another mean: a
            rundir.check_data_mean_image(workdir, config)  # re-evaluation, said so)
        if config.torch_weights:
            _check_weights_conventions(config)
            weights = weights_io.load_weights(
                config.torch_weights, config.variant, config.num_classes, config.width
            )
            params = jax.device_put(weights, exp.params_sharding)
            step = 0
        else:
            restored = checkpoint.read_latest_checkpoint(workdir, exp.abstract_state())
            if restored is None:
                raise rundir.no_checkpoint_error(
                    workdir,
                    "train first (--mode=train), point --workdir at a run, or set "
                    "--config.torch_weights.",
                )
            params, step = restored[0].params, int(restored[0].step)
        metrics = evaluate(exp.eval_step, params, _eval_batches(config), exp.mesh)
        # What was evaluated is recorded; one that is not the run's own (another split, crop
        # count or data) never counts as the run's evaluation of that step.
        views = {"eval_split": str(config.eval_split), "eval_crops": int(config.eval_crops)}
        if own is not None and config.dataset == "image_folder":  # (val and validation: one
            split = data_sources.folder_split  # folder, the run's own split: pass 26, #79)
            if split(str(own.get("eval_split"))) == split(views["eval_split"]):
                views["eval_split"] = own.get("eval_split")
        views.update({k: config[k] for k in moved})  # (pass 24, #38: it was the run's own)
        if changed:  # the run's own folders, their files changed since (hostile pass 26, #60)
            views["dataset_changed"] = changed
        elsewhere = own is not None and any(own.get(k) != v for k, v in views.items())
        reeval = elsewhere or rundir.is_evaluated(workdir, step)
        line = report.eval_line(step, metrics, config.num_classes, reeval)
        if config.torch_weights:  # not the run's weights: never one of its evaluations
            views["torch_weights"] = os.path.abspath(config.torch_weights)
            reeval = True
        console.info(console.stamped(line))  # before the writes: kept even if they fail
        if recorded:
            writer = metrics_io.MetricsWriter(workdir, start_step=None)
            writer.write_eval(step, metrics, reeval=reeval, echo=False, labels=views)
            writer.close()
    return metrics


def train_and_evaluate(
    config: ml_collections.ConfigDict, workdir: str, allow_config_change: bool = False
) -> dict[str, float]:
    """Trains `config` in `workdir`, resuming from its latest checkpoint; returns the final eval.

    The run's records (lock, identity, start and end, banner, summary, curves) are runs.run.Run's;
    a resume must use the run's own config and data unless `allow_config_change`. SIGTERM saves
    and returns {}; Ctrl-C saves and raises errors.Interrupted.
    """
    if config.torch_weights:
        raise ConfigError(
            f"config.torch_weights={config.torch_weights!r} is only read by --mode=eval; "
            "training starts from config.init_scheme. Remove it, or add --mode=eval."
        )
    validate = functools.partial(config_lib.check_like, like=config)
    recipe.check_outside_image_folder(config, workdir)  # before Run makes the workdir
    with Run(workdir, config, allow_config_change, validate) as run:
        exp, info = _build(config)
        if run.changes and rundir.saved_steps(workdir):
            _refuse_a_reshaped_state(workdir, exp, run.changes)
        run.check_dataset(data_sources.dataset_identity(config))
        if not run.dataset_changes:  # (data changed on purpose has its own mean; an allowed
            rundir.check_data_mean_image(workdir, config)  # config change is no leave to edit it)
        num_steps = total_train_steps(config, exp.steps_per_epoch)
        manager = checkpoint.checkpoint_manager(workdir, config.keep_checkpoints)
        state, data_state = _restore(exp, manager)
        start_step = int(state.step)
        if (done := run.finished_before(start_step, num_steps)) is not None:
            checkpoint.close(manager)
            return done
        if start_step > num_steps:  # an unfinished run cannot end before the step it is at
            checkpoint.close(manager)
            raise ConfigError(
                f"{workdir} holds a run at step {start_step}, past the {num_steps} steps this "
                "config trains (config.num_train_steps / num_epochs): a run cannot be shortened. "
                f"To end it at step {start_step}, rerun with "
                f"--config.num_train_steps={start_step}; for a shorter run, choose another "
                "--workdir."
            )
        num_params = models.param_count(sharding.abstract_params(exp.model))
        sizes = (info.num_train_examples, info.num_eval_examples, exp.steps_per_epoch)
        banner = report.banner(config, workdir, exp.mesh, *sizes, num_steps, start_step, num_params)
        mean_image = config.normalization == "mean_image"
        writer = metrics_io.MetricsWriter(workdir, start_step, config.num_classes)
        run.start(
            start_step, banner, input_pipeline.mean_image_path(config) if mean_image else None
        )
        began = time.perf_counter()
        try:
            eval_metrics, step, signal = train_loop(config, exp, state, data_state, manager, writer)
        except NonFiniteError as e:
            told = str(e).replace(KEPT, _kept(workdir))
            raise NonFiniteError(f"{told} {likely_causes(config)} {RERUN_CHANGED}") from None
        run.summary(start_step, step, time.perf_counter() - began, stopped=signal is not None)
        if signal == "SIGINT":
            raise Interrupted(f"saved step {step} in {workdir}; rerun the same command to resume.")
        if signal is not None:
            return {}
        run.finish(step)
    return eval_metrics


def _refuse_a_reshaped_state(
    workdir: str, exp: experiment.Experiment, changes: list[tuple]
) -> None:
    """ConfigError when the changes allowed on resume (--allow_config_change) change the train
    state's structure or shapes, which its checkpoints cannot be read into: the optimizer (SGD
    has no velocity), a gradient clip, the network. Compared with the state the run's own
    config.json builds; the dtypes may differ (a restore casts them)."""
    before = experiment.build(
        config_lib.load_config(workdir), exp.mesh, steps_per_epoch=exp.steps_per_epoch
    ).abstract_state()
    after = exp.abstract_state()
    shapes = [x.shape for x in jax.tree_util.tree_leaves(before)]
    if jax.tree.structure(before) == jax.tree.structure(after) and shapes == [
        x.shape for x in jax.tree_util.tree_leaves(after)
    ]:
        return
    shown = "; ".join(f"{field}: {old!r} -> {new!r}" for field, old, new in changes[:6])
    raise ConfigError(
        f"{workdir} holds checkpoints whose train state these changes reshape ({shown}): the "
        "optimizer's state or the network would not be the saved one, so --allow_config_change "
        "cannot continue the run with them. Undo them, or start a new run in another --workdir."
    )


def _restore(exp: experiment.Experiment, manager: Any) -> tuple[TrainState, dict]:
    """(state, data state) of the latest readable checkpoint, or a fresh state at step 0."""
    restored = checkpoint.restore_latest(
        manager, exp.abstract_state(), already_abstract=True, set_aside=True
    )
    if restored is None:
        return exp.init_state(), {"examples_consumed": 0}
    state, data_state = restored
    seen = int(data_state["examples_consumed"])
    console.info(f"Resumed at step {int(state.step)} ({seen} examples seen).")
    return state, data_state


def _summed_over_processes(count: int) -> int:
    """A host-side count (each process counts the files its own input pipeline skipped) summed
    over the processes of the run: what the run's metrics.jsonl records."""
    if jax.process_count() == 1:
        return count
    from jax.experimental import multihost_utils

    return int(np.sum(multihost_utils.process_allgather(np.asarray(count, np.int64))))


class _TrainLog:
    """The train metrics since the last log line, read back from the device only when written
    (every config.log_every_steps, and before each evaluation and save), and checked then: a
    NaN/Inf stops the run (or is counted, with config.skip_nonfinite_steps)."""

    def __init__(
        self, config: Any, writer: Any, progress: Any, steps_per_epoch: int, in_a_row: int = 0
    ):
        self.config, self.writer, self.progress = config, writer, progress
        self.steps_per_epoch = steps_per_epoch
        self.skips = _SkipCounter(config, in_a_row)
        self.pending: list[tuple[int, dict]] = []

    def flush(self, step: int, state: TrainState, undecodable: int) -> None:
        host = [(s, jax.device_get(m)) for s, m in self.pending]
        self.pending.clear()
        _check_finite(host, self.config.skip_nonfinite_steps)
        self.skips.update(host)
        if host:  # (every process flushes at the same steps: the sum is a collective)
            counts = {
                "skipped_steps": int(state.skipped_steps),
                "undecodable_images": _summed_over_processes(undecodable),
                "epoch": step / self.steps_per_epoch,  # epochs trained (figure1.py's x axis)
            }
            self.writer.write_train(step, host, self.progress.update(step), counts)


def train_loop(
    config: Any,
    exp: experiment.Experiment,
    state: TrainState,
    data_state: dict,
    manager: Any,
    writer: metrics_io.MetricsWriter,
) -> tuple[dict[str, float], int, str | None]:
    """Trains from `state` to the config's last step: steps, log lines, evaluations and
    checkpoints at their intervals, the final evaluation and checkpoint. Returns (the last
    evaluation, the last step, the name of the signal that stopped it early, or None)."""
    # -- Data, schedule of the intervals, bookkeeping.
    start_step, mesh = int(state.step), exp.mesh
    num_steps = total_train_steps(config, exp.steps_per_epoch)
    eval_every = config.eval_every_steps or exp.steps_per_epoch
    pc, pi = jax.process_count(), jax.process_index()
    train_iter = input_pipeline.create_train_iterator(
        config,
        local_batch_size=config.batch_size // pc,
        start_example=int(data_state["examples_consumed"]),
        process_index=pi,
        process_count=pc,
    )
    batches, eval_batches = sharding.prefetch_to_mesh(train_iter, mesh), _eval_batches(config)
    progress = metrics_io.Progress(start_step, num_steps, config.batch_size)
    log = _TrainLog(
        config, writer, progress, exp.steps_per_epoch, data_state.get(SKIPPED_IN_A_ROW, 0)
    )
    preemption = checkpoint.PreemptionWatcher(manager)
    eval_metrics: dict[str, float] = {}

    # A signal during an evaluation leaves it (one process; several finish it, in step).
    stop = preemption.event.is_set if pc == 1 else None

    def evaluate_now(step: int, state: TrainState, reeval: bool = False) -> dict[str, float] | None:
        log.flush(step, state, train_iter.num_undecodable)
        began = time.perf_counter()
        metrics = evaluate(exp.eval_step, state.params, eval_batches, mesh, stop)
        if metrics is None:  # left for a signal: the resumed run evaluates this step
            return None
        writer.write_eval(step, metrics, reeval=reeval)
        _check_finite_eval(step, metrics)
        progress.exclude(time.perf_counter() - began)  # not training time
        return metrics

    def save(step: int, state: TrainState, eval_pending: bool = False) -> None:
        log.flush(step, state, train_iter.num_undecodable)  # never save after an unnoticed NaN
        began = time.perf_counter()
        examples = int(data_state["examples_consumed"]) + (step - start_step) * config.batch_size
        # eval_pending: the resumed run evaluates this step first.
        record = {"examples_consumed": examples, "batch_size": config.batch_size}
        if log.skips.in_a_row:  # (the streak of skipped steps this step ends: a resume goes on)
            record[SKIPPED_IN_A_ROW] = log.skips.in_a_row
        checkpoint.save(manager, step, state, {**record, "eval_pending": eval_pending})
        progress.exclude(time.perf_counter() - began)  # its blocking part: not training time

    def stopped(step: int, state: TrainState, eval_pending: bool = True) -> str:
        """Saves `step` for a signal (its evaluation owed when `eval_pending`); its name."""
        signal = preemption.signal_name or "a signal to another process"
        console.warning(f"Preemption signal: saving step {step} and exiting ({signal}).")
        if manager.latest_step() != step:
            save(step, state, eval_pending=eval_pending)
        return signal

    step, signal = start_step, None
    # Also on errors, in this order: commit the saves in flight (so the last good checkpoint is
    # kept), close the metrics, restore the signal handlers. A failed close raises only if the
    # run was ending without an error, which it must not replace.
    with contextlib.ExitStack() as cleanup:
        cleanup.callback(preemption.close)
        cleanup.push(lambda kind, *_: writer.close(raise_errors=kind is None))
        cleanup.push(lambda kind, *_: checkpoint.close(manager, raise_errors=kind is None))
        if data_state.get("eval_pending") and step < num_steps:  # a preempted run's, owed
            # (evaluated meanwhile by --mode=eval, as the run's own: this one is a re-evaluation,
            # not a second row of the run's own, hostile pass 26, #23)
            done = pi == 0 and rundir.is_evaluated(writer.workdir, step)
            if (owed := evaluate_now(step, state, reeval=done)) is None:
                signal = stopped(step, state)
            else:
                eval_metrics = owed
                state = _update_plateau(state, eval_metrics, config, mesh)
        while signal is None and step < num_steps:
            # -- Step.
            state, metrics = exp.train_step(state, next(batches))
            step += 1
            log.pending.append((step, metrics))
            if len(log.pending) > _IN_FLIGHT:  # (at most _IN_FLIGHT steps queued)
                jax.block_until_ready(log.pending[-_IN_FLIGHT - 1][1])
            # -- Log.
            if step % config.log_every_steps == 0:
                log.flush(step, state, train_iter.num_undecodable)
            # -- Preemption: every process saves this step and stops.
            if preemption.reached(step):
                signal = stopped(step, state, step % eval_every == 0 and step < num_steps)
                break
            # -- Evaluate.
            if step % eval_every == 0 and step < num_steps:
                if (evaluated := evaluate_now(step, state)) is None:
                    signal = stopped(step, state)
                    break
                eval_metrics = evaluated
                state = _update_plateau(state, eval_metrics, config, mesh)
            # -- Save.
            if step % config.checkpoint_every_steps == 0 and step < num_steps:
                save(step, state)
        # -- Final evaluation and checkpoint.
        if signal is None:
            if (evaluated := evaluate_now(step, state)) is None:
                signal = stopped(step, state)
            else:
                eval_metrics = evaluated
                # Its plateau decision goes into the final checkpoint, as an in-loop evaluation's
                # does: a run extended later resumes exactly (hostile pass 17, #2: it kept the
                # old learning rate where the uninterrupted run had dropped it).
                state = _update_plateau(state, eval_metrics, config, mesh)
                if manager.latest_step() != step:
                    save(step, state)
    log.skips.summarize()
    return eval_metrics, step, signal

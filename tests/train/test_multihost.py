"""Multi-host training (2 local processes through main.py), preemption across processes, and
restoring a checkpoint onto other device counts.

All runs train the torchvision variant at 64x64 on synthetic data with fc6/fc7 narrowed to 64
units (tests/multihost_worker.py): the same code paths, seconds instead of minutes. Relative error
of parameters: max over parameters of max |a - b| / max |b|.
"""

import json
import os
import signal
import time

import jax
import numpy as np
import pytest

from alexnet_jax.data import input_pipeline
from alexnet_jax.tools import launch
from alexnet_jax.train import checkpoint, experiment, sharding
from configs import default
from tests import multihost_worker

TOL = 1e-5
STEPS = 24  # training steps of the multi-process run (SIGTERM arrives after step 2)
SAVE_AT = 3  # the in-process reference saves here; the topology test resumes from it
BATCH = 8
SETTINGS = dict(  # the config of every run here (also passed to main.py as --config.* flags)
    dataset="synthetic",
    synthetic_train_examples=100_000,  # one epoch is longer than the run: no mid-run eval
    synthetic_eval_examples=8,
    variant="torchvision",
    input_size=64,
    num_classes=10,
    batch_size=BATCH,
    eval_batch_size=8,
    learning_rate=0.001,
    num_train_steps=STEPS,
    log_every_steps=1,
    checkpoint_every_steps=1000,
)


def _config():
    c = default.get_config()
    c.update(SETTINGS)
    return c


def _relative_error(a, b) -> float:
    errors = jax.tree.map(
        lambda x, y: float(np.max(np.abs(x - y)) / max(np.max(np.abs(y)), 1e-30)), a, b
    )
    return max(jax.tree.leaves(errors))


def _two_process_batches(config, start_example: int = 0):
    """Global batches as 2 hosts feed them: host 0's local batch, then host 1's (each host reads
    its own shard; `to_global_batch` places process 0's rows first)."""
    hosts = [
        input_pipeline.create_train_iterator(
            config,
            local_batch_size=BATCH // 2,
            start_example=start_example,
            process_index=p,
            process_count=2,
        )
        for p in range(2)
    ]
    while True:
        local = [next(h) for h in hosts]
        yield {k: np.concatenate([b[k] for b in local]) for k in local[0]}


def _build(config, num_devices: int) -> experiment.Experiment:
    """The experiment on the first `num_devices` devices, with the training loop's schedule."""
    mesh = sharding.make_mesh(config, jax.devices()[:num_devices])
    return experiment.build(config, mesh, steps_per_epoch=100_000 // BATCH)


@pytest.fixture(scope="module")
def narrow_model():
    with pytest.MonkeyPatch.context() as mp:
        multihost_worker.narrow_fc_layers(mp.setattr)
        yield


@pytest.fixture(scope="module")
def reference(narrow_model, tmp_path_factory):
    """One process, 4 devices, the 2-process run's global batches: per-step losses, the final
    params, and a checkpoint of step SAVE_AT written the way the training loop writes it."""
    config = _config()
    exp = _build(config, 4)
    state = exp.init_state()
    workdir = str(tmp_path_factory.mktemp("reference"))
    manager = checkpoint.checkpoint_manager(workdir, keep=2)
    batches, losses, params_at = _two_process_batches(config), [], {}
    for step in range(1, STEPS + 1):
        state, metrics = exp.train_step(state, sharding.to_global_batch(next(batches), exp.mesh))
        losses.append(float(metrics["loss"]))
        if step == SAVE_AT:
            checkpoint.save(manager, step, state, {"examples_consumed": step * BATCH})
            checkpoint.wait(manager)
        if step in (SAVE_AT, SAVE_AT + 2):
            params_at[step] = jax.device_get(state.params)
    manager.close()
    return {
        "losses": losses,
        "params": jax.device_get(state.params),
        "params_at": params_at,
        "workdir": workdir,
        "experiment": exp,
    }


# ---- Restore onto other device counts ---------------------------------------------------------


@pytest.mark.parametrize("num_devices", [2, 4, 8])
def test_checkpoint_from_4_devices_resumes_on_2_4_and_8(reference, num_devices):
    """A checkpoint written on 4 devices restores onto 2 and 8 (through the abstract target of
    the new mesh): params bit-identical and laid out on the new devices, the data position
    restored (the iterator resumed there yields the uninterrupted run's next batch), and the
    losses of the first two resumed steps equal the 4-device continuation's to 1e-5. Resumed on
    the same 4 devices, the continuation is bit-identical (losses and parameters)."""
    config = _config()
    # The reference's own experiment on 4 devices: same topology, same program.
    exp = reference["experiment"] if num_devices == 4 else _build(config, num_devices)
    manager = checkpoint.checkpoint_manager(reference["workdir"], keep=2)
    state, data_state = checkpoint.restore_latest(
        manager, exp.abstract_state(), already_abstract=True
    )
    manager.close()
    assert int(state.step) == SAVE_AT
    assert state.params["conv1"]["kernel"].sharding.mesh.devices.size == num_devices
    restored = jax.device_get(state.params)
    jax.tree.map(np.testing.assert_array_equal, restored, reference["params_at"][SAVE_AT])

    position = int(data_state["examples_consumed"])
    assert position == SAVE_AT * BATCH
    resumed = _two_process_batches(config, start_example=position)
    uninterrupted = _two_process_batches(config)
    for _ in range(SAVE_AT):
        next(uninterrupted)
    for k in range(2):
        batch = next(resumed)
        jax.tree.map(np.testing.assert_array_equal, batch, next(uninterrupted))
        state, metrics = exp.train_step(state, sharding.to_global_batch(batch, exp.mesh))
        expected = reference["losses"][SAVE_AT + k]
        if num_devices == 4:
            assert float(metrics["loss"]) == expected
        else:
            assert abs(float(metrics["loss"]) - expected) <= TOL * abs(expected)
    assert int(state.step) == SAVE_AT + 2
    if num_devices == 4:
        params = jax.device_get(state.params)
        jax.tree.map(np.testing.assert_array_equal, params, reference["params_at"][SAVE_AT + 2])


# ---- Two processes through main.py ------------------------------------------------------------


def _launch(workdir: str, env: dict, repo_root: str, tag: str, *extra_flags: str):
    flags = [f"--config.{k}={v}" for k, v in SETTINGS.items()]
    command = ["tests/multihost_worker.py", f"--workdir={workdir}", *flags, *extra_flags]
    log_dir = os.path.join(workdir, f"logs_{tag}")
    procs = launch.start(command, 2, 2, log_dir=log_dir, env=env, cwd=repo_root)
    return procs, log_dir


def _logs(log_dir: str) -> list[str]:
    return [open(os.path.join(log_dir, f"process_{i}.log")).read() for i in range(2)]


def _wait(procs, log_dir: str) -> list[int]:
    try:
        return launch.wait(procs, timeout=240)
    except Exception:
        print("\n".join(log[-3000:] for log in _logs(log_dir)))
        raise


def _train_losses(workdir: str) -> dict[int, float]:
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        lines = [json.loads(line) for line in f if line.strip()]
    return {m["step"]: m["loss"] for m in lines if m["split"] == "train"}


def _wait_for_step(workdir: str, step: int, procs, timeout: float = 240) -> None:
    path = os.path.join(workdir, "metrics.jsonl")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if os.path.exists(path) and max(_train_losses(workdir), default=0) >= step:
            return
        if any(p.poll() is not None for p in procs):
            raise AssertionError("a process exited before training started")
        time.sleep(0.05)
    raise TimeoutError(f"step {step} was not logged within {timeout} s")


def test_two_processes_match_one_process_and_resume_after_sigterm(reference, tmp_path, repo_root):
    """2 processes x 2 CPU devices (jax.distributed over localhost, gloo collectives) train
    through main.py. SIGTERM to process 1 after step 2: both processes save at the same step S
    and exit 0. The same command again resumes at S and finishes. Every step's loss and the final
    parameters equal the 1-process x 4-device run on the same global batches to 1e-5 relative.
    Only process 0 prints the progress (banner, steps), unless --log_all_processes; warnings
    (the preemption) come from every process."""
    workdir = str(tmp_path / "run")
    env = dict(os.environ, ALEXNET_JAX_CACHE_DIR=str(tmp_path / "jax_cache"))
    env.pop("XLA_FLAGS", None)  # the launcher sets 2 devices per process

    procs, log_dir = _launch(workdir, env, repo_root, "first")
    _wait_for_step(workdir, 2, procs)
    os.kill(procs[1].pid, signal.SIGTERM)
    assert _wait(procs, log_dir) == [0, 0]
    saved = [log.count("Preemption signal: saving step") for log in _logs(log_dir)]
    assert saved == [1, 1]
    steps = {log.split("Preemption signal: saving step ")[1].split()[0] for log in _logs(log_dir)}
    assert len(steps) == 1  # the same step on both processes
    preempted_at = int(steps.pop().rstrip("."))
    assert 2 <= preempted_at < STEPS
    assert max(_train_losses(workdir)) == preempted_at
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == [str(preempted_at)]
    first, second = _logs(log_dir)
    assert "run: " in first
    assert "step 1  loss" in first
    assert "run: " not in second
    assert "step 1  loss" not in second

    procs, log_dir = _launch(workdir, env, repo_root, "resumed", "--log_all_processes")
    assert _wait(procs, log_dir) == [0, 0]
    assert all(f"Resumed at step {preempted_at} " in log for log in _logs(log_dir))
    losses = _train_losses(workdir)
    assert sorted(losses) == list(range(1, STEPS + 1))
    logged = [losses[s] for s in range(1, STEPS + 1)]
    np.testing.assert_allclose(logged, reference["losses"], rtol=TOL)

    manager = checkpoint.checkpoint_manager(workdir, keep=2)
    target = reference["experiment"].abstract_state()
    state, data_state = checkpoint.restore_latest(manager, target, already_abstract=True)
    manager.close()
    assert int(state.step) == STEPS
    assert int(data_state["examples_consumed"]) == STEPS * BATCH
    assert _relative_error(jax.device_get(state.params), reference["params"]) <= TOL

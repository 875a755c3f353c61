"""The sharded train/eval steps: device-count invariance, multi-view evaluation, NaN handling."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alexnet_jax.core import errors
from alexnet_jax.train import experiment, loop, sharding
from configs import default
from tests import conftest, multihost_worker

pytestmark = pytest.mark.usefixtures("quick_compiles")  # compile time dominates here


def _config(**overrides):
    c = default.get_config()
    c.update(overrides)
    return c


def _batch(batch_size, size, num_classes, seed=0):
    rng = np.random.default_rng(seed)
    return {
        "image": rng.normal(0, 50, (batch_size, size, size, 3)).astype(np.float32),
        "label": rng.integers(0, num_classes, batch_size).astype(np.int32),
        "mask": np.ones(batch_size, bool),
    }


def _run_steps(config, devices, batches):
    exp = experiment.build(config, sharding.make_mesh(config, devices), steps_per_epoch=10)
    state = exp.init_state()
    losses = []
    for batch in batches:
        state, metrics = exp.train_step(state, sharding.to_global_batch(batch, exp.mesh))
        losses.append(float(metrics["loss"]))
    return losses, jax.device_get(state.params)


def _max_rel_err(a, b):
    """max |a - b| / max |b| over all leaves (the tolerance measure used in this file)."""
    errs = jax.tree_util.tree_map(
        lambda x, y: np.max(np.abs(x - y)) / max(np.max(np.abs(y)), 1e-30), a, b
    )
    return max(jax.tree_util.tree_leaves(errs))


def test_train_step_on_1_and_8_devices_agrees_to_1e5(monkeypatch):
    """Same global batch and seed: losses and params equal to 1e-5 relative, dropout included.

    Two steps, so the second loss depends on the first update; dropout is active. Dropout masks
    are drawn for the global batch, so they do not depend on the device count. (The torchvision
    variant at 64x64 with fc6/fc7 narrowed to 64 units keeps the 8-device compile short; the
    parameters are replicated either way. The paper variant's towers are compared across meshes
    in test_parallel.py.)
    """
    multihost_worker.narrow_fc_layers(monkeypatch.setattr)
    config = _config(variant="torchvision", input_size=64, num_classes=10, batch_size=8)
    batches = [_batch(8, 64, 10, seed=s) for s in range(2)]
    losses_1, params_1 = _run_steps(config, jax.devices()[:1], batches)
    losses_8, params_8 = _run_steps(config, jax.devices()[:8], batches)
    np.testing.assert_allclose(losses_8, losses_1, rtol=1e-5)
    assert _max_rel_err(params_8, params_1) <= 1e-5
    assert losses_1[0] != losses_1[1]  # the update changed the loss: the test compares real work


def test_eval_step_averages_the_softmax_of_the_views(monkeypatch):
    """eval_step's 10-view score equals the mean of 10 separately computed softmaxes (fc6/fc7
    narrowed: the averaging does not depend on their width)."""
    multihost_worker.narrow_fc_layers(monkeypatch.setattr)
    config = _config(variant="torchvision", input_size=64, num_classes=7)
    exp = experiment.build(config, sharding.make_mesh(config, jax.devices()[:2]))
    model, mesh = exp.model, exp.mesh
    params = model.init(jax.random.key(1), jnp.zeros((1, 64, 64, 3)))["params"]
    rng = np.random.default_rng(0)
    images = rng.normal(0, 1, (4, 10, 64, 64, 3)).astype(np.float32)
    labels = np.array([0, 3, 6, 2], np.int32)
    mask = np.array([True, True, True, False])
    batch = {"image": images, "label": labels, "mask": mask}
    sums = jax.device_get(exp.eval_step(params, sharding.to_global_batch(batch, mesh)))
    probs = np.stack(
        [jax.nn.softmax(model.apply({"params": params}, images[:, v])) for v in range(10)]
    ).mean(0)  # (4, 7)
    expected_loss = -np.log(probs[np.arange(4), labels])[:3].sum()
    expected_top1 = (probs.argmax(-1) == labels)[:3].sum()
    assert sums["count"] == 3
    np.testing.assert_allclose(sums["loss"], expected_loss, rtol=1e-5)
    assert sums["top1"] == expected_top1


def test_skip_nonfinite_keeps_params_and_counts(monkeypatch):
    """With skip_nonfinite, a NaN batch leaves params unchanged and increments skipped_steps
    (fc6/fc7 narrowed, as the skipping does not depend on them)."""
    multihost_worker.narrow_fc_layers(monkeypatch.setattr)
    config = _config(
        variant="torchvision", input_size=64, num_classes=5, batch_size=4, skip_nonfinite_steps=True
    )
    exp = experiment.build(
        config, sharding.make_mesh(config, jax.devices()[:1]), steps_per_epoch=10
    )
    state = exp.init_state()
    before = jax.device_get(state.params)
    bad = _batch(4, 64, 5)
    bad["image"][0, 0, 0, 0] = np.nan
    state, metrics = exp.train_step(state, sharding.to_global_batch(bad, exp.mesh))
    assert not bool(metrics["finite"])
    assert int(state.skipped_steps) == 1
    assert int(state.step) == 1
    jax.tree_util.tree_map(np.testing.assert_array_equal, jax.device_get(state.params), before)


def test_check_finite_names_the_first_bad_step():
    good = {"finite": np.bool_(True), "loss": np.float32(1.0), "grad_norm": np.float32(1.0)}
    bad = {"finite": np.bool_(False), "loss": np.float32(np.nan), "grad_norm": np.float32(np.inf)}
    with pytest.raises(errors.NonFiniteError, match=r"^Step 7: the loss or gradient is NaN/Inf"):
        loop._check_finite([(6, good), (7, bad), (8, bad)], skip_nonfinite=False)
    loop._check_finite([(7, bad)], skip_nonfinite=True)  # skipping: no error


def test_device_path_steps_begin_with_the_augmentation(monkeypatch):
    """augment_on="device": the jitted train and eval steps take the host's uint8 batches and
    hand the model exactly `train_inputs` / `eval_inputs` of them, on a 2-device mesh (the model
    steps replaced by ones that return the batch they are given; the state is a random one, fc6/fc7
    narrowed)."""
    multihost_worker.narrow_fc_layers(monkeypatch.setattr)
    monkeypatch.setattr(experiment, "train_step", lambda state, batch, **_: (state, batch))
    monkeypatch.setattr(experiment, "eval_step", lambda params, batch, **_: batch)
    fields = dict(variant="torchvision", input_size=64, resize_size=72, num_classes=5)
    config = _config(augment_on="device", batch_size=4, eval_crops=10, **fields)
    exp = experiment.build(config, sharding.make_mesh(config, jax.devices()[:2]))
    rng = np.random.default_rng(0)
    batch = {
        "image": rng.integers(0, 256, (4, 72, 72, 3), dtype=np.uint8),
        "label": np.arange(4, dtype=np.int32),
        "mask": np.ones(4, bool),
        "example_id": rng.integers(0, 2**32, (4, 2), dtype=np.uint32),
        "epoch": np.zeros(4, np.int32),
    }
    batch = sharding.to_global_batch(batch, exp.mesh)
    state = conftest.random_train_state(config)
    seen = jax.device_get(exp.train_step(state, batch)[1])
    assert seen["image"].shape == (4, 64, 64, 3)
    jax.tree_util.tree_map(np.testing.assert_array_equal, seen, exp.train_inputs(batch))
    eval_batch = {k: batch[k] for k in ("image", "label", "mask")}
    seen = jax.device_get(exp.eval_step(state.params, eval_batch))
    assert seen["image"].shape == (4, 10, 64, 64, 3)
    jax.tree_util.tree_map(np.testing.assert_array_equal, seen, exp.eval_inputs(eval_batch))


def test_evaluate_keeps_at_most_two_steps_in_flight_and_sums_every_batch(monkeypatch):
    """The evaluation dispatched its steps without ever waiting for the device: on a host faster
    than the device the whole split was queued (50,000 steps in a CPU test), every batch held in
    memory, and XLA's collectives on 2 CPU devices starved until a rendezvous timed out (an abort,
    seen under load). It waits for the step dispatched two before, and still sums every batch."""
    mesh = jax.make_mesh((1,), (sharding.DATA,))
    waited = []
    real_wait = jax.block_until_ready
    monkeypatch.setattr(jax, "block_until_ready", lambda x: waited.append(x) or real_wait(x))

    def eval_step(params, batch):
        count = jnp.sum(batch["mask"].astype(jnp.float32))
        return {"loss": count * params, "top1": count, "top5": count, "count": count}

    batches = [{"mask": np.ones([4], bool)} for _ in range(10)]
    metrics = loop.evaluate(eval_step, jnp.float32(0.5), batches, mesh)
    assert metrics == {"loss": 0.5, "top1_error": 0.0, "top5_error": 0.0, "num_examples": 40.0}
    assert len(waited) == 10 - loop._IN_FLIGHT
    assert [int(w["count"]) for w in waited] == [4 * k for k in range(1, 9)]  # oldest first

"""The pure train and eval steps: one SGD step on a global batch, and eval sums over a batch.

They are jitted with declared shardings by experiment.build. Dropout masks are drawn for the
global batch from `fold_in(key, step)` with partitionable threefry, so each example's mask is the
same on 1 or 8 devices: runs on different device counts agree to float rounding, and a resumed
run replays exactly.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax

from alexnet_jax.train import optim
from alexnet_jax.train.train_state import TrainState


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

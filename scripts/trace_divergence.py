"""Traces how a 1-device and a D-device run of the same config and seed part, step by step
(docs/REPRODUCIBILITY.md, "Why runs on different device counts part").

    python scripts/trace_divergence.py                     # one_tower, 227 px, batch 16, 4 devices
    python scripts/trace_divergence.py --devices=8 --steps=10 --learning_rate=1e-4

One process with --devices fake CPU devices runs the library's own `train_step` on a 1-device
mesh and on a --devices mesh, from the same initial state and on the same synthetic global
batches (N(0, 1) images, random labels, dropout on, the default config's paper SGD), as
scripts/measure_reproducibility.py does in separate processes. Per step it prints:

- the relative loss difference, and the parameters' after the step (worst parameter);
- `--same_params` only: how much this step's update differs when both meshes start from the
  same (1-device) parameters, i.e. the rounding of one step alone;
- for the parameters each run holds before the step, the evaluation-mode pre-activations of
  conv1-conv5 on the step's images: their largest relative difference, how many change sign
  (a ReLU that passes its gradient in one run and blocks it in the other) and, after conv1, conv2
  and conv5, how many 3x3 pooling windows pick a different maximum (the gradient goes to another
  element).
"""

from __future__ import annotations

import argparse
import os
import sys

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _relative(a, b) -> float:
    import numpy as np

    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))


def _pool_argmax(pre_activation):
    """First maximum of every 3x3 stride-2 window of ReLU(pre_activation), NHWC."""
    import numpy as np

    a = np.maximum(pre_activation, 0)
    oh, ow = (a.shape[1] - 3) // 2 + 1, (a.shape[2] - 3) // 2 + 1
    windows = [
        a[:, i : i + 2 * oh - 1 : 2, j : j + 2 * ow - 1 : 2] for i in range(3) for j in range(3)
    ]
    return np.argmax(np.stack(windows), axis=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--variant", default="one_tower")
    parser.add_argument("--devices", type=int, default=4)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--learning_rate", type=float, default=1e-3)
    parser.add_argument(
        "--same_params",
        action="store_true",
        help="also step the D-device mesh from the 1-device state",
    )
    args = parser.parse_args()
    os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={args.devices}"
    sys.path.insert(0, _REPO)
    import jax
    import numpy as np

    from alexnet_jax.model.models import default_input_size
    from alexnet_jax.train import experiment, sharding
    from configs import default

    config = default.get_config()
    config.update(variant=args.variant, input_size=default_input_size(args.variant))
    config.update(num_classes=10, batch_size=args.batch, learning_rate=args.learning_rate)
    exps = {
        n: experiment.build(
            config, sharding.make_mesh(config, jax.devices()[:n]), steps_per_epoch=100
        )
        for n in (1, args.devices)
    }
    meshes = {n: e.mesh for n, e in exps.items()}
    model = exps[1].model
    steps = {n: e.train_step for n, e in exps.items()}
    shardings = {n: e.state_sharding for n, e in exps.items()}

    def on(n, state):  # a copy of `state` laid out for the n-device mesh (the steps donate)
        return jax.device_put(jax.device_get(state), shardings[n])

    def forward(n, params, images):  # {conv: pre-activations}, evaluation mode
        fn = jax.jit(
            lambda p, x: model.apply({"params": p}, x, capture_intermediates=True)[1],
            in_shardings=(sharding.replicated(meshes[n]), sharding.batch_sharding(meshes[n])),
        )
        out = fn(params, jax.device_put(images, sharding.batch_sharding(meshes[n])))[
            "intermediates"
        ]
        return {
            k: np.asarray(out[k]["__call__"][0])
            for k in ("conv1", "conv2", "conv3", "conv4", "conv5")
        }

    def flat(params):
        leaves = jax.tree_util.tree_leaves_with_path(jax.device_get(params))
        return {jax.tree_util.keystr(k): np.asarray(v) for k, v in leaves}

    d = args.devices
    first = exps[1].init_state()
    states = {1: on(1, first), d: on(d, first)}
    rng = np.random.default_rng(0)
    size = config.input_size
    print(f"{args.variant}, batch {args.batch}, lr {args.learning_rate}: 1 device vs {d} devices")
    for step in range(1, args.steps + 1):
        batch = {
            "image": rng.standard_normal((args.batch, size, size, 3), np.float32),
            "label": rng.integers(0, 10, args.batch).astype(np.int32),
            "mask": np.ones(args.batch, bool),
        }
        acts = {n: forward(n, s.params, batch["image"]) for n, s in states.items()}
        before = flat(states[1].params)
        if args.same_params:
            alone, _ = steps[d](on(d, states[1]), sharding.to_global_batch(batch, meshes[d]))
        metrics = {}
        for n in (1, d):
            states[n], metrics[n] = steps[n](states[n], sharding.to_global_batch(batch, meshes[n]))
        p1, pd = flat(states[1].params), flat(states[d].params)
        loss1, lossd = float(metrics[1]["loss"]), float(metrics[d]["loss"])
        worst = max(p1, key=lambda k: _relative(pd[k], p1[k]))
        loss_rel = abs(lossd - loss1) / abs(loss1)
        print(
            f"step {step}: loss {loss1:.8f} vs {lossd:.8f} (rel {loss_rel:.1e});"
            f" params after: rel {_relative(pd[worst], p1[worst]):.1e} (worst {worst})"
        )
        if args.same_params:
            pa = flat(alone.params)
            update = {k: _relative(pa[k] - before[k], p1[k] - before[k]) for k in p1}
            worst_u = max(update, key=update.get)
            print(f"  one step from the same params: update rel {update[worst_u]:.1e} ({worst_u})")
        for name, a1 in acts[1].items():
            ad = acts[d][name]
            line = (
                f"  {name}: pre-activation rel {_relative(ad, a1):.1e}, "
                f"sign changes {int(np.sum((a1 > 0) != (ad > 0)))}/{a1.size}"
            )
            if name in ("conv1", "conv2", "conv5"):
                moved = _pool_argmax(a1) != _pool_argmax(ad)
                line += f", pool windows with another maximum {int(moved.sum())}/{moved.size}"
            print(line)


if __name__ == "__main__":
    main()

"""Measures what docs/REPRODUCIBILITY.md reports: the same seed and global batch on 1, 2, 4 and 8
CPU devices, and the same topology run twice in fresh processes.

    python scripts/measure_reproducibility.py        # one_tower, 227 px, batch 16, 5 steps, lr 1e-3
    python scripts/measure_reproducibility.py --variant=paper --steps=3 --json=repro.json

Each run is a fresh process with N fake CPU devices (`--xla_force_host_platform_device_count=N`)
training the library's own `train_step` (dropout on, the default config's paper SGD) on the same
synthetic global batches (N(0, 1) images, random labels). Printed: per device count, the largest
relative loss difference to the 1-device run over all steps, the parameters' relative difference
after the last step (max over parameters of max |a - b| / max |b|), and whether a second run of
the 4-device topology in a fresh process is bit-identical.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _child(args: argparse.Namespace) -> None:
    """Runs `args.steps` train steps on all local devices; writes losses and params (.npz)."""
    sys.path.insert(0, _REPO)
    import jax

    from alexnet_jax.model.models import default_input_size
    from alexnet_jax.train import experiment, sharding
    from configs import default

    config = default.get_config()
    config.update(variant=args.variant, input_size=default_input_size(args.variant))
    config.update(num_classes=10, batch_size=args.batch, learning_rate=args.learning_rate)
    exp = experiment.build(config, steps_per_epoch=100)
    mesh, state, step_fn = exp.mesh, exp.init_state(), exp.train_step
    rng = np.random.default_rng(0)
    size = config.input_size
    losses = []
    for _ in range(args.steps):
        batch = {
            "image": rng.standard_normal((args.batch, size, size, 3), np.float32),
            "label": rng.integers(0, 10, args.batch).astype(np.int32),
            "mask": np.ones(args.batch, bool),
        }
        state, metrics = step_fn(state, sharding.to_global_batch(batch, mesh))
        losses.append(float(metrics["loss"]))
    flat = jax.tree_util.tree_leaves_with_path(jax.device_get(state.params))
    arrays = {jax.tree_util.keystr(path): np.asarray(leaf) for path, leaf in flat}
    np.savez(args.out, losses=np.array(losses, np.float32), **arrays)


def _run(args: argparse.Namespace, devices: int, out: str) -> dict[str, np.ndarray]:
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    command = [sys.executable, __file__, "--child", f"--out={out}", f"--variant={args.variant}"]
    command += [
        f"--steps={args.steps}",
        f"--batch={args.batch}",
        f"--learning_rate={args.learning_rate}",
    ]
    subprocess.run(command, env=env, check=True)
    with np.load(out) as f:
        return dict(f)


def _relative(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64), b.astype(np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))


def _norm_relative(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64), b.astype(np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--variant", default="one_tower")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--learning_rate", type=float, default=1e-3)
    parser.add_argument("--devices", default="1,2,4,8")
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args)
        return
    counts = [int(n) for n in args.devices.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        runs = {n: _run(args, n, os.path.join(tmp, f"{n}.npz")) for n in counts}
        repeat = _run(args, counts[-2 if len(counts) > 1 else 0], os.path.join(tmp, "again.npz"))
    base = runs[counts[0]]
    results = {"variant": args.variant, "steps": args.steps, "batch": args.batch, "runs": {}}
    print(f"{args.variant}, batch {args.batch}, {args.steps} steps; vs {counts[0]} device(s):")
    for n, run in runs.items():
        per_step = [abs(a - b) / abs(b) for a, b in zip(run["losses"], base["losses"], strict=True)]
        loss = max(per_step)
        per_param = {k: _relative(run[k], base[k]) for k in base if k != "losses"}
        worst = max(per_param, key=per_param.get)
        norm = max(_norm_relative(run[k], base[k]) for k in per_param)
        results["runs"][n] = {
            "loss_rel": float(loss),
            "loss_rel_per_step": [float(x) for x in per_step],
            "params_rel": per_param[worst],
            "worst_param": worst,
            "params_norm_rel": norm,
        }
        print(
            f"  {n} devices: loss rel diff per step {' '.join(f'{x:.1e}' for x in per_step)}; "
            f"params: max|diff|/max|ref| "
            f"{per_param[worst]:.2e} (worst {worst}), ||diff||/||ref|| <= {norm:.2e}"
        )
    again_n = counts[-2 if len(counts) > 1 else 0]
    bitwise = all(np.array_equal(repeat[k], runs[again_n][k]) for k in repeat)
    results["bitwise_repeat"] = {"devices": again_n, "identical": bitwise}
    print(f"  {again_n} devices, second fresh process: bit-identical = {bitwise}")
    print(f"  losses ({counts[0]} device): {[float(x) for x in base['losses']]}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()

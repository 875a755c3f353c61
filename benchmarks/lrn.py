"""Local response normalization: every implementation of alexnet_jax.model.lrn against PyTorch's.

    python benchmarks/lrn.py --batch_size=32,64 --repeats=10

On the conv1 (B, 55, 55, 96) and conv2 (B, 27, 27, 256) activations: forward, and forward +
backward (the vector-Jacobian product with a random cotangent, as in training), of each
implementation ("conv", "reduce_window", "slices": how the windowed sum of squares is computed,
all with the hand-derived JVP of alexnet_jax/model/lrn.py), of the same formula left to JAX's
automatic differentiation ("<impl> autodiff": the library before its custom JVP), and of
torch.nn.functional.local_response_norm on NCHW tensors (its native layout). All use the
cuda-convnet convention (alpha / n) that torch computes, and each JAX result is checked against
torch's. Contenders are timed round-robin; medians are reported with the speed-up over torch.
The last lines name the fastest correct implementation per shape and whether it is the one
`default_implementation()` picks for this backend.
"""

from __future__ import annotations

import functools
import os
import sys

from absl import flags

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common

_BATCH = common.positive_ints(flags.DEFINE_list("batch_size", ["32", "64"], "Batch sizes."))
_LAYERS = flags.DEFINE_list("layers", ["conv1", "conv2"], "Activation shapes: conv1, conv2.")
SHAPES = {"conv1": (55, 55, 96), "conv2": (27, 27, 256)}  # (H, W, C) after conv1 / conv2
common.one_or_more_of(_LAYERS, tuple(SHAPES))
_REPEATS = flags.DEFINE_integer(
    "repeats", 10, "Timed rounds (medians are reported).", lower_bound=1
)
_WARMUP = flags.DEFINE_integer("warmup", 2, "Untimed rounds after compilation.", lower_bound=0)
_AUTODIFF = flags.DEFINE_bool("autodiff", True, "Also time the formula under plain autodiff.")

PAPER = dict(size=5, k=2.0, alpha=1e-4, beta=0.75)  # torch's alpha / n: divide_alpha_by_size
TOLERANCE = 1e-5  # max relative error against torch (float32)

COLUMNS = (
    ("layer", "layer", ""),
    ("batch_size", "batch", "d"),
    ("pass", "pass", ""),
    ("contender", "implementation", ""),
    ("median_ms", "median ms", ".1f"),
    ("speedup_vs_torch", "x torch", ".2f"),
    ("max_rel_error", "rel. error", ".1e"),
    ("load", "load", ".1f"),
)


def autodiff_lrn(x, impl: str):
    """The formula with JAX's own derivative (no custom JVP), as the library computed it before."""
    import jax.numpy as jnp
    from jax import lax

    from alexnet_jax.model import lrn

    size = PAPER["size"]
    base = PAPER["k"] + PAPER["alpha"] / size * lrn._WINDOW_SUMS[impl](x * x, size)
    return x * (lax.rsqrt(base) * lax.rsqrt(jnp.sqrt(base)))  # base ** -0.75 (PAPER["beta"])


def contenders(x, g):
    """{name: (forward fn, forward+backward fn)}, each a jitted JAX function of (x, g)."""
    import jax

    from alexnet_jax.model import lrn

    fns = {}
    for impl in lrn.IMPLEMENTATIONS:
        forms = {impl: functools.partial(lrn.local_response_norm, **PAPER, impl=impl)}
        forms[impl] = functools.partial(forms[impl], divide_alpha_by_size=True)
        if _AUTODIFF.value:
            forms[f"{impl} autodiff"] = functools.partial(autodiff_lrn, impl=impl)
        for name, f in forms.items():
            forward = jax.jit(f)
            backward = jax.jit(lambda x, g, f=f: jax.vjp(f, x)[1](g)[0])
            fns[name] = (forward, backward)
    return fns


def measure(layer: str, batch_size: int) -> list[dict]:
    """Rows for one activation shape: forward and forward+backward of every contender."""
    import jax
    import numpy as np
    import torch

    h, w, c = SHAPES[layer]
    rng = np.random.default_rng(0)
    x = np.abs(rng.standard_normal((batch_size, h, w, c), np.float32)) * 20  # post-ReLU scale
    g = rng.standard_normal((batch_size, h, w, c), np.float32)
    device = common.torch_device()
    xt = torch.from_numpy(x.transpose(0, 3, 1, 2).copy()).to(device).requires_grad_(True)  # NCHW
    gt = torch.from_numpy(g.transpose(0, 3, 1, 2).copy()).to(device)
    sync = torch.cuda.synchronize if device == "cuda" else lambda: None
    torch_lrn = functools.partial(
        torch.nn.functional.local_response_norm,
        size=PAPER["size"],
        alpha=PAPER["alpha"],
        beta=PAPER["beta"],
        k=PAPER["k"],
    )

    def torch_forward():
        with torch.no_grad():
            out = torch_lrn(xt)
        sync()
        return out

    def torch_backward():
        xt.grad = None
        torch_lrn(xt).backward(gt)
        sync()
        return xt.grad

    expected = {
        "forward": torch_forward().cpu().numpy(),
        "forward+backward": torch_backward().cpu().numpy(),
    }
    xj, gj = jax.device_put(x), jax.device_put(g)
    rows = []
    for index, pass_name in enumerate(("forward", "forward+backward")):
        fns, errors = {}, {}
        for name, pair in contenders(xj, gj).items():
            fn = pair[index]
            args = (xj,) if index == 0 else (xj, gj)
            out = np.asarray(fn(*args)).transpose(0, 3, 1, 2)
            ref = expected[pass_name]
            errors[name] = float(np.max(np.abs(out - ref)) / np.max(np.abs(ref)))
            fns[name] = functools.partial(
                lambda fn, args: jax.block_until_ready(fn(*args)), fn, args
            )
        fns["torch"] = torch_forward if index == 0 else torch_backward
        common.time_interleaved(fns, _WARMUP.value)
        load = common.load_average()
        timings = common.time_interleaved(fns, _REPEATS.value)
        torch_median = timings["torch"].median
        for name, timing in timings.items():
            rows.append(
                {
                    "layer": layer,
                    "batch_size": batch_size,
                    "shape": [batch_size, h, w, c],
                    "pass": pass_name,
                    "contender": name,
                    "median_ms": 1e3 * timing.median,
                    "min_ms": 1e3 * min(timing.wall),
                    "speedup_vs_torch": torch_median / timing.median,
                    "max_rel_error": errors.get(name),
                    "cores_used": timing.cores,
                    "load": load,
                }
            )
    return rows


def fastest(rows: list[dict]) -> list[str]:
    """Lines naming, per shape, the fastest correct library implementation (forward+backward)."""
    from alexnet_jax.model import lrn

    lines = []
    default = lrn.default_implementation()
    for layer in _LAYERS.value:
        for batch_size in sorted({r["batch_size"] for r in rows}):
            candidates = [
                r
                for r in rows
                if r["layer"] == layer
                and r["batch_size"] == batch_size
                and r["pass"] == "forward+backward"
                and r["contender"] in lrn.IMPLEMENTATIONS
                and r["max_rel_error"] <= TOLERANCE
            ]
            best = min(candidates, key=lambda r: r["median_ms"])
            lines.append(
                f"{layer} batch {batch_size}: fastest forward+backward is {best['contender']!r} "
                f"({best['speedup_vs_torch']:.2f}x torch); default_implementation() = {default!r}"
            )
    return lines


def main(argv):
    del argv
    common.require_torch("benchmarks/lrn.py")
    threads = common.setup_process(common.THREADS.value)
    env = common.setup_torch(threads)
    print(
        f"# {env['cpu_model']} x{threads}, jax {env['jax']}, torch {env['torch']}, "
        f"load {env['load_average']}"
    )
    rows = []
    for layer in _LAYERS.value:
        for batch_size in (int(b) for b in _BATCH.value):
            rows += measure(layer, batch_size)
            common.print_table(
                [r for r in rows if r["layer"] == layer and r["batch_size"] == batch_size], COLUMNS
            )
    summary = fastest(rows)
    if len(_LAYERS.value) * len(_BATCH.value) > 1:  # all in one table (one was printed above)
        print()
        common.print_table(rows, COLUMNS)
    print("\n".join(summary))
    if common.JSON.value:
        common.write_json(common.JSON.value, {"environment": env, "rows": rows, "fastest": summary})


if __name__ == "__main__":
    common.run(main)

"""JAX against PyTorch on the same architecture, batch and threads, measured side by side.

    python benchmarks/compare_torch.py --variant=one_tower,paper --batch_size=64 --repeats=10

For each variant, in one process: the library's jitted train and eval steps (benchmarks/common.py)
and the same network in PyTorch (benchmarks/torch_models.py: torchvision's layer names,
nn.LocalResponseNorm, groups=2 convolutions for `paper`), trained with torch.optim.SGD (lr 0.01,
momentum 0.9, weight decay 5e-4) on cross-entropy, dropout on. PyTorch runs eager in its default
NCHW layout, eager in channels_last, and (--torch_compile) `torch.compile`d. The contenders are
timed round-robin (JAX, then each PyTorch form, repeated) so that a change of load on a shared
machine hits all of them alike; the table gives median images/s and the ratio JAX / PyTorch
(ratio of the medians).

On a GPU (JAX on GPU and torch.cuda available) PyTorch runs on CUDA and its compiled form uses
channels_last; leave PyTorch room with XLA_PYTHON_CLIENT_MEM_FRACTION=0.45 (JAX otherwise
preallocates 75% of the GPU memory).

The JAX side is set up as in train_step.py (--pool_impl "auto", the project's XLA flags unless
--noproject_xla_flags).

Threads: the process is pinned to --threads CPUs (0: all it may use) before either library
starts; XLA:CPU sizes its intra-op pool from those CPUs and PyTorch gets torch.set_num_threads
with the same number (and one inter-op thread), so both use the same cores.

Differences that remain: the JAX model's `paper` variant normalizes each tower's channels
separately (48 + 48, 128 + 128), nn.LocalResponseNorm the 96 / 256 together (same cost); the JAX
step also computes its logged metrics (top-1/5, gradient norm), a negligible cost.
"""

from __future__ import annotations

import os
import sys
import time

from absl import flags

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common

from alexnet_jax.core import runtime
from alexnet_jax.interop import convert

_VARIANT = common.one_or_more_of(
    flags.DEFINE_list("variant", ["one_tower", "paper"], "Model variants."), convert.VARIANTS
)
_BATCH = flags.DEFINE_integer("batch_size", 64, "Batch size.")
_DTYPE = flags.DEFINE_enum(
    "dtype", "float32", common.DTYPES, "JAX computation dtype; PyTorch autocasts to it."
)
_REPEATS = flags.DEFINE_integer(
    "repeats", 10, "Timed rounds (medians are reported).", lower_bound=1
)
_WARMUP = flags.DEFINE_integer("warmup", 2, "Untimed rounds after compilation.", lower_bound=0)
_COMPILE = flags.DEFINE_bool("torch_compile", True, "Also time torch.compile'd PyTorch.")
_CHANNELS_LAST = flags.DEFINE_bool("channels_last", True, "Also time PyTorch in channels_last.")
_EVAL = flags.DEFINE_bool("eval", True, "Also compare inference.")
_POOL = flags.DEFINE_string("pool_impl", "auto", "config.pool_impl ('' keeps the config's).")
_CACHE = flags.DEFINE_string(
    "cache_dir", "", "Use this persistent compilation cache for the timed steps (default: none)."
)

COLUMNS = (
    ("variant", "variant", ""),
    ("mode", "mode", ""),
    ("contender", "contender", ""),
    ("img_s", "img/s", ".2f"),
    ("step_ms", "median ms", ".0f"),
    ("jax_ratio", "JAX / this", ".2f"),
    ("pairwise_ratio_median", "per-round ratio", ".2f"),
    ("cores_used", "cores", ".2f"),
    ("load", "load", ".1f"),
)


def _contenders(bench, variant: str) -> tuple[dict, dict]:
    """{name: TorchBench} and {name: error or compile seconds} for the PyTorch forms."""
    import jax
    import numpy as np
    import torch_models

    images = np.asarray(jax.device_get(bench.train_batch["image"]), np.float32)
    labels = np.asarray(jax.device_get(bench.train_batch["label"]))
    forms = {"torch eager": (False, False)}
    if _CHANNELS_LAST.value:
        forms["torch eager channels_last"] = (True, False)
    if _COMPILE.value and common.torch_device() == "cuda":  # tensor cores want NHWC
        forms["torch.compile channels_last"] = (True, True)
    elif _COMPILE.value:
        forms["torch.compile"] = (False, True)
    benches, notes = {}, {}
    for name, (channels_last, compiled) in forms.items():
        tb = torch_models.TorchBench(
            torch_models.build(variant),
            images,
            labels,
            device=common.torch_device(),
            channels_last=channels_last,
            compiled=compiled,
            bf16=_DTYPE.value == "bfloat16",
        )
        start = time.perf_counter()
        try:
            tb.run_train()
            if _EVAL.value:
                tb.run_eval()
        except Exception as e:  # torch.compile needs a working C++ toolchain on CPU
            notes[name] = f"failed: {type(e).__name__}: {str(e).splitlines()[0][:300]}"
            continue
        notes[name] = f"first train+eval call {time.perf_counter() - start:.1f} s"
        benches[name] = tb
    return benches, notes


def compare(variant: str) -> list[dict]:
    """Rows (train and eval) for one variant: JAX, then every PyTorch form, ratios to JAX."""
    config = common.bench_config(variant, _BATCH.value, _DTYPE.value, pool_impl=_POOL.value or None)
    bench = common.build(config)
    bench.run_train()  # compiles
    if _EVAL.value:
        bench.run_eval()
    torch_benches, notes = _contenders(bench, variant)
    rows = []
    for mode in ("train", "eval") if _EVAL.value else ("train",):
        fns = {"jax": getattr(bench, f"run_{mode}")}
        fns.update({name: getattr(tb, f"run_{mode}") for name, tb in torch_benches.items()})
        common.time_interleaved(fns, _WARMUP.value)
        load_before = common.load_average()
        timings = common.time_interleaved(fns, _REPEATS.value)
        load = (load_before + common.load_average()) / 2
        jax_ips = _BATCH.value / timings["jax"].median
        for name, timing in timings.items():
            summary = timing.summary(_BATCH.value)
            rows.append(
                {
                    "variant": variant,
                    "mode": mode,
                    "contender": name,
                    "img_s": summary["img_s"],
                    "step_ms": summary["median_ms"],
                    "jax_ratio": jax_ips / summary["img_s"],
                    "pairwise_ratio_median": _pairwise(timings["jax"].wall, timing.wall),
                    "cores_used": summary["cores_used"],
                    "times_s": timing.wall,
                    "load": load,
                    "note": notes.get(name, ""),
                }
            )
    failed = [
        {"variant": variant, "mode": "-", "contender": name, "note": note}
        for name, note in notes.items()
        if name not in torch_benches
    ]
    return rows + failed


def _pairwise(jax_times: list[float], other: list[float]) -> float:
    """Median over rounds of other/jax time: the ratio within each round (robust to drifts)."""
    import statistics

    return statistics.median(o / j for j, o in zip(jax_times, other, strict=True))


def main(argv):
    del argv
    common.require_torch("benchmarks/compare_torch.py")
    threads = common.setup_process(common.THREADS.value)
    import torch

    torch.set_num_interop_threads(1)
    if _CACHE.value:
        runtime.enable_compilation_cache(_CACHE.value)
    env = common.setup_torch(threads)
    print(
        f"# {env['cpu_model']} x{threads}, jax {env['jax']}, torch {env['torch']}, "
        f"XLA_FLAGS={env['xla_flags']!r}, load {env['load_average']}"
    )
    rows = []
    for variant in _VARIANT.value:
        rows += compare(variant)
        common.print_table([r for r in rows if r["variant"] == variant], COLUMNS)
        notes = {r["contender"]: r["note"] for r in rows if r["variant"] == variant}
        for contender, note in notes.items():
            if note:
                print(f"  {contender}: {note}")
    if len(_VARIANT.value) > 1:  # all variants in one table (one was printed just above)
        print()
        common.print_table(rows, COLUMNS)
    if common.JSON.value:
        common.write_json(
            common.JSON.value,
            {"environment": env, "batch_size": _BATCH.value, "dtype": _DTYPE.value, "rows": rows},
        )


if __name__ == "__main__":
    common.run(main)

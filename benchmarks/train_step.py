"""Speed of the library's own jitted train and eval steps on synthetic device-resident batches.

    python benchmarks/train_step.py --variant=one_tower,paper --dtype=float32 --batch_size=64
    python benchmarks/train_step.py --variant=paper --dtype=bfloat16 --batch_size=512 \
        --peak_tflops=989 --json=/tmp/gpu.json                         # a GPU user (H100 SXM)

For every (variant, dtype, batch size): the compile time of the train step, cold and with the
persistent compilation cache warm (each measured in a fresh subprocess that shares a new, empty
cache folder: the first compiles and writes the cache, the second loads it), the median step
time over --repeats after --warmup steps (each waited for with block_until_ready), training
images/s, the achieved GFLOP/s from the analytic count (`models.train_flops_per_image`: 3x the
forward's 2 x multiply-accumulates), MFU against --peak_tflops when given, and the eval
(inference) step's images/s. The steps are `experiment.build`'s train_step / eval_step,
the ones the training loop runs, with the state donated. The config is configs/default.py with
1000 classes, synthetic data and --pool_impl (default "auto"); the process gets the project's XLA
flags (alexnet_jax/core/runtime.py; --noproject_xla_flags measures with XLA's defaults).

With --config=configs/default.py (any config file) the step timed is that config's own, every
field as main.py would train it (its classes, clipping, schedule, dtype, batch), on synthetic
batches of its shape; --variant/--dtype/--batch_size are then ignored and compile times are not
measured. That is the bare step to compare main.py's loop with.

CPU peak: this repo's numbers were taken on 2 vCPUs of an AMD EPYC Zen 4 (AVX-512 on two 256-bit
FMA pipes: 32 float32 FLOP per cycle per core), so 2 x 32 x 3.7 GHz (boost) = 0.237 TFLOP/s is
the float32 peak to pass as --peak_tflops=0.237 there; without a peak the MFU column is empty.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time

from absl import flags

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common

from alexnet_jax.core import runtime

_VARIANT = common.one_or_more_of(
    flags.DEFINE_list("variant", ["one_tower", "paper"], "Model variants."), common.variants
)
_DTYPE = common.one_or_more_of(
    flags.DEFINE_list("dtype", ["float32"], "Computation dtypes: float32, bfloat16."), common.DTYPES
)
_BATCH = common.positive_ints(flags.DEFINE_list("batch_size", ["64"], "Global batch sizes."))
_REPEATS = flags.DEFINE_integer(
    "repeats", 10, "Timed steps (the median is reported).", lower_bound=1
)
_WARMUP = flags.DEFINE_integer("warmup", 2, "Untimed steps after compilation.", lower_bound=0)
_EVAL = flags.DEFINE_bool("eval", True, "Also time the eval (inference) step.")
_COMPILE = flags.DEFINE_enum(
    "compile",
    "subprocess",
    ["subprocess", "inprocess", "none"],
    "How to time the cold and warm-cache compiles: two fresh subprocesses sharing a new cache "
    "folder; or here, compiling, clearing JAX's in-memory caches and compiling again (quicker, "
    "for tests); or not at all.",
)
_PEAK = flags.DEFINE_float(
    "peak_tflops", 0.0, "Peak TFLOP/s of the device for MFU (0: none).", lower_bound=0.0
)
_POOL = flags.DEFINE_string("pool_impl", "auto", "config.pool_impl ('' keeps the config's).")
_LRN = flags.DEFINE_string("lrn_impl", "", "config.lrn_impl ('' keeps the config's).")
_CACHE = flags.DEFINE_string(
    "cache_dir", "", "Use this persistent compilation cache for the timed steps (default: none)."
)
_PROBE = flags.DEFINE_string("compile_probe", "", "Internal: cache folder; time one compile.")
_CONFIG_FILE = flags.DEFINE_string(
    "config", "", "Time this config file's own step (e.g. configs/default.py); see the docstring."
)

COLUMNS = (
    ("variant", "variant", ""),
    ("dtype", "dtype", ""),
    ("batch_size", "batch", "d"),
    ("compile_cold_s", "compile cold s", ".2f"),
    ("compile_warm_s", "warm cache s", ".2f"),
    ("train_step_ms", "step ms", ".0f"),
    ("train_img_s", "train img/s", ".1f"),
    ("train_gflops", "GFLOP/s", ".1f"),
    ("train_mfu", "MFU", ".1%"),
    ("eval_img_s", "eval img/s", ".1f"),
    ("eval_mfu", "eval MFU", ".1%"),
    ("train_cores_used", "cores", ".2f"),
    ("load", "load", ".1f"),
)


def _config(variant: str, dtype: str, batch_size: int):
    return common.bench_config(
        variant, batch_size, dtype, pool_impl=_POOL.value or None, lrn_impl=_LRN.value or None
    )


def _file_config(path: str):
    """get_config() of a config file, or a run's config (its folder, or its config.json), on
    synthetic data (the step does not read the data). Anything else is a UserError (hostile
    pass 18, #77: a run's config.json was an AttributeError traceback)."""
    import importlib.util

    from alexnet_jax.core.errors import UserError
    from alexnet_jax.runs import rundir
    from alexnet_jax.train import config_lib

    if os.path.isdir(path) or os.path.basename(path) == rundir.CONFIG_FILE:
        config = config_lib.load_config(path if os.path.isdir(path) else os.path.dirname(path))
    elif path.endswith(".py") and os.path.isfile(path):
        spec = importlib.util.spec_from_file_location("timed_config", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        config = module.get_config()
    else:
        raise UserError(
            f"--config={path}: not a Python config file (e.g. configs/default.py), a run's "
            f"folder or its {rundir.CONFIG_FILE}."
        )
    config.dataset, config.augment_on = "synthetic", "host"
    if config.normalization == "mean_image":
        config.normalization = "mean"  # (the same arithmetic, one mean for every pixel)
    return config


def compile_probe(config, cache_dir: str) -> dict[str, float]:
    """Seconds to trace + lower, and to compile, the train step with the persistent compilation
    cache in `cache_dir`, for the same state and batch the timed steps use (so the same program:
    a cache entry written here serves them too)."""
    runtime.enable_compilation_cache(cache_dir)  # (again, in-process: a no-op)
    exp = common.build_experiment(config)
    state = exp.init_state()
    batch, _ = common.synthetic_batches(config, exp.mesh)
    start = time.perf_counter()
    lowered = exp.train_step.lower(state, batch)
    lowered_at = time.perf_counter()
    lowered.compile()
    done = time.perf_counter()
    return {"lower_s": lowered_at - start, "compile_s": done - lowered_at, "total_s": done - start}


def measure_compile(variant: str, dtype: str, batch_size: int) -> dict[str, float]:
    """Cold then warm-cache compile of the train step in two fresh subprocesses that share a
    new, empty cache folder."""
    results = {}
    with tempfile.TemporaryDirectory(prefix="alexnet_jax_cache_") as cache_dir:
        for name in ("cold", "warm"):
            probe = _compile_subprocess(variant, dtype, batch_size, cache_dir)
            results.update({f"compile_{name}_{k}": v for k, v in probe.items()})
            results[f"compile_{name}_s"] = probe["total_s"]
    return results


@contextlib.contextmanager
def _temporary_cache():
    """A new, empty persistent compilation cache for this process while in the block; then the
    process's previous setting again."""
    import jax
    from jax.experimental.compilation_cache import compilation_cache

    previous = jax.config.jax_compilation_cache_dir
    with tempfile.TemporaryDirectory(prefix="alexnet_jax_cache_") as cache_dir:
        runtime.enable_compilation_cache(cache_dir)
        compilation_cache.reset_cache()  # let the new folder take effect
        try:
            yield cache_dir
        finally:
            jax.config.update("jax_compilation_cache_dir", previous)
            compilation_cache.reset_cache()


def measure_compile_inprocess(config, cache_dir: str) -> dict[str, float]:
    """Compiles here into the empty `cache_dir`, clears JAX's in-memory caches, compiles again
    (now loaded from the persistent cache)."""
    import jax

    results = {}
    for name in ("cold", "warm"):
        jax.clear_caches()  # the compile must not come from memory
        probe = compile_probe(config, cache_dir)
        results.update({f"compile_{name}_{k}": v for k, v in probe.items()})
        results[f"compile_{name}_s"] = probe["total_s"]
    return results


def _compile_subprocess(variant: str, dtype: str, batch_size: int, cache_dir: str) -> dict:
    cmd = [
        sys.executable,
        os.path.abspath(__file__),
        f"--compile_probe={cache_dir}",
        f"--variant={variant}",
        f"--dtype={dtype}",
        f"--batch_size={batch_size}",
        f"--threads={common.THREADS.value}",
        f"--pool_impl={_POOL.value}",
        f"--lrn_impl={_LRN.value}",
        f"--project_xla_flags={common.PROJECT_XLA_FLAGS.value}",
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if out.returncode:
        raise RuntimeError(f"compile probe failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def measure(variant: str, dtype: str, batch_size: int) -> dict:
    """One row of the table: compile, train and eval speed of one config."""
    config = _config(variant, dtype, batch_size)
    row: dict = {"variant": variant, "dtype": dtype, "batch_size": batch_size}
    row["load_before"] = common.load_average()
    with contextlib.ExitStack() as stack:
        if _COMPILE.value == "subprocess":
            row.update(measure_compile(variant, dtype, batch_size))
        elif _COMPILE.value == "inprocess":  # the timed steps below then load from this cache
            row.update(measure_compile_inprocess(config, stack.enter_context(_temporary_cache())))
        row.update(measure_steps(config))
    row["load"] = row["load_after"] = common.load_average()
    return row


def measure_steps(config) -> dict:
    """First (compiling) train step, then median train and eval step speed."""
    bench = common.build(config)
    row = {"first_train_step_s": common.time_calls(bench.run_train, 1).wall[0]}
    common.time_calls(bench.run_train, _WARMUP.value)
    timing = common.time_calls(bench.run_train, _REPEATS.value)
    flops = common.forward_flops_per_image(config) * 3  # = models.train_flops_per_image
    row.update(_speed("train", config.batch_size, timing, flops))
    if _EVAL.value:
        common.time_calls(bench.run_eval, 1 + _WARMUP.value)
        timing = common.time_calls(bench.run_eval, _REPEATS.value)
        flops = common.forward_flops_per_image(config)
        row.update(_speed("eval", config.batch_size, timing, flops))
    return row


def _speed(name: str, batch_size: int, timing: common.Timing, flops_per_image: float) -> dict:
    """Step time statistics, images/s, GFLOP/s and MFU of one timed step function."""
    summary = timing.summary(batch_size)
    gflops = summary["img_s"] * flops_per_image / 1e9
    row = {f"{name}_{k}": v for k, v in summary.items()}
    row[f"{name}_step_ms"] = summary["median_ms"]
    row[f"{name}_flops_per_image"] = flops_per_image
    row[f"{name}_gflops"] = gflops
    row[f"{name}_mfu"] = gflops / (_PEAK.value * 1e3) if _PEAK.value else None
    return row


def main(argv):
    del argv
    threads = common.setup_process(common.THREADS.value)
    batch_sizes = [int(b) for b in _BATCH.value]
    if _PROBE.value:  # subprocess of measure_compile: one JSON line
        config = _config(_VARIANT.value[0], _DTYPE.value[0], batch_sizes[0])
        print(json.dumps(compile_probe(config, _PROBE.value)))
        return
    config = _file_config(_CONFIG_FILE.value) if _CONFIG_FILE.value else None
    if _CACHE.value:
        runtime.enable_compilation_cache(_CACHE.value)
    env = common.environment(threads)
    print(
        f"# {env['cpu_model']} x{threads}, {env['backend']}, jax {env['jax']}, "
        f"XLA_FLAGS={env['xla_flags']!r}, load {env['load_average']}",
        flush=True,
    )
    rows = []
    table = common.RowPrinter(COLUMNS, {"variant": _VARIANT.value, "dtype": _DTYPE.value})
    if config is not None:
        row = {"variant": config.variant, "dtype": config.dtype, "batch_size": config.batch_size}
        row["config"] = _CONFIG_FILE.value
        row["load_before"] = common.load_average()
        row.update(measure_steps(config))
        row["load"] = row["load_after"] = common.load_average()
        rows.append(row)
        table.print_row(row)
    for variant in [] if _CONFIG_FILE.value else _VARIANT.value:
        for dtype in _DTYPE.value:
            for batch_size in batch_sizes:
                rows.append(measure(variant, dtype, batch_size))
                table.print_row(rows[-1])  # the table grows as the rows are measured
    if common.JSON.value:
        payload = {"environment": env, "peak_tflops": _PEAK.value, "rows": rows}
        common.write_json(common.JSON.value, payload)


if __name__ == "__main__":
    common.run(main)

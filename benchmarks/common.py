"""Shared pieces of the benchmark scripts: process setup, the benchmarked config, the library's own
jitted train/eval steps on synthetic device-resident batches, timing, tables and JSON.

Order matters on the CPU: `setup_process` must run before JAX starts its backends (it pins the
threads and sets the project's XLA flags from alexnet_jax/core/runtime.py), so every script calls it
first thing in `main`, before anything touches a device.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import logging
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

if __name__ == "__main__":  # it would define its flags and exit 0, having done nothing
    print(
        "error: benchmarks/common.py is the helper module of the benchmark scripts beside it, not "
        "a benchmark: run one of them, e.g. python benchmarks/train_step.py --help.",
        file=sys.stderr,
    )
    sys.exit(2)

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _REPO not in sys.path:  # `python benchmarks/x.py` from anywhere
    sys.path.insert(0, _REPO)

from alexnet_jax.core import errors  # noqa: E402  (light: before NumPy and JAX)

# A Ctrl-C or SIGTERM at any moment, the imports included: one line, exit 130 or 143, the process
# ended before Python's teardown (Ctrl-C in a compile ended "Fatal Python error: Segmentation
# fault"; a SIGTERM said nothing at all: hostile pass 20, #73, #75), as the tools do.
errors.exit_on_ctrl_c(sigterm=True)

# Memory ran out: the benchmarks' own flag, not a run's config fields.
MEMORY_ADVICE = "Free memory, raise the process's limit (ulimit -v), or lower --batch_size."

with errors.reported_as_exit(memory_advice=MEMORY_ADVICE):  # ulimit -v too low: one line
    errors.check_address_space()  # (before JAX, which aborts in C++ below it)
    errors.import_jax()  # a JAX_* variable JAX refuses: one line

import jax  # noqa: E402
import numpy as np  # noqa: E402
from absl import flags  # noqa: E402

from alexnet_jax.core import runtime  # noqa: E402
from alexnet_jax.runs import rundir  # noqa: E402

PROJECT_XLA_FLAGS = flags.DEFINE_bool(
    "project_xla_flags",
    True,
    "Set alexnet_jax.core.runtime.XLA_FLAGS (--noproject_xla_flags: XLA's defaults, for "
    "comparison).",
)

THREADS = flags.DEFINE_integer(
    "threads",
    0,
    "CPUs for the process, PyTorch's threads included (0: all available).",
    lower_bound=0,  # (-1 pinned the process to all CPUs but one: cpus[:-1])
)
JSON = flags.DEFINE_string("json", "", "Write the results here as JSON.")

DTYPES = ("float32", "bfloat16")


def positive_ints(holder: flags.FlagHolder, minimum: int = 1) -> flags.FlagHolder:
    """`holder`, a list flag of integers >= `minimum` (batch sizes: 1; worker counts: 0), refused
    at parse time otherwise: one `error:` line (errors.parse_flags), not a ValueError traceback
    from the middle of a run."""
    flags.register_validator(
        holder,
        lambda values: bool(values) and all(v.isdigit() and int(v) >= minimum for v in values),
        message=f"--{holder.name} must be integers >= {minimum}, comma-separated (e.g. "
        f"{'64,128' if minimum else '0,2'})",
    )
    return holder


def one_or_more_of(holder: flags.FlagHolder, allowed: Sequence[str] | Callable[[], Sequence[str]]):
    """`holder`, a list flag whose values must be among `allowed` (or what `allowed()` returns,
    read when the flags are parsed), at least one: an empty one measured nothing and exited 0."""

    def choices() -> Sequence[str]:
        return allowed() if callable(allowed) else allowed

    flags.register_validator(
        holder,
        lambda values: bool(values) and all(v in choices() for v in values),
        message=f"--{holder.name} must be one or more of: {', '.join(choices())}",
    )
    return holder


def variants() -> list[str]:
    """The registered model variants (--config.variant's values)."""
    from alexnet_jax.model import models

    return list(models.REGISTRY)


# ---- Process --------------------------------------------------------------------------------


def run(main: Callable[[list[str]], Any]) -> None:
    """`app.run(main)` for a benchmark script: a bad flag, or a value the library refuses (a batch
    size of 0, an unknown variant: a UserError), is one `error:` line and exit code 2, never a
    traceback (core/errors.py); a failed write of the results names the path."""
    from absl import app

    def guarded(argv: list[str]) -> Any:
        with errors.reported_as_exit(memory_advice=MEMORY_ADVICE):
            if len(argv) > 1:  # (a stray word was ignored, and the whole benchmark ran)
                name = os.path.basename(argv[0])
                raise errors.UserError(f"unexpected arguments {argv[1:]}: {name} takes only flags.")
            return main(argv)

    app.run(guarded, flags_parser=errors.parse_flags)


def setup_process(threads: int = 0) -> int:
    """Pins this process to `threads` CPUs (0: all it may use), keeps the libraries' INFO lines
    off the console (as main.py does) and sets the project's XLA flags (unless
    --noproject_xla_flags); returns the CPU count both JAX and PyTorch then use.

    XLA:CPU sizes its thread pool from the CPUs the process may run on when the backend starts,
    so pinning with sched_setaffinity before that is what sets its intra-op threads; PyTorch gets
    the same number through torch.set_num_threads (compare_torch.py).

    First the checks main.py and the tools make of what the process inherits (XLA_FLAGS, the
    address-space limit: runtime.check_environment): a UserError, one line in `run`.
    """
    runtime.check_environment()
    cpus = sorted(os.sched_getaffinity(0))
    if threads:
        if threads > len(cpus):  # (a ValueError traceback: hostile pass 18, #76)
            raise errors.UserError(
                f"--threads={threads}, but this process may use only {len(cpus)} CPUs: give at "
                f"most {len(cpus)}, or 0 for all of them."
            )
        cpus = cpus[:threads]
        os.sched_setaffinity(0, cpus)
    if JSON.value:
        check_output_file("--json", JSON.value)
    runtime.quiet_native_logs()  # no library INFO lines: the tables are the output
    runtime.quiet_library_logs()
    if PROJECT_XLA_FLAGS.value:
        runtime.set_xla_flags()
    return len(cpus)


def require_torch(script: str) -> None:
    """One `error:` line and exit code 2 when PyTorch, this script's peer, is not installed (it
    is a test and benchmark dependency, never a runtime one), instead of a traceback."""
    try:
        import torch  # noqa: F401
    except ImportError:
        print(
            f"error: {script} compares against PyTorch, which is not installed: "
            "pip install -r requirements-test.txt (PyTorch 2.13), then rerun.",
            file=sys.stderr,
        )
        sys.exit(2)


def check_output_folder(flag: str, folder: str) -> None:
    """Creates `folder`, where `flag`'s results will be written, and writes a trial file there;
    when it cannot be created or written (a full disk, no rights), one `error:` line and exit
    code 2 now, not after minutes of measuring. A folder inside a run's checkpoints/ is refused
    (the run's next save would delete it)."""
    with errors.reported_as_exit():  # one `error:` line, exit code 2
        rundir.refuse_inside_checkpoints(folder, flag)
    problem = errors.directory_creation_problem(folder) or _write_problem(folder)
    if problem:
        print(f"error: {flag}: the folder {folder} {problem}: choose another.", file=sys.stderr)
        sys.exit(2)


def _write_problem(folder: str) -> str | None:
    """Why a file of a few KB cannot be written in `folder`, or None (the trial file removed)."""
    import tempfile

    try:
        with tempfile.TemporaryFile(dir=folder) as f:
            f.write(b"\0" * 16384)  # about a results file: a full disk fails here or at fsync
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        return f"cannot be written ({e.strerror or e}, errno {e.errno})"
    return None


def check_output_file(flag: str, path: str) -> None:
    """`check_output_folder` for the file `path` that `flag` names, which must be a new or a
    regular file (not /dev/full: the results are written beside it, then renamed over it) and
    not one of a run's own files; else one `error:` line and exit code 2."""
    if os.path.exists(path) and not os.path.isfile(path):
        print(f"error: {flag}={path} exists and is not a regular file: choose a file name.",
              file=sys.stderr)  # fmt: skip
        sys.exit(2)
    check_output_folder(flag, os.path.dirname(os.path.abspath(path)))
    with errors.reported_as_exit():
        rundir.refuse_run_file(path, flag)


def environment(threads: int) -> dict[str, Any]:
    """What a reader needs to reproduce a figure: machine, versions, flags, date, load."""
    import jaxlib

    cpu_model = ""
    try:
        with open("/proc/cpuinfo") as f:
            cpu_model = next((ln.split(":", 1)[1].strip() for ln in f if "model name" in ln), "")
    except OSError:
        pass
    return {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "command": " ".join([os.path.basename(sys.executable), *sys.argv]),
        "platform": platform.platform(),
        "cpu_model": cpu_model,
        "cpus_used": threads,
        "backend": jax.default_backend(),
        "devices": [str(d) for d in jax.devices()],
        "jax": jax.__version__,
        "jaxlib": jaxlib.__version__,
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "load_average": load_average(),
    }


def setup_torch(threads: int) -> dict[str, Any]:
    """Gives PyTorch `threads` intra-op threads (the CPUs JAX uses); returns `environment` with
    PyTorch's version, thread count and device added."""
    import torch

    torch.set_num_threads(threads)
    quiet_torch()
    env = environment(threads)
    env["torch"] = torch.__version__
    env["torch_threads"] = torch.get_num_threads()
    env["torch_device"] = torch_device()
    return env


def quiet_torch() -> None:
    """PyTorch's own log lines (torch.compile's notices, e.g. "Profiler record function ... will
    be ignored") only with --verbosity >= 1, as the libraries' INFO lines."""
    import torch

    if flags.FLAGS.verbosity < 1:
        torch._logging.set_logs(all=logging.ERROR)


def torch_device() -> str:
    """Where PyTorch runs to compete with JAX: "cuda" when JAX runs on a GPU and PyTorch sees
    one, else "cpu"."""
    import torch

    return "cuda" if jax.default_backend() == "gpu" and torch.cuda.is_available() else "cpu"


def load_average() -> float:
    """The 1-minute load average (other jobs on the machine make timings noisy)."""
    return round(os.getloadavg()[0], 2)


# ---- Config, model and steps -----------------------------------------------------------------


def bench_config(variant: str, batch_size: int, dtype: str, **overrides: Any):
    """configs/default.py set up for a speed run: ImageNet's 1000 classes, synthetic data, the
    variant's published input size, `dtype` for computation and input images."""
    from alexnet_jax.model import models
    from alexnet_jax.train import config_lib
    from configs import default

    if variant not in models.REGISTRY:
        raise errors.ConfigError(f"--variant={variant}: use one of {list(models.REGISTRY)}.")
    if dtype not in DTYPES:
        raise errors.ConfigError(f"--dtype={dtype}: use one of {list(DTYPES)}.")
    config = default.get_config()
    config.dataset = "synthetic"
    config.num_classes = 1000
    config.variant = variant
    config.input_size = models.default_input_size(variant)
    net = models.get_variant(variant)
    if not net.has_dropout:  # cifar4 (hostile pass 3, #85: it always failed here)
        config.dropout_rate = 0.0
    if config.init_scheme not in net.init_schemes:
        config.init_scheme = net.init_schemes[0]
    config.batch_size = batch_size
    config.eval_batch_size = batch_size
    config.dtype = dtype
    config.input_dtype = dtype
    for key, value in overrides.items():
        if value is not None:
            setattr(config, key, value)
    try:  # a batch size of 0, a pool_impl the library lacks: one message, before any work
        config_lib.validate_config(config)
    except errors.ConfigError as e:
        raise errors.ConfigError(f"the benchmark's flags give an invalid config: {e}") from None
    return config


@dataclasses.dataclass
class Bench:
    """The library's jitted steps for one config, with device-resident synthetic batches."""

    config: Any
    mesh: Any
    model: Any
    train_step: Callable  # experiment.build: (state, batch) -> (state, metrics), donates
    eval_step: Callable  # experiment.build: (params, batch) -> sums
    state: Any
    train_batch: dict
    eval_batch: dict

    def run_train(self) -> None:
        """One training step (the state is donated and replaced), waited for."""
        self.state, metrics = self.train_step(self.state, self.train_batch)
        jax.block_until_ready((self.state, metrics))

    def run_eval(self) -> None:
        jax.block_until_ready(self.eval_step(self.state.params, self.eval_batch))


def synthetic_batches(config: Any, mesh: Any, seed: int = 0) -> tuple[dict, dict]:
    """(train batch, eval batch) of random normalized-looking images, placed on the mesh."""
    from alexnet_jax.train import sharding

    rng = np.random.default_rng(seed)
    b, size = config.batch_size, config.input_size
    images = rng.standard_normal((b, size, size, 3), dtype=np.float32).astype(config.input_dtype)
    labels = rng.integers(0, config.num_classes, b).astype(np.int32)
    mask = np.ones(b, bool)
    train_batch = sharding.to_global_batch({"image": images, "label": labels, "mask": mask}, mesh)
    eval_batch = sharding.to_global_batch(
        {"image": images[:, None], "label": labels, "mask": mask}, mesh
    )  # (B, 1 view, H, W, 3)
    return train_batch, eval_batch


def build_experiment(config: Any):
    """experiment.build with the schedule's epoch length of the synthetic train split: the setup
    exactly as the training loop builds it."""
    from alexnet_jax.train import experiment

    steps_per_epoch = max(1, config.synthetic_train_examples // config.batch_size)
    return experiment.build(config, steps_per_epoch=steps_per_epoch)


def build(config: Any) -> Bench:
    """Mesh, model, optimizer, state and batches through the library's own functions."""
    exp = build_experiment(config)
    train_batch, eval_batch = synthetic_batches(config, exp.mesh)
    return Bench(
        config=config,
        mesh=exp.mesh,
        model=exp.model,
        train_step=exp.train_step,
        eval_step=exp.eval_step,
        state=exp.init_state(),
        train_batch=train_batch,
        eval_batch=eval_batch,
    )


def forward_flops_per_image(config: Any) -> float:
    """2 x the multiply-accumulates of the conv and FC layers (models.layer_macs)."""
    from alexnet_jax.model import models

    options = {field: config[field] for field in models.FORWARD_OPTIONS}
    macs = models.layer_macs(config.variant, config.input_size, config.num_classes, **options)
    return 2.0 * float(sum(macs.values()))


# ---- Timing ---------------------------------------------------------------------------------


@dataclasses.dataclass
class Timing:
    """Wall and process CPU seconds (all threads, user + system) of each timed call."""

    wall: list[float] = dataclasses.field(default_factory=list)
    cpu: list[float] = dataclasses.field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.wall)

    @property
    def cores(self) -> float:
        """CPU seconds per wall second while timed: about the core count on an idle machine,
        less when other jobs take part of the cores (the load indicator of a figure)."""
        return sum(self.cpu) / sum(self.wall)

    def summary(self, batch_size: int) -> dict[str, float]:
        """Median (the reported figure), min and max in ms, images/s at the median, cores."""
        return {
            "median_ms": 1e3 * self.median,
            "min_ms": 1e3 * min(self.wall),
            "max_ms": 1e3 * max(self.wall),
            "repeats": len(self.wall),
            "img_s": batch_size / self.median,
            "cores_used": self.cores,
        }


def cpu_seconds() -> float:
    """CPU time of this process, all threads (user + system), at nanosecond resolution
    (os.times() counts 10 ms clock ticks: too coarse for a few fast batches)."""
    return time.process_time()


def time_calls(fn: Callable[[], Any], repeats: int, timing: Timing | None = None) -> Timing:
    """Times `repeats` calls of `fn` (which must wait for its own result), appending to `timing`."""
    timing = timing or Timing()
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), cpu_seconds()
        fn()
        timing.cpu.append(cpu_seconds() - cpu)
        timing.wall.append(time.perf_counter() - wall)
    return timing


def time_interleaved(fns: dict[str, Callable[[], Any]], repeats: int) -> dict[str, Timing]:
    """Round-robin timing (a, b, a, b, ...): a change of machine load hits every contender alike,
    which keeps their ratio meaningful on a shared machine."""
    timings = {name: Timing() for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            time_calls(fn, 1, timings[name])
    return timings


# ---- Output ---------------------------------------------------------------------------------


def _cell(row: dict[str, Any], key: str, spec: str) -> str:
    value = row.get(key)
    if value is None:
        return "-"
    return format(value, spec) if spec else str(value)


def print_table(rows: Sequence[dict[str, Any]], columns: Sequence[tuple[str, str, str]]) -> None:
    """Prints `rows` as an aligned table; columns are (key, header, format spec)."""
    cells = [[_cell(r, k, s) for k, _, s in columns] for r in rows]
    headers = [h for _, h, _ in columns]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(headers)]
    print("  ".join(h.rjust(w) for h, w in zip(headers, widths, strict=True)))
    for c in cells:
        print("  ".join(v.rjust(w) for v, w in zip(c, widths, strict=True)))


class RowPrinter:
    """Prints a table one row at a time, as each is measured (a long benchmark shows its
    results as they come, and the table once): the header with the first row, each column as
    wide as its header or its widest `examples` value (a wider cell only shifts its own row)."""

    def __init__(self, columns: Sequence[tuple[str, str, str]], examples: dict[str, Sequence]):
        self.columns = columns
        self.widths = [
            max([len(header), *(len(str(v)) for v in examples.get(key, ()))])
            for key, header, _ in columns
        ]
        self.started = False

    def print_row(self, row: dict[str, Any]) -> None:
        if not self.started:
            headers = [h for _, h, _ in self.columns]
            print("  ".join(h.rjust(w) for h, w in zip(headers, self.widths, strict=True)))
            self.started = True
        cells = [_cell(row, k, s) for k, _, s in self.columns]
        print("  ".join(c.rjust(w) for c, w in zip(cells, self.widths, strict=True)), flush=True)


def write_json(path: str, payload: dict[str, Any]) -> None:
    """Writes `payload` as indented JSON (creating the folder), whole or not at all: an earlier
    file stays as it was when the write fails (a full disk), and the error names `path`
    (rundir.write_atomically; common.run reports it as one `error:` line)."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    rundir.write_atomically(path, json.dumps(payload, indent=2) + "\n")


def report_rows(rows: list[dict], columns, threads: int) -> None:
    """Prints the machine line and the table of `rows`; writes them to --json when given."""
    env = environment(threads)
    print(f"# {env['cpu_model']} x{threads}, load {env['load_average']}")
    print_table(rows, columns)
    if JSON.value:
        write_json(JSON.value, {"environment": env, "rows": rows})


def directory_bytes(directory: str) -> int:
    """Bytes of the files directly in `directory`."""
    return sum(entry.stat().st_size for entry in os.scandir(directory) if entry.is_file())

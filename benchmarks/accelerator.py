"""One command for the first machine with an accelerator: what the train step and the loop do there.

    python benchmarks/accelerator.py --out_dir=gpu_results          # one GPU: at most ~8 minutes
    python benchmarks/accelerator.py --smoke --out_dir=/tmp/smoke    # any CPU: seconds

Measured in this order, each as long as the time budget allows (below):
1. JAX: the library's train step (experiment.build's: declared shardings, donated state) of every
   --variant x --dtype x --batch_size on synthetic device-resident batches (benchmarks/common.py):
   trace + lower and XLA compile seconds (ahead of time, timed separately from the steps), the
   first step, then the median of --repeats steps after --warmup, each waited for
   (block_until_ready); images/s, MFU, the compiled program's memory (argument + output +
   temporaries - aliased, from XLA's memory analysis) and the device's peak bytes in use.
2. PyTorch eager (when a CUDA PyTorch is installed and JAX runs on a GPU): the same networks and
   SGD step (benchmarks/torch_models.py), channels_last with cudnn.benchmark on, bf16 by
   autocast; the ratio JAX / PyTorch per configuration.
3. The training loop: `loop.train_and_evaluate` (what main.py runs) with augment_on="device"
   (uint8 batches, the augmentation in the step) for --loop_steps steps of one configuration
   (--loop_variant/dtype/batch_size), twice: on synthetic uint8 data, then on the miniature
   dataset's image store (generated, built and stored once under --store_dir, which a rerun
   reuses; 4 classes, at least 2 batches per epoch; its build time is reported apart). Its
   images/s are the median of the `images_per_sec` that metrics.jsonl logs every
   --loop_log_every steps (the first interval, which compiles, is reported apart), and the ratio
   loop / JAX step of 1.
4. torch.compile of the same PyTorch steps (static shapes, channels_last), bf16 and the largest
   batches first: each compile takes tens of seconds, so these come last.

Time budget (--budget_s, default 480 s, for the 8 minutes a first GPU session gives this): before
each measurement the script checks that the time left exceeds the longest measurement of that
kind so far (before the first one, PRIOR_S) plus RESERVE_S; one that does not fit is listed as
skipped. accelerator.json and accelerator.md in --out_dir are rewritten after every measurement,
so even a run killed from outside leaves what it measured. A failed measurement (out of memory,
a compile error) is recorded as an error row and the others go on.

Peak memory: for JAX, XLA's allocator peak of the whole process so far (it cannot be reset per
configuration: read it with the program's own memory analysis beside it); for PyTorch, the
configuration's own peak (torch.cuda.max_memory_allocated after a reset). JAX is limited to 45%
of the GPU memory (XLA_PYTHON_CLIENT_MEM_FRACTION, unless set) so that PyTorch fits beside it.

MFU: images/s x models.train_flops_per_image (3x the forward's 2 x multiply-accumulates) / the
device's dense peak (PEAK_TFLOPS, matched on jax's device_kind; an unknown device gets no MFU
unless --peak_tflops_<dtype> gives one).

--smoke exercises every code path above on the CPU in seconds (for CI): the torchvision variant
at 64x64 with fc6/fc7 narrowed to 64 units, float32 and bfloat16, batch 2, two timed steps, PyTorch
on the CPU with torch.compile's "eager" backend (tracing only; inductor takes minutes on a CPU),
a 4-step loop. Its figures are not measurements.
"""

from __future__ import annotations

import time

STARTED = time.perf_counter()  # the budget counts from here: imports and device start-up too

import dataclasses  # noqa: E402
import os  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import traceback  # noqa: E402
from collections.abc import Callable  # noqa: E402
from typing import Any  # noqa: E402

from absl import flags  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
import numpy as np  # noqa: E402

from alexnet_jax.data import miniature  # noqa: E402  (importable once common set the path)
from alexnet_jax.runs import rundir  # noqa: E402

_SMOKE = flags.DEFINE_bool("smoke", False, "Tiny sizes on any device (CI): every code path.")
_OUT = flags.DEFINE_string("out_dir", "accelerator_results", "Where the JSON and markdown go.")
_BUDGET = flags.DEFINE_float(
    "budget_s", 480.0, "Stop measuring before this many seconds.", lower_bound=1.0
)
_VARIANT = common.one_or_more_of(
    flags.DEFINE_list("variant", ["paper", "one_tower", "torchvision"], "Model variants."),
    common.variants,
)
_DTYPE = common.one_or_more_of(
    flags.DEFINE_list("dtype", ["float32", "bfloat16"], "Computation (and input) dtypes."),
    common.DTYPES,
)
_BATCH = common.positive_ints(
    flags.DEFINE_list("batch_size", ["128", "512"], "Global batch sizes.")
)
_REPEATS = flags.DEFINE_integer(
    "repeats", 20, "Timed steps (the median is reported).", lower_bound=1
)
_WARMUP = flags.DEFINE_integer("warmup", 5, "Untimed steps after the first.", lower_bound=0)
_TORCH = flags.DEFINE_bool("torch", True, "Also time PyTorch (needs a CUDA PyTorch; --smoke: CPU).")
_TORCH_COMPILE = flags.DEFINE_bool("torch_compile", True, "Also time torch.compile'd PyTorch.")
_LOOP = flags.DEFINE_bool("loop", True, "Also time the training loop.")
_LOOP_VARIANT = flags.DEFINE_string("loop_variant", "paper", "The loop's variant.")
flags.register_validator(
    _LOOP_VARIANT,
    lambda v: v in common.variants(),
    f"--loop_variant must be one of: {', '.join(common.variants())}",
)
_LOOP_DTYPE = flags.DEFINE_enum("loop_dtype", "bfloat16", common.DTYPES, "The loop's dtype.")
_LOOP_BATCH = flags.DEFINE_integer(
    "loop_batch_size", 512, "The loop's global batch.", lower_bound=1
)
_LOOP_STEPS = flags.DEFINE_integer("loop_steps", 100, "The loop's training steps.", lower_bound=1)
_LOOP_LOG = flags.DEFINE_integer("loop_log_every", 10, "The loop's log_every_steps.", lower_bound=1)
_STORE_DIR = flags.DEFINE_string(
    "store_dir", "", "Where the store loop's miniature data go (default: <out_dir>/miniature)."
)
_PEAK_F32 = flags.DEFINE_float(
    "peak_tflops_float32", 0.0, "Override PEAK_TFLOPS (0: table).", lower_bound=0.0
)
_PEAK_BF16 = flags.DEFINE_float(
    "peak_tflops_bfloat16", 0.0, "Override PEAK_TFLOPS (0: table).", lower_bound=0.0
)

# Dense peak TFLOP/s by jax device_kind, from NVIDIA's datasheets (H100 SXM5 and H200 SXM:
# "BF16 Tensor Core 1,979 TFLOPS" with 2:4 sparsity, so 989 dense; "FP32 67 TFLOPS" on the CUDA
# cores; A100: 312 / 19.5). Exact names only: H100 PCIe / NVL and H200 NVL have lower clocks.
# float32 caveat: XLA's default precision lets cuDNN and cuBLAS run float32 convolutions and
# matmuls as TF32 on tensor cores (494 TFLOP/s dense on H100/H200), so a float32 "MFU" against
# the FP32 67 can exceed 100%; PyTorch allows TF32 for convolutions by default too.
PEAK_TFLOPS = {
    "NVIDIA H100 80GB HBM3": {"bfloat16": 989.0, "float32": 67.0},  # H100 SXM5
    "NVIDIA H200": {"bfloat16": 989.0, "float32": 67.0},  # H200 SXM
    "NVIDIA A100-SXM4-80GB": {"bfloat16": 312.0, "float32": 19.5},
    "NVIDIA A100-SXM4-40GB": {"bfloat16": 312.0, "float32": 19.5},
}

# Seconds a measurement of each kind is assumed to take before one has been timed (a first GPU
# compile of the step, a torch.compile, the loop with its final eval and checkpoint), and the
# seconds kept for writing the results.
PRIOR_S = {
    "jax": 40.0,
    "torch eager": 20.0,
    "loop": 90.0,
    "loop store": 150.0,  # the loop plus generating, building and storing the miniature data
    "torch.compile": 90.0,
}
RESERVE_S = 5.0

SMOKE = {  # what --smoke changes
    "variants": ["torchvision"],
    "input_size": 64,
    "batch_sizes": [2],
    "repeats": 2,
    "warmup": 1,
    "loop_steps": 4,  # of the first case
    "loop_log_every": 2,
    "fc_width": 64,
    "store_image_sides": (40, 90),  # the store loop's miniature images
    "store_resize_size": 72,
    "store_per_class": 4,
}


@dataclasses.dataclass(frozen=True)
class Case:
    """One configuration of the step."""

    variant: str
    dtype: str
    batch_size: int

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class Settings:
    """What to measure, from the flags (or --smoke)."""

    cases: tuple[Case, ...]
    loop_case: Case | None
    loop_steps: int
    loop_log_every: int
    input_size: int | None  # None: each variant's published size
    repeats: int
    warmup: int
    torch: bool
    torch_compile: bool
    smoke: bool
    store_dir: str = ""


def settings_from_flags() -> Settings:
    smoke = _SMOKE.value
    variants = SMOKE["variants"] if smoke else _VARIANT.value
    batches = SMOKE["batch_sizes"] if smoke else [int(b) for b in _BATCH.value]
    cases = tuple(Case(v, d, b) for v in variants for d in _DTYPE.value for b in batches)
    if smoke:
        loop_case = cases[0]
        steps, log_every = SMOKE["loop_steps"], SMOKE["loop_log_every"]
    else:
        loop_case = Case(_LOOP_VARIANT.value, _LOOP_DTYPE.value, _LOOP_BATCH.value)
        steps, log_every = _LOOP_STEPS.value, _LOOP_LOG.value
    return Settings(
        cases=cases,
        loop_case=loop_case if _LOOP.value else None,
        loop_steps=steps,
        loop_log_every=log_every,
        input_size=SMOKE["input_size"] if smoke else None,
        repeats=SMOKE["repeats"] if smoke else _REPEATS.value,
        warmup=SMOKE["warmup"] if smoke else _WARMUP.value,
        torch=_TORCH.value,
        torch_compile=_TORCH_COMPILE.value,
        smoke=smoke,
        store_dir=_STORE_DIR.value or os.path.join(_OUT.value, "miniature"),
    )


# ---- The time budget ----------------------------------------------------------------------------


class Budget:
    """The seconds left of the budget, and whether one more measurement of a kind fits in them."""

    def __init__(
        self, seconds: float, clock: Callable[[], float] = time.perf_counter, start: float = 0.0
    ):
        """`start`: when the budget began on `clock` (default: now)."""
        self.clock = clock
        self.deadline = (start or clock()) + seconds
        self.longest: dict[str, float] = {}

    def remaining(self) -> float:
        return self.deadline - self.clock()

    def estimate(self, kind: str) -> float:
        """The longest measurement of `kind` so far; before the first, PRIOR_S[kind]."""
        return self.longest.get(kind, PRIOR_S[kind])

    def fits(self, kind: str) -> bool:
        return self.remaining() >= self.estimate(kind) + RESERVE_S

    def spent(self, kind: str, seconds: float) -> None:
        self.longest[kind] = max(seconds, self.longest.get(kind, 0.0))


@dataclasses.dataclass
class Item:
    """One measurement of the plan: its kind (a PRIOR_S key), what it measures, and how."""

    kind: str
    case: Case
    measure: Callable[[], dict[str, Any]]


def run_plan(items: list[Item], budget: Budget, report: Report) -> None:
    """Runs the items in order while the budget allows; the report is written after each."""
    for item in items:
        row = {"kind": item.kind, **item.case.as_dict()}
        if not budget.fits(item.kind):
            row["skipped"] = (
                f"time budget: {budget.remaining():.0f} s left, a {item.kind} measurement "
                f"takes up to {budget.estimate(item.kind):.0f} s"
            )
            report.add(row)
            continue
        start, cpu = budget.clock(), common.cpu_seconds()
        try:
            row.update(item.measure())
        except Exception as e:  # one failed configuration (out of memory, ...) must not end all
            row["error"] = f"{type(e).__name__}: {str(e).strip().splitlines()[0][:400]}"
            row["traceback"] = traceback.format_exc()[-3000:]
        row["measure_s"] = budget.clock() - start
        row["measure_cpu_s"] = common.cpu_seconds() - cpu
        budget.spent(item.kind, row["measure_s"])
        report.add(row)


# ---- Measurements -------------------------------------------------------------------------------


def peak_tflops(device_kind: str, overrides: dict[str, float]) -> dict[str, float]:
    """{dtype: dense peak TFLOP/s} of a device: `overrides` (the --peak_tflops_* flags, 0: none)
    over PEAK_TFLOPS; empty for an unknown device without overrides (then no MFU)."""
    peaks = dict(PEAK_TFLOPS.get(device_kind, {}))
    peaks.update({dtype: value for dtype, value in overrides.items() if value})
    return peaks


def _config(case: Case, settings: Settings):
    return common.bench_config(
        case.variant, case.batch_size, case.dtype, input_size=settings.input_size
    )


def _speed(case: Case, config, timing: common.Timing, peaks: dict[str, float]) -> dict[str, Any]:
    """Median step time, images/s, TFLOP/s and MFU (None without a peak for the dtype)."""
    from alexnet_jax.model import models

    summary = timing.summary(case.batch_size)
    flops = models.train_flops_per_image(case.variant, config.input_size, config.num_classes)
    tflops = summary["img_s"] * flops / 1e12
    peak = peaks.get(case.dtype)
    return {
        "step_ms": summary["median_ms"],
        "min_ms": summary["min_ms"],
        "max_ms": summary["max_ms"],
        "repeats": summary["repeats"],
        "img_s": summary["img_s"],
        "train_flops_per_image": flops,
        "tflops": tflops,
        "mfu": tflops / peak if peak else None,
    }


def jax_peak_bytes() -> int | None:
    """XLA's allocator peak of this process on the first device (None where not reported)."""
    import jax

    stats = jax.local_devices()[0].memory_stats() or {}
    return stats.get("peak_bytes_in_use")


def measure_jax(case: Case, settings: Settings, peaks: dict[str, float]) -> dict[str, Any]:
    """The library's train step of one configuration (see the module docstring, item 1)."""
    config = _config(case, settings)
    bench = common.build(config)
    start = time.perf_counter()
    lowered = bench.train_step.lower(bench.state, bench.train_batch)
    lowered_at = time.perf_counter()
    compiled = lowered.compile()
    compiled_at = time.perf_counter()
    bench = dataclasses.replace(bench, train_step=compiled)  # no second compile on first call
    first = common.time_calls(bench.run_train, 1).wall[0]
    common.time_calls(bench.run_train, settings.warmup)
    timing = common.time_calls(bench.run_train, settings.repeats)
    row = {
        "contender": "jax",
        "lower_s": lowered_at - start,
        "compile_s": compiled_at - lowered_at,
        "first_step_s": first,
        **_speed(case, config, timing, peaks),
        "program_bytes": _program_bytes(compiled),
        "peak_bytes": jax_peak_bytes(),
        "input_size": config.input_size,
    }
    return row


def _program_bytes(compiled) -> int | None:
    """Arguments + outputs + temporaries - donated (aliased) bytes of a compiled program."""
    try:
        m = compiled.memory_analysis()
    except Exception:  # not every backend reports it
        return None
    if m is None:
        return None
    return int(
        m.argument_size_in_bytes
        + m.output_size_in_bytes
        + m.temp_size_in_bytes
        - m.alias_size_in_bytes
    )


def torch_device(smoke: bool) -> str | None:
    """Where PyTorch runs: "cuda" when it sees a GPU and JAX runs on one; "cpu" for --smoke; None
    (not timed) otherwise or without PyTorch."""
    try:
        import torch  # noqa: F401
    except ImportError:
        return None
    if common.torch_device() == "cuda":
        return "cuda"
    return "cpu" if smoke else None


def measure_torch(
    case: Case, settings: Settings, peaks: dict[str, float], compiled: bool
) -> dict[str, Any]:
    """PyTorch's step of one configuration, eager or torch.compile'd (module docstring, 2 and 4)."""
    import torch
    import torch_models

    common.quiet_torch()
    device = torch_device(settings.smoke)
    config = _config(case, settings)
    rng = np.random.default_rng(0)
    size = config.input_size
    images = rng.standard_normal((case.batch_size, size, size, 3), dtype=np.float32)
    labels = rng.integers(0, config.num_classes, case.batch_size)
    model = torch_models.build(case.variant, config.num_classes)
    if settings.smoke:
        torch_models.narrow_classifier(model, SMOKE["fc_width"])
    if compiled:
        torch._dynamo.reset()  # a fresh graph cache: one compile per configuration
    cuda = device == "cuda"
    if cuda:
        torch.backends.cudnn.benchmark = True  # autotuned convolutions, as XLA's
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    bench = torch_models.TorchBench(
        model,
        images,
        labels,
        device=device,
        channels_last=cuda,  # tensor cores want NHWC; NCHW is the faster CPU layout
        compiled=compiled,
        bf16=case.dtype == "bfloat16",
        compile_backend="eager" if settings.smoke else "inductor",
    )
    first = common.time_calls(bench.run_train, 1).wall[0]
    common.time_calls(bench.run_train, settings.warmup)
    timing = common.time_calls(bench.run_train, settings.repeats)
    return {
        "contender": "torch.compile" if compiled else "torch eager",
        "first_step_s": first,  # torch.compile: includes compiling
        **_speed(case, config, timing, peaks),
        "peak_bytes": torch.cuda.max_memory_allocated() if cuda else None,
        "torch_device": device,
        "channels_last": cuda,
        "input_size": size,
    }


def _store_config(config, case: Case, settings: Settings):
    """`config` on the miniature dataset's image store under settings.store_dir."""
    root = settings.store_dir
    config.dataset, config.num_classes = "miniature", 4
    config.miniature_dir = os.path.join(root, "archive")
    config.data_dir = os.path.join(root, "tfds")
    config.image_store_dir = os.path.join(root, "store")
    smallest = SMOKE["store_per_class"] if settings.smoke else 100
    config.miniature_train_per_class = max(smallest, -(-2 * case.batch_size // 4))
    # (at most the real validation set's 50 per class: 128 at batch 512 was refused)
    config.miniature_val_per_class = min(miniature.MAX_VAL_PER_CLASS, max(1, case.batch_size // 4))
    if settings.smoke:
        config.miniature_image_sides = SMOKE["store_image_sides"]
        config.resize_size = SMOKE["store_resize_size"]
    return config


def measure_loop(case: Case, settings: Settings, data: str = "synthetic") -> dict[str, Any]:
    """loop.train_and_evaluate for settings.loop_steps steps on `data`, "synthetic" or "store"
    (docstring, 3)."""
    from alexnet_jax.core import console, runtime

    runtime.load_tensorflow()
    from alexnet_jax.data import input_pipeline
    from alexnet_jax.runs import rundir
    from alexnet_jax.train import loop

    config = _config(case, settings)
    config.augment_on = "device"
    config.num_train_steps = settings.loop_steps
    config.log_every_steps = settings.loop_log_every
    config.checkpoint_every_steps = settings.loop_steps  # one save, at the end
    config.eval_crops = 1
    config.synthetic_eval_examples = config.eval_batch_size = case.batch_size  # one eval batch
    prepare_s = 0.0
    if data == "store":
        config = _store_config(config, case, settings)
        start = time.perf_counter()
        with console.progress_off():  # the rows are this script's output, not the loop's lines
            input_pipeline.prepare(config)  # once per --store_dir
        prepare_s = time.perf_counter() - start
    with tempfile.TemporaryDirectory(prefix="alexnet_jax_loop_") as workdir:
        start = time.perf_counter()
        with console.progress_off():
            loop.train_and_evaluate(config, workdir)
        wall = time.perf_counter() - start
        lines = [r for r in rundir.read_metrics(workdir) if r.get("split") == "train"]
    rates = [line["images_per_sec"] for line in lines[1:]]
    if not rates:
        raise ValueError(f"{len(lines)} train lines: raise --loop_steps / lower --loop_log_every")
    return {
        "contender": "loop",
        "data": data,
        "img_s": statistics.median(rates),
        "interval_img_s": rates,
        "first_interval_s": lines[0]["step_time_ms"] * settings.loop_log_every / 1e3,
        "loop_steps": settings.loop_steps,
        "log_every": settings.loop_log_every,
        "wall_s": wall,  # setup, all steps, the final eval and checkpoint
        "prepare_s": prepare_s,  # generating, building and storing the data (0 when reused)
        "peak_bytes": jax_peak_bytes(),
    }


NO_ACCELERATOR = (
    "JAX sees no GPU or TPU (backend cpu): these are this CPU's figures at full sizes, seconds per "
    "step, so the budget runs out after a few. For an accelerator install CUDA JAX (docs/USAGE.md, "
    '"Speed and accelerators"); for a quick check that the script works, --smoke.'
)


def plan(settings: Settings, peaks: dict[str, float], backend: str) -> tuple[list[Item], list[str]]:
    """The measurements in order (module docstring) and notes on what is left out and why;
    `backend` is JAX's default backend ("cpu", "gpu", "tpu")."""
    items = [Item("jax", c, lambda c=c: measure_jax(c, settings, peaks)) for c in settings.cases]
    notes = [NO_ACCELERATOR] if backend == "cpu" and not settings.smoke else []
    device = torch_device(settings.smoke) if settings.torch else None
    if settings.torch and device is None:
        notes.append("PyTorch not timed: it needs a CUDA PyTorch and JAX on a GPU.")
    if device:
        items += [
            Item("torch eager", c, lambda c=c: measure_torch(c, settings, peaks, False))
            for c in settings.cases
        ]
    if settings.loop_case:
        case = settings.loop_case
        items.append(Item("loop", case, lambda: measure_loop(case, settings)))
        items.append(Item("loop store", case, lambda: measure_loop(case, settings, "store")))
    if device and settings.torch_compile:
        first = sorted(settings.cases, key=lambda c: (c.dtype != "bfloat16", -c.batch_size))
        items += [
            Item("torch.compile", c, lambda c=c: measure_torch(c, settings, peaks, True))
            for c in first
        ]
    return items, notes


# ---- Output ---------------------------------------------------------------------------------


@dataclasses.dataclass
class Report:
    """Everything measured so far; `add` rewrites accelerator.json and accelerator.md."""

    out_dir: str
    header: dict[str, Any]
    started: float = 0.0  # when the run began, on `clock` (0: now)
    clock: Callable[[], float] = time.perf_counter
    rows: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    complete: bool = False  # every item of the plan measured or skipped

    def __post_init__(self):
        self.started = self.started or self.clock()

    def add(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        self.write()
        status = row.get("skipped") or row.get("error") or f"{row.get('img_s', 0):.1f} img/s"
        case = f"{row['variant']} {row['dtype']} batch {row['batch_size']}"
        print(f"{row['kind']:>13}  {case}: {status}", flush=True)

    def payload(self) -> dict[str, Any]:
        elapsed = self.clock() - self.started
        return {**self.header, "elapsed_s": elapsed, "complete": self.complete, "rows": self.rows}

    def write(self) -> None:
        os.makedirs(self.out_dir, exist_ok=True)
        common.write_json(os.path.join(self.out_dir, "accelerator.json"), self.payload())
        md_path = os.path.join(self.out_dir, "accelerator.md")
        rundir.write_atomically(md_path, markdown(self.payload()))


def _cell(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _gb(value: int | None) -> str:
    return "-" if value is None else f"{value / 1e9:.2f}"


STEP_COLUMNS = (
    "variant | dtype | batch | contender | compile s | first step s | step ms | img/s | MFU | "
    "JAX / this | program GB | peak GB"
)


def markdown(payload: dict[str, Any]) -> str:
    """The report as markdown: setup, one table of the steps, the loop, what was skipped."""
    env = payload["environment"]
    rows = payload["rows"]
    lines = [
        "# Accelerator benchmark" + (" (--smoke: tiny sizes, not measurements)" * payload["smoke"]),
        "",
        f"- {payload['device_kind']} ({env['backend']}), jax {env['jax']}, "
        f"torch {payload['torch_version'] or '-'}; {env['date']}; `{env['command']}`",
        f"- peak TFLOP/s for MFU: {payload['peak_tflops'] or 'unknown device: no MFU'}",
        f"- {payload['elapsed_s']:.0f} s of a {payload['budget_s']:.0f} s budget"
        + ("" if payload["complete"] else " (incomplete: still running, or stopped)"),
        *[f"- {note}" for note in payload["notes"]],
        "",
        "| " + STEP_COLUMNS + " |",
        "|" + "---|" * len(STEP_COLUMNS.split("|")),
    ]
    jax_img_s = {
        (r["variant"], r["dtype"], r["batch_size"]): r["img_s"]
        for r in rows
        if r.get("contender") == "jax"
    }
    for r in rows:
        if r["kind"].startswith("loop") or "img_s" not in r:
            continue
        jax_rate = jax_img_s.get((r["variant"], r["dtype"], r["batch_size"]))
        compile_s = r.get("lower_s", 0) + r["compile_s"] if "compile_s" in r else None
        cells = [
            r["variant"],
            r["dtype"],
            str(r["batch_size"]),
            r["contender"],
            _cell(compile_s, ".1f"),
            _cell(r.get("first_step_s"), ".2f"),
            _cell(r.get("step_ms"), ".1f"),
            _cell(r["img_s"], ",.0f"),
            _cell(r.get("mfu"), ".1%"),
            _cell(jax_rate / r["img_s"] if jax_rate else None, ".2f"),
            _gb(r.get("program_bytes")),
            _gb(r.get("peak_bytes")),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "compile s: JAX's trace + lower + XLA compile (ahead of time); PyTorch compiles within its "
        "first step. program GB: XLA's memory analysis of the step (arguments + outputs + "
        "temporaries - donated). peak GB: JAX, the process's allocator peak so far; PyTorch, "
        "this configuration's. JAX / this: the JAX step's img/s over this row's.",
    ]
    data_names = {
        "synthetic": "synthetic uint8 data",
        "store": "the miniature image store, 4 classes",
    }
    for r in rows:
        if r["kind"].startswith("loop") and "img_s" in r:
            step = jax_img_s.get((r["variant"], r["dtype"], r["batch_size"]))
            ratio = f", {r['img_s'] / step:.2f}x the JAX step" if step else ""
            built = f"; data prepared in {r['prepare_s']:.1f} s" if r.get("prepare_s") else ""
            lines += [
                "",
                f"Training loop (loop.train_and_evaluate, {data_names[r['data']]}, "
                f"augmentation on the device), {r['variant']} "
                f"{r['dtype']} batch {r['batch_size']}: **{r['img_s']:,.0f} img/s**{ratio} "
                f"(median of {len(r['interval_img_s'])} intervals of {r['log_every']} steps; "
                f"the first interval, which compiles (from the persistent cache if the step row "
                f"ran first), {r['first_interval_s']:.1f} s; setup, {r['loop_steps']} steps, "
                f"the final eval and checkpoint {r['wall_s']:.1f} s{built}).",
            ]
    left = [r for r in rows if "skipped" in r or "error" in r]
    if left:
        lines += ["", "Not measured:"]
        lines += [
            f"- {r['kind']} {r['variant']} {r['dtype']} batch {r['batch_size']}: "
            f"{r.get('skipped') or r.get('error')}"
            for r in left
        ]
    return "\n".join(lines) + "\n"


def _torch_version() -> str | None:
    try:
        import torch
    except ImportError:
        return None
    return torch.__version__


def main(argv):
    del argv
    os.environ.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.45")  # room for PyTorch
    threads = common.setup_process(common.THREADS.value)
    common.check_output_folder("--out_dir", _OUT.value)
    import jax

    from alexnet_jax.core import runtime

    settings = settings_from_flags()
    if settings.smoke:  # fc6/fc7 at 64 units as in the tests' quick runs; XLA's quick compiles
        from tests import multihost_worker

        multihost_worker.narrow_fc_layers()
        jax.config.update("jax_disable_most_optimizations", True)
    cache = tempfile.TemporaryDirectory(prefix="alexnet_jax_cache_")
    runtime.enable_compilation_cache(cache.name)  # as main.py: the loop reuses the step's compile
    budget = Budget(_BUDGET.value, start=STARTED)
    device_kind = jax.devices()[0].device_kind
    peaks = peak_tflops(device_kind, {"float32": _PEAK_F32.value, "bfloat16": _PEAK_BF16.value})
    items, notes = plan(settings, peaks, jax.default_backend())
    for note in notes:
        print(note, file=sys.stderr, flush=True)
    header = {
        "environment": common.environment(threads),
        "device_kind": device_kind,
        "torch_version": _torch_version(),
        "peak_tflops": peaks or None,
        "peak_source": "PEAK_TFLOPS in benchmarks/accelerator.py (or --peak_tflops_*)",
        "smoke": settings.smoke,
        "budget_s": _BUDGET.value,
        "notes": notes,
        "store_dir": settings.store_dir,
        "settings": {
            "repeats": settings.repeats,
            "warmup": settings.warmup,
            "input_size": settings.input_size,
            "loop_steps": settings.loop_steps,
        },
    }
    report = Report(_OUT.value, header, started=STARTED)
    report.write()
    run_plan(items, budget, report)
    report.complete = True
    report.write()
    print(markdown(report.payload()))
    print(f"Wrote accelerator.json and accelerator.md in {_OUT.value}")
    cache.cleanup()


if __name__ == "__main__":
    common.run(main)

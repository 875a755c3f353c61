"""The benchmark scripts run end to end in a quick mode (batch 1 or 2, one timed repeat) and write
sane JSON. This proves they work, not how fast anything is: the figures are in
benchmarks/RESULTS.md.

The four scripts run at the same time, as subprocesses on one real CPU device (without the
8 fake devices of conftest.py), so that the whole file stays well under a minute.
"""

import json
import os
import subprocess
import sys

import jax
import pytest

from alexnet_jax.core import runtime
from alexnet_jax.model import lrn, models

QUICK = ("--repeats=1", "--warmup=0", "--threads=0")
SCRIPTS = {
    "train_step": (
        "--variant=one_tower",
        "--dtype=float32",
        "--batch_size=1",
        "--peak_tflops=0.237",
        "--compile=inprocess",
    ),
    "compare_torch": ("--variant=one_tower", "--batch_size=1", "--notorch_compile"),
    "lrn": ("--batch_size=1", "--layers=conv2"),
    "input_pipeline": (
        "--image_sides=40,60",
        "--num_images=8",
        "--batch_size=2",
        "--num_batches=3",
    ),
    "image_store": ("--num_images=24", "--size=32", "--batch_size=4", "--grain_workers=0"),
}
TIMEOUT_S = 150


@pytest.fixture(scope="module")
def runs(repo_root, tmp_path_factory):
    """{script: (its JSON output, its stdout, its stderr)}, the scripts run concurrently."""
    out_dir = tmp_path_factory.mktemp("benchmarks")
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}  # one real CPU device
    procs = {}
    for name, args in SCRIPTS.items():
        script = os.path.join(repo_root, "benchmarks", f"{name}.py")
        cmd = [sys.executable, script, *QUICK, *args, f"--json={out_dir / name}.json"]
        if name == "input_pipeline":  # its generated images and builds
            cmd.append(f"--bench_dir={out_dir / 'bench_input'}")
        if name == "image_store":  # its squares in each format
            cmd.append(f"--store_dir={out_dir / 'bench_store'}")
        procs[name] = subprocess.Popen(
            cmd, env=env, cwd=repo_root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
    outputs = {}
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=TIMEOUT_S)
        assert proc.returncode == 0, f"benchmarks/{name}.py failed:\n{out[-2000:]}{err[-3000:]}"
        with open(out_dir / f"{name}.json") as f:
            outputs[name] = (json.load(f), out, err)
    return outputs


@pytest.fixture(scope="module")
def results(runs):
    """{script: its JSON output}."""
    return {name: result for name, (result, _, _) in runs.items()}


def test_train_step_prints_its_table_once_and_nothing_on_stderr(runs):
    """A normal run prints the machine line and its table (the header once, one row per config,
    as they are measured) on stdout; stderr holds nothing: no library INFO line (JAX's "Unable
    to initialize backend 'tpu'", absl's, XLA's), no warning."""
    _, out, err = runs["train_step"]
    assert err == ""
    lines = out.splitlines()
    assert lines[0].startswith("# ")
    assert "jax " in lines[0]
    assert lines[1].split()[:3] == ["variant", "dtype", "batch"]
    assert lines[1].endswith(" load")
    assert lines[2].split()[:3] == ["one_tower", "float32", "1"]
    assert len(lines) == 3


def test_train_step_reports_compile_times_speed_and_mfu(results):
    """One row with cold > warm-cache compile times, positive speeds, the analytic FLOP count
    of the variant, and the MFU that follows from it and the given peak."""
    result = results["train_step"]
    assert result["environment"]["xla_flags"]  # the project's XLA flags were set
    (row,) = result["rows"]
    assert (row["variant"], row["dtype"], row["batch_size"]) == ("one_tower", "float32", 1)
    assert 0 < row["compile_warm_s"] < row["compile_cold_s"]
    assert row["train_flops_per_image"] == models.train_flops_per_image("one_tower", 227, 1000)
    for mode in ("train", "eval"):
        assert row[f"{mode}_img_s"] == pytest.approx(1e3 / row[f"{mode}_step_ms"])
        gflops = row[f"{mode}_img_s"] * row[f"{mode}_flops_per_image"] / 1e9
        assert row[f"{mode}_gflops"] == pytest.approx(gflops)
        assert row[f"{mode}_mfu"] == pytest.approx(gflops / 237)


def test_compare_torch_times_jax_and_pytorch_and_gives_ratios(results):
    """Train and eval rows for JAX and each PyTorch form, with JAX/PyTorch img/s ratios."""
    result = results["compare_torch"]
    assert result["environment"]["torch_threads"] == result["environment"]["cpus_used"]
    rows = {(r["mode"], r["contender"]): r for r in result["rows"]}
    for mode in ("train", "eval"):
        jax_row = rows[(mode, "jax")]
        assert jax_row["jax_ratio"] == pytest.approx(1.0)
        for contender in ("torch eager", "torch eager channels_last"):
            row = rows[(mode, contender)]
            assert row["img_s"] > 0
            assert row["jax_ratio"] == pytest.approx(jax_row["img_s"] / row["img_s"])


def test_lrn_benchmark_checks_every_implementation_against_torch(results):
    """Every implementation, forward and forward+backward, agrees with torch to 1e-5 and is
    timed; the summary names the fastest one and the backend's default."""
    result = results["lrn"]
    rows = result["rows"]
    for impl in lrn.IMPLEMENTATIONS:
        for pass_name in ("forward", "forward+backward"):
            (row,) = [r for r in rows if r["contender"] == impl and r["pass"] == pass_name]
            assert row["max_rel_error"] <= 1e-5
            assert row["median_ms"] > 0
            assert row["speedup_vs_torch"] > 0
    assert "default_implementation()" in result["fastest"][0]


@pytest.mark.parametrize(
    ("version", "applied"),
    [
        ("0.10.2", True),
        ("0.10.7.dev20261101", True),
        ("0.10.1", False),
        ("0.9.2", False),
        ("0.11.0", False),
        ("1.0.0", False),
    ],
)
def test_project_xla_flags_only_for_the_jaxlib_releases_they_were_measured_with(
    version, applied, capsys
):
    """XLA aborts on a flag it does not know: outside XLA_FLAGS_JAXLIB nothing is set, and a
    warning (stderr) names the flags and the jaxlib version."""
    flags_ = runtime.project_xla_flags(version)
    assert flags_ == (runtime.XLA_FLAGS if applied else ())
    err = capsys.readouterr().err
    assert (f"this is jaxlib {version}" in err) is not applied
    assert err == "" or err.startswith("warning: Not setting the project's XLA flags")


def test_input_pipeline_benchmark_times_full_size_jpegs_the_256_cache_and_the_store(results):
    """One row per source, from a real imagenet2012 build of generated JPEGs of the given sizes;
    the rates follow from the timed images and their wall and CPU times; the store holds 256x256
    uint8 squares (196,608 bytes each, plus a .npy header and its labels and ids)."""
    rows = results["input_pipeline"]["rows"]
    assert [r["source"] for r in rows] == [
        "full-size JPEGs",
        "pre-resized 256 cache",
        "256x256 image store",
    ]
    assert [r["augment_on"] for r in rows] == ["host", "host", "device"]
    assert rows[2]["image_bytes"] == 196_608
    assert 196_608 < rows[2]["disk_bytes_per_image"] < 196_608 + 100
    for row in rows:
        assert row["disk_bytes_per_image"] > 0
        assert row["image_sides"] == [40, 60]
        assert row["images_per_trial"] == 6
        assert row["mean_jpeg_bytes"] > 0
        assert row["images_per_s"] > 0
        assert row["images_per_s_per_core"] == pytest.approx(row["images_per_s"] / row["cores"])
        assert row["images_per_cpu_s_best"] >= row["images_per_cpu_s"] > 0


def test_image_store_benchmark_times_each_reader_of_the_same_squares(results):
    """A row per reader of the same 24 squares of 32x32x3 (3,072 bytes, 24 of them in one shard),
    each timed over whole epochs of 6 batches; Grain is a row of its own, timed when installed
    and named as not installed otherwise."""
    rows = results["image_store"]["rows"]
    readers = [r["reader"] for r in rows]
    assert readers[:3] == ["image store (preadv)", "numpy memmap, fancy index", "ArrayRecord"]
    assert readers[3] in ("Grain, 0 workers", "Grain")
    for row in rows[:2]:  # the same .npy shard: the squares, a header, labels and ids
        assert 3072 < row["disk_bytes_per_image"] < 3072 + 300
    assert rows[2]["disk_bytes_per_image"] > 3072  # each record plus ArrayRecord's index
    for row in rows[:3]:
        assert row["images_per_trial"] == 24
        assert row["images_per_cpu_s_max"] >= row["images_per_cpu_s"] >= row["images_per_cpu_s_min"]
        assert row["images_per_s"] > 0
    if readers[3] == "Grain":
        assert rows[3]["note"] == "grain not installed: pip install grain"


def test_set_xla_flags_adds_the_project_flags_but_keeps_the_users(repo_root):
    """runtime.set_xla_flags appends the project's flags to XLA_FLAGS, leaves a flag the user
    set as the user set it, and refuses once JAX's backends are running (as in this process)."""
    script = (
        "import os; from alexnet_jax.core import runtime; "
        "print(runtime.set_xla_flags(('--a=1', '--b=2', '--xla_c=3')))"
    )
    env = {**os.environ, "XLA_FLAGS": "--b=user --d=4"}
    out = subprocess.run(
        [sys.executable, "-c", script], env=env, cwd=repo_root, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["--b=user", "--d=4", "--a=1", "--xla_c=3"]
    assert all(f.startswith("--xla_cpu_") for f in runtime.XLA_FLAGS)
    jax.devices()  # this process's backends are running
    with pytest.raises(RuntimeError, match="before JAX starts its backends"):
        runtime.set_xla_flags()


@pytest.mark.parametrize(
    ("script", "flag"), [("train_step", "--json=x.json"), ("accelerator", "--out_dir=x")]
)
def test_an_output_folder_that_cannot_be_created_is_one_line_before_measuring(
    repo_root, tmp_path, script, flag
):
    """A --json or --out_dir whose folder the file system refuses (here too long a name; the same
    path as a missing mount or a read-only disk) stops the script at start with one `error:` line
    and exit 2, instead of a traceback when the results are written after minutes of measuring."""
    name, value = flag.split("=")
    bad = str(tmp_path / ("j" * 300) / value)
    cmd = [sys.executable, os.path.join(repo_root, "benchmarks", f"{script}.py"), f"{name}={bad}"]
    proc = subprocess.run(cmd, cwd=repo_root, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1
    assert "Traceback" not in proc.stderr
    assert f"error: {name}: the folder " in errors[0]
    assert "cannot be created (File name too long" in errors[0]


def test_every_benchmark_script_keeps_stderr_empty_on_a_normal_run(runs):
    """Each script's normal (tiny) run: its results on stdout, nothing on stderr (no line from
    TensorFlow, Orbax, absl, XLA or PyTorch)."""
    for name, (_, out, err) in runs.items():
        assert out.strip(), name
        assert err == "", f"benchmarks/{name}.py wrote to stderr:\n{err[-2000:]}"


@pytest.mark.parametrize(
    ("flag", "message"),
    [
        ("--batch_size=0", "--batch_size must be integers >= 1"),
        ("--variant=bogus", "--variant must be one or more of: paper, one_tower"),
        ("--bogus=1", "Unknown command line flag 'bogus'"),
        # Hostile pass 18, #75-#78: -1 pinned the process to all CPUs but one, more CPUs than
        # there are, a run's config.json and a worker count 'x' were tracebacks.
        ("--threads=-1", "--threads=-1: -1 is not a non-negative integer"),
        ("--threads=4096", "--threads=4096, but this process may use only"),
        ("--config=README.md", "--config=README.md: not a Python config file"),
        ("image_store.py --grain_workers=x", "--grain_workers must be integers >= 0"),
    ],
)
def test_a_bad_benchmark_flag_is_one_error_line_and_exit_2(repo_root, flag, message):
    """benchmarks/train_step.py (every script runs through common.run) with a value the library
    refuses, an unknown variant or an unknown flag: one `error:` line naming it, exit 2, before
    anything is measured; no traceback."""
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    name, _, flag = flag.rpartition(" ")
    script = os.path.join(repo_root, "benchmarks", name or "train_step.py")
    proc = subprocess.run(
        [sys.executable, script, flag, *([] if name else ["--compile=none"])],
        env=env,
        cwd=repo_root,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )
    assert proc.returncode == 2, proc.stderr[-3000:]
    (line,) = proc.stderr.splitlines()
    assert line.startswith("error: ")
    assert message in line


def test_train_step_times_a_run_s_own_config(repo_root, tmp_path):
    """Hostile pass 18, #77: --config=<run>/config.json was an AttributeError traceback; a run's
    folder or its config.json times that run's step, as a config file does."""
    from alexnet_jax.runs import rundir
    from configs import figure1

    config = figure1.get_config()
    config.update(dataset="synthetic", normalization="mean_std", batch_size=8)
    rundir.save_config(config, str(tmp_path))
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    script = os.path.join(repo_root, "benchmarks", "train_step.py")
    given = str(tmp_path / rundir.CONFIG_FILE)  # (its folder reads the same file)
    proc = subprocess.run(
        [sys.executable, script, f"--config={given}", *QUICK, "--compile=none", "--noeval"],
        env=env, cwd=repo_root, capture_output=True, text=True, timeout=TIMEOUT_S,
    )  # fmt: skip
    assert (proc.returncode, proc.stderr) == (0, ""), proc.stderr[-3000:]
    (row,) = [line.split() for line in proc.stdout.splitlines() if "cifar4" in line]
    assert row[:3] == ["cifar4", "float32", "8"]

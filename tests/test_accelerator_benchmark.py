"""benchmarks/accelerator.py: its --smoke mode runs every measurement on the CPU and writes sane
JSON and markdown; its time budget skips what no longer fits and keeps what was measured.

The smoke run is one subprocess on one real CPU device (no fake devices), float32 only (bfloat16
takes the same code path and compiles slower on XLA:CPU) to keep it to seconds. The figures it
writes prove the code runs, not how fast anything is.
"""

import json
import os
import subprocess
import sys

import pytest

from alexnet_jax.model import models

PEAK = 0.237  # any number: the MFU must follow from it
TIMEOUT_S = 240


@pytest.fixture(scope="module")
def smoke(repo_root, tmp_path_factory):
    """(accelerator.json, accelerator.md) of `accelerator.py --smoke`, a normal run: nothing on
    stderr (no Orbax, absl, XLA or torch.compile line)."""
    out = tmp_path_factory.mktemp("accelerator")
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}  # one real CPU device
    cmd = [
        sys.executable,
        os.path.join(repo_root, "benchmarks", "accelerator.py"),
        "--smoke",
        "--dtype=float32",
        f"--peak_tflops_float32={PEAK}",
        f"--out_dir={out}",
    ]
    proc = subprocess.run(
        cmd, env=env, cwd=repo_root, capture_output=True, text=True, timeout=TIMEOUT_S
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert proc.stderr == "", proc.stderr[-4000:]
    with open(out / "accelerator.json") as f:
        payload = json.load(f)
    return payload, (out / "accelerator.md").read_text()


def test_smoke_measures_the_jax_step_pytorch_both_ways_and_the_loop(smoke):
    """One row per kind, none failed or skipped, in the plan's order; each speed follows from
    its step time, its MFU from the analytic FLOPs and the given peak."""
    payload, _ = smoke
    assert payload["smoke"] is True
    assert payload["complete"] is True
    assert payload["peak_tflops"] == {"float32": PEAK}
    rows = payload["rows"]
    assert [r["kind"] for r in rows] == [
        "jax",
        "torch eager",
        "loop",
        "loop store",
        "torch.compile",
    ]
    assert not [r for r in rows if "error" in r or "skipped" in r]
    flops = models.train_flops_per_image("torchvision", 64, 1000)
    for row in rows:
        assert (row["variant"], row["dtype"], row["batch_size"]) == ("torchvision", "float32", 2)
        assert row["img_s"] > 0
        if not row["kind"].startswith("loop"):
            assert row["img_s"] == pytest.approx(2e3 / row["step_ms"])
            assert row["train_flops_per_image"] == flops
            assert row["mfu"] == pytest.approx(row["img_s"] * flops / (PEAK * 1e12))
    jax_row, eager, loop, store_loop, compiled = rows
    assert jax_row["compile_s"] > 0
    assert jax_row["lower_s"] > 0
    assert jax_row["program_bytes"] > 0
    assert eager["torch_device"] == compiled["torch_device"] == "cpu"
    assert loop["loop_steps"] == 4
    assert len(loop["interval_img_s"]) == 1  # the first of two intervals (compile) left out
    assert loop["first_interval_s"] > 0
    assert (loop["data"], store_loop["data"]) == ("synthetic", "store")
    assert store_loop["prepare_s"] > 0  # generated, built and stored in the run's --out_dir
    assert len(store_loop["interval_img_s"]) == 1
    assert os.listdir(os.path.join(payload["store_dir"], "store"))


def test_smoke_markdown_has_the_table_and_the_loop(smoke):
    _, text = smoke
    assert text.startswith("# Accelerator benchmark (--smoke: tiny sizes, not measurements)")
    table = [line for line in text.splitlines() if line.startswith("| torchvision | float32")]
    assert [line.split(" | ")[3] for line in table] == ["jax", "torch eager", "torch.compile"]
    assert "Training loop (loop.train_and_evaluate, synthetic uint8 data, augmentation" in text
    assert "Training loop (loop.train_and_evaluate, the miniature image store, 4 classes" in text
    assert "Not measured" not in text


@pytest.fixture(scope="module")
def accelerator():
    """The script as a module (its absl flags are defined, never parsed here)."""
    from benchmarks import accelerator

    return accelerator


def test_budget_skips_what_no_longer_fits_and_keeps_going_after_an_error(accelerator, tmp_path):
    """A fake clock: 3 JAX measurements of 30 s fit in 100 s (the prior, 40 s, then the longest
    seen, 30 s, plus the reserve); a 4th and the loop (prior 90 s) are skipped; a failing one is
    an error row; the files are rewritten after every row and say what was not measured."""
    now = [0.0]
    clock = lambda: now[0]

    def takes(seconds, fail=False):
        def measure():
            now[0] += seconds
            if fail:
                raise MemoryError("out of memory\nmore")
            return {"contender": "jax", "img_s": 100.0, "step_ms": 10.0}

        return measure

    case = accelerator.Case("paper", "bfloat16", 512)
    items = [accelerator.Item("jax", case, takes(30)) for _ in range(2)]
    items += [accelerator.Item("jax", case, takes(30, fail=True))]
    items += [accelerator.Item("jax", case, takes(30)), accelerator.Item("loop", case, takes(1))]
    header = {"smoke": False, "budget_s": 100, "notes": [], "device_kind": "x"}
    header |= {"torch_version": None, "peak_tflops": None}
    header["environment"] = {"backend": "gpu", "jax": "0", "date": "d", "command": "c"}
    report = accelerator.Report(str(tmp_path), header, clock=clock)
    written = []
    report.write = lambda: written.append(len(report.rows))
    accelerator.run_plan(items, accelerator.Budget(100, clock=clock), report)

    kinds = [(r["kind"], "error" in r, "skipped" in r) for r in report.rows]
    assert kinds == [
        ("jax", False, False),
        ("jax", False, False),
        ("jax", True, False),
        ("jax", False, True),
        ("loop", False, True),
    ]
    assert report.rows[2]["error"] == "MemoryError: out of memory"
    assert "10 s left" in report.rows[3]["skipped"]
    assert written == [1, 2, 3, 4, 5]
    text = accelerator.markdown(report.payload())
    assert "- loop paper bfloat16 batch 512: time budget: 10 s left" in text
    assert "(incomplete" in text


def test_peak_tflops_from_the_table_or_the_flags_else_none(accelerator):
    assert accelerator.peak_tflops("NVIDIA H200", {}) == {"bfloat16": 989.0, "float32": 67.0}
    assert accelerator.peak_tflops("NVIDIA H100 PCIe", {"float32": 0.0}) == {}  # no MFU
    assert accelerator.peak_tflops("cpu", {"bfloat16": 1.5}) == {"bfloat16": 1.5}


def test_a_full_run_without_an_accelerator_says_so_and_what_to_do(accelerator):
    """`accelerator.py` without --smoke on a machine where JAX sees only the CPU still measures,
    but its notes (printed first and written in the report) name the cause and both ways out."""

    def notes(backend, smoke):
        case = accelerator.Case("paper", "float32", 128)
        settings = accelerator.Settings(
            cases=(case,), loop_case=None, loop_steps=4, loop_log_every=2, input_size=None,
            repeats=2, warmup=1, torch=False, torch_compile=False, smoke=smoke,
        )  # fmt: skip
        return accelerator.plan(settings, {}, backend)[1]

    assert notes("cpu", smoke=False) == [accelerator.NO_ACCELERATOR]
    assert "CUDA JAX" in accelerator.NO_ACCELERATOR
    assert "--smoke" in accelerator.NO_ACCELERATOR
    assert notes("gpu", smoke=False) == notes("tpu", smoke=False) == []
    assert notes("cpu", smoke=True) == []

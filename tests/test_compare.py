"""compare.py on hand-made metrics.jsonl files: mean ± std over seeds against values computed by
hand, a run without an evaluation listed with its state, a missing or damaged metrics file named.
(tests/test_sweep.py runs compare at the end of a real sweep.)"""

import csv
import json
import os

import pytest

from alexnet_jax.runs import rundir
from alexnet_jax.tools import compare


def _write_metrics(workdir, evals, speeds, step_time_ms=100.0):
    """metrics.jsonl with a train line per step (speed, step time, loss) and eval lines at the
    given steps: evals = [(step, top1 error, top5 error)]."""
    os.makedirs(workdir)
    last = max(step for step, *_ in evals) if evals else len(speeds)
    lines = []
    for step in range(1, last + 1):
        speed = speeds[(step - 1) % len(speeds)]
        lines.append({"step": step, "split": "train", "loss": 1.0 / step})
        lines[-1].update(images_per_sec=speed, step_time_ms=step_time_ms)
        for eval_step, top1_error, top5_error in evals:
            if eval_step == step:
                lines.append(
                    {"step": step, "split": "eval", "top1": 1 - top1_error, "top5": 1 - top5_error}
                )
    with open(rundir.metrics_path(workdir), "w") as f:
        f.writelines(json.dumps(line) + "\n" for line in lines)


def test_compare_gives_mean_and_std_over_seeds_as_computed_by_hand(tmp_path, capsys):
    """Arm x has three seeds with final top-1 errors 30/40/50% (mean 40, std 10 with ddof=1) and
    best 20/40/30% (mean 30, std 10); arm y has one run without an evaluation: listed, with its
    state and speed. images/s is each run's median; train time its step times summed."""
    root = str(tmp_path / "runs")
    for seed, (final, best) in enumerate(((0.3, 0.2), (0.5, 0.4), (0.4, 0.3))):
        evals = [(2, 0.9, 0.5), (4, best, 0.1), (6, final, 0.2)]
        _write_metrics(os.path.join(root, "x", f"seed_{seed}"), evals, speeds=[10.0, 40.0 + seed])
    _write_metrics(os.path.join(root, "y"), [], speeds=[5.0, 7.0, 6.0])

    compare.main([root])
    out = capsys.readouterr().out
    rows = {x.split(" | ")[0].strip("| "): x for x in out.splitlines() if x.startswith("| ")}
    # final top-1, final top-5, best top-1, best top-5, steps, images/s, train time (6 x 0.1 s)
    x_cells = ["40.0 ± 10.0", "20.0 ± 0.0", "30.0 ± 10.0", "10.0 ± 0.0", "6 ± 0", "25.5 ± 0.5"]
    x_cells += ["0.6 ± 0.0 |"]
    assert rows["x"].split(" | ")[1:] == ["3 (seeds 0,1,2)", "unfinished (step 6)", *x_cells]
    assert (
        rows["y"] == "| y | 1 | unfinished (step 3), no eval yet | - | - | - | - | 3 | 6.0 | 0.3 |"
    )
    with open(os.path.join(root, "comparison.csv")) as f:
        x, _ = csv.DictReader(f)
    assert float(x["final_top1_error"]) == pytest.approx(0.4)
    assert float(x["final_top1_error_std"]) == pytest.approx(0.1)
    assert float(x["best_top1_error_std"]) == pytest.approx(0.1)
    assert x["final_top5_error_std"] == "0.0"
    assert os.path.getsize(os.path.join(root, "comparison.png")) > 0


def test_compare_names_a_missing_or_damaged_metrics_file(tmp_path, capsys):
    """A named run without metrics.jsonl, or with one that holds no metrics record: one
    `error:` line naming the file, exit code 2."""
    missing, damaged = tmp_path / "missing", tmp_path / "damaged"
    missing.mkdir()
    (missing / "config.json").write_text("{}")
    damaged.mkdir()
    (damaged / "metrics.jsonl").write_bytes(b"\x00\xff garbage\n[1, 2]\n")
    for workdir, text in ((missing, "not found"), (damaged, "is damaged")):
        with pytest.raises(SystemExit) as exit_info:
            compare.main([str(workdir), f"--out={tmp_path / 'c'}"])
        assert exit_info.value.code == 2
        (line,) = capsys.readouterr().err.splitlines()
        assert line.startswith(f"error: {workdir / 'metrics.jsonl'} {text}")


def test_compare_names_an_out_folder_that_cannot_be_created(tmp_path, capsys):
    """An --out whose folder the file system refuses (here too long a name; the same path as a
    missing mount or a read-only disk): one `error:` line naming --out and the reason, exit 2."""
    _write_metrics(str(tmp_path / "run"), [(2, 0.5, 0.1)], speeds=[10.0])
    out = tmp_path / ("o" * 300) / "c"
    with pytest.raises(SystemExit) as exit_info:
        compare.main([str(tmp_path / "run"), f"--out={out}"])
    assert exit_info.value.code == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith(f"error: --out={out}: its folder cannot be created (File name too long")

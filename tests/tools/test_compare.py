"""compare.py on hand-made metrics.jsonl files: mean ± std over seeds against values computed by
hand, files of this version (error rates) and of earlier ones (accuracies) alike, re-evaluations
left out, top-5 only for more than 5 classes, a run without an evaluation listed with its state,
a missing or damaged metrics file named. (tests/tools/test_sweep.py runs compare at the end of a
real sweep.)"""

import csv
import json
import os
import re

import pytest

from alexnet_jax.runs import rundir
from alexnet_jax.tools import compare


def _eval_line(step, top1_error, top5_error, version):
    """An eval line as main.py writes it now ("new": error rates), or wrote it before errors were
    the convention ("old": accuracies, and eval lines with the errors too)."""
    if version == "new":
        return {"step": step, "split": "eval", "top1_error": top1_error, "top5_error": top5_error}
    return {"step": step, "split": "eval", "top1": 1 - top1_error, "top5": 1 - top5_error}


def _write_metrics(
    workdir, evals, speeds, step_time_ms=100.0, version="new", num_classes=None, config=True
):
    """metrics.jsonl with a train line per step (speed, step time, loss) and eval lines at the
    given steps: evals = [(step, top1 error, top5 error)]; and a config.json (with `num_classes`
    when given) unless not `config`."""
    os.makedirs(workdir)
    last = max(step for step, *_ in evals) if evals else len(speeds)
    lines = []
    for step in range(1, last + 1):
        speed = speeds[(step - 1) % len(speeds)]
        lines.append({"step": step, "split": "train", "loss": 1.0 / step})
        lines[-1].update(images_per_sec=speed, step_time_ms=step_time_ms)
        for eval_step, top1_error, top5_error in evals:
            if eval_step == step:
                lines.append(_eval_line(step, top1_error, top5_error, version))
    with open(rundir.metrics_path(workdir), "w") as f:
        f.writelines(json.dumps(line) + "\n" for line in lines)
    if config:
        with open(rundir.config_path(workdir), "w") as f:
            json.dump({} if num_classes is None else {"num_classes": num_classes}, f)


@pytest.mark.parametrize("version", ["new", "old"])
def test_compare_gives_mean_and_std_over_seeds_as_computed_by_hand(tmp_path, capsys, version):
    """Arm x has three seeds with final top-1 errors 30/40/50% (mean 40, std 10 with ddof=1) and
    best 20/40/30% (mean 30, std 10); arm y has one run without an evaluation: listed, with its
    state and speed. images/s is each run's median; train time its step times summed. The same
    from metrics.jsonl files written before errors were the convention (accuracies)."""
    root = str(tmp_path / "runs")
    for seed, (final, best) in enumerate(((0.3, 0.2), (0.5, 0.4), (0.4, 0.3))):
        evals = [(2, 0.9, 0.5), (4, best, 0.1), (6, final, 0.2)]
        workdir = os.path.join(root, "x", f"seed_{seed}")
        _write_metrics(workdir, evals, speeds=[10.0, 40.0 + seed], version=version)
    _write_metrics(os.path.join(root, "y"), [], speeds=[5.0, 7.0, 6.0], version=version)

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
    assert float(x["final_top5_error_std"]) == pytest.approx(0.0, abs=1e-12)
    assert os.path.getsize(os.path.join(root, "comparison.png")) > 0


def test_metrics_of_earlier_versions_read_as_error_rates_and_repeated_evals_as_reevals(tmp_path):
    """rundir.read_metrics, every reader's one door: accuracies of earlier files ("top1",
    "top5") come back as errors (eval lines that held both keep their errors), nothing else
    changes; an eval line of a step evaluated before (an earlier --mode=eval appended it
    unmarked) is marked "reeval", as --mode=eval marks it now; files of this version read as
    written."""
    old = [
        {"step": 1, "split": "train", "loss": 2.0, "top1": 0.25, "top5": 0.5, "epoch": 0.5},
        {
            "step": 1,
            "split": "eval",
            "top1": 0.5,
            "top5": 1.0,
            "top1_error": 0.5,
            "top5_error": 0.0,
        },
        {"step": 2, "split": "eval", "top1": 0.75, "top5": 1.0, "num_examples": 8.0},
        {"step": 2, "split": "eval", "top1": 0.625, "top5": 1.0, "num_examples": 8.0},
    ]
    rundir.rewrite_jsonl(rundir.metrics_path(str(tmp_path)), old)
    assert rundir.read_metrics(str(tmp_path)) == [
        {
            "step": 1,
            "split": "train",
            "loss": 2.0,
            "top1_error": 0.75,
            "top5_error": 0.5,
            "epoch": 0.5,
        },
        {"step": 1, "split": "eval", "top1_error": 0.5, "top5_error": 0.0},
        {"step": 2, "split": "eval", "top1_error": 0.25, "top5_error": 0.0, "num_examples": 8.0},
        {
            "step": 2,
            "split": "eval",
            "top1_error": 0.375,
            "top5_error": 0.0,
            "num_examples": 8.0,
            "reeval": True,
        },
    ]
    new = [
        {"step": 2, "split": "train", "loss": 2.0, "top1_error": 0.25, "top5_error": 0.5},
        {"step": 2, "split": "eval", "top1_error": 0.5, "top5_error": 0.0},
        {"step": 2, "split": "eval", "top1_error": 0.25, "top5_error": 0.0, "reeval": True},
    ]
    rundir.rewrite_jsonl(rundir.metrics_path(str(tmp_path)), new)
    records = rundir.read_metrics(str(tmp_path))
    assert records == new
    assert rundir.run_evals(records) == [new[1]]


@pytest.mark.parametrize("version", ["new", "old"])
def test_compare_leaves_out_reevaluations_and_shows_top5_only_beyond_5_classes(
    tmp_path, capsys, version
):
    """A re-evaluation (--mode=eval of step 4, here better than any evaluation of the run) is
    neither the run's final nor its best evaluation, nor a point of its curve. The top-5 columns
    are shown when a run has more than 5 classes (or no config says), not when every run has 4:
    its top-5 error is always 0 (the CSV keeps its columns, empty)."""
    evals = [(2, 0.6, 0.3), (4, 0.4, 0.2)]
    few, many = str(tmp_path / "few"), str(tmp_path / "many")
    _write_metrics(few, evals, speeds=[10.0], version=version, num_classes=4)
    _write_metrics(many, evals, speeds=[10.0], version=version, num_classes=10)
    for workdir in (few, many):
        with open(rundir.metrics_path(workdir), "a") as f:
            reeval = _eval_line(4, 0.1, 0.05, version)
            f.write(json.dumps({**reeval, "reeval": True} if version == "new" else reeval) + "\n")
    run = compare.summarize_run(many, "many", None)
    assert run.values["final_top1_error"] == pytest.approx(0.4)
    assert run.values["best_top1_error"] == pytest.approx(0.4)
    assert run.values["final_top5_error"] == pytest.approx(0.2)
    assert run.eval_curve == ([2, 4], [pytest.approx(0.6), pytest.approx(0.4)])

    compare.main([few, f"--out={tmp_path / 'few_only'}"])
    header = capsys.readouterr().out.splitlines()[0]
    assert "top-1 err" in header
    assert "top-5" not in header
    with open(tmp_path / "few_only.csv") as f:
        (row,) = csv.DictReader(f)
    assert float(row["final_top1_error"]) == pytest.approx(0.4)
    assert row["final_top5_error"] == row["best_top5_error"] == ""
    compare.main([few, many, f"--out={tmp_path / 'both'}"])
    lines = capsys.readouterr().out.splitlines()
    assert "final top-5 err %" in lines[0]
    assert lines[2].split(" | ")[3:7] == ["40.0", "-", "40.0", "-"]  # few: 4 classes
    assert lines[3].split(" | ")[3:7] == ["40.0", "20.0", "40.0", "20.0"]


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


def test_the_error_on_the_training_images_and_the_gap_come_from_an_evaluation_of_train(tmp_path):
    """#26: the train/held-out gap. A run's error on its training images is the re-evaluation of
    its final step on the training split (`--mode=eval --config.eval_split=train`, a reeval line
    labelled eval_split "train"); gap = final held-out minus that, per run, then mean ± std
    (by hand: gaps 0.10 and 0.20 -> 15.0 ± 7.1 points). An evaluation of train at another step
    is not the final one's; without any, the two columns are left out."""
    root = str(tmp_path / "runs")
    for seed, (final, train) in enumerate(((0.3, 0.2), (0.5, 0.3))):
        workdir = os.path.join(root, "x", f"seed_{seed}")
        _write_metrics(workdir, [(2, 0.6, 0.1), (4, final, 0.1)], speeds=[10.0])
        with open(rundir.metrics_path(workdir), "a") as f:
            for step, error in ((2, 0.0), (4, train)):  # only step 4 is the final step
                line = {"step": step, "split": "eval", "top1_error": error, "top5_error": 0.0}
                f.write(json.dumps({**line, "reeval": True, "eval_split": "train"}) + "\n")
    table, _ = compare.write_comparison([root], str(tmp_path / "c"))
    header, _, row = table.splitlines()[:3]
    cells = dict(zip(header.split(" | "), row.split(" | "), strict=True))
    assert cells["final top-1 err %"] == "40.0 ± 14.1"  # the reevals are not the run's own
    assert cells["train top-1 err %"] == "25.0 ± 7.1"
    assert cells["gap pts"] == "15.0 ± 7.1"
    assert "Train: the top-1 error on the training images at the final step" in table

    _write_metrics(str(tmp_path / "plain"), [(4, 0.3, 0.1)], speeds=[10.0])
    table, _ = compare.write_comparison([str(tmp_path / "plain")], str(tmp_path / "d"))
    assert "train top-1" not in table
    assert "gap" not in table


def test_the_training_error_counts_only_views_like_the_final_ones_and_says_how_many_runs(tmp_path):
    """Pass 6, #20: a 10-crop evaluation of the training split was compared with the one-crop
    final one (the gap was 5.0 points, 2.5 with like views); #21: an arm with one of its two runs
    evaluated on train showed that run's gap beside both runs' final error without a word."""
    root = str(tmp_path / "runs")
    for seed in (0, 1):
        workdir = os.path.join(root, "x", f"seed_{seed}")
        _write_metrics(workdir, [(4, 0.9, 0.1)], speeds=[10.0])
        if seed == 0:
            with open(rundir.metrics_path(workdir), "a") as f:
                for crops, error in ((1, 0.875), (10, 0.85)):  # the 10-crop one is the last
                    line = {"step": 4, "split": "eval", "top1_error": error, "reeval": True}
                    line.update(eval_split="train", eval_crops=crops)
                    f.write(json.dumps(line) + "\n")
    table, _ = compare.write_comparison([root], str(tmp_path / "c"))
    header, _, row = table.splitlines()[:3]
    cells = dict(zip(header.split(" | "), row.split(" | "), strict=True))
    assert cells["train top-1 err %"] == "87.5 (1 of 2 runs)"
    assert cells["gap pts"] == "2.5 (1 of 2 runs)"


def _rows(table):
    """arm -> (runs cell, final top-1 cell) of a markdown table."""
    rows = [line.split(" | ") for line in table.splitlines()[2:] if line.startswith("| ")]
    return {row[0].strip("| "): (row[1], row[3]) for row in rows}


def _run_with_config(workdir, final_error, **config):
    _write_metrics(workdir, [(2, final_error, 0.1)], speeds=[10.0])
    with open(rundir.config_path(workdir), "w") as f:
        json.dump({"variant": "cifar4", "num_classes": 10, "seed": 0, **config}, f)


def test_runs_that_only_share_a_folder_name_are_rows_of_their_own_named_by_their_paths(tmp_path):
    """Pass 7, #41: x/run1 and y/run1 (another variant, dataset and number of classes) became one
    arm `run1/run1` and were averaged (72.9 ± 20.6). Runs named one by one are one arm only as
    <arm>/seed_<s> folders of one arm; others are rows named by enough of their path."""
    _run_with_config(str(tmp_path / "x" / "run1"), 0.5)
    _run_with_config(str(tmp_path / "y" / "run1"), 0.9, variant="torchvision", num_classes=4)
    _run_with_config(str(tmp_path / "a" / "w" / "run1"), 0.3)
    _run_with_config(str(tmp_path / "b" / "w" / "run1"), 0.3)
    for seed in (0, 1):
        _run_with_config(str(tmp_path / "s" / "arm" / f"seed_{seed}"), 0.4 + seed / 10, seed=seed)
    names = ["x/run1", "y/run1", "a/w/run1", "b/w/run1", "s/arm/seed_0", "s/arm/seed_1"]
    table, _ = compare.write_comparison([str(tmp_path / n) for n in names], str(tmp_path / "c"))
    assert _rows(table) == {
        "x/run1": ("1", "50.0"),
        "y/run1": ("1", "90.0"),
        "a/w/run1": ("1", "30.0"),
        "b/w/run1": ("1", "30.0"),
        "arm": ("2 (seeds 0,1)", "45.0 ± 7.1"),
    }


def test_runs_of_one_arm_whose_configs_differ_in_more_than_the_seed_are_not_averaged(
    tmp_path, capsys
):
    """Pass 7, #41: seeds of one arm are averaged only when their configs differ in the seed and
    where and how often they logged (compare.SEED_FIELDS); other runs under the arm's name are a
    row per config, named by what differs, with a warning (a run without config.json joins the
    arm while the others agree, else is a row of its own). A run named twice (in a DIR and on its
    own) is one error line, not a run counted twice."""
    root = tmp_path / "runs"
    _run_with_config(str(root / "a" / "seed_0"), 0.5)
    _run_with_config(str(root / "a" / "seed_1"), 0.7, seed=1, log_every_steps=5, data_dir="/d")
    _write_metrics(str(root / "a" / "seed_3"), [(2, 0.9, 0.1)], speeds=[10.0], config=False)
    table, _ = compare.write_comparison([str(root)], str(tmp_path / "c"))
    fragment = (  # (hostile pass 25, #28: a folder with metrics alone was listed without a word)
        f"warning: {root / 'a' / 'seed_3'} holds metrics but no config.json: the record of a run "
        "that is lost, or lines written there by a run of another folder. Listed as they are; "
        "restore config.json from a copy of the run, or leave the folder out.\n"
    )
    assert capsys.readouterr().err == fragment
    assert _rows(table)["a"] == ("3 (seeds 0,1,3)", "70.0 ± 20.0")  # seed 3 cannot be checked
    _run_with_config(str(root / "a" / "seed_2"), 0.2, seed=2, num_classes=4)
    table, _ = compare.write_comparison([str(root)], str(tmp_path / "c"))
    assert _rows(table) == {
        "a [num_classes=10]": ("2 (seeds 0,1)", "60.0 ± 14.1"),
        "a [no config.json]": ("1 (seeds 3)", "90.0"),
        "a [num_classes=4]": ("1 (seeds 2)", "20.0"),
    }
    assert capsys.readouterr().err == fragment + (
        "warning: the runs of arm 'a' differ in more than the seed (num_classes): shown as 3 "
        "rows, not averaged.\n"
    )
    with pytest.raises(SystemExit) as exit_info:
        compare.main([str(root), str(root / "a" / "seed_0"), f"--out={tmp_path / 'd'}"])
    assert exit_info.value.code == 2
    *warnings, line = capsys.readouterr().err.splitlines()
    assert warnings == [fragment.strip()]
    assert line == (
        f"error: the run {root / 'a' / 'seed_0'} is in {root} and in {root / 'a' / 'seed_0'}: "
        "name it once (it would count twice in its arm)."
    )


def test_a_run_whose_config_changed_mid_run_is_not_averaged_with_one_that_did_not(tmp_path, capsys):
    """Pass 8, #51: seed_0 trained 3 steps at momentum 0.5, then went on at 0.9 with
    --allow_config_change; seed_1 trained at 0.9 throughout. Their config.json files agree, so
    compare averaged them as "2 (seeds 0,1)". The change recorded in config_history.jsonl counts;
    a longer run (num_train_steps) or other logging does not."""
    root = tmp_path / "runs"
    _run_with_config(str(root / "a" / "seed_0"), 0.5)
    _run_with_config(str(root / "a" / "seed_1"), 0.7, seed=1)
    longer = {"num_train_steps": {"old": 3, "new": 6}}
    lengthened = {"step": 3, "event": "resume", "changed": longer}
    rundir.append_jsonl(os.path.join(root / "a" / "seed_1", rundir.HISTORY_FILE), lengthened)
    table, _ = compare.write_comparison([str(root)], str(tmp_path / "c"))
    assert _rows(table)["a"] == ("2 (seeds 0,1)", "60.0 ± 14.1")
    changed = {"momentum": {"old": 0.5, "new": 0.9}, "num_train_steps": {"old": 3, "new": 6}}
    entry = {"step": 3, "event": "resume", "changed": changed, "allowed_config_change": True}
    rundir.append_jsonl(os.path.join(root / "a" / "seed_0", rundir.HISTORY_FILE), entry)
    table, _ = compare.write_comparison([str(root)], str(tmp_path / "c"))
    assert sorted(_rows(table).values()) == [("1 (seeds 0)", "50.0"), ("1 (seeds 1)", "70.0")]
    assert "differ in more than the seed (changed mid-run)" in capsys.readouterr().err


def test_links_to_runs_in_a_compared_folder_are_rows_each_folder_read_once(tmp_path, capsys):
    """Hostile pass 18, #73: a folder of links to runs (os.walk does not follow links) lost those
    runs from the table with no word. Links are followed; a link back up is read once."""
    _write_metrics(str(tmp_path / "elsewhere" / "b"), [(2, 0.25, 0.1)], speeds=[5.0])
    root = tmp_path / "runs"
    _write_metrics(str(root / "a"), [(2, 0.5, 0.2)], speeds=[5.0])
    os.symlink(tmp_path / "elsewhere" / "b", root / "b")
    os.symlink(root, root / "loop")  # a link back up: no run twice, no endless walk
    compare.main([str(root)])
    out = capsys.readouterr().out
    rows = [x.split(" | ")[:4] for x in out.splitlines() if x.startswith("| ") and "---" not in x]
    assert [r[0].strip("| ") for r in rows[1:]] == ["a", "b"]
    assert [r[3] for r in rows[1:]] == ["50.0", "25.0"]


def test_a_run_named_with_a_bar_or_a_newline_is_one_markdown_row(tmp_path, capsys):
    """Hostile pass 19, #12: a run folder named `a|b` gave its row an extra column, and one
    named with a newline split it over two lines. Both are escaped in the cell."""
    root = tmp_path / "runs"
    for name in ("a|b", "x\ny"):
        _write_metrics(str(root / name), [(2, 0.5, 0.2)], speeds=[5.0])
    compare.main([str(root)])
    rows = [x for x in capsys.readouterr().out.splitlines() if x.startswith("| ")]
    widths = {len(re.split(r"(?<!\\) \| ", row)) for row in rows}
    assert len(rows) == 3, rows
    assert len(widths) == 1, rows
    assert [r.split(" | ")[0] for r in rows[1:]] == ["| a\\|b", "| x\\ny"]

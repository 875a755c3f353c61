"""Hostile pass 23, sweep.py and compare.py: an arm redefined after its runs saved checkpoints is
refused before sweep.json changes (#41), --print_commands checks --sweep_dir as a run does (#40),
eval lines whose error rates are no fraction in [0, 1] are left out with a warning (#57), and an
existing folder given as compare's --out is refused as `--out=DIR/` is (#66). No training: the
runs are their records, written by hand."""

import json
import os

import pytest

from alexnet_jax.runs import rundir
from alexnet_jax.tools import compare, sweep
from tests.tools.test_pass26_tools import _one_line
from tests.tools.test_sweep import BASE_CONFIG

SWEEP_FILE = """
def get_sweep():
    return {{"config": {config!r}, "arms": {arms!r}}}
"""


def _sweep_file(tmp_path, name, arms) -> str:
    config = tmp_path / "base.py"
    config.write_text(BASE_CONFIG)
    path = tmp_path / f"{name}.py"
    path.write_text(SWEEP_FILE.format(config=str(config), arms=arms))
    return str(path)


def _finished_arm(sweep_file: str, sweep_dir: str) -> None:
    """The sweep of `sweep_file` in `sweep_dir` as it leaves it when its first arm finished: that
    run's config.json, history, metrics and a checkpoint, and sweep.json."""
    plan = sweep.make_sweep(sweep_file, None, [], None)
    runs = sweep.plan_runs(plan, sweep_dir)
    workdir = runs[0].workdir
    rundir.record_start(runs[0].config, workdir, 0, [])
    step = os.path.join(rundir.checkpoint_dir(workdir), "4")
    os.makedirs(step)
    open(os.path.join(step, rundir.COMMIT_MARKER), "w").close()
    row = {"step": 4, "split": "eval", "loss": 2.0, "top1_error": 0.875, "top5_error": 0.0}
    with open(rundir.metrics_path(workdir), "w") as f:
        f.write(json.dumps(row) + "\n")
    rundir.record_finished(workdir, 4)
    outcomes = {runs[0].name: {"status": "finished", "step": 4}}
    rundir.write_sweep_plan(sweep_dir, sweep._plan(plan, runs, sweep_dir, outcomes))


def _refused(capsys, argv) -> str:
    return _one_line(capsys, lambda: sweep.main(argv))


def test_an_arm_redefined_after_its_checkpoints_is_refused_before_sweep_json_changes(
    tmp_path, capsys
):
    """#41: arm a finished with learning_rate 0.001, then the sweep file set 0.05 and ran in the
    same --sweep_dir: sweep.json took the new definition, main.py refused the arm's folder, and
    comparison.md showed the old run under the new definition. Now one line names the arm and
    the field before anything is written or run (--print_commands alike, #40); arms added, and an
    arm with no run yet changed, stay allowed."""
    sweep_dir = str(tmp_path / "S")
    _finished_arm(_sweep_file(tmp_path, "v1", {"a": {"learning_rate": 0.001}, "b": {}}), sweep_dir)
    plan_path = os.path.join(sweep_dir, rundir.SWEEP_FILE)
    with open(plan_path) as f:
        recorded = f.read()
    changed = _sweep_file(tmp_path, "v2", {"a": {"learning_rate": 0.05}, "b": {}})
    failing = tmp_path / "fails.sh"  # (were it run: fails at once, no training)
    failing.write_text("#!/bin/sh\nexit 1\n")
    failing.chmod(0o755)
    for extra in ([f"--main={failing}"], ["--print_commands"]):
        line = _refused(capsys, [f"--sweep={changed}", f"--sweep_dir={sweep_dir}", *extra])
        assert "another definition (arm 'a': learning_rate 0.001 -> 0.05)" in line
        assert "another --sweep_dir, or restore the sweep file" in line
        with open(plan_path) as f:
            assert f.read() == recorded
        assert sorted(os.listdir(sweep_dir)) == ["a", rundir.SWEEP_FILE]
    added = {"a": {"learning_rate": 0.001}, "b": {"learning_rate": 0.01}, "c": {}}
    sweep.main([f"--sweep={_sweep_file(tmp_path, 'v3', added)}", f"--sweep_dir={sweep_dir}",
                "--print_commands"])  # fmt: skip
    assert len(capsys.readouterr().out.splitlines()) == 3


def test_print_commands_refuses_a_sweep_dir_that_holds_a_run(tmp_path, capsys):
    """#40: --print_commands printed commands (exit 0) into a --sweep_dir that holds a run, which
    the sweep itself refuses: refused alike."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / rundir.CONFIG_FILE).write_text("{}")
    sweep_file = _sweep_file(tmp_path, "s1", {"a": {}})
    line = _refused(capsys, [f"--sweep={sweep_file}", f"--sweep_dir={run_dir}", "--print_commands"])
    assert "holds a run (its config.json)" in line


def test_compare_leaves_out_eval_lines_whose_error_rate_is_no_fraction(tmp_path, capsys):
    """#57: an eval line with top1_error NaN (edited by hand) made the table's final top-1 `nan`,
    no word. Error rates are fractions of the examples, never NaN or outside [0, 1]: such lines
    (NaN, a percentage) are left out with one warning naming the file and step."""
    workdir = tmp_path / "run"
    workdir.mkdir()
    nan = float("nan")
    rows = [{"step": 2, "split": "eval", "loss": 2.0, "top1_error": 0.5, "top5_error": 0.25},
            {"step": 3, "split": "eval", "loss": nan, "top1_error": nan, "top5_error": 0.0,
             "num_examples": 32.0},
            {"step": 4, "split": "eval", "loss": 1.0, "top1_error": 0.1, "top5_error": 12.5},
    ]  # fmt: skip
    (workdir / rundir.METRICS_FILE).write_text("".join(json.dumps(r) + "\n" for r in rows))
    (workdir / rundir.CONFIG_FILE).write_text("{}")
    summary = compare.summarize_run(str(workdir), "run", None)
    assert summary.values["final_top1_error"] == summary.values["best_top1_error"] == 0.5
    assert summary.values["best_top5_error"] == 0.25
    assert summary.eval_curve == ([2], [0.5])
    (line,) = capsys.readouterr().err.splitlines()
    assert line == (
        f"warning: {workdir / rundir.METRICS_FILE}: the eval line of step 3 has top1_error nan, "
        "not an error rate in [0, 1] (and 1 more such line(s)): left out (edited by hand? "
        "restore it from a copy)."
    )


def test_compare_refuses_an_existing_folder_as_out_as_it_refuses_out_with_a_slash(tmp_path, capsys):
    """#66: `--out=X` with X an existing folder wrote X.md, X.csv and X.png beside it, while
    `--out=X/` was refused as a folder. --out is the files' path without extension: both are
    refused in the same one line, nothing written."""
    workdir = tmp_path / "run"
    workdir.mkdir()
    row = {"step": 2, "split": "eval", "top1_error": 0.5, "top5_error": 0.1}
    (workdir / rundir.METRICS_FILE).write_text(json.dumps(row) + "\n")
    folder = tmp_path / "x"
    folder.mkdir()
    lines = []
    for out in (str(folder), f"{folder}/"):
        with pytest.raises(SystemExit) as exit_info:
            compare.main([str(workdir), f"--out={out}"])
        assert exit_info.value.code == 2
        lines += capsys.readouterr().err.splitlines()
    assert (
        lines
        == [
            f"error: --out={folder}/ is a folder: --out is the files' path without its extension, "
            f"e.g. --out={folder}/comparison for {folder}/comparison.md, .csv and .png."
        ]
        * 2
    )
    assert sorted(os.listdir(tmp_path)) == ["run", "x"]


def test_a_run_continued_by_hand_with_other_values_is_named_not_the_sweep_file(tmp_path, capsys):
    """Pass 26, #55: a seed continued by hand with --allow_config_change (another learning rate),
    then the sweep rerun with its unchanged file: "restore the sweep file to what its sweep.json
    records", though both agree; the run was not named. The run and what to do are named."""
    sweep_dir = str(tmp_path / "S")
    sweep_file = _sweep_file(tmp_path, "v1", {"a": {"learning_rate": 0.001}})
    _finished_arm(sweep_file, sweep_dir)
    (run,) = sweep.plan_runs(sweep.make_sweep(sweep_file, None, [], None), sweep_dir)
    by_hand = run.config.copy_and_resolve_references()
    by_hand.learning_rate = 0.05
    rundir.record_start(by_hand, run.workdir, 4, [("learning_rate", 0.001, 0.05)])
    assert "Config changes on resume: learning_rate" in capsys.readouterr().out
    line = _refused(
        capsys, [f"--sweep={sweep_file}", f"--sweep_dir={sweep_dir}", "--print_commands"]
    )
    assert line.startswith(f"error: The run {run.workdir} holds checkpoints of another config ")
    assert "(learning_rate 0.05 -> 0.001): it was continued by hand" in line

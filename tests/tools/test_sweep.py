"""sweep.py: a tiny sweep end to end (stopped by SIGTERM during its second arm, then rerun; its
comparison written), `--print_commands`, invalid arms, and the shipped sweep files.

The end-to-end sweep runs main.py with fc6/fc7 narrowed (tests/multihost_worker.py, via --main)
on synthetic 64 px data, one CPU device, sharing the session's compilation cache.
"""

import os
import re
import shlex
import signal
import subprocess
import sys
import time

import pytest

from alexnet_jax.core.errors import UserError
from alexnet_jax.runs import rundir
from alexnet_jax.tools import sweep
from tests.conftest import QUICK_COMPILES

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
WORKER = os.path.join(REPO, "tests", "multihost_worker.py")

BASE_CONFIG = '''
"""A 4-step run on synthetic 64 px data (tests/tools/test_sweep.py)."""

from configs import default


def get_config():
    c = default.get_config()
    c.dataset = "synthetic"
    c.synthetic_train_examples, c.synthetic_eval_examples = 100_000, 8
    c.variant, c.input_size, c.resize_size, c.num_classes = "torchvision", 64, 72, 4
    c.batch_size = c.eval_batch_size = 8
    c.learning_rate = 0.001
    c.num_train_steps = 4
    c.log_every_steps, c.eval_every_steps, c.checkpoint_every_steps = 1, 2, 100
    return c
'''

SWEEP_FILE = """
def get_sweep():
    return {{
        "config": {config!r},
        "arms": {{"a": {{}}, "b": {{"num_train_steps": 24, "seed": 1}}}},
    }}
"""


def _write_sweep(tmp_path) -> list[str]:
    """The sweep's flags: arms a and b from a sweep file, and `fails` on the command line (a
    batch larger than the data: valid as a config, refused by main.py at run time)."""
    config = tmp_path / "base.py"
    config.write_text(BASE_CONFIG)
    sweep_file = tmp_path / "tiny_sweep.py"
    sweep_file.write_text(SWEEP_FILE.format(config=str(config)))
    return [
        f"--sweep={sweep_file}",
        "--arm=fails:batch_size=200000",
        f"--sweep_dir={tmp_path / 'sweep'}",
        f"--main={WORKER}",
    ]


def _env(jax_cache_dir):
    env = dict(os.environ)
    env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=1"
    env["ALEXNET_JAX_CACHE_DIR"] = jax_cache_dir
    env["PYTHONPATH"] = REPO
    env.update(QUICK_COMPILES)  # every arm is its own program, run for a few steps
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)
    return env


def _start_sweep(args, jax_cache_dir):
    return subprocess.Popen(
        [sys.executable, "-m", "alexnet_jax.tools.sweep", *args],
        cwd=REPO,
        env=_env(jax_cache_dir),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for_a_train_step(workdir, proc, timeout=300):
    path = rundir.metrics_path(workdir)
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"the sweep exited early: {proc.communicate()}")
        if os.path.exists(path) and '"train"' in _read(path):
            return
        time.sleep(0.05)
    raise AssertionError(f"no train step in {path} within {timeout} s")


def _read(path) -> str:
    with open(path) as f:
        return f.read()


def test_a_sweep_stopped_by_sigterm_resumes_skips_finished_arms_and_reports_failures(
    tmp_path, jax_cache_dir, capsys
):
    """--print_commands prints the commands the sweep then executes. SIGTERM during arm b: b
    saves, the sweep stops (exit 143) before `fails`. The rerun leaves the finished arm a alone
    (its metrics and log unchanged), resumes b to its end, runs `fails` (exit code 2) without
    stopping, names it with its log, writes the comparison table and curves, exits 1."""
    args = _write_sweep(tmp_path)
    sweep_dir = str(tmp_path / "sweep")
    sweep.main([*args, "--print_commands"])
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) == 3
    assert not os.path.exists(sweep_dir)  # printing creates nothing

    proc = _start_sweep(args, jax_cache_dir)
    _wait_for_a_train_step(os.path.join(sweep_dir, "b"), proc)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 128 + signal.SIGTERM, out + err
    assert err.splitlines()[-1].startswith(
        "terminated: sweep stopped by SIGTERM: 2 of 3 runs not finished (b, fails)."
    ), err  # pass 4, #27: on stderr, as every tool's stop, and arm b is "stopped", not failed
    assert "[sweep] b: stopped before finishing" in out
    assert [r["outcome"]["status"] for r in rundir.read_sweep_plan(sweep_dir)["runs"][:2]] == [
        "finished",
        "stopped",
    ]
    a, b = os.path.join(sweep_dir, "a"), os.path.join(sweep_dir, "b")
    assert rundir.finished_step(a) == 4
    assert rundir.finished_step(b) is None
    assert os.listdir(rundir.checkpoint_dir(b)), "arm b must save on the forwarded SIGTERM"
    assert not os.path.exists(os.path.join(sweep_dir, "logs", "fails.log"))
    a_metrics, a_log = (
        _read(rundir.metrics_path(a)),
        _read(os.path.join(sweep_dir, "logs", "a.log")),
    )

    proc = _start_sweep(args, jax_cache_dir)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 1, out + err
    assert "a: finished at step 4; not run again." in out
    assert _read(rundir.metrics_path(a)) == a_metrics
    assert _read(os.path.join(sweep_dir, "logs", "a.log")) == a_log
    b_attempts = re.split(
        r"^# .* sweep: .*$", _read(os.path.join(sweep_dir, "logs", "b.log")), flags=re.M
    )
    assert len(b_attempts) == 3  # nothing before the first header, then two attempts
    assert "Resumed at step" not in b_attempts[1]
    assert "Resumed at step" in b_attempts[2]
    assert rundir.finished_step(b) == 24
    fails_log = os.path.join(sweep_dir, "logs", "fails.log")
    assert f"error: fails failed (exit code 2); log {fails_log}" in err
    assert "exceeds the 100000 training examples" in _read(fails_log)

    # Every command executed (the logs' attempt headers, sweep.json) is one the print showed.
    plan = rundir.read_sweep_plan(sweep_dir)
    assert [shlex.join(r["command"]) for r in plan["runs"]] == printed
    for run, line in zip(plan["runs"], printed, strict=True):
        log = _read(os.path.join(sweep_dir, run["log"]))
        headers = [x.split(" sweep: ", 1)[1] for x in log.splitlines() if x.startswith("# ")]
        assert set(headers) == {line}  # one header per attempt
    assert [r["outcome"]["status"] for r in plan["runs"]] == ["finished", "finished", "failed"]

    table = _read(os.path.join(sweep_dir, "comparison.md"))
    rows = {x.split(" | ")[0].strip("| "): x for x in table.splitlines() if x.startswith("| ")}
    assert rows["a"].startswith("| a | 1 | finished | ")
    assert rows["b"].startswith("| b | 1 | finished | ")
    assert "failed (exit 2)" in rows["fails"]
    with open(os.path.join(sweep_dir, "comparison.png"), "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    ("arms", "message"),
    [
        (["--arm=x:dropout_rate"], "'dropout_rate' is not FIELD=VALUE"),
        (["--arm=no way:dropout_rate=0.1"], "'no way' is not a valid arm name"),
        (["--arm=x:droput_rate=0.1"], "the config has no field 'droput_rate'"),
        (["--arm=x:dropout_rate=1.5"], "arm 'x': config.dropout_rate must be"),
        (["--arm=x:seed=half"], "arm 'x': flag --config.seed=half"),
        (["--arm=x:dropout_rate=0.1", "--arm=x:dropout_rate=0.2"], "named 'x' is already defined"),
        (["--arm=x", "--seeds=0,0"], "--seeds=0,0 must be distinct integers"),
        (["--arm=x:seed=1", "--seeds=0,1"], "arm 'x' sets seed, and the sweep runs seeds [0, 1]"),
    ],
)
def test_invalid_arms_are_one_error_before_anything_runs(tmp_path, capsys, arms, message):
    """Malformed arms, unknown fields, invalid values, duplicate names and bad seeds: one
    `error:` line, exit code 2, nothing created."""
    config = tmp_path / "base.py"
    config.write_text(BASE_CONFIG)
    sweep_dir = tmp_path / "sweep"
    with pytest.raises(SystemExit) as exit_info:
        sweep.main([f"--config={config}", f"--sweep_dir={sweep_dir}", *arms])
    assert exit_info.value.code == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("error: ")
    assert message in line
    assert not sweep_dir.exists()


def test_the_shipped_sweep_files_are_valid(monkeypatch):
    """Every sweep file in sweeps/ loads, and each of its arms is a valid config."""
    monkeypatch.chdir(REPO)  # their base configs are relative to the repository
    names = sorted(n for n in os.listdir("sweeps") if n.endswith(".py"))
    assert names
    for name in names:
        assert sweep.plan_runs(sweep.make_sweep(os.path.join("sweeps", name), None, [], None), "x")


def test_a_sweep_dir_that_cannot_be_created_is_one_message_before_any_run(tmp_path):
    """A --sweep_dir the file system refuses (here too long a name; the same path as a missing
    mount or a read-only disk) is one UserError naming it, before any run starts or is
    announced."""
    said = []
    bad = tmp_path / ("s" * 300) / "sweep"
    with pytest.raises(UserError, match=r"--sweep_dir=.* cannot be created \(File name too long"):
        sweep.run_sweep(None, [object()], str(bad), say=said.append)
    assert said == []


def test_an_arm_changed_after_it_failed_before_any_checkpoint_starts_over(tmp_path):
    """Hostile pass #72: an arm that diverged before its first checkpoint, fixed in the sweep
    file and rerun, was refused by main.py as another experiment (its folder had to be removed
    by hand). The earlier attempt is moved to set_aside/ (kept) and the arm starts over; an arm
    with a checkpoint, or one whose config did not change, is left to main.py."""
    from configs import default

    said = []
    old = default.get_config()
    sweep_dir = str(tmp_path / "sweep")
    workdir = os.path.join(sweep_dir, "lr", "seed_0")
    rundir.make_workdir(workdir)
    rundir.save_config(old, workdir)
    (tmp_path / "sweep" / "lr" / "seed_0" / "metrics.jsonl").write_text('{"step": 1}\n')
    run = sweep.Run("lr/seed_0", "lr", 0, workdir, "unused.log", (), old)
    sweep._set_aside_if_changed(run, sweep_dir, said.append)  # unchanged: left alone
    assert os.path.isdir(workdir)
    assert said == []
    new = default.get_config()
    new.learning_rate = old.learning_rate / 10
    changed = sweep.Run("lr/seed_0", "lr", 0, workdir, "unused.log", (), new)
    step_dir = os.path.join(rundir.checkpoint_dir(workdir), "8")
    os.makedirs(step_dir)
    open(os.path.join(step_dir, rundir.COMMIT_MARKER), "w").close()
    sweep._set_aside_if_changed(changed, sweep_dir, said.append)  # a checkpoint: left alone
    assert os.path.isdir(step_dir)
    assert said == []
    os.remove(os.path.join(step_dir, rundir.COMMIT_MARKER))  # a save cut short: no checkpoint
    for n in (1, 2):
        sweep._set_aside_if_changed(changed, sweep_dir, said.append)
        destination = os.path.join(sweep_dir, "set_aside", "lr.seed_0" + ("" if n == 1 else "-2"))
        assert not os.path.exists(workdir)
        assert {rundir.CONFIG_FILE, "metrics.jsonl"} <= set(os.listdir(destination))
        assert f"learning_rate: {old.learning_rate!r} -> {new.learning_rate!r}" in said[-1]
        assert f"moved to {destination}; starting it over." in said[-1]
        rundir.make_workdir(workdir)  # the next attempt fails before a checkpoint as well
        rundir.save_config(old, workdir)
        open(os.path.join(workdir, "metrics.jsonl"), "w").close()


def test_a_sweep_refuses_a_run_folder_and_a_second_sweep_on_its_folder(tmp_path):
    """Hostile pass 3, #43, #82: two sweeps on one folder interleaved their arms' logs and each
    reported the other's finished arm as failed; a --sweep_dir holding a run was accepted and
    its comparison written to the current directory. Both are one message before any run."""
    from configs import default

    plan = sweep.Sweep("configs/default.py", {"a": {}}, None)
    run_dir = str(tmp_path / "run")
    rundir.save_config(default.get_config(), run_dir)
    with pytest.raises(UserError, match=r"holds a run \(its config\.json\)"):
        sweep.run_sweep(plan, [], run_dir, print)
    sweep_dir = str(tmp_path / "sweep")
    held = pytest.raises(UserError, match=r"is in use by .*one process writes a sweep_dir")
    with rundir.exclusive(sweep_dir, "--sweep_dir"), held:  # another sweep holds it
        sweep.run_sweep(plan, [], sweep_dir, print)

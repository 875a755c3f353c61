"""Runs the arms of a sweep (one base config, named sets of overrides), each as its own main.py.

    python -m alexnet_jax.tools.sweep --sweep=sweeps/ablations.py --sweep_dir=runs/ablations
    python -m alexnet_jax.tools.sweep --config=configs/default.py --sweep_dir=runs/dropout \\
        --arm=baseline --arm=no_dropout:dropout_rate=0.0 --seeds=0,1,2
    python -m alexnet_jax.tools.sweep --sweep=sweeps/ablations.py --print_commands  # one per line

A sweep file is a Python file whose `get_sweep()` returns
    {"config": "configs/default.py",                        # the base config, as main.py's --config
     "arms": {"baseline": {}, "no_dropout": {"dropout_rate": 0.0}},  # name -> {field: value}
     "seeds": [0, 1, 2]}                                    # optional
and `--arm=NAME[:FIELD=VALUE[,FIELD=VALUE...]]` adds arms on the command line (values as main.py's
`--config.FIELD=VALUE` takes them). Any config field may be overridden; each arm is parsed
exactly as main.py parses its command line and checked by config_lib.validate_config, and an
invalid arm (syntax, an unknown field, a bad value, a duplicate name) is one `error:` line and
exit code 2 before anything runs.

Each arm (and seed) is a normal main.py run in a subprocess, in `<sweep_dir>/<arm>` or, with
seeds, `<sweep_dir>/<arm>/seed_<s>` (`--config.seed=<s>` added); its output goes to
`<sweep_dir>/logs/<arm>[.seed_<s>].log` (appended, one `# ... sweep:` header line per attempt),
the plan and each run's outcome to `<sweep_dir>/sweep.json` (rundir.py owns these names). The
runs go one after another; a run that fails does not stop the others: the sweep names it (exit
code and log) and ends with exit code 1. At the end it writes compare.py's table and curves
(`<sweep_dir>/comparison.{md,csv,png}`) and prints the table.

Rerunning the same command resumes: a run that recorded its end (rundir.is_finished: its final
evaluation saved, with the same config) is not started again; the others resume from their last
checkpoint, as main.py does. Arms and seeds may be added; an arm changed after it saved a
checkpoint is refused up front (its runs could not resume; sweep.json keeps what they were made
with), one changed before its first checkpoint starts over.

SIGINT (Ctrl-C), SIGTERM or SIGHUP to the sweep sends the running arm one SIGTERM (main.py saves
and exits), then the sweep stops with exit code 128 + the signal (130 for Ctrl-C); the arms run
in sessions of their own, so a terminal's Ctrl-C reaches only the sweep. A second signal kills
the arm (SIGKILL) without saving.

`--print_commands` prints, instead of running, one shell command per run: exactly what the sweep
would execute, e.g. one SLURM array task per line (`sed -n "${SLURM_ARRAY_TASK_ID}p"`), after
the same checks of --sweep_dir as a run (check_sweep_dir).
"""

from __future__ import annotations

import sys

if not __package__:  # run by its path, where Python cannot import the package
    sys.exit("error: run it as a module, from the repository: python -m alexnet_jax.tools.sweep")

import argparse
import contextlib
import dataclasses
import importlib.util
import os
import re
import shlex
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from typing import Any

import ml_collections
from absl import flags
from ml_collections import config_flags

from alexnet_jax.core import console, errors, runtime
from alexnet_jax.core.errors import (
    ConfigError,
    DataError,
    UserError,
    make_directory,
    reported_as_exit,
)
from alexnet_jax.data import recipe
from alexnet_jax.runs import rundir
from alexnet_jax.tools import compare, launch
from alexnet_jax.train import config_lib

_REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MAIN = os.path.join(_REPO, "main.py")
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
_POLL_S = 0.1
_ARM_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")
_FIELD = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")
# Overrides split at a comma that starts the next `field=`, so values like (30, 60) keep theirs.
_NEXT_OVERRIDE = re.compile(r",\s*(?=[A-Za-z_][\w.]*\s*=)")
_SWEEP_KEYS = ("config", "arms", "seeds")


@dataclasses.dataclass(frozen=True)
class Sweep:
    """What to run: the base config file, the arms (name -> {field: value as on the command
    line}), and the seeds (None: each arm once, with its config's seed)."""

    config: str
    arms: dict[str, dict[str, str]]
    seeds: tuple[int, ...] | None = None


@dataclasses.dataclass(frozen=True)
class Run:
    """One main.py run of the sweep: an arm with one seed."""

    name: str  # "arm" or "arm/seed_<s>": its workdir under the sweep directory
    arm: str
    seed: int | None
    workdir: str
    log: str
    command: tuple[str, ...]
    config: ml_collections.ConfigDict = dataclasses.field(compare=False, repr=False)


# ---- Arms ------------------------------------------------------------------------------------


def _check_arm_name(name: str, where: str) -> None:
    if not _ARM_NAME.fullmatch(name) or name == rundir.SWEEP_LOGS:
        raise ConfigError(
            f"{where}: {name!r} is not a valid arm name: it names the arm's directory, so use "
            f"letters, digits, '_' and '-' (starting with a letter or digit; not "
            f"{rundir.SWEEP_LOGS!r})."
        )


def parse_arm(text: str) -> tuple[str, dict[str, str]]:
    """`NAME[:FIELD=VALUE[,FIELD=VALUE...]]` -> (name, {field: value}); ConfigError if malformed."""
    where = f"--arm={text}"
    name, _, rest = text.partition(":")
    _check_arm_name(name.strip(), where)
    overrides: dict[str, str] = {}
    for item in _NEXT_OVERRIDE.split(rest) if rest.strip() else []:
        field, equals, value = item.partition("=")
        field = field.strip()
        if not equals or not _FIELD.fullmatch(field):
            raise ConfigError(
                f"{where}: {item.strip()!r} is not FIELD=VALUE. An arm is "
                "NAME[:FIELD=VALUE[,FIELD=VALUE...]], e.g. --arm=no_dropout:dropout_rate=0.0."
            )
        if field in overrides:
            raise ConfigError(f"{where}: {field} is set twice.")
        overrides[field] = value.strip()
    return name.strip(), overrides


def flag_value(value: Any) -> str:
    """A sweep file's Python value as main.py's --config.FIELD=VALUE takes it."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool | int):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, tuple | list):
        return repr(tuple(value))
    raise TypeError(f"{value!r} is a {type(value).__name__}: give a number, bool, str or tuple")


def _has_field(config: ml_collections.ConfigDict, field: str) -> bool:
    node: Any = config
    for part in field.split("."):
        if not isinstance(node, ml_collections.ConfigDict) or part not in node:
            return False
        node = node[part]
    return True


def load_config(config_path: str, overrides: dict[str, str], where: str) -> Any:
    """The config main.py would run for `--config=config_path --config.FIELD=VALUE...`, parsed by
    ml_collections as main.py's flags are, then validated; ConfigError naming `where`."""
    argv = ["main.py", f"--config={config_path}"]
    argv += [f"--config.{field}={value}" for field, value in overrides.items()]
    values = flags.FlagValues()
    try:
        with errors.config_loading_warnings_ignored():
            flag = config_flags.DEFINE_config_file(
                "config", config_path, flag_values=values, lock_config=True, sys_argv=argv
            )
            values(argv)
            config = flag.value
            config.keys()  # a config file that failed to load raises here
    except flags.Error as e:
        raise ConfigError(f"{where}: {e}.") from None
    except Exception as e:
        what = "; ".join(line.strip() for line in str(e).splitlines()[:4] if line.strip())
        raise ConfigError(
            f"--config={config_path} could not be loaded ({type(e).__name__}: {what}). It must "
            "be a Python file with a get_config() function, e.g. configs/default.py."
        ) from None
    try:
        config_lib.validate_config(config)
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None
    return config


def check_arms(sweep: Sweep) -> None:
    """ConfigError for the first arm that sets a field the base config lacks, or a bad value."""
    if not os.path.isfile(sweep.config):
        raise ConfigError(f"The base config {sweep.config} is not a file (--config or 'config').")
    base = load_config(sweep.config, {}, f"--config={sweep.config}")
    if not sweep.arms:
        raise ConfigError("The sweep has no arms: give --arm=NAME:FIELD=VALUE or a sweep file.")
    for name, overrides in sweep.arms.items():
        for field in overrides:
            if not _has_field(base, field):
                raise ConfigError(
                    f"arm {name!r}: the config has no field {field!r}: check its spelling; every "
                    "field is listed, with a comment, in configs/default.py."
                )
        if sweep.seeds is not None and "seed" in overrides:
            raise ConfigError(
                f"arm {name!r} sets seed, and the sweep runs seeds {list(sweep.seeds)}: drop one."
            )
        load_config(sweep.config, overrides, f"arm {name!r}")


def parse_seeds(text: str) -> tuple[int, ...]:
    if not text.strip():  # `--seeds=` ran the file's seeds, no word (hostile pass 26, #37)
        raise ConfigError(
            "--seeds is empty: give the seeds to run, e.g. --seeds=0,1,2, or leave --seeds out "
            "for the sweep file's seeds (or each arm once, with its config's seed)."
        )
    try:
        seeds = tuple(int(s) for s in text.split(","))
    except ValueError:
        seeds = ()
    if not seeds or any(s < 0 for s in seeds) or len(set(seeds)) != len(seeds):
        raise ConfigError(f"--seeds={text} must be distinct integers >= 0, e.g. --seeds=0,1,2.")
    return seeds


# ---- Sweep files -----------------------------------------------------------------------------


def _import_sweep_file(path: str) -> Any:
    if not os.path.isfile(path):
        raise UserError(f"--sweep={path} is not a file.")
    if not path.endswith(".py"):  # (a .json or .yaml was an AttributeError: pass 19, #19)
        raise UserError(
            f"--sweep={path}: a sweep file is a Python file (.py) whose get_sweep() returns "
            "{'config': PATH, 'arms': {NAME: {FIELD: VALUE}}, 'seeds': [...]}, as in sweeps/."
        )
    spec = importlib.util.spec_from_file_location("_alexnet_jax_sweep_file", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
        return module.get_sweep()
    except Exception as e:
        raise UserError(
            f"--sweep={path} could not be loaded ({type(e).__name__}: {e}). It must be a Python "
            "file with get_sweep() returning {'config': PATH, 'arms': {NAME: {FIELD: VALUE}}, "
            "'seeds': [...]} ('seeds' optional)."
        ) from None


def load_sweep_file(path: str) -> Sweep:
    """The Sweep that `path`'s get_sweep() returns; UserError if it does not fit the format."""
    spec = _import_sweep_file(path)
    if not isinstance(spec, dict) or set(spec) - set(_SWEEP_KEYS) or "arms" not in spec:
        keys = sorted(spec) if isinstance(spec, dict) else type(spec).__name__
        raise UserError(
            f"--sweep={path}: get_sweep() must return a dict with 'arms' and optionally 'config' "
            f"and 'seeds', got {keys}."
        )
    arms = spec["arms"]
    if not isinstance(arms, dict) or not all(isinstance(a, dict) for a in arms.values()):
        raise UserError(f"--sweep={path}: 'arms' must be a dict of NAME -> {{FIELD: VALUE}}.")
    rendered = {}
    for name, overrides in arms.items():
        if not isinstance(name, str):  # (1 or None: a TypeError traceback, pass 19 #20)
            raise UserError(f"--sweep={path}: arm names must be strings, got {name!r}.")
        _check_arm_name(name, f"--sweep={path}")
        try:
            rendered[name] = {str(f): flag_value(v) for f, v in overrides.items()}
        except TypeError as e:
            raise ConfigError(f"--sweep={path}: arm {name!r}: {e}.") from None
    seeds = spec.get("seeds")
    if seeds is not None:
        if (
            not isinstance(seeds, (list, tuple))
            or not all(type(s) is int and s >= 0 for s in seeds)
            or not seeds
            or len(set(seeds)) != len(seeds)
        ):  # (parse_seeds' line named a --seeds flag that was not given)
            raise ConfigError(
                f"--sweep={path}: 'seeds' must be a list of distinct integers >= 0, e.g. "
                f"[0, 1, 2]; got {seeds!r}."
            )
        seeds = tuple(seeds)
    return Sweep(config=str(spec.get("config", "")), arms=rendered, seeds=seeds)


def make_sweep(
    sweep_file: str | None, config: str | None, arms: Sequence[str], seeds: str | None
) -> Sweep:
    """The Sweep of the command line: a sweep file's arms plus `--arm`s, `--seeds` replacing the
    file's; checked (check_arms) before anything runs."""
    base = load_sweep_file(sweep_file) if sweep_file else Sweep(config="", arms={})
    if config and base.config and os.path.abspath(config) != os.path.abspath(base.config):
        raise ConfigError(
            f"--config={config} and the sweep file's config {base.config} differ: give the base "
            "config in one place."
        )
    config_path = config or base.config
    if not config_path:
        raise ConfigError("No base config: give --config=FILE or 'config' in the sweep file.")
    all_arms = dict(base.arms)
    for text in arms:
        name, overrides = parse_arm(text)
        if name in all_arms:
            raise ConfigError(
                f"--arm={text}: an arm named {name!r} is already defined; arm names name their "
                "directories, so each must be unique."
            )
        all_arms[name] = overrides
    sweep = Sweep(config_path, all_arms, parse_seeds(seeds) if seeds is not None else base.seeds)
    check_arms(sweep)
    return sweep


# ---- The plan --------------------------------------------------------------------------------


def plan_runs(sweep: Sweep, sweep_dir: str, main: str = MAIN) -> list[Run]:
    """Every run of the sweep, arms in order, each with its workdir, log and exact command."""
    runs = []
    program = [sys.executable, main] if main.endswith(".py") else [main]
    for arm, overrides in sweep.arms.items():
        for seed in sweep.seeds or (None,):
            name = arm if seed is None else f"{arm}/seed_{seed}"
            fields = dict(overrides) if seed is None else {**overrides, "seed": str(seed)}
            workdir = os.path.join(sweep_dir, name)
            command = [*program, f"--config={sweep.config}", f"--workdir={workdir}"]
            command += [f"--config.{field}={value}" for field, value in fields.items()]
            log = os.path.join(sweep_dir, rundir.SWEEP_LOGS, name.replace("/", ".") + ".log")
            config = load_config(sweep.config, fields, f"arm {arm!r}")
            # Each arm's main.py would refuse these, after the sweep made its folder there.
            recipe.check_outside_image_folder(config, sweep_dir, flag="--sweep_dir")
            recipe.check_outside_image_folder(config, workdir)
            runs.append(Run(name, arm, seed, workdir, log, tuple(command), config))
    return runs


def _plan(sweep: Sweep, runs: Sequence[Run], sweep_dir: str, outcomes: dict) -> dict:
    """sweep.json's contents: paths relative to the sweep directory."""
    return {
        "config": sweep.config,
        "arms": sweep.arms,
        "seeds": list(sweep.seeds) if sweep.seeds is not None else None,
        "runs": [
            {
                "name": r.name,
                "arm": r.arm,
                "seed": r.seed,
                "workdir": os.path.relpath(r.workdir, sweep_dir),
                "log": os.path.relpath(r.log, sweep_dir),
                "command": list(r.command),
                **({"outcome": outcomes[r.name]} if r.name in outcomes else {}),
            }
            for r in runs
        ],
    }


# ---- Running ---------------------------------------------------------------------------------


class _Signals:
    """Records the stop signals the sweep receives; the loops act on them."""

    def __init__(self):
        self.received: list[int] = []

    def __call__(self, signum: int, _frame=None) -> None:
        self.received.append(signum)


def _run_one(run: Run, stop: _Signals, say: Callable[[str], None]) -> int:
    """Runs one arm to its end, its output appended to its log; returns its exit code. The first
    stop signal sends it one SIGTERM (it saves and exits), a second one SIGKILL."""
    os.makedirs(os.path.dirname(run.log), exist_ok=True)
    with open(run.log, "a") as log:
        log.write(f"# {time.strftime('%Y-%m-%d %H:%M:%S')} sweep: {shlex.join(run.command)}\n")
        log.flush()
        proc = subprocess.Popen(
            run.command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    termed = killed = False
    while proc.poll() is None:
        if stop.received and not termed:
            termed = True
            proc.send_signal(signal.SIGTERM)
            name = signal.Signals(stop.received[0]).name
            say(f"{name}: asked {run.name} to save and exit (SIGTERM); {name} again kills it.")
        if len(stop.received) > 1 and not killed:
            killed = True
            proc.kill()  # (nothing, if it has just ended)
        time.sleep(_POLL_S)
    if killed and proc.returncode == -signal.SIGKILL:  # not if it had ended first (finished)
        say(f"{run.name}: killed (SIGKILL) before it finished saving.")
    return launch.exit_code(proc.returncode)


def _last_error(log: str) -> str:
    """The run's `error:` line (main.py's one-paragraph report), or its last line."""
    try:
        with open(log, errors="replace") as f:
            lines = [line.strip() for line in f if line.strip()]
    except OSError:
        return ""
    errors = [line for line in lines if line.startswith(("error:", "Traceback"))]
    last = errors[-1] if errors else (lines[-1] if lines else "")
    return last if len(last) <= 300 else last[:297] + "..."


def check_sweep_dir(runs: Sequence[Run], sweep_dir: str) -> None:
    """UserError, before anything is written (and for --print_commands alike: hostile pass 23,
    #40), when --sweep_dir lies in a run's checkpoints, holds a run, or holds checkpoints of an
    arm made with another definition: main.py would refuse them after sweep.json lost the
    definition they were made with (#41). Arms and seeds added, arms with no checkpoint (set
    aside, _set_aside_if_changed) and longer runs stay allowed."""
    rundir.refuse_inside_checkpoints(sweep_dir, "--sweep_dir")  # (hostile pass 5, #33)
    if os.path.isfile(rundir.config_path(sweep_dir)):
        raise UserError(
            f"--sweep_dir={sweep_dir} holds a run (its {rundir.CONFIG_FILE}): a sweep keeps its "
            "runs in folders of its own; choose another --sweep_dir."
        )
    recorded = {}  # each run's command as sweep.json records it
    with contextlib.suppress(OSError, DataError, TypeError, AttributeError):
        plan = rundir.read_sweep_plan(sweep_dir) or {}
        recorded = {r.get("name"): r.get("command") for r in plan.get("runs", [])}
    changed: dict[str, str] = {}
    for run in runs if os.path.isdir(sweep_dir) else ():
        try:  # (damaged records: that arm fails on its own in _run_sweep)
            if not rundir.saved_steps(run.workdir) or rundir.is_finished(run.config, run.workdir):
                continue
            old = rundir.read_config_dict(run.workdir, check_digest=False) or {}
        except (OSError, DataError):
            continue
        if not (diff := rundir.config_changes(run.config, old)):
            continue
        fields = ", ".join(f"{f} {a!r} -> {b!r}" for f, a, b in diff[:4])
        if recorded.get(run.name) == list(run.command):  # the definition is the one recorded:
            raise UserError(  # the run was changed by hand (hostile pass 26, #55)
                f"The run {run.workdir} holds checkpoints of another config than its arm's "
                f"definition, which the sweep file and {rundir.SWEEP_FILE} both give ({fields}): "
                "it was continued by hand with other values (--allow_config_change). Move that "
                "folder aside to run the arm again, or go on with it by hand."
            )
        changed.setdefault(run.arm, fields)
    if changed:
        shown = "; ".join(f"arm {arm!r}: {fields}" for arm, fields in changed.items())
        raise UserError(
            f"--sweep_dir={sweep_dir} holds checkpoints of arms made with another definition "
            f"({shown}), which main.py cannot resume with the new one: run the new definition "
            f"in another --sweep_dir, or restore the sweep file to what its {rundir.SWEEP_FILE} "
            "records."
        )


def run_sweep(
    sweep: Sweep, runs: Sequence[Run], sweep_dir: str, say: Callable[[str], None] = print
) -> int:
    """Runs every run not finished yet, one after another; returns the sweep's exit code: 0 when
    all finished, 1 when one failed or stopped early, 128 + N when signal N stopped the sweep."""
    check_sweep_dir(runs, sweep_dir)
    make_directory(sweep_dir, "--sweep_dir")  # before any run starts
    with rundir.exclusive(
        sweep_dir, "--sweep_dir"
    ):  # a second sweep on this folder is refused, naming this one
        return _run_sweep(sweep, runs, sweep_dir, say)


def _run_sweep(
    sweep: Sweep, runs: Sequence[Run], sweep_dir: str, say: Callable[[str], None]
) -> int:
    stop = _Signals()
    previous = {signum: signal.signal(signum, stop) for signum in _STOP_SIGNALS}
    outcomes: dict[str, dict] = {}
    try:
        for i, run in enumerate(runs, start=1):
            if stop.received:
                break
            try:
                if rundir.is_finished(run.config, run.workdir):
                    step = rundir.finished_step(run.workdir)
                    say(f"{run.name}: finished at step {step}; not run again.")
                    outcomes[run.name] = {"status": "finished", "step": step}
                    continue
                _set_aside_if_changed(run, sweep_dir, say)
            except (DataError, ConfigError) as e:  # its records are damaged: this arm fails
                say(f"{run.name}: FAILED before starting: {e}")
                outcomes[run.name] = {"status": "failed", "exit_code": None, "error": str(e)}
                continue
            say(f"{run.name}: running ({i}/{len(runs)}); log {run.log}")
            rundir.write_sweep_plan(sweep_dir, _plan(sweep, runs, sweep_dir, outcomes))
            started = time.monotonic()
            code = _run_one(run, stop, say)
            seconds = time.monotonic() - started
            outcomes[run.name] = _outcome(run, code, seconds, say, stopped=bool(stop.received))
        rundir.write_sweep_plan(sweep_dir, _plan(sweep, runs, sweep_dir, outcomes))
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if stop.received:
        return _stopped(stop.received[0], runs, outcomes)
    return _report(runs, outcomes, sweep_dir, say)


SET_ASIDE = "set_aside"  # in the sweep directory: earlier attempts of arms whose config changed


def _set_aside_if_changed(run: Run, sweep_dir: str, say: Callable[[str], None]) -> None:
    """An arm that failed before its first checkpoint (it diverged, say) and was then changed in
    the sweep file has nothing to resume, and main.py refuses its folder as another experiment:
    the earlier attempt is moved to <sweep_dir>/set_aside/ (kept, not deleted) so that the arm
    starts over. An arm with a checkpoint is left to main.py's refusal (its remedy applies)."""
    if not os.path.isdir(run.workdir) or rundir.saved_steps(run.workdir):
        return
    old = rundir.read_config_dict(run.workdir, check_digest=False)  # (main.py checks it)
    if old is None:
        return
    changed = rundir.config_changes(run.config, old)
    if not changed:
        return
    destination, n = os.path.join(sweep_dir, SET_ASIDE, run.name.replace("/", ".")), 1
    while os.path.exists(destination if n == 1 else f"{destination}-{n}"):
        n += 1
    destination = destination if n == 1 else f"{destination}-{n}"
    os.makedirs(os.path.dirname(destination), exist_ok=True)
    os.rename(run.workdir, destination)
    shown = "; ".join(f"{f}: {a!r} -> {b!r}" for f, a, b in changed[:4])
    say(
        f"{run.name}: its earlier attempt saved no checkpoint and its config changed ({shown}): "
        f"moved to {destination}; starting it over."
    )


def _outcome(
    run: Run, code: int, seconds: float, say: Callable[[str], None], stopped: bool = False
) -> dict:
    """The run's outcome for sweep.json: finished, stopped (by itself after a save, or by the
    sweep's own stop signal, passed on to it) or failed."""
    outcome = {"exit_code": code, "seconds": round(seconds, 1)}
    finished = rundir.finished_step(run.workdir)
    if finished is not None and (code == 0 or stopped):  # a stop after its end: finished
        say(f"{run.name}: finished at step {finished} ({seconds:.0f} s).")
        return {"status": "finished", "step": finished, **outcome}
    if code == 0 or stopped:
        say(f"{run.name}: stopped before finishing (rerun the sweep to resume it).")
        return {"status": "stopped", **outcome}
    say(f"{run.name}: FAILED, exit code {code}; log {run.log}: {_last_error(run.log)}")
    return {"status": "failed", **outcome}


def _stopped(signum: int, runs: Sequence[Run], outcomes: dict) -> int:
    """The stop's one line on stderr, `interrupted:` or `terminated:` as the tools' (errors)."""
    left = [r.name for r in runs if outcomes.get(r.name, {}).get("status") != "finished"]
    word = "interrupted" if signum == signal.SIGINT else "terminated"
    print(
        f"{word}: sweep stopped by {signal.Signals(signum).name}: {len(left)} of {len(runs)} "
        f"runs not finished ({', '.join(left)}). Rerun the same command to finish them; finished "
        "runs are not run again, the others resume from their last checkpoint.",
        file=sys.stderr,
    )
    return 128 + signum


def _report(runs: Sequence[Run], outcomes: dict, sweep_dir: str, say: Callable) -> int:
    """Writes the comparison, prints it and names every run that did not finish."""
    try:
        table, paths = compare.write_comparison([sweep_dir], os.path.join(sweep_dir, "comparison"))
        console.out(table)
        say(f"comparison: {', '.join(paths)}")
    except UserError as e:
        say(f"no comparison: {e}")
    bad = [r for r in runs if outcomes[r.name]["status"] != "finished"]
    for r in bad:
        o = outcomes[r.name]
        print(
            f"error: {r.name} {o['status']} (exit code {o['exit_code']}); log {r.log}",
            file=sys.stderr,
        )
    if bad:
        print(
            f"error: {len(bad)} of {len(runs)} runs did not finish; fix them and rerun the same "
            "command (finished runs are not run again).",
            file=sys.stderr,
        )
        return 1
    say(f"all {len(runs)} runs finished.")
    return 0


# ---- Command line ----------------------------------------------------------------------------


def _parse(argv: Sequence[str]) -> argparse.Namespace:
    parser = errors.ArgumentParser(
        prog="python -m alexnet_jax.tools.sweep", description=(__doc__ or "").split("\n")[0]
    )
    parser.add_argument("--sweep", help="sweep file: a Python file with get_sweep()")
    parser.add_argument("--config", help="base config file (or 'config' in the sweep file)")
    parser.add_argument(
        "--arm",
        action="append",
        default=[],
        help="NAME[:FIELD=VALUE[,FIELD=VALUE...]], repeatable; added to the sweep file's arms",
    )
    parser.add_argument("--seeds", help="e.g. 0,1,2: each arm once per seed (replaces the file's)")
    parser.add_argument(
        "--sweep_dir", help="directory of the runs (default: runs/<sweep file name>)"
    )
    parser.add_argument(
        "--main", default=MAIN, help="the training script each run executes (default: main.py)"
    )
    parser.add_argument(
        "--print_commands",
        action="store_true",
        help="print one shell command per run (what the sweep would execute) and exit",
    )
    args = parser.parse_args(argv)
    if args.sweep_dir is None:
        if not args.sweep:
            parser.error("give --sweep_dir (or a --sweep file, whose name is the default)")
        name = os.path.splitext(os.path.basename(args.sweep))[0]
        args.sweep_dir = os.path.join("runs", name)
    return args


def main(argv: Sequence[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = _parse(argv)
    with reported_as_exit():  # (an arm's value too: its run's log names it, hostile pass 16)
        errors.refuse_undecodable_arguments([*argv, f"--sweep_dir={args.sweep_dir}"])
        runtime.check_environment()  # what the runs inherit: one line here, not one per run
        sweep = make_sweep(args.sweep, args.config, args.arm, args.seeds)
        if not os.path.isfile(args.main):
            raise UserError(f"--main={args.main} is not a file.")
        runs = plan_runs(sweep, args.sweep_dir, args.main)
        if args.print_commands:
            check_sweep_dir(runs, args.sweep_dir)  # (refused as the sweep is: pass 23, #40)
            for run in runs:
                console.out(shlex.join(run.command))
            return
        runtime.start_backend()  # (the sweep's lock asks JAX for the process index)
        say = lambda text: console.out(f"[sweep] {text}")
        code = run_sweep(sweep, runs, args.sweep_dir, say)
    sys.exit(code)


if __name__ == "__main__":
    main()

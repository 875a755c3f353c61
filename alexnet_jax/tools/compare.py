"""Compares runs: one table of their evaluations, speed and time per arm, and their curves.

    python -m alexnet_jax.tools.compare runs/ablations               # a sweep directory (sweep.py)
    python -m alexnet_jax.tools.compare runs/a runs/b --out=cmp/ab   # run directories

Per arm: the final and the best evaluation's top-1 / top-5 error (best: the evaluation with the
lowest top-1 error; a run's own evaluations, not the re-evaluations `--mode=eval` appends; top-5
only for runs of more than 5 classes, whose top-5 error is not always 0), the steps trained,
images/s (the median over the train lines: the first one includes compilation) and the training
time, summed from the logged step times (step_time_ms x steps since the line before; start-up,
data preparation, the final evaluation and steps redone after a stop are not counted:
metrics.jsonl holds no timestamps). An arm with several runs (seeds:
`<arm>/seed_<s>`) shows mean ± sample std (ddof=1) over its runs that have an evaluation.
Runs are seeds of one arm when a sweep's plan says so or they are `<arm>/seed_<s>` folders of one
folder, and only while their configs differ in nothing but the seed, where the data lives and how
often they logged (SEED_FIELDS): otherwise each config is a row of its own, named by what
differs, with a warning. An arm name found in several DIRs gets enough of each one's path in
front to tell them apart (x/run1, y/run1).

Writes `<out>.md` (the table, also printed), `<out>.csv` (one row per arm, means and stds in
columns of their own, errors as fractions) and `<out>.png` (each run's eval top-1 error and train
loss against steps, one colour per arm). `--out` defaults to `<DIR>/comparison` for one directory
of runs (a sweep directory), else `comparison` here; a folder (an existing one, or a path ending
in /) is refused: --out names the files, not their folder.

A DIR is a sweep directory (its sweep.json lists every run, also those not started or failed), a
run directory (metrics.jsonl), or a directory with run directories below it. Only metrics.jsonl,
config_history.jsonl and config.json are read (through rundir.py, without TensorFlow), so runs
copied from any machine, without their checkpoints, compare the same. A run without an evaluation
yet is listed with its state; a named run directory without a metrics.jsonl, or one that is not
the JSON lines main.py writes, is one `error:` line naming it (exit code 2); an eval line whose
error rate is not a fraction in [0, 1] (NaN, edited by hand) is left out with a warning.
"""

from __future__ import annotations

import sys

if not __package__:  # run by its path, where Python cannot import the package
    sys.exit("error: run it as a module, from the repository: python -m alexnet_jax.tools.compare")

import collections
import csv
import dataclasses
import io
import json
import os
import re
from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure

from alexnet_jax.core import console, errors
from alexnet_jax.core.errors import DataError, reported_as_exit
from alexnet_jax.runs import plots, rundir

_SEED_DIR = re.compile(r"seed_(\d+)")
FIGSIZE_INCHES = (12.0, 4.5)
DPI = 100
# (key, markdown header, scale, format): the table's numeric columns, in order.
COLUMNS = (
    ("final_top1_error", "final top-1 err %", 100.0, ".1f"),
    ("final_top5_error", "final top-5 err %", 100.0, ".1f"),
    ("best_top1_error", "best top-1 err %", 100.0, ".1f"),
    ("best_top5_error", "best top-5 err %", 100.0, ".1f"),
    ("train_top1_error", "train top-1 err %", 100.0, ".1f"),
    ("gap", "gap pts", 100.0, ".1f"),
    ("steps", "steps", 1.0, ".0f"),
    ("images_per_sec", "images/s", 1.0, ".1f"),
    ("train_seconds", "train time s", 1.0, ".1f"),
)
NOTE = (
    "Errors in %; with several runs: mean ± std (ddof=1) over the runs with an evaluation. Best: "
    "the evaluation with the lowest top-1 error. images/s: median over the train lines. Train "
    "time: the logged step times summed (without start-up and the final evaluation)."
)
GAP_NOTE = (
    " Train: the top-1 error on the training images at the final step, from `main.py "
    "--mode=eval --config.eval_split=train` run on the finished run; gap: final minus train, in "
    "points."
)


@dataclasses.dataclass
class RunSummary:
    """What one run's metrics.jsonl says (None where it says nothing yet)."""

    arm: str
    seed: int | None
    workdir: str
    state: str
    values: dict[str, float] = dataclasses.field(default_factory=dict)  # COLUMNS' keys
    eval_curve: tuple[list[int], list[float]] = ([], [])  # steps, top-1 error
    loss_curve: tuple[list[int], list[float]] = ([], [])  # steps, train loss


# ---- One run ---------------------------------------------------------------------------------


def read_records(workdir: str) -> tuple[list[dict], int]:
    """(the metrics records of `workdir`, the number of lines that are none); DataError when
    metrics.jsonl is missing, unreadable, or holds lines but not one metrics record. Files of
    any version read alike (error rates: rundir.read_metrics)."""
    path = rundir.metrics_path(workdir)
    if not os.path.lexists(path):  # (a link to itself is no missing file: pass 22, #25)
        raise DataError(
            f"{path} not found: {workdir} is not a run directory written by main.py, or the run "
            "has not logged a step yet."
        )
    try:
        records = rundir.read_metrics(workdir, warn=False)  # said once per file, in its state
        with open(path, "rb") as f:
            lines = sum(1 for line in f if line.strip())
    except OSError as e:
        raise DataError(f"{path} cannot be read: {e.strerror or e}.") from None
    records = [
        r
        for r in records
        if isinstance(r, dict) and isinstance(r.get("step"), int) and "split" in r
    ]
    if lines and not records:
        raise DataError(
            f"{path} is damaged: none of its {lines} lines is a metrics record (JSON with 'step' "
            "and 'split', as main.py writes). Restore it from a copy, or leave this run out."
        )
    kept, bad = [], []  # (NaN made the best top-1 `nan`: hostile pass 23, #57)
    for r in records:
        (bad if r["split"] == "eval" and _bad_error_rate(r) else kept).append(r)
    if bad:
        field = _bad_error_rate(bad[0])
        more = f" (and {len(bad) - 1} more such line(s))" if len(bad) > 1 else ""
        console.warning(
            f"{path}: the eval line of step {bad[0]['step']} has {field} {bad[0][field]!r}, not "
            f"an error rate in [0, 1]{more}: left out (edited by hand? restore it from a copy)."
        )
    return kept, lines - len(records)


def _bad_error_rate(record: dict) -> str | None:
    """The first error rate of `record` that is not a fraction of the examples in [0, 1] (NaN,
    Infinity, a percentage: no evaluation writes one), or None."""
    for key in (rundir.TOP1_ERROR, rundir.TOP5_ERROR):
        value = record.get(key, 0.0)
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
            return key
    return None


def _train_seconds(train: Sequence[dict]) -> float | None:
    """The logged step times summed: each line's step_time_ms covers the steps since the last."""
    total, previous = 0.0, 0
    for r in train:
        if not np.isfinite(r.get("step_time_ms", np.nan)):  # (a NaN or Infinity written by
            return None  # hand: "inf" train s, hostile pass 20, #27)
        total += r["step_time_ms"] / 1000.0 * max(r["step"] - previous, 0)
        previous = r["step"]
    return total if train else None


def summarize_records(
    records: Sequence[dict],
    num_classes: int | None = None,
    train_split: str = "train",
    eval_crops: int = 1,
) -> dict[str, float]:
    """The COLUMNS' values of one run's records (keys missing where there is no value; top-5
    only where rundir.shows_top5). Its evaluations are its own (rundir.run_evals: not the
    re-evaluations of `--mode=eval`), but for the error on the training images, which only a
    re-evaluation of the final step on `train_split` gives (and the gap to the final one)."""
    train = sorted((r for r in records if r["split"] == "train"), key=lambda r: r["step"])
    evals = sorted(rundir.run_evals(records), key=lambda r: r["step"])
    values: dict[str, float] = {}
    if records:
        values["steps"] = max(r["step"] for r in records)
    if evals:
        best = min(evals, key=lambda r: r[rundir.TOP1_ERROR])  # the first of equals: earliest
        for name, r in (("final", evals[-1]), ("best", best)):
            values[f"{name}_top1_error"] = r[rundir.TOP1_ERROR]
            if rundir.TOP5_ERROR in r and rundir.shows_top5(num_classes):
                values[f"{name}_top5_error"] = r[rundir.TOP5_ERROR]
    on_train = [  # `--mode=eval --config.eval_split=train` of the run's final step
        r
        for r in records
        if r["split"] == "eval"
        and r.get("eval_split") == train_split
        and r.get("eval_crops", eval_crops) == eval_crops  # the same views as the final one
        and rundir.TOP1_ERROR in r
        and evals
        and r["step"] == evals[-1]["step"]
    ]
    if on_train:
        values["train_top1_error"] = on_train[-1][rundir.TOP1_ERROR]
        values["gap"] = values["final_top1_error"] - values["train_top1_error"]
    speeds = [r["images_per_sec"] for r in train if np.isfinite(r.get("images_per_sec", np.nan))]
    if speeds:
        values["images_per_sec"] = float(np.median(speeds))
    seconds = _train_seconds(train)
    if seconds is not None:
        values["train_seconds"] = seconds
    return values


def _state(workdir: str, records: Sequence[dict], values: dict, outcome: dict | None) -> str:
    finished = rundir.finished_step(workdir)
    if finished is not None and not records:  # (emptied or replaced: hostile pass 24, #59)
        console.warning(
            f"{rundir.metrics_path(workdir)} holds no record, but the run finished at step "
            f"{finished} ({rundir.HISTORY_FILE}): restore it from a copy of the run."
        )
        return "finished, its metrics lost"
    if finished is not None:
        state = "finished"
    elif outcome and outcome.get("status") == "failed":
        state = f"failed (exit {outcome.get('exit_code')})"
    else:
        state = f"unfinished (step {values['steps']})" if records else "nothing logged yet"
    if "final_top1_error" not in values:
        state += ", no eval yet"
    if records and not os.path.lexists(rundir.config_path(workdir)):  # (hostile pass 25, #28)
        console.warning(
            f"{workdir} holds metrics but no {rundir.CONFIG_FILE}: the record of a run that is "
            "lost, or lines written there by a run of another folder. Listed as they are; "
            f"restore {rundir.CONFIG_FILE} from a copy of the run, or leave the folder out."
        )
        state += f", no {rundir.CONFIG_FILE}"
    return state


def _views(workdir: str) -> tuple[str, int]:
    """The run's train_split and eval_crops (config.json); ("train", 1) without a readable one."""
    try:
        config = rundir.read_config_dict(workdir) or {}
        return str(config.get("train_split", "train")), int(config.get("eval_crops", 1))
    except (OSError, DataError, TypeError, ValueError):
        return "train", 1


def summarize_run(
    workdir: str, arm: str, seed: int | None, outcome: dict | None = None, required: bool = True
) -> RunSummary:
    """One run's summary; a run without metrics.jsonl is DataError when `required` (a directory
    the user named), else listed as not started (or failed, from the sweep's `outcome`)."""
    if not required and not os.path.isfile(rundir.metrics_path(workdir)):
        if outcome and outcome.get("status") == "failed":
            state = f"failed (exit {outcome.get('exit_code')}) before logging a step"
        else:
            state = "not started" if not os.path.isdir(workdir) else "nothing logged yet"
        return RunSummary(arm, seed, workdir, state)
    records, unreadable = read_records(workdir)
    values = summarize_records(records, rundir.read_num_classes(workdir), *_views(workdir))
    state = _state(workdir, records, values, outcome)
    if unreadable:
        state += f", {unreadable} unreadable line(s) skipped"
    evals = rundir.run_evals(records)
    train = [r for r in records if r["split"] == "train" and "loss" in r]
    return RunSummary(
        arm,
        seed,
        workdir,
        state,
        values,
        eval_curve=([r["step"] for r in evals], [r[rundir.TOP1_ERROR] for r in evals]),
        loss_curve=([r["step"] for r in train], [r["loss"] for r in train]),
    )


# ---- Finding the runs ------------------------------------------------------------------------


def _is_run(path: str) -> bool:
    """A folder with a metrics.jsonl or config.json: a run's (one that is not a regular file is
    then refused by name, not taken for no run at all: hostile pass 20, #30)."""
    return os.path.lexists(rundir.metrics_path(path)) or os.path.lexists(rundir.config_path(path))


def _arm_and_seed(name: str) -> tuple[str, int | None]:
    """'arm/seed_3' -> ('arm', 3); 'arm' -> ('arm', None)."""
    head, tail = os.path.split(os.path.normpath(name))
    match = _SEED_DIR.fullmatch(tail)
    if match and head:
        return head, int(match.group(1))
    return os.path.normpath(name), None


def _runs_below(directory: str) -> list[str]:
    """Run directories under `directory` (sorted), not looking inside runs; links to runs (or to
    folders of runs) are followed, each folder read once (hostile pass 18, #73: linked runs
    were left out of the table with no word)."""
    found, seen = [], set()
    for root, dirs, _ in os.walk(directory, followlinks=True):
        if os.path.realpath(root) in seen:  # (a link back up, or a second link to one folder)
            dirs.clear()
            continue
        seen.add(os.path.realpath(root))
        dirs.sort()
        if root != directory and _is_run(root):
            found.append(root)
            dirs.clear()
        dirs[:] = [d for d in dirs if d not in (rundir.CHECKPOINTS, rundir.SWEEP_LOGS)]
    return found


def _named_run(directory: str) -> tuple[str, str, int | None]:
    """(the folder that owns it, arm, seed) of a run directory named on the command line: its
    parent and its name, or for `<arm>/seed_<s>` its grandparent, the arm and the seed; runs
    named one by one are seeds of one arm only when they are such folders of one arm."""
    path = os.path.abspath(directory)
    parent, name = os.path.split(path)
    arm, seed = _arm_and_seed(os.path.join(os.path.basename(parent), name))
    if seed is not None:
        return os.path.dirname(parent), arm, seed
    return parent, name, None


def _group(directory: str) -> tuple[str, list[RunSummary]]:
    """(the folder that owns the arms, the summaries of every run) of one command-line DIR."""
    plan = rundir.read_sweep_plan(directory) if os.path.isdir(directory) else None
    if plan is not None:
        runs = [
            summarize_run(
                os.path.join(directory, r["workdir"]),
                r["arm"],
                r.get("seed"),
                r.get("outcome"),
                required=False,
            )
            for r in plan["runs"]
        ]
        return os.path.abspath(directory), runs
    if _is_run(directory):
        owner, arm, seed = _named_run(directory)
        return owner, [summarize_run(directory, arm, seed)]
    if os.path.isdir(directory):
        found = _runs_below(directory)
        if not found:
            raise DataError(f"{directory} holds no runs (no metrics.jsonl or config.json).")
        runs = [
            summarize_run(path, *_arm_and_seed(os.path.relpath(path, directory))) for path in found
        ]
        return os.path.abspath(directory), runs
    what = errors.broken_link(directory.rstrip(os.sep)) or "not a directory"  # (pass 23, #55)
    raise DataError(f"{directory} is {what}: name sweep or run directories.")


def _short_names(folders: set[str]) -> dict[str, str]:
    """Each folder's shortest trailing part of its path that no other folder shares: x/run1 and
    y/run1 -> run1's owners "x" and "y"; /a/x and /b/x -> "a/x" and "b/x"."""
    names = {}
    for folder in folders:
        parts = folder.strip(os.sep).split(os.sep)
        for k in range(1, len(parts) + 1):
            tail = os.path.join(*parts[-k:])
            others = (f for f in folders if f != folder)
            if not any(f == tail or f.endswith(os.sep + tail) for f in others):
                break
        names[folder] = tail
    return names


def collect(dirs: Sequence[str]) -> list[RunSummary]:
    """The summaries of every run the command line's DIRs name, in order. Runs are one arm when
    they are its seeds in one folder (a sweep's plan, `<arm>/seed_<s>` folders, or a run with
    its name); an arm name found in several folders gets enough of each folder's path in front
    to tell them apart (x/run1, y/run1). Runs of one arm whose configs differ in more than the
    seed are split into rows (`split_mixed_arms`), never averaged."""
    groups = [_group(directory) for directory in dirs]
    seen: dict[str, str] = {}
    for directory, (_, group) in zip(dirs, groups, strict=True):  # a run in two DIRs: once
        for run in group:
            if not errors.is_utf8(run.workdir):  # (matplotlib cannot draw its name)
                raise errors.UserError(
                    f"the run folder {run.workdir!r} has a path that is not UTF-8 (shown as "
                    "\\udc..): rename it (a UTF-8 name) to compare it."
                )
            if os.path.realpath(run.workdir) in seen:
                raise DataError(
                    f"the run {run.workdir} is in {seen[os.path.realpath(run.workdir)]} and in "
                    f"{directory}: name it once (it would count twice in its arm)."
                )
            seen[os.path.realpath(run.workdir)] = directory
    owners: dict[str, set[str]] = {}
    for owner, group in groups:
        for run in group:
            owners.setdefault(run.arm, set()).add(owner)
    summaries = []
    for owner, group in groups:
        for run in group:
            if len(owners[run.arm]) > 1:
                run.arm = f"{_short_names(owners[run.arm])[owner]}/{run.arm}"
            summaries.append(run)
    return split_mixed_arms(summaries)


# Config fields in which seeds of one arm may differ: the seed, where the data and its caches
# live (not an image folder, which may hold other pictures), and how often the run logged and
# saved; any other difference (its length too) makes them two experiments.
SEED_FIELDS = rundir.RESUMABLE_FIELDS - rundir.LENGTH_FIELDS - {"eval_every_steps", "image_folder"}
SEED_FIELDS |= {"seed"}


def _experiment(workdir: str) -> dict | None:
    """The run's config.json less SEED_FIELDS, and the fields it changed on purpose while it
    ran (--allow_config_change: its config.json holds only their last values) as "changed
    mid-run"; None without a readable config.json."""
    try:
        config = rundir.read_config_dict(workdir, check_digest=False)
        history = rundir.read_history(workdir, warn=False)
    except (OSError, DataError):
        return None
    if config is None:
        return None
    experiment = {k: v for k, v in config.items() if k not in SEED_FIELDS}
    ignored = SEED_FIELDS | rundir.LENGTH_FIELDS
    changes = [
        [entry.get("step"), sorted(set(entry["changed"]) - ignored)]
        for entry in history
        if entry.get("allowed_config_change") and isinstance(entry.get("changed"), dict)
    ]
    if changes := [change for change in changes if change[1]]:
        experiment["changed mid-run"] = changes
    return experiment


def split_mixed_arms(summaries: list[RunSummary]) -> list[RunSummary]:
    """The runs of an arm whose configs differ in more than SEED_FIELDS become one row per
    config, named by its values of the fields that differ (`arm [variant='cifar4']`), with a
    warning: averaging them would mix experiments. Runs without a config.json join the arm when
    the others agree (a sweep's runs not started yet), else are a row of their own."""
    arms: dict[str, list[RunSummary]] = {}
    for run in summaries:
        arms.setdefault(run.arm, []).append(run)
    for arm, runs in arms.items():
        configs = [_experiment(run.workdir) for run in runs]
        kinds = [c for i, c in enumerate(configs) if c is not None and c not in configs[:i]]
        if len(kinds) < 2:  # runs without a config.json (not started, copied without it) stay
            continue
        if None in configs:
            kinds.append(None)
        fields = _differing_fields(kinds)
        labels = [_label(c, fields) for c in kinds]
        for run, config in zip(runs, configs, strict=True):
            k = kinds.index(config)
            tag = labels[k] if labels.count(labels[k]) == 1 else f"{labels[k]} #{k + 1}"
            run.arm = f"{arm} [{tag}]"
        console.warning(
            f"the runs of arm {arm!r} differ in more than the seed "
            f"({', '.join(fields) or 'config.json missing'}): shown as {len(kinds)} rows, not "
            "averaged."
        )
    return summaries


def _differing_fields(configs: Sequence[dict | None]) -> list[str]:
    known = [c for c in configs if c is not None]
    keys = sorted({k for c in known for k in c})
    return [k for k in keys if len({json.dumps(c.get(k), sort_keys=True) for c in known}) > 1]


def _label(config: dict | None, fields: Sequence[str]) -> str:
    """`num_classes=10, variant='cifar4'`: the first of `fields` in `config`, long values cut."""
    if config is None:
        return "no config.json"
    shown = []
    for field in fields[:3]:
        text = repr(config.get(field))
        shown.append(f"{field}={text if len(text) <= 24 else text[:21] + '...'}")
    more = f", {len(fields) - 3} more" if len(fields) > 3 else ""
    return ", ".join(shown) + more


# ---- The table -------------------------------------------------------------------------------


def mean_std(values: Sequence[float]) -> tuple[float | None, float | None]:
    """(mean, sample std with ddof=1) of the values; std None for fewer than two."""
    if not values:
        return None, None
    std = float(np.std(values, ddof=1)) if len(values) > 1 else None
    return float(np.mean(values)), std


@dataclasses.dataclass
class ArmRow:
    arm: str
    runs: list[RunSummary]
    stats: dict[str, tuple[float | None, float | None]]  # key -> (mean, std)
    counts: dict[str, int] = dataclasses.field(default_factory=dict)  # key -> runs with a value
    evaluated: int = 0  # the runs the stats are over

    @property
    def state(self) -> str:
        counts: dict[str, int] = {}
        for run in self.runs:
            counts[run.state] = counts.get(run.state, 0) + 1
        if len(counts) == 1:  # every run in the same state
            return self.runs[0].state
        return "; ".join(f"{n}x {state}" for state, n in counts.items())

    @property
    def seeds(self) -> str:
        seeds = [str(r.seed) for r in self.runs if r.seed is not None]
        return ",".join(seeds)


def arm_rows(summaries: Sequence[RunSummary]) -> list[ArmRow]:
    """One row per arm (in order of first appearance): each column's mean ± std over the arm's
    runs with an evaluation (all its runs for speed and time when none has one)."""
    arms: dict[str, list[RunSummary]] = {}
    for run in summaries:
        arms.setdefault(run.arm, []).append(run)
    rows = []
    for arm, runs in arms.items():
        evaluated = [r for r in runs if "final_top1_error" in r.values] or runs
        stats = {
            key: mean_std([r.values[key] for r in evaluated if key in r.values])
            for key, *_ in COLUMNS
        }
        counts = {key: sum(key in r.values for r in evaluated) for key, *_ in COLUMNS}
        rows.append(ArmRow(arm, runs, stats, counts, len(evaluated)))
    return rows


def _cell(mean: float | None, std: float | None, scale: float, fmt: str) -> str:
    if mean is None:
        return "-"
    text = format(mean * scale, fmt)
    return text if std is None else f"{text} ± {format(std * scale, fmt)}"


_TOP5_COLUMNS = ("final_top5_error", "best_top5_error")


def _shown_columns(rows: Sequence[ArmRow]) -> list[tuple]:
    """COLUMNS, less the top-5 ones when no run has a top-5 error to show (every run with an
    evaluation has 5 classes or fewer: its top-5 error is always 0)."""
    has = lambda key: any(key in run.values for row in rows for run in row.runs)
    evaluated = has("final_top1_error")
    left_out = set() if any(map(has, _TOP5_COLUMNS)) or not evaluated else set(_TOP5_COLUMNS)
    if not has("gap"):  # no run was evaluated on its training images
        left_out |= {"train_top1_error", "gap"}
    return [column for column in COLUMNS if column[0] not in left_out]


def _of(row: ArmRow, key: str) -> str:
    """' (k of n runs)' for a column only some of the arm's runs have (the training-set error:
    not every run was evaluated on it), else ''."""
    k = row.counts.get(key, 0)
    return f" ({k} of {row.evaluated} runs)" if 0 < k < row.evaluated else ""


def _escaped(text: str) -> str:
    """`text` as one markdown table cell: a `|` and a backslash escaped, a line break written as a
    backslash and n (a run folder named `a|b` added a column to its row, one with a newline split
    it: hostile pass 19, #12)."""
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", "\\n").replace("\r", "\\r")


def markdown_table(rows: Sequence[ArmRow]) -> str:
    columns = _shown_columns(rows)
    header = ["arm", "runs", "state", *(title for _, title, _, _ in columns)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        runs = f"{len(row.runs)}" + (f" (seeds {row.seeds})" if row.seeds else "")
        cells = [_escaped(row.arm), runs, row.state]
        cells += [
            _cell(*row.stats[key], scale, fmt) + _of(row, key) for key, _, scale, fmt in columns
        ]
        lines.append("| " + " | ".join(cells) + " |")
    note = NOTE + (GAP_NOTE if any(key == "gap" for key, *_ in columns) else "")
    return "\n".join(lines) + "\n\n" + note + "\n"


def csv_table(rows: Sequence[ArmRow]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    keys = [key for key, *_ in COLUMNS]
    writer.writerow(["arm", "runs", "seeds", "state", *(n for k in keys for n in (k, f"{k}_std"))])
    for row in rows:
        cells = [row.arm, len(row.runs), row.seeds, row.state]
        for key in keys:
            mean, std = row.stats[key]
            cells += ["" if mean is None else repr(mean), "" if std is None else repr(std)]
        writer.writerow(cells)
    return out.getvalue()


# ---- The figure ------------------------------------------------------------------------------


def plot_curves(summaries: Sequence[RunSummary], out_path: str) -> str:
    """Each run's eval top-1 error and train loss against steps, one colour per arm."""
    fig = Figure(figsize=FIGSIZE_INCHES, dpi=DPI)
    ax_err, ax_loss = fig.subplots(1, 2)
    runs_per_arm = collections.Counter(run.arm for run in summaries)
    colours: dict[str, str] = {}
    labelled: set[tuple[int, str]] = set()  # (axis, arm): each arm named once per axis
    for run in summaries:
        colour = colours.setdefault(run.arm, f"C{len(colours) % 10}")
        n = runs_per_arm[run.arm]
        name = run.arm if n == 1 else f"{run.arm} ({n} runs)"
        for i, (ax, curve, style) in enumerate(
            (
                (ax_err, run.eval_curve, dict(marker="o", markersize=3)),
                (ax_loss, run.loss_curve, dict(alpha=0.7, linewidth=1)),
            )
        ):
            if curve[0]:
                label = None if (i, run.arm) in labelled else name
                labelled.add((i, run.arm))
                ax.plot(*curve, color=colour, label=label, **style)
    ax_err.set(title="Eval top-1 error", xlabel="step", ylabel="top-1 error", ylim=(0.0, 1.0))
    ax_loss.set(title="Train loss", xlabel="step", ylabel="loss")
    for ax in (ax_err, ax_loss):
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize="small")
    fig.tight_layout()
    plots.save_figure(fig, out_path)
    return out_path


# ---- Command line ----------------------------------------------------------------------------


def default_out(dirs: Sequence[str]) -> str:
    """`<DIR>/comparison` for one directory of runs, else `comparison` here."""
    if len(dirs) == 1 and os.path.isdir(dirs[0]) and not _is_run(dirs[0]):
        return os.path.join(dirs[0], "comparison")
    return "comparison"


def write_comparison(dirs: Sequence[str], out: str | None = None) -> tuple[str, list[str]]:
    """Writes `<out>.md`, `<out>.csv` and `<out>.png` for the runs of `dirs`; returns the
    markdown table and the three paths."""
    out = out or default_out(dirs)
    if not os.path.basename(out):  # a folder's path (cmpd/): the files were .md, .csv, .png
        stem = os.path.join(out, "comparison")
        raise errors.UserError(
            f"--out={out} is a folder: --out is the files' path without its extension, e.g. "
            f"--out={stem} for {stem}.md, .csv and .png."
        )
    if os.path.exists(out) and not os.path.isfile(out) and not os.path.isdir(out):
        # --out=/dev/null wrote /dev/null.md, .csv and .png into /dev (hostile pass 26, #35)
        raise errors.UserError(
            f"--out={out} is a device, a FIFO or another special file, not a regular file: "
            "--out is the path of the files without their extension, in a folder you can "
            "write, e.g. --out=comparison for comparison.md, .csv and .png."
        )
    paths = [f"{out}.md", f"{out}.csv", f"{out}.png"]
    for path in paths:  # before the work, and before its folder is made (hostile pass 5, #38)
        rundir.refuse_run_file(path, "--out")
    summaries = collect(dirs)
    rows = arm_rows(summaries)
    table = markdown_table(rows)
    problem = errors.directory_creation_problem(os.path.dirname(os.path.abspath(out)))
    if problem:
        raise errors.UserError(
            f"--out={out}: its folder {problem}: choose another --out, in a folder you can write."
        )
    # The plot (the slow part) first: a stop while it is drawn leaves the earlier set whole,
    # rather than a new table beside an old plot (hostile pass 4, #23).
    plot_curves(summaries, paths[2])
    for path, text in zip(paths, (table, csv_table(rows)), strict=False):
        rundir.write_atomically(path, text)
    return table, paths


def main(argv: Sequence[str] | None = None) -> None:
    parser = errors.ArgumentParser(
        prog="python -m alexnet_jax.tools.compare", description=(__doc__ or "").split("\n")[0]
    )
    parser.add_argument("dirs", nargs="+", metavar="DIR", help="sweep or run directories")
    parser.add_argument("--out", help="path prefix of the .md, .csv and .png written")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    seen = {}
    with reported_as_exit():  # (realpath: a deleted current directory is one line)
        errors.refuse_undecodable_arguments(args.dirs)
        for directory in args.dirs:  # one run named twice (or as run/ and ../x/run) counted twice
            other = seen.setdefault(os.path.realpath(directory), directory)
            if other != directory or args.dirs.count(directory) > 1:
                parser.error(f"{directory} and {other} are the same directory: name each once")
        if args.out and os.path.isdir(args.out):  # refused as `--out=DIR/` is (pass 23, #66)
            args.out = os.path.join(args.out, "")
        table, paths = write_comparison(args.dirs, args.out)
    console.out(table)
    console.out(f"wrote {', '.join(paths)}")


if __name__ == "__main__":
    main()

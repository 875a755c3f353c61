"""The paper's Figure 1 from a sweep's runs: training error against epochs, ReLU against tanh.

    python -m alexnet_jax.tools.sweep --sweep=sweeps/figure1.py --sweep_dir=runs/figure1
    python -m alexnet_jax.tools.figure1 --sweep_dir=runs/figure1     # -> runs/figure1/figure1.png

For each arm (default relu and tanh; `--arms`) the training error of each epoch is the training
batches' top-1 error averaged over that epoch's steps, each train line of metrics.jsonl weighted
by the steps it covers (a line counts for the epoch its last step is in), as cuda-convnet printed
it; a last epoch a run did not finish is drawn at the epoch it reached (3.5), and a run that did
not train one epoch is left out, with a warning. The first epoch whose error is at most
`--threshold` (25%, the paper's) is marked on the curve, and printed with the ratio of the two
arms' epochs (the paper: tanh about six times later than ReLU). An arm with several seeds uses
the mean of its runs' first epochs. Runs are found as compare.py finds them (sweep.json, or run
directories below --sweep_dir) and read through rundir.
"""

from __future__ import annotations

import sys

if not __package__:  # run by its path, where Python cannot import the package
    sys.exit("error: run it as a module, from the repository: python -m alexnet_jax.tools.figure1")

import math
import os
from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure

from alexnet_jax.core import console, errors
from alexnet_jax.core.errors import DataError, reported_as_exit
from alexnet_jax.runs import plots, rundir
from alexnet_jax.tools import compare

THRESHOLD = 0.25  # the paper's "25% training error"
FIGSIZE_INCHES = (6.5, 4.5)
DPI = 100
_STYLES = {"relu": "-", "tanh": "--"}  # the paper: solid ReLU, dashed tanh


def training_error_by_epoch(records: Sequence[dict]) -> list[tuple[float, float]]:
    """[(epoch, training top-1 error)] for epochs 1, 2, ... from a run's train records (as
    rundir.read_metrics gives them, of any version), each line's top1_error weighted by its
    steps since the line before; a last epoch the run did not finish is at the epoch it reached
    (3.5: half of epoch 4), never at one it did not. DataError for lines without 'epoch' (runs
    from before main.py logged it)."""
    train = sorted((r for r in records if r.get("split") == "train"), key=lambda r: r["step"])
    sums: dict[int, list[float]] = {}
    previous = 0
    for r in train:
        if "epoch" not in r or rundir.TOP1_ERROR not in r:
            raise DataError(
                f"the train line of step {r['step']} has no 'epoch' or '{rundir.TOP1_ERROR}': "
                "rerun the arm with this version of main.py, which logs them."
            )
        weight = max(r["step"] - previous, 0)
        previous = r["step"]
        total = sums.setdefault(_epoch_of(r), [0.0, 0.0])
        total[0] += weight * r[rundir.TOP1_ERROR]
        total[1] += weight
    curve = [(e, s / w) for e, (s, w) in sorted(sums.items()) if w > 0]
    reached = train[-1]["epoch"] if train else 0.0
    if curve and curve[-1][0] > reached + 1e-9:  # the last epoch is unfinished
        curve[-1] = (reached, curve[-1][1])
    return curve


def first_epoch_at_most(curve: Sequence[tuple[int, float]], threshold: float = THRESHOLD):
    """The first epoch whose training error is at most `threshold`, or None."""
    return next((epoch for epoch, error in curve if error <= threshold), None)


def _epoch_of(record: dict) -> int:
    return max(1, math.ceil(record["epoch"] - 1e-9))  # epoch 1 covers (0, 1]


def seconds_to_epoch(records: Sequence[dict], epoch: int) -> float | None:
    """The training time of epochs 1..`epoch`: the logged step times (step_time_ms, each line's
    covering the steps since the line before) summed, without start-up, compilation and
    evaluations; None when a line lacks a step time."""
    train = sorted((r for r in records if r.get("split") == "train"), key=lambda r: r["step"])
    total, previous = 0.0, 0
    for r in train:
        if _epoch_of(r) > epoch:
            break
        if "step_time_ms" not in r:
            return None
        total += r["step_time_ms"] / 1000.0 * max(r["step"] - previous, 0)
        previous = r["step"]
    return total


def arm_records(sweep_dir: str, arms: Sequence[str]) -> dict[str, list[list[dict]]]:
    """arm -> each of its runs' metrics records. A run that has not trained one epoch is left
    out with a warning (its only point would be a fraction of an epoch, drawn and counted as
    epoch 1); DataError for an arm without a run that did."""
    found: dict[str, list] = {arm: [] for arm in arms}
    short: dict[str, list[str]] = {arm: [] for arm in arms}
    unfinished: dict[str, list[str]] = {arm: [] for arm in arms}
    for run in compare.collect([sweep_dir]):
        if run.arm in found and os.path.isfile(os.path.join(run.workdir, "metrics.jsonl")):
            records, _ = compare.read_records(run.workdir)
            curve = training_error_by_epoch(records)
            if curve and curve[-1][0] < 1:
                short[run.arm].append(f"{run.workdir} reached epoch {curve[-1][0]:.3g}")
            elif curve:
                _check_activation(run.arm, run.workdir)
                found[run.arm].append(records)
                if rundir.read_history(run.workdir) and rundir.finished_step(run.workdir) is None:
                    unfinished[run.arm].append(f"{run.workdir} (epoch {curve[-1][0]:.3g})")
    missing = [arm for arm, runs in found.items() if not runs]
    if any(short[arm] for arm in missing):
        raise DataError(
            f"Figure 1 counts epochs, and no run of arm(s) {', '.join(missing)} in {sweep_dir} "
            f"trained one ({'; '.join(w for arm in missing for w in short[arm])}): train them "
            "at least an epoch (--config.num_epochs or --config.num_train_steps), then rerun."
        )
    if missing:
        raise DataError(f"{sweep_dir} has no logged run of arm(s) {', '.join(missing)}: "
                        f"{_missing_remedy(sweep_dir, missing)}")  # fmt: skip
    for arm in arms:
        for what in short[arm]:
            console.warning(f"left out of arm {arm}: {what}, less than one epoch.")
        if unfinished[arm]:  # its first epoch at the threshold may be still to come
            console.warning(
                f"arm {arm}: run(s) not finished (still training, or stopped): "
                f"{', '.join(unfinished[arm])}; their curves end there. Rerun the sweep's "
                "command to finish them."
            )
    return found


def check_sweep_dir(sweep_dir: str) -> None:
    """DataError unless `sweep_dir` is an existing folder; checked before anything is created
    (hostile pass 26, #44)."""
    if os.path.isdir(sweep_dir):
        return
    if link := errors.broken_link(sweep_dir.rstrip(os.sep) or sweep_dir):
        what = f"is {link}"
    elif os.path.exists(sweep_dir):
        what = "is not a folder"
    else:
        what = "does not exist"
    raise DataError(
        f"--sweep_dir={sweep_dir} {what}: give the folder of the sweep's runs, made by "
        f"`python -m alexnet_jax.tools.sweep --sweep=sweeps/figure1.py --sweep_dir={sweep_dir}`."
    )


def refuse_an_out_folder_that_cannot_be_made(folder: str) -> None:
    """One UserError now, before any work, when --out's `folder` cannot be made (a file or a
    broken link in its path, no rights: hostile pass 4, #25), creating nothing: it is made only
    after the sweep and its arms are checked (hostile pass 26, #44)."""
    existing = folder
    while not os.path.lexists(existing) and os.path.dirname(existing) != existing:
        existing = os.path.dirname(existing)
    if existing == folder and os.path.isdir(folder):
        return
    if not os.path.isdir(existing) or not os.access(existing, os.W_OK | os.X_OK):
        errors.make_directory(folder, "--out's folder")  # fails at its first folder: makes none


def _check_activation(arm: str, workdir: str) -> None:
    """DataError when an arm named after an activation (relu, tanh) trained with another: its
    curve was drawn and counted under the name ("ratio tanh / relu: 1.00" from two ReLU runs:
    hostile pass 21, #49)."""
    config = rundir.read_config_dict(workdir) or {}
    trained = config.get("activation")
    if arm in ("relu", "tanh") and trained is not None and trained != arm:
        raise DataError(
            f"The arm {arm}'s run {workdir} trained with activation={trained!r}, not {arm}: "
            f"its curve is not {arm}'s. Rerun the arm with :activation={arm}, or name it "
            "after what it trains (--arms)."
        )


def _missing_remedy(sweep_dir: str, missing: Sequence[str]) -> str:
    """What to do about arms without a run: the sweep's own record of each (sweep.json: it
    failed, with its log) and a rerun of that sweep's own command (the file that made it, not
    necessarily sweeps/figure1.py); the paper's sweep for a folder that is no sweep yet."""
    plan = rundir.read_sweep_plan(sweep_dir)
    if plan is None:
        return (
            "run `python -m alexnet_jax.tools.sweep --sweep=sweeps/figure1.py "
            f"--sweep_dir={sweep_dir}`."
        )
    running = rundir.live_writer(sweep_dir)
    if running is not None:
        return f"the sweep is still running ({running}): rerun figure1 when it has finished."
    planned = sorted(
        {str(a) for a in plan.get("arms") or {}} | {str(r.get("arm")) for r in plan["runs"]}
    )
    unplanned = [arm for arm in missing if arm not in planned]
    if planned and unplanned:  # (arms renamed, or --arms misspelled)
        return (
            f"its sweep has no arm {', '.join(unplanned)} (its arms: {', '.join(planned)}): "
            "choose --arms from them."
        )
    failed = []
    for run in plan["runs"]:
        outcome = run.get("outcome") if isinstance(run.get("outcome"), dict) else {}
        if run.get("arm") in missing and outcome.get("status") not in (None, "finished"):
            log = os.path.join(sweep_dir, str(run.get("log", rundir.SWEEP_LOGS)))
            failed.append(f"{run['name']} {outcome['status']} (log {log})")
    told = f"the sweep's record says: {'; '.join(failed)}. " if failed else ""
    return (
        f"{told}Fix what stopped them, then rerun the sweep command that made {sweep_dir} (the "
        "same --sweep file: its finished runs are not run again)."
    )


def mean_seconds(runs: Sequence[Sequence[dict]], epoch: float | None) -> float | None:
    """The mean over an arm's runs of the training seconds to its (mean) first `epoch` at the
    threshold, rounded up to a whole epoch; None when not reached or not timed."""
    if epoch is None:
        return None
    seconds = [seconds_to_epoch(records, math.ceil(epoch)) for records in runs]
    return None if None in seconds else float(np.mean(seconds))


def summarize(curves: dict, threshold: float = THRESHOLD) -> tuple[dict, float | None]:
    """(arm -> mean first epoch at most `threshold`, None if a run never got there; the ratio of
    the second arm's to the first's, None unless both got there)."""
    firsts = {}
    for arm, runs in curves.items():
        epochs = [first_epoch_at_most(c, threshold) for c in runs]
        firsts[arm] = None if None in epochs else float(np.mean(epochs))
    values = list(firsts.values())
    ratio = values[1] / values[0] if len(values) == 2 and None not in values else None
    return firsts, ratio


def plot(curves: dict, firsts: dict, out_path: str, threshold: float = THRESHOLD) -> str:
    """Training error against epochs, one colour per arm, each first epoch at `threshold` marked."""
    fig = Figure(figsize=FIGSIZE_INCHES, dpi=DPI)
    ax = fig.subplots()
    for i, (arm, runs) in enumerate(curves.items()):
        colour = f"C{i % 10}"
        for j, curve in enumerate(runs):
            epochs, errors = zip(*curve, strict=True) if curve else ((), ())
            label = arm if j == 0 else None
            ax.plot(epochs, errors, _STYLES.get(arm, "-"), color=colour, label=label)
        if firsts[arm] is not None:
            ax.axvline(firsts[arm], color=colour, linestyle=":", linewidth=1)
            ax.plot([firsts[arm]], [threshold], "o", color=colour)
            ax.annotate(
                f"epoch {firsts[arm]:g}",
                (firsts[arm], threshold),
                xytext=(4, 6),
                textcoords="offset points",
                color=colour,
                fontsize="small",
            )
    ax.axhline(threshold, color="grey", linestyle="-.", linewidth=1)
    ax.set(xlabel="epochs", ylabel="training error rate", ylim=(0.0, 1.0))
    ax.set_title(f"Figure 1: epochs to {threshold:.0%} training error", fontsize="medium")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    plots.save_figure(fig, out_path)
    return out_path


def main(argv: Sequence[str] | None = None) -> None:
    parser = errors.ArgumentParser(
        prog="python -m alexnet_jax.tools.figure1", description=(__doc__ or "").split("\n")[0]
    )
    parser.add_argument("--sweep_dir", required=True, help="the sweep of sweeps/figure1.py")
    parser.add_argument("--arms", default="relu,tanh", help="two arms: the first is the ratio's 1")
    parser.add_argument("--threshold", type=float, default=THRESHOLD, help="training error mark")
    parser.add_argument("--out", help="the PNG written (default: <sweep_dir>/figure1.png)")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if not 0 < args.threshold < 1:
        parser.error(
            f"argument --threshold: a training error as a fraction in (0, 1), e.g. 0.25 for the "
            f"paper's 25%; got {args.threshold:g}"
        )
    if not all(args.arms.split(",")):
        parser.error(
            f"argument --arms: the sweep's arm names, comma-separated (e.g. relu,tanh); got "
            f"{args.arms!r}"
        )
    out = args.out or os.path.join(args.sweep_dir, "figure1.png")
    with reported_as_exit():
        rundir.refuse_run_file(out, "--out")  # before the work (hostile pass 4, #53-#54)
        check_sweep_dir(args.sweep_dir)
        folder = os.path.dirname(os.path.abspath(out))
        refuse_an_out_folder_that_cannot_be_made(folder)  # before the work (#25)
        # The arms before --out's folder is made: a missing --sweep_dir was made (as --out's
        # folder) and then said to hold no runs (hostile pass 26, #44).
        runs = arm_records(args.sweep_dir, args.arms.split(","))
        errors.make_directory(folder, "--out's folder")
        curves = {arm: [training_error_by_epoch(r) for r in found] for arm, found in runs.items()}
        firsts, ratio = summarize(curves, args.threshold)
        out = plot(curves, firsts, out, args.threshold)
    for arm, epoch in firsts.items():
        reached = f"epoch {epoch:g}" if epoch is not None else "not reached"
        seconds = mean_seconds(runs[arm], epoch)
        timed = f" ({seconds:.0f} s of training)" if seconds is not None else ""
        console.out(f"{arm}: {args.threshold:.0%} training error at {reached}{timed}")
    if ratio is not None:
        arms = list(firsts)
        console.out(f"ratio {arms[1]} / {arms[0]}: {ratio:.2f} (the paper: about 6)")
    console.out(f"wrote {out}")


if __name__ == "__main__":
    main()

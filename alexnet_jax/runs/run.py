"""A training run's lifecycle in its workdir, around the training loop:

    with Run(workdir, config, allow_change) as run:   # lock; a resume is the same experiment
        ...build...; run.check_dataset(identity)        # and on the same data
        if (done := run.finished_before(step, num_steps)) is not None: return done
        run.start(step, banner)                         # start record, mean image, banner
        ...train...
        run.summary(start_step, step, seconds)
        run.finish(step)                                # end record, training curves

Leaving releases the lock; a run refused or failed before it wrote anything leaves no workdir
behind (only empty folders it made are removed, never a file). The loop (train/loop.py) knows
nothing of these files.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from typing import Any

import jax

from alexnet_jax.core import console, errors
from alexnet_jax.runs import plots, report, rundir


class Run:
    """The records of one training run in `workdir` (rundir.py names the files)."""

    def __init__(
        self,
        workdir: str,
        config: Any,
        allow_change: bool = False,
        validate: Callable[[Any], None] | None = None,
    ):
        """`validate`: the config's rules (ConfigError), which a hand-edited config.json must
        pass before --allow_config_change takes it as the run's (finished_before)."""
        self.workdir, self.config, self.allow_change = workdir, config, allow_change
        self.validate = validate
        self.changes: list = []
        self.dataset: dict | None = None
        self.dataset_changes: list = []
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> Run:
        with self._stack as stack:
            stack.enter_context(removed_if_failed(self.workdir))  # left after the lock
            stack.enter_context(rundir.exclusive(self.workdir))
            # Before any data is built: another experiment in this workdir is refused.
            self.changes = rundir.check_resume(self.config, self.workdir, self.allow_change)
            self._stack = stack.pop_all()
        return self

    def __exit__(self, kind, value, traceback) -> bool:
        return self._stack.__exit__(kind, value, traceback)

    def check_dataset(self, dataset: dict) -> None:
        """Refuses a resume on other data (rundir.check_dataset) unless `allow_change`."""
        self.dataset_changes = rundir.check_dataset(self.workdir, dataset, self.allow_change)
        self.dataset = dataset

    def finished_before(self, step: int, num_steps: int) -> dict | None:
        """The final evaluation when a rerun finds the run already finished at `step`, said on
        the console; else None."""
        done = report.final_eval(self.workdir, step) if step >= num_steps else None
        if done is None:
            return None
        if self.allow_change:  # the remedies of a refused config.json or run.json work here too
            rundir.accept_config_json(self.workdir, step, self.validate)
            rundir.record_dataset(self.workdir, self.dataset, replace=bool(self.dataset_changes))
        if rundir.finished_step(self.workdir) is None:  # finished before runs recorded their end
            with contextlib.suppress(OSError):  # best effort: this rerun only reports
                rundir.record_finished(self.workdir, step)
        console.info(
            report.already_finished(
                self.workdir, step, done, self.config.num_classes,
                by_steps=self.config.num_train_steps > 0,
            )
        )  # fmt: skip
        return done

    def start(self, step: int, banner: str, mean_image_path: str | None = None) -> None:
        """Records the start at `step` (the config, what changed, the data), keeps a copy of
        the training set's mean image when the run subtracts it, and prints the banner."""
        digest = None
        if mean_image_path:
            digest = rundir.save_mean_image(self.workdir, mean_image_path)
        rundir.record_start(
            self.config, self.workdir, step, self.changes, self.dataset, self.dataset_changes,
            mean_image_digest=digest,
        )  # fmt: skip
        console.info(banner)

    def summary(self, start_step: int, step: int, seconds: float, stopped: bool = False) -> None:
        if jax.process_index() == 0:
            batch, classes = self.config.batch_size, self.config.num_classes
            console.info(
                report.summary(self.workdir, start_step, step, seconds, batch, classes, stopped)
            )

    def finish(self, step: int) -> None:
        """Records the end (the final evaluation is written and its checkpoint saved) and
        draws the training curves."""
        rundir.record_finished(self.workdir, step)
        if jax.process_index() == 0:
            try:
                plots.plot_training_curves(self.workdir)
            except Exception as e:  # the run is finished and recorded: its curves are derived
                if not errors.is_storage_error(e):  # (a write-protected PNG was an error whose
                    raise  # advice, rerun, found nothing to do: hostile pass 19, #38)
                console.warning(
                    f"The training curves could not be written ({errors.storage_error_reason(e)})"
                    f"; the run is finished and recorded. `python -m alexnet_jax.tools.compare "
                    f"{self.workdir}` draws them too."
                )


@contextlib.contextmanager
def removed_if_failed(workdir: str) -> Iterator[None]:
    """Leaves no folder behind that making `workdir` created when the block fails (only empty
    folders are removed, never a file): a refused command leaves the disk as it found it."""
    new_top = _first_missing_folder(workdir)
    try:
        yield
    except BaseException:
        if new_top and jax.process_index() == 0:
            _remove_empty_folders(new_top)
        raise


def _first_missing_folder(path: str) -> str | None:
    """The outermost folder of `path` that does not exist yet (None when `path` exists)."""
    path = os.path.abspath(path)
    if os.path.exists(path):
        return None
    while not os.path.exists(os.path.dirname(path)):
        path = os.path.dirname(path)
    return path


def _remove_empty_folders(top: str) -> None:
    """Removes `top` and the folders under it that are empty, deepest first; a file anywhere
    keeps its folder and their parents where they are."""
    for folder, _, _ in sorted(os.walk(top), key=lambda w: -w[0].count(os.sep)):
        with contextlib.suppress(OSError):
            os.rmdir(folder)

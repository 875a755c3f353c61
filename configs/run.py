"""The config a run was trained with, read from its config.json: resume or re-run it exactly.

    python main.py --config=configs/run.py:runs/x --workdir=runs/x

The part after the colon is the run's directory. Fields can still be overridden on the command line
(--config.FIELD=value); a resume with a changed field is refused as usual unless
--allow_config_change is given.
"""

import os

import ml_collections

from alexnet_jax.runs import rundir
from configs import default


def get_config(workdir: str = "") -> ml_collections.ConfigDict:
    if not workdir:
        raise ValueError("name the run's directory after a colon: --config=configs/run.py:runs/x")
    workdir = os.path.expanduser(workdir)  # as --workdir=~/x is
    # Read as it is: a resume is checked against the run's history by main.py (and refused
    # unless --allow_config_change), a new run in another workdir records it as its own.
    recorded = rundir.read_config_dict(workdir, check_digest=False)
    if recorded is None:
        raise ValueError(f"{rundir.config_path(workdir)} not found: it is written by main.py")
    config = default.get_config()
    unknown = sorted(set(recorded) - set(config.keys()))
    if unknown:
        raise ValueError(f"{rundir.config_path(workdir)} has fields this version lacks: {unknown}")
    config.update(recorded)
    return config

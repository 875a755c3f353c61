"""The paper's ablation table (sweeps/paper_ablations.py) plus tanh, on the built-in 'objects'
task (configs/objects.py), 3 seeds each: 18 runs on a CPU in about 90 minutes.

    python -m alexnet_jax.tools.sweep --sweep=sweeps/objects_ablations.py \
        --sweep_dir=runs/objects_ablations
    python -m alexnet_jax.tools.compare runs/objects_ablations  # the table again, later

Each arm is the preset configs/objects.py (10 classes, 500 training / 400 held-out images, 16
epochs of 15 steps of 32, lr / 10 at epoch 12, evaluation after each epoch) with the arm's
change, as in the paper's table: the two-tower net as baseline, no LRN, 2/2 pooling, one tower
with half the kernels (conv5 kept, layers-145-half.cfg), no dropout, and tanh instead of ReLU.
The seeds are the training seeds; the pictures are the same for every run (the task's spec
seed is fixed). Every arm checkpoints once, at its end (the preset's every-50-steps saves
are a resume safeguard, not part of the experiment), and keeps that one checkpoint (~0.25 GB
for the two-tower arms).

The task was designed and calibrated on the one-tower net before any arm ran
(docs/OBJECTS_CALIBRATION.md) and was not changed after; the README gives the table.
Measured on 2026-12-05 on 2 CPU cores: 1 h 47 min for the 18 runs, other jobs sharing the cores
for the first hour; 3.5-4.5 minutes a run on nearly quiet cores (benchmarks/RESULTS.md).
"""

_EACH = {"checkpoint_every_steps": 240}  # the run's 240 steps: one save, at the end


def get_sweep():
    return {
        "config": "configs/objects.py",  # relative to the directory the sweep runs in
        "seeds": [0, 1, 2],
        "arms": {
            "baseline": {**_EACH, "variant": "paper"},  # two towers, as the paper's net
            # Section 3.3 (the preset has the text's block-1 order and no same-map norm, which
            # sweeps/paper_ablations.py's no_lrn arm must also set for the code's).
            "no_lrn": {**_EACH, "variant": "paper", "lrn": False},
            "pool_2x2": {**_EACH, "variant": "paper", "pool_window": 2, "pool_stride": 2},
            # Section 3.2: one tower, half the kernels of each conv layer but conv5's.
            "one_tower_half": {**_EACH, "variant": "one_tower", "width": "half_code"},
            "no_dropout": {**_EACH, "variant": "paper", "dropout_rate": 0.0},  # section 4.2
            "tanh": {**_EACH, "variant": "paper", "activation": "tanh"},  # section 3.1
        },
    }

"""The paper's ablation table (sweeps/paper_ablations.py) on the built-in miniature data, on a
CPU in under 15 minutes: the whole flow (five runs, the comparison table and curves) at once.

    python -m alexnet_jax.tools.sweep --sweep=sweeps/miniature_ablations.py
    python -m alexnet_jax.tools.compare runs/miniature_ablations  # the table again, later

Each arm is configs/default.py (the miniature ILSVRC2012 set: 4 classes, 400 training images, 12
steps of 32 per epoch) shortened to 4 epochs (48 steps, the lr divided by 10 after epoch 3), with
the arm's change: the two-tower net as baseline, no LRN, 2/2 pooling, one tower at half width, no
dropout. The miniature task is easy (the default run reaches 98-100% from epoch 2), so the table
shows the flow, speed and curves, not the paper's differences.

Budget, from measured step times: the one-tower default net takes about 1.4 s per step of 32 on 2
quiet cores (72 steps per 6 epochs, configs/default.py). The two-tower arms are taken at the same
1.4 s (fewer FLOPs, 4.3 against 6.8 GFLOP per image, so this bounds them), the half net at 0.7 s
(2.3 GFLOP), plus about 40 s per run for start-up, compilation and four evaluations and 30 s for
building the miniature dataset once: ESTIMATED_SECONDS below, about 9 minutes. Run as a whole
on 2026-12-02: 1549 s on 2 cores shared with other jobs (load 12-28); benchmarks/RESULTS.md
has its table.
Disk: one checkpoint per run kept, up to ~0.5 GB each.
"""

SECONDS_PER_STEP = {"paper": 1.4, "one_tower": 1.4, "one_tower_half": 0.7}  # 2 quiet CPU cores
SECONDS_PER_RUN = 40  # start-up, compilation, evaluations
DATASET_BUILD_SECONDS = 30  # the miniature archive and its tfds build, once
STEPS_PER_EPOCH = 12  # 4 classes x 100 training images // batch 32
_SHORT = {"num_epochs": 4.0, "lr_drop_epochs": (3,)}  # every arm: 48 steps


def get_sweep():
    return {
        "config": "configs/default.py",  # relative to the directory the sweep runs in
        "arms": {
            "baseline": {**_SHORT, "variant": "paper"},  # two towers, as the paper's net
            "no_lrn": {**_SHORT, "variant": "paper", "lrn": False},  # section 3.3
            "pool_2x2": {**_SHORT, "variant": "paper", "pool_window": 2},  # section 3.4
            # section 3.2: one tower, half the kernels but conv5's (layers-145-half.cfg)
            "one_tower_half": {**_SHORT, "variant": "one_tower", "width": "half_code"},
            "no_dropout": {**_SHORT, "variant": "paper", "dropout_rate": 0.0},  # section 4.2
        },
    }


def estimated_seconds() -> float:
    """The sweep's wall time on 2 quiet CPU cores, from SECONDS_PER_STEP (one_tower measured)."""
    total = DATASET_BUILD_SECONDS
    for name, arm in get_sweep()["arms"].items():
        key = name if name in SECONDS_PER_STEP else arm["variant"]
        total += SECONDS_PER_RUN + SECONDS_PER_STEP[key] * arm["num_epochs"] * STEPS_PER_EPOCH
    return total


ESTIMATED_SECONDS = estimated_seconds()  # 5 x 40 + 30 + (4 x 1.4 + 0.7) x 48 = 532 s

"""Ablations of the default miniature run: dropout, the LRN alpha convention, the SGD form.

    python -m alexnet_jax.tools.sweep --sweep=sweeps/default_ablations.py  # runs/default_ablations
    python -m alexnet_jax.tools.compare runs/default_ablations  # the table again, later

Each of the 4 arms x 2 seeds is `python main.py` (configs/default.py: 6 epochs of the miniature
dataset, about 2 min 16 s on 2 CPU cores) with the arm's overrides, in
runs/default_ablations/<arm>/seed_<s>: about 20 minutes in all. Not yet run as a sweep here; each
arm is expected to end far above chance (25%), as the default run does (98-100% held-out top-1
accuracy from epoch 2), so on this easy dataset the table shows speed and curves more than
differences in the final error.
"""


def get_sweep():
    return {
        "config": "configs/default.py",  # relative to the directory the sweep runs in
        "arms": {
            "baseline": {},
            "no_dropout": {"dropout_rate": 0.0},  # fc6/fc7 without dropout
            "cuda_convnet_lrn": {"lrn_convention": "cuda_convnet"},  # LRN alpha / n
            "optax_sgd": {"optimizer": "sgd"},  # lr outside the velocity (optax's form)
        },
        "seeds": [0, 1],
    }

"""The paper's Figure 1 on the built-in 'objects' task (configs/figure1_objects.py): the
four-layer cifar4 net at 32x32 with ReLU and with tanh units, on a CPU.

    python -m alexnet_jax.tools.sweep --sweep=sweeps/figure1_objects.py \
        --sweep_dir=runs/figure1_objects
    python -m alexnet_jax.tools.figure1 --sweep_dir=runs/figure1_objects

Each arm: 50 epochs of 39 steps of 128 pictures (5,000 training pictures of 10 classes).
"""


def get_sweep():
    return {
        "config": "configs/figure1_objects.py",  # relative to the directory the sweep runs in
        "arms": {
            "relu": {},  # the solid curve
            "tanh": {"activation": "tanh"},  # the dashed curve
        },
    }

"""The paper's Figure 1: the four-layer CIFAR-10 net with ReLU and with tanh units.

    python -m alexnet_jax.tools.sweep --sweep=sweeps/figure1.py --sweep_dir=runs/figure1
    python -m alexnet_jax.tools.figure1 --sweep_dir=runs/figure1  # the figure, epochs to 25%

Each arm is configs/figure1.py: CIFAR-10 from tfds in its data_dir, ~/tensorflow_datasets (tfds'
own default), which the user builds once (see that file; elsewhere: edit c.data_dir there); then
50 epochs of 390 steps of a 145,578-parameter net: minutes per arm on a GPU, about an hour per arm
on a CPU (neither measured). Expected: tanh reaches 25% training error about six times later than
ReLU (the paper's Figure 1).
"""


def get_sweep():
    return {
        "config": "configs/figure1.py",  # relative to the directory the sweep runs in
        "arms": {
            "relu": {},  # the solid curve
            "tanh": {"activation": "tanh"},  # the dashed curve
        },
    }

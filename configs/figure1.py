"""The paper's Figure 1 (section 3.1): a four-layer CNN on CIFAR-10 with ReLUs reaches 25%
training error six times sooner than the same net with tanh units.

    python main.py --config=configs/figure1.py --workdir=runs/figure1/relu \
        --config.data_dir=/path/to/tfds              # the folder holding tfds' cifar10
    python -m alexnet_jax.tools.sweep --sweep=sweeps/figure1.py \
        --sweep_dir=runs/figure1                     # both arms: relu and tanh
    python -m alexnet_jax.tools.figure1 --sweep_dir=runs/figure1   # the figure and the ratio

CIFAR-10 comes from tfds (`cifar10` in config.data_dir), never downloaded by a run: build it once
with `tfds.builder('cifar10', data_dir=...).download_and_prepare()` (about 170 MB); without it
the run stops with a DataError that gives this command.

Assumptions (the paper gives neither the net nor its training): the net is cuda-convnet's
example `layers-80sec.cfg` ("26% error on CIFAR-10 in 80 seconds"; models.py, `cifar4`: three 5x5
conv layers of 32, 32, 64 maps, max then average pooling, fc64, fc10; 145,578 parameters), read as
the four hidden layers of the paper's "four-layer" net; its training is `layer-params-80sec.cfg`
(epsW 0.001, epsB 0.002, momentum 0.9, weight decay 0.004 in the conv layers and 0.03 in the FC
layers, none on biases, constant rates, batch 128 (cuda-convnet's default), no dropout). The input
is the whole 32x32 image minus the per-pixel mean image of the training set (convdata_cifar.py:17);
no crop, flip or lighting noise: the paper mentions no augmentation for Figure 1, and the 80sec
example was run on the uncropped CIFAR provider. The plot's "training error" is the training
batches' top-1 error averaged over each epoch (what cuda-convnet printed), as figure1.py computes.

Expected: the relu arm reaches 25% training error within a few epochs, the tanh arm about six
times later (the paper's figure: about 6 against about 36 epochs). Not run here: no CIFAR-10 on
this machine; each arm is 50 epochs of 390 steps of a 145k-parameter net (minutes on a GPU).
"""

import ml_collections

from configs import default


def get_config():
    c = default.get_config()
    c.dataset = "cifar10"  # tfds cifar10 in data_dir (50,000 train / 10,000 test, 32x32).
    c.data_dir = "~/tensorflow_datasets"  # where tfds keeps cifar10 (built by the user).
    c.num_classes = 10  # CIFAR-10's classes.
    c.eval_split = "test"  # cifar10 has train and test splits.
    c.input_size = 32  # the whole image: no crop.
    c.resize_size = 32  # = input_size: no resize, no random crop offset.
    c.random_flip = False  # no augmentation (see the docstring).
    c.pca_lighting_std = 0.0  # no lighting noise.
    c.normalization = "mean_image"  # minus the training set's mean image (convdata_cifar.py:17).
    c.shuffle_buffer_size = 50_000  # the whole training set shuffled each epoch.
    c.variant = "cifar4"  # layers-80sec.cfg's net (models.py).
    c.init_scheme = "cuda_convnet"  # its initW: 1e-4 conv1, 0.01 conv2-3, 0.1 fc; zero biases.
    c.activation = "relu"  # "relu" or "tanh": the two curves of Figure 1.
    c.dropout_rate = 0.0  # the 80sec net has no dropout.
    c.optimizer = "paper_sgd"  # cuda-convnet's update: lr inside the velocity.
    c.learning_rate = 0.001  # epsW (layer-params-80sec.cfg:4).
    c.momentum = 0.9  # momW.
    c.weight_decay = 0.004  # wc of the conv layers (:8).
    c.schedule = "constant"  # the example trains at fixed rates.
    c.param_groups = ml_collections.ConfigDict(
        {
            "fc_weights": {"params": r"fc(64|10)/kernel", "weight_decay": 0.03},  # wc=.03 (:29)
            "biases": {"params": r".*/bias", "learning_rate": 0.002, "weight_decay": 0.0},  # epsB
        }
    )
    c.warmup_epochs = 0.0  # no warm-up.
    c.grad_clip_norm = 0.0  # no clipping.
    c.batch_size = 128  # cuda-convnet's default minibatch.
    c.eval_batch_size = 500  # 10,000 test images in 20 batches.
    c.num_epochs = 50.0  # past the tanh curve's 25% (about epoch 36 in the figure).
    c.log_every_steps = 39  # ten train lines per epoch (390 steps).
    c.eval_every_steps = 0  # test error once per epoch.
    c.checkpoint_every_steps = 3900  # every 10 epochs.
    c.keep_checkpoints = 1  # the last one.
    return c

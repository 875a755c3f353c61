"""The paper's recipe: the two-tower AlexNet on ILSVRC2012, as Krizhevsky et al. (2012) trained it.

    python main.py --config=configs/imagenet.py --workdir=runs/imagenet \
        --config.manual_dir=/path/to/folder/with/ILSVRC2012_tars --config.data_dir=/path/to/tfds

Expected: the paper's ILSVRC-2012 validation error for one CNN, 40.7% top-1 / 18.2% top-5
(their Table 2; 10-crop eval at the end here). The paper trained for about 90 epochs in 5-6 days on
two GTX 580s; on 8 current GPUs this config takes hours (input decoding is the usual bottleneck).
Batch 128, SGD momentum 0.9, weight decay 5e-4, lr 0.01 divided by 10 at epochs 20 and 47 (the
original code's schedule; --config.schedule=plateau divides on validation plateaus instead).
"""

from configs import default


def get_config():
    c = default.get_config()
    c.dataset = "imagenet2012"  # the tfds builder, from the two ILSVRC2012 tars in manual_dir.
    c.data_dir = "~/tensorflow_datasets"  # where tfds writes the built dataset (~150 GB).
    c.manual_dir = ""  # REQUIRED: folder with ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar.
    c.num_classes = 1000  # ILSVRC2012 classes.
    c.shuffle_buffer_size = 16384  # examples held for shuffling (per host).
    c.normalization = "mean"  # the paper subtracts the mean only (pixels stay on the 0-255 scale).
    c.variant = "paper"  # the two-tower net of the paper (60,965,224 parameters).
    c.init_scheme = "paper"  # N(0, 0.01) weights; biases 1 in conv2/4/5 and fc6/7, else 0.
    c.bias_one = 1.0  # the paper's bias constant (Caffe's replication used 0.1).
    c.lrn_convention = "paper"  # alpha = 1e-4 as printed in the paper.
    c.batch_size = 128  # the paper's batch.
    c.eval_batch_size = 200  # eval batch (global); padded and masked at the end.
    c.learning_rate = 0.01  # the paper's initial lr.
    c.schedule = "step"  # the original code's drops; "plateau" follows the paper's text.
    c.lr_drop_epochs = (20, 47)  # 0.01 -> 0.001 at epoch 20 -> 0.0001 at epoch 47.
    c.plateau_patience = 2  # for schedule="plateau": evals (epochs) without improvement.
    c.warmup_epochs = 0.0  # no warm-up (the default config's demo recipe has one).
    c.grad_clip_norm = 0.0  # no gradient clipping.
    c.num_epochs = 90.0  # roughly 90 cycles through the 1.2M training images.
    c.log_every_steps = 100  # read metrics back every 100 steps.
    c.eval_every_steps = 0  # evaluate once per epoch (center crop).
    c.checkpoint_every_steps = 2000  # ~every 25 minutes on one GPU.
    c.keep_checkpoints = 3  # the last three.
    c.eval_crops = 10  # the paper's 10-patch test (applies to every eval; 1 is faster).
    return c

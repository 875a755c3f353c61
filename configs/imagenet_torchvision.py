"""torchvision's AlexNet recipe ("One weird trick", arXiv 1404.5997) for the `torchvision` variant.

    python main.py --config=configs/imagenet_torchvision.py --workdir=runs/tv \
        --config.manual_dir=/path/to/ILSVRC2012_tars --config.data_dir=/path/to/tfds

Expected: torchvision's published IMAGENET1K_V1 accuracy, 56.5% top-1 / 79.1% top-5 (center crop),
i.e. 43.5% / 20.9% error. torchvision's reference script: batch 256 (its default for alexnet is
lr 0.01), SGD momentum 0.9, weight decay 1e-4, lr divided by 10 every 30 epochs, 90 epochs,
Inception-style random-resized crops at 224 with flips, ImageNet mean/std normalization.
"""

from configs import default


def get_config():
    c = default.get_config()
    c.dataset = "imagenet2012"  # the tfds builder, from the two ILSVRC2012 tars in manual_dir.
    c.data_dir = "~/tensorflow_datasets"  # where tfds writes the built dataset.
    c.manual_dir = ""  # REQUIRED: folder with ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar.
    c.num_classes = 1000  # ILSVRC2012 classes.
    c.shuffle_buffer_size = 16384  # examples held for shuffling (per host).
    c.variant = "torchvision"  # 64-192-384-256-256, no LRN, adaptive avg pool (61,100,840 params).
    c.input_size = 224  # torchvision's crop.
    c.train_crop = "random_resized"  # Inception-style crops as torchvision's reference script.
    c.pca_lighting_std = 0.0  # torchvision does not use PCA lighting.
    c.normalization = "mean_std"  # ImageNet mean and std.
    c.init_scheme = "he"  # closest to PyTorch's Kaiming-based default initialization.
    c.batch_size = 256  # torchvision reference script default.
    c.eval_batch_size = 200  # eval batch (global); padded and masked at the end.
    c.optimizer = "sgd"  # optax/PyTorch form: lr outside the velocity.
    c.learning_rate = 0.01  # torchvision's recommended lr for alexnet.
    c.weight_decay = 1e-4  # torchvision reference default.
    c.schedule = "step"  # StepLR(step_size=30, gamma=0.1).
    c.lr_drop_epochs = (30, 60)  # epochs 30 and 60.
    c.warmup_epochs = 0.0  # no warm-up (the default config's demo recipe has one).
    c.grad_clip_norm = 0.0  # no gradient clipping.
    c.num_epochs = 90.0  # torchvision reference default.
    c.log_every_steps = 100  # read metrics back every 100 steps.
    c.checkpoint_every_steps = 2000  # periodic checkpoint.
    c.keep_checkpoints = 3  # the last three.
    c.eval_crops = 1  # torchvision reports center-crop accuracy.
    return c

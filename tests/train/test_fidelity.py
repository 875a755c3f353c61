"""configs/imagenet.py is the run behind the paper's 40.7% (cuda-convnet's layers-145 and
layer-params-145), configs/imagenet_paper.py the paper's text: each fact of docs/FIDELITY.md that a
config sets is pinned here, and the table's tests exist."""

import os
import re

import jax
import numpy as np
import pytest

from alexnet_jax.model import models
from alexnet_jax.train import config_lib, experiment, optim, sharding
from configs import imagenet, imagenet_paper

STEPS_PER_EPOCH = 10  # any epoch length: the schedules are checked at epoch boundaries


def _lr_at(config, group: str | None, epoch: float) -> float:
    spec = None if group is None else config.param_groups[group]
    schedule = optim.make_schedule(config, STEPS_PER_EPOCH, spec)
    return float(schedule(round(epoch * STEPS_PER_EPOCH)))


@pytest.mark.parametrize("get_config", [imagenet.get_config, imagenet_paper.get_config])
def test_both_imagenet_configs_are_valid_and_build_the_60965224_parameter_net(get_config):
    config = get_config()
    config_lib.validate_config(config)
    exp = experiment.build(config, sharding.single_device_mesh(), steps_per_epoch=10)
    assert models.param_count(sharding.abstract_params(exp.model)) == 60_965_224
    images = jax.ShapeDtypeStruct((2, config.input_size, config.input_size, 3), np.float32)
    logits = jax.eval_shape(
        lambda p, x: exp.model.apply({"params": p}, x), exp.abstract_state().params, images
    )
    assert logits.shape == (2, 1000)


def test_the_code_config_is_run_145():
    c = imagenet.get_config()
    assert (c.variant, c.input_size, c.conv1_padding) == ("paper", 224, "overhang")
    assert (c.block1_order, c.spatial_norm2) == ("conv_lrn_pool_relu", True)
    assert (c.lrn_convention, c.init_scheme, c.bias_one) == ("cuda_convnet", "cuda_convnet", 1.0)
    assert (c.normalization, c.pca_lighting_std, c.pca_lighting_stop_epoch) == (
        "mean_image",
        0.1,
        67,
    )
    assert (c.batch_size, c.momentum, c.weight_decay, c.optimizer) == (128, 0.9, 5e-4, "paper_sgd")
    assert (c.num_epochs, c.eval_crops, c.dropout_rate) == (91.0, 10, 0.5)
    # Weights: 0.01, /10 at epochs 25, 51 and 79 (layer-params-145.cfg's comments).
    for epoch, lr in ((0, 1e-2), (24.9, 1e-2), (25, 1e-3), (51, 1e-4), (79, 1e-5), (90.9, 1e-5)):
        assert _lr_at(c, None, epoch) == pytest.approx(lr, rel=1e-6), epoch
    # Biases (not conv1's): 0.02 throughout, no decay.
    for epoch in (0, 30, 60, 90):
        assert _lr_at(c, "biases", epoch) == pytest.approx(0.02, rel=1e-6)
    assert c.param_groups.biases.weight_decay == 0.0
    # conv1: the weights' drops, 1e-5 from epoch 67, frozen from 72.
    for epoch, lr in ((0, 1e-2), (25, 1e-3), (51, 1e-4), (67, 1e-5), (71.9, 1e-5), (72, 0.0)):
        assert _lr_at(c, "conv1_kernel", epoch) == pytest.approx(lr, rel=1e-6, abs=0), epoch
    assert _lr_at(c, "conv1_bias", 71.9) == pytest.approx(0.02)
    assert _lr_at(c, "conv1_bias", 72) == 0


def test_the_groups_claim_exactly_the_biases_and_conv1():
    c = imagenet.get_config()
    exp = experiment.build(c, sharding.single_device_mesh(), steps_per_epoch=10)
    labels = optim.param_group_labels(c.param_groups)(exp.abstract_state().params)
    named = {
        optim.param_name(path): label for path, label in jax.tree_util.tree_leaves_with_path(labels)
    }
    assert named["conv1/kernel"] == "conv1_kernel"
    assert named["conv1/bias"] == "conv1_bias"
    for name, label in named.items():
        if name.endswith("/bias") and not name.startswith("conv1"):
            assert label == "biases", name
        elif not name.startswith("conv1"):
            assert label == optim.DEFAULT_GROUP, name


def test_the_paper_config_is_the_text():
    c = imagenet_paper.get_config()
    assert (c.variant, c.input_size, c.block1_order, c.spatial_norm2) == (
        "paper",
        227,
        "conv_relu_lrn_pool",
        False,
    )
    assert (c.lrn_convention, c.init_scheme, c.normalization) == ("paper", "paper", "mean_image")
    assert (c.schedule, c.plateau_max_drops, c.num_epochs) == ("plateau", 3, 90.0)
    assert len(c.param_groups) == 0
    assert c.pca_lighting_stop_epoch == 0


def test_every_test_named_in_fidelity_md_exists(repo_root):
    with open(os.path.join(repo_root, "docs", "FIDELITY.md")) as f:
        text = f.read()
    named = re.findall(r"`(tests/(?:\w+/)?test_\w+\.py)::(\w+)", text)
    assert len(named) >= 10
    for path, name in named:
        with open(os.path.join(repo_root, path)) as f:
            assert re.search(rf"def {name}\b", f.read()), f"{path}::{name}"

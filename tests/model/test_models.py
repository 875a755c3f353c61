"""AlexNet model family: shapes and parameter counts (docs/PAPER.md), the towers, initialization,
dropout, bf16, pooling, the FLOP table (KNOWN.md), and the forward options (the original run's
layer order, normalization, initialization and conv1 geometry; the ablations of sections 3.1-3.4).

Relative error, where used: max |actual - expected| / max |expected| over the whole array.
"""

import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
import torch
from jax import lax

from alexnet_jax.interop.convert import VARIANTS, conv_specs
from alexnet_jax.model.alexnet import OneTowerAlexNet
from alexnet_jax.model.layers import ConvSpec, GroupedConv, Net, adaptive_avg_pool, max_pool
from alexnet_jax.model.lrn import local_response_norm, spatial_response_norm
from alexnet_jax.model.models import (
    FORWARD_OPTIONS,
    MODEL_FIELDS,
    POOLINGS,
    create,
    layer_macs,
    param_count,
    train_flops_per_image,
)
from tests import multihost_worker

PARAM_COUNTS = {"paper": 60_965_224, "one_tower": 62_378_344, "torchvision": 61_100_840}
INPUT_SIZE = {"paper": 227, "one_tower": 227, "torchvision": 224}
BIAS_ONE_LAYERS = {"conv2", "conv4", "conv5", "fc6", "fc7"}
LAYERS = ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8")


def init_key(seed: int = 0) -> jax.Array:
    """A key for full-size inits. The "rbg" PRNG compiles several times faster than threefry on
    CPU for 61M-value inits; the initializers, and so the statistics tested, do not depend on it."""
    return jax.random.key(seed, impl="rbg")


def relative_error(actual, expected) -> float:
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    return float(np.max(np.abs(actual - expected)) / np.max(np.abs(expected)))


def images(batch: int, size: int, seed: int = 0, scale: float = 50.0) -> jax.Array:
    """NHWC float32 images with a pixel-like scale (std 50, as after mean subtraction)."""
    return scale * jax.random.normal(jax.random.key(seed), (batch, size, size, 3), jnp.float32)


def abstract_variables(model: Net, size: int, batch: int = 1):
    """Shapes and dtypes of model.init's variables, without computing anything."""
    return jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((batch, size, size, 3)))


def intermediate_shapes(model: Net, size: int, batch: int = 1) -> dict[str, tuple]:
    """Output shape of every named submodule (conv1..fc8), by abstract evaluation."""

    def run(x):
        variables = model.init(jax.random.key(0), x)
        _, state = model.apply(variables, x, capture_intermediates=True, mutable=["intermediates"])
        return state["intermediates"]

    inter = jax.eval_shape(run, jnp.zeros((batch, size, size, 3)))
    return {name: inter[name]["__call__"][0].shape for name in LAYERS}


@pytest.fixture(scope="module")
def paper_apply():
    """The float32 paper net's apply, jitted once: (variables, x, dropout key, train) ->
    (logits, {"intermediates": outputs of every submodule})."""
    model = create("paper")
    return jax.jit(
        lambda variables, x, key, train: model.apply(
            variables, x, train=train, rngs={"dropout": key}, capture_intermediates=True,
            mutable=["intermediates"],
        ),
        static_argnames="train",
    )  # fmt: skip


@pytest.fixture(scope="module")
def paper_variables():
    """The paper variant's variables under the paper initialization (one jitted init)."""
    model = create("paper")
    variables = jax.jit(model.init)(init_key(), jnp.zeros((1, 227, 227, 3)))
    return jax.tree.map(np.asarray, variables)


# --- shapes and parameter counts ---------------------------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS)
def test_exact_parameter_count_per_variant(variant):
    """60,965,224 (paper), 62,378,344 (one_tower), 61,100,840 (torchvision) at 1000 classes,
    all float32, and fc8 scales as 4097 * num_classes."""
    for num_classes in (1000, 10):
        model = create(variant, num_classes=num_classes)
        variables = abstract_variables(model, INPUT_SIZE[variant])
        expected = PARAM_COUNTS[variant] - 4097 * (1000 - num_classes)
        assert param_count(variables["params"]) == expected
        assert set(variables) == {"params"}
        assert sorted(variables["params"]) == sorted(LAYERS)
        leaves = jax.tree_util.tree_leaves(variables)
        assert all(leaf.dtype == jnp.float32 for leaf in leaves)


@pytest.mark.parametrize("num_classes", [1, 7, 1000])
@pytest.mark.parametrize("variant", VARIANTS)
def test_output_shape_for_any_positive_num_classes(variant, num_classes):
    """The logits are (B, num_classes) float32 for every variant and any positive num_classes."""
    model = create(variant, num_classes=num_classes)
    x = jnp.zeros((3, INPUT_SIZE[variant], INPUT_SIZE[variant], 3))
    variables = abstract_variables(model, INPUT_SIZE[variant])
    out = jax.eval_shape(model.apply, variables, x)
    assert out.shape == (3, num_classes)
    assert out.dtype == jnp.float32


@pytest.mark.parametrize("num_classes", [0, -5])
def test_non_positive_num_classes_is_refused(num_classes):
    """num_classes < 1 is a ValueError (ConfigError) that names the field, when the model is
    built."""
    with pytest.raises(ValueError, match=r"config\.num_classes must be a positive integer"):
        create("one_tower", num_classes=num_classes)


@pytest.mark.parametrize(
    ("variant", "input_size"),
    [("paper", 227), ("paper", 224), ("one_tower", 227), ("one_tower", 224), ("torchvision", 224)],
)
def test_feature_map_sizes_55_27_13_and_fc_widths(variant, input_size):
    """conv1 gives 55x55 at 227 unpadded and at 224 padded; then 27, 13, 13, 13; FCs 4096 wide."""
    model = create(variant, input_size=input_size)
    shapes = intermediate_shapes(model, input_size, batch=2)
    widths = [spec.features for spec in conv_specs(variant, input_size)]
    for name, hw, width in zip(LAYERS[:5], (55, 27, 13, 13, 13), widths, strict=True):
        assert shapes[name] == (2, hw, hw, width), name
    assert shapes["fc6"] == shapes["fc7"] == (2, 4096)
    assert shapes["fc8"] == (2, 1000)


# --- towers --------------------------------------------------------------------------------------


def grouped_conv_and_params(spec, in_ch: int, seed: int):
    """A GroupedConv for a ConvSpec, its jitted apply, and random params of the right shapes."""
    conv = GroupedConv(spec.features, spec.kernel, spec.stride, spec.padding, spec.groups)
    rng = np.random.default_rng(seed)
    k = spec.kernel
    params = {
        "kernel": 0.1 * rng.standard_normal((k, k, in_ch // spec.groups, spec.features)),
        "bias": rng.standard_normal(spec.features),
    }
    params = jax.tree.map(lambda p: jnp.asarray(p, jnp.float32), params)
    return conv, jax.jit(lambda p, x: conv.apply({"params": p}, x)), params


@pytest.mark.parametrize("layer", ["conv2", "conv4", "conv5"])
def test_paper_towers_are_separate(layer):
    """In conv2, conv4 and conv5 of `paper`, changing tower-1 input channels leaves the tower-2
    outputs bit-identical (and vice versa), while each tower's own outputs do change."""
    spec = {s.name: s for s in conv_specs("paper")}[layer]
    assert spec.groups == 2
    in_ch = {"conv2": 96, "conv4": 384, "conv5": 384}[layer]
    _, apply, params = grouped_conv_and_params(spec, in_ch, seed=1)
    rng = np.random.default_rng(2)
    x = rng.standard_normal((1, 9, 9, in_ch)).astype(np.float32)
    y = np.asarray(apply(params, x))
    half_in, half_out = in_ch // 2, spec.features // 2
    towers = (
        (slice(0, half_in), slice(0, half_out)),
        (slice(half_in, None), slice(half_out, None)),
    )
    for (tower_in, tower_out), (_, other_out) in (towers, towers[::-1]):
        x2 = x.copy()
        x2[..., tower_in] += rng.standard_normal(x2[..., tower_in].shape).astype(np.float32)
        y2 = np.asarray(apply(params, x2))
        np.testing.assert_array_equal(y2[..., other_out], y[..., other_out])
        assert np.min(np.max(np.abs(y2 - y)[..., tower_out], axis=(0, 1, 2))) > 0


def test_conv3_crosses_the_towers():
    """conv3 of `paper` is not grouped: changing tower-1 inputs moves every output channel."""
    spec = conv_specs("paper")[2]
    assert spec.groups == 1
    _, apply, params = grouped_conv_and_params(spec, 256, seed=3)
    x = np.random.default_rng(4).standard_normal((1, 5, 5, 256)).astype(np.float32)
    y, y2 = apply(params, x), apply(params, x + (np.arange(256) < 128))
    assert np.min(np.max(np.abs(y2 - y), axis=(0, 1, 2))) > 0


@pytest.mark.parametrize(
    ("groups", "stride", "padding"), [(1, 1, 0), (2, 1, 1), (2, 2, 2), (4, 3, 1)]
)
def test_grouped_conv_equals_feature_group_count(groups, stride, padding):
    """GroupedConv equals lax.conv_general_dilated(feature_group_count=groups) + bias (1e-5)."""
    spec = ConvSpec("conv", 12, 3, stride, padding, groups)
    conv, _, params = grouped_conv_and_params(spec, 8, seed=5)
    x = jnp.asarray(np.random.default_rng(6).standard_normal((2, 11, 10, 8)), jnp.float32)
    shapes = jax.eval_shape(conv.init, jax.random.key(0), x)["params"]
    assert jax.tree.map(jnp.shape, params) == jax.tree.map(lambda s: s.shape, shapes)

    @jax.jit
    def ours_and_reference(params, x):
        reference = lax.conv_general_dilated(
            x,
            params["kernel"],
            (stride, stride),
            [(padding, padding)] * 2,
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
            feature_group_count=groups,
            precision=lax.Precision.HIGHEST,
        )
        return conv.apply({"params": params}, x), reference + params["bias"]

    ours, reference = ours_and_reference(params, x)
    assert relative_error(ours, reference) <= 1e-5


def test_grouped_conv_refuses_indivisible_channels():
    """Channels that do not split into the groups are a ValueError."""
    with pytest.raises(ValueError, match="groups"):
        jax.eval_shape(GroupedConv(6, 3, groups=4).init, jax.random.key(0), jnp.zeros((1, 5, 5, 8)))


# --- initialization ------------------------------------------------------------------------------


def test_paper_initialization_statistics(paper_variables):
    """Weights ~ N(0, 0.01): std within 5% of 0.01 and mean ~0 in every layer; biases exactly 1 in
    conv2, conv4, conv5, fc6, fc7 and exactly 0 in conv1, conv3, fc8."""
    assert sorted(paper_variables["params"]) == sorted(LAYERS)
    for layer, leaves in paper_variables["params"].items():
        kernel = leaves["kernel"]
        assert abs(kernel.std(dtype=np.float64) / 0.01 - 1) <= 0.05, layer
        assert abs(kernel.mean(dtype=np.float64)) <= 0.05 * 0.01, layer
        expected_bias = 1.0 if layer in BIAS_ONE_LAYERS else 0.0
        np.testing.assert_array_equal(leaves["bias"], expected_bias, err_msg=layer)


def test_bias_one_is_configurable():
    """bias_one=0.1 (Caffe's value) puts exactly 0.1 where the paper puts 1, and 0 elsewhere."""
    model = create("one_tower", bias_one=0.1)
    biases_only = lambda key: {
        layer: leaves["bias"]
        for layer, leaves in model.init(key, jnp.zeros((1, 227, 227, 3)))["params"].items()
    }
    biases = jax.jit(biases_only)(init_key())  # kernels are never materialised
    for layer, bias in biases.items():
        expected = np.float32(0.1) if layer in BIAS_ONE_LAYERS else 0.0
        np.testing.assert_array_equal(bias, expected, err_msg=layer)


def test_he_initialization_zero_biases_and_fan_in_std():
    """init_scheme="he": every bias is 0, and kernels have std sqrt(2 / fan_in) within 5% (checked
    on conv1 and fc8, a convolution and a dense layer; each kernel costs a compile)."""
    model = create("torchvision", init_scheme="he")
    checked = ("conv1", "fc8")

    def stats(key, x):  # reduced inside jit; unchecked kernels are never generated
        params = model.init(key, x)["params"]
        kernels = {layer: (jnp.std(params[layer]["kernel"]), jnp.mean(params[layer]["kernel"]))
                   for layer in checked}  # fmt: skip
        return kernels, {layer: jnp.max(jnp.abs(p["bias"])) for layer, p in params.items()}

    kernels, max_abs_biases = jax.jit(stats)(init_key(), jnp.zeros((1, 224, 224, 3)))
    assert set(max_abs_biases) == set(LAYERS)
    for layer, max_abs_bias in max_abs_biases.items():
        assert float(max_abs_bias) == 0.0, layer
    shapes = abstract_variables(model, 224)["params"]
    for layer, (std, mean) in kernels.items():
        fan_in = int(np.prod(shapes[layer]["kernel"].shape[:-1]))
        expected_std = np.sqrt(2.0 / fan_in)
        assert abs(float(std) / expected_std - 1) <= 0.05, layer
        assert abs(float(mean)) <= 0.05 * expected_std, layer


# --- dropout and dtypes --------------------------------------------------------------------------


def test_dropout_only_in_training_and_deterministic_given_the_rng(paper_variables, paper_apply):
    """train=False needs no rng and ignores one; train=True is a function of the rng; the paper
    variant drops about half of the (ReLU'd) fc6 outputs and scales the rest by 2."""
    x = images(2, 227, seed=1)
    apply = lambda train, key: paper_apply(paper_variables, x, key, train=train)
    jax.eval_shape(create("paper").apply, paper_variables, x)  # traces with no rng: no error
    eval_a, state_eval = apply(False, jax.random.key(8))
    eval_b, _ = apply(False, jax.random.key(9))
    train_a, state_train = apply(True, jax.random.key(1))
    train_a2, _ = apply(True, jax.random.key(1))
    train_b, _ = apply(True, jax.random.key(2))
    np.testing.assert_array_equal(eval_a, eval_b)
    np.testing.assert_array_equal(train_a, train_a2)
    assert np.max(np.abs(train_a - train_b)) > 0
    assert np.max(np.abs(train_a - eval_a)) > 0

    # Placement: the first dropout acts on relu(fc6); kept units are doubled, the rest zero.
    fc6 = np.maximum(state_eval["intermediates"]["fc6"]["__call__"][0], 0)
    dropped = state_train["intermediates"]["Dropout_0"]["__call__"][0]
    np.testing.assert_array_equal(state_eval["intermediates"]["Dropout_0"]["__call__"][0], fc6)
    kept = dropped != 0
    np.testing.assert_allclose(dropped[kept], 2 * fc6[kept], rtol=1e-6)
    drop_fraction = 1 - kept[fc6 > 0].mean()
    assert 0.45 <= drop_fraction <= 0.55


def test_bfloat16_computes_in_bf16_with_float32_params_and_logits(paper_variables, paper_apply):
    """dtype=bfloat16: params stay float32, activations are bf16, logits float32 and within 2e-2
    (relative) of the float32 model's logits."""
    model16 = create("paper", dtype=jnp.bfloat16)
    params16 = abstract_variables(model16, 227)["params"]
    assert all(p.dtype == jnp.float32 for p in jax.tree_util.tree_leaves(params16))
    x = images(2, 227, seed=3)
    apply16 = jax.jit(
        lambda v, x: model16.apply(v, x, capture_intermediates=True, mutable=["intermediates"])
    )
    logits16, state = apply16(paper_variables, x)
    inter = state["intermediates"]
    for name in ("conv1", "conv5", "fc7", "fc8"):
        assert inter[name]["__call__"][0].dtype == jnp.bfloat16, name
    assert logits16.dtype == jnp.float32
    logits32, _ = paper_apply(paper_variables, x, jax.random.key(0), train=False)
    assert relative_error(logits16, logits32) <= 2e-2


# --- pooling -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("shape", "window"), [((1, 55, 55, 3), 3), ((2, 8, 11, 2), 3), ((2, 9, 12, 2), 2)]
)
def test_slices_max_pool_equals_nn_max_pool(shape, window):
    """The deterministic "slices" pool equals nn.max_pool exactly, forward and backward, for the
    overlapping 3/2 pool and the non-overlapping 2/2 (odd and even sizes), the two POOLINGS (inputs
    without ties; integer cotangents so that summed gradients are exact)."""
    rng = np.random.default_rng(0)
    size = int(np.prod(shape))
    x = jnp.asarray(rng.permutation(size).reshape(shape) / size - 0.5, jnp.float32)  # no ties

    @jax.jit
    def forward_and_grads(x, cotangent):
        outs, grads = [], []
        for impl in ("slices", "reduce_window"):
            out, vjp = jax.vjp(lambda v, impl=impl: max_pool(v, impl, window, 2), x)
            outs.append(out)
            grads.append(vjp(cotangent)[0])
        return nn.max_pool(x, (window, window), strides=(2, 2), padding="VALID"), outs, grads

    assert (window, 2) in POOLINGS
    out_shape = nn.max_pool(jnp.zeros(shape), (window,) * 2, strides=(2, 2), padding="VALID").shape
    cotangent = jnp.asarray(rng.integers(-8, 9, out_shape), jnp.float32)
    expected, (slices, reduce_window), (grad_slices, grad_reduce_window) = forward_and_grads(
        x, cotangent
    )
    np.testing.assert_array_equal(slices, expected)
    np.testing.assert_array_equal(reduce_window, expected)
    np.testing.assert_array_equal(grad_slices, grad_reduce_window)
    assert np.count_nonzero(grad_slices) > 0


def test_max_pool_refuses_unknown_impl():
    """An unknown pool implementation is a ValueError."""
    with pytest.raises(ValueError, match="pool impl"):
        max_pool(jnp.zeros((1, 5, 5, 1)), "average")


@pytest.mark.parametrize(("hw", "out"), [((13, 13), 6), ((6, 6), 6), ((7, 9), 6), ((5, 5), 6),
                                         ((1, 1), 6), ((8, 8), 3)])  # fmt: skip
def test_adaptive_avg_pool_equals_torch(hw, out):
    """adaptive_avg_pool equals torch.nn.AdaptiveAvgPool2d (down-, up- and non-square) to 1e-6."""
    x = np.random.default_rng(0).standard_normal((2, *hw, 3)).astype(np.float32)
    expected = torch.nn.AdaptiveAvgPool2d(out)(torch.from_numpy(x.transpose(0, 3, 1, 2)))
    expected = expected.numpy().transpose(0, 2, 3, 1)
    actual = adaptive_avg_pool(jnp.asarray(x), out)
    assert actual.shape == (2, out, out, 3)
    assert relative_error(actual, expected) <= 1e-6


# --- FLOPs ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("variant", "input_size", "giga_macs"),
    [("paper", 227, 0.724), ("one_tower", 227, 1.135), ("torchvision", 224, 0.714)],
)
def test_layer_macs_totals_and_agreement_with_the_model(variant, input_size, giga_macs):
    """Totals 0.724 / 1.135 / 0.714 GMACs (KNOWN.md), and each layer's count equals output
    positions x kernel size of the model's own layer shapes."""
    macs = layer_macs(variant, input_size)
    assert round(sum(macs.values()) / 1e9, 3) == giga_macs
    assert train_flops_per_image(variant, input_size) == 6 * sum(macs.values())
    model = create(variant, input_size=input_size)
    outputs = intermediate_shapes(model, input_size)
    params = abstract_variables(model, input_size)["params"]
    for layer in LAYERS:
        positions = int(np.prod(outputs[layer][1:-1]))  # H * W for convs, 1 for dense layers
        assert macs[layer] == positions * int(np.prod(params[layer]["kernel"].shape)), layer


# --- forward options: fidelity to the original run (docs/PAPER.md, "Where the original code
# departs from the text") and the ablations of sections 3.1-3.4 --------------------------------

# Parameter counts at 1000 classes, by hand:
#   width="half" (one_tower; section 3.2, half the kernels of every conv layer: 48-128-192-192-128)
#     conv1 11*11*3*48 + 48 = 17,472         conv2 5*5*48*128 + 128 = 153,728
#     conv3 3*3*128*192 + 192 = 221,376      conv4 3*3*192*192 + 192 = 331,968
#     conv5 3*3*192*128 + 128 = 221,312      fc6 6*6*128*4096 + 4096 = 18,878,464
#     fc7 4096*4096 + 4096 = 16,781,312      fc8 4096*1000 + 1000 = 4,097,000
#     total 40,702,632
#   width="half_code" (layers-145-half.cfg: conv5 kept at 256): conv5 3*3*192*256 + 256 = 442,624
#     and fc6 6*6*256*4096 + 4096 = 37,752,832 instead: total 59,798,312 (docs/PAPER.md)
#   pool 2/2: 55 -> (55-2)//2+1 = 27 -> conv2 27 -> (27-2)//2+1 = 13 -> 13 -> (13-2)//2+1 = 6, the
#     same 6*6*256 = 9,216 fc6 inputs as 3/2 (55 -> 27 -> 13 -> 6): counts unchanged
#   conv1 overhang at 224: 1 + (224 + 0 + 3 - 11)//4 = 55 outputs, as padding 2 or 227 unpadded
HALF, HALF_CODE = 40_702_632, 59_798_312
OPTION_CASES = [  # (variant, input size, options, parameters, conv1..conv5 maps, widths)
    ("one_tower", 227, dict(width="half"), HALF, (55, 27, 13, 13, 13), (48, 128, 192, 192, 128)),
    ("one_tower", 227, dict(width="half_code"), HALF_CODE, (55, 27, 13, 13, 13),
     (48, 128, 192, 192, 256)),
    ("paper", 227, dict(pool_window=2), PARAM_COUNTS["paper"], (55, 27, 13, 13, 13), None),
    ("torchvision", 224, dict(pool_window=2), PARAM_COUNTS["torchvision"], (55, 27, 13, 13, 13),
     None),
    ("paper", 224, dict(conv1_padding="overhang"), PARAM_COUNTS["paper"], (55, 27, 13, 13, 13),
     None),
    ("one_tower", 224, dict(conv1_padding="overhang", width="half", pool_window=2), HALF,
     (55, 27, 13, 13, 13), (48, 128, 192, 192, 128)),
    ("one_tower", 227, dict(block1_order="conv_lrn_pool_relu", spatial_norm2=True,
                            activation="tanh"), PARAM_COUNTS["one_tower"], (55, 27, 13, 13, 13),
     None),
    ("torchvision", 224, dict(activation="tanh"), PARAM_COUNTS["torchvision"],
     (55, 27, 13, 13, 13), None),
    ("paper", 227, dict(lrn=False), PARAM_COUNTS["paper"], (55, 27, 13, 13, 13), None),
]  # fmt: skip


def test_forward_options_shapes_parameter_counts_and_macs():
    """Each option's maps (conv1..conv5; pool5 through fc6's inputs), widths and parameter count
    against the hand counts above, and layer_macs with the options against the model's shapes."""
    for variant, size, options, count, maps, widths in OPTION_CASES:
        model = create(variant, input_size=size, **options)

        def run(x, model=model):
            variables = model.init(jax.random.key(0), x)
            _, state = model.apply(variables, x, capture_intermediates=True, mutable=True)
            return variables["params"], state["intermediates"]

        params, inter = jax.eval_shape(run, jnp.zeros((1, size, size, 3)))
        assert param_count(params) == count, (variant, options)
        widths = widths or [spec.features for spec in conv_specs(variant)]
        for name, hw, width in zip(LAYERS[:5], maps, widths, strict=True):
            assert inter[name]["__call__"][0].shape == (1, hw, hw, width), (name, options)
        assert params["fc6"]["kernel"].shape == (6 * 6 * widths[-1], 4096), options
        macs = layer_macs(variant, size, 1000, **options)
        for layer in LAYERS:
            positions = int(np.prod(inter[layer]["__call__"][0].shape[1:-1]))
            kernel = int(np.prod(params[layer]["kernel"].shape))
            assert macs[layer] == positions * kernel, (layer, options)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (dict(variant="paper", width="half"), "config.width must be 'full' for variant"),
        (dict(variant="torchvision", width="half_code"), "config.width must be 'full' for variant"),
        (dict(variant="paper", input_size=227, conv1_padding="overhang"),
         "config.conv1_padding must be 'symmetric' unless config.input_size is 224"),
        (dict(variant="torchvision", input_size=224, conv1_padding="overhang"),
         "config.conv1_padding must be 'symmetric' unless"),
        (dict(variant="torchvision", lrn=False), "config.lrn must be True for variant"),
        (dict(lrn=False, spatial_norm2=True), "config.spatial_norm2 must be False without LRN"),
        (dict(variant="torchvision", spatial_norm2=True), "config.spatial_norm2 must be False"),
        (dict(lrn=False, block1_order="conv_lrn_pool_relu"),
         "config.block1_order must be 'conv_relu_lrn_pool' without LRN"),
        (dict(pool_window=4), "config.pool_window must be 3 .* or 2 .*, got 4"),
        (dict(pool_stride=1), r"config.pool_stride must be 2 .*, got 1\."),
        (dict(activation="gelu"), r"config.activation must be one of \['relu', 'tanh'\]"),
        (dict(lrn="no"), "config.lrn must be True or False, got 'no'"),
        (dict(width="quarter"), "config.width must be one of"),
        (dict(init_scheme="xavier"), "'paper', 'he', 'cuda_convnet'"),
    ],
)  # fmt: skip
def test_options_are_refused_where_they_mean_nothing(overrides, message):
    """A forward option outside its variants, sizes or companions is one ConfigError naming the
    field (the config's rule, also for a config read from JSON, which has no types); building the
    model (models.create, once, not at every trace) refuses the same values with the same
    message."""
    from alexnet_jax.core import errors
    from alexnet_jax.train import config_lib
    from configs import default

    config = ml_collections.ConfigDict({**default.get_config().to_dict(), **overrides})
    with pytest.raises(errors.ConfigError, match=message):
        config_lib.validate_config(config)
    with pytest.raises(errors.ConfigError, match=message):
        create(**{"variant": config.variant, **overrides})


def test_conv1_overhang_is_zero_padding_below_and_right_of_the_image():
    """conv1_padding="overhang" at 224: conv1 pads (0, 3) on H and W, giving 55x55 outputs equal
    to a VALID convolution of the explicitly zero-padded image (1e-6), and the corner output
    equals its float64 NumPy dot product over rows/columns 216..223 plus 3 zero rows/columns."""
    spec = conv_specs("one_tower", 224, conv1_padding="overhang")[0]
    assert (spec.kernel, spec.stride, spec.padding) == (11, 4, (0, 3))
    spec = ConvSpec("conv1", 8, 11, 4, (0, 3))  # 8 kernels: the geometry, cheaply
    _, apply, params = grouped_conv_and_params(spec, 3, seed=12)
    x = np.random.default_rng(13).standard_normal((1, 224, 224, 3)).astype(np.float32)
    out = np.asarray(apply(params, x))
    assert out.shape == (1, 55, 55, 8)
    padded = np.pad(x, ((0, 0), (0, 3), (0, 3), (0, 0)))
    reference = lax.conv_general_dilated(
        padded, params["kernel"], (4, 4), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"),
        precision=lax.Precision.HIGHEST,
    ) + params["bias"]  # fmt: skip
    assert relative_error(out, reference) <= 1e-6
    kernel = np.asarray(params["kernel"], np.float64)
    corner = np.einsum("hwc,hwco->o", x[0, 216:, 216:].astype(np.float64), kernel[:8, :8])
    corner += np.asarray(params["bias"], np.float64)
    assert relative_error(out[0, 54, 54], corner) <= 1e-5


def test_cuda_convnet_initialization_per_layer_statistics(monkeypatch):
    """init_scheme="cuda_convnet": kernels N(0, 0.01^2) in conv1, conv2, fc6, fc7, fc8 and
    N(0, 0.03^2) in conv3-5 (layers-145.cfg initW), biases as the paper's (exactly 1 in conv2,
    conv4, conv5, fc6, fc7, else 0). Tolerances from the sample size n of each kernel: the sample
    std within 6 standard errors (1 / sqrt(2n) relative) of its target, the mean within 6 sigma /
    sqrt(n) of 0. fc6/fc7 narrowed to 64 units and a 67x67 input (pool5 1x1): fc6 and fc7 still
    have 16k and 4k draws."""
    multihost_worker.narrow_fc_layers(monkeypatch.setattr)
    model = create("paper", num_classes=10, init_scheme="cuda_convnet")

    def stats(key, x):  # reduced inside jit: only statistics leave it
        params = model.init(key, x)["params"]
        return {
            layer: (jnp.std(p["kernel"]), jnp.mean(p["kernel"]), jnp.min(p["bias"]),
                    jnp.max(p["bias"]))
            for layer, p in params.items()
        }  # fmt: skip

    stats = jax.jit(stats)(init_key(), jnp.zeros((1, 67, 67, 3)))  # 67: a shorter compile
    shapes = abstract_variables(model, 67)["params"]
    sizes = {layer: p["kernel"].size for layer, p in shapes.items()}
    assert set(stats) == set(LAYERS)
    for layer, (std, mean, bias_min, bias_max) in stats.items():
        n = sizes[layer]
        target = 0.03 if layer in ("conv3", "conv4", "conv5") else 0.01
        assert abs(float(std) / target - 1) <= 6 / np.sqrt(2 * n), layer
        assert abs(float(mean)) <= 6 * target / np.sqrt(n), layer
        expected_bias = 1.0 if layer in BIAS_ONE_LAYERS else 0.0
        assert float(bias_min) == float(bias_max) == expected_bias, layer


def test_block_orders_spatial_norm_and_ablations_compose_the_right_layers():
    """The blocks after conv1 and conv2, on activations with negative values (std 40): the paper's
    block 1 is pool(lrn(relu(u))), cuda-convnet's relu(pool(lrn(u))) (LRN sees the negative
    responses, so they differ), block 2 with spatial_norm2 pool(spatial(lrn(relu(u)))); lrn=False
    drops the LRN, tanh replaces the ReLU, pool 2/2 takes 10 -> 5 (3/2: 4). One tower, 8 maps."""
    u = jnp.asarray(40.0 * np.random.default_rng(14).standard_normal((2, 10, 10, 8)), jnp.float32)
    lrn = lambda y: local_response_norm(y, impl="reduce_window")
    pool = lambda y, window=3: max_pool(y, "reduce_window", window, 2)

    def block(method, **options):
        model = create("one_tower", lrn_impl="reduce_window", pool_impl="reduce_window", **options)
        return model.apply({}, u, method=method)

    @jax.jit
    def blocks_and_references():  # one compile for all
        return {
            "paper": (block(OneTowerAlexNet.block1), pool(lrn(nn.relu(u)))),
            "code": (block(OneTowerAlexNet.block1, block1_order="conv_lrn_pool_relu"),
                     nn.relu(pool(lrn(u)))),
            "block2": (block(OneTowerAlexNet.block2), pool(lrn(nn.relu(u)))),
            "spatial": (block(OneTowerAlexNet.block2, spatial_norm2=True),
                        pool(spatial_response_norm(lrn(nn.relu(u))))),
            "no_lrn": (block(OneTowerAlexNet.block1, lrn=False), pool(nn.relu(u))),
            "tanh_2_2": (block(OneTowerAlexNet.block1, activation="tanh", pool_window=2),
                         pool(lrn(jnp.tanh(u)), window=2)),
        }  # fmt: skip

    results = blocks_and_references()
    for name, (actual, expected) in results.items():
        np.testing.assert_allclose(actual, expected, rtol=1e-6, atol=1e-6, err_msg=name)
    assert relative_error(results["code"][0], results["paper"][0]) > 1e-2
    assert results["tanh_2_2"][0].shape == (2, 5, 5, 8)  # 3/2 would give 4x4


def test_ablation_arms_train_and_dropout_rate_zero_turns_dropout_off(monkeypatch):
    """One tiny one_tower net with every ablation arm on (tanh, no LRN, pool 2/2, dropout 0, half
    width; fc6/fc7 narrowed to 64 units, a 35x35 input, which the module takes though the config
    rules ask 224/227): with dropout_rate 0, training mode needs no rng and gives the evaluation
    logits exactly; 4 SGD steps on one fixed batch give finite, falling losses. (One net for all
    arms, He-scaled NumPy params: each compile costs seconds on 2 cores.)"""
    multihost_worker.narrow_fc_layers(monkeypatch.setattr)
    arms = dict(activation="tanh", lrn=False, pool_window=2, dropout_rate=0.0, width="half")
    # The class itself (models.create would refuse the 35 px input that keeps this test fast).
    model = OneTowerAlexNet(num_classes=4, input_size=35, pool_impl="reduce_window", **arms)
    shapes = abstract_variables(model, 35)["params"]
    assert shapes["conv5"]["kernel"].shape == (3, 3, 192, 128)  # half width
    assert shapes["fc6"]["kernel"].shape == (128, 64)  # 35 -> conv1 8 -> 4 -> 2 -> pool5 1x1
    rng = np.random.default_rng(15)
    he = lambda s: rng.standard_normal(s.shape, np.float32) * np.sqrt(2 / np.prod(s.shape[:-1]))
    params = jax.tree.map(lambda s: he(s) if s.ndim > 1 else np.zeros(s.shape, np.float32), shapes)
    x, labels = images(4, 35, seed=15, scale=1.0), jnp.arange(4)

    def loss_fn(params):
        logits = model.apply({"params": params}, x, train=True)  # no rng: no dropout
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

    @jax.jit
    def run(params):
        train_logits = model.apply({"params": params}, x, train=True)
        eval_logits = model.apply({"params": params}, x, train=False)
        sgd = lambda p, _: (jax.tree.map(lambda w, g: w - 0.005 * g, p, jax.grad(loss_fn)(p)),
                            loss_fn(p))  # fmt: skip
        return train_logits, eval_logits, lax.scan(sgd, params, length=4)[1]

    train_logits, eval_logits, losses = run(params)
    np.testing.assert_array_equal(train_logits, eval_logits)
    losses = np.asarray(losses)
    assert np.all(np.isfinite(losses)), losses
    assert np.all(np.diff(losses) < 0), losses
    assert losses[-1] < 0.8 * losses[0], losses


def test_old_runs_get_the_default_network():
    """A config.json written before the forward options existed reads back with each option at
    the value of the network it trained (rundir.ADDED_FIELDS), which are AlexNet's defaults."""
    from alexnet_jax.runs import rundir

    defaults = {name: getattr(create(), name) for name in FORWARD_OPTIONS}
    assert {name: rundir.ADDED_FIELDS[name] for name in FORWARD_OPTIONS} == defaults
    assert set(FORWARD_OPTIONS) <= set(MODEL_FIELDS)


class _TinyNet(Net):
    """A variant written outside the package: one 3x3 convolution, a max-pool and fc8."""

    default_input_size = 32
    options = frozenset({"activation", "pool_window", "pool_stride"})

    @nn.compact
    def __call__(self, x, train=False):
        x = self.act(self.conv(ConvSpec("conv1", 8, 3, 1, 1), x.astype(self.dtype)))  # (B,32,32,8)
        x = self.pool(x)  # (B, 15, 15, 8)
        return self.dense("fc8", self.num_classes, x).astype(jnp.float32)


def test_a_variant_registered_from_outside_the_package_trains_and_is_checked(monkeypatch, tmp_path):
    """Adding a variant is one Net subclass and one registration, here in this test file: the
    config's rules take its name and input size and refuse options it does not implement, and
    the training loop trains it (2 steps on synthetic data, an evaluation, a checkpoint) with no
    change to the package."""
    from alexnet_jax.core import errors
    from alexnet_jax.model import models
    from alexnet_jax.train import config_lib, loop
    from configs import default

    monkeypatch.setitem(models.REGISTRY, "tiny", _TinyNet)
    config = default.get_config()
    config.update(
        variant="tiny", input_size=32, num_classes=4, init_scheme="he", dataset="synthetic",
        synthetic_train_examples=64, synthetic_eval_examples=8, batch_size=8, eval_batch_size=8,
        num_train_steps=2, log_every_steps=1,
    )  # fmt: skip
    for field, value, message in [
        ("input_size", 64, "config.input_size must be 32 for variant 'tiny'"),
        ("lrn", False, "config.lrn must be True for variant 'tiny', which has no LRN"),
    ]:
        bad = config.copy_and_resolve_references()
        bad[field] = value
        with pytest.raises(errors.ConfigError, match=message):
            config_lib.validate_config(bad)
    config_lib.validate_config(config)
    final = loop.train_and_evaluate(config, str(tmp_path / "run"))
    assert set(final) >= {"loss"}
    assert np.isfinite(final["loss"])
    assert os.path.isdir(tmp_path / "run" / "checkpoints" / "2")
    assert models.model_fields(models.create_model(config))["variant"] == "tiny"


def test_a_new_net_field_is_a_model_field_and_a_forward_option_with_no_list_to_edit(tmp_path):
    """Model fields are declared once, on layers.Net: MODEL_FIELDS, the forward options, the
    defaults older runs get and the options an export records all derive from its fields. A field
    added to Net (here on a subclass, as `net_fields` sees it) is a forward option; a run whose
    config.json lacks the forward options (made before they existed) loads with their defaults."""
    import dataclasses
    import json

    from alexnet_jax.interop import weights_io
    from alexnet_jax.model import layers, models
    from alexnet_jax.runs import rundir
    from alexnet_jax.train import config_lib
    from configs import default

    declared = [f.name for f in dataclasses.fields(Net) if f.init]
    expected = ("variant", *(n for n in declared if n not in ("parent", "name", "mesh")))
    assert expected == models.MODEL_FIELDS
    assert set(layers.FORWARD_OPTIONS) <= set(models.MODEL_FIELDS)
    assert weights_io.OPTION_DEFAULTS == layers.FORWARD_OPTIONS
    assert {k: rundir.ADDED_FIELDS[k] for k in layers.FORWARD_OPTIONS} == layers.FORWARD_OPTIONS

    class WithGain(Net):
        gain: float = 1.0

    fields = layers.net_fields(WithGain)
    assert list(fields)[-1] == "gain"
    assert "gain" not in layers._NOT_OPTIONS  # so it would be a forward option, default 1.0

    old = default.get_config().to_dict()
    for option in layers.FORWARD_OPTIONS:
        del old[option]
    (tmp_path / "config.json").write_text(json.dumps(old))
    config = config_lib.load_config(str(tmp_path))
    assert {k: config[k] for k in layers.FORWARD_OPTIONS} == layers.FORWARD_OPTIONS

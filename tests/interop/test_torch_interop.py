"""Exported weights run in PyTorch from the file alone:
alexnet_jax.interop.torch_models.load_exported reads
the conventions a .pth or .safetensors file records, builds the variant's module with the LRN
alpha of that convention (per tower for `paper`), and gives the JAX model's logits.

Tolerance: max |torch - jax| <= 1e-4 * max |jax| over all logits of a batch of 2 random images.
"""

import functools
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from torch import nn

from alexnet_jax.data import imagenet_stats
from alexnet_jax.interop import convert, torch_models, weights_io
from alexnet_jax.interop.convert import VARIANTS
from alexnet_jax.model.layers import Net
from alexnet_jax.model.models import FORWARD_OPTIONS, create

LOGIT_TOL = 1e-4
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# What a run of each variant records (weights_io.conventions_of): the paper's LRN convention for
# the LRN variants, PyTorch's for torchvision.
CONVENTIONS = {
    "paper": dict(num_classes=5, input_size=227, normalization="mean", lrn_convention="paper"),
    "one_tower": dict(num_classes=4, input_size=227, normalization="mean", lrn_convention="paper"),
    "torchvision": dict(
        num_classes=3, input_size=224, normalization="mean_std", lrn_convention="cuda_convnet"
    ),
}


# The non-default forward options (models.FORWARD_OPTIONS), as many at once as one net can hold:
# the paper net with all of the original run's (cuda-convnet's block 1 and same-map normalization,
# conv1's overhang at 224) and 2/2 pooling; one_tower with those that go with lrn=False (which
# refuses the first two): no LRN, half width, overhang, tanh, 2/2 pooling. tanh stays off the
# paper net: its outputs (|u| < 1) would leave the same-map normalization ~1e-3 from the identity.
ALL_OPTIONS = {
    "paper": dict(block1_order="conv_lrn_pool_relu", spatial_norm2=True, conv1_padding="overhang",
                  pool_window=2, input_size=224),
    "one_tower": dict(lrn=False, width="half", conv1_padding="overhang", activation="tanh",
                      pool_window=2, input_size=224),
}  # fmt: skip


def conventions_for(variant: str, with_options: bool = False) -> dict:
    conventions = {"variant": variant, "resize_size": 256, **CONVENTIONS[variant]}
    return {**conventions, **ALL_OPTIONS[variant]} if with_options else conventions


def jax_model(conventions: dict) -> Net:
    """The JAX model a run with these conventions evaluates (create_model's fields)."""
    options = {key: conventions[key] for key in FORWARD_OPTIONS if key in conventions}
    return create(
        conventions["variant"],
        num_classes=conventions["num_classes"],
        input_size=conventions["input_size"],
        lrn_convention=conventions["lrn_convention"],
        **options,
    )


@functools.cache
def case(variant: str, with_options: bool = False):
    """(conventions, random Flax params, 2 NHWC images, the JAX model's logits) of a variant,
    with ALL_OPTIONS if `with_options`.

    Kernels He-scaled, biases std 0.1, so activations stay O(1)-relative through every ReLU; the
    images have a pixel-like scale (std 50), so that LRN is far from the identity.
    """
    conventions = conventions_for(variant, with_options)
    model, size = jax_model(conventions), conventions["input_size"]
    abstract = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, size, size, 3)))
    rng = np.random.default_rng(0)

    def fill(leaf):
        if leaf.ndim == 1:
            return (0.1 * rng.standard_normal(leaf.shape)).astype(np.float32)
        fan_in = int(np.prod(leaf.shape[:-1]))
        return np.float32(np.sqrt(2.0 / fan_in)) * rng.standard_normal(leaf.shape, np.float32)

    params = jax.tree.map(fill, abstract["params"])
    images = (50.0 * rng.standard_normal((2, size, size, 3))).astype(np.float32)
    logits = np.asarray(jax.jit(model.apply)({"params": params}, images))
    scale = np.max(np.abs(logits))  # not vacuous: logits vary across classes and images
    assert np.std(logits) > 0.1 * scale
    assert np.max(np.abs(logits[0] - logits[1])) > 0.01 * scale
    return conventions, params, images, logits


def torch_logits(model: nn.Module, images_nhwc: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(images_nhwc.transpose(0, 3, 1, 2).copy())).numpy()


def relative_error(actual, expected) -> float:
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    return float(np.max(np.abs(actual - expected)) / np.max(np.abs(expected)))


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
@pytest.mark.parametrize("variant", VARIANTS)
def test_exported_file_alone_gives_the_jax_logits_in_pytorch(variant, suffix, tmp_path):
    """save_weights with a run's conventions, then load_exported(path) with nothing else: the
    recorded conventions come back and the eval-mode module's logits are the JAX model's (1e-4
    relative), for the paper convention's LRN (alpha 5e-4 in PyTorch) and per-tower LRN. The
    default network records no forward option: its files hold what they held before."""
    conventions, params, images, expected = case(variant)
    path = weights_io.save_weights(params, conventions, str(tmp_path / f"model{suffix}"))
    model, loaded_conventions = torch_models.load_exported(path)
    os.remove(path)
    assert loaded_conventions == conventions
    assert not set(loaded_conventions) & set(FORWARD_OPTIONS)
    assert not model.training
    assert relative_error(torch_logits(model, images), expected) <= LOGIT_TOL


@pytest.mark.parametrize(("variant", "suffix"), [("paper", ".safetensors"), ("one_tower", ".pth")])
def test_exported_file_with_every_forward_option_gives_the_jax_logits(variant, suffix, tmp_path):
    """ALL_OPTIONS: the file records each non-default option (safetensors: booleans and integers
    as JSON) and load_exported builds the matching module (Tanh, Identity for no LRN, cuda-convnet's
    block 1 order, LRN + same-map normalization, conv1 zero-padded (0, 3), 2/2 pooling, half
    width): the JAX logits to 1e-4 relative. Not vacuous: the same weights with any one of those
    options (width aside) back at its default miss the first image's logits by over 100x that."""
    conventions, params, images, expected = case(variant, with_options=True)
    path = weights_io.save_weights(params, conventions, str(tmp_path / f"model{suffix}"))
    model, loaded_conventions = torch_models.load_exported(path)
    os.remove(path)
    assert loaded_conventions == conventions
    assert relative_error(torch_logits(model, images), expected) <= LOGIT_TOL
    state_dict = model.state_dict()
    options = ALL_OPTIONS[variant]
    for name in sorted(set(options) & set(FORWARD_OPTIONS) - {"width"}):
        with torch.device("meta"):
            other = torch_models.torch_alexnet(
                variant, conventions["num_classes"], conventions["lrn_convention"],
                **{**options, name: FORWARD_OPTIONS[name]},
            )  # fmt: skip
        other.load_state_dict(state_dict, strict=True, assign=True)
        missed = relative_error(torch_logits(other.eval(), images[:1]), expected[:1])
        assert missed > 100 * LOGIT_TOL, name


def test_a_file_without_conventions_loads_with_torchvisions(tmp_path):
    """A file that records no conventions (as torchvision's) loads as the torchvision variant
    with PyTorch's conventions (mean/std, resize 256, 224 input, alpha / n LRN) and the file's
    number of classes."""
    conventions, params, images, expected = case("torchvision")
    path = weights_io.save_weights(params, "torchvision", str(tmp_path / "plain.safetensors"))
    assert weights_io.read_conventions(path) is None
    model, loaded_conventions = torch_models.load_exported(path)
    assert loaded_conventions == conventions
    assert relative_error(torch_logits(model, images), expected) <= LOGIT_TOL


def test_stock_local_response_norm_misses_a_paper_convention_run():
    """The trap the module avoids: the one_tower weights of a paper-convention run in the same
    network with stock nn.LocalResponseNorm(alpha=1e-4) miss the JAX logits by far (> 100x the
    tolerance), and with torch_lrn_alpha("paper") = 5e-4 they match."""
    conventions, params, images, expected = case("one_tower")
    assert torch_models.torch_lrn_alpha("paper") == pytest.approx(5e-4)
    with torch.device("meta"):
        model = torch_models.torch_alexnet("one_tower", conventions["num_classes"], "cuda_convnet")
    state_dict = convert.to_torch_state_dict(params, "one_tower")
    model.load_state_dict(state_dict, strict=True, assign=True)
    assert model.features[2].alpha == 1e-4
    assert relative_error(torch_logits(model.eval(), images), expected) > 100 * LOGIT_TOL


@pytest.mark.parametrize("variant", VARIANTS)
def test_module_state_dict_layout_is_the_converters(variant):
    """torch_alexnet's state dict has convert.torch_param_shapes' keys, order and shapes, at both
    input sizes of the LRN variants and with ALL_OPTIONS (built on the meta device: no memory, no
    initialization)."""
    for input_size in (224, 227):
        with torch.device("meta"):
            model = torch_models.torch_alexnet(variant, 6, "paper", input_size)
        shapes = {key: tuple(value.shape) for key, value in model.state_dict().items()}
        assert list(shapes.items()) == list(convert.torch_param_shapes(variant, 6).items())
    if variant in ALL_OPTIONS:  # the forward options keep every key (width changes shapes)
        options = ALL_OPTIONS[variant]
        with torch.device("meta"):
            model = torch_models.torch_alexnet(variant, 6, "paper", **options)
        shapes = {key: tuple(value.shape) for key, value in model.state_dict().items()}
        expected = convert.torch_param_shapes(variant, 6, width=options.get("width", "full"))
        assert list(shapes.items()) == list(expected.items())
    with pytest.raises(ValueError, match="lrn_convention"):
        torch_models.torch_alexnet(variant, 6, "tensorflow")


def test_normalize_gives_the_nchw_float_input():
    """normalize: uint8 NHWC crops -> contiguous float32 NCHW, minus 255 * mean ("mean"), also
    divided by 255 * std ("mean_std")."""
    pixels = np.random.default_rng(0).integers(0, 256, (2, 5, 4, 3), dtype=np.uint8)
    nchw = pixels.transpose(0, 3, 1, 2).astype(np.float64)
    mean = 255.0 * imagenet_stats.RGB_MEAN.astype(np.float64)[None, :, None, None]
    std = 255.0 * imagenet_stats.RGB_STD.astype(np.float64)[None, :, None, None]
    for normalization, want in (("mean", nchw - mean), ("mean_std", (nchw - mean) / std)):
        got = torch_models.normalize(pixels, {"normalization": normalization})
        assert got.dtype == np.float32
        assert got.flags.c_contiguous
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)


def test_importing_torch_models_does_not_import_torch():
    """PyTorch stays a test-only dependency: alexnet_jax.interop.torch_models imports torch only
    inside its functions."""
    code = "import sys, alexnet_jax.interop.torch_models; print('torch' in sys.modules)"
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == "False"


def test_a_file_that_does_not_fit_the_variant_is_refused_naming_the_keys(tmp_path):
    """A state dict that is not the variant's layout is one WeightsFileError naming the file and
    the missing and the wrongly shaped keys."""
    path = str(tmp_path / "partial.pth")
    torch.save(
        {"classifier.6.weight": torch.zeros(3, 4096), "features.0.bias": torch.zeros(9)}, path
    )
    with pytest.raises(weights_io.WeightsFileError) as error:
        torch_models.load_exported(path)
    message = str(error.value)
    assert "partial.pth refused for variant 'torchvision'" in message
    assert '"classifier.6.bias"' in message  # missing
    assert "size mismatch for features.0.bias" in message
    assert message.endswith(weights_io.OTHER_VARIANT)  # what to do (hostile pass 23, #61)


def test_a_forward_option_the_pytorch_module_does_not_mirror_is_refused(monkeypatch):
    """Every forward option is mirrored in PyTorch today; one added to the JAX model only (here
    `gain`, added to FORWARD_OPTIONS by the test) builds at its default and is refused at any
    other value, instead of a PyTorch model whose logits silently differ."""
    from alexnet_jax.interop import torch_models
    from alexnet_jax.model import layers

    assert set(layers.FORWARD_OPTIONS) == torch_models.TORCH_OPTIONS
    monkeypatch.setitem(layers.FORWARD_OPTIONS, "gain", 1.0)
    torch_models.torch_alexnet("torchvision", num_classes=3, gain=1.0)
    with pytest.raises(ValueError, match=r"does not implement the forward options \['gain'\]"):
        torch_models.torch_alexnet("torchvision", num_classes=3, gain=2.0)


def test_without_pytorch_the_pytorch_api_says_what_to_install(tmp_path):
    """torch_alexnet and load_exported without PyTorch installed (hidden by a module that fails
    to import): a WeightsFileError saying to install it, not a ModuleNotFoundError."""
    (tmp_path / "torch.py").write_text("raise ImportError('torch hidden by the test')\n")
    code = (
        "from alexnet_jax.interop import torch_models, weights_io\n"
        "for call in (lambda: torch_models.torch_alexnet('paper'),\n"
        "             lambda: torch_models.load_exported('model.pth')):\n"
        "    try:\n"
        "        call()\n"
        "    except weights_io.WeightsFileError as e:\n"
        "        print(e)\n"
    )
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT}"}
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.splitlines() == [
        "Building a PyTorch model needs the `torch` package: pip install torch",
        "Loading model.pth into PyTorch needs the `torch` package: pip install torch",
    ]

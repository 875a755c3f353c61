"""Local response normalization against independent references: the paper's formula in float64
NumPy, torch.nn.functional.local_response_norm and tf.nn.local_response_normalization; and
cuda-convnet's same-map normalization against its formula in float64 NumPy.

Relative error, everywhere in this file: max_i |actual_i - expected_i| / max(|expected_i|, floor),
elementwise, with floor = 1e-6 * max|expected| so that values near zero do not divide by ~0.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow as tf
import torch
from jax.test_util import check_grads

from alexnet_jax.model.lrn import (
    IMPLEMENTATIONS,
    local_response_norm,
    spatial_response_norm,
)

CHANNELS = (1, 2, 5, 96, 256)
PAPER = dict(size=5, k=2.0, alpha=1e-4, beta=0.75)
F32_TOL = 1e-6


def relative_error(actual, expected) -> float:
    actual = np.asarray(actual, np.float64)
    expected = np.asarray(expected, np.float64)
    floor = 1e-6 * np.max(np.abs(expected))
    return float(np.max(np.abs(actual - expected) / np.maximum(np.abs(expected), floor)))


def random_activations(channels: int, seed: int = 0, shape=(2, 3, 5)) -> np.ndarray:
    """NHWC float32 activations large enough (std 40) that the denominator is far from k**beta."""
    rng = np.random.default_rng(seed + channels)
    return (40.0 * rng.standard_normal((*shape, channels))).astype(np.float32)


def lrn_numpy(x, size, k, alpha, beta, divide_alpha_by_size):
    """The paper's formula in float64: the sum runs over channels max(0, i-n/2)..min(C-1, i+n/2)."""
    x = np.asarray(x, np.float64)
    channels, half = x.shape[-1], size // 2
    sq_sum = np.zeros_like(x)
    for i in range(channels):
        lo, hi = max(0, i - half), min(channels - 1, i + half)
        sq_sum[..., i] = np.sum(x[..., lo : hi + 1] ** 2, axis=-1)
    scale = alpha / size if divide_alpha_by_size else alpha
    return x / (k + scale * sq_sum) ** beta


def lrn_torch(x, size, k, alpha, beta):
    """torch.nn.functional.local_response_norm (alpha / n) on NHWC input via NCHW."""
    xt = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
    out = torch.nn.functional.local_response_norm(xt, size, alpha=alpha, beta=beta, k=k)
    return out.numpy().transpose(0, 2, 3, 1)


def lrn_tf(x, size, k, alpha, beta):
    """tf.nn.local_response_normalization (the paper's alpha) with depth_radius = n // 2."""
    out = tf.nn.local_response_normalization(
        tf.constant(x), depth_radius=size // 2, bias=k, alpha=alpha, beta=beta
    )
    return out.numpy()


@pytest.mark.parametrize("divide_alpha_by_size", [False, True], ids=["paper", "cuda_convnet"])
@pytest.mark.parametrize("channels", CHANNELS)
@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_lrn_equals_float64_paper_formula(impl, channels, divide_alpha_by_size):
    """Every implementation equals the float64 formula to 1e-6 in float32, both conventions."""
    x = random_activations(channels)
    out = local_response_norm(x, **PAPER, divide_alpha_by_size=divide_alpha_by_size, impl=impl)
    expected = lrn_numpy(x, **PAPER, divide_alpha_by_size=divide_alpha_by_size)
    assert out.dtype == jnp.float32
    assert relative_error(out, expected) <= F32_TOL


@pytest.mark.parametrize(
    "hyper",
    [
        dict(size=3, k=1.0, alpha=1e-3, beta=0.5),  # the generic pow path (beta != 0.75)
        dict(size=4, k=2.0, alpha=1e-4, beta=0.75),  # even n: the formula's n + 1 channels
        dict(size=7, k=0.5, alpha=5e-4, beta=1.0),  # a window wider than some channel counts
    ],
    ids=["n3_beta0.5", "n4_even", "n7_beta1"],
)
@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_lrn_other_hyperparameters_equal_formula_and_tensorflow(impl, hyper):
    """Non-default n, k, alpha, beta (including an even n) match NumPy and TensorFlow."""
    for channels in (5, 96):
        x = random_activations(channels, seed=1)
        out = local_response_norm(x, **hyper, impl=impl)
        assert relative_error(out, lrn_numpy(x, **hyper, divide_alpha_by_size=False)) <= F32_TOL
        assert relative_error(out, lrn_tf(x, **hyper)) <= F32_TOL


@pytest.mark.parametrize("channels", CHANNELS)
@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_lrn_cuda_convnet_convention_equals_torch(impl, channels):
    """divide_alpha_by_size=True equals torch's local_response_norm (n=5, k=2) to 1e-6."""
    x = random_activations(channels, seed=2)
    out = local_response_norm(x, **PAPER, divide_alpha_by_size=True, impl=impl)
    assert relative_error(out, lrn_torch(x, **PAPER)) <= F32_TOL


@pytest.mark.parametrize("size", [1, 3, 7])
@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_lrn_equals_torch_for_other_odd_sizes(impl, size):
    """For odd n, where torch's window is centred like the paper's, they agree for n = 1, 3, 7."""
    for channels in (2, 96):
        x = random_activations(channels, seed=3)
        hyper = dict(size=size, k=1.0, alpha=1e-3, beta=0.75)
        out = local_response_norm(x, **hyper, divide_alpha_by_size=True, impl=impl)
        assert relative_error(out, lrn_torch(x, **hyper)) <= F32_TOL


@pytest.mark.parametrize("channels", CHANNELS)
@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_lrn_paper_convention_equals_tensorflow(impl, channels):
    """The paper convention equals tf.nn.local_response_normalization(depth_radius=2) to 1e-6."""
    x = random_activations(channels, seed=4)
    out = local_response_norm(x, **PAPER, impl=impl)
    assert relative_error(out, lrn_tf(x, **PAPER)) <= F32_TOL


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_lrn_gradients_pass_check_grads(impl):
    """Forward- and reverse-mode derivatives match finite differences (float64, order 1).

    One function stacks both conventions and both ways of raising to -beta (the rsqrt path for
    beta = 0.75, pow otherwise), so one check covers all. alpha is raised to 0.05 so that the
    normalisation, not the identity, dominates the derivative.
    """
    rng = np.random.default_rng(5)
    with jax.enable_x64(True):
        x = jnp.asarray(rng.standard_normal((2, 2, 7)), jnp.float64)

        def f(v):
            return jnp.stack(
                [
                    local_response_norm(
                        v,
                        size=5,
                        k=2.0,
                        alpha=0.05,
                        beta=beta,
                        divide_alpha_by_size=divide,
                        impl=impl,
                    )
                    for beta, divide in ((0.75, False), (0.6, True))
                ]
            )

        assert f(x).dtype == jnp.float64  # float64 is computed in float64, not float32
        check_grads(f, (x,), order=1, modes=("fwd", "rev"), atol=1e-6, rtol=1e-6, eps=1e-4)


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_lrn_bfloat16_within_1e_2_of_float32_and_returns_bfloat16(impl):
    """bf16 in -> bf16 out, within 1e-2 relative of the float32 result on the same values."""
    x = jnp.asarray(random_activations(96, seed=6), jnp.bfloat16)
    out = local_response_norm(x, **PAPER, impl=impl)
    reference = local_response_norm(x.astype(jnp.float32), **PAPER, impl=impl)
    assert out.dtype == jnp.bfloat16
    assert relative_error(out.astype(jnp.float32), reference) <= 1e-2


def test_lrn_rejects_unknown_impl_and_bad_size():
    """An unknown implementation or a size < 1 is a ValueError naming the argument."""
    x = random_activations(5)
    with pytest.raises(ValueError, match="impl must be one of"):
        local_response_norm(x, impl="fft")
    with pytest.raises(ValueError, match="size must be a positive integer"):
        local_response_norm(x, size=0)


# ---- cuda-convnet's same-map normalization (docs/PAPER.md, departure 3) -------------------------


def spatial_norm_numpy(x) -> np.ndarray:
    """The original run's cnorm2 in float64, written from the cfg files' constants: size 5
    (layers-145.cfg:107-133), scale 0.001 divided by size**2 = 25 and pow 0.75
    (layer-params-145.cfg:157-163, layer.py:1183-1186), constant 1; the 5x5 window of each
    position cut off at the border."""
    x = np.asarray(x, np.float64)
    _, height, width, _ = x.shape
    sq_sum = np.zeros_like(x)
    for i in range(height):
        for j in range(width):
            window = x[:, max(0, i - 2) : i + 3, max(0, j - 2) : j + 3]
            sq_sum[:, i, j] = np.sum(window**2, axis=(1, 2))
    return x / (1.0 + (0.001 / 25) * sq_sum) ** 0.75


def spatial_norm_vjp_numpy(x, cotangent, eps=1e-3) -> np.ndarray:
    """d sum(cotangent * b) / dx by central finite differences of the float64 reference."""
    x = np.asarray(x, np.float64)
    grad = np.zeros_like(x)
    for index in np.ndindex(x.shape):
        step = np.zeros_like(x)
        step[index] = eps
        up, down = spatial_norm_numpy(x + step), spatial_norm_numpy(x - step)
        grad[index] = np.sum(cotangent * (up - down)) / (2 * eps)
    return grad


def test_spatial_norm_values_and_gradients_equal_the_float64_reference():
    """spatial_response_norm equals the float64 formula, border windows included (6x7 maps: most
    windows are cut off), and its gradient equals central finite differences of that formula:
    values to 1e-6 (float32) and 1e-12 (float64); gradients to 1e-5 (float32) and 1e-7 (float64;
    the difference step 1e-3 against values of std 40 leaves ~1e-9). The activations (std 40)
    make (0.001 / 25) * S about 1.6 inside the map, far from the identity."""
    rng = np.random.default_rng(11)
    x = (40.0 * rng.standard_normal((1, 6, 7, 2))).astype(np.float32)
    cotangent = rng.standard_normal(x.shape)
    expected, expected_grad = spatial_norm_numpy(x), spatial_norm_vjp_numpy(x, cotangent)
    assert np.max(np.abs(expected - x)) > 0.3 * np.max(np.abs(x))  # not near the identity

    def value_and_grad(v):
        out, vjp = jax.vjp(spatial_response_norm, v)
        return out, vjp(jnp.asarray(cotangent, v.dtype))[0]

    out, grad = jax.jit(value_and_grad)(jnp.asarray(x))
    assert out.dtype == grad.dtype == jnp.float32
    assert relative_error(out, expected) <= 1e-6
    assert relative_error(grad, expected_grad) <= 1e-5
    with jax.enable_x64(True):
        out64, grad64 = jax.jit(value_and_grad)(jnp.asarray(x, jnp.float64))
        assert out64.dtype == jnp.float64
        assert relative_error(out64, expected) <= 1e-12
        assert relative_error(grad64, expected_grad) <= 1e-7


def test_spatial_norm_bfloat16_returns_bfloat16_within_1e_2():
    """bf16 in -> bf16 out (and a finite bf16 gradient), within 1e-2 relative of float32."""
    x = jnp.asarray(random_activations(4, seed=8, shape=(2, 7, 7)), jnp.bfloat16)
    out, vjp = jax.vjp(spatial_response_norm, x)
    grad = vjp(jnp.ones_like(out))[0]
    assert out.dtype == grad.dtype == jnp.bfloat16
    assert bool(jnp.all(jnp.isfinite(grad.astype(jnp.float32))))
    reference = spatial_response_norm(x.astype(jnp.float32))
    assert relative_error(out.astype(jnp.float32), reference) <= 1e-2

"""Local response normalization (Krizhevsky et al. 2012, section 3.3), channels-last.

    b[..., i] = a[..., i] / (k + alpha' * sum_{j=max(0, i-n/2)}^{min(C-1, i+n/2)} a[..., j]^2)^beta

with alpha' = alpha (the paper's formula, and tf.nn.local_response_normalization) or alpha / n
(cuda-convnet, Caffe, PyTorch, ONNX: `divide_alpha_by_size=True`). The windowed sum of squares is
clipped at the first and last channel. The window is centred, channels i - n//2 .. i + n//2,
exactly as the formula reads (TensorFlow's with depth_radius = n//2): n channels for the usual odd
n, n + 1 for an even n, where PyTorch instead sums the n channels i - n/2 .. i + n/2 - 1.
Several implementations of the windowed sum exist because the fastest one differs by backend; all
of them agree to float32 rounding.

`spatial_response_norm` is cuda-convnet's other response normalization (layer type `rnorm`), which
the original run applied after the second LRN (docs/PAPER.md, "Where the original code departs from
the text", item 3): the same formula with the window over a size x size patch of one channel.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

IMPLEMENTATIONS = ("conv", "reduce_window", "slices")


def _band_matrix(channels: int, size: int) -> np.ndarray:
    """(C, C) matrix M, M[j, i] = 1 where |i - j| <= size // 2: x**2 @ M is the window sum."""
    idx = np.arange(channels)
    return (np.abs(idx[:, None] - idx[None, :]) <= size // 2).astype(np.float32)


def _window_sum_conv(sq: jax.Array, size: int) -> jax.Array:
    """Window sum as a 1x1 `conv_general_dilated` with a banded (C, C) kernel (a matmul)."""
    channels = sq.shape[-1]
    kernel = jnp.asarray(_band_matrix(channels, size), sq.dtype)[None, None]  # (1, 1, C, C) HWIO
    flat = sq.reshape((-1, 1, 1, channels))  # (N, 1, 1, C): every position is one "image"
    out = lax.conv_general_dilated(
        flat,
        kernel,
        window_strides=(1, 1),
        padding="VALID",
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
        precision=lax.Precision.HIGHEST,
    )
    return out.reshape(sq.shape)


def _window_sum_reduce_window(sq: jax.Array, size: int) -> jax.Array:
    """Window sum as `lax.reduce_window` over the channel axis; zero padding clips at the ends."""
    half = size // 2
    ndim = sq.ndim
    window = (1,) * (ndim - 1) + (2 * half + 1,)
    padding = ((0, 0),) * (ndim - 1) + ((half, half),)
    return lax.reduce_window(sq, np.zeros((), sq.dtype), lax.add, window, (1,) * ndim, padding)


def _window_sum_slices(sq: jax.Array, size: int) -> jax.Array:
    """Window sum as shifted slices of a zero-padded copy, added (fuses into one loop)."""
    half = size // 2
    channels = sq.shape[-1]
    padded = jnp.pad(sq, [(0, 0)] * (sq.ndim - 1) + [(half, half)])
    return sum(padded[..., j : j + channels] for j in range(2 * half + 1))


_WINDOW_SUMS = {
    "conv": _window_sum_conv,
    "reduce_window": _window_sum_reduce_window,
    "slices": _window_sum_slices,
}


def default_implementation(backend: str | None = None) -> str:
    """The fastest correct implementation for a backend, as measured by benchmarks/lrn.py."""
    backend = backend or jax.default_backend()
    return "reduce_window" if backend == "cpu" else "conv"


def _inverse_power(base: jax.Array, beta: float) -> jax.Array:
    """base ** -beta. For the paper's beta = 0.75, rsqrt(base * sqrt(base)) avoids a generic pow
    (log + exp); it was within 1.7e-7 relative of float64 in a sweep, and LRN forward + backward
    ran 20% faster on CPU with it than with rsqrt(base) * rsqrt(sqrt(base))."""
    if beta == 0.75:
        return lax.rsqrt(base * jnp.sqrt(base))
    return jnp.power(base, -beta)


def _normalize(x, window_sum, size, k, scale, beta):
    """(b, base, base ** -beta) for activations `x` already in the computation dtype."""
    base = k + scale * window_sum(x * x, size)
    inv = _inverse_power(base, beta)
    return x * inv, base, inv


@functools.partial(jax.custom_jvp, nondiff_argnums=(1, 2, 3, 4, 5))
def _response_norm(x, window_sum, size, k, scale, beta):
    """b = x / (k + scale * window_sum(x ** 2)) ** beta, `window_sum` one of the functions above."""
    return _normalize(x, window_sum, size, k, scale, beta)[0]


@_response_norm.defjvp
def _response_norm_jvp(window_sum, size, k, scale, beta, primals, tangents):
    """The hand-derived linearization, so that reverse mode keeps only x, base ** -beta and
    b / base from the forward pass instead of every intermediate of the formula:

        db_i = inv_i da_i - 2 beta scale (b_i / base_i) sum_{j in window(i)} a_j da_j

    Every window here is symmetric (j in window(i) iff i in window(j)), so the transpose that
    reverse mode derives is the same windowed sum again, applied to g * b / base.
    """
    (x,), (dx,) = primals, tangents
    y, base, inv = _normalize(x, window_sum, size, k, scale, beta)
    dy = inv * dx - ((2.0 * beta * scale) * y / base) * window_sum(x * dx, size)
    return y, dy


# The paper's hyper-parameters (section 3.3): n = 5, k = 2, alpha = 1e-4, beta = 0.75.
SIZE, K, ALPHA, BETA = 5, 2.0, 1e-4, 0.75


@functools.partial(
    jax.jit, static_argnames=("size", "k", "alpha", "beta", "divide_alpha_by_size", "impl")
)
def local_response_norm(
    x: jax.Array,
    *,
    size: int = SIZE,
    k: float = K,
    alpha: float = ALPHA,
    beta: float = BETA,
    divide_alpha_by_size: bool = False,
    impl: str = "conv",
) -> jax.Array:
    """Normalizes `x` (..., C) across channels as in the paper; returns the dtype of `x`.

    Args:
      x: activations, channels last. bfloat16/float16 inputs are computed in float32, float64
        inputs in float64.
      size: n, the number of adjacent channels in the window (centred, i - n//2 .. i + n//2, and
        clipped at the edges; see the module docstring for even n).
      k, alpha, beta: the paper's hyper-parameters (K, ALPHA, BETA: 2, 1e-4, 0.75).
      divide_alpha_by_size: False for the paper's formula (TensorFlow's convention), True for
        cuda-convnet/Caffe/PyTorch's alpha / n.
      impl: how the windowed sum of squares is computed: one of IMPLEMENTATIONS.
    """
    if impl not in _WINDOW_SUMS:
        raise ValueError(f"impl must be one of {IMPLEMENTATIONS}, got {impl!r}")
    if size < 1:
        raise ValueError(f"size must be a positive integer, got {size}")
    xf = x.astype(jnp.promote_types(x.dtype, jnp.float32))
    scale = alpha / size if divide_alpha_by_size else alpha
    window_sum = _WINDOW_SUMS[impl]
    return _response_norm(xf, window_sum, size, float(k), float(scale), float(beta)).astype(x.dtype)


# cuda-convnet's same-map normalization `cnorm2` of the original run (docs/PAPER.md, departure 3):
# a 5x5 window (`size=5`, layers-145.cfg:107-133), `scale=0.001` and `pow=0.75`
# (layer-params-145.cfg:157-163), the scale divided by size ** 2 in the parser and no `minDiv`
# given, so the constant is cuda-convnet's documented 1 (layer.py:1183-1186).
SPATIAL_SIZE, SPATIAL_SCALE, SPATIAL_POWER, SPATIAL_K = 5, 0.001, 0.75, 1.0


def _window_sum_spatial(sq: jax.Array, size: int) -> jax.Array:
    """Per channel of NHWC `sq`, the sum over the window of rows and columns -size//2..size//2
    around each position; positions past the border add nothing (zero padding). Separable: five
    shifted row slices added, then five column slices (fuses into one loop)."""
    half = size // 2
    _, h, w, _ = sq.shape
    padded = jnp.pad(sq, ((0, 0), (half, half), (half, half), (0, 0)))
    rows = sum(padded[:, i : i + h] for i in range(2 * half + 1))  # (B, H, W + 2 half, C)
    return sum(rows[:, :, j : j + w] for j in range(2 * half + 1))  # (B, H, W, C)


@functools.partial(jax.jit, static_argnames=("size", "k", "scale", "power"))
def spatial_response_norm(
    x: jax.Array,
    *,
    size: int = SPATIAL_SIZE,
    k: float = SPATIAL_K,
    scale: float = SPATIAL_SCALE,
    power: float = SPATIAL_POWER,
) -> jax.Array:
    """cuda-convnet's `rnorm` on NHWC `x`, each channel on its own; returns the dtype of `x`:

        b = u / (k + (scale / size ** 2) * S) ** power

    with S the sum of u ** 2 over the size x size window centred on u, clipped at the border.

    bfloat16/float16 inputs are computed in float32, float64 inputs in float64. `size` is odd (the
    window is centred); the defaults are the original run's (SPATIAL_*).
    """
    if size < 1 or size % 2 == 0:
        raise ValueError(f"size must be a positive odd integer, got {size}")
    xf = x.astype(jnp.promote_types(x.dtype, jnp.float32))
    coefficient = float(scale) / size**2
    out = _response_norm(xf, _window_sum_spatial, size, float(k), coefficient, float(power))
    return out.astype(x.dtype)

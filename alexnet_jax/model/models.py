"""AlexNet in Flax Linen: the paper's two-tower net, its one-tower form, and torchvision's variant;
and the small CIFAR-10 net of the paper's Figure 1 (`cifar4`, an assumed reading; _CIFAR4_CONVS).

Layer tables are in docs/PAPER.md (sections 3.1-3.5 of the paper). Tensors are NHWC; the shape
comments are for the 227x227 input of the `paper` and `one_tower` variants (224 for `torchvision`).

The two towers of the paper are implemented as separate convolutions over channel slices followed by
a concatenation, not with `feature_group_count`, which is slow on XLA:CPU and in its GPU backward
pass (jax-ml/jax#13800). The kernel keeps the grouped layout (kh, kw, C_in / groups, C_out), so
parameter shapes and counts equal a grouped convolution's and PyTorch's `groups=2` weights convert
directly.

In the `paper` variant each tower normalizes (LRN) only its own kernel maps, as each of the paper's
GPUs did: conv1's 48 + 48 and conv2's 128 + 128 channels are normalized separately, so no window
crosses the tower boundary. Given a mesh with a "tower" axis (`AlexNet.mesh`, see parallel.py) the
towers run on their own devices: conv1, conv2, conv4, conv5, LRN and pooling per device, conv3 and
the FC layers exchanging activations across "tower" where the paper's GPUs did. It is the same
network with the same parameters: only where the numbers are computed changes.

Forward options (FORWARD_OPTIONS, each defaulting to the paper's text) switch on the original
cuda-convnet run's departures from the text (docs/PAPER.md: block 1's order, the same-map
normalization after LRN2, conv1's overhang at 224; `init_scheme="cuda_convnet"` its weight scales)
and the paper's ablations (tanh, no LRN, 2/2 pooling, the half-width nets of section 3.2);
OPTION_RULES refuse each where it means nothing.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax import lax
from jax.sharding import PartitionSpec as P

from alexnet_jax.core import rules
from alexnet_jax.model import parallel
from alexnet_jax.model.lrn import IMPLEMENTATIONS as LRN_IMPLEMENTATIONS
from alexnet_jax.model.lrn import default_implementation, local_response_norm, spatial_response_norm

VARIANTS = ("paper", "one_tower", "torchvision")  # the ImageNet nets (torch interop, convert)
# The small CIFAR-10 net of the paper's Figure 1 (section 3.1): not an AlexNet, so no weights to
# convert; see `cifar4_specs`.
SMALL_VARIANTS = ("cifar4",)
ALL_VARIANTS = (*VARIANTS, *SMALL_VARIANTS)
INITS = ("paper", "he", "cuda_convnet")
LRN_CONVENTIONS = ("paper", "cuda_convnet")
POOL_IMPLS = ("reduce_window", "slices", "auto")
DTYPES = ("float32", "bfloat16")  # computation dtypes; parameters are always float32
BLOCK1_ORDERS = ("conv_relu_lrn_pool", "conv_lrn_pool_relu")
CONV1_PADDINGS = ("symmetric", "overhang")
ACTIVATIONS = ("relu", "tanh")
POOLINGS = ((3, 2), (2, 2))  # (window, stride): overlapping, and section 3.4's comparison
WIDTHS = ("full", "half", "half_code")

# The kernels of conv1..conv5 in `paper` and `one_tower` by `width`: the paper's net; section 3.2's
# comparison net, one tower with half the kernels of each convolutional layer; and the half net of
# the original code (layers-145-half.cfg), which kept conv5 at 256 (docs/PAPER.md, Architecture).
_CONV_WIDTHS = {
    "full": (96, 256, 384, 384, 256),
    "half": (48, 128, 192, 192, 128),
    "half_code": (48, 128, 192, 192, 256),
}
# cuda-convnet pads nothing above and left of the image and runs conv1's last windows 3 pixels
# past its bottom and right edges (224 input, 55 outputs; docs/PAPER.md, departure 7).
_OVERHANG = (0, 3)

# The forward options added after runs and weights files were made, each with the value that gives
# the network they were made with: rundir.ADDED_FIELDS fills them into older run configs, and a
# weights file records one only where it differs from this (weights_io).
FORWARD_OPTIONS = {
    "block1_order": "conv_relu_lrn_pool",
    "spatial_norm2": False,
    "conv1_padding": "symmetric",
    "activation": "relu",
    "lrn": True,
    "pool_window": 3,
    "pool_stride": 2,
    "width": "full",
}


@dataclasses.dataclass(frozen=True)
class ConvSpec:
    """One convolution layer: name, output features, kernel size, stride, padding, groups.

    padding: zeros added on each side of both spatial axes, or (before, after) on both axes.
    """

    name: str
    features: int
    kernel: int
    stride: int
    padding: int | tuple[int, int]
    groups: int = 1


def padding_pair(padding: int | tuple[int, int]) -> tuple[int, int]:
    """(before, after) of a padding given as one number for both sides or as that pair."""
    return (padding, padding) if isinstance(padding, int) else (int(padding[0]), int(padding[1]))


def conv_specs(
    variant: str, input_size: int = 227, width: str = "full", conv1_padding: str = "symmetric"
) -> tuple[ConvSpec, ...]:
    """The five convolutions of a variant. conv1 pads so that its output is 55x55 at 224 or 227:
    by 2 on every side at 224, or cuda-convnet's overhang (`conv1_padding="overhang"`).
    `width` ("half", "half_code"; see _CONV_WIDTHS) narrows the convolutions of `one_tower`."""
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    if width not in WIDTHS:
        raise ValueError(f"width must be one of {WIDTHS}, got {width!r}")
    conv1_pad = 0 if input_size == 227 else 2
    if conv1_padding == "overhang":
        conv1_pad = _OVERHANG
    if variant == "torchvision":
        return (
            ConvSpec("conv1", 64, 11, 4, 2),
            ConvSpec("conv2", 192, 5, 1, 2),
            ConvSpec("conv3", 384, 3, 1, 1),
            ConvSpec("conv4", 256, 3, 1, 1),
            ConvSpec("conv5", 256, 3, 1, 1),
        )
    towers = 2 if variant == "paper" else 1
    w1, w2, w3, w4, w5 = _CONV_WIDTHS[width]
    return (
        ConvSpec("conv1", w1, 11, 4, conv1_pad),
        ConvSpec("conv2", w2, 5, 1, 2, groups=towers),
        ConvSpec("conv3", w3, 3, 1, 1),  # crosses the towers
        ConvSpec("conv4", w4, 3, 1, 1, groups=towers),
        ConvSpec("conv5", w5, 3, 1, 1, groups=towers),
    )


# Figure 1's "four-layer convolutional neural network" on CIFAR-10. The paper gives no layer table;
# ASSUMED here: cuda-convnet's example `layers-80sec.cfg` ("26% error on CIFAR-10 in 80 seconds",
# computerhistory/AlexNet-Source-Code example-layers/layers-80sec.cfg:11-92): conv1 5x5x32 pad 2
# (:11-22) -> max-pool 3/2 (:24-32) -> conv2 5x5x32 (:34-45) -> avg-pool 3/2 (:47-55) -> conv3
# 5x5x64 (:57-68) -> avg-pool 3/2 (:70-78) -> fc64 (:80-85) -> fc10 (:87-92), ReLU after every
# layer but fc10. Read as four hidden layers (three conv, fc64) plus the softmax layer.
CIFAR4_INPUT_SIZE = 32
_CIFAR4_CONVS = (
    ConvSpec("conv1", 32, 5, 1, 2),
    ConvSpec("conv2", 32, 5, 1, 2),
    ConvSpec("conv3", 64, 5, 1, 2),
)
_CIFAR4_POOLS = ("max", "avg", "avg")  # after conv1, conv2, conv3 (pool= in the file)
_CIFAR4_HIDDEN = 64  # fc64's outputs
# initW of layers-80sec.cfg (:20, :43, :66, :84, :91); initB is cuda-convnet's default 0.
_CIFAR4_STDS = {"conv1": 1e-4, "conv2": 0.01, "conv3": 0.01, "fc64": 0.1, "fc10": 0.1}


def cifar4_pool_size(size: int, window: int, stride: int) -> int:
    """cuda-convnet's pooled size: ceil((size - window) / stride) + 1 (layer.py:1164), so the last
    window may hang past the edge (32 -> 16 -> 8 -> 4 with 3/2)."""
    return -(-(size - window) // stride) + 1


def cifar4_pool(x: jax.Array, kind: str, window: int, stride: int, impl: str) -> jax.Array:
    """cuda-convnet's max or average pooling of `x` (NHWC), windows hanging past the bottom and
    right edges as it lets them; an average divides by the window's cells inside the image
    (cudaconv2's AvgPooler, region size clipped to the image: from its source, not in the
    mirror above; an assumption)."""
    _, h, w, _ = x.shape
    oh, ow = cifar4_pool_size(h, window, stride), cifar4_pool_size(w, window, stride)
    extra_h, extra_w = (oh - 1) * stride + window - h, (ow - 1) * stride + window - w
    pads = ((0, 0), (0, extra_h), (0, extra_w), (0, 0))
    if kind == "max":
        return max_pool(jnp.pad(x, pads, constant_values=-jnp.inf), impl, window, stride)
    dims, strides = (1, window, window, 1), (1, stride, stride, 1)
    sums = lax.reduce_window(jnp.pad(x, pads), 0.0, lax.add, dims, strides, "VALID")
    ones = jnp.pad(jnp.ones((1, h, w, 1), x.dtype), pads)
    counts = lax.reduce_window(ones, 0.0, lax.add, dims, strides, "VALID")
    return sums / counts


# The paper's bias constants (section 5): 1 in conv2, conv4, conv5, fc6, fc7 and 0 elsewhere.
_BIAS_ONE_LAYERS = frozenset({"conv2", "conv4", "conv5", "fc6", "fc7"})
# The original run's weight scales (layers-145.cfg `initW`; docs/PAPER.md, departure 4): 0.03 in
# conv3-5, the paper's 0.01 everywhere else.
_CUDA_CONVNET_STDS = {"conv3": 0.03, "conv4": 0.03, "conv5": 0.03}


def _initializers(init: str, layer: str, bias_one: float, variant: str = "paper"):
    """(kernel_init, bias_init) for a layer under the "paper", "cuda_convnet" or "he" scheme
    (cifar4: "cuda_convnet" is layers-80sec.cfg's initW, zero biases)."""
    if variant == "cifar4" and init == "cuda_convnet":
        return nn.initializers.normal(stddev=_CIFAR4_STDS[layer]), nn.initializers.zeros
    if init in ("paper", "cuda_convnet"):
        std = _CUDA_CONVNET_STDS.get(layer, 0.01) if init == "cuda_convnet" else 0.01
        bias = bias_one if layer in _BIAS_ONE_LAYERS else 0.0
        return nn.initializers.normal(stddev=std), nn.initializers.constant(bias)
    if init == "he":
        return nn.initializers.he_normal(), nn.initializers.zeros
    raise ValueError(f"init must be one of {INITS}, got {init!r}")


def _conv_groups(x: jax.Array, kernel: jax.Array, groups: int, stride: int, pads: tuple[int, int]):
    """One convolution per group of channels, concatenated (NHWC, kernel HWIO, no bias); `pads`:
    (before, after) zeros on both spatial axes."""
    outs = [
        lax.conv_general_dilated(
            xg,
            kg,
            window_strides=(stride, stride),
            padding=[pads] * 2,
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
        )
        for xg, kg in zip(
            jnp.split(x, groups, axis=-1), jnp.split(kernel, groups, axis=-1), strict=True
        )
    ]
    return outs[0] if groups == 1 else jnp.concatenate(outs, axis=-1)


def _split_apply(fn, x: jax.Array, groups: int) -> jax.Array:
    """`fn` applied to each of `groups` equal channel slices of `x` separately, concatenated."""
    if groups == 1:
        return fn(x)
    return jnp.concatenate([fn(xg) for xg in jnp.split(x, groups, axis=-1)], axis=-1)


class GroupedConv(nn.Module):
    """A convolution whose input and output channels are split into `groups` independent towers.

    Equals `nn.Conv(feature_group_count=groups)` (same kernel shape) but runs one convolution per
    tower on channel slices and concatenates, which XLA compiles to much faster code.

    With a `mesh` that has a "tower" axis, each device computes its tower's output channels from
    its slice of the kernel, and the output stays split by tower. A grouped conv's input arrives
    split by tower and each device convolves its own groups (no communication); an ungrouped one
    sees every input channel: conv1's image is replicated over "tower" (`input_split=False`),
    conv3 gathers the towers' channels first (the paper's cross-GPU connection).
    """

    features: int
    kernel_size: int
    stride: int = 1
    padding: int | tuple[int, int] = 0  # on each side, or (before, after), of both spatial axes
    groups: int = 1
    dtype: Any = jnp.float32
    kernel_init: Any = nn.initializers.lecun_normal()
    bias_init: Any = nn.initializers.zeros
    mesh: Any = None  # a jax.sharding.Mesh with a "tower" axis: one tower per device.
    input_split: bool = True  # with `mesh`: the input's channels arrive split over "tower".

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        in_features = x.shape[-1]
        if in_features % self.groups or self.features % self.groups:
            raise ValueError(
                f"channels ({in_features} in, {self.features} out) must divide into "
                f"{self.groups} groups"
            )
        k = self.kernel_size
        kernel = self.param(
            "kernel", self.kernel_init, (k, k, in_features // self.groups, self.features)
        )
        bias = self.param("bias", self.bias_init, (self.features,))
        x, kernel, bias = x.astype(self.dtype), kernel.astype(self.dtype), bias.astype(self.dtype)
        pads = padding_pair(self.padding)
        conv = functools.partial(_conv_groups, stride=self.stride, pads=pads)
        if self.mesh is None or self.is_initializing():
            return conv(x, kernel, self.groups) + bias
        towers = parallel.tower_size(self.mesh)
        if self.groups > 1 and (self.groups % towers or not self.input_split):
            raise ValueError(f"{self.groups} groups cannot be split over {towers} tower devices")
        local_groups = self.groups // towers if self.groups > 1 else 1
        gather = self.input_split and self.groups == 1

        def per_device(x, kernel, bias):  # this device's tower: x (B/D, H, W, C or C/towers)
            x = parallel.all_gather_towers(x) if gather else x
            return conv(x, kernel, local_groups) + bias

        x_spec = parallel.channel_spec(4) if self.input_split else parallel.batch_spec(4)
        in_specs = (x_spec, parallel.out_feature_spec(4), parallel.out_feature_spec(1))
        return parallel.tower_map(per_device, self.mesh, in_specs, parallel.channel_spec(4))(
            x, kernel, bias
        )


class TowerDense(nn.Module):
    """`nn.Dense` (the same parameters and initialization) with its neurons split over "tower".

    The input arrives split by tower on its last axis (any rank: it is flattened after the
    gather). Each device gathers the whole input, computes its tower's share of the neurons and
    keeps its share of the output: the paper's FC layers, half on each GPU, every neuron seeing all
    of the previous layer. A layer whose outputs do not divide by the towers is computed whole on
    every device (its output then replicated over "tower").
    """

    features: int
    mesh: Any
    dtype: Any = jnp.float32
    kernel_init: Any = nn.initializers.lecun_normal()
    bias_init: Any = nn.initializers.zeros

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        in_features = int(np.prod(x.shape[1:]))
        kernel = self.param("kernel", self.kernel_init, (in_features, self.features))
        bias = self.param("bias", self.bias_init, (self.features,))
        x, kernel, bias = x.astype(self.dtype), kernel.astype(self.dtype), bias.astype(self.dtype)
        dense = lambda x, k, b: lax.dot_general(x, k, (((1,), (0,)), ((), ()))) + b
        if self.is_initializing():
            return dense(x.reshape((x.shape[0], -1)), kernel, bias)
        split = parallel.splits_over_towers(self.features, parallel.tower_size(self.mesh))
        # An unsplit layer needs the same whole input on each tower device: an invariant gather.
        gather = parallel.all_gather_towers if split else parallel.all_gather_towers_invariant

        def per_device(x, kernel, bias):  # x (B/D, ..., C/towers)
            x = gather(x)
            return dense(x.reshape((x.shape[0], -1)), kernel, bias)

        param_spec = parallel.out_feature_spec if split else (lambda ndim: P())
        in_specs = (parallel.channel_spec(x.ndim), param_spec(2), param_spec(1))
        out_spec = parallel.channel_spec(2) if split else parallel.batch_spec(2)
        return parallel.tower_map(per_device, self.mesh, in_specs, out_spec)(x, kernel, bias)


def _window_slices(x: jax.Array, window: int, stride: int) -> list[jax.Array]:
    """The window*window strided slices of NHWC `x`, in row-major window order, VALID padding."""
    _, h, w, _ = x.shape
    oh, ow = (h - window) // stride + 1, (w - window) // stride + 1
    return [
        x[:, i : i + stride * (oh - 1) + 1 : stride, j : j + stride * (ow - 1) + 1 : stride]
        for i in range(window)
        for j in range(window)
    ]


def _window_slices_by_reshape(x: jax.Array, window: int, stride: int) -> list[jax.Array]:
    """The same slices as `_window_slices`, taken from a (B, H/s, s, W/s, s, C) view of `x`
    with unit-stride slices. Their transpose (reverse mode) is then unit-stride pads that XLA
    fuses into one loop, where strided slices transpose into interior pads it keeps separate."""
    b, h, w, c = x.shape
    oh, ow = (h - window) // stride + 1, (w - window) // stride + 1
    extra = (window - 1) // stride
    hp, wp = stride * (oh + extra), stride * (ow + extra)  # rows/cols the windows reach, rounded
    x = x[:, :hp, :wp]
    x = jnp.pad(x, ((0, 0), (0, hp - x.shape[1]), (0, wp - x.shape[2]), (0, 0)))
    x = x.reshape(b, hp // stride, stride, wp // stride, stride, c)
    return [
        x[:, i // stride : i // stride + oh, i % stride, j // stride : j // stride + ow, j % stride]
        for i in range(window)
        for j in range(window)
    ]


@functools.partial(jax.custom_jvp, nondiff_argnums=(1, 2))
def _max_pool_slices(x: jax.Array, window: int, stride: int) -> jax.Array:
    return functools.reduce(jnp.maximum, _window_slices(x, window, stride))


@_max_pool_slices.defjvp
def _max_pool_slices_jvp(window, stride, primals, tangents):
    """Each output takes the tangent of the first maximum of its window (row-major order): the
    element select-and-scatter gives the gradient to, ties included. Reverse mode transposes this
    into a sum of pads (5x faster than XLA:CPU's select-and-scatter)."""
    (x,), (dx,) = primals, tangents
    xs = _window_slices(x, window, stride)
    out = functools.reduce(jnp.maximum, xs)
    index_dtype = jnp.int8 if len(xs) <= 127 else jnp.int32
    first = jnp.full(out.shape, len(xs) - 1, index_dtype)  # (B, OH, OW, C): first argmax
    for k in range(len(xs) - 2, -1, -1):
        first = jnp.where(xs[k] == out, jnp.asarray(k, index_dtype), first)
    dout = jnp.zeros_like(out)
    for k, dxk in enumerate(_window_slices_by_reshape(dx, window, stride)):
        dout = jnp.where(first == k, dxk, dout)
    return out, dout


def default_pool_implementation(backend: str | None = None) -> str:
    """What pool_impl "auto" runs on `backend` (a `jax.default_backend()` name; None: this
    process's): "slices" on CPU (measured in benchmarks/RESULTS.md), "reduce_window" elsewhere."""
    backend = backend or jax.default_backend()
    return "slices" if backend == "cpu" else "reduce_window"


def auto_implementations(backend: str) -> dict[str, str]:
    """The config's lrn_impl and pool_impl as "auto" resolves them on `backend` ("cpu", "gpu",
    "tpu"). "auto" is resolved at trace time from the backend of the tracing process, so lowering
    for another platform (jax.export on a CPU-only machine) must pin these to lower what a run
    there would run."""
    return {
        "lrn_impl": default_implementation(backend),
        "pool_impl": default_pool_implementation(backend),
    }


def max_pool(x: jax.Array, impl: str = "reduce_window", window: int = 3, stride: int = 2):
    """Max-pooling, VALID padding: overlapping with the paper's window 3 and stride 2.

    "reduce_window" is XLA's pooling; its gradient is select-and-scatter, which has no deterministic
    GPU implementation and is slow on XLA:CPU. "slices" takes the maximum of window*window strided
    slices: the same forward, and a deterministic gradient equal to reduce_window's (the first
    maximum of each window gets it, ties included). "auto" is "slices" on CPU (measured in
    benchmarks/RESULTS.md), "reduce_window" elsewhere.
    """
    if impl == "auto":
        impl = default_pool_implementation()
    if impl == "reduce_window":
        return nn.max_pool(x, (window, window), strides=(stride, stride), padding="VALID")
    if impl != "slices":
        raise ValueError(f"pool impl must be one of {POOL_IMPLS}, got {impl!r}")
    return _max_pool_slices(x, window, stride)


def _adaptive_avg_matrix(in_size: int, out_size: int) -> np.ndarray:
    """(out, in) averaging matrix of PyTorch's adaptive pooling.

    Output i averages inputs [floor(i * in / out), ceil((i + 1) * in / out)).
    """
    m = np.zeros((out_size, in_size), np.float32)
    for i in range(out_size):
        start = (i * in_size) // out_size
        end = -((-(i + 1) * in_size) // out_size)
        m[i, start:end] = 1.0 / (end - start)
    return m


def adaptive_avg_pool(x: jax.Array, out_size: int) -> jax.Array:
    """torch.nn.AdaptiveAvgPool2d for NHWC input (the identity when already out_size square)."""
    _, h, w, _ = x.shape
    if (h, w) == (out_size, out_size):
        return x
    mh = jnp.asarray(_adaptive_avg_matrix(h, out_size), x.dtype)
    mw = jnp.asarray(_adaptive_avg_matrix(w, out_size), x.dtype)
    return jnp.einsum("ih,jw,nhwc->nijc", mh, mw, x)


class AlexNet(nn.Module):
    """AlexNet. Call as `model.apply(variables, images, train=..., rngs={'dropout': key})`.

    Images are NHWC (B, input_size, input_size, 3); the output is (B, num_classes) float32 logits.
    """

    variant: str = "paper"  # "paper" (two towers), "one_tower", "torchvision" or "cifar4".
    num_classes: int = 1000
    input_size: int = 227  # 227 (conv1 unpadded) or 224 (conv1 padded by 2); torchvision: any.
    lrn_convention: str = "paper"  # "paper": alpha as written; "cuda_convnet": alpha / n.
    lrn_impl: str = "auto"  # see alexnet_jax.model.lrn.IMPLEMENTATIONS; "auto" picks by backend.
    pool_impl: str = "auto"  # max_pool(): default_pool_implementation() of the backend.
    init_scheme: str = "paper"  # "paper": N(0, 0.01), the paper's biases; "he": He-normal, 0 bias;
    # "cuda_convnet": the paper's but N(0, 0.03) in conv3-5, as the original run.
    bias_one: float = 1.0  # the paper's "1" bias constant (Caffe's replication used 0.1).
    dropout_rate: float = 0.5  # 0: no dropout.
    dtype: Any = jnp.float32  # computation dtype; parameters are always float32.
    # The forward options (FORWARD_OPTIONS; the rules in OPTION_RULES say where each applies):
    block1_order: str = "conv_relu_lrn_pool"  # "conv_lrn_pool_relu": LRN on conv1's linear output.
    spatial_norm2: bool = False  # cuda-convnet's 5x5 same-map normalization after the 2nd LRN.
    conv1_padding: str = "symmetric"  # at 224: 2 on every side; "overhang": cuda-convnet's (0, 3).
    activation: str = "relu"  # "relu" or "tanh" (section 3.1), wherever the net has a ReLU.
    lrn: bool = True  # False: no LRN layers (section 3.3's comparison).
    pool_window: int = 3  # max-pool window and stride: 3, 2 overlapping; 2, 2 not (section 3.4).
    pool_stride: int = 2
    width: str = "full"  # one_tower: "half" (section 3.2) or "half_code" (layers-145-half.cfg).
    # A jax.sharding.Mesh with a "tower" axis (sharding.tower_mesh): the `paper` variant's towers
    # run on their own devices. None: everything on whichever devices the caller's jit uses.
    mesh: Any = None

    def _conv(self, spec: ConvSpec, x: jax.Array) -> jax.Array:
        kernel_init, bias_init = _initializers(
            self.init_scheme, spec.name, self.bias_one, self.variant
        )
        conv = GroupedConv(
            spec.features,
            spec.kernel,
            spec.stride,
            spec.padding,
            spec.groups,
            dtype=self.dtype,
            kernel_init=kernel_init,
            bias_init=bias_init,
            mesh=self.mesh,
            input_split=spec.name != "conv1",
            name=spec.name,
        )
        return conv(x)

    def _dense(self, name: str, features: int, x: jax.Array) -> jax.Array:
        kernel_init, bias_init = _initializers(self.init_scheme, name, self.bias_one, self.variant)
        if self.mesh is not None:
            dense = TowerDense(
                features,
                self.mesh,
                dtype=self.dtype,
                kernel_init=kernel_init,
                bias_init=bias_init,
                name=name,
            )
        else:
            dense = nn.Dense(
                features, dtype=self.dtype, kernel_init=kernel_init, bias_init=bias_init, name=name
            )
        return dense(x)

    def _lrn(self, x: jax.Array) -> jax.Array:
        if self.lrn_convention not in LRN_CONVENTIONS:
            raise ValueError(
                f"lrn_convention must be one of {LRN_CONVENTIONS}, got {self.lrn_convention!r}"
            )
        divide = self.lrn_convention == "cuda_convnet"
        impl = default_implementation() if self.lrn_impl == "auto" else self.lrn_impl
        return local_response_norm(x, divide_alpha_by_size=divide, impl=impl)

    def _act(self, x: jax.Array) -> jax.Array:
        return nn.relu(x) if self.activation == "relu" else jnp.tanh(x)

    def _pool(self, x: jax.Array) -> jax.Array:
        return max_pool(x, self.pool_impl, self.pool_window, self.pool_stride)

    def _norm(self, x: jax.Array) -> jax.Array:
        return self._lrn(x) if self.lrn else x

    def _block1(self, x: jax.Array) -> jax.Array:
        """conv1's output -> activation, LRN, max-pool (the paper); or LRN of the linear output,
        max-pool, activation (the original code; docs/PAPER.md, departure 2)."""
        if self.block1_order == "conv_lrn_pool_relu":
            return self._act(self._pool(self._norm(x)))
        return self._pool(self._norm(self._act(x)))

    def _block2(self, x: jax.Array) -> jax.Array:
        """conv2's output -> activation, LRN, [same-map normalization], max-pool."""
        x = self._norm(self._act(x))
        return self._pool(spatial_response_norm(x) if self.spatial_norm2 else x)

    def _per_tower(self, fn, x: jax.Array) -> jax.Array:
        """`fn` (LRN, pooling) on each tower's channels separately; on the tower's own devices
        when the mesh has a "tower" axis. One tower for `one_tower`."""
        towers = 2 if self.variant == "paper" else 1
        if self.mesh is None or self.is_initializing():
            return _split_apply(fn, x, towers)
        local_towers = towers // parallel.tower_size(self.mesh)
        spec = parallel.channel_spec(x.ndim)
        return parallel.tower_map(
            lambda y: _split_apply(fn, y, local_towers), self.mesh, spec, spec
        )(x)

    def _gather_logits(self, x: jax.Array) -> jax.Array:
        """fc8's tower-split outputs -> all logits on every device (identity off-mesh)."""
        if self.mesh is None or self.is_initializing():
            return x
        if not parallel.splits_over_towers(self.num_classes, parallel.tower_size(self.mesh)):
            return x
        return parallel.gather_towers(x, self.mesh)

    def _cifar4(self, x: jax.Array) -> jax.Array:
        """Figure 1's CIFAR-10 net (layers-80sec.cfg; see _CIFAR4_CONVS), `activation` wherever
        the file has a ReLU, `pool_window`/`pool_stride` at its three poolings."""
        x = x.astype(self.dtype)  # (B, 32, 32, 3)
        for spec, kind in zip(_CIFAR4_CONVS, _CIFAR4_POOLS, strict=True):
            x = self._act(self._conv(spec, x))  # (B, 32, 32, 32), (B, 16, 16, 32), (B, 8, 8, 64)
            x = cifar4_pool(x, kind, self.pool_window, self.pool_stride, self.pool_impl)
        x = x.reshape((x.shape[0], -1))  # (B, 4 * 4 * 64)
        x = self._act(self._dense("fc64", _CIFAR4_HIDDEN, x))  # (B, 64)
        return self._dense("fc10", self.num_classes, x).astype(jnp.float32)  # (B, num_classes)

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        if self.num_classes < 1:
            raise ValueError(f"num_classes must be a positive integer, got {self.num_classes}")
        if self.mesh is not None and self.variant != "paper":
            raise ValueError(
                f"a tower mesh needs variant 'paper' (two towers), got {self.variant!r}"
            )
        rules.check(ml_collections.ConfigDict(model_fields(self)), OPTION_RULES)
        if self.variant == "cifar4":
            return self._cifar4(x)
        specs = conv_specs(self.variant, self.input_size, self.width, self.conv1_padding)
        c1, c2, c3, c4, c5 = specs
        act, pool = self._act, self._pool
        dropout = nn.Dropout(self.dropout_rate, deterministic=not train)
        x = x.astype(self.dtype)  # (B, 227, 227, 3)
        if self.variant == "torchvision":  # (B, 224, 224, 3)
            x = pool(act(self._conv(c1, x)))  # (B, 55, 55, 64) -> (B, 27, 27, 64)
            x = pool(act(self._conv(c2, x)))  # (B, 27, 27, 192) -> (B, 13, 13, 192)
            x = act(self._conv(c3, x))  # (B, 13, 13, 384)
            x = act(self._conv(c4, x))  # (B, 13, 13, 256)
            x = pool(act(self._conv(c5, x)))  # (B, 13, 13, 256) -> (B, 6, 6, 256)
            x = adaptive_avg_pool(x, 6)  # (B, 6, 6, 256)
            x = x.reshape((x.shape[0], -1))  # (B, 9216)
            x = act(self._dense("fc6", 4096, dropout(x)))  # (B, 4096)
            x = act(self._dense("fc7", 4096, dropout(x)))  # (B, 4096)
        else:  # paper: LRN per tower; with a tower mesh, one tower per device up to conv5
            x = self._per_tower(self._block1, self._conv(c1, x))  # (B, 55, 55, 96) -> 27x27x96
            x = self._per_tower(self._block2, self._conv(c2, x))  # (B, 27, 27, 256) -> 13x13x256
            x = act(self._conv(c3, x))  # (B, 13, 13, 384): sees both towers
            x = act(self._conv(c4, x))  # (B, 13, 13, 384)
            x = pool(act(self._conv(c5, x)))  # (B, 13, 13, 256) -> (B, 6, 6, 256)
            if self.mesh is None:  # (a TowerDense flattens after gathering the towers)
                x = x.reshape((x.shape[0], -1))  # (B, 9216): follows the pool5 grid and width
            x = dropout(act(self._dense("fc6", 4096, x)))  # (B, 4096)
            x = dropout(act(self._dense("fc7", 4096, x)))  # (B, 4096)
        x = self._gather_logits(self._dense("fc8", self.num_classes, x))  # (B, num_classes)
        return x.astype(jnp.float32)


def _conv_out(size: int, spec: ConvSpec) -> int:
    return (size + sum(padding_pair(spec.padding)) - spec.kernel) // spec.stride + 1


def layer_macs(
    variant: str, input_size: int = 227, num_classes: int = 1000, **options: Any
) -> dict[str, int]:
    """Forward multiply-accumulates per image of each conv and FC layer (LRN/pool/ReLU excluded).

    options: forward options (FORWARD_OPTIONS) that change the layers' shapes: width,
      conv1_padding, pool_window, pool_stride; the others change no count.
    """
    options = {**FORWARD_OPTIONS, **options}
    if variant == "cifar4":
        return _cifar4_macs(num_classes, options["pool_window"], options["pool_stride"])
    specs = conv_specs(variant, input_size, options["width"], options["conv1_padding"])
    window, stride = options["pool_window"], options["pool_stride"]
    size, in_ch, macs = input_size, 3, {}
    pool_after = {"conv1", "conv2", "conv5"}
    for spec in specs:
        size = _conv_out(size, spec)
        macs[spec.name] = (
            size * size * spec.features * spec.kernel * spec.kernel * in_ch // spec.groups
        )
        in_ch = spec.features
        if spec.name in pool_after:
            size = (size - window) // stride + 1
    grid = 6 if variant == "torchvision" else size  # torchvision: adaptive pooling to 6x6
    fc_in = grid * grid * in_ch
    for name, out in (("fc6", 4096), ("fc7", 4096), ("fc8", num_classes)):
        macs[name] = fc_in * out
        fc_in = out
    return macs


def _cifar4_macs(num_classes: int, window: int, stride: int) -> dict[str, int]:
    size, in_ch, macs = CIFAR4_INPUT_SIZE, 3, {}
    for spec in _CIFAR4_CONVS:  # "same" 5x5 convolutions, each followed by a pooling
        macs[spec.name] = size * size * spec.features * spec.kernel * spec.kernel * in_ch
        size, in_ch = cifar4_pool_size(size, window, stride), spec.features
    macs["fc64"] = size * size * in_ch * _CIFAR4_HIDDEN
    macs["fc10"] = _CIFAR4_HIDDEN * num_classes
    return macs


def train_flops_per_image(
    variant: str, input_size: int = 227, num_classes: int = 1000, **options: Any
) -> float:
    """Training FLOPs per image: 3x the forward's 2*MACs (forward, input grad, weight grad)."""
    return 3 * 2 * float(sum(layer_macs(variant, input_size, num_classes, **options).values()))


def param_count(params: Any) -> int:
    """Number of scalars in a parameter pytree."""
    return int(sum(np.prod(p.shape) for p in jax.tree_util.tree_leaves(params)))


# The config fields that define the network, one per AlexNet attribute (all but `mesh`, which is
# where it runs): create_model, the tools that rebuild a run's model and imported weights' configs
# read exactly these.
MODEL_FIELDS = (
    "variant",
    "num_classes",
    "input_size",
    "lrn_convention",
    "lrn_impl",
    "pool_impl",
    "init_scheme",
    "bias_one",
    "dropout_rate",
    "dtype",
    *FORWARD_OPTIONS,
)


def _input_size_ok(c: Any) -> bool:
    if c.variant == "cifar4":
        return c.input_size == CIFAR4_INPUT_SIZE
    if c.variant == "torchvision":
        return rules.is_int(c.input_size) and c.input_size >= 63
    return c.input_size in (224, 227)


def _input_size_requirement(c: Any) -> str:
    if c.variant == "cifar4":
        return f"{CIFAR4_INPUT_SIZE} for variant 'cifar4' (CIFAR-10's whole image)"
    if c.variant == "torchvision":
        return ">= 63"
    return f"227 (unpadded conv1) or 224 (padded) for variant {c.variant!r}"


def _has_lrn(c: Any) -> bool:
    return c.variant in ("paper", "one_tower") and c.lrn is True


def _is_bool(field: str) -> rules.Rule:
    return rules.Rule(field, "True or False", lambda c: isinstance(c[field], bool))


# The forward options' rules (part of RULES; AlexNet checks them too): each option where it means
# something, one message where it does not.
OPTION_RULES = (
    rules.choice("block1_order", BLOCK1_ORDERS),
    rules.choice("activation", ACTIVATIONS),
    rules.choice("conv1_padding", CONV1_PADDINGS),
    rules.choice("width", WIDTHS),
    _is_bool("lrn"),
    _is_bool("spatial_norm2"),
    rules.Rule(
        "pool_window",
        "3 (overlapping) or 2 (not overlapping, section 3.4's comparison)",
        lambda c: rules.is_int(c.pool_window) and c.pool_window in (3, 2),
    ),
    rules.Rule(
        "pool_stride",
        "2 (both poolings of section 3.4)",
        lambda c: rules.is_int(c.pool_stride) and (c.pool_window, c.pool_stride) in POOLINGS,
    ),
    rules.Rule(
        "lrn",
        lambda c: f"True for variant {c.variant!r}, which has no LRN to remove",
        lambda c: c.lrn or c.variant in ("paper", "one_tower"),
    ),
    rules.Rule(
        "block1_order",
        "'conv_relu_lrn_pool' without LRN (variant 'torchvision' or config.lrn False): the "
        "order only moves the LRN",
        lambda c: c.block1_order == "conv_relu_lrn_pool" or _has_lrn(c),
    ),
    rules.Rule(
        "spatial_norm2",
        "False without LRN (variant 'torchvision' or config.lrn False): it follows the second LRN",
        lambda c: not c.spatial_norm2 or _has_lrn(c),
    ),
    rules.Rule(
        "conv1_padding",
        "'symmetric' unless config.input_size is 224 and config.variant 'paper' or 'one_tower' "
        "(the overhang turns 224 into conv1's 55 outputs)",
        lambda c: (
            c.conv1_padding == "symmetric"
            or (c.input_size == 224 and c.variant in ("paper", "one_tower"))
        ),
    ),
    rules.Rule(
        "width",
        "'full' unless config.variant is 'one_tower' (section 3.2's half nets have one tower)",
        lambda c: c.width == "full" or c.variant == "one_tower",
    ),
)

# The model fields' rules (part of config_lib.RULES); checked in this order.
RULES = (
    rules.choice("variant", ALL_VARIANTS),
    rules.choice("init_scheme", INITS),
    rules.choice("lrn_convention", LRN_CONVENTIONS),
    rules.choice("lrn_impl", ("auto", *LRN_IMPLEMENTATIONS)),
    rules.choice("pool_impl", POOL_IMPLS),
    rules.choice("dtype", DTYPES),
    rules.Rule("input_size", _input_size_requirement, _input_size_ok),
    rules.Rule(
        "dropout_rate",
        "in [0, 1)",
        lambda c: rules.is_number(c.dropout_rate) and 0.0 <= c.dropout_rate < 1.0,
    ),
    *OPTION_RULES,
    rules.Rule(
        "dropout_rate",
        "0.0 for variant 'cifar4' (layers-80sec.cfg has no dropout)",
        lambda c: c.variant != "cifar4" or c.dropout_rate == 0.0,
    ),
    rules.Rule(
        "init_scheme",
        "'cuda_convnet' (layers-80sec.cfg's initW) or 'he' for variant 'cifar4' (the paper's "
        "scheme names AlexNet's layers)",
        lambda c: c.variant != "cifar4" or c.init_scheme in ("cuda_convnet", "he"),
    ),
)


def create_model(config: Any, **overrides: Any) -> AlexNet:
    """An AlexNet from the model fields of a config (MODEL_FIELDS; see configs/default.py)."""
    fields: dict[str, Any] = {name: config[name] for name in MODEL_FIELDS}
    fields["dtype"] = jnp.dtype(fields["dtype"])
    fields.update(overrides)
    return AlexNet(**fields)


def model_fields(model: AlexNet) -> dict[str, Any]:
    """The config fields (MODEL_FIELDS) that `create_model` turns back into `model`."""
    fields = {name: getattr(model, name) for name in MODEL_FIELDS}
    fields["dtype"] = jnp.dtype(fields["dtype"]).name
    return fields


def default_input_size(variant: str) -> int:
    """The input size each variant was published with."""
    if variant == "cifar4":
        return CIFAR4_INPUT_SIZE
    return 224 if variant == "torchvision" else 227


__all__: Sequence[str] = (
    "ALL_VARIANTS",
    "MODEL_FIELDS",
    "VARIANTS",
    "AlexNet",
    "GroupedConv",
    "TowerDense",
    "adaptive_avg_pool",
    "auto_implementations",
    "conv_specs",
    "create_model",
    "default_input_size",
    "default_pool_implementation",
    "layer_macs",
    "max_pool",
    "model_fields",
    "param_count",
    "train_flops_per_image",
)

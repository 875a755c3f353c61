"""AlexNet in Flax Linen: the paper's two-tower net, its one-tower form, and torchvision's variant.

Layer tables are in ../shared/PAPER.md (sections 3.1-3.5 of the paper). Tensors are NHWC; the shape
comments are for the 227x227 input of the `paper` and `one_tower` variants (224 for `torchvision`).

The two towers of the paper are implemented as separate convolutions over channel slices followed by
a concatenation, not with `feature_group_count`, which is slow on XLA:CPU and in its GPU backward
pass (jax-ml/jax#13800). The kernel keeps the grouped layout (kh, kw, C_in / groups, C_out), so
parameter shapes and counts equal a grouped convolution's and PyTorch's `groups=2` weights convert
directly.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from alexnet_jax.lrn import LocalResponseNorm

VARIANTS = ("paper", "one_tower", "torchvision")
INITS = ("paper", "he")
LRN_CONVENTIONS = ("paper", "cuda_convnet")
POOL_IMPLS = ("reduce_window", "slices")


@dataclasses.dataclass(frozen=True)
class ConvSpec:
    """One convolution layer: name, output features, kernel size, stride, padding, groups."""

    name: str
    features: int
    kernel: int
    stride: int
    padding: int
    groups: int = 1


def conv_specs(variant: str, input_size: int = 227) -> tuple[ConvSpec, ...]:
    """The five convolutions of a variant. conv1 pads so that its output is 55x55 at 224 or 227."""
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    conv1_pad = 0 if input_size == 227 else 2
    if variant == "torchvision":
        return (
            ConvSpec("conv1", 64, 11, 4, 2),
            ConvSpec("conv2", 192, 5, 1, 2),
            ConvSpec("conv3", 384, 3, 1, 1),
            ConvSpec("conv4", 256, 3, 1, 1),
            ConvSpec("conv5", 256, 3, 1, 1),
        )
    towers = 2 if variant == "paper" else 1
    return (
        ConvSpec("conv1", 96, 11, 4, conv1_pad),
        ConvSpec("conv2", 256, 5, 1, 2, groups=towers),
        ConvSpec("conv3", 384, 3, 1, 1),  # crosses the towers
        ConvSpec("conv4", 384, 3, 1, 1, groups=towers),
        ConvSpec("conv5", 256, 3, 1, 1, groups=towers),
    )


# The paper's bias constants (section 5): 1 in conv2, conv4, conv5, fc6, fc7 and 0 elsewhere.
_BIAS_ONE_LAYERS = frozenset({"conv2", "conv4", "conv5", "fc6", "fc7"})


def _initializers(init: str, layer: str, bias_one: float):
    """(kernel_init, bias_init) for a layer under the "paper" or "he" scheme."""
    if init == "paper":
        bias = bias_one if layer in _BIAS_ONE_LAYERS else 0.0
        return nn.initializers.normal(stddev=0.01), nn.initializers.constant(bias)
    if init == "he":
        return nn.initializers.he_normal(), nn.initializers.zeros
    raise ValueError(f"init must be one of {INITS}, got {init!r}")


class GroupedConv(nn.Module):
    """A convolution whose input and output channels are split into `groups` independent towers.

    Equals `nn.Conv(feature_group_count=groups)` (same kernel shape) but runs one convolution per
    tower on channel slices and concatenates, which XLA compiles to much faster code.
    """

    features: int
    kernel_size: int
    stride: int = 1
    padding: int = 0
    groups: int = 1
    dtype: Any = jnp.float32
    kernel_init: Any = nn.initializers.lecun_normal()
    bias_init: Any = nn.initializers.zeros

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
        x_groups = jnp.split(x, self.groups, axis=-1)
        k_groups = jnp.split(kernel, self.groups, axis=-1)
        outs = [
            lax.conv_general_dilated(
                xg,
                kg,
                window_strides=(self.stride, self.stride),
                padding=[(self.padding, self.padding)] * 2,
                dimension_numbers=("NHWC", "HWIO", "NHWC"),
            )
            for xg, kg in zip(x_groups, k_groups, strict=True)
        ]
        y = outs[0] if self.groups == 1 else jnp.concatenate(outs, axis=-1)
        return y + bias


def max_pool(x: jax.Array, impl: str = "reduce_window", window: int = 3, stride: int = 2):
    """Overlapping max-pooling, VALID padding.

    "reduce_window" is XLA's pooling; its gradient is select-and-scatter, which has no deterministic
    GPU implementation. "slices" takes the maximum of window*window strided slices: the same
    forward, a deterministic gradient (equal to reduce_window's wherever the window has no ties).
    """
    if impl == "reduce_window":
        return nn.max_pool(x, (window, window), strides=(stride, stride), padding="VALID")
    if impl != "slices":
        raise ValueError(f"pool impl must be one of {POOL_IMPLS}, got {impl!r}")
    _, h, w, _ = x.shape
    oh, ow = (h - window) // stride + 1, (w - window) // stride + 1
    out = None
    for i in range(window):
        for j in range(window):
            s = x[:, i : i + stride * (oh - 1) + 1 : stride, j : j + stride * (ow - 1) + 1 : stride]
            out = s if out is None else jnp.maximum(out, s)
    return out


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

    variant: str = "paper"  # "paper" (two towers), "one_tower" or "torchvision".
    num_classes: int = 1000
    input_size: int = 227  # 227 (conv1 unpadded) or 224 (conv1 padded by 2); torchvision: any.
    lrn_convention: str = "paper"  # "paper": alpha as written; "cuda_convnet": alpha / n.
    lrn_impl: str = "auto"  # see alexnet_jax.lrn.IMPLEMENTATIONS; "auto" picks by backend.
    pool_impl: str = "reduce_window"  # "slices" gives a deterministic GPU gradient.
    init_scheme: str = "paper"  # "paper": N(0, 0.01), the paper's biases; "he": He-normal, 0 bias.
    bias_one: float = 1.0  # the paper's "1" bias constant (Caffe's replication used 0.1).
    dropout_rate: float = 0.5
    dtype: Any = jnp.float32  # computation dtype; parameters are always float32.

    def _conv(self, spec: ConvSpec, x: jax.Array) -> jax.Array:
        kernel_init, bias_init = _initializers(self.init_scheme, spec.name, self.bias_one)
        conv = GroupedConv(
            spec.features,
            spec.kernel,
            spec.stride,
            spec.padding,
            spec.groups,
            dtype=self.dtype,
            kernel_init=kernel_init,
            bias_init=bias_init,
            name=spec.name,
        )
        return nn.relu(conv(x))

    def _dense(self, name: str, features: int, x: jax.Array) -> jax.Array:
        kernel_init, bias_init = _initializers(self.init_scheme, name, self.bias_one)
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
        return LocalResponseNorm(divide_alpha_by_size=divide, impl=self.lrn_impl)(x)

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        if self.num_classes < 1:
            raise ValueError(f"num_classes must be a positive integer, got {self.num_classes}")
        c1, c2, c3, c4, c5 = conv_specs(self.variant, self.input_size)
        pool = lambda y: max_pool(y, self.pool_impl)
        dropout = nn.Dropout(self.dropout_rate, deterministic=not train)
        x = x.astype(self.dtype)  # (B, 227, 227, 3)
        if self.variant == "torchvision":  # (B, 224, 224, 3)
            x = pool(self._conv(c1, x))  # (B, 55, 55, 64) -> (B, 27, 27, 64)
            x = pool(self._conv(c2, x))  # (B, 27, 27, 192) -> (B, 13, 13, 192)
            x = self._conv(c3, x)  # (B, 13, 13, 384)
            x = self._conv(c4, x)  # (B, 13, 13, 256)
            x = pool(self._conv(c5, x))  # (B, 13, 13, 256) -> (B, 6, 6, 256)
            x = adaptive_avg_pool(x, 6)  # (B, 6, 6, 256)
            x = x.reshape((x.shape[0], -1))  # (B, 9216)
            x = nn.relu(self._dense("fc6", 4096, dropout(x)))  # (B, 4096)
            x = nn.relu(self._dense("fc7", 4096, dropout(x)))  # (B, 4096)
        else:
            x = pool(self._lrn(self._conv(c1, x)))  # (B, 55, 55, 96) -> (B, 27, 27, 96)
            x = pool(self._lrn(self._conv(c2, x)))  # (B, 27, 27, 256) -> (B, 13, 13, 256)
            x = self._conv(c3, x)  # (B, 13, 13, 384)
            x = self._conv(c4, x)  # (B, 13, 13, 384)
            x = pool(self._conv(c5, x))  # (B, 13, 13, 256) -> (B, 6, 6, 256)
            x = x.reshape((x.shape[0], -1))  # (B, 9216)
            x = dropout(nn.relu(self._dense("fc6", 4096, x)))  # (B, 4096)
            x = dropout(nn.relu(self._dense("fc7", 4096, x)))  # (B, 4096)
        x = self._dense("fc8", self.num_classes, x)  # (B, num_classes)
        return x.astype(jnp.float32)


def _conv_out(size: int, spec: ConvSpec) -> int:
    return (size + 2 * spec.padding - spec.kernel) // spec.stride + 1


def layer_macs(variant: str, input_size: int = 227, num_classes: int = 1000) -> dict[str, int]:
    """Forward multiply-accumulates per image of each conv and FC layer (LRN/pool/ReLU excluded)."""
    specs = conv_specs(variant, input_size)
    size, in_ch, macs = input_size, 3, {}
    pool_after = {"conv1", "conv2", "conv5"}
    for spec in specs:
        size = _conv_out(size, spec)
        macs[spec.name] = (
            size * size * spec.features * spec.kernel * spec.kernel * in_ch // spec.groups
        )
        in_ch = spec.features
        if spec.name in pool_after:
            size = (size - 3) // 2 + 1
    fc_in = 6 * 6 * in_ch
    for name, out in (("fc6", 4096), ("fc7", 4096), ("fc8", num_classes)):
        macs[name] = fc_in * out
        fc_in = out
    return macs


def train_flops_per_image(variant: str, input_size: int = 227, num_classes: int = 1000) -> float:
    """Training FLOPs per image: 3x the forward's 2*MACs (forward, input grad, weight grad)."""
    return 3 * 2 * float(sum(layer_macs(variant, input_size, num_classes).values()))


def param_count(params: Any) -> int:
    """Number of scalars in a parameter pytree."""
    return int(sum(np.prod(p.shape) for p in jax.tree_util.tree_leaves(params)))


def create_model(config: Any, **overrides: Any) -> AlexNet:
    """An AlexNet from the model fields of a config (see configs/default.py)."""
    fields: dict[str, Any] = dict(
        variant=config.variant,
        num_classes=config.num_classes,
        input_size=config.input_size,
        lrn_convention=config.lrn_convention,
        lrn_impl=config.lrn_impl,
        pool_impl=config.pool_impl,
        init_scheme=config.init_scheme,
        bias_one=config.bias_one,
        dropout_rate=config.dropout_rate,
        dtype=jnp.dtype(config.dtype),
    )
    fields.update(overrides)
    return AlexNet(**fields)


def default_input_size(variant: str) -> int:
    """The input size each variant was published with."""
    return 224 if variant == "torchvision" else 227


__all__: Sequence[str] = (
    "VARIANTS",
    "AlexNet",
    "GroupedConv",
    "adaptive_avg_pool",
    "conv_specs",
    "create_model",
    "default_input_size",
    "layer_macs",
    "max_pool",
    "param_count",
    "train_flops_per_image",
)

"""The small CIFAR-10 net of the paper's Figure 1 (section 3.1), an assumed reading (below).

Not an AlexNet: no weights to convert. Trained on whole, unaugmented 32x32 images
(configs/figure1.py says why).
"""

from __future__ import annotations

from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from alexnet_jax.model.layers import FORWARD_OPTIONS, ConvSpec, Net, max_pool

# Figure 1's "four-layer convolutional neural network" on CIFAR-10. The paper gives no layer table;
# ASSUMED here: cuda-convnet's example `layers-80sec.cfg` ("26% error on CIFAR-10 in 80 seconds",
# computerhistory/AlexNet-Source-Code example-layers/layers-80sec.cfg:11-92): conv1 5x5x32 pad 2
# (:11-22) -> max-pool 3/2 (:24-32) -> conv2 5x5x32 (:34-45) -> avg-pool 3/2 (:47-55) -> conv3
# 5x5x64 (:57-68) -> avg-pool 3/2 (:70-78) -> fc64 (:80-85) -> fc10 (:87-92), ReLU after every
# layer but fc10. Read as four hidden layers (three conv, fc64) plus the softmax layer.
INPUT_SIZE = 32
CONVS = (
    ConvSpec("conv1", 32, 5, 1, 2),
    ConvSpec("conv2", 32, 5, 1, 2),
    ConvSpec("conv3", 64, 5, 1, 2),
)
POOLS = ("max", "avg", "avg")  # after conv1, conv2, conv3 (pool= in the file)
HIDDEN = 64  # fc64's outputs
# initW of layers-80sec.cfg (:20, :43, :66, :84, :91); initB is cuda-convnet's default 0.
STDS = {"conv1": 1e-4, "conv2": 0.01, "conv3": 0.01, "fc64": 0.1, "fc10": 0.1}


def pool_size(size: int, window: int, stride: int) -> int:
    """cuda-convnet's pooled size: ceil((size - window) / stride) + 1 (layer.py:1164), so the last
    window may hang past the edge (32 -> 16 -> 8 -> 4 with 3/2)."""
    return -(-(size - window) // stride) + 1


def pool(x: jax.Array, kind: str, window: int, stride: int, impl: str) -> jax.Array:
    """cuda-convnet's max or average pooling of `x` (NHWC), windows hanging past the bottom and
    right edges as it lets them; an average divides by the window's cells inside the image
    (cudaconv2's AvgPooler, region size clipped to the image: from its source, not in the
    mirror above; an assumption)."""
    _, h, w, _ = x.shape
    oh, ow = pool_size(h, window, stride), pool_size(w, window, stride)
    extra_h, extra_w = (oh - 1) * stride + window - h, (ow - 1) * stride + window - w
    pads = ((0, 0), (0, extra_h), (0, extra_w), (0, 0))
    if kind == "max":
        return max_pool(jnp.pad(x, pads, constant_values=-jnp.inf), impl, window, stride)
    dims, strides = (1, window, window, 1), (1, stride, stride, 1)
    sums = lax.reduce_window(jnp.pad(x, pads), 0.0, lax.add, dims, strides, "VALID")
    ones = jnp.pad(jnp.ones((1, h, w, 1), x.dtype), pads)
    counts = lax.reduce_window(ones, 0.0, lax.add, dims, strides, "VALID")
    return sums / counts


class Cifar4(Net):
    """Figure 1's CIFAR-10 net (layers-80sec.cfg; see CONVS): `activation` wherever the file has
    a ReLU, `pool_window`/`pool_stride` at its three poolings."""

    default_input_size: ClassVar[int] = INPUT_SIZE
    options: ClassVar[frozenset[str]] = frozenset({"activation", "pool_window", "pool_stride"})
    # layers-80sec.cfg's initW ("cuda_convnet") or He; the paper's scheme names AlexNet's layers.
    init_schemes: ClassVar[tuple[str, ...]] = ("cuda_convnet", "he")
    has_dropout: ClassVar[bool] = False  # layers-80sec.cfg has no dropout
    feature_layer: ClassVar[str] = "fc64"

    @classmethod
    def input_size_problem(cls, size: Any) -> str | None:
        return None if size == INPUT_SIZE else f"{INPUT_SIZE} (CIFAR-10's whole image)"

    @classmethod
    def layer_macs(cls, input_size: int, num_classes: int, **options: Any) -> dict[str, int]:
        o = {**FORWARD_OPTIONS, **options}
        size, in_ch, macs = input_size, 3, {}
        for spec in CONVS:  # "same" 5x5 convolutions, each followed by a pooling
            macs[spec.name] = size * size * spec.features * spec.kernel * spec.kernel * in_ch
            size, in_ch = pool_size(size, o["pool_window"], o["pool_stride"]), spec.features
        macs["fc64"] = size * size * in_ch * HIDDEN
        macs["fc10"] = HIDDEN * num_classes
        return macs

    def initializers(self, layer: str) -> tuple[Any, Any]:
        """ "cuda_convnet": layers-80sec.cfg's initW and zero biases; "he" as every variant."""
        if self.init_scheme == "cuda_convnet":
            return nn.initializers.normal(stddev=STDS[layer]), nn.initializers.zeros
        return super().initializers(layer)

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        x = x.astype(self.dtype)  # (B, 32, 32, 3)
        for spec, kind in zip(CONVS, POOLS, strict=True):
            x = self.act(self.conv(spec, x))  # (B, 32, 32, 32), (B, 16, 16, 32), (B, 8, 8, 64)
            x = pool(x, kind, self.pool_window, self.pool_stride, self.pool_impl)
        x = x.reshape((x.shape[0], -1))  # (B, 4 * 4 * 64)
        x = self.act(self.dense("fc64", HIDDEN, x))  # (B, 64)
        return self.dense("fc10", self.num_classes, x).astype(jnp.float32)  # (B, num_classes)

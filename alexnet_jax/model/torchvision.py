"""torchvision's AlexNet ("One weird trick", arXiv 1404.5997): 64-192-384-256-256 kernels, no
LRN, adaptive average pooling to 6x6, dropout before fc6 and fc7 (61,100,840 parameters at 1000
classes). The shape comments are for its 224x224 input; it takes any size >= 63."""

from __future__ import annotations

from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from alexnet_jax.core import rules
from alexnet_jax.model.alexnet import stack_macs
from alexnet_jax.model.layers import FORWARD_OPTIONS, ConvSpec, Net, adaptive_avg_pool

CONVS = (
    ConvSpec("conv1", 64, 11, 4, 2),
    ConvSpec("conv2", 192, 5, 1, 2),
    ConvSpec("conv3", 384, 3, 1, 1),
    ConvSpec("conv4", 256, 3, 1, 1),
    ConvSpec("conv5", 256, 3, 1, 1),
)


class TorchvisionAlexNet(Net):
    """torchvision.models.alexnet, layer for layer (its weights convert: interop/convert.py)."""

    default_input_size: ClassVar[int] = 224
    options: ClassVar[frozenset[str]] = frozenset({"activation", "pool_window", "pool_stride"})

    @classmethod
    def input_size_problem(cls, size: Any) -> str | None:
        return None if rules.is_int(size) and size >= 63 else ">= 63"

    @classmethod
    def layer_macs(cls, input_size: int, num_classes: int, **options: Any) -> dict[str, int]:
        o = {**FORWARD_OPTIONS, **options}
        window, stride = o["pool_window"], o["pool_stride"]
        return stack_macs(CONVS, input_size, num_classes, window, stride, grid=6)

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        c1, c2, c3, c4, c5 = CONVS
        act, pool = self.act, self.pool
        dropout = nn.Dropout(self.dropout_rate, deterministic=not train)
        x = x.astype(self.dtype)  # (B, 224, 224, 3)
        x = pool(act(self.conv(c1, x)))  # (B, 55, 55, 64) -> (B, 27, 27, 64)
        x = pool(act(self.conv(c2, x)))  # (B, 27, 27, 192) -> (B, 13, 13, 192)
        x = act(self.conv(c3, x))  # (B, 13, 13, 384)
        x = act(self.conv(c4, x))  # (B, 13, 13, 256)
        x = pool(act(self.conv(c5, x)))  # (B, 13, 13, 256) -> (B, 6, 6, 256)
        x = adaptive_avg_pool(x, 6)  # (B, 6, 6, 256)
        x = x.reshape((x.shape[0], -1))  # (B, 9216)
        x = act(self.dense("fc6", 4096, dropout(x)))  # (B, 4096)
        x = act(self.dense("fc7", 4096, dropout(x)))  # (B, 4096)
        return self.dense("fc8", self.num_classes, x).astype(jnp.float32)  # (B, num_classes)

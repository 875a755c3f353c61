"""The paper's AlexNet (sections 3.1-3.5): two towers (`PaperAlexNet`) or one (`OneTowerAlexNet`).

Layer tables are in docs/PAPER.md. The shape comments are for the 227x227 input (224 with conv1
padded by 2, or by cuda-convnet's overhang). Each tower normalizes (LRN) only its own kernel maps,
as each of the paper's GPUs did: conv1's 48 + 48 and conv2's 128 + 128 channels are normalized
separately, so no window crosses the tower boundary. Given a mesh with a "tower" axis
(`Net.mesh`, see parallel.py) the towers run on their own devices: conv1, conv2, conv4, conv5, LRN
and pooling per device, conv3 and the FC layers exchanging activations across "tower" where the
paper's GPUs did. It is the same network with the same parameters: only where the numbers are
computed changes.

Forward options (layers.FORWARD_OPTIONS, each defaulting to the paper's text) switch on the original
cuda-convnet run's departures from the text (docs/PAPER.md: block 1's order, the same-map
normalization after LRN2, conv1's overhang at 224; `init_scheme="cuda_convnet"` its weight scales)
and the paper's ablations (tanh, no LRN, 2/2 pooling, the half-width nets of section 3.2).
"""

from __future__ import annotations

from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from alexnet_jax.model.layers import FORWARD_OPTIONS, ConvSpec, Net, padding_pair
from alexnet_jax.model.lrn import spatial_response_norm

# The kernels of conv1..conv5 by `width`: the paper's net; section 3.2's comparison net, one tower
# with half the kernels of each convolutional layer; and the half net of the original code
# (layers-145-half.cfg), which kept conv5 at 256 (docs/PAPER.md, Architecture).
WIDTHS = {
    "full": (96, 256, 384, 384, 256),
    "half": (48, 128, 192, 192, 128),
    "half_code": (48, 128, 192, 192, 256),
}
# cuda-convnet pads nothing above and left of the image and runs conv1's last windows 3 pixels
# past its bottom and right edges (224 input, 55 outputs; docs/PAPER.md, departure 7).
_OVERHANG = (0, 3)
_POOLED = ("conv1", "conv2", "conv5")  # the convolutions followed by a max-pool


def conv_specs(
    towers: int, input_size: int = 227, width: str = "full", conv1_padding: str = "symmetric"
) -> tuple[ConvSpec, ...]:
    """The five convolutions of the paper's net with `towers` towers. conv1 pads so that its
    output is 55x55 at 224 or 227: by 2 on every side at 224, or cuda-convnet's overhang
    (`conv1_padding="overhang"`). `width` ("half", "half_code") narrows the convolutions."""
    conv1_pad = 0 if input_size == 227 else 2
    if conv1_padding == "overhang":
        conv1_pad = _OVERHANG
    w1, w2, w3, w4, w5 = WIDTHS[width]
    return (
        ConvSpec("conv1", w1, 11, 4, conv1_pad),
        ConvSpec("conv2", w2, 5, 1, 2, groups=towers),
        ConvSpec("conv3", w3, 3, 1, 1),  # crosses the towers
        ConvSpec("conv4", w4, 3, 1, 1, groups=towers),
        ConvSpec("conv5", w5, 3, 1, 1, groups=towers),
    )


def conv_out(size: int, spec: ConvSpec) -> int:
    """The output side of convolution `spec` on a `size` x `size` input."""
    return (size + sum(padding_pair(spec.padding)) - spec.kernel) // spec.stride + 1


def stack_macs(
    specs: tuple[ConvSpec, ...], input_size: int, num_classes: int, window: int, stride: int, grid=0
) -> dict[str, int]:
    """Forward multiply-accumulates per image of conv1-5 (max-pooled after conv1, conv2, conv5)
    and fc6-8 (fc6 on a `grid` x `grid` map, or the pooled conv5 output's when 0)."""
    size, in_ch, macs = input_size, 3, {}
    for spec in specs:
        size = conv_out(size, spec)
        macs[spec.name] = size * size * spec.features * spec.kernel**2 * in_ch // spec.groups
        in_ch = spec.features
        if spec.name in _POOLED:
            size = (size - window) // stride + 1
    fc_in = (grid or size) ** 2 * in_ch
    for name, out in (("fc6", 4096), ("fc7", 4096), ("fc8", num_classes)):
        macs[name] = fc_in * out
        fc_in = out
    return macs


class PaperAlexNet(Net):
    """The paper's two-tower network (60,965,224 parameters at 1000 classes)."""

    towers: ClassVar[int] = 2
    options: ClassVar[frozenset[str]] = frozenset(FORWARD_OPTIONS) - {"width"}

    @classmethod
    def input_size_problem(cls, size: Any) -> str | None:
        ok = size in (224, 227)
        return None if ok else "227 (unpadded conv1) or 224 (padded)"

    @classmethod
    def layer_macs(cls, input_size: int, num_classes: int, **options: Any) -> dict[str, int]:
        o = {**FORWARD_OPTIONS, **options}
        specs = conv_specs(cls.towers, input_size, o["width"], o["conv1_padding"])
        return stack_macs(specs, input_size, num_classes, o["pool_window"], o["pool_stride"])

    def block1(self, x: jax.Array) -> jax.Array:
        """conv1's output -> activation, LRN, max-pool (the paper); or LRN of the linear output,
        max-pool, activation (the original code; docs/PAPER.md, departure 2)."""
        if self.block1_order == "conv_lrn_pool_relu":
            return self.act(self.pool(self.lrn_layer(x)))
        return self.pool(self.lrn_layer(self.act(x)))

    def block2(self, x: jax.Array) -> jax.Array:
        """conv2's output -> activation, LRN, [same-map normalization], max-pool."""
        x = self.lrn_layer(self.act(x))
        return self.pool(spatial_response_norm(x) if self.spatial_norm2 else x)

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        c1, c2, c3, c4, c5 = conv_specs(
            self.towers, self.input_size, self.width, self.conv1_padding
        )
        act, dropout = self.act, nn.Dropout(self.dropout_rate, deterministic=not train)
        x = x.astype(self.dtype)  # (B, 227, 227, 3)
        # LRN per tower; with a tower mesh, one tower per device up to conv5.
        x = self.per_tower(self.block1, self.conv(c1, x))  # (B, 55, 55, 96) -> 27x27x96
        x = self.per_tower(self.block2, self.conv(c2, x))  # (B, 27, 27, 256) -> 13x13x256
        x = act(self.conv(c3, x))  # (B, 13, 13, 384): sees both towers
        x = act(self.conv(c4, x))  # (B, 13, 13, 384)
        x = self.pool(act(self.conv(c5, x)))  # (B, 13, 13, 256) -> (B, 6, 6, 256)
        # fc6 flattens (B, 9216), following the pool5 grid and width (a TowerDense after
        # gathering the towers).
        x = dropout(act(self.dense("fc6", 4096, x)))  # (B, 4096)
        x = dropout(act(self.dense("fc7", 4096, x)))  # (B, 4096)
        x = self.gather_logits(self.dense("fc8", self.num_classes, x))  # (B, num_classes)
        return x.astype(jnp.float32)


class OneTowerAlexNet(PaperAlexNet):
    """The same stack with no groups, as most re-implementations (62,378,344 parameters);
    `width` gives section 3.2's half-width comparison nets."""

    towers: ClassVar[int] = 1
    options: ClassVar[frozenset[str]] = frozenset(FORWARD_OPTIONS)

"""The benchmarks' PyTorch peers, built from the library's modules (alexnet_jax/torch_models.py).

`build(variant)` is the network compare_torch.py times: the library's PyTorch AlexNet of the variant
with stock nn.LocalResponseNorm (alpha 1e-4, PyTorch's alpha / n), and for `paper` one LRN across
all 96 / 256 channels instead of one per tower: the same cost without the split and concatenation.
`torchvision_alexnet` is torchvision.models.alexnet without torchvision (tests use it).
"""

from __future__ import annotations

import torch
from torch import nn

from alexnet_jax.models import VARIANTS
from alexnet_jax.torch_models import LRN_BETA, LRN_K, LRN_SIZE, torch_alexnet, torch_lrn_alpha

_LRN_INDICES = (2, 6)  # features.2 and features.6 in the LRN stacks (alexnet_jax/convert.py)


def torchvision_alexnet(num_classes: int) -> nn.Module:
    """torchvision.models.alexnet (the "one weird trick" variant), 224x224 input."""
    return torch_alexnet("torchvision", num_classes)


def build(variant: str, num_classes: int = 1000, seed: int = 0) -> nn.Module:
    """The PyTorch model of a variant (PyTorch's default initialization; timing only)."""
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    torch.manual_seed(seed)
    model = torch_alexnet(variant, num_classes, lrn_convention="cuda_convnet")
    if variant == "paper":
        alpha = torch_lrn_alpha("cuda_convnet")
        for index in _LRN_INDICES:
            model.features[index] = nn.LocalResponseNorm(LRN_SIZE, alpha, LRN_BETA, LRN_K)
    return model

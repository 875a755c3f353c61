"""PyTorch AlexNets with torchvision's layer names: the benchmarks' peer and the tests' oracle.

torchvision's `alexnet` written out (torchvision is not a dependency), and the re-implementation
stack with `nn.LocalResponseNorm` after the ReLUs of conv1 and conv2, in one-tower form and in the
paper's two-tower form (`groups=2` in conv2, conv4 and conv5). Their state-dict layouts are the
ones alexnet_jax.convert reads (tests/test_convert.py checks logit parity against them).
torch.nn.LocalResponseNorm divides alpha by n (the cuda-convnet convention): the same arithmetic
as the JAX model with `lrn_convention="cuda_convnet"`, and the same cost as with the paper's.
"""

from __future__ import annotations

import torch
from torch import nn

VARIANTS = ("paper", "one_tower", "torchvision")


class TorchAlexNet(nn.Module):
    """features -> [avgpool] -> flatten -> classifier, as torchvision.models.AlexNet."""

    def __init__(self, features: nn.Sequential, classifier: nn.Sequential, avgpool=None):
        super().__init__()
        self.features = features
        if avgpool is not None:
            self.avgpool = avgpool
        self.classifier = classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        if hasattr(self, "avgpool"):
            x = self.avgpool(x)
        return self.classifier(torch.flatten(x, 1))


def classifier(num_classes: int) -> nn.Sequential:
    """torchvision's: Dropout 0, Linear 1, ReLU 2, Dropout 3, Linear 4, ReLU 5, Linear 6."""
    return nn.Sequential(
        nn.Dropout(0.5),
        nn.Linear(256 * 6 * 6, 4096),
        nn.ReLU(inplace=True),
        nn.Dropout(0.5),
        nn.Linear(4096, 4096),
        nn.ReLU(inplace=True),
        nn.Linear(4096, num_classes),
    )


def torchvision_alexnet(num_classes: int) -> TorchAlexNet:
    """torchvision.models.alexnet (the "one weird trick" variant), 224x224 input."""
    features = nn.Sequential(
        nn.Conv2d(3, 64, kernel_size=11, stride=4, padding=2),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=3, stride=2),
        nn.Conv2d(64, 192, kernel_size=5, padding=2),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=3, stride=2),
        nn.Conv2d(192, 384, kernel_size=3, padding=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(384, 256, kernel_size=3, padding=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(256, 256, kernel_size=3, padding=1),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=3, stride=2),
    )
    return TorchAlexNet(features, classifier(num_classes), nn.AdaptiveAvgPool2d((6, 6)))


class TowerLocalResponseNorm(nn.Module):
    """LocalResponseNorm applied to each of `groups` equal channel slices separately: each of the
    paper's GPUs normalized only its own tower's kernel maps. No weights (state-dict keys keep)."""

    def __init__(self, groups: int):
        super().__init__()
        self.groups = groups
        self.lrn = nn.LocalResponseNorm(size=5, alpha=1e-4, beta=0.75, k=2.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.lrn(xg) for xg in torch.chunk(x, self.groups, dim=1)], dim=1)


def lrn_alexnet(num_classes: int, groups: int, tower_lrn: bool = False) -> TorchAlexNet:
    """The LocalResponseNorm stack, 227x227 input; groups=2 is the paper's two towers.

    tower_lrn: normalize each tower's channels separately (conv1: 48 + 48, conv2: 128 + 128), the
    JAX `paper` model's arithmetic (the tests' oracle); False: one LocalResponseNorm over all
    channels, the same cost without the split and concatenation (the benchmarks' peer).
    """
    if tower_lrn:
        lrn = lambda: TowerLocalResponseNorm(groups)
    else:
        lrn = lambda: nn.LocalResponseNorm(size=5, alpha=1e-4, beta=0.75, k=2.0)
    features = nn.Sequential(
        nn.Conv2d(3, 96, kernel_size=11, stride=4),  # 0
        nn.ReLU(inplace=True),
        lrn(),
        nn.MaxPool2d(kernel_size=3, stride=2),
        nn.Conv2d(96, 256, kernel_size=5, padding=2, groups=groups),  # 4
        nn.ReLU(inplace=True),
        lrn(),
        nn.MaxPool2d(kernel_size=3, stride=2),
        nn.Conv2d(256, 384, kernel_size=3, padding=1),  # 8
        nn.ReLU(inplace=True),
        nn.Conv2d(384, 384, kernel_size=3, padding=1, groups=groups),  # 10
        nn.ReLU(inplace=True),
        nn.Conv2d(384, 256, kernel_size=3, padding=1, groups=groups),  # 12
        nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=3, stride=2),
    )
    return TorchAlexNet(features, classifier(num_classes))


def build(variant: str, num_classes: int = 1000, seed: int = 0) -> TorchAlexNet:
    """The PyTorch model of a variant (PyTorch's default initialization; timing only)."""
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    torch.manual_seed(seed)
    if variant == "torchvision":
        return torchvision_alexnet(num_classes)
    return lrn_alexnet(num_classes, groups=2 if variant == "paper" else 1)

"""The PyTorch modules of this project's three AlexNets, to run exported weights in PyTorch.

    from alexnet_jax.torch_models import load_exported, load_image
    model, conventions = load_exported("model.pth")  # or .safetensors / .npz from export.py
    logits = model(torch.from_numpy(load_image("cat.jpg", conventions)))  # (1, num_classes)

`torch_alexnet(variant, num_classes, lrn_convention)` builds the network whose state dict has
exactly the layout of convert.to_torch_state_dict (keys and shapes: alexnet_jax/convert.py) and
whose eval-mode logits are those of the JAX model with the same fields:
- LRN (`paper`, `one_tower`): torch.nn.LocalResponseNorm divides alpha by n, so the JAX model's
  "paper" convention (alpha = 1e-4 as written) is nn.LocalResponseNorm(alpha=5e-4) and
  "cuda_convnet" (alpha / n) is alpha=1e-4 (`torch_lrn_alpha`). The stock alpha=1e-4 on weights
  trained with the paper's convention gives wrong logits.
- `paper`: conv2, conv4 and conv5 have groups=2, and each tower normalizes only its own channels
  (48 + 48 after conv1, 128 + 128 after conv2), as models.py does and the paper's GPUs did.
- `torchvision`: torchvision.models.alexnet written out; torchvision's own class loads these files.
- Dropout sits where torchvision's classifier has it (before fc6 and fc7), where the JAX `paper` and
  `one_tower` models drop the outputs of fc6 and fc7: the same eval-mode logits, a slightly
  different regularization when fine-tuning in PyTorch (convert.py).

Inputs are NCHW float32 (B, 3, input_size, input_size), preprocessed as the conventions say: the
shorter side resized to `resize_size`, the center `input_size` crop, then "mean" (minus the ImageNet
RGB mean on the 0-255 scale) or "mean_std" (also divided by 255 * std). `load_image` does all of it
for an image file, `normalize` the last step for uint8 crops.

PyTorch is not a dependency of the package: torch is imported only inside these functions, so
importing this module does not import it.
"""

from __future__ import annotations

import functools
from collections import OrderedDict
from typing import Any

import numpy as np

from alexnet_jax import convert, predict, weights_io
from alexnet_jax.models import LRN_CONVENTIONS, VARIANTS, conv_specs, default_input_size

# The paper's LRN: n, alpha as written, beta, k (lrn.local_response_norm's defaults).
LRN_SIZE, LRN_ALPHA, LRN_BETA, LRN_K = 5, 1e-4, 0.75, 2.0
_POOLED = ("conv1", "conv2", "conv5")  # max-pool 3x3 s2 after these convolutions
_NORMALIZED = ("conv1", "conv2")  # LRN after these (paper and one_tower)


def torch_lrn_alpha(lrn_convention: str) -> float:
    """nn.LocalResponseNorm's alpha that computes the JAX model's LRN under `lrn_convention`.

    PyTorch divides alpha by n: the paper's alpha as written is passed as alpha * n (5e-4), the
    cuda-convnet convention (already alpha / n) as alpha (1e-4).
    """
    if lrn_convention not in LRN_CONVENTIONS:
        raise ValueError(f"lrn_convention must be one of {LRN_CONVENTIONS}, got {lrn_convention!r}")
    return LRN_ALPHA * LRN_SIZE if lrn_convention == "paper" else LRN_ALPHA


@functools.cache
def _tower_lrn_class() -> type:
    """TowerLocalResponseNorm, defined on first use so that importing this module needs no torch."""
    import torch
    from torch import nn

    class TowerLocalResponseNorm(nn.Module):
        """nn.LocalResponseNorm on each of `towers` equal channel slices separately: no window
        crosses a tower boundary. No weights, so the state dict keys stay as without it."""

        def __init__(self, towers: int, alpha: float):
            super().__init__()
            self.towers = towers
            self.lrn = nn.LocalResponseNorm(LRN_SIZE, alpha=alpha, beta=LRN_BETA, k=LRN_K)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.cat([self.lrn(t) for t in torch.chunk(x, self.towers, dim=1)], dim=1)

        def extra_repr(self) -> str:
            return f"towers={self.towers}"

    return TowerLocalResponseNorm


def _lrn(towers: int, alpha: float) -> Any:
    from torch import nn

    if towers == 1:
        return nn.LocalResponseNorm(LRN_SIZE, alpha=alpha, beta=LRN_BETA, k=LRN_K)
    return _tower_lrn_class()(towers, alpha)


def torch_alexnet(
    variant: str,
    num_classes: int = 1000,
    lrn_convention: str = "paper",
    input_size: int | None = None,
) -> Any:
    """The torch.nn.Module of a variant (PyTorch's default initialization, training mode).

    An nn.Sequential of `features`, [`avgpool` (torchvision only)], `flatten` and `classifier`, laid
    out as in convert.py; forward takes NCHW (B, 3, input_size, input_size) normalized images
    (module docstring) and returns (B, num_classes) logits.

    Args:
      variant: "paper", "one_tower" or "torchvision".
      lrn_convention: the JAX run's ("paper" or "cuda_convnet"); ignored by `torchvision` (no LRN).
      input_size: 227 (conv1 unpadded) or 224 (padded by 2) for `paper`/`one_tower`; None: the
        variant's published size. `torchvision` takes any size (adaptive pooling to 6x6).
    """
    from torch import nn

    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    input_size = default_input_size(variant) if input_size is None else input_size
    if variant != "torchvision" and input_size not in (224, 227):
        raise ValueError(f"input_size must be 227 or 224 for variant {variant!r}, got {input_size}")
    alpha = torch_lrn_alpha(lrn_convention)  # validates the convention for every variant
    specs = conv_specs(variant, input_size)
    towers = specs[1].groups  # 2 for paper
    layers, channels = [], 3
    for spec in specs:  # torchvision: features.0, .3, .6, .8, .10; LRN stacks: .0, .4, .8, .10, .12
        conv = nn.Conv2d(
            channels, spec.features, spec.kernel, spec.stride, spec.padding, groups=spec.groups
        )
        layers += [conv, nn.ReLU(inplace=True)]
        if variant != "torchvision" and spec.name in _NORMALIZED:
            layers.append(_lrn(towers, alpha))
        if spec.name in _POOLED:
            layers.append(nn.MaxPool2d(kernel_size=3, stride=2))
        channels = spec.features
    modules: OrderedDict[str, nn.Module] = OrderedDict(features=nn.Sequential(*layers))
    if variant == "torchvision":
        modules["avgpool"] = nn.AdaptiveAvgPool2d((6, 6))
    modules["flatten"] = nn.Flatten(1)  # (C, H, W) order, as convert.py's fc6 expects
    modules["classifier"] = nn.Sequential(  # torchvision's: classifier.1, .4, .6
        nn.Dropout(0.5),
        nn.Linear(channels * 6 * 6, 4096),
        nn.ReLU(inplace=True),
        nn.Dropout(0.5),
        nn.Linear(4096, 4096),
        nn.ReLU(inplace=True),
        nn.Linear(4096, num_classes),
    )
    return nn.Sequential(modules)


def load_exported(path: str) -> tuple[Any, dict[str, Any]]:
    """(module in eval mode with the file's weights loaded strictly, conventions) of a weights file.

    The conventions are the ones the file records (weights_io.read_conventions). A file that records
    none (torchvision's, any plain state dict) is read as `predict --weights` reads it: the
    torchvision variant with PyTorch's conventions (mean/std normalization, resize 256, input 224,
    the "cuda_convnet" LRN convention) and the number of classes of its fc8.

    Raises:
      WeightsFileError: the file is missing or unreadable, or its names or shapes do not fit the
        variant (naming each offending key).
    """
    import torch

    conventions = weights_io.read_conventions(path)
    variant = conventions["variant"] if conventions else predict.DEFAULT_IMPORT_VARIANT
    if weights_io.file_format(path) == ".npz":  # Flax params: checked, then converted
        params = weights_io.load_weights(path, variant, (conventions or {}).get("num_classes"))
        state_dict = convert.to_torch_state_dict(params, variant, as_torch=True)
    else:  # already the PyTorch layout: no conversion
        state_dict = {
            key: torch.as_tensor(value).float()
            for key, value in weights_io.read_state_dict(path).items()
        }
    if conventions is None:
        config = predict.imported_weights_config(variant, _num_classes(state_dict, path))
        conventions = {field: config[field] for field in weights_io.CONVENTION_FIELDS}
    with torch.device("meta"):  # no memory, no initialization: the file's tensors are assigned
        model = torch_alexnet(
            variant,
            conventions["num_classes"],
            conventions["lrn_convention"],
            conventions["input_size"],
        )
    try:
        model.load_state_dict(state_dict, strict=True, assign=True)
    except RuntimeError as e:  # missing or unexpected keys, wrong shapes: torch names each
        raise weights_io.WeightsFileError(f"{path} refused for variant {variant!r}: {e}") from e
    return model.eval(), conventions


def _num_classes(state_dict: dict[str, Any], path: str) -> int:
    """The output count of fc8 (classifier.6.weight, the same key in every variant)."""
    weight = state_dict.get("classifier.6.weight")
    if weight is None or weight.ndim != 2:
        raise weights_io.WeightsFileError(
            f"{path} refused: it has no 2-D 'classifier.6.weight' (fc8) to take the classes from."
        )
    return int(weight.shape[0])


def normalize(images: np.ndarray, conventions: dict[str, Any]) -> np.ndarray:
    """uint8 RGB crops (B, H, W, 3) -> the NCHW float32 model input (B, 3, H, W), normalized by
    conventions["normalization"] exactly as the JAX evaluation does (predict.normalize)."""
    x = predict.normalize(np.asarray(images), conventions["normalization"])
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def load_image(path: str, conventions: dict[str, Any]) -> np.ndarray:
    """An image file as the (1, 3, input_size, input_size) float32 model input: the JAX
    evaluation's center view (shorter side to resize_size, center crop, normalization), as
    predict does."""
    x = predict.load_image(path, predict.weights_config(conventions))  # (S, S, 3)
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None])

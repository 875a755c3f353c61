"""The PyTorch modules of this project's three AlexNets, to run exported weights in PyTorch.

    from alexnet_jax.interop.torch_models import load_exported, load_image
    model, conventions = load_exported("model.pth")  # or .safetensors / .npz from export.py
    logits = model(torch.from_numpy(load_image("cat.jpg", conventions)))  # (1, num_classes)

`torch_alexnet(variant, num_classes, lrn_convention, input_size, **options)` builds the network
whose state dict has exactly the layout of convert.to_torch_state_dict (keys and shapes:
alexnet_jax/interop/convert.py) and whose eval-mode logits are those of the JAX model with the same
fields:
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
- The forward options (models.FORWARD_OPTIONS) keep every weight at its index in `features`: the
  parameterless modules between two convolutions change kind or order (Tanh for ReLU, Identity for
  a removed LRN, LRN -> pool -> activation in cuda-convnet's block 1, LRN then the same-map
  normalization as one module), never number; conv1's overhang is a Conv2d that zero-pads its
  input (0, 3) first (nn.Conv2d pads both sides alike).

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

import ml_collections
import numpy as np

from alexnet_jax.core import rules
from alexnet_jax.data import image_files
from alexnet_jax.interop import convert, weights_io
from alexnet_jax.interop.convert import VARIANTS, conv_specs
from alexnet_jax.model import lrn, models
from alexnet_jax.model.layers import FORWARD_OPTIONS, LRN_CONVENTIONS, ConvSpec, padding_pair
from alexnet_jax.model.models import default_input_size

# The paper's LRN: n, alpha as written, beta, k (lrn.local_response_norm's defaults).


def torch_lrn_alpha(lrn_convention: str) -> float:
    """nn.LocalResponseNorm's alpha that computes the JAX model's LRN under `lrn_convention`.

    PyTorch divides alpha by n: the paper's alpha as written is passed as alpha * n (5e-4), the
    cuda-convnet convention (already alpha / n) as alpha (1e-4).
    """
    if lrn_convention not in LRN_CONVENTIONS:
        raise ValueError(f"lrn_convention must be one of {LRN_CONVENTIONS}, got {lrn_convention!r}")
    return lrn.ALPHA * lrn.SIZE if lrn_convention == "paper" else lrn.ALPHA


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
            self.lrn = nn.LocalResponseNorm(lrn.SIZE, alpha=alpha, beta=lrn.BETA, k=lrn.K)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.cat([self.lrn(t) for t in torch.chunk(x, self.towers, dim=1)], dim=1)

        def extra_repr(self) -> str:
            return f"towers={self.towers}"

    return TowerLocalResponseNorm


def _lrn(towers: int, alpha: float) -> Any:
    from torch import nn

    if towers == 1:
        return nn.LocalResponseNorm(lrn.SIZE, alpha=alpha, beta=lrn.BETA, k=lrn.K)
    return _tower_lrn_class()(towers, alpha)


@functools.cache
def _option_classes() -> tuple[type, type]:
    """(SpatialResponseNorm, OverhangConv2d), defined on first use (no torch at import)."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    class SpatialResponseNorm(nn.Module):
        """lrn.spatial_response_norm (cuda-convnet's same-map normalization), NCHW: the 5x5
        window sum of squares is 25 x avg_pool2d with zero padding counted in the average."""

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            size = lrn.SPATIAL_SIZE
            mean = F.avg_pool2d(x * x, size, stride=1, padding=size // 2, count_include_pad=True)
            base = lrn.SPATIAL_K + lrn.SPATIAL_SCALE * mean  # scale / size**2 x the window sum
            return x * base.pow(-lrn.SPATIAL_POWER)

    class OverhangConv2d(nn.Conv2d):
        """nn.Conv2d (padding 0) on its input zero-padded by `pads` = (before, after) on H and
        W: the same weights and state dict keys as an nn.Conv2d."""

        def __init__(self, *args: Any, pads: tuple[int, int], **kwargs: Any):
            super().__init__(*args, **kwargs)
            self.pads = pads

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return super().forward(F.pad(x, (*self.pads, *self.pads)))

    return SpatialResponseNorm, OverhangConv2d


def _conv(spec: ConvSpec, in_channels: int) -> Any:
    from torch import nn

    before, after = padding_pair(spec.padding)
    args = (in_channels, spec.features, spec.kernel, spec.stride)
    if before == after:
        return nn.Conv2d(*args, before, groups=spec.groups)
    return _option_classes()[1](*args, 0, groups=spec.groups, pads=(before, after))


def _activation(options: dict[str, Any]) -> Any:
    """A new activation module (nn.ReLU or nn.Tanh) on each call."""
    from torch import nn

    return (lambda: nn.ReLU(inplace=True)) if options["activation"] == "relu" else nn.Tanh


# The forward options this module mirrors (all of models.FORWARD_OPTIONS when it was written); a
# new one must be implemented here too, or torch_alexnet refuses a non-default value of it.
TORCH_OPTIONS = frozenset(
    {"block1_order", "spatial_norm2", "conv1_padding", "activation", "lrn", "pool_window"}
    | {"pool_stride", "width"}
)


def _features(variant: str, specs: tuple, alpha: float, options: dict[str, Any]) -> list:
    """The `features` modules: each conv followed by its parameterless modules, 3 after conv1 and
    conv2 (2 in torchvision, which has no LRN), 1 after conv3 and conv4, 2 after conv5 under every
    option: the indices of convert.py."""
    from torch import nn

    act = _activation(options)
    pool = lambda: nn.MaxPool2d(options["pool_window"], options["pool_stride"])
    towers = specs[1].groups  # 2 for paper
    norm = lambda: _lrn(towers, alpha) if options["lrn"] else nn.Identity()
    layers, channels = [], 3
    for spec in specs:
        layers.append(_conv(spec, channels))
        if variant == "torchvision":
            after = [act(), pool()] if spec.name in ("conv1", "conv2", "conv5") else [act()]
        elif spec.name == "conv1" and options["block1_order"] == "conv_lrn_pool_relu":
            after = [norm(), pool(), act()]
        elif spec.name == "conv1":
            after = [act(), norm(), pool()]
        elif spec.name == "conv2" and options["spatial_norm2"]:
            after = [act(), nn.Sequential(norm(), _option_classes()[0]()), pool()]
        elif spec.name == "conv2":
            after = [act(), norm(), pool()]
        else:
            after = [act(), pool()] if spec.name == "conv5" else [act()]
        layers += after
        channels = spec.features
    return layers


def torch_alexnet(
    variant: str,
    num_classes: int = 1000,
    lrn_convention: str = "paper",
    input_size: int | None = None,
    **options: Any,
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
      options: the JAX model's forward options (models.FORWARD_OPTIONS), the defaults for those
        not given; checked by the config's rules.
    Raises:
      ValueError: an unknown variant, size, convention or option, or an option where it does
        not apply (the config rule's message).
    """
    weights_io.import_optional("torch", "Building a PyTorch model")  # one line, not a traceback
    from torch import nn

    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    input_size = default_input_size(variant) if input_size is None else input_size
    if variant != "torchvision" and input_size not in (224, 227):
        raise ValueError(f"input_size must be 227 or 224 for variant {variant!r}, got {input_size}")
    alpha = torch_lrn_alpha(lrn_convention)  # validates the convention for every variant
    unknown = sorted(set(options) - set(models.FORWARD_OPTIONS))
    if unknown:
        raise ValueError(f"unknown options {unknown}; known: {list(models.FORWARD_OPTIONS)}")
    options = {**models.FORWARD_OPTIONS, **options}
    missing = [k for k, v in options.items() if k not in TORCH_OPTIONS and v != FORWARD_OPTIONS[k]]
    if missing:  # a forward option added to the JAX model but not mirrored here
        raise ValueError(
            f"the PyTorch module does not implement the forward options {missing} (set to "
            f"{[options[k] for k in missing]}): its logits would not be the JAX model's."
        )
    fields = dict(variant=variant, input_size=input_size, **options)
    rules.check(ml_collections.ConfigDict(fields), models.OPTION_RULES)
    specs = conv_specs(variant, input_size, options["width"], options["conv1_padding"])
    layers = _features(variant, specs, alpha, options)
    act = _activation(options)
    channels = specs[-1].features
    modules: OrderedDict[str, nn.Module] = OrderedDict(features=nn.Sequential(*layers))
    if variant == "torchvision":
        modules["avgpool"] = nn.AdaptiveAvgPool2d((6, 6))
    modules["flatten"] = nn.Flatten(1)  # (C, H, W) order, as convert.py's fc6 expects
    modules["classifier"] = nn.Sequential(  # torchvision's: classifier.1, .4, .6
        nn.Dropout(0.5),
        nn.Linear(channels * 6 * 6, 4096),  # a 6x6 grid under every option (convert.py)
        act(),
        nn.Dropout(0.5),
        nn.Linear(4096, 4096),
        act(),
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
    torch = weights_io.import_optional("torch", f"Loading {path} into PyTorch")

    conventions = weights_io.read_conventions(path)
    variant = conventions["variant"] if conventions else weights_io.DEFAULT_IMPORT_VARIANT
    width = weights_io.with_option_defaults(conventions or {})["width"]
    if weights_io.file_format(path) == ".npz":  # Flax params: checked, then converted
        num_classes = (conventions or {}).get("num_classes")
        params = weights_io.load_weights(path, variant, num_classes, width)
        state_dict = convert.to_torch_state_dict(params, variant, as_torch=True, width=width)
    else:  # already the PyTorch layout: no conversion
        state_dict = {
            key: torch.as_tensor(value).float()
            for key, value in weights_io.read_state_dict(path).items()
        }
    if conventions is None:
        config = weights_io.imported_weights_config(variant, _num_classes(state_dict, path))
        conventions = {field: config[field] for field in weights_io.CONVENTION_FIELDS}
    recorded = weights_io.with_option_defaults(conventions)
    options = {field: recorded[field] for field in models.FORWARD_OPTIONS}
    with torch.device("meta"):  # no memory, no initialization: the file's tensors are assigned
        model = torch_alexnet(
            variant,
            conventions["num_classes"],
            conventions["lrn_convention"],
            conventions["input_size"],
            **options,
        )
    try:
        model.load_state_dict(state_dict, strict=True, assign=True)
    except RuntimeError as e:  # missing or unexpected keys, wrong shapes: torch names each
        raise weights_io.WeightsFileError(
            f"{path} refused for variant {variant!r}: {e}{weights_io.OTHER_VARIANT}"
        ) from e
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
    conventions["normalization"] exactly as the JAX evaluation does (image_files.normalize)."""
    x = image_files.normalize(np.asarray(images), conventions["normalization"])
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def load_image(path: str, conventions: dict[str, Any]) -> np.ndarray:
    """An image file as the (1, 3, input_size, input_size) float32 model input: the JAX
    evaluation's center view (shorter side to resize_size, center crop, normalization), as
    predict does."""
    x = image_files.load_image(path, weights_io.weights_config(conventions))  # (S, S, 3)
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None])

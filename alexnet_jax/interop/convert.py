"""Conversion between PyTorch AlexNet state dicts and this project's Flax parameters.

PyTorch key layouts (`<module>.weight` and `<module>.bias` for each layer):

  layer   torchvision    one_tower / paper
  conv1   features.0     features.0
  conv2   features.3     features.4    (paper: Conv2d(96, 256, 5, padding=2, groups=2))
  conv3   features.6     features.8
  conv4   features.8     features.10   (paper: groups=2)
  conv5   features.10    features.12   (paper: groups=2)
  fc6     classifier.1   classifier.1
  fc7     classifier.4   classifier.4
  fc8     classifier.6   classifier.6

`torchvision` is torchvision.models.alexnet: features = Conv 0, ReLU 1, MaxPool 2, Conv 3, ReLU 4,
MaxPool 5, Conv 6, ReLU 7, Conv 8, ReLU 9, Conv 10, ReLU 11, MaxPool 12; avgpool =
AdaptiveAvgPool2d(6); classifier = Dropout 0, Linear 1, ReLU 2, Dropout 3, Linear 4, ReLU 5,
Linear 6.

`one_tower` and `paper` use the stack of the common PyTorch re-implementations: features = Conv 0,
ReLU 1, LocalResponseNorm 2, MaxPool 3, Conv 4, ReLU 5, LocalResponseNorm 6, MaxPool 7, Conv 8,
ReLU 9, Conv 10, ReLU 11, Conv 12, ReLU 13, MaxPool 14; classifier = the torchvision classifier
above (Dropout 0, Linear 1, ReLU 2, Dropout 3, Linear 4, ReLU 5, Linear 6). That classifier drops
the pool5 features and the fc6 outputs, whereas the paper (and this project's `paper`/`one_tower`
model) drops the fc6 and fc7 outputs. Dropout has no weights and is off in evaluation, so weights
and eval-mode logits are the same either way; only training differs. torch.nn.LocalResponseNorm
divides alpha by n: evaluate converted weights with `lrn_convention="cuda_convnet"`.

The model's `width` option (one_tower's half nets) changes shapes, never keys: the functions below
take it. The other forward options change no weight (torch_models.py keeps every index).

Weights: conv OIHW (O, I / groups, kh, kw) <-> HWIO (kh, kw, I / groups, O), the group slices in the
same order on both sides; linear (out, in) <-> (in, out). fc6 also permutes its 9216 inputs, because
PyTorch flattens the pool5 output as (C, H, W) and this model flattens NHWC as (H, W, C).

PyTorch is not a dependency of this module: state dicts of numpy arrays work as well, and torch is
imported only to produce tensors (`to_torch_state_dict(..., as_torch=True)`); files are read and
written by weights_io.py.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from alexnet_jax.model import alexnet, torchvision
from alexnet_jax.model.layers import ConvSpec

# The variants with a PyTorch layout (the ImageNet nets; Figure 1's cifar4 has none).
VARIANTS = ("paper", "one_tower", "torchvision")
CONV_LAYERS = ("conv1", "conv2", "conv3", "conv4", "conv5")
DENSE_LAYERS = ("fc6", "fc7", "fc8")

_TORCH_MODULES = {
    "torchvision": dict(
        conv1="features.0",
        conv2="features.3",
        conv3="features.6",
        conv4="features.8",
        conv5="features.10",
        fc6="classifier.1",
        fc7="classifier.4",
        fc8="classifier.6",
    ),
    "one_tower": dict(
        conv1="features.0",
        conv2="features.4",
        conv3="features.8",
        conv4="features.10",
        conv5="features.12",
        fc6="classifier.1",
        fc7="classifier.4",
        fc8="classifier.6",
    ),
}
_TORCH_MODULES["paper"] = _TORCH_MODULES["one_tower"]

_POOL5_GRID = 6  # fc6 sees a (6, 6, C) grid: pool5 output, or torchvision's adaptive pool.


def _check_variant(variant: str) -> None:
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")


def conv_specs(
    variant: str, input_size: int = 227, width: str = "full", conv1_padding: str = "symmetric"
) -> tuple[ConvSpec, ...]:
    """The five convolutions of an ImageNet variant (VARIANTS), which its PyTorch layout follows."""
    _check_variant(variant)
    if variant == "torchvision":
        return torchvision.CONVS
    towers = 2 if variant == "paper" else 1
    return alexnet.conv_specs(towers, input_size, width, conv1_padding)


def flax_param_shapes(
    variant: str, num_classes: int = 1000, *, width: str = "full"
) -> dict[str, dict[str, tuple]]:
    """{layer: {"kernel": shape, "bias": shape}} of AlexNet(variant, num_classes, width=width)'s
    params. The other forward options (models.FORWARD_OPTIONS) change no shape: the options' rules
    keep the pool5 grid at 6x6."""
    _check_variant(variant)
    shapes, in_ch = {}, 3
    for spec in conv_specs(variant, width=width):
        k = spec.kernel
        kernel = (k, k, in_ch // spec.groups, spec.features)
        shapes[spec.name] = {"kernel": kernel, "bias": (spec.features,)}
        in_ch = spec.features
    fc_in = _POOL5_GRID * _POOL5_GRID * in_ch
    for name, out in zip(DENSE_LAYERS, (4096, 4096, num_classes), strict=True):
        shapes[name] = {"kernel": (fc_in, out), "bias": (out,)}
        fc_in = out
    return shapes


def torch_param_shapes(
    variant: str, num_classes: int = 1000, *, width: str = "full"
) -> dict[str, tuple]:
    """{state dict key: shape} of the PyTorch model of a variant (and width), in module order."""
    flax_shapes_by_layer = flax_param_shapes(variant, num_classes, width=width)  # checks variant
    modules = _TORCH_MODULES[variant]
    shapes = {}
    for layer, flax_shapes in flax_shapes_by_layer.items():
        kernel = flax_shapes["kernel"]
        if layer in CONV_LAYERS:
            weight = (kernel[3], kernel[2], kernel[0], kernel[1])  # (O, I / groups, kh, kw)
        else:
            weight = (kernel[1], kernel[0])  # (out, in)
        shapes[f"{modules[layer]}.weight"] = weight
        shapes[f"{modules[layer]}.bias"] = flax_shapes["bias"]
    return shapes


def _as_numpy(value: Any) -> np.ndarray:
    """A float32 numpy copy of a torch tensor (any device or dtype), jax array or numpy array."""
    if hasattr(value, "detach"):  # torch.Tensor; .float() also covers bfloat16, which numpy lacks.
        value = value.detach().cpu().float().numpy()
    return np.array(value, dtype=np.float32)


def _validate(arrays: Mapping[str, np.ndarray], expected: Mapping[str, tuple], what: str) -> None:
    """Raises one ValueError listing every missing, unexpected or wrongly shaped entry."""
    problems = [
        f"missing key {key!r} (expected shape {shape})"
        for key, shape in expected.items()
        if key not in arrays
    ]
    problems += [f"unexpected key {key!r}" for key in arrays if key not in expected]
    problems += [
        f"key {key!r}: expected shape {shape}, found {tuple(arrays[key].shape)}"
        for key, shape in expected.items()
        if key in arrays and tuple(arrays[key].shape) != shape
    ]
    if problems:
        raise ValueError(f"{what} does not match the AlexNet layout:\n  " + "\n  ".join(problems))


def _transposed(array: np.ndarray, axes: tuple[int, ...], block: int = 64) -> np.ndarray:
    """np.transpose(array, axes) as a C-contiguous copy, made in slabs of `block` along the largest
    axis: a few times faster than one strided copy for the 37M-value fc6 weight."""
    out = np.empty([array.shape[a] for a in axes], array.dtype)
    src_axis = int(np.argmax(array.shape))
    dst_axis = axes.index(src_axis)
    for start in range(0, array.shape[src_axis], block):
        src = [slice(None)] * array.ndim
        dst = [slice(None)] * array.ndim
        src[src_axis] = dst[dst_axis] = slice(start, start + block)
        out[tuple(dst)] = array[tuple(src)].transpose(axes)
    return out


def _fc6_torch_to_flax(weight: np.ndarray, channels: int) -> np.ndarray:
    """(out, C*H*W) PyTorch weight -> (H*W*C, out) kernel for an NHWC flatten."""
    out = weight.shape[0]
    grid = weight.reshape(out, channels, _POOL5_GRID, _POOL5_GRID)  # (out, C, H, W)
    return _transposed(grid, (2, 3, 1, 0)).reshape(-1, out)  # (H, W, C, out) -> (H*W*C, out)


def _fc6_flax_to_torch(kernel: np.ndarray, channels: int) -> np.ndarray:
    """(H*W*C, out) kernel -> (out, C*H*W) PyTorch weight; the inverse of _fc6_torch_to_flax."""
    out = kernel.shape[1]
    grid = kernel.reshape(_POOL5_GRID, _POOL5_GRID, channels, out)  # (H, W, C, out)
    return _transposed(grid, (3, 2, 0, 1)).reshape(out, -1)  # (out, C, H, W) -> (out, C*H*W)


def _infer_num_classes(arrays: Mapping[str, Any], key: str, axis: int, what: str) -> int:
    value = arrays.get(key)
    if value is None or len(value.shape) != 2:
        found = "it is missing" if value is None else f"found shape {tuple(value.shape)}"
        raise ValueError(f"{what}: {key!r} must be the 2-D fc8 weight ({found})")
    return int(value.shape[axis])


def from_torch_state_dict(
    state_dict: Mapping[str, Any],
    variant: str,
    *,
    num_classes: int | None = None,
    width: str = "full",
) -> dict[str, dict[str, np.ndarray]]:
    """Flax params {layer: {"kernel", "bias"}} (float32 numpy) from a PyTorch AlexNet state dict.

    Args:
      state_dict: key -> torch.Tensor or array, in the layout of the module docstring.
      variant: "torchvision", "one_tower" or "paper".
      num_classes: the expected number of classes; None takes it from the fc8 weight.
      width: the model's `width` ("full", or "half"/"half_code" for one_tower).
    Raises:
      ValueError: on missing or unexpected keys or wrong shapes, naming each key with the expected
        and the found shape.
    """
    _check_variant(variant)
    modules = _TORCH_MODULES[variant]
    arrays = {key: _as_numpy(value) for key, value in state_dict.items()}
    if num_classes is None:
        fc8_key = f"{modules['fc8']}.weight"
        num_classes = _infer_num_classes(arrays, fc8_key, 0, "state_dict")
    _validate(arrays, torch_param_shapes(variant, num_classes, width=width), "state_dict")
    params = {}
    for layer, module in modules.items():
        weight, bias = arrays[f"{module}.weight"], arrays[f"{module}.bias"]
        if layer in CONV_LAYERS:
            kernel = _transposed(weight, (2, 3, 1, 0))  # (O, I/g, kh, kw) -> (kh, kw, I/g, O)
        elif layer == "fc6":
            kernel = _fc6_torch_to_flax(weight, conv_specs(variant, width=width)[-1].features)
        else:
            kernel = _transposed(weight, (1, 0))  # (out, in) -> (in, out)
        params[layer] = {"kernel": kernel, "bias": bias}
    return params


def _flat_flax(params: Mapping[str, Any]) -> dict[str, Any]:
    """{"layer/name": leaf} of Flax params or of the variables dict {"params": {...}}."""
    if "params" in params and isinstance(params["params"], Mapping):
        params = params["params"]
    return {
        f"{layer}/{name}": value
        for layer, leaves in params.items()
        for name, value in (leaves.items() if isinstance(leaves, Mapping) else [("", leaves)])
    }


def check_flax_params(params: Mapping[str, Any], variant: str, *, width: str = "full") -> int:
    """The number of classes of Flax params that have exactly the names and shapes of `variant`
    (and `width`); ValueError otherwise, naming each offending key. Only looks at shapes: copies
    nothing.

    Args:
      params: {layer: {"kernel", "bias"}}, or the variables dict {"params": {...}} holding it.
    """
    _check_variant(variant)
    arrays = {  # anything with a shape as it is (no copy); other leaves as arrays
        key: value if hasattr(value, "shape") else np.asarray(value)
        for key, value in _flat_flax(params).items()
    }
    num_classes = _infer_num_classes(arrays, "fc8/kernel", 1, "params")
    expected = {
        f"{layer}/{name}": shape
        for layer, leaves in flax_param_shapes(variant, num_classes, width=width).items()
        for name, shape in leaves.items()
    }
    _validate(arrays, expected, "params")
    return num_classes


def to_torch_state_dict(
    params: Mapping[str, Any], variant: str, *, as_torch: bool = True, width: str = "full"
) -> dict[str, Any]:
    """A PyTorch state dict (layout of the module docstring) from Flax params.

    Args:
      params: {layer: {"kernel", "bias"}}, or the variables dict {"params": {...}} holding it.
      variant: "torchvision", "one_tower" or "paper".
      as_torch: torch.Tensor values (imports torch) if True, else float32 numpy arrays.
      width: the model's `width` ("full", or "half"/"half_code" for one_tower).
    Raises:
      ValueError: on missing or unexpected layers/parameters or wrong shapes, naming each.
    """
    check_flax_params(params, variant, width=width)
    arrays = {key: _as_numpy(value) for key, value in _flat_flax(params).items()}
    state_dict = {}
    for layer, module in _TORCH_MODULES[variant].items():
        kernel = arrays[f"{layer}/kernel"]
        if layer in CONV_LAYERS:
            weight = _transposed(kernel, (3, 2, 0, 1))  # (kh, kw, I/g, O) -> (O, I/g, kh, kw)
        elif layer == "fc6":
            weight = _fc6_flax_to_torch(kernel, conv_specs(variant, width=width)[-1].features)
        else:
            weight = _transposed(kernel, (1, 0))  # (in, out) -> (out, in)
        state_dict[f"{module}.weight"] = weight
        state_dict[f"{module}.bias"] = arrays[f"{layer}/bias"]
    if as_torch:
        torch = _import_torch("to_torch_state_dict(as_torch=True)")
        state_dict = {key: torch.from_numpy(value) for key, value in state_dict.items()}
    return state_dict


def _import_torch(purpose: str):
    try:
        import torch
    except ImportError as e:
        raise ImportError(
            f"{purpose} needs PyTorch: `pip install torch` (the CPU wheel is enough)"
        ) from e
    return torch

"""Reading and writing AlexNet weight files (.pth, .safetensors, .npz) without ever running code.

A weights file from elsewhere is data, not a program: `.pth` files are read with
`torch.load(weights_only=True)`, whose restricted unpickler refuses any object but tensors and
plain containers; `.safetensors` and `.npz` (with `allow_pickle=False`) cannot hold code at all. On
top of that every file must be a flat mapping of parameter name -> tensor with exactly the names
and shapes of the variant; anything else is refused with one `WeightsFileError` naming the file and
the offending key.

Layouts: `.pth` and `.safetensors` hold a PyTorch state dict (see alexnet_jax/convert.py);
`.npz` holds the Flax params with '/'-joined paths ("conv1/kernel", ...).
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from alexnet_jax import convert
from alexnet_jax.errors import UserError

FORMATS = (".pth", ".safetensors", ".npz")
_TORCH_SUFFIXES = (".pth", ".pt", ".bin")


class WeightsFileError(UserError, ValueError):
    """A weights file that is unreadable, holds anything but tensors, or does not fit the model."""


def file_format(path: str) -> str:
    """The format of `path` from its suffix (.pt and .bin count as .pth); raises otherwise."""
    suffix = os.path.splitext(path)[1].lower()
    if suffix in _TORCH_SUFFIXES:
        return ".pth"
    if suffix in FORMATS:
        return suffix
    raise WeightsFileError(f"{path}: unknown weights format {suffix!r}; use one of {FORMATS}.")


def _import_optional(module: str, purpose: str) -> Any:
    """Imports torch or safetensors only when a file of that format is read or written."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        package = module.split(".")[0]
        raise WeightsFileError(
            f"{purpose} needs the `{package}` package: pip install {package}"
        ) from e


def _refusal_reason(error: Exception) -> str:
    """The informative line of a torch.load error (its 'WeightsUnpickler error: ...' if any)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    reason = next((line for line in lines if "WeightsUnpickler error" in line), None)
    reason = reason or (lines[0] if lines else type(error).__name__)
    return reason.split(". ")[0].rstrip(".")  # not torch's advice on how to allow the object


def _read_torch(path: str) -> Mapping[str, Any]:
    """Unpickles with torch's weights-only unpickler; every failure becomes one refusal."""
    torch = _import_optional("torch", f"Reading {path}")
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # UnpicklingError, RuntimeError, KeyError, EOFError, ...
        raise WeightsFileError(
            f"{path} refused: it is not a plain PyTorch state dict of tensors "
            f"({_refusal_reason(e)}). Weights files are only read with "
            "torch.load(weights_only=True), which never runs code from the file."
        ) from e
    if not isinstance(loaded, Mapping):
        raise WeightsFileError(f"{path} refused: it holds a {type(loaded).__name__}, not a dict.")
    for key, value in loaded.items():
        if not isinstance(value, torch.Tensor):
            raise WeightsFileError(
                f"{path} refused: entry {key!r} is a {type(value).__name__}, not a tensor "
                "(save `model.state_dict()`, not a training checkpoint)."
            )
    return loaded


def _read_safetensors(path: str) -> dict[str, np.ndarray]:
    st_numpy = _import_optional("safetensors.numpy", f"Reading {path}")
    try:
        return dict(st_numpy.load_file(path))
    except Exception as e:  # SafetensorError, OSError: a corrupt or foreign file
        raise WeightsFileError(f"{path} refused: not a readable safetensors file ({e}).") from e


def read_state_dict(path: str) -> dict[str, Any]:
    """A PyTorch-layout state dict (name -> tensor/array) from a .pth or .safetensors file.

    A "module." prefix on every key (nn.DataParallel) is dropped.
    """
    if not os.path.isfile(path):
        raise WeightsFileError(f"{path}: no such weights file.")
    fmt = file_format(path)
    if fmt == ".npz":
        raise WeightsFileError(f"{path}: .npz holds Flax params, not a PyTorch state dict.")
    state_dict = dict(_read_torch(path) if fmt == ".pth" else _read_safetensors(path))
    if state_dict and all(str(key).startswith("module.") for key in state_dict):
        state_dict = {key.removeprefix("module."): value for key, value in state_dict.items()}
    return state_dict


def _read_npz_params(path: str) -> dict[str, dict[str, np.ndarray]]:
    """Flax params {layer: {name: array}} from '/'-joined keys; object arrays are refused."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            flat = {key: npz[key] for key in npz.files}
    except Exception as e:  # ValueError (pickled objects), BadZipFile, OSError
        raise WeightsFileError(f"{path} refused: not a plain .npz of arrays ({e}).") from e
    params: dict[str, dict[str, np.ndarray]] = {}
    for key, value in flat.items():
        layer, _, name = key.partition("/")
        params.setdefault(layer, {})[name] = value
    return params


def load_weights(path: str, variant: str, num_classes: int | None = None) -> dict[str, Any]:
    """Flax params {layer: {"kernel", "bias"}} of `variant` from a .pth, .safetensors or .npz file.

    Raises:
      WeightsFileError: the file is missing, unreadable, holds anything but tensors, or its names or
        shapes do not fit `variant` (the message names each offending key).
    """
    if not os.path.isfile(path):
        raise WeightsFileError(f"{path}: no such weights file.")
    try:
        if file_format(path) == ".npz":
            params = _read_npz_params(path)
            convert.to_torch_state_dict(params, variant, as_torch=False)  # validates names/shapes
            return params
        return convert.from_torch_state_dict(
            read_state_dict(path), variant, num_classes=num_classes
        )
    except WeightsFileError:
        raise
    except ValueError as e:
        raise WeightsFileError(f"{path} refused for variant {variant!r}: {e}") from e


def save_weights(params: Mapping[str, Any], variant: str, path: str) -> str:
    """Writes Flax params of `variant` as .pth / .safetensors (PyTorch layout) or .npz (Flax)."""
    fmt = file_format(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    if fmt == ".npz":
        convert.to_torch_state_dict(params, variant, as_torch=False)  # validates names and shapes
        params = params.get("params", params)
        flat = {
            f"{layer}/{name}": np.asarray(value, np.float32)
            for layer, leaves in params.items()
            for name, value in leaves.items()
        }
        np.savez(path, **flat)
    elif fmt == ".safetensors":
        st_numpy = _import_optional("safetensors.numpy", f"Writing {path}")
        st_numpy.save_file(convert.to_torch_state_dict(params, variant, as_torch=False), path)
    else:
        torch = _import_optional("torch", f"Writing {path}")
        torch.save(convert.to_torch_state_dict(params, variant, as_torch=True), path)
    return path

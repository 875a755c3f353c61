"""Reading and writing AlexNet weight files (.pth, .safetensors, .npz) without ever running code.

A weights file from elsewhere is data, not a program: `.pth` files are read with
`torch.load(weights_only=True)`, whose restricted unpickler refuses any object but tensors and
plain containers; `.safetensors` and `.npz` (with `allow_pickle=False`) cannot hold code at all. On
top of that every file must be a flat mapping of parameter name -> tensor with exactly the names
and shapes of the variant; anything else is refused with one `WeightsFileError` naming the file and
the offending key.

Layouts: `.pth` and `.safetensors` hold a PyTorch state dict (see alexnet_jax/interop/convert.py);
`.npz` holds the Flax params with '/'-joined paths ("conv1/kernel", ...).

Conventions: the same numbers mean different things under different preprocessing and LRN
conventions, so files written here record them (`conventions_of`: variant, num_classes,
input_size, resize_size, normalization, lrn_convention, the forward options of the model that
differ from their defaults, and the class names when the run has them) and `read_conventions`
reads them back; a file from elsewhere has none (None). A forward option (models.FORWARD_OPTIONS:
width, activation, LRN and pooling choices, ...) a file does not record has its default, the
network every file had before the options existed, so a file of the default network holds exactly
what it held before (`with_option_defaults` fills them in). Where they live, so that every format
still loads as before:
  .pth          the state dict's `_metadata[""]["alexnet_jax"]` (JSON): `_metadata` is the
                attribute torch's own state dicts carry (per-module versions); it survives
                `torch.load(weights_only=True)`, and `load_state_dict(strict=True)` ignores keys
                it does not know.
  .safetensors  the header's metadata, one string per field (lists as JSON), beside "format": "pt".
  .npz          one extra entry `__conventions__`: the JSON as a uint8 array.

Files are written to a temporary file in the target's directory and renamed over the target, so a
failed write (a full disk) leaves no partial file and an existing file intact.
"""

from __future__ import annotations

import collections
import contextlib
import importlib
import io
import json
import os
import secrets
import zipfile
from collections.abc import Mapping, Sequence
from typing import Any

import ml_collections
import numpy as np

from alexnet_jax.core import errors, rules
from alexnet_jax.core.errors import ConfigError, UserError
from alexnet_jax.data import recipe
from alexnet_jax.interop import convert
from alexnet_jax.model import models

FORMATS = (".pth", ".safetensors", ".npz")
_TORCH_SUFFIXES = (".pth", ".pt", ".bin")

# The conventions a file records: every field is required, the class lists are optional.
CONVENTION_FIELDS = (
    "variant",
    "num_classes",
    "input_size",
    "resize_size",
    "normalization",
    "lrn_convention",
)
# The conventions of PyTorch-trained weights (a file that records none, e.g. torchvision's):
# torchvision's preprocessing (shorter side 256, mean/std) and torch.nn.LocalResponseNorm, which
# divides alpha by n. The input size is each variant's published one (models.default_input_size).
PYTORCH_CONVENTIONS = {
    "resize_size": 256,
    "normalization": "mean_std",
    "lrn_convention": "cuda_convnet",
}
# The forward options, recorded only where they differ from these defaults (module docstring).
OPTION_DEFAULTS = models.FORWARD_OPTIONS
CLASS_FIELDS = ("class_names", "class_synsets")  # readable names; WordNet synsets (ImageNet)
_INT_FIELDS = ("num_classes", "input_size", "resize_size", "pool_window", "pool_stride")
# Fields whose values are not strings: JSON in a safetensors header.
_JSON_FIELDS = (*_INT_FIELDS, "lrn", "spatial_norm2", *CLASS_FIELDS)
_TORCH_METADATA_KEY = "alexnet_jax"  # under the state dict's _metadata[""]
NPZ_CONVENTIONS = "__conventions__"
_RECORDED_FIELDS = (*CONVENTION_FIELDS, *OPTION_DEFAULTS, *CLASS_FIELDS)
# The config rules (models.RULES, recipe.RULES) of the recorded fields: one table of rules.
_CONVENTION_RULES = tuple(
    rule
    for rule in (*models.RULES, *recipe.RULES)
    if rule.field in CONVENTION_FIELDS or rule.field in OPTION_DEFAULTS
)


class WeightsFileError(UserError, ValueError):
    """A weights file that is unreadable, holds anything but tensors, does not fit the model, or
    cannot be written."""


# What to do about a file that does not fit the variant taken (a .pth re-saved as a plain dict
# lost the conventions export records, its variant among them: hostile pass 23, #61).
OTHER_VARIANT = (
    "\nIf it holds another variant's weights (a file that does not record its variant, or one "
    "re-saved without its metadata), name that variant: predict --variant, --config.variant."
)


def file_format(path: str) -> str:
    """The format of `path` from its suffix (.pt and .bin count as .pth); raises otherwise."""
    suffix = os.path.splitext(path)[1].lower()
    if suffix in _TORCH_SUFFIXES:
        return ".pth"
    if suffix in FORMATS:
        return suffix
    raise WeightsFileError(f"{path}: unknown weights format {suffix!r}; use one of {FORMATS}.")


def import_optional(module: str, purpose: str) -> Any:
    """Imports torch or safetensors only when a file of that format is read or written."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        package = module.split(".")[0]
        raise WeightsFileError(
            f"{purpose} needs the `{package}` package: pip install {package}"
        ) from e


# ---- Conventions ------------------------------------------------------------------------------


def conventions_of(
    config: Mapping[str, Any], classes: Sequence[tuple[str | None, str]] | None = None
) -> dict[str, Any]:
    """The conventions (CONVENTION_FIELDS, and CLASS_FIELDS when known) of a run's config, or of a
    conventions dict (returned checked), as plain JSON values.

    classes: (synset or None, readable name) per class (predict.known_class_names); None: the
      config's own `class_names`/`class_synsets` if it has them, else no class names.
    Raises:
      ConfigError: a field is missing or breaks its config rule.
    """
    missing = [field for field in CONVENTION_FIELDS if field not in config]
    if missing:
        raise ConfigError(f"conventions need the config field(s) {', '.join(missing)}.")
    conventions: dict[str, Any] = {field: config[field] for field in CONVENTION_FIELDS}
    conventions.update(
        (field, config[field])
        for field, default in OPTION_DEFAULTS.items()
        if field in config and config[field] != default
    )
    for field in _INT_FIELDS:  # numpy or ml_collections ints -> int
        if rules.is_int(conventions.get(field)):
            conventions[field] = int(conventions[field])
    if classes is not None:
        conventions["class_names"] = [str(name) for _, name in classes]
        if all(synset for synset, _ in classes):
            conventions["class_synsets"] = [str(synset) for synset, _ in classes]
    else:
        for field in CLASS_FIELDS:
            if config.get(field) is not None:
                conventions[field] = [str(name) for name in config[field]]
    _check_conventions(conventions)
    return conventions


def with_option_defaults(conventions: Mapping[str, Any]) -> dict[str, Any]:
    """`conventions` with every forward option, the default where the file records none."""
    return {**OPTION_DEFAULTS, **conventions}


def _check_conventions(conventions: Mapping[str, Any]) -> None:
    """ConfigError for the first field that breaks its config rule or a class list that does
    not name every class."""
    complete = ml_collections.ConfigDict(with_option_defaults(conventions))
    rules.check(complete, _CONVENTION_RULES)
    for field in CLASS_FIELDS:
        names = conventions.get(field)
        if names is None:
            continue
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise ConfigError(f"{field} must be a list of strings.")
        if len(names) != conventions["num_classes"]:
            raise ConfigError(
                f"{field} must name each of the {conventions['num_classes']} classes, "
                f"got {len(names)} names."
            )


def _checked(conventions: Any, path: str) -> dict[str, Any]:
    """The conventions read from `path`, checked; a WeightsFileError naming the file if broken."""
    try:
        if not isinstance(conventions, Mapping):
            raise ConfigError(f"they are a {type(conventions).__name__}, not a JSON object")
        missing = [field for field in CONVENTION_FIELDS if field not in conventions]
        if missing:
            raise ConfigError(f"missing {', '.join(missing)}")
        conventions = {k: conventions[k] for k in _RECORDED_FIELDS if k in conventions}
        _check_conventions(conventions)
    except ConfigError as e:
        raise WeightsFileError(
            f"{path} refused: the conventions recorded in it are damaged ({e})."
        ) from None
    return conventions


def _conventions_json(conventions: Mapping[str, Any]) -> str:
    return json.dumps(conventions, ensure_ascii=False)


def _safetensors_metadata(conventions: Mapping[str, Any] | None) -> dict[str, str]:
    """The header metadata: "format": "pt" (a PyTorch state dict) and one string per field."""
    metadata = {"format": "pt"}
    for field, value in (conventions or {}).items():
        metadata[field] = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return metadata


def _from_safetensors_metadata(metadata: Mapping[str, str] | None, path: str) -> dict | None:
    metadata = metadata or {}
    if not any(field in metadata for field in CONVENTION_FIELDS):
        return None  # a file from elsewhere
    conventions: dict[str, Any] = {}
    for field in _RECORDED_FIELDS:
        if field not in metadata:
            continue
        text = metadata[field]
        if field in _JSON_FIELDS:
            try:
                conventions[field] = json.loads(text)
            except ValueError:
                conventions[field] = text  # reported by the rules, naming the field
        else:
            conventions[field] = text
    return _checked(conventions, path)


def _from_json(text: str | bytes, path: str) -> dict[str, Any]:
    try:
        conventions = json.loads(text)
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError
        raise WeightsFileError(
            f"{path} refused: the conventions recorded in it are not JSON ({e})."
        ) from None
    return _checked(conventions, path)


def read_conventions(path: str) -> dict[str, Any] | None:
    """The conventions recorded in a weights file (see the module docstring), or None for a file
    that records none (e.g. torchvision's). Reads only what it needs: no tensor of a zip-format
    .pth or of an .npz is loaded.

    Raises:
      WeightsFileError: the file is missing, unreadable, or its recorded conventions are damaged.
    """
    fmt = _existing_file_format(path)
    if fmt == ".npz":
        with _open_npz(path) as npz:
            if NPZ_CONVENTIONS not in npz.files:
                return None
            try:
                raw = npz[NPZ_CONVENTIONS]
            except ValueError as e:  # a pickled object
                raise WeightsFileError(f"{path} refused: {NPZ_CONVENTIONS}: {e}.") from e
        if raw.dtype != np.uint8 or raw.ndim != 1:
            raise WeightsFileError(f"{path} refused: {NPZ_CONVENTIONS} is not UTF-8 bytes.")
        return _from_json(raw.tobytes(), path)
    if fmt == ".safetensors":
        safetensors = import_optional("safetensors", f"Reading {path}")
        try:
            with safetensors.safe_open(path, framework="numpy") as f:
                metadata = f.metadata()
        except Exception as e:  # SafetensorError, OSError: a corrupt or foreign file
            raise WeightsFileError(f"{path} refused: not a readable safetensors file ({e}).") from e
        return _from_safetensors_metadata(metadata, path)
    loaded = _read_torch(path, mmap=zipfile.is_zipfile(path))
    metadata = getattr(loaded, "_metadata", None)
    root = metadata.get("") if isinstance(metadata, Mapping) else None
    if not isinstance(root, Mapping) or _TORCH_METADATA_KEY not in root:
        return None
    return _from_json(root[_TORCH_METADATA_KEY], path)


# ---- Reading ----------------------------------------------------------------------------------


def _existing_file_format(path: str) -> str:
    if os.path.exists(path) and not os.path.isfile(path):  # hostile pass 26, #34
        kind = "a folder" if os.path.isdir(path) else "a device, a FIFO or another special file"
        raise WeightsFileError(
            f"{path} is not a regular file (it is {kind}): give a weights file "
            f"({', '.join(FORMATS)}), e.g. one written by alexnet_jax.tools.export."
        )
    if not os.path.isfile(path):
        raise WeightsFileError(f"{path}: no such weights file.")
    return file_format(path)


def _refusal_reason(error: Exception) -> str:
    """The informative line of a torch.load error (its 'WeightsUnpickler error: ...' if any)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    reason = next((line for line in lines if "WeightsUnpickler error" in line), None)
    reason = reason or (lines[0] if lines else type(error).__name__)
    return reason.split(". ")[0].rstrip(".")  # not torch's advice on how to allow the object


def _read_torch(path: str, mmap: bool = False) -> Mapping[str, Any]:
    """Unpickles with torch's weights-only unpickler; every failure becomes one refusal.

    mmap: map the tensors instead of reading them (zip-format files only), to read metadata.
    """
    torch = import_optional("torch", f"Reading {path}")
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as e:  # UnpicklingError, RuntimeError, KeyError, EOFError, ...
        raise WeightsFileError(
            f"{path} refused: it is not a plain PyTorch state dict of tensors "
            f"({_refusal_reason(e)}). Weights files are only read with "
            "torch.load(weights_only=True), which never runs code from the file."
        ) from e
    if not isinstance(loaded, Mapping):
        raise WeightsFileError(f"{path} refused: it holds a {type(loaded).__name__}, not a dict.")
    tensors = collections.OrderedDict()  # (with the file's _metadata: its conventions)
    if hasattr(loaded, "_metadata"):
        tensors._metadata = loaded._metadata
    for key, value in loaded.items():
        if not isinstance(value, torch.Tensor):
            raise WeightsFileError(
                f"{path} refused: entry {key!r} is a {type(value).__name__}, not a tensor "
                "(save `model.state_dict()`, not a training checkpoint)."
            )
        if value.is_meta:  # shapes only: a model built on the "meta" device, never filled
            raise WeightsFileError(
                f"{path} refused: tensor {key!r} holds no values (it is on PyTorch's 'meta' "
                "device): save the state dict of a model whose weights were loaded or trained."
            )
        # An nn.Parameter (requires_grad) or a sparse tensor holds plain weights all the same.
        dense = value.to_dense() if value.layout != torch.strided else value
        tensors[key] = dense.detach()
    return tensors


def _read_safetensors(path: str) -> dict[str, np.ndarray]:
    st_numpy = import_optional("safetensors.numpy", f"Reading {path}")
    try:
        return dict(st_numpy.load_file(path))
    except Exception as e:  # SafetensorError, OSError: a corrupt or foreign file
        raise WeightsFileError(f"{path} refused: not a readable safetensors file ({e}).") from e


def read_state_dict(path: str) -> dict[str, Any]:
    """A PyTorch-layout state dict (name -> tensor/array) from a .pth or .safetensors file.

    A "module." prefix on every key (nn.DataParallel) is dropped.
    """
    fmt = _existing_file_format(path)
    if fmt == ".npz":
        raise WeightsFileError(f"{path}: .npz holds Flax params, not a PyTorch state dict.")
    state_dict = dict(_read_torch(path) if fmt == ".pth" else _read_safetensors(path))
    if state_dict and all(str(key).startswith("module.") for key in state_dict):
        state_dict = {key.removeprefix("module."): value for key, value in state_dict.items()}
    return state_dict


def _open_npz(path: str) -> Any:
    try:
        return np.load(path, allow_pickle=False)
    except Exception as e:  # BadZipFile, OSError
        raise WeightsFileError(f"{path} refused: not a plain .npz of arrays ({e}).") from e


def _read_npz_params(path: str) -> dict[str, dict[str, np.ndarray]]:
    """Flax params {layer: {name: array}} from '/'-joined keys; object arrays are refused."""
    try:
        with _open_npz(path) as npz:
            flat = {key: npz[key] for key in npz.files if key != NPZ_CONVENTIONS}
    except WeightsFileError:
        raise
    except Exception as e:  # ValueError (pickled objects), BadZipFile, OSError
        raise WeightsFileError(f"{path} refused: not a plain .npz of arrays ({e}).") from e
    params: dict[str, dict[str, np.ndarray]] = {}
    for key, value in flat.items():
        layer, _, name = key.partition("/")
        params.setdefault(layer, {})[name] = value
    return params


def load_weights(
    path: str, variant: str, num_classes: int | None = None, width: str = "full"
) -> dict[str, Any]:
    """Flax params {layer: {"kernel", "bias"}} of `variant` (and `width`, the model option) from a
    .pth, .safetensors or .npz file.

    Raises:
      WeightsFileError: the file is missing, unreadable, holds anything but tensors, or its names or
        shapes do not fit `variant` (the message names each offending key).
    """
    fmt = _existing_file_format(path)
    try:
        if fmt == ".npz":
            params = _read_npz_params(path)
            found = convert.check_flax_params(params, variant, width=width)  # names and shapes
            if num_classes is not None and found != num_classes:
                raise ValueError(f"fc8 has {found} classes, expected {num_classes}")
        else:
            state_dict = read_state_dict(path)
            _check_values(state_dict.items(), path)
            params = convert.from_torch_state_dict(
                state_dict, variant, num_classes=num_classes, width=width
            )
    except WeightsFileError:
        raise
    except ValueError as e:
        raise WeightsFileError(f"{path} refused for variant {variant!r}: {e}{OTHER_VARIANT}") from e
    _check_values(((f"{k}/{n}", v) for k, d in params.items() for n, v in d.items()), path)
    return params


def _check_values(tensors: Any, path: str) -> None:
    """WeightsFileError naming the first tensor that is not floating point, or holds NaN/Inf:
    the weights of a model are finite floats (an int32 tensor or a NaN evaluates to nonsense)."""
    for name, value in tensors:
        if hasattr(value, "is_floating_point") and value.is_floating_point():
            value = value.float()  # a torch tensor (bfloat16 has no NumPy dtype)
        array = np.asarray(value)
        if not np.issubdtype(array.dtype, np.floating):
            raise WeightsFileError(
                f"{path} refused: tensor {name!r} holds {array.dtype}, not floating-point weights."
            )
        if not np.isfinite(array).all():
            raise WeightsFileError(f"{path} refused: tensor {name!r} holds NaN or Inf values.")


# ---- Writing ----------------------------------------------------------------------------------


def check_output_path(path: str) -> str:
    """The format of an output path that can be written, else one WeightsFileError: an unknown
    suffix, a directory, a parent that is a file, or an existing file the user may not write.
    Cheap: call it before computing what to write."""
    fmt = file_format(path)
    if os.path.isdir(path):
        raise WeightsFileError(
            f"{path} is a directory: name the file to write, ending in one of {FORMATS}."
        )
    parent = os.path.dirname(os.path.abspath(path))
    while not os.path.exists(parent):  # the nearest existing ancestor must be a directory
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise WeightsFileError(f"Cannot write {path}: {parent} is a file, not a directory.")
    if os.path.exists(path) and not os.access(path, os.W_OK):  # the rename would replace it
        raise WeightsFileError(
            f"{path} exists and is read-only (you may not write it): remove it first, or choose "
            "another path."
        )
    return fmt


def _serialized(
    params: Mapping[str, Any], variant: str, fmt: str, conventions: Mapping | None, path: str
) -> Any:
    """The whole file's bytes (a bytes-like object), made in memory so that writing it is one
    plain file write whose failure carries the system's errno."""
    width = with_option_defaults(conventions or {})["width"]
    if fmt == ".npz":
        convert.check_flax_params(params, variant, width=width)  # names and shapes
        params = params.get("params", params)
        flat = {
            f"{layer}/{name}": np.asarray(value, np.float32)
            for layer, leaves in params.items()
            for name, value in leaves.items()
        }
        if conventions is not None:
            text = _conventions_json(conventions).encode("utf-8")
            flat[NPZ_CONVENTIONS] = np.frombuffer(text, np.uint8)
        buffer = io.BytesIO()
        np.savez(buffer, **flat)  # a file object: numpy appends no ".npz" to the name
        return buffer.getbuffer()
    if fmt == ".safetensors":
        st_numpy = import_optional("safetensors.numpy", f"Writing {path}")
        state_dict = convert.to_torch_state_dict(params, variant, as_torch=False, width=width)
        return st_numpy.save(state_dict, metadata=_safetensors_metadata(conventions))
    torch = import_optional("torch", f"Writing {path}")
    state_dict = collections.OrderedDict(
        convert.to_torch_state_dict(params, variant, as_torch=True, width=width)
    )
    if conventions is not None:
        state_dict._metadata = collections.OrderedDict(  # type: ignore[attr-defined]
            {"": {_TORCH_METADATA_KEY: _conventions_json(conventions)}}
        )
    buffer = io.BytesIO()
    torch.save(state_dict, buffer)
    return buffer.getbuffer()


def _replace_file(path: str, data: Any) -> None:
    """Writes `data` to a temporary file beside `path` and renames it over `path`: the target is
    either the old file or the whole new one, never a partial file."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    tmp = errors.temporary_path(
        os.path.join(directory, os.path.basename(path)), ".", f".{secrets.token_hex(4)}.tmp"
    )
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


def save_weights(
    params: Mapping[str, Any], config_or_conventions: Mapping[str, Any] | str, path: str
) -> str:
    """Writes Flax params as .pth / .safetensors (PyTorch layout) or .npz (Flax) at exactly `path`
    (any case of the suffix), recording the conventions; returns `path`.

    config_or_conventions: a run's config or a `conventions_of` dict, whose conventions the file
      records (class names only from a conventions dict, or a config that has them); a bare
      variant name writes the layout alone, with no conventions (like a file from elsewhere).
    Raises:
      WeightsFileError: a path that cannot be written (a directory, a full disk, a read-only
        place), with the system's reason; an existing file at `path` is then left as it was.
    """
    fmt = check_output_path(path)
    if isinstance(config_or_conventions, str):
        variant, conventions = config_or_conventions, None
    else:
        conventions = conventions_of(config_or_conventions)
        variant = conventions["variant"]
    data = _serialized(params, variant, fmt, conventions, path)
    try:
        _replace_file(path, data)
    except OSError as e:
        reason = errors.storage_error_reason(e, with_file=False)
        kept = " (the existing file is unchanged)" if os.path.isfile(path) else ""
        raise WeightsFileError(
            f"Writing {path} failed: {reason}; nothing was written{kept}. Free disk space, fix "
            "the directory's permissions or choose another path, then rerun the same command."
        ) from e
    return path


# ---- Configs of weights files ------------------------------------------------------------------


# The variant of a weights file that records no conventions when --variant is not given.
DEFAULT_IMPORT_VARIANT = "torchvision"


def weights_config(conventions: Any) -> ml_collections.ConfigDict:
    """The model and preprocessing fields of weights with these conventions
    (CONVENTION_FIELDS, the forward options recorded or their defaults; CLASS_FIELDS
    kept when present, else no class names)."""
    recorded = with_option_defaults(conventions)
    model = models.create(
        conventions["variant"],
        num_classes=conventions["num_classes"],
        input_size=conventions["input_size"],
        lrn_convention=conventions["lrn_convention"],
        pool_impl="reduce_window",
        **{field: recorded[field] for field in OPTION_DEFAULTS},
    )
    preprocessing = recipe.Recipe(
        input_size=model.input_size,
        resize_size=conventions["resize_size"],
        normalization=conventions["normalization"],
    )
    classes = {field: conventions.get(field) for field in CLASS_FIELDS}
    return ml_collections.ConfigDict(
        {"dataset": "", **models.model_fields(model), **preprocessing.config_fields(), **classes}
    )


def imported_weights_config(variant: str, num_classes: int = 1000) -> ml_collections.ConfigDict:
    """The model and preprocessing fields for PyTorch-trained weights of `variant` (a file that
    records no conventions).

    PyTorch models take mean/std-normalized 224 (torchvision) crops of 256-resized images, and
    torch.nn.LocalResponseNorm divides alpha by n (convert.py), hence "cuda_convnet". Class names:
    the ImageNet table for 1000 classes.
    """
    config = weights_config(
        {
            "variant": variant,
            "num_classes": num_classes,
            "input_size": models.default_input_size(variant),
            **PYTORCH_CONVENTIONS,
        }
    )
    del config["class_names"], config["class_synsets"]  # none recorded: the dataset's
    config.dataset = "imagenet2012" if num_classes == 1000 else ""
    return config

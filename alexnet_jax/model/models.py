"""The variants by name, and the model fields of a config.

    model = models.create_model(config)  # REGISTRY[config.variant](**the model fields)

REGISTRY maps each variant's name to its Flax module (a subclass of layers.Net):
  "paper"        the paper's two-tower net (alexnet.PaperAlexNet)
  "one_tower"    the same with no groups (alexnet.OneTowerAlexNet)
  "torchvision"  torchvision's variant (torchvision.TorchvisionAlexNet)
  "cifar4"       Figure 1's small CIFAR-10 net (cifar4.Cifar4)
A new variant is one module and one `register("name")` (docs/HACKING.md); the config's rules
(RULES) read what each variant declares (its input sizes, the forward options it implements,
its towers), so they need no change.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from alexnet_jax.core import rules
from alexnet_jax.model.alexnet import OneTowerAlexNet, PaperAlexNet
from alexnet_jax.model.cifar4 import Cifar4
from alexnet_jax.model.layers import (
    ACTIVATIONS,
    FORWARD_OPTIONS,
    INITS,
    LRN_CONVENTIONS,
    POOL_IMPLS,
    Net,
    net_fields,
)
from alexnet_jax.model.lrn import IMPLEMENTATIONS as LRN_IMPLEMENTATIONS
from alexnet_jax.model.torchvision import TorchvisionAlexNet

REGISTRY: dict[str, type[Net]] = {}


def register(name: str):
    """Class decorator: the variant `name` is this Net subclass (`--config.variant=name`)."""

    def add(cls: type[Net]) -> type[Net]:
        REGISTRY[name] = cls
        return cls

    return add


register("paper")(PaperAlexNet)
register("one_tower")(OneTowerAlexNet)
register("torchvision")(TorchvisionAlexNet)
register("cifar4")(Cifar4)

DTYPES = ("float32", "bfloat16")  # computation dtypes; parameters are always float32
BLOCK1_ORDERS = ("conv_relu_lrn_pool", "conv_lrn_pool_relu")
CONV1_PADDINGS = ("symmetric", "overhang")
POOLINGS = ((3, 2), (2, 2))  # (window, stride): overlapping, and section 3.4's comparison
WIDTHS = ("full", "half", "half_code")

# The config fields that define the network: the variant's name and the Net fields (declared
# once, on layers.Net). create_model, the tools that rebuild a run's model and imported weights'
# configs read exactly these.
MODEL_FIELDS = ("variant", *net_fields())


def get_variant(name: str) -> type[Net]:
    """The module registered as `name`; ValueError naming the known ones otherwise."""
    if name not in REGISTRY:
        raise ValueError(f"variant must be one of {list(REGISTRY)}, got {name!r}")
    return REGISTRY[name]


def create(variant: str = "paper", **fields: Any) -> Net:
    """The variant registered as `variant` with these Net fields (the defaults for the others)."""
    cls = get_variant(variant)
    if fields.get("mesh") is not None and cls.towers == 1:
        raise ValueError(f"a tower mesh needs a variant with towers, got {variant!r}")
    model = cls(**fields)
    fields = ml_collections.ConfigDict(model_fields(model))
    rules.check(fields, (rules.positive_int("num_classes"), *RULES))  # once, at construction
    return model


def create_model(config: Any, **overrides: Any) -> Net:
    """The network of a config's model fields (MODEL_FIELDS; see configs/default.py)."""
    fields: dict[str, Any] = {name: config[name] for name in MODEL_FIELDS[1:]}
    fields["dtype"] = jnp.dtype(fields["dtype"])
    fields.update(overrides)
    return create(config.variant, **fields)


def variant_of(model: Net) -> str:
    """The name `model`'s class is registered under."""
    return next(name for name, cls in REGISTRY.items() if type(model) is cls)


def model_fields(model: Net) -> dict[str, Any]:
    """The config fields (MODEL_FIELDS) that `create_model` turns back into `model`."""
    fields = {name: getattr(model, name) for name in MODEL_FIELDS[1:]}
    fields["dtype"] = jnp.dtype(fields["dtype"]).name
    return {"variant": variant_of(model), **fields}


def default_input_size(name: str) -> int:
    """The input size the variant was published with."""
    return get_variant(name).default_input_size


def layer_macs(
    name: str, input_size: int | None = None, num_classes: int = 1000, **options: Any
) -> dict[str, int]:
    """Forward multiply-accumulates per image of each conv and FC layer (LRN/pool/ReLU excluded).

    options: forward options (FORWARD_OPTIONS) that change the layers' shapes: width,
      conv1_padding, pool_window, pool_stride; the others change no count.
    """
    cls = get_variant(name)
    size = cls.default_input_size if input_size is None else input_size
    return cls.layer_macs(size, num_classes, **options)


def train_flops_per_image(
    name: str, input_size: int | None = None, num_classes: int = 1000, **options: Any
) -> float:
    """Training FLOPs per image: 3x the forward's 2*MACs (forward, input grad, weight grad)."""
    return 3 * 2 * float(sum(layer_macs(name, input_size, num_classes, **options).values()))


def param_count(params: Any) -> int:
    """Number of scalars in a parameter pytree."""
    return int(sum(np.prod(p.shape) for p in jax.tree_util.tree_leaves(params)))


# ---- The rules of the model fields ------------------------------------------------------------


def _net(c: Any) -> type[Net]:
    """The config's variant (the Net defaults for an unknown name, which its own rule reports)."""
    return REGISTRY.get(c.variant, Net)


def _implements(option: str, c: Any) -> bool:
    return option in _net(c).options


def _has_lrn(c: Any) -> bool:
    return _implements("lrn", c) and c.lrn is True


def _is_bool(field: str) -> rules.Rule:
    return rules.Rule(field, "True or False", lambda c: isinstance(c[field], bool))


def _without(option: str, why: str) -> rules.Rule:
    """`option` keeps its default in a variant that does not implement it."""
    default = FORWARD_OPTIONS[option]
    return rules.Rule(
        option,
        lambda c: f"{default!r} for variant {c.variant!r}, {why}",
        lambda c: c[option] == default or _implements(option, c),
    )


# The forward options' rules: each option where it means something, one message where it does not.
OPTION_RULES = (
    rules.choice("block1_order", BLOCK1_ORDERS),
    rules.choice("activation", ACTIVATIONS),
    rules.choice("conv1_padding", CONV1_PADDINGS),
    rules.choice("width", WIDTHS),
    _is_bool("lrn"),
    _is_bool("spatial_norm2"),
    rules.Rule(
        "pool_window",
        "3 (overlapping) or 2 (not overlapping, section 3.4's comparison)",
        lambda c: rules.is_int(c.pool_window) and c.pool_window in (3, 2),
    ),
    rules.Rule(
        "pool_stride",
        "2 (both poolings of section 3.4)",
        lambda c: rules.is_int(c.pool_stride) and (c.pool_window, c.pool_stride) in POOLINGS,
    ),
    _without("lrn", "which has no LRN to remove"),
    rules.Rule(
        "block1_order",
        "'conv_relu_lrn_pool' without LRN (a variant without LRN, or config.lrn False): the "
        "order only moves the LRN",
        lambda c: c.block1_order == "conv_relu_lrn_pool" or _has_lrn(c),
    ),
    rules.Rule(
        "spatial_norm2",
        "False without LRN (a variant without LRN, or config.lrn False): it follows the second LRN",
        lambda c: not c.spatial_norm2 or _has_lrn(c),
    ),
    rules.Rule(
        "conv1_padding",
        "'symmetric' unless config.input_size is 224 in a variant with the paper's conv1 "
        "('paper' or 'one_tower': the overhang turns 224 into conv1's 55 outputs)",
        lambda c: (
            c.conv1_padding == "symmetric"
            or (c.input_size == 224 and _implements("conv1_padding", c))
        ),
    ),
    _without("width", "which has no half-width form (section 3.2's half nets have one tower)"),
    _without("activation", "which has no activation to change"),
)

# The model fields' rules (part of config_lib.RULES); checked in this order.
RULES = (
    rules.Rule("variant", lambda c: f"one of {list(REGISTRY)}", lambda c: c.variant in REGISTRY),
    rules.choice("init_scheme", INITS),
    rules.choice("lrn_convention", LRN_CONVENTIONS),
    rules.choice("lrn_impl", ("auto", *LRN_IMPLEMENTATIONS)),
    rules.choice("pool_impl", POOL_IMPLS),
    rules.choice("dtype", DTYPES),
    rules.Rule(
        "input_size",
        lambda c: f"{_net(c).input_size_problem(c.input_size)} for variant {c.variant!r}",
        lambda c: _net(c).input_size_problem(c.input_size) is None,
    ),
    rules.Rule(  # (1e30 or NaN trained one step, then diverged with no field named)
        "bias_one",
        "a number in [-10, 10] (the paper's 1, Caffe's 0.1)",
        lambda c: rules.is_number(c.bias_one) and abs(c.bias_one) <= 10,
    ),
    rules.Rule(
        "dropout_rate",
        "in [0, 1)",
        lambda c: rules.is_number(c.dropout_rate) and 0.0 <= c.dropout_rate < 1.0,
    ),
    *OPTION_RULES,
    rules.Rule(
        "dropout_rate",
        lambda c: f"0.0 for variant {c.variant!r}, which has no dropout",
        lambda c: _net(c).has_dropout or c.dropout_rate == 0.0,
    ),
    rules.Rule(
        "init_scheme",
        lambda c: f"one of {list(_net(c).init_schemes)} for variant {c.variant!r}",
        lambda c: c.init_scheme in _net(c).init_schemes,
    ),
)

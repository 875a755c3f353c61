"""The layers every variant is built from, and the fields every variant takes (`Net`).

Tensors are NHWC. The paper's two towers are separate convolutions over channel slices followed by
a concatenation (`GroupedConv`), not `feature_group_count`, which is slow on XLA:CPU and in its GPU
backward pass (jax-ml/jax#13800). The kernel keeps the grouped layout (kh, kw, C_in / groups,
C_out), so parameter shapes and counts equal a grouped convolution's and PyTorch's `groups=2`
weights convert directly. Given a mesh with a "tower" axis (see parallel.py), `GroupedConv`,
`TowerDense` and `Net.per_tower` compute each tower on its own devices.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import PartitionSpec as P

from alexnet_jax.model import parallel
from alexnet_jax.model.lrn import default_implementation, local_response_norm

INITS = ("paper", "he", "cuda_convnet")
LRN_CONVENTIONS = ("paper", "cuda_convnet")
POOL_IMPLS = ("reduce_window", "slices", "auto")
ACTIVATIONS = ("relu", "tanh")

# The paper's bias constants (section 5): 1 in conv2, conv4, conv5, fc6, fc7 and 0 elsewhere.
_BIAS_ONE_LAYERS = frozenset({"conv2", "conv4", "conv5", "fc6", "fc7"})
# The original run's weight scales (layers-145.cfg `initW`; docs/PAPER.md, departure 4): 0.03 in
# conv3-5, the paper's 0.01 everywhere else.
_CUDA_CONVNET_STDS = {"conv3": 0.03, "conv4": 0.03, "conv5": 0.03}


@dataclasses.dataclass(frozen=True)
class ConvSpec:
    """One convolution layer: name, output features, kernel size, stride, padding, groups.

    padding: zeros added on each side of both spatial axes, or (before, after) on both axes.
    """

    name: str
    features: int
    kernel: int
    stride: int
    padding: int | tuple[int, int]
    groups: int = 1


def padding_pair(padding: int | tuple[int, int]) -> tuple[int, int]:
    """(before, after) of a padding given as one number for both sides or as that pair."""
    return (padding, padding) if isinstance(padding, int) else (int(padding[0]), int(padding[1]))


def conv_groups(x: jax.Array, kernel: jax.Array, groups: int, stride: int, pads: tuple[int, int]):
    """One convolution per group of channels, concatenated (NHWC, kernel HWIO, no bias); `pads`:
    (before, after) zeros on both spatial axes."""
    outs = [
        lax.conv_general_dilated(
            xg,
            kg,
            window_strides=(stride, stride),
            padding=[pads] * 2,
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
        )
        for xg, kg in zip(
            jnp.split(x, groups, axis=-1), jnp.split(kernel, groups, axis=-1), strict=True
        )
    ]
    return outs[0] if groups == 1 else jnp.concatenate(outs, axis=-1)


def split_apply(fn, x: jax.Array, groups: int) -> jax.Array:
    """`fn` applied to each of `groups` equal channel slices of `x` separately, concatenated."""
    if groups == 1:
        return fn(x)
    return jnp.concatenate([fn(xg) for xg in jnp.split(x, groups, axis=-1)], axis=-1)


class GroupedConv(nn.Module):
    """A convolution whose input and output channels are split into `groups` independent towers.

    Equals `nn.Conv(feature_group_count=groups)` (same kernel shape) but runs one convolution per
    tower on channel slices and concatenates, which XLA compiles to much faster code.

    With a `mesh` that has a "tower" axis, each device computes its tower's output channels from
    its slice of the kernel, and the output stays split by tower. A grouped conv's input arrives
    split by tower and each device convolves its own groups (no communication); an ungrouped one
    sees every input channel: conv1's image is replicated over "tower" (`input_split=False`),
    conv3 gathers the towers' channels first (the paper's cross-GPU connection).
    """

    features: int
    kernel_size: int
    stride: int = 1
    padding: int | tuple[int, int] = 0  # on each side, or (before, after), of both spatial axes
    groups: int = 1
    dtype: Any = jnp.float32
    kernel_init: Any = nn.initializers.lecun_normal()
    bias_init: Any = nn.initializers.zeros
    mesh: Any = None  # a jax.sharding.Mesh with a "tower" axis: one tower per device.
    input_split: bool = True  # with `mesh`: the input's channels arrive split over "tower".

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        in_features = x.shape[-1]
        if in_features % self.groups or self.features % self.groups:
            raise ValueError(
                f"channels ({in_features} in, {self.features} out) must divide into "
                f"{self.groups} groups"
            )
        k = self.kernel_size
        kernel = self.param(
            "kernel", self.kernel_init, (k, k, in_features // self.groups, self.features)
        )
        bias = self.param("bias", self.bias_init, (self.features,))
        x, kernel, bias = x.astype(self.dtype), kernel.astype(self.dtype), bias.astype(self.dtype)
        pads = padding_pair(self.padding)
        conv = functools.partial(conv_groups, stride=self.stride, pads=pads)
        if self.mesh is None or self.is_initializing():
            return conv(x, kernel, self.groups) + bias
        towers = parallel.tower_size(self.mesh)
        if self.groups > 1 and (self.groups % towers or not self.input_split):
            raise ValueError(f"{self.groups} groups cannot be split over {towers} tower devices")
        local_groups = self.groups // towers if self.groups > 1 else 1
        gather = self.input_split and self.groups == 1

        def per_device(x, kernel, bias):  # this device's tower: x (B/D, H, W, C or C/towers)
            x = parallel.all_gather_towers(x) if gather else x
            return conv(x, kernel, local_groups) + bias

        x_spec = parallel.channel_spec(4) if self.input_split else parallel.batch_spec(4)
        in_specs = (x_spec, parallel.out_feature_spec(4), parallel.out_feature_spec(1))
        return parallel.tower_map(per_device, self.mesh, in_specs, parallel.channel_spec(4))(
            x, kernel, bias
        )


class TowerDense(nn.Module):
    """`nn.Dense` (the same parameters and initialization) with its neurons split over "tower".

    The input arrives split by tower on its last axis (any rank: it is flattened after the
    gather). Each device gathers the whole input, computes its tower's share of the neurons and
    keeps its share of the output: the paper's FC layers, half on each GPU, every neuron seeing all
    of the previous layer. A layer whose outputs do not divide by the towers is computed whole on
    every device (its output then replicated over "tower").
    """

    features: int
    mesh: Any
    dtype: Any = jnp.float32
    kernel_init: Any = nn.initializers.lecun_normal()
    bias_init: Any = nn.initializers.zeros

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        in_features = int(np.prod(x.shape[1:]))
        kernel = self.param("kernel", self.kernel_init, (in_features, self.features))
        bias = self.param("bias", self.bias_init, (self.features,))
        x, kernel, bias = x.astype(self.dtype), kernel.astype(self.dtype), bias.astype(self.dtype)
        dense = lambda x, k, b: lax.dot_general(x, k, (((1,), (0,)), ((), ()))) + b
        if self.is_initializing():
            return dense(x.reshape((x.shape[0], -1)), kernel, bias)
        split = parallel.splits_over_towers(self.features, parallel.tower_size(self.mesh))
        # An unsplit layer needs the same whole input on each tower device: an invariant gather.
        gather = parallel.all_gather_towers if split else parallel.all_gather_towers_invariant

        def per_device(x, kernel, bias):  # x (B/D, ..., C/towers)
            x = gather(x)
            return dense(x.reshape((x.shape[0], -1)), kernel, bias)

        param_spec = parallel.out_feature_spec if split else (lambda ndim: P())
        in_specs = (parallel.channel_spec(x.ndim), param_spec(2), param_spec(1))
        out_spec = parallel.channel_spec(2) if split else parallel.batch_spec(2)
        return parallel.tower_map(per_device, self.mesh, in_specs, out_spec)(x, kernel, bias)


def _window_slices(x: jax.Array, window: int, stride: int) -> list[jax.Array]:
    """The window*window strided slices of NHWC `x`, in row-major window order, VALID padding."""
    _, h, w, _ = x.shape
    oh, ow = (h - window) // stride + 1, (w - window) // stride + 1
    return [
        x[:, i : i + stride * (oh - 1) + 1 : stride, j : j + stride * (ow - 1) + 1 : stride]
        for i in range(window)
        for j in range(window)
    ]


def _window_slices_by_reshape(x: jax.Array, window: int, stride: int) -> list[jax.Array]:
    """The same slices as `_window_slices`, taken from a (B, H/s, s, W/s, s, C) view of `x`
    with unit-stride slices. Their transpose (reverse mode) is then unit-stride pads that XLA
    fuses into one loop, where strided slices transpose into interior pads it keeps separate."""
    b, h, w, c = x.shape
    oh, ow = (h - window) // stride + 1, (w - window) // stride + 1
    extra = (window - 1) // stride
    hp, wp = stride * (oh + extra), stride * (ow + extra)  # rows/cols the windows reach, rounded
    x = x[:, :hp, :wp]
    x = jnp.pad(x, ((0, 0), (0, hp - x.shape[1]), (0, wp - x.shape[2]), (0, 0)))
    x = x.reshape(b, hp // stride, stride, wp // stride, stride, c)
    return [
        x[:, i // stride : i // stride + oh, i % stride, j // stride : j // stride + ow, j % stride]
        for i in range(window)
        for j in range(window)
    ]


@functools.partial(jax.custom_jvp, nondiff_argnums=(1, 2))
def _max_pool_slices(x: jax.Array, window: int, stride: int) -> jax.Array:
    return functools.reduce(jnp.maximum, _window_slices(x, window, stride))


@_max_pool_slices.defjvp
def _max_pool_slices_jvp(window, stride, primals, tangents):
    """Each output takes the tangent of the first maximum of its window (row-major order): the
    element select-and-scatter gives the gradient to, ties included. Reverse mode transposes this
    into a sum of pads (5x faster than XLA:CPU's select-and-scatter)."""
    (x,), (dx,) = primals, tangents
    xs = _window_slices(x, window, stride)
    out = functools.reduce(jnp.maximum, xs)
    index_dtype = jnp.int8 if len(xs) <= 127 else jnp.int32
    first = jnp.full(out.shape, len(xs) - 1, index_dtype)  # (B, OH, OW, C): first argmax
    for k in range(len(xs) - 2, -1, -1):
        first = jnp.where(xs[k] == out, jnp.asarray(k, index_dtype), first)
    dout = jnp.zeros_like(out)
    for k, dxk in enumerate(_window_slices_by_reshape(dx, window, stride)):
        dout = jnp.where(first == k, dxk, dout)
    return out, dout


def default_pool_implementation(backend: str | None = None) -> str:
    """What pool_impl "auto" runs on `backend` (a `jax.default_backend()` name; None: this
    process's): "slices" on CPU (measured in benchmarks/RESULTS.md), "reduce_window" elsewhere."""
    backend = backend or jax.default_backend()
    return "slices" if backend == "cpu" else "reduce_window"


def auto_implementations(backend: str) -> dict[str, str]:
    """The config's lrn_impl and pool_impl as "auto" resolves them on `backend` ("cpu", "gpu",
    "tpu"). "auto" is resolved at trace time from the backend of the tracing process, so lowering
    for another platform (jax.export on a CPU-only machine) must pin these to lower what a run
    there would run."""
    return {
        "lrn_impl": default_implementation(backend),
        "pool_impl": default_pool_implementation(backend),
    }


def max_pool(x: jax.Array, impl: str = "reduce_window", window: int = 3, stride: int = 2):
    """Max-pooling, VALID padding: overlapping with the paper's window 3 and stride 2.

    "reduce_window" is XLA's pooling; its gradient is select-and-scatter, which has no deterministic
    GPU implementation and is slow on XLA:CPU. "slices" takes the maximum of window*window strided
    slices: the same forward, and a deterministic gradient equal to reduce_window's (the first
    maximum of each window gets it, ties included). "auto" is "slices" on CPU (measured in
    benchmarks/RESULTS.md), "reduce_window" elsewhere.
    """
    if impl == "auto":
        impl = default_pool_implementation()
    if impl == "reduce_window":
        return nn.max_pool(x, (window, window), strides=(stride, stride), padding="VALID")
    if impl != "slices":
        raise ValueError(f"pool impl must be one of {POOL_IMPLS}, got {impl!r}")
    return _max_pool_slices(x, window, stride)


def _adaptive_avg_matrix(in_size: int, out_size: int) -> np.ndarray:
    """(out, in) averaging matrix of PyTorch's adaptive pooling.

    Output i averages inputs [floor(i * in / out), ceil((i + 1) * in / out)).
    """
    m = np.zeros((out_size, in_size), np.float32)
    for i in range(out_size):
        start = (i * in_size) // out_size
        end = -((-(i + 1) * in_size) // out_size)
        m[i, start:end] = 1.0 / (end - start)
    return m


def adaptive_avg_pool(x: jax.Array, out_size: int) -> jax.Array:
    """torch.nn.AdaptiveAvgPool2d for NHWC input (the identity when already out_size square)."""
    _, h, w, _ = x.shape
    if (h, w) == (out_size, out_size):
        return x
    mh = jnp.asarray(_adaptive_avg_matrix(h, out_size), x.dtype)
    mw = jnp.asarray(_adaptive_avg_matrix(w, out_size), x.dtype)
    return jnp.einsum("ih,jw,nhwc->nijc", mh, mw, x)


class Net(nn.Module):
    """The fields of every variant (the model fields of a config, models.MODEL_FIELDS, but the
    variant's name) and the helpers they share. A variant subclasses it, sets the class
    attributes below and writes `__call__(x, train)`; models.register names it.

    Call as `model.apply(variables, images, train=..., rngs={'dropout': key})`: images NHWC
    (B, input_size, input_size, 3), output (B, num_classes) float32 logits.
    """

    # What the variant is, read by the config's rules (models.RULES) and the tools:
    default_input_size: ClassVar[int] = 227  # the size it was published with
    towers: ClassVar[int] = 1  # 2: the paper's towers, which a "tower" mesh axis can split
    options: ClassVar[frozenset[str]] = frozenset()  # the FORWARD_OPTIONS it implements
    init_schemes: ClassVar[tuple[str, ...]] = INITS
    has_dropout: ClassVar[bool] = True
    feature_layer: ClassVar[str] = "fc7"  # the last hidden layer (Figure 4's features)

    @classmethod
    def input_size_problem(cls, size: Any) -> str | None:
        """What `size` must be instead, or None when the variant takes it."""
        return None if size == cls.default_input_size else f"{cls.default_input_size}"

    @classmethod
    def layer_macs(cls, input_size: int, num_classes: int, **options: Any) -> dict[str, int]:
        """Forward multiply-accumulates per image of each conv and FC layer."""
        raise NotImplementedError(f"{cls.__name__} counts no FLOPs")

    num_classes: int = 1000
    input_size: int = 227
    lrn_convention: str = "paper"  # "paper": alpha as written; "cuda_convnet": alpha / n.
    lrn_impl: str = "auto"  # see alexnet_jax.model.lrn.IMPLEMENTATIONS; "auto" picks by backend.
    pool_impl: str = "auto"  # max_pool(): default_pool_implementation() of the backend.
    init_scheme: str = "paper"  # "paper": N(0, 0.01), the paper's biases; "he": He-normal, 0 bias;
    # "cuda_convnet": the paper's but N(0, 0.03) in conv3-5, as the original run.
    bias_one: float = 1.0  # the paper's "1" bias constant (Caffe's replication used 0.1).
    dropout_rate: float = 0.5  # 0: no dropout.
    dtype: Any = jnp.float32  # computation dtype; parameters are always float32.
    # The forward options (FORWARD_OPTIONS; a variant implements those in `options`):
    block1_order: str = "conv_relu_lrn_pool"  # "conv_lrn_pool_relu": LRN on conv1's linear output.
    spatial_norm2: bool = False  # cuda-convnet's 5x5 same-map normalization after the 2nd LRN.
    conv1_padding: str = "symmetric"  # at 224: 2 on every side; "overhang": cuda-convnet's (0, 3).
    activation: str = "relu"  # "relu" or "tanh" (section 3.1), wherever the net has a ReLU.
    lrn: bool = True  # False: no LRN layers (section 3.3's comparison).
    pool_window: int = 3  # max-pool window and stride: 3, 2 overlapping; 2, 2 not (section 3.4).
    pool_stride: int = 2
    width: str = "full"  # one_tower: "half" (section 3.2) or "half_code" (layers-145-half.cfg).
    # A jax.sharding.Mesh with a "tower" axis (sharding.tower_mesh): a two-tower variant's towers
    # run on their own devices. None: everything on whichever devices the caller's jit uses.
    mesh: Any = None

    def initializers(self, layer: str) -> tuple[Any, Any]:
        """(kernel_init, bias_init) of a layer under `init_scheme`: "paper" (N(0, 0.01), biases
        1 where the paper puts them), "cuda_convnet" (0.03 in conv3-5) or "he"."""
        if self.init_scheme == "he":
            return nn.initializers.he_normal(), nn.initializers.zeros
        cuda = self.init_scheme == "cuda_convnet"
        std = _CUDA_CONVNET_STDS.get(layer, 0.01) if cuda else 0.01
        bias = self.bias_one if layer in _BIAS_ONE_LAYERS else 0.0
        return nn.initializers.normal(stddev=std), nn.initializers.constant(bias)

    def conv(self, spec: ConvSpec, x: jax.Array) -> jax.Array:
        """The convolution `spec` (a GroupedConv named spec.name, biased, not activated)."""
        kernel_init, bias_init = self.initializers(spec.name)
        return GroupedConv(
            spec.features,
            spec.kernel,
            spec.stride,
            spec.padding,
            spec.groups,
            dtype=self.dtype,
            kernel_init=kernel_init,
            bias_init=bias_init,
            mesh=self.mesh,
            input_split=spec.name != "conv1",
            name=spec.name,
        )(x)

    def dense(self, name: str, features: int, x: jax.Array) -> jax.Array:
        """A fully connected layer (flattening `x`); split over the towers on a tower mesh."""
        kernel_init, bias_init = self.initializers(name)
        inits = dict(dtype=self.dtype, kernel_init=kernel_init, bias_init=bias_init, name=name)
        if self.mesh is not None:
            return TowerDense(features, self.mesh, **inits)(x)
        return nn.Dense(features, **inits)(x.reshape((x.shape[0], -1)))

    def act(self, x: jax.Array) -> jax.Array:
        return nn.relu(x) if self.activation == "relu" else jnp.tanh(x)

    def pool(self, x: jax.Array) -> jax.Array:
        return max_pool(x, self.pool_impl, self.pool_window, self.pool_stride)

    def lrn_layer(self, x: jax.Array) -> jax.Array:
        """The paper's LRN (section 3.3) in this net's alpha convention; identity if not `lrn`."""
        if not self.lrn:
            return x
        divide = self.lrn_convention == "cuda_convnet"
        impl = default_implementation() if self.lrn_impl == "auto" else self.lrn_impl
        return local_response_norm(x, divide_alpha_by_size=divide, impl=impl)

    def per_tower(self, fn, x: jax.Array) -> jax.Array:
        """`fn` (LRN, pooling) on each tower's channels separately; on the tower's own devices
        when the mesh has a "tower" axis."""
        if self.mesh is None or self.is_initializing():
            return split_apply(fn, x, self.towers)
        local_towers = self.towers // parallel.tower_size(self.mesh)
        spec = parallel.channel_spec(x.ndim)
        return parallel.tower_map(
            lambda y: split_apply(fn, y, local_towers), self.mesh, spec, spec
        )(x)

    def gather_logits(self, x: jax.Array) -> jax.Array:
        """fc8's tower-split outputs -> all logits on every device (identity off-mesh)."""
        if self.mesh is None or self.is_initializing():
            return x
        if not parallel.splits_over_towers(self.num_classes, parallel.tower_size(self.mesh)):
            return x
        return parallel.gather_towers(x, self.mesh)


# The Net fields that are not forward options: the conventions a weights file records as such
# (num_classes, input_size, lrn_convention), and how the network is computed or initialized
# (no trained network's outputs change with them). Every other Net field is a forward option.
_NOT_OPTIONS = frozenset(
    {"num_classes", "input_size", "lrn_convention", "lrn_impl", "pool_impl", "init_scheme"}
    | {"bias_one", "dropout_rate", "dtype"}
)


def net_fields(cls: type[Net] = Net) -> dict[str, Any]:
    """{field: default} of a Net's config fields, in declaration order (not `mesh`)."""
    return {
        f.name: f.default
        for f in dataclasses.fields(cls)
        if f.init and f.name not in ("parent", "name", "mesh")
    }


# The forward options, each with the value that gives the network runs and weights files had
# before it existed (a new Net field must default to that): rundir.ADDED_FIELDS fills them into
# older run configs, and a weights file records one only where it differs from this (weights_io).
# A variant lists the ones it implements in `Net.options`; the others must keep these values
# (models.RULES).
FORWARD_OPTIONS = {k: v for k, v in net_fields().items() if k not in _NOT_OPTIONS}

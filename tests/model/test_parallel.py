"""The paper's two-tower model parallelism on a ("data", "tower") mesh, and multi-host start-up.

Relative error of arrays: max |a - b| / max |b| (per parameter for gradients).
"""

import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from alexnet_jax.core import runtime
from alexnet_jax.core.errors import ConfigError
from alexnet_jax.model.layers import GroupedConv
from alexnet_jax.model.models import create
from alexnet_jax.train import checkpoint, experiment, sharding
from configs import default

pytestmark = pytest.mark.usefixtures("quick_compiles")  # compile time dominates here

TOL = 1e-5
NUM_CLASSES = 10
BATCH = 4  # 2 per "data" replica


def _config(**overrides):
    c = default.get_config()
    c.update(variant="paper", num_classes=NUM_CLASSES, batch_size=BATCH, mesh_shape=(2, 2))
    c.update(overrides)
    return c


def _tower_mesh():
    return sharding.make_mesh(_config(), jax.devices()[:4])


def _relative_error(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))


@pytest.fixture(scope="module")
def paper_params():
    """He-scaled random params and biases N(0, 0.1) from NumPy (a compiled init costs seconds)."""
    shapes = sharding.abstract_params(create("paper", num_classes=NUM_CLASSES))
    rng = np.random.default_rng(0)

    def draw(path, leaf):
        if path[-1].key == "bias":
            return (0.1 * rng.standard_normal(leaf.shape)).astype(np.float32)
        fan_in = int(np.prod(leaf.shape[:-1]))
        return rng.standard_normal(leaf.shape, np.float32) * np.float32(np.sqrt(2.0 / fan_in))

    return jax.tree_util.tree_map_with_path(draw, shapes)


def _loss_and_logits(params, model, images, labels):
    logits = model.apply(
        {"params": params}, images, train=True, rngs={"dropout": jax.random.key(7)}
    )
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean(), logits


def test_tower_mesh_gives_single_device_logits_and_gradients(paper_params):
    """(data=2, tower=2) equals the single-device `paper` net: logits and the gradient of every
    parameter to 1e-5 relative (measured: ~2e-7 and ~2e-6), dropout on (same masks), the loss
    to 1e-6. Params are stored split: each device holds one tower's half of each layer."""
    rng = np.random.default_rng(1)
    images = rng.standard_normal((BATCH, 227, 227, 3)).astype(np.float32)
    labels = np.arange(BATCH, dtype=np.int32) % NUM_CLASSES
    grad_fn = jax.jit(jax.value_and_grad(_loss_and_logits, has_aux=True), static_argnums=1)

    plain = create("paper", num_classes=NUM_CLASSES)
    (loss_1, logits_1), grads_1 = grad_fn(paper_params, plain, images, labels)

    mesh = _tower_mesh()
    tower = create("paper", num_classes=NUM_CLASSES, mesh=mesh)
    params = jax.device_put(paper_params, sharding.params_sharding(tower, mesh))
    assert params["conv2"]["kernel"].addressable_shards[0].data.shape == (5, 5, 48, 128)
    assert params["fc6"]["kernel"].addressable_shards[0].data.shape == (9216, 2048)
    batch = jax.device_put((images, labels), NamedSharding(mesh, P("data")))
    (loss_4, logits_4), grads_4 = grad_fn(params, tower, *batch)

    assert abs(float(loss_4) - float(loss_1)) <= 1e-6 * abs(float(loss_1))
    assert _relative_error(logits_4, logits_1) <= TOL
    errors = jax.tree.map(_relative_error, grads_4, grads_1)
    assert max(jax.tree.leaves(errors)) <= TOL, errors
    assert grads_4["conv1"]["kernel"].sharding.spec == P(None, None, None, "tower")


# The paper net's non-default forward options (models.FORWARD_OPTIONS; lrn=False and the half
# widths are refused with LRN-side options or on two towers, and only remove or narrow layers;
# tanh would bound the activations and leave the same-map normalization near the identity).
PAPER_OPTIONS = dict(block1_order="conv_lrn_pool_relu", spatial_norm2=True, pool_window=2,
                     conv1_padding="overhang", input_size=224)  # fmt: skip


def test_tower_mesh_runs_the_forward_options_like_one_device():
    """The forward options where the towers run on their own devices, (data=2, tower=2) against
    one device, values and gradients to 1e-5 relative: the per-tower blocks after conv1 and conv2
    (cuda-convnet's block 1 order, LRN + same-map normalization, 2/2 pooling; 16 maps, 8 per
    tower) and conv1 with the overhang padding (8 kernels on a 31x31 image). The rest of the
    network does not change with the options (tanh is elementwise) and is compared whole above
    with the defaults."""
    rng = np.random.default_rng(2)
    u1, u2 = (40.0 * rng.standard_normal((BATCH, 11, 11, 16)).astype(np.float32) for _ in "12")
    c1 = rng.standard_normal((BATCH, 5, 5, 16)).astype(np.float32)  # 2/2 pools 11 -> 5
    image = rng.standard_normal((BATCH, 31, 31, 3)).astype(np.float32)
    conv1_params = {
        "kernel": 0.1 * rng.standard_normal((11, 11, 3, 8)).astype(np.float32),
        "bias": rng.standard_normal(8).astype(np.float32),
    }

    def loss(inputs, mesh):
        u1, u2, params = inputs
        model = create("paper", mesh=mesh, **PAPER_OPTIONS)
        blocks = lambda m: (m.per_tower(m.block1, u1), m.per_tower(m.block2, u2))
        b1, b2 = model.apply({}, method=blocks)
        conv1 = GroupedConv(8, 11, 4, (0, 3), mesh=mesh, input_split=False)
        y = conv1.apply({"params": params}, image)
        return jnp.sum(b1 * c1) + jnp.sum(b2 * c1) + jnp.sum(jnp.tanh(y)), (b1, b2, y)

    grad_fn = jax.jit(jax.value_and_grad(loss, has_aux=True), static_argnums=1)
    (_, outs_1), grads_1 = grad_fn((u1, u2, conv1_params), None)
    mesh = _tower_mesh()
    channels = NamedSharding(mesh, P("data", None, None, "tower"))
    split = (jax.device_put(u1, channels), jax.device_put(u2, channels), conv1_params)
    (_, outs_4), grads_4 = grad_fn(split, mesh)
    assert outs_1[2].shape == (BATCH, 6, 6, 8)  # (31 + 0 + 3 - 11) // 4 + 1
    assert outs_4[0].sharding.spec == P("data", None, None, "tower")
    for name, a, b in zip(("block1", "block2", "conv1"), outs_4, outs_1, strict=True):
        assert _relative_error(a, b) <= TOL, name
    errors = jax.tree.map(_relative_error, grads_4, grads_1)
    assert max(jax.tree.leaves(errors)) <= TOL, errors


# ---- What the compiled tower-parallel train step communicates ---------------------------------

_COLLECTIVE = re.compile(
    r"= (?P<shape>\([^)]*\)|\S+) (?P<op>all-gather|all-reduce|reduce-scatter|all-to-all|"
    r"collective-permute|collective-broadcast)(?:-start)?\(.*?"
    r"replica_groups=(?P<groups>mesh\[.*?\](?:, device_ids=\(.*?\))? \{[^}]*\}|\S+?)(?=, )"
)


def _iota(spec: str) -> np.ndarray:
    """XLA's iota device list `[2,2]<=[2,2]T(1,0)` (or `[2,2]T(1,0)`, `[4]`) as an array."""
    m = re.fullmatch(r"(?:\[([\d,]+)\]<=)?\[([\d,]+)\](?:T\(([\d,]+)\))?", spec)
    shape, dims, perm = m.groups()
    dims = [int(d) for d in dims.split(",")]
    ids = np.arange(int(np.prod(dims))).reshape(dims)
    if perm:
        ids = ids.transpose([int(p) for p in perm.split(",")])
    return ids.reshape([int(d) for d in shape.split(",")]) if shape else ids


def _replica_groups(groups: str) -> np.ndarray:
    """(groups, members) device indices from any of XLA's notations: explicit `{{0,1},{2,3}}`,
    iota `[2,2]<=[2,2]T(1,0)`, or `mesh['axis_0'=2,'axis_1'=2], device_ids=(...) {'axis_1'}`."""
    if groups.startswith("mesh["):
        head, reduced = groups.rsplit("{", 1)
        sizes = [int(n) for n in re.findall(r"'axis_\d+'=(\d+)", head)]
        ids_spec = re.search(r"device_ids=\((.*?)\)$", head.strip())
        ids = _iota(ids_spec[1]) if ids_spec else np.arange(int(np.prod(sizes)))
        ids = ids.reshape(sizes)
        axes = [int(a) for a in re.findall(r"'axis_(\d+)'", reduced)]
        rest = [a for a in range(len(sizes)) if a not in axes]
        size = int(np.prod([sizes[a] for a in axes]))
        return ids.transpose(rest + axes).reshape(-1, size)
    if groups.startswith("["):
        return _iota(groups)
    return np.array([[int(i) for i in g.split(",")] for g in re.findall(r"\{([\d,]+)\}", groups)])


def _group_axes(groups: str, mesh) -> frozenset:
    """Mesh axes along which the members of a collective's replica groups differ."""
    coords = np.array(np.unravel_index(_replica_groups(groups), mesh.devices.shape))  # (axes, G, S)
    varying = [(c != c[:, :1]).any() for c in coords]
    return frozenset(name for name, v in zip(mesh.axis_names, varying, strict=True) if v)


def _collectives(hlo_text: str, mesh) -> list[tuple[str, str, frozenset]]:
    """(op, result shape without layout, mesh axes) of every collective in compiled HLO text."""
    found = []
    for match in _COLLECTIVE.finditer(hlo_text):
        shape = re.sub(r"\{[\d,]*\}|/\*index=\d+\*/", "", match["shape"])
        found.append((match["op"], shape, _group_axes(match["groups"], mesh)))
    return found


def test_tower_train_step_communicates_across_towers_only_at_conv3_and_the_fc_layers():
    """The compiled train step on (data=2, tower=2) (experiment.build's: forward, backward,
    paper SGD, metrics), read from its HLO after SPMD partitioning. With b = 2 examples per device:

    - every collective whose replica groups span "tower" is one of: the all-gather of conv3's
      input f32[b,13,13,128 -> 256] and of fc6's f32[b,6,6,128 -> 256], of fc7's and fc8's
      f32[b,2048 -> 4096], of fc8's outputs f32[b,5 -> 10], the reduce-scatters that are their
      gradients, and all-reduces of scalars (loss, accuracy and the global gradient norm);
    - all five all-gathers and the four reduce-scatters are present;
    - so nothing crosses "tower" between conv1 and conv2 or between conv4 and conv5 (no tower
      collective has a 55x55, 27x27 or 13x13x192/384 shape, nor any all-to-all or permute);
    - the "data" axis carries the all-reduces of the gradients (each device's tower halves, e.g.
      conv1's f32[11,11,3,48]) and of the loss, and the all-gather of the logits for the top-k
      metrics; nothing spans both axes at once.
    Replica groups are read from all three notations XLA prints (explicit, iota, mesh-axes).
    """
    exp = experiment.build(_config(), _tower_mesh(), steps_per_epoch=10)
    mesh = exp.mesh
    state_shapes = jax.eval_shape(exp.init_state)
    spec = exp.state_sharding
    assert spec.params["conv4"]["kernel"].spec == P(None, None, None, "tower")
    sgd_state = spec.opt_state[-1]  # after the gradient clipping's (empty) state
    assert sgd_state.inner_state.velocity["fc7"]["kernel"].spec == P(None, "tower")
    assert spec.params["fc8"]["bias"].spec == P("tower")
    batch = {
        "image": jax.ShapeDtypeStruct((BATCH, 227, 227, 3), jnp.float32),
        "label": jax.ShapeDtypeStruct((BATCH,), jnp.int32),
        "mask": jax.ShapeDtypeStruct((BATCH,), jnp.bool_),
    }
    hlo = exp.train_step.lower(state_shapes, batch).compile().as_text()
    collectives = _collectives(hlo, mesh)

    b = BATCH // 2
    boundary = {
        ("all-gather", f"f32[{b},13,13,256]"),  # conv3's input
        ("all-gather", f"f32[{b},6,6,256]"),  # fc6's input
        ("all-gather", f"f32[{b},4096]"),  # fc7's and fc8's inputs
        ("all-gather", f"f32[{b},{NUM_CLASSES}]"),  # fc8's two halves -> the logits
        ("reduce-scatter", f"f32[{b},13,13,128]"),  # their gradients
        ("reduce-scatter", f"f32[{b},6,6,128]"),
        ("reduce-scatter", f"f32[{b},2048]"),
    }
    assert all(len(axes) == 1 for _, _, axes in collectives)
    across = [(op, shape) for op, shape, axes in collectives if axes == {"tower"}]
    unexpected = [
        (op, shape)
        for op, shape in across
        if (op, shape) not in boundary and not (op == "all-reduce" and _is_scalars(shape))
    ]
    assert not unexpected, unexpected
    assert boundary <= set(across)
    assert sum(1 for c in across if c == ("all-gather", f"f32[{b},4096]")) == 2  # fc7, fc8
    assert sum(1 for c in across if c == ("reduce-scatter", f"f32[{b},2048]")) == 2
    data_only = {(op, shape) for op, shape, axes in collectives if axes == {"data"}}
    assert {op for op, _ in data_only} <= {"all-reduce", "all-gather"}
    assert {c for c in data_only if c[0] == "all-gather"} <= {
        ("all-gather", f"f32[{BATCH},{NUM_CLASSES}]")  # the logits, for the top-k metrics
    }
    assert any(op == "all-reduce" and "f32[11,11,3,48]" in shape for op, shape in data_only)


def _is_scalars(shape: str) -> bool:
    """'f32[]' or a tuple of scalars '(f32[], s32[])'."""
    return all(part.endswith("[]") for part in shape.strip("()").split(", "))


def test_tower_split_checkpoint_restores_onto_other_meshes(tmp_path):
    """A state whose tower layers are split over (data=2, tower=2) restores bit-identically onto
    8 devices of a data-only mesh (replicated) and onto a (4, 2) tower mesh, through the abstract
    target of the new mesh (what train.train_and_evaluate restores into)."""
    rng = np.random.default_rng(0)
    tree = {
        "conv2": {"kernel": rng.standard_normal((3, 3, 4, 8), np.float32), "bias": np.ones(8)},
        "fc8": {"kernel": rng.standard_normal((6, 5), np.float32)},  # 5 outputs: unsplit
        "count": np.int32(7),
    }
    mesh_2x2 = _tower_mesh()
    saved = jax.device_put(tree, sharding.param_sharding(tree, mesh_2x2))
    assert saved["conv2"]["kernel"].sharding.spec == P(None, None, None, "tower")
    manager = checkpoint.create_manager(str(tmp_path), 1)
    checkpoint.save(manager, 1, saved, {"examples_consumed": 8})
    checkpoint.wait(manager)
    for shape in ((), (4, 2)):
        mesh = sharding.make_mesh(_config(mesh_shape=shape))
        target = jax.tree.map(
            lambda x, s: jax.ShapeDtypeStruct(np.shape(x), np.asarray(x).dtype, sharding=s),
            tree,
            sharding.param_sharding(tree, mesh),
        )
        restored, data = checkpoint.restore_latest(manager, target, already_abstract=True)
        jax.tree.map(np.testing.assert_array_equal, jax.device_get(restored), tree)
        assert restored["conv2"]["kernel"].sharding == target["conv2"]["kernel"].sharding
        assert data["examples_consumed"] == 8
    manager.close()


# ---- Configuration and start-up ---------------------------------------------------------------


def test_param_spec_splits_the_tower_layers_output_features():
    """Kernels/biases of conv1..fc8 split on their last axis, also inside optimizer state;
    layers whose outputs do not divide by the towers (fc8 with 5 classes), counters and
    anything else stay replicated."""
    key = jax.tree_util.DictKey
    velocity = (jax.tree_util.GetAttrKey("velocity"), key("conv3"), key("kernel"))
    assert sharding.param_spec(velocity, (3, 3, 256, 384), 2) == P(None, None, None, "tower")
    assert sharding.param_spec((key("fc6"), key("bias")), (4096,), 2) == P("tower")
    assert sharding.param_spec((key("fc8"), key("kernel")), (4096, 5), 2) == P()
    assert sharding.param_spec((key("count"),), (), 2) == P()
    assert sharding.param_spec((key("conv1"), key("kernel")), (11, 11, 3, 96), 1) == P()


def test_tower_axis_needs_the_paper_variant_and_two_towers():
    mesh_2x2 = _tower_mesh()
    assert sharding.tower_mesh(_config(), mesh_2x2) is mesh_2x2
    one_tower = _config(variant="one_tower")
    with pytest.raises(ConfigError, match=r"mesh_shape=\(2, 2\).*needs config.variant='paper'"):
        sharding.tower_mesh(one_tower, mesh_2x2)
    mesh_2x4 = sharding.make_mesh(_config(mesh_shape=(2, 4)))
    with pytest.raises(ConfigError, match="size 4"):
        sharding.tower_mesh(_config(mesh_shape=(2, 4)), mesh_2x4)
    data_only = sharding.make_mesh(_config(mesh_shape=()))
    assert sharding.tower_mesh(_config(mesh_shape=()), data_only) is None


def test_initialize_distributed_only_for_several_processes(monkeypatch):
    """No-op for one process; flags, JAX_* variables or a SLURM step start jax.distributed."""
    calls = []
    monkeypatch.setattr(jax.distributed, "initialize", lambda *a, **k: calls.append(a))
    assert not runtime.initialize_distributed(env={})
    assert not runtime.initialize_distributed(num_processes=1, env={})
    assert runtime.initialize_distributed("host0:1234", 4, 3, env={})
    env = {"JAX_COORDINATOR_ADDRESS": "h:1", "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "1"}
    assert runtime.initialize_distributed(env=env)
    slurm = {"SLURM_STEP_NODELIST": "n[1-2]", "SLURM_NTASKS": "2", "SLURM_PROCID": "0"}
    assert runtime.initialize_distributed(env=slurm)
    assert calls == [("host0:1234", 4, 3), ("h:1", 2, 1), ()]
    assert not runtime.initialize_distributed(env={**slurm, "SLURM_NTASKS": "1"})
    with pytest.raises(ConfigError, match=r"--coordinator_address.*--num_processes.*--process_id"):
        runtime.initialize_distributed("host0:1234", env={})
    with pytest.raises(ConfigError, match=r"--process_id=2 must be in \[0, --num_processes=2\)"):
        runtime.initialize_distributed("host0:1234", 2, 2, env={})

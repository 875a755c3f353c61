"""The train and eval steps lower for GPUs and TPUs on this CPU-only machine (issue #15 item 4).

`jax.export.export(step, platforms=("cuda",))` (and "tpu") runs JAX's tracing and the platform's
lowering rules without that platform's backend, so it catches a step that a GPU or TPU run
could not even lower: a lowering rule that needs a backend, a host callback, a custom call that
platform lacks, a sharding the mesh cannot express. It does not run XLA's GPU/TPU compiler
(no cuDNN algorithm choice, no memory check): the first accelerator run does that
(benchmarks/accelerator.py).

Each step is experiment.build's, exactly as training builds it (declared shardings, donated
state), for the config a GPU run trains with bfloat16 computation and bfloat16 input images (what
`--config.dtype=bfloat16 --config.input_dtype=bfloat16` feeds a GPU), its real batch sizes and
1000 classes (lowering does no arithmetic, so the real shapes cost nothing): `paper` from
configs/imagenet.py (run 145's forward options: conv1's overhang at 224, LRN before ReLU in block
1, the same-map normalization), `one_tower` from configs/imagenet_paper.py (the paper's text:
227, plain ReLU-LRN-pool) and `torchvision` from configs/imagenet_torchvision.py, on the 8 fake
CPU devices of conftest.py: the 1-D "data" mesh, and for `paper` (the only variant with towers,
sharding.tower_mesh) the (data=4, tower=2) mesh. lrn_impl / pool_impl "auto" are resolved at
trace time from the tracing process's backend (here the CPU's "reduce_window" LRN and "slices"
pooling), so they are pinned to what "auto" picks on the target (layers.auto_implementations).
"""

import json
import re

import jax
import jax.numpy as jnp
import pytest

from alexnet_jax.model import layers
from alexnet_jax.train import experiment
from configs import imagenet, imagenet_paper, imagenet_torchvision

NUM_DEVICES = 8
TOWER_MESH = (NUM_DEVICES // 2, 2)
# The config file each variant's run starts from (two ImageNet configs: both forward families).
BASE_CONFIGS = {"paper": imagenet, "one_tower": imagenet_paper, "torchvision": imagenet_torchvision}

# jax.default_backend()'s name on each export platform: what "auto" is resolved with there.
BACKENDS = {"cuda": "gpu", "tpu": "tpu"}

# Custom-call targets a step may contain per platform. None: the steps are plain StableHLO
# (convolution, dot_general, reduce_window, select_and_scatter, sort for top-k, Shardy's
# manual_computation and collectives), which every XLA backend compiles; cuDNN and cuBLAS calls
# appear only later, inside XLA's GPU compiler. Targets JAX could put here and that this test
# would then reject on purpose: "cu_threefry2x32" (with jax_threefry_gpu_kernel_lowering),
# GSPMD's "Sharding" / "SPMDFullToShardShape" markers (with Shardy off), host callbacks
# ("xla_ffi_python_gpu_callback"): each either ties the module to one runtime or defeats the
# point of a portable, serializable step.
ALLOWED_CUSTOM_CALLS = {"cuda": frozenset(), "tpu": frozenset()}

_CUSTOM_CALL = re.compile(
    r'stablehlo\.custom_call\s*@"?([\w.$-]+)|"stablehlo\.custom_call".*?call_target_name\s*=\s*"([^"]+)"'
)


def custom_call_targets(mlir_text: str) -> set[str]:
    """The call targets of every custom call in a module's text (pretty or generic form)."""
    return {a or b for a, b in _CUSTOM_CALL.findall(mlir_text)}


def gpu_run_config(variant: str, platform: str, mesh_shape: tuple = ()):
    """The config a bf16 run of `variant` on `platform` trains, "auto" resolved as there."""
    c = BASE_CONFIGS[variant].get_config()
    c.update(
        variant=variant,
        dtype="bfloat16",
        input_dtype="bfloat16",
        mesh_shape=mesh_shape,
        **layers.auto_implementations(BACKENDS[platform]),
    )
    return c


def _batch(exp, batch_size: int, views: int | None = None) -> dict:
    """Abstract train batch (B, S, S, 3), or eval batch (B, views, S, S, 3), on the batch sharding
    (the input pipeline's dtypes: images in config.input_dtype, int32 labels, bool mask)."""
    c, sharding = exp.config, exp.batch_sharding
    image = (batch_size, c.input_size, c.input_size, 3)
    image = image if views is None else (batch_size, views, *image[1:])
    return {
        "image": jax.ShapeDtypeStruct(image, jnp.dtype(c.input_dtype), sharding=sharding),
        "label": jax.ShapeDtypeStruct((batch_size,), jnp.int32, sharding=sharding),
        "mask": jax.ShapeDtypeStruct((batch_size,), jnp.bool_, sharding=sharding),
    }


def _register_serialization(tree) -> None:
    """Lets Exported.serialize write the steps' calling convention: the custom pytree nodes of
    `tree` (TrainState, the optimizer's states) registered once under their qualified names."""
    for node_type, aux in _custom_nodes(jax.tree_util.tree_structure(tree)):
        name = f"{node_type.__module__}.{node_type.__qualname__}"
        try:
            if issubclass(node_type, tuple) and hasattr(node_type, "_fields"):
                jax.export.register_namedtuple_serialization(node_type, serialized_name=name)
            else:  # flax.struct dataclasses: their auxdata is the (JSON) tuple of static fields
                json.dumps(list(aux))
                jax.export.register_pytree_node_serialization(
                    node_type,
                    serialized_name=name,
                    serialize_auxdata=lambda aux: json.dumps(list(aux)).encode(),
                    deserialize_auxdata=lambda data: tuple(json.loads(data)),
                )
        except ValueError as e:  # registered by an earlier test: serialization is process-wide
            if "Duplicate serialization registration" not in str(e):
                raise


def _custom_nodes(treedef) -> list[tuple[type, object]]:
    data = treedef.node_data()
    found = [] if data is None or data[0] in (dict, list, tuple, type(None)) else [data]
    for child in treedef.children():
        found += _custom_nodes(child)
    return found


@pytest.fixture(scope="module")
def exported():
    """get(variant, mesh_shape, platform) -> (experiment, exported train step, exported eval
    step). An experiment is built once per distinct config (CUDA's and TPU's resolve "auto"
    alike), so the second platform's export reuses the first one's trace."""
    experiments, modules = {}, {}

    def get(variant: str, mesh_shape: tuple, platform: str):
        key = (variant, mesh_shape, platform)
        if key not in modules:
            config = gpu_run_config(variant, platform, mesh_shape)
            if config.to_json() not in experiments:
                experiments[config.to_json()] = experiment.build(config, steps_per_epoch=10)
            exp = experiments[config.to_json()]
            state = exp.abstract_state()
            train = jax.export.export(exp.train_step, platforms=(platform,))(
                state, _batch(exp, config.batch_size)
            )
            batch = _batch(exp, config.eval_batch_size, views=config.eval_crops)
            evaluate = jax.export.export(exp.eval_step, platforms=(platform,))(state.params, batch)
            modules[key] = exp, train, evaluate
        return modules[key]

    assert len(jax.devices()) == NUM_DEVICES  # conftest.py's fake CPU devices
    return get


CASES = [
    pytest.param("paper", (), id="paper-data8"),
    pytest.param("one_tower", (), id="one_tower-data8"),
    pytest.param("torchvision", (), id="torchvision-data8"),
    pytest.param("paper", TOWER_MESH, id="paper-data4xtower2"),
]


def _mesh_text(mesh_shape: tuple) -> str:
    sizes = mesh_shape or (NUM_DEVICES,)
    axes = ", ".join(f'"{n}"={s}' for n, s in zip(("data", "tower"), sizes, strict=False))
    return f"sdy.mesh @mesh = <[{axes}]>"


def _specs(shardings) -> list:
    return [None if s is None else s.spec for s in shardings]


def _kept(specs: list, module) -> list:
    """`specs` with None for the arguments the module does not use (JAX drops them; the train
    step's injected learning rate, which it recomputes from the step count)."""
    return [spec if i in module.module_kept_var_idx else None for i, spec in enumerate(specs)]


@pytest.mark.parametrize("platform", ["cuda", "tpu"])
@pytest.mark.parametrize(("variant", "mesh_shape"), CASES)
def test_bf16_train_and_eval_steps_export_for_the_platform_with_their_mesh_and_no_custom_calls(
    exported, variant, mesh_shape, platform
):
    """Both steps export for `platform` on 8 devices; the module: names that platform only,
    declares the mesh (data=8, or data=4 x tower=2), carries experiment.build's in/out shardings
    (also after a serialize/deserialize round trip), contains no custom call outside
    ALLOWED_CUSTOM_CALLS, aliases every donated state buffer to its output, and runs the
    target's pooling (reduce_window: its gradient is select_and_scatter) and, with LRN, the
    target's LRN (the banded convolution, the only one at HIGHEST precision)."""
    exp, train, evaluate = exported(variant, mesh_shape, platform)
    state = exp.abstract_state()
    state_specs = [leaf.sharding.spec for leaf in jax.tree.leaves(state)]
    batch_specs = [exp.batch_sharding.spec] * 3
    expected = {
        train: (state_specs + batch_specs, state_specs + [jax.sharding.PartitionSpec()] * 6),
        evaluate: (
            [leaf.sharding.spec for leaf in jax.tree.leaves(state.params)] + batch_specs,
            [jax.sharding.PartitionSpec()] * 4,
        ),
    }
    _register_serialization((state, _batch(exp, 1)))
    _register_serialization(jax.eval_shape(exp.train_step, state, _batch(exp, 8)))
    texts = {module: module.mlir_module() for module in expected}
    for module, (in_specs, out_specs) in expected.items():
        text = texts[module]
        assert module.platforms == (platform,)
        assert module.nr_devices == NUM_DEVICES
        assert re.findall(r"sdy\.mesh @\w+ = <[^>]*>", text) == [_mesh_text(mesh_shape)]
        assert ("sdy.manual_computation" in text) == bool(mesh_shape)  # towers per device
        restored = jax.export.deserialize(module.serialize())
        for m in (module, restored):
            assert _specs(m.in_shardings_jax(exp.mesh)) == _kept(in_specs, module)  # or raises
            assert _specs(m.out_shardings_jax(exp.mesh)) == out_specs
        assert restored.platforms == module.platforms
        assert restored.in_tree == module.in_tree
        assert restored.out_tree == module.out_tree
        shapes = lambda avals: [(a.shape, a.dtype) for a in avals]
        assert shapes(restored.in_avals) == shapes(module.in_avals)
        assert custom_call_targets(text) <= ALLOWED_CUSTOM_CALLS[platform]

    kept_state = [i for i in train.module_kept_var_idx if i < len(state_specs)]
    assert texts[train].count("tf.aliasing_output") == len(kept_state) > 0  # donated state
    assert "tf.aliasing_output" not in texts[evaluate]
    assert exp.config.pool_impl == "reduce_window"
    assert "stablehlo.select_and_scatter" in texts[train]
    assert exp.config.lrn_impl == "conv"
    assert ("precision HIGHEST" in texts[train]) == (variant != "torchvision")


def test_custom_call_finder_sees_a_real_custom_call():
    """The check above would notice one: a QR decomposition lowers for CUDA to cuSOLVER's."""
    qr = jax.export.export(jax.jit(jnp.linalg.qr), platforms=("cuda",))(
        jax.ShapeDtypeStruct((4, 4), jnp.float32)
    )
    targets = custom_call_targets(qr.mlir_module())
    assert any(t.startswith("cusolver") for t in targets), targets
    generic = '%0 = "stablehlo.custom_call"(%arg0) <{call_target_name = "foo_bar"}>'
    assert custom_call_targets(generic) == {"foo_bar"}


def test_auto_implementations_differ_between_cpu_and_the_accelerators():
    """Why the export pins them: "auto" traced here would lower the CPU's choices."""
    assert layers.auto_implementations("cpu") == {
        "lrn_impl": "reduce_window",
        "pool_impl": "slices",
    }
    for backend in ("gpu", "tpu"):
        assert layers.auto_implementations(backend) == {
            "lrn_impl": "conv",
            "pool_impl": "reduce_window",
        }

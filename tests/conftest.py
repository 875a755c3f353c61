"""Test setup: 8 fake CPU devices for multi-device tests, TensorFlow kept off accelerators.

XLA_FLAGS must be set before jax is first imported, which is why it happens here at import time.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
if "--xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
    ).strip()

import jax
import pytest

jax.config.update("jax_threefry_partitionable", True)


@pytest.fixture(scope="session")
def jax_cache_dir(tmp_path_factory) -> str:
    """One persistent compilation cache for the main.py subprocesses of the whole session: the
    many small runs of tests/train/test_main.py and tests/train/test_reliability.py compile the
    same steps."""
    return str(tmp_path_factory.mktemp("jax_cache"))


@pytest.fixture(scope="session", autouse=True)
def _compilation_cache_in_process(jax_cache_dir):
    """The same persistent cache for the tests' own compiles: a program built again by another
    test (the same tiny step, a new jit) loads instead of compiling."""
    from alexnet_jax.core import runtime

    runtime.enable_compilation_cache(jax_cache_dir)


# The environment of a subprocess run whose own program is compiled for a few steps only (cold
# in the cache): its compile is the cost, and XLA's optimizations cost more than they save
# (-4 CPU-s per run measured; the in-process twin is the `quick_compiles` fixture below).
QUICK_COMPILES = {"JAX_DISABLE_MOST_OPTIMIZATIONS": "1"}


@pytest.fixture(scope="module")
def quick_compiles():
    """jax_disable_most_optimizations for a module's tests: for files of many one-off programs,
    each run once or twice, where XLA's optimization passes cost more than they save (measured:
    tests/train/test_train_step.py 68 -> 37 CPU-s, tests/model/test_parallel.py 30 -> 22; other
    files got slower, so it is not global). Results are compared with references within stated
    tolerances, never bit for bit with an optimized compile."""
    previous = jax.config.read("jax_disable_most_optimizations")
    jax.config.update("jax_disable_most_optimizations", True)
    yield
    jax.config.update("jax_disable_most_optimizations", previous)


@pytest.fixture(scope="session")
def repo_root() -> str:
    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ---- Tiny training runs, for the tools that read a run (predict, figures, export) ---------------


def tiny_config(root: str, **overrides):
    """The default config shrunk to seconds: torchvision variant, 4 classes, 64 px, 24 images over
    a generated miniature dataset under `root`; `overrides` set further fields."""
    from configs import default

    c = default.get_config()
    c.data_dir, c.miniature_dir = os.path.join(root, "tfds"), os.path.join(root, "miniature")
    c.miniature_train_per_class, c.miniature_val_per_class = 6, 3
    c.miniature_image_sides = (40, 90)
    c.variant, c.input_size, c.resize_size = "torchvision", 64, 72
    c.normalization, c.pca_lighting_std = "mean_std", 0.0
    c.batch_size = c.eval_batch_size = 8
    c.num_train_steps, c.keep_checkpoints = 1, 1
    for field, value in overrides.items():
        c[field] = value
    return c


def random_train_state(config, seed: int = 0):
    """A TrainState shaped exactly as the experiment's `init_state` makes it (from its abstract
    shape, so nothing is compiled), params uniform with He-uniform scale, everything else zero."""
    import numpy as np

    from alexnet_jax.train import experiment, sharding

    abstract = experiment.build(config, sharding.single_device_mesh()).abstract_state()
    rng = np.random.default_rng(seed)

    def fill(path, leaf):
        if not jax.tree_util.keystr(path).startswith(".params"):  # not opt_state, step, ...
            return np.zeros(leaf.shape, leaf.dtype)
        bound = np.sqrt(6.0 / max(int(np.prod(leaf.shape[:-1])), 1))
        return (rng.random(leaf.shape, np.float32) * 2 - 1) * np.float32(bound)

    return jax.tree_util.tree_map_with_path(fill, abstract)


def write_tiny_run(root: str, **overrides) -> str:
    """A workdir holding config.json and an Orbax checkpoint of a random TrainState (step 1), as
    a run leaves it; no training, no data read."""
    from alexnet_jax.runs import rundir
    from alexnet_jax.train import checkpoint

    config, workdir = tiny_config(root, **overrides), os.path.join(root, "run")
    manager = checkpoint.checkpoint_manager(workdir, config.keep_checkpoints)
    state = random_train_state(config)
    state = state.replace(step=state.step.dtype.type(1))  # a checkpoint holds its own step
    checkpoint.save(manager, 1, state, {"examples_consumed": 8, "batch_size": 8})
    checkpoint.wait(manager)
    manager.close()
    rundir.record_start(config, workdir, 0, [])  # config.json and its digest, as main.py
    return workdir


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory) -> str:
    """A tiny torchvision-variant run (64 px, 4 miniature classes, mean/std normalization)."""
    return write_tiny_run(str(tmp_path_factory.mktemp("tiny_run")))


@pytest.fixture(scope="session")
def run_params(run_dir):
    """(config, params) restored from `run_dir`, as the tools restore it."""
    from alexnet_jax.tools import load

    return load.load_run(run_dir)


@pytest.fixture(scope="session")
def lrn_run_dir(tmp_path_factory) -> str:
    """A tiny run of a variant with LRN, trained under the paper's conventions where they differ
    from PyTorch's: one_tower at 227 px, normalization "mean" (no division by the std) and
    lrn_convention "paper" (alpha not divided by n)."""
    return write_tiny_run(
        str(tmp_path_factory.mktemp("tiny_lrn_run")),
        variant="one_tower",
        input_size=227,
        resize_size=256,
        normalization="mean",
        lrn_convention="paper",
    )


# ---- Order on pytest-xdist's workers (pyproject.toml: -n 2 --dist loadfile) ---------------------

# Files whose tests take about a minute or more of 2 cores in all (training runs in subprocesses,
# the benchmark scripts), longest first: they start first, so that no worker ends the run alone
# on one of them. --dist loadfile keeps each file on one worker, so a module-scoped fixture (a
# training run, the benchmark scripts' output) is built once. (Not --dist loadgroup: with pytest
# 9.2 and pytest-xdist 3.8.0 its xdist_group marks have no effect, pytest-dev/pytest-xdist#1386.)
_LONGEST_FIRST = (
    "tests/train/test_main.py",
    "tests/train/test_imagenet_configs.py",
    "tests/test_demo.py",
    "tests/train/test_multihost.py",
    "tests/test_benchmarks.py",
    "tests/train/test_reliability.py",
    "tests/tools/test_sweep.py",
    "tests/test_accelerator_benchmark.py",
)


def pytest_collection_modifyitems(items):
    def rank(item):
        path = item.nodeid.split("::")[0]
        return _LONGEST_FIRST.index(path) if path in _LONGEST_FIRST else len(_LONGEST_FIRST)

    items.sort(key=rank)  # stable: the collection order within a file and among the rest


# ---- A tiny image folder ----------------------------------------------------------------------


def w3_target():
    """The restore target of the tests' small checkpoints ({"w": float32[3]}) on one device."""
    import numpy as np

    sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    return {"w": jax.ShapeDtypeStruct((3,), np.float32, sharding=sharding)}


def png(path: str, value: int) -> None:
    """A 48x40 PNG of one grey `value` at `path` (its folders made)."""
    import numpy as np
    from PIL import Image

    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(np.full((40, 48, 3), value, np.uint8)).save(path, format="PNG")


@pytest.fixture
def folder(tmp_path):
    """An image folder: train/{ant,bee} with 2 images each, val/{ant,bee} with 1 each."""
    root = str(tmp_path / "images")
    for split, count in (("train", 2), ("val", 1)):
        for c, name in enumerate(("ant", "bee")):
            for k in range(count):
                png(os.path.join(root, split, name, f"{name}{k}.png"), 60 * c + k)
    return root


@pytest.fixture(autouse=True)
def _the_workers_own_stdout_and_stderr(monkeypatch):
    """A test that starts a multi-process set-up in-process (runtime.initialize_distributed with
    jax.distributed mocked) never redirects the pytest worker's file descriptors 1 and 2 (Gloo's
    muted stdout, the stderr filter's child process): those are a real process's, for its life."""
    from alexnet_jax.core import runtime

    monkeypatch.setattr(runtime, "mute_native_stdout", lambda: None)
    monkeypatch.setattr(runtime, "filter_native_stderr", lambda: None)

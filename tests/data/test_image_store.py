"""The image store (alexnet_jax/data/image_store.py): the decoded squares written once, read back
with no decoding, against the tf.data device path that decodes them every epoch.

The module fixture builds a miniature imagenet2012 (4 classes x 6 training images, 3 validation
images per class, sides 40-90 px, one undecodable file per split) and its store at resize_size 72.
"""

import contextlib
import errno
import os
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import tiny_config

from alexnet_jax.core.errors import ConfigError, DataError
from alexnet_jax.data import image_store, input_pipeline
from alexnet_jax.runs import rundir
from alexnet_jax.train import config_lib

RESIZE = 72


def _config(root, **overrides):
    fields = dict(
        augment_on="device",
        miniature_corrupt_files=1,
        image_store_dir=os.path.join(root, "store"),
    )
    return tiny_config(str(root), **{**fields, **overrides})


@pytest.fixture(scope="module")
def store_config(tmp_path_factory):
    config = _config(tmp_path_factory.mktemp("store"))
    input_pipeline.prepare(config)
    return config


def _without_store(config):
    config = config.copy_and_resolve_references()
    config.image_store_dir = ""
    return config


def _take(iterator, n):
    return [next(iterator) for _ in range(n)]


def _squares_by_id(batches) -> dict:
    """example id (hi, lo) -> uint8 square, of the real examples (mask True) of batches."""
    return {
        tuple(int(w) for w in i): image
        for b in batches
        for i, image, m in zip(b["example_id"], b["image"], b["mask"], strict=True)
        if m
    }


def _whole_store(config, split):
    store = image_store.open_split(config, split)
    squares = np.empty([store.num_examples, RESIZE, RESIZE, 3], np.uint8)
    store.read(np.arange(store.num_examples), squares)
    ids = [tuple(int(w) for w in i) for i in store.example_ids]
    store.close()
    return store, squares, ids


# ---- What the store holds: the tf.data device path's squares, bit for bit ---------------------


def test_store_holds_the_device_paths_squares_and_labels(store_config):
    """Every decodable training example once, with the square and label the tf.data device path
    decodes for it (equal bits); the undecodable file is left out and named in the manifest."""
    store, squares, ids = _whole_store(store_config, "train")
    assert store.num_examples == 24
    assert len(set(ids)) == 24
    stream = input_pipeline.create_train_iterator(_without_store(store_config), local_batch_size=5)
    decoded = _take(stream, 6)  # 30 slots: the 25-record epoch and more
    by_id = _squares_by_id(decoded)
    labels = {
        tuple(int(w) for w in i): int(label)
        for b in decoded
        for i, label, m in zip(b["example_id"], b["label"], b["mask"], strict=True)
        if m
    }
    assert set(by_id) == set(ids)
    for k, key in enumerate(ids):
        np.testing.assert_array_equal(squares[k], by_id[key])
        assert store.labels[k] == labels[key]
    manifest = image_store.data_sources.read_json(
        os.path.join(image_store.split_dir(store_config, "train"), image_store.MANIFEST)
    )
    assert manifest["num_undecodable"] == 1
    assert manifest["undecodable_files"][0].endswith(".JPEG")
    files = os.listdir(store.directory)
    assert "images-00000.npy" in files
    assert not [f for f in files if f.endswith(".tmp")]
    on_disk = np.load(os.path.join(store.directory, "images-00000.npy"), mmap_mode="r")
    np.testing.assert_array_equal(on_disk, squares)  # plain .npy files


def test_evaluation_reads_the_dataset_as_without_a_store(store_config):
    """Only the training split is stored; eval batches are the same bits with or without a store
    (no store directory is made for the eval split)."""
    with_store = list(input_pipeline.create_eval_iterator(store_config, local_batch_size=4))
    without = list(
        input_pipeline.create_eval_iterator(_without_store(store_config), local_batch_size=4)
    )
    assert len(with_store) == len(without) == 4  # 13 files, one undecodable: counted, masked
    for a, b in zip(with_store, without, strict=True):
        for field in ("image", "label", "mask"):
            np.testing.assert_array_equal(a[field], b[field])
    stores = os.listdir(store_config.image_store_dir)
    assert stores == [os.path.basename(image_store.split_dir(store_config, "train"))]


# ---- The training stream: order, resume, hosts ---------------------------------------------------


def test_each_epoch_visits_every_example_once_in_a_new_order(store_config):
    """Batches of 5 over a 24-example epoch span epoch boundaries; every epoch is a permutation,
    the epochs' orders differ, and the `epoch` field says which epoch each example is from."""
    batches = _take(input_pipeline.create_train_iterator(store_config, local_batch_size=5), 10)
    ids = np.concatenate([b["example_id"] for b in batches])  # 50 = 24 + 24 + 2
    epochs = np.concatenate([b["epoch"] for b in batches])
    np.testing.assert_array_equal(epochs, np.repeat([0, 1, 2], [24, 24, 2]))
    first, second = ids[:24], ids[24:48]
    assert len({tuple(i) for i in first}) == len({tuple(i) for i in second}) == 24
    assert {tuple(i) for i in first} == {tuple(i) for i in second}
    assert not np.array_equal(first, second)
    assert all(b["mask"].all() for b in batches)


@pytest.mark.parametrize(("process_count", "resume_step"), [(1, 3), (1, 7), (2, 5)])
def test_resumed_stream_equals_the_uninterrupted_one(store_config, process_count, resume_step):
    """start_example = step * global batch: each host's next batches equal, bit for bit, those of
    the stream that never stopped (mid-epoch and across an epoch boundary)."""
    local = 4
    for host in range(process_count):
        kw = dict(local_batch_size=local, process_index=host, process_count=process_count)
        full = _take(input_pipeline.create_train_iterator(store_config, **kw), resume_step + 3)
        start = resume_step * local * process_count
        resumed = _take(
            input_pipeline.create_train_iterator(store_config, start_example=start, **kw), 3
        )
        for a, b in zip(full[resume_step:], resumed, strict=True):
            assert a.keys() == b.keys()
            for field in a:
                np.testing.assert_array_equal(a[field], b[field])


def test_hosts_train_on_disjoint_parts_that_cover_the_store(store_config):
    """Two hosts: one epoch of each is its own half of the store (every second position)."""
    seen = []
    for host in range(2):
        kw = dict(local_batch_size=4, process_index=host, process_count=2)
        batches = _take(input_pipeline.create_train_iterator(store_config, **kw), 3)
        seen.append({tuple(i) for b in batches for i in b["example_id"]})
        assert all((b["epoch"] == 0).all() for b in batches)
    _, _, ids = _whole_store(store_config, "train")
    assert len(seen[0]) == len(seen[1]) == 12
    assert seen[0].isdisjoint(seen[1])
    assert seen[0] | seen[1] == set(ids)
    assert seen[0] == set(ids[0::2])


def _splitmix64(x: int) -> int:
    """The reference splitmix64 (Python integers, mod 2^64)."""
    mask = 2**64 - 1
    x = (x + 0x9E3779B97F4A7C15) & mask
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & mask
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & mask
    return x ^ (x >> 31)


@pytest.mark.parametrize(("seed", "epoch"), [(0, 0), (0, 1), (7, 0), (2**31 - 1, 2**33)])
def test_epoch_order_is_the_specified_hash_sort(seed, epoch):
    """epoch_order against a pure-Python reference of its specification: positions sorted by
    splitmix64(i + splitmix64(splitmix64(seed) ^ epoch)), ties by position."""
    count = 1000
    offset = _splitmix64(_splitmix64(seed) ^ epoch)
    hashes = [_splitmix64((i + offset) % 2**64) for i in range(count)]
    expected = sorted(range(count), key=lambda i: (hashes[i], i))
    np.testing.assert_array_equal(image_store.epoch_order(count, seed, epoch), expected)


def test_epoch_orders_differ_by_seed_and_epoch():
    orders = [image_store.epoch_order(500, s, e) for s in (0, 1) for e in (0, 1)]
    for i in range(4):
        assert sorted(orders[i]) == list(range(500))
        for j in range(i):
            assert not np.array_equal(orders[i], orders[j])


# ---- Building: once, safely ---------------------------------------------------------------------


def test_second_prepare_reuses_the_store(store_config):
    directory = image_store.split_dir(store_config, "train")
    before = os.stat(os.path.join(directory, "images-00000.npy")).st_mtime_ns
    info = input_pipeline.prepare(store_config)
    assert os.stat(os.path.join(directory, "images-00000.npy")).st_mtime_ns == before
    assert (info.num_train_examples, info.num_eval_examples) == (24, 13)


def test_not_enough_disk_space_is_one_clear_error(tmp_path, monkeypatch):
    """Checked before anything is written: the message names the size needed and free."""
    config = _config(tmp_path)
    usage = image_store.shutil.disk_usage(tmp_path)
    monkeypatch.setattr(image_store.shutil, "disk_usage", lambda path: usage._replace(free=1000))
    with pytest.raises(DataError, match=r"needs 0\.0 GB .* 0\.0 GB free"):
        input_pipeline.prepare(config)
    assert not [f for f in os.listdir(image_store.split_dir(config, "train")) if f.endswith(".npy")]


def test_disk_full_while_writing_removes_the_partial_store(tmp_path, monkeypatch):
    """ENOSPC in the middle of the build: a DataError saying so, no partial files left, and the
    next prepare() builds the whole store."""
    config = _config(tmp_path)
    real_save = np.save
    calls = []

    def failing_save(file, array, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:  # labels.npy, after the images
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(file, array, *args, **kwargs)

    monkeypatch.setattr(image_store.np, "save", failing_save)
    with pytest.raises(DataError, match=r"filled up .* partial store was removed"):
        input_pipeline.prepare(config)
    directory = image_store.split_dir(config, "train")
    assert sorted(os.listdir(directory)) == [".build.lock"]
    monkeypatch.setattr(image_store.np, "save", real_save)
    assert input_pipeline.prepare(config).num_train_examples == 24


def test_damaged_store_is_one_clear_error(tmp_path):
    config = _config(tmp_path)
    input_pipeline.prepare(config)
    directory = image_store.split_dir(config, "train")
    path = os.path.join(directory, "images-00000.npy")
    os.truncate(path, os.path.getsize(path) - 100)
    with pytest.raises(DataError, match=r"truncated or padded images-00000.npy.*Delete that"):
        input_pipeline.create_train_iterator(config, local_batch_size=4)
    os.truncate(path, os.path.getsize(path) + 100)  # back to size (zeros), then bad labels
    labels = np.load(os.path.join(directory, "labels.npy"))
    np.save(os.path.join(directory, "labels.npy"), labels + 4)
    with pytest.raises(DataError, match=r"labels outside \[0, 4\) .* damaged"):
        input_pipeline.create_train_iterator(config, local_batch_size=4)
    os.remove(os.path.join(directory, image_store.MANIFEST))
    with pytest.raises(DataError, match=r"not built .*prepare\(config\) first"):
        input_pipeline.create_train_iterator(config, local_batch_size=4)
    input_pipeline.prepare(config)  # a store without its manifest is rebuilt
    assert next(input_pipeline.create_train_iterator(config, local_batch_size=4))["mask"].all()


# ---- Config and resume rules ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        (dict(augment_on="host"), "augment_on='device'"),
        (dict(dataset="synthetic"), "not 'synthetic'"),
        (dict(resized_cache_dir="/tmp/cache"), "replaces the JPEG cache"),
    ],
)
def test_config_rules(tmp_path, overrides, match):
    """The store's rules, checked where every entry point validates a config, before any data."""
    with pytest.raises(ConfigError, match=match):
        config_lib.validate_config(_config(tmp_path, **overrides))


def test_resume_may_move_the_store_not_turn_it_off(tmp_path):
    config = _config(tmp_path)
    workdir = str(tmp_path / "run")
    rundir.record_start(config, workdir, 0, [])
    moved = config.copy_and_resolve_references()
    moved.image_store_dir = str(tmp_path / "elsewhere")
    assert rundir.check_resume(moved, workdir) == []
    with pytest.raises(ConfigError, match="image_store_dir"):
        rundir.check_resume(_without_store(config), workdir)


# ---- The training loop on the store ------------------------------------------------------------


def test_the_training_loop_trains_from_the_store(store_config, tmp_path, monkeypatch):
    """loop.train_and_evaluate with a store: its batches come from Store.read (2 steps of 8
    examples), the losses are finite; its evaluation (--mode=eval) builds no store or cache.
    (Exact resume is the iterator's: the loop restarts it at step * batch, tested above; the
    loop's own resume is tested in test_main.py.)"""
    from alexnet_jax.train import loop

    reads = []
    real_read = image_store.Store.read
    monkeypatch.setattr(
        image_store.Store,
        "read",
        lambda self, p, out: reads.append(len(p)) or real_read(self, p, out),
    )
    config = store_config.copy_and_resolve_references()
    config.num_train_steps, config.log_every_steps = 2, 1
    config.eval_every_steps, config.checkpoint_every_steps = 100, 100
    config.variant, config.input_size, config.dropout_rate = "cifar4", 32, 0.0  # small
    loop.train_and_evaluate(config, str(tmp_path / "run"))
    losses = [
        r["loss"] for r in rundir.read_metrics(str(tmp_path / "run")) if r["split"] == "train"
    ]
    assert len(losses) == 2
    assert all(np.isfinite(losses))
    assert sum(reads) >= 16  # the prefetching thread may have read ahead

    # --mode=eval of the run, its store gone (here: pointed elsewhere): evaluation reads the
    # dataset, so no store is built (on ImageNet, hours of decoding), and the result is the
    # run's own final evaluation.
    reads.clear()
    elsewhere = {"image_store_dir": str(tmp_path / "gone")}
    metrics = loop.evaluate_checkpoint(config, str(tmp_path / "run"), elsewhere)
    final = [r for r in rundir.read_metrics(str(tmp_path / "run")) if r["split"] == "eval"][-2]
    assert metrics["top1_error"] == final["top1_error"]
    assert metrics["loss"] == pytest.approx(final["loss"], rel=1e-6)
    assert reads == []
    assert not os.path.exists(tmp_path / "gone")


def test_main_mode_prepare_builds_the_store_and_refuses_a_host_path(tmp_path, repo_root):
    """`main.py --mode=prepare` (docs/DATA.md): builds the data and the store, says where, exits 0;
    with augment_on=host it is one `error:` line naming the field, exit 2, nothing built."""
    flags = [
        f"--config.data_dir={tmp_path / 'tfds'}",
        f"--config.miniature_dir={tmp_path / 'miniature'}",
        "--config.miniature_train_per_class=3",
        "--config.miniature_val_per_class=1",
        "--config.miniature_image_sides=(40, 60)",
        f"--config.image_store_dir={tmp_path / 'store'}",
    ]
    main = [sys.executable, os.path.join(repo_root, "main.py"), "--mode=prepare"]
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    refused = subprocess.run(
        [*main, *flags, "--config.augment_on=host"], env=env, capture_output=True, text=True
    )
    assert refused.returncode == 2
    errors = [line for line in refused.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1
    assert "config.image_store_dir" in errors[0]
    assert not (tmp_path / "store").exists()
    done = subprocess.run(
        [*main, *flags, "--config.augment_on=device"], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Prepared the miniature data: 12 training and 4 eval examples, 4 classes." in done.stdout
    assert "Image store of the train split: " in done.stdout
    (store,) = os.listdir(tmp_path / "store")
    assert os.path.exists(tmp_path / "store" / store / image_store.MANIFEST)


def test_an_abandoned_iterator_lets_go_of_its_thread_and_files(store_config):
    """The reading thread stops and the store's files are closed once the iterator is garbage
    (runs in one process, e.g. a sweep's tests, must not pile up threads and descriptors)."""
    import gc

    shards = os.path.realpath(image_store.split_dir(store_config, "train"))

    def store_fds():  # this process's descriptors open on the store's files
        names = []
        for fd in os.listdir("/proc/self/fd"):
            with contextlib.suppress(OSError):
                names.append(os.readlink(f"/proc/self/fd/{fd}"))
        return [n for n in names if n.startswith(shards)]

    def settle(condition):  # a stopped thread notices within its 0.1 s put timeout
        for _ in range(100):
            gc.collect()
            if condition():
                return True
            time.sleep(0.05)
        return False

    assert settle(lambda: not store_fds())  # earlier tests' iterators, let go of
    iterator = input_pipeline.create_train_iterator(store_config, local_batch_size=4)
    next(iterator)
    thread = iterator._batches._thread
    assert thread.is_alive()
    assert store_fds()
    del iterator
    assert settle(lambda: not thread.is_alive())
    assert settle(lambda: not store_fds())

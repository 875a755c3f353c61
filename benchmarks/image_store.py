"""How to read the 256x256 image store: host CPU per training image of each way, on the same
squares.

    python benchmarks/image_store.py                       # 4096 squares, batch 256
    python benchmarks/image_store.py --json=store.json --store_dir=/tmp/store_formats

Writes --num_images random uint8 256x256x3 squares once under --store_dir in each format, then
reads epochs of them in a random order, batch by batch, and reports images per CPU-second of the
whole reading process tree (worker processes included) and wall-clock images/s, median over
--repeats trials of one epoch each (--warmup batches first):

- `image store (preadv)`: alexnet_jax.data.image_store, what training uses: .npy shards, one preadv
  per square into the batch, plus the labels, ids and epochs of each batch (`train_batches`).
- `numpy memmap, fancy index`: the same .npy shards mapped, a batch gathered by sorted fancy
  indexing (freshly mapped each trial, as a store larger than memory is).
- `ArrayRecord`: one record per square (uncompressed, group_size 1), read by array_record's
  ArrayRecordDataSource, a batch of records per call, then stacked.
- `Grain, N workers`: grain.MapDataset over the same .npy shards (a record per square), shuffled
  and batched; with --grain_workers > 0 also through mp_prefetch's worker processes and shared
  memory. Skipped with a note when grain is not installed (it is not a dependency).

All read from the page cache here (the store is smaller than memory): this times the CPU cost
of each format and loader, not a disk.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import sys
import time

import numpy as np
from absl import flags

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common

_STORE_DIR = flags.DEFINE_string(
    "store_dir", "data/bench_store", "Where the squares are written in each format."
)
_NUM_IMAGES = flags.DEFINE_integer("num_images", 4096, "Squares in the store.", lower_bound=1)
_SIZE = flags.DEFINE_integer("size", 256, "Side of the squares (the paper's 256).", lower_bound=1)
_BATCH = flags.DEFINE_integer("batch_size", 256, "Batch size.", lower_bound=1)
_REPEATS = flags.DEFINE_integer(
    "repeats", 3, "Timed epochs (the median is reported).", lower_bound=1
)
_WARMUP = flags.DEFINE_integer("warmup", 2, "Untimed batches first.", lower_bound=0)
_GRAIN_WORKERS = common.positive_ints(
    flags.DEFINE_list(
        "grain_workers", ["0", "2"], "Grain worker process counts to time (0: in this process)."
    ),
    minimum=0,
)

COLUMNS = (
    ("reader", "reader", ""),
    ("disk_bytes_per_image", "disk/img", ".0f"),
    ("images_per_s", "img/s", ".0f"),
    ("images_per_cpu_s", "img/CPU-s", ".0f"),
    ("images_per_cpu_s_min", "min", ".0f"),
    ("images_per_cpu_s_max", "max", ".0f"),
    ("note", "note", ""),
)


def _tree_cpu_seconds() -> float:
    """CPU seconds of this process and its live children (Grain's workers)."""
    import psutil

    total = common.cpu_seconds()
    for child in psutil.Process().children(recursive=True):
        try:
            times = child.cpu_times()
            total += times.user + times.system
        except psutil.Error:
            pass
    return total


def _time_batches(batches, num_batches: int, batch_size: int, repeats: int, warmup: int) -> dict:
    """Times `repeats` trials of num_batches batches of an endless iterator after `warmup`."""
    for _ in range(warmup):
        next(batches)
    walls, cpus = [], []
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), _tree_cpu_seconds()
        for _ in range(num_batches):
            batch = next(batches)
            assert batch.shape[0] == batch_size
        walls.append(time.perf_counter() - wall)
        cpus.append(_tree_cpu_seconds() - cpu)
    images = num_batches * batch_size
    return {
        "images_per_trial": images,
        "images_per_s": images / statistics.median(walls),
        "images_per_cpu_s": images / statistics.median(cpus),
        "images_per_cpu_s_min": images / max(cpus),
        "images_per_cpu_s_max": images / min(cpus),
    }


def write_formats(directory: str, num_images: int, size: int) -> dict[str, str]:
    """The same random squares as an image store and as an ArrayRecord file (kept between runs
    of the same --num_images and --size; written again for others)."""
    from array_record.python import array_record_module

    from alexnet_jax.data import image_store

    paths = {"store": os.path.join(directory, "store"), "array_record": directory}
    record_path = os.path.join(directory, "squares.array_record")
    manifest = os.path.join(paths["store"], image_store.MANIFEST)
    shape_path, shape = os.path.join(directory, "squares.json"), {"num": num_images, "size": size}
    if os.path.exists(manifest) and os.path.exists(record_path) and os.path.exists(shape_path):
        with open(shape_path) as f:
            if json.load(f) == shape:
                return {**paths, "record_file": record_path}
    shutil.rmtree(paths["store"], ignore_errors=True)  # another shape's squares
    os.makedirs(paths["store"], exist_ok=True)
    rng = np.random.default_rng(0)
    chunk = 256

    def chunks():
        for start in range(0, num_images, chunk):
            n = min(chunk, num_images - start)
            images = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
            ids = np.stack([np.zeros(n), np.arange(start, start + n)], 1).astype(np.uint32)
            yield images, rng.integers(0, 1000, n, dtype=np.int32), ids

    image_store.write(paths["store"], chunks(), "train", size)
    store = image_store.open_split_dir(paths["store"])
    writer = array_record_module.ArrayRecordWriter(record_path + ".tmp", "group_size:1")
    square = np.empty([1, size, size, 3], np.uint8)
    for i in range(num_images):
        store.read(np.array([i]), square)
        writer.write(square.tobytes())
    writer.close()
    os.replace(record_path + ".tmp", record_path)
    store.close()
    with open(shape_path, "w") as f:
        json.dump(shape, f)
    return {**paths, "record_file": record_path}


def _orders(num_images: int, batch_size: int):
    """Endless batches of random indices, a new permutation per epoch (image_store's)."""
    from alexnet_jax.data import image_store

    epoch = 0
    while True:
        order = image_store.epoch_order(num_images, 0, epoch)
        for start in range(0, num_images - batch_size + 1, batch_size):
            yield order[start : start + batch_size]
        epoch += 1


def store_reader(directory: str, batch_size: int):
    from alexnet_jax.data import image_store

    store = image_store.open_split_dir(directory)
    positions = np.arange(store.num_examples)
    for batch in image_store.train_batches(store, 0, batch_size, 0, positions):
        yield batch["image"]


def memmap_reader(directory: str, num_images: int, batch_size: int, size: int):
    from alexnet_jax.data import image_store

    names = sorted(n for n in os.listdir(directory) if n.startswith("images-"))
    maps = None
    for count, indices in enumerate(_orders(num_images, batch_size)):
        if count % (num_images // batch_size) == 0:  # fresh mappings every epoch
            maps = [np.load(os.path.join(directory, n), mmap_mode="r") for n in names]
        indices = np.sort(indices)
        shards, rows = np.divmod(indices, image_store.SHARD_SIZE)
        out = np.empty([batch_size, size, size, 3], np.uint8)
        start = 0
        for shard in np.unique(shards):
            chosen = rows[shards == shard]
            out[start : start + len(chosen)] = maps[shard][chosen]
            start += len(chosen)
        yield out


def array_record_reader(record_file: str, num_images: int, batch_size: int, size: int):
    from array_record.python.array_record_data_source import ArrayRecordDataSource

    source = ArrayRecordDataSource([record_file])
    for indices in _orders(num_images, batch_size):
        records = source.__getitems__([int(i) for i in indices])
        yield np.stack([np.frombuffer(r, np.uint8).reshape(size, size, 3) for r in records])


class _GrainSource:
    """A grain RandomAccessDataSource over the store's .npy shards (a square per record)."""

    def __init__(self, directory: str, num_images: int):
        self._directory, self._num_images, self._maps = directory, num_images, None

    def __len__(self) -> int:
        return self._num_images

    def __getitem__(self, index):
        from alexnet_jax.data import image_store

        if self._maps is None:  # opened in each worker process
            names = sorted(n for n in os.listdir(self._directory) if n.startswith("images-"))
            self._maps = [np.load(os.path.join(self._directory, n), mmap_mode="r") for n in names]
        shard, row = divmod(int(index), image_store.SHARD_SIZE)
        return np.array(self._maps[shard][row])


def grain_reader(directory: str, num_images: int, batch_size: int, workers: int):
    import grain

    dataset = grain.MapDataset.source(_GrainSource(directory, num_images)).repeat()
    dataset = dataset.shuffle(seed=0).batch(batch_size, drop_remainder=True).to_iter_dataset()
    if workers:
        options = grain.multiprocessing.MultiprocessingOptions(num_workers=workers)
        dataset = dataset.mp_prefetch(options)
    yield from dataset


def benchmark(
    directory: str,
    num_images: int,
    size: int,
    batch_size: int,
    repeats: int,
    warmup: int,
    grain_workers: tuple[int, ...],
) -> list[dict]:
    paths = write_formats(directory, num_images, size)
    num_batches = num_images // batch_size
    store_bytes = common.directory_bytes(paths["store"]) / num_images
    readers = [  # (name, disk bytes per image, make the batch iterator, extra warm-up batches)
        ("image store (preadv)", store_bytes, lambda: store_reader(paths["store"], batch_size), 0),
        (
            "numpy memmap, fancy index",
            store_bytes,
            lambda: memmap_reader(paths["store"], num_images, batch_size, size),
            0,
        ),
        (
            "ArrayRecord",
            os.path.getsize(paths["record_file"]) / num_images,
            lambda: array_record_reader(paths["record_file"], num_images, batch_size, size),
            0,
        ),
    ]
    try:
        import grain  # noqa: F401

        for workers in grain_workers:
            readers.append(
                (
                    f"Grain, {workers} workers",
                    store_bytes,
                    lambda w=workers: grain_reader(paths["store"], num_images, batch_size, w),
                    4 * workers,  # worker start-up (each imports this script) stays untimed
                )
            )
        grain_note = ""
    except ImportError:
        grain_note = "grain not installed: pip install grain"
    rows = []
    for name, disk, make, extra_warmup in readers:
        batches = iter(make())
        timing = _time_batches(batches, num_batches, batch_size, repeats, warmup + extra_warmup)
        rows.append({"reader": name, "disk_bytes_per_image": disk, "note": "", **timing})
    if grain_note:
        rows.append({"reader": "Grain", "note": grain_note})
    return rows


def main(argv) -> None:
    del argv
    if _NUM_IMAGES.value < _BATCH.value:  # an epoch of no whole batch: nothing to time
        raise common.errors.UserError(
            f"--num_images={_NUM_IMAGES.value} must be at least --batch_size={_BATCH.value}."
        )
    threads = common.setup_process(common.THREADS.value)
    rows = benchmark(
        _STORE_DIR.value,
        _NUM_IMAGES.value,
        _SIZE.value,
        _BATCH.value,
        _REPEATS.value,
        _WARMUP.value,
        tuple(int(w) for w in _GRAIN_WORKERS.value),
    )
    common.report_rows(rows, COLUMNS, threads)


if __name__ == "__main__":
    common.run(main)

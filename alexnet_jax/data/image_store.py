"""The paper's image store: the training split written once as 256x256 uint8 squares, read with
no decoding.

The paper rescaled every image once to 256x256 (shorter side to 256, central square) and only
cropped and flipped on the fly. With config.image_store_dir set, `prepare()` does the same: it
decodes the training split once (`preprocessing.center_square`: the antialiased resize and center
crop that the tf.data device path decodes every epoch) and writes the squares as raw uint8, so
training only copies bytes: one `preadv` per image from a fixed offset, no decoding, no
per-image Python object, random access. Its host cost was measured against ArrayRecord and Grain
over the same squares (benchmarks/image_store.py, benchmarks/RESULTS.md): reading raw fixed-size
records is several times cheaper per image than both, so this module is the loader, not Grain.

Evaluation keeps reading the dataset itself (input_pipeline's tf.data path): the eval split is
4% of ImageNet's images, read once per evaluation, and the eval numbers stay the same bits with
or without a store (a center view cut from a stored square would round a few values differently
from the one decoded directly: measured, <= 2 grey levels on <0.1% of the values).

Layout, <image_store_dir>/<hash of the data's identity, split, size>/:
    store.json           the manifest, written last: its presence marks a complete store
    images-00000.npy ... SHARD_SIZE squares each, uint8 [n, R, R, 3], plain .npy files
                         (np.load(path, mmap_mode="r") shows them)
    labels.npy           int32 [N]
    example_ids.npy      uint32 [N, 2]: the FarmHash of each file name, the id the device
                         augmentation draws from (as on the tf.data path)
Examples keep the source's fixed order (tfds's shuffled records, an image folder's sorted
files). Files no decoder reads are left out, counted and named in the manifest.

Reading. Host h of n trains on the store positions h, h+n, h+2n, ... (an image folder's classes
are spread over every host); epoch e visits them in a permutation that is a pure function of
(config.seed, e) (`epoch_order`: a splitmix64 hash sorted, fully specified, not tied to a NumPy
version), and batches span epoch boundaries. The stream's whole state is the global example
position, as on the tf.data path: a resumed iterator yields exactly the batches the
uninterrupted one would have. The device augmentation (alexnet_jax/data/augment.py) draws each crop,
flip and lighting from (seed, example id, epoch), so an example gets the same augmentation here
as from the tf.data device path in the same epoch; only the order of examples differs (a full
permutation here, file and window shuffles there).
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import json
import os
import queue
import shutil
import threading
import weakref
from collections.abc import Iterator

import numpy as np

from alexnet_jax.core import console, errors, runtime
from alexnet_jax.core.errors import DataError
from alexnet_jax.data import data_sources, preprocessing

tf = runtime.tensorflow  # imported on first use

STORE_VERSION = 1  # bump when the layout or the squares' preprocessing changes
SHARD_SIZE = 1024  # squares per images-*.npy file (~201 MB at 256 px)
MANIFEST = "store.json"
_DECODE_CHUNK = 256  # examples decoded per tf.data element while building
_PREFETCH = 2  # batches read ahead by the reading thread


# ---- Where a split's store lives ----------------------------------------------------------------


def split_dir(config, split: str) -> str:
    """The store of `split` at config.resize_size: named by the data's identity (its content,
    not its location: an image folder's files, data_sources.content_identity), so moving the
    data or the store keeps it valid, and other data never finds it."""
    blob = json.dumps(
        [
            STORE_VERSION,
            data_sources.content_identity(config, split),
            str(split),
            int(config.resize_size),
        ],
        sort_keys=True,
    )
    return os.path.join(config.image_store_dir, hashlib.sha1(blob.encode()).hexdigest()[:16])


def bytes_per_image(resize_size: int) -> int:
    return resize_size * resize_size * 3


# ---- Building -----------------------------------------------------------------------------------


def build(config, source) -> None:
    """Writes the training split's store if it is not complete yet (one process at a time per
    store: a second one waits, then finds it built)."""
    directory = split_dir(config, config.train_split)
    with data_sources.exclusive_build(directory):
        manifest = data_sources.read_json(os.path.join(directory, MANIFEST))
        if manifest is None:
            _build_split(config, source, str(config.train_split), directory)
        else:  # reused: its training set lacks what the build left out, as the build's did
            data_sources.warn_left_out("image store", manifest)


def _check_free_space(directory: str, num_examples: int, resize_size: int) -> None:
    needed = num_examples * bytes_per_image(resize_size)
    free = shutil.disk_usage(directory).free
    if needed > free:
        raise DataError(
            f"The image store of {num_examples} images needs {needed / 1e9:.1f} GB in "
            f"{directory!r}, which has {free / 1e9:.1f} GB free: free some space or point "
            "--config.image_store_dir at a larger disk."
        )


def _decoded_batches(shard, resize_size: int) -> tf.data.Dataset:
    """The shard's examples in fixed order, decoded to squares, _DECODE_CHUNK at a time; examples
    that no decoder reads become placeholders with ok False (their keys in UNDECODABLE)."""

    def materialize(records):
        chunk = shard.materialize(records)
        chunk["example_id"] = data_sources.example_id_words(data_sources.example_ids(chunk["key"]))
        return chunk

    def square(example):
        image = data_sources.image_bytes(example)
        return {
            "image": preprocessing.center_square(image, resize_size),
            "label": example["label"],
            "example_id": example["example_id"],
            "ok": tf.constant(True),
        }

    def placeholder():
        return {
            "image": tf.zeros([resize_size, resize_size, 3], tf.uint8),
            "label": tf.constant(0, tf.int32),
            "example_id": tf.zeros([2], tf.uint32),
            "ok": tf.constant(False),
        }

    return (
        shard.epoch_records(None)
        .batch(_DECODE_CHUNK)
        .map(materialize)
        .interleave(
            lambda chunk: data_sources.decode_chunk(chunk, square, placeholder),
            cycle_length=max(2, os.cpu_count() or 2),
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=True,
        )
        .prefetch(2)
        .with_options(data_sources.dataset_options())
    )


class _ShardWriter:
    """Collects squares and writes them SHARD_SIZE at a time, each file atomically."""

    def __init__(self, directory: str):
        self.directory = directory
        self.names: list[str] = []
        self.lengths: list[int] = []
        self._pending: list[np.ndarray] = []
        self._count = 0

    def add(self, images: np.ndarray) -> None:
        while len(images):
            room = SHARD_SIZE - self._count
            self._pending.append(images[:room])
            self._count += len(images[:room])
            images = images[room:]
            if self._count == SHARD_SIZE:
                self.flush()

    def flush(self) -> None:
        if not self._count:
            return
        name = f"images-{len(self.names):05d}.npy"
        _save_npy(self.directory, name, np.concatenate(self._pending))
        self.names.append(name)
        self.lengths.append(self._count)
        self._pending, self._count = [], 0


def _save_npy(directory: str, name: str, array: np.ndarray) -> None:
    path = os.path.join(directory, name)
    with open(path + ".tmp", "wb") as f:
        np.save(f, array)
    os.replace(path + ".tmp", path)


def _remove_partial(directory: str) -> None:
    """Removes what an interrupted build wrote (never the lock file)."""
    for name in os.listdir(directory):
        if name == MANIFEST or name.endswith((".npy", ".tmp")):
            os.remove(os.path.join(directory, name))


def _build_split(config, source, split: str, directory: str) -> None:
    size = int(config.resize_size)
    shard = source.shard(split, 0, 1)
    _remove_partial(directory)
    _check_free_space(directory, shard.num_examples, size)
    gigabytes = shard.num_examples * bytes_per_image(size) / 1e9
    console.info(
        f"Writing the {split} split's image store ({shard.num_examples} images, "
        f"{gigabytes:.1f} GB) to {directory}."
    )
    undecodable: list[str] = []

    def chunks():
        for batch in _decoded_batches(shard, size).as_numpy_iterator():
            undecodable.extend(k.decode(errors="replace") for k in batch[data_sources.UNDECODABLE])
            ok = batch["ok"]
            yield batch["image"][ok], batch["label"][ok], batch["example_id"][ok]

    write(directory, chunks(), split, size, undecodable, expected=shard.num_examples)
    if undecodable:
        console.warning(
            f"The image store left out {len(undecodable)} undecodable image(s): "
            f"{data_sources.name_list(undecodable)}"
        )
    console.info(f"Image store of the {split} split complete: {directory}.")


def write(
    directory: str,
    chunks: Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]],
    split: str,
    resize_size: int,
    undecodable: list[str] | None = None,
    expected: int = 0,
) -> None:
    """Writes a store from chunks of (uint8 squares [n, R, R, 3], labels [n], ids [n, 2]), the
    manifest last; a full disk removes what was written and raises DataError. `undecodable` (the
    files left out) is read after the last chunk; `expected` only sizes the progress lines."""
    writer, labels, ids, logged = _ShardWriter(directory), [], [], 0
    try:
        for images, chunk_labels, chunk_ids in chunks:
            writer.add(images)
            labels.append(chunk_labels)
            ids.append(chunk_ids)
            if len(writer.names) >= logged + 100:  # every ~100 k images
                logged = len(writer.names)
                console.info(f"Image store: {sum(writer.lengths)} of {expected} images written.")
        writer.flush()
        _save_npy(directory, "labels.npy", np.concatenate(labels).astype(np.int32))
        _save_npy(directory, "example_ids.npy", np.concatenate(ids).astype(np.uint32))
        manifest = {
            "version": STORE_VERSION,
            "split": split,
            "resize_size": int(resize_size),
            "num_examples": int(sum(writer.lengths)),
            "files": writer.names,
            "lengths": writer.lengths,
            "num_undecodable": len(undecodable or []),
            "undecodable_files": list(undecodable or []),
        }
        data_sources.write_json(os.path.join(directory, MANIFEST), manifest)
    except OSError as e:
        _remove_partial(directory)
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise DataError(
                f"The disk of {directory!r} filled up while writing the image store; the partial "
                "store was removed. Free some space or point --config.image_store_dir at a "
                "larger disk, then run again."
            ) from e
        if errors.is_storage_error(e, any_os_error=False):
            raise DataError(
                f"Writing the image store in {directory!r} failed: "
                f"{errors.storage_error_reason(e)}; the partial store was removed. Fix that, or "
                "point --config.image_store_dir at another disk, then run again."
            ) from e
        raise


# ---- Reading ------------------------------------------------------------------------------------


def _store_error(directory: str, problem: str) -> DataError:
    return DataError(
        f"The image store {directory!r} (--config.image_store_dir) {problem}. Delete that folder "
        "and run again: prepare() rebuilds it from the dataset."
    )


@dataclasses.dataclass
class Store:
    """One split's complete store, opened: labels and ids in memory, the squares on disk."""

    directory: str
    resize_size: int
    labels: np.ndarray  # int32 [N]
    example_ids: np.ndarray  # uint32 [N, 2]
    num_undecodable: int
    _files: list  # (fd, offset of the first square) per images-*.npy

    @property
    def num_examples(self) -> int:
        return len(self.labels)

    def read(self, positions: np.ndarray, out: np.ndarray) -> None:
        """out[i] = the square at store position positions[i] (out: uint8 [len, R, R, 3])."""
        size = bytes_per_image(self.resize_size)
        shards, rows = np.divmod(positions, SHARD_SIZE)
        for i, (shard, row) in enumerate(zip(shards.tolist(), rows.tolist(), strict=True)):
            fd, start = self._files[shard]
            if os.preadv(fd, [out[i]], start + row * size) != size:
                raise _store_error(self.directory, f"has a truncated file (shard {shard})")

    def check_labels(self, num_classes: int) -> None:
        """DataError when a label is outside [0, num_classes): a damaged store (a store of other
        data would have another folder name)."""
        if len(self.labels) and not 0 <= self.labels.min() <= self.labels.max() < num_classes:
            raise _store_error(
                self.directory,
                f"has labels outside [0, {num_classes}) (config.num_classes): it is damaged",
            )

    def close(self) -> None:
        for fd, _ in self._files:
            os.close(fd)
        self._files = []

    def __del__(self) -> None:
        self.close()


def _npy_header(path: str) -> tuple[tuple[int, ...], np.dtype, int]:
    """(shape, dtype, offset of the data) of a .npy file."""
    with open(path, "rb") as f:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran_order, dtype = np.lib.format.read_array_header_1_0(f)
        else:
            shape, fortran_order, dtype = np.lib.format.read_array_header_2_0(f)
        if fortran_order:
            raise ValueError(f"{path} is in Fortran order")
        return shape, dtype, f.tell()


def open_split(config, split: str) -> Store:
    """The complete store of `split`; DataError when it is missing, incomplete or damaged."""
    directory = split_dir(config, split)
    if not os.path.exists(os.path.join(directory, MANIFEST)):
        raise DataError(
            f"The image store of the {split!r} split is not built in {directory!r} "
            "(--config.image_store_dir); call alexnet_jax.data.input_pipeline.prepare(config) "
            "first (main.py does)."
        )
    return open_split_dir(directory)


def open_split_dir(directory: str) -> Store:
    """The complete store in `directory` (written by `write`); DataError when it is damaged."""
    manifest = data_sources.read_json(os.path.join(directory, MANIFEST))
    if manifest is None:
        raise _store_error(directory, f"has no readable {MANIFEST}")
    try:
        size, files, lengths = int(manifest["resize_size"]), manifest["files"], manifest["lengths"]
        num_examples, num_undecodable = manifest["num_examples"], int(manifest["num_undecodable"])
        labels = np.load(os.path.join(directory, "labels.npy"))
        ids = np.load(os.path.join(directory, "example_ids.npy"))
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise _store_error(directory, f"cannot be read ({e})") from e
    if len(labels) != num_examples or ids.shape != (len(labels), 2):
        raise _store_error(directory, "has labels or ids that do not match its manifest")
    if lengths[:-1] and set(lengths[:-1]) != {SHARD_SIZE}:
        raise _store_error(directory, f"has files that do not hold {SHARD_SIZE} squares each")
    store = Store(directory, size, labels, ids, num_undecodable, [])
    try:  # on an error, the files opened so far are closed
        for name, length in zip(files, lengths, strict=True):
            path = os.path.join(directory, name)
            shape, dtype, offset = _npy_header(path)
            if shape != (length, size, size, 3) or dtype != np.uint8:
                raise _store_error(directory, f"has {name} of shape {shape}, not {length} squares")
            if os.path.getsize(path) != offset + length * bytes_per_image(size):
                raise _store_error(directory, f"has a truncated or padded {name}")
            store._files.append((os.open(path, os.O_RDONLY), offset))
    except (OSError, ValueError) as e:
        store.close()
        raise _store_error(directory, f"cannot be read ({e})") from e
    except DataError:
        store.close()
        raise
    return store


def epoch_order(count: int, seed: int, epoch: int) -> np.ndarray:
    """A permutation of range(count), a pure function of (seed, epoch): positions sorted by a
    splitmix64 hash keyed by both (stable sort, so even equal hashes order the same way)."""
    key = _splitmix64(np.array([seed], np.uint64))[0] ^ np.uint64(epoch)
    hashes = _splitmix64(np.arange(count, dtype=np.uint64) + _splitmix64(np.array([key]))[0])
    return np.argsort(hashes, kind="stable")


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """The splitmix64 finalizer, elementwise on uint64 (wrapping arithmetic)."""
    with np.errstate(over="ignore"):
        x = x + np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def train_positions(num_examples: int, process_index: int, process_count: int) -> np.ndarray:
    """The store positions host `process_index` trains on: every process_count-th one."""
    return np.arange(process_index, num_examples, process_count, dtype=np.int64)


def train_batches(
    store: Store, seed: int, batch_size: int, local_position: int, positions: np.ndarray
) -> Iterator[dict[str, np.ndarray]]:
    """A host's infinite stream of train batches from `local_position` of its stream (epochs of
    its `positions` back to back): uint8 squares, label, mask, example_id and epoch, the fields
    of the tf.data device path's batches."""
    count = len(positions)
    epoch, offset = divmod(local_position, count)
    order = positions[epoch_order(count, seed, epoch)]
    size = store.resize_size
    while True:
        chosen, epochs, filled = [], [], 0
        while filled < batch_size:
            take = min(batch_size - filled, count - offset)
            chosen.append(order[offset : offset + take])
            epochs.append(np.full([take], epoch, np.int32))
            filled, offset = filled + take, offset + take
            if offset == count:
                epoch, offset = epoch + 1, 0
                order = positions[epoch_order(count, seed, epoch)]
        chosen = np.concatenate(chosen)
        images = np.empty([batch_size, size, size, 3], np.uint8)
        store.read(chosen, images)
        yield {
            "image": images,
            "label": store.labels[chosen],
            "mask": np.ones([batch_size], bool),
            "example_id": store.example_ids[chosen],
            "epoch": np.concatenate(epochs),
        }


class Prefetch:
    """Runs an iterator in a daemon thread, `depth` items ahead (the reads overlap the step);
    an exception in the thread is raised by the next `next()`. When the Prefetch is garbage
    (a finished run, an abandoned iterator) the thread stops and lets go of the iterator."""

    _END = object()

    def __init__(self, items: Iterator, depth: int = _PREFETCH):
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        stop = threading.Event()
        self._thread = threading.Thread(
            target=_fill, args=(items, self._queue, stop, self._END), daemon=True
        )
        self._thread.start()
        weakref.finalize(self, stop.set)

    def __iter__(self) -> Prefetch:
        return self

    def __next__(self):
        item = self._queue.get()
        if item is self._END:
            self._queue.put(item)
            raise StopIteration
        if isinstance(item, BaseException):
            self._queue.put(item)
            raise item
        return item


def _fill(items: Iterator, out: queue.Queue, stop: threading.Event, end: object) -> None:
    """Prefetch's thread: puts each item (then `end`, or the exception raised) into `out`, and
    returns as soon as `stop` is set (it holds no reference to the Prefetch itself)."""

    def put(item) -> bool:
        while not stop.is_set():
            try:
                out.put(item, timeout=0.1)
                return True
            except queue.Full:
                pass
        return False

    try:
        for item in items:
            if not put(item):
                return
    except BaseException as e:  # handed to the consumer
        put(e)
        return
    put(end)

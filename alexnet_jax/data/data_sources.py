"""Where the input pipeline's examples come from: tfds imagenet2012 builds, image folders, caches.

A *source* is a prepared dataset (the real or the miniature imagenet2012 build, or an image folder);
its `shard(split, index, count)` is one host's part of a split as raw records in a fixed order:
`RecordShard` (TFRecord files: tfds builds and the pre-resize cache) or `FileShard` (image files).
A shard's `epoch_records(order_seed)` gives one epoch of raw records (shuffled by stateless ops when
a seed is given) and `materialize(records)` turns a batch of them into encoded images, labels and
keys (file names); the input pipeline skips records before materializing, so resuming reads but
never decodes the skipped part.

This module also builds what is missing: imagenet2012 from the user's archives (raising DataError
with instructions when they are absent), the miniature archive and its build (runs that share a
miniature_dir or data_dir take turns under file locks), and the one-time pre-resize cache; it
checks the data fields against the files (`check_before_build`, `check_splits`) and says what
identifies the data a run trains on (`dataset_identity`).
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import fcntl
import hashlib
import io
import json
import os
import re
import shutil
import sys
import tarfile
import time
from collections.abc import Iterator
from typing import Any
from unittest import mock

import numpy as np

from alexnet_jax.core import console, errors, runtime
from alexnet_jax.core.errors import ConfigError, DataError
from alexnet_jax.data import miniature, preprocessing, recipe

tf = runtime.tensorflow  # imported on first use
tfds = runtime.tensorflow_datasets

IMAGENET_ARCHIVES = ("ILSVRC2012_img_train.tar", "ILSVRC2012_img_val.tar")
IMAGENET_SPLITS = ("train", "validation", "test")  # "test" only when its archive was given
# What tf.io.decode_image reads (not TIFF): files of other extensions are not read.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")
FORMATS = "JPEG, PNG, GIF, BMP or WebP"
CACHE_VERSION = 2  # bump when the cache format or its re-encoding changes (2: resample, floor rule)
CACHE_JPEG_QUALITY = 90
CACHE_SHARD_SIZE = 1024  # examples per cache file (many files let each epoch shuffle file order)
CACHE_MANIFEST = "cache.json"
# tfds imagenet2012 records and the resize cache share this tf.train.Example layout.
RECORD_FIELDS = {"image": "string", "label": "int64", "file_name": "string"}


def record_spec(fields: dict[str, str] = RECORD_FIELDS) -> dict:
    """The tf.io.parse_example spec of `fields` (name -> dtype name), all scalars."""
    return {name: tf.io.FixedLenFeature([], dtype) for name, dtype in fields.items()}


# tfds cifar10 records: a PNG, its label and an id ("train_16399"), which keys the augmentation.
CIFAR10_KEY = "id"
CIFAR10_CLASSES = 10
_FILE_ORDER, _RECORD_ORDER = 1, 2  # seed purposes, so their streams never coincide


# ---- Seeds and options --------------------------------------------------------------------------


def fold_seed(key: tf.Tensor, value) -> tf.Tensor:
    """A new int64 [2] stateless seed that hashes `key` with an integer `value` (Philox)."""
    mixed = tf.stack([key[0], tf.bitwise.bitwise_xor(key[1], tf.cast(value, tf.int64))])
    return tf.random.stateless_uniform([2], seed=mixed, minval=None, maxval=None, dtype=tf.int64)


def _permutation(n, seed: tf.Tensor) -> tf.Tensor:
    """A stateless random permutation of range(n)."""
    return tf.argsort(tf.random.stateless_uniform([n], seed=seed))


def example_ids(keys: tf.Tensor) -> tf.Tensor:
    """int64 [N] stable ids of examples from their keys (file names): a FarmHash fingerprint."""
    return tf.strings.to_hash_bucket_fast(keys, 2**62)


def example_id_words(ids: tf.Tensor) -> tf.Tensor:
    """int64 ids in [0, 2^62) [N] -> uint32 [N, 2] (high word, low word), for the device path."""
    words = tf.stack([ids // 2**32, ids % 2**32], axis=1)
    return tf.cast(words, tf.uint32)


def dataset_options() -> tf.data.Options:
    """Deterministic element order; parallelism across elements (tf.data), not inside ops."""
    options = tf.data.Options()
    options.deterministic = True
    options.threading.max_intra_op_parallelism = 1
    return options


def image_bytes(example: dict[str, tf.Tensor]) -> tf.Tensor:
    """The encoded image of a materialized example; image folders read their file here."""
    return tf.io.read_file(example["path"]) if "path" in example else example["image"]


def fixed_order_examples(shard) -> tf.data.Dataset:
    """A shard's materialized examples in their fixed order (evaluation, cache building)."""
    return shard.epoch_records(None).batch(256).map(shard.materialize).unbatch()


UNDECODABLE = "undecodable"  # field of a decoded chunk: keys (file names) of its failed examples


def decode_chunk(
    chunk: dict[str, tf.Tensor], example_fn, placeholder_fn, size: int | None = None
) -> tf.data.Dataset:
    """One batch from a chunk of `size` materialized examples (None: however many it holds):
    example_fn of each one that decodes, in order, then placeholder_fn() for each one that failed
    (or has 'valid' False), so the batch has the chunk's size.

    Field UNDECODABLE of the batch holds the keys (file names) of the failed examples, [K] strings,
    so that warnings can name them.
    """
    if size is None:
        size = tf.shape(chunk["key"], out_type=tf.int64)[0]
    positions = tf.range(size, dtype=tf.int64)
    items = tf.data.Dataset.from_tensor_slices((positions, chunk))
    if "valid" in chunk:
        items = items.filter(lambda _, example: example["valid"])
    # The failures are named by the iterators' own warnings: TensorFlow's C++ line per failure
    # (W0000 ... ignore_errors_dataset_op.cc, several per file) would only repeat them.
    decoded = items.map(lambda i, example: (i, example_fn(example))).ignore_errors()
    filler = tf.data.Dataset.from_tensors((tf.constant(-1, tf.int64), placeholder_fn()))

    def name_failures(done, batch):
        done = tf.boolean_mask(done, done >= 0)
        hits = tf.scatter_nd(
            done[:, None], tf.ones_like(done, tf.int32), tf.shape(positions, out_type=tf.int64)
        )
        failed = hits == 0
        if "valid" in chunk:
            failed &= chunk["valid"]
        return {**batch, UNDECODABLE: tf.boolean_mask(chunk["key"], failed)}

    batch = decoded.concatenate(filler.repeat(size)).take(size).batch(size)
    return batch.map(name_failures)


def name_list(keys, limit: int = 20) -> str:
    """Keys (file names, bytes or str) for a warning: "a.JPEG, b.JPEG"; long lists are cut."""
    names = [k.decode(errors="replace") if isinstance(k, bytes) else str(k) for k in keys]
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def warn_left_out(what: str, manifest: dict) -> None:
    """The warning naming the undecodable files a cache (`what`: "pre-resize cache", "image
    store") left out, from its manifest: said by the build, and again by every run that reuses
    the cache, whose training set lacks them too."""
    count = manifest.get("num_undecodable") or 0
    if isinstance(count, int) and count > 0:
        names = manifest.get("undecodable_files") or []
        named = f": {name_list(names)}" if isinstance(names, list) and names else ""
        console.warning(f"The {what} left out {count} undecodable image(s){named}")


# ---- Shards: one host's part of a split, as raw records ----------------------------------------


@dataclasses.dataclass(frozen=True)
class RecordShard:
    """Part of a split stored as TFRecord files of tf.train.Examples (tfds data, resize cache)."""

    filenames: tuple[str, ...]
    skips: tuple[int, ...]
    takes: tuple[int, ...]
    window: int = 4096  # records permuted together per epoch (config.shuffle_buffer_size)
    key_field: str = "file_name"  # the record's unique name (cifar10: "id")

    @property
    def num_examples(self) -> int:
        return sum(self.takes)

    def epoch_records(self, order_seed: tf.Tensor | None) -> tf.data.Dataset:
        """Serialized records of one epoch: fixed order, or shuffled files then shuffled windows."""
        files = tf.data.Dataset.from_tensor_slices(
            (
                tf.constant(self.filenames, tf.string, shape=[len(self.filenames)]),
                tf.constant(self.skips, tf.int64, shape=[len(self.skips)]),
                tf.constant(self.takes, tf.int64, shape=[len(self.takes)]),
            )
        )
        if order_seed is not None and len(self.filenames) > 1:
            order = _permutation(len(self.filenames), fold_seed(order_seed, _FILE_ORDER))
            files = tf.data.Dataset.from_tensor_slices(order).map(
                lambda i: (
                    tf.constant(self.filenames)[i],
                    tf.constant(self.skips, tf.int64)[i],
                    tf.constant(self.takes, tf.int64)[i],
                )
            )
        records = files.interleave(
            lambda name, skip, take: tf.data.TFRecordDataset(name).skip(skip).take(take),
            cycle_length=max(1, min(16, len(self.filenames))),
            block_length=1,
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=True,
        )
        if order_seed is None:
            return records
        return _window_shuffle(records, self.window, fold_seed(order_seed, _RECORD_ORDER))

    def materialize(self, records: tf.Tensor) -> dict[str, tf.Tensor]:
        """Raw records [N] -> {'image': bytes, 'label': int32, 'key': file name}, [N] each."""
        spec = record_spec({**RECORD_FIELDS, self.key_field: "string"})
        if self.key_field != "file_name":
            del spec["file_name"]
        example = tf.io.parse_example(records, spec)
        return {
            "image": example["image"],
            "label": tf.cast(example["label"], tf.int32),
            "key": example[self.key_field],
        }


def _window_shuffle(records: tf.data.Dataset, window: int, seed: tf.Tensor) -> tf.data.Dataset:
    """Permutes consecutive windows of `window` records, each by its own stateless permutation.

    Like a shuffle buffer of the same size, but a pure function of the seed (tf.data's shuffle also
    depends on TensorFlow's global seed).
    """

    def permute(index, batch):
        order = _permutation(tf.shape(batch)[0], fold_seed(seed, index))
        return tf.data.Dataset.from_tensor_slices(tf.gather(batch, order))

    return records.batch(window).enumerate().flat_map(permute)


@dataclasses.dataclass(frozen=True)
class FileShard:
    """Part of a split stored as image files (image folders); random access, so exact shuffles."""

    paths: tuple[str, ...]
    labels: tuple[int, ...]
    keys: tuple[str, ...]

    @property
    def num_examples(self) -> int:
        return len(self.paths)

    def epoch_records(self, order_seed: tf.Tensor | None) -> tf.data.Dataset:
        """Indices into the file list for one epoch: fixed order or a full random permutation."""
        if order_seed is None:
            return tf.data.Dataset.range(self.num_examples)
        order = _permutation(self.num_examples, fold_seed(order_seed, _FILE_ORDER))
        return tf.data.Dataset.from_tensor_slices(tf.cast(order, tf.int64))

    def materialize(self, indices: tf.Tensor) -> dict[str, tf.Tensor]:
        """File indices [N] -> {'path', 'label': int32, 'key': relative path}, each [N].

        The file itself is read by the per-example decoding (`image_bytes`), in parallel.
        """
        return {
            "path": tf.gather(tf.constant(self.paths, tf.string, shape=[len(self.paths)]), indices),
            "label": tf.gather(
                tf.constant(self.labels, tf.int32, shape=[len(self.labels)]), indices
            ),
            "key": tf.gather(tf.constant(self.keys, tf.string, shape=[len(self.keys)]), indices),
        }


def even_file_instructions(filenames, lengths, index: int, count: int, window: int):
    """The RecordShard of host `index` of `count`: an even contiguous slice of all records."""
    total = sum(lengths)
    start, end = index * total // count, (index + 1) * total // count
    names, skips, takes, position = [], [], [], 0
    for name, length in zip(filenames, lengths, strict=True):
        skip = max(start - position, 0)
        take = min(end, position + length) - position - skip
        if take > 0:
            names.append(name)
            skips.append(skip)
            takes.append(take)
        position += length
    return RecordShard(tuple(names), tuple(skips), tuple(takes), window)


# ---- Sources ------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _TfdsSource:
    """A prepared tfds build: imagenet2012 (the real one or the miniature one) or cifar10."""

    builder: Any
    num_classes: int
    identity: str  # names the resize cache made from it
    location: str  # the data_dir of the build (named in errors)
    key_field: str = "file_name"  # the records' unique name (RecordShard.key_field)
    split_hint = " (or a slice or sum of them, e.g. 'train[:10%]')"

    def num_examples(self, split: str) -> int:
        """Examples of a split (or slice); KeyError/ValueError from tfds for an unknown one."""
        return self.builder.info.splits[split].num_examples

    def split_names(self) -> list[str]:
        return sorted(self.builder.info.splits.keys())

    def cache_key(self, split: str) -> str:
        """What the caches made from `split` are keyed by: the build's location and version
        (a tfds build is written once and never changes in place)."""
        del split
        return self.identity

    def describe(self) -> dict:
        """What identifies this build, from its dataset_info.json (no pass over the data)."""
        splits = self.builder.info.splits
        return {
            "builder": self.builder.name,
            "version": str(self.builder.version),
            "num_classes": self.num_classes,
            "splits": {
                name: {
                    "num_examples": int(splits[name].num_examples),
                    "num_shards": int(splits[name].num_shards),
                }
                for name in self.split_names()
            },
        }

    def shard(self, split: str, index: int, count: int, window: int = 4096) -> RecordShard:
        sub_split = tfds.split_for_jax_process(split, process_index=index, process_count=count)
        instructions = self.builder.info.splits[sub_split].file_instructions
        return RecordShard(
            tuple(os.fspath(i.filename) for i in instructions),
            tuple(int(i.skip) for i in instructions),
            tuple(int(i.take) for i in instructions),
            window,
            self.key_field,
        )


@dataclasses.dataclass(frozen=True)
class _FolderSource:
    """root/<split>/<class>/<image>; labels are the sorted class directory names of train/."""

    root: str
    classes: tuple[str, ...]
    identity: str  # its location (cache_key names the caches made from it)
    split_hint = " (sub-folders of the image folder; 'validation' means val/)"

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def location(self) -> str:
        return self.root

    def split_names(self) -> list[str]:
        return sorted(
            d
            for d in os.listdir(self.root)
            if os.path.isdir(os.path.join(self.root, d)) and not d.startswith(".")
        )

    def files(self, split: str) -> list[tuple[str, int, str]]:
        """(path, label, key) of every image of a split, in a fixed pseudo-random order.

        The fixed shuffle makes every host's strided shard (and the resize cache) cover all
        classes; the per-epoch order is shuffled on top of it.
        """
        directory = _folder_split_dir(self.root, split)
        found = []
        for label, name in enumerate(self.classes):
            for entry in _image_entries(os.path.join(directory, name)):
                key = f"{os.path.basename(directory)}/{name}/{entry}"
                found.append((os.path.join(directory, name, entry), label, key))
        order = np.random.default_rng(0).permutation(len(found))
        return [found[i] for i in order]

    def check_classes(self) -> None:
        """Every class must have a training image that decodes (else its output would never see
        an example): DataError naming the first class without one, and what its folder holds.
        Decodes at most a few files per class (the first that decodes ends the search). Entries
        named like images that are not files are named in one warning, and so are the images
        that are not directly inside a class folder (`images_outside_class_folders`)."""
        hidden = [
            f"{split}/{name}/"
            for split in self.split_names()
            for name in _class_folders(self.root, split, hidden=True)
        ]
        if hidden:
            console.warning(
                f"Left out the hidden folder(s) {', '.join(hidden)} of {self.root!r}: a folder "
                "whose name starts with a dot is no class."
            )
        outside = self.images_outside_class_folders()
        if outside:
            console.warning(
                f"{len(outside)} image file{'' if len(outside) == 1 else 's'} of {self.root!r} "
                f"{'is' if len(outside) == 1 else 'are'} left out (e.g. {outside[0]}): only the "
                "images directly inside a class folder, <split>/<class>/, are read, not those in "
                "its sub-folders or loose in <split>/."
            )
        not_files = [
            f"{split}/{name}/{entry}"
            for split in self.split_names()
            for name in self.classes
            for entry in _image_entries(os.path.join(self.root, split, name), files=False)
        ]
        if not_files:
            console.warning(
                f"{len(not_files)} entr{'y' if len(not_files) == 1 else 'ies'} of "
                f"{self.root!r} named like an image {'is' if len(not_files) == 1 else 'are'} "
                f"not a file (a folder, or a broken link) and left out: "
                f"{', '.join(not_files[:5])}{' ...' if len(not_files) > 5 else ''}"
            )
        for name in self.classes:
            class_dir = os.path.join(self.root, "train", name)
            entries = _image_entries(class_dir)
            if not any(_decodes(os.path.join(class_dir, entry)) for entry in entries):
                others = collections.Counter(
                    os.path.splitext(e)[1].lower() or "no extension" for e in os.listdir(class_dir)
                )
                held = ", ".join(f"{n} {ext}" for ext, n in sorted(others.items())) or "nothing"
                what = "no image that decodes" if entries else "no image in a format read here"
                raise _image_folder_error(
                    self.root,
                    f"has a class, train/{name}/, with {what} (it holds: {held}); its output "
                    "would never see an example. Add images of it, convert them, or remove the "
                    "folder",
                )

    def cache_key(self, split: str) -> str:
        """What the caches made from `split` (the resize cache, the image store) are keyed by:
        a hash of the class names (the labels), of each image's relative path, size and
        modification time, and of the first bytes of each class's first image (a stat per file,
        one short read per class), and the decoder's version. Renamed, added, removed or edited
        files, another folder with the same class names and counts, or pictures the decoder now
        reads otherwise give another key, so a cache of other data is never reused; the same
        files moved elsewhere keep it."""
        return f"folder-files:{self._files_digest(split, with_times=True)}"

    def fingerprint(self, split: str) -> str:
        """What a run records of `split`'s files (run.json): the class names, each image's
        relative path and size, and the first 4096 bytes of up to FINGERPRINT_READS images per
        class, evenly spaced in name order (no times, so the same files copied elsewhere resume;
        ImageNet: 64k short reads). Files swapped between classes in place (same names and
        sizes) change it when a swapped file is read and its first bytes differ from its
        replacement's: in a class of up to FINGERPRINT_READS images every file is read; in a
        larger one a swap of many files is caught, one of thousands likely not (hostile pass
        19, #24; pass 23, #59: 6 of 16 files per class swapped resumed without a word, training
        on flipped labels)."""
        return self._files_digest(split, with_times=False)

    def _files_digest(self, split: str, with_times: bool) -> str:
        entries = []
        per_class = collections.defaultdict(list)
        for path, label, key in sorted(self.files(split), key=lambda found: found[2]):
            try:
                stat = os.stat(path)
                entries.append([key, stat.st_size, stat.st_mtime_ns][: 3 if with_times else 2])
            except OSError:  # vanished or unreadable: the pipeline leaves it out as undecodable
                entries.append([key, -1, -1][: 3 if with_times else 2])
            per_class[label].append(path)
        # (the decoder's version keys the caches, not the run: a resume reads its files anew)
        blob = [preprocessing.DECODER_VERSION] if with_times else []
        digest = hashlib.sha1(json.dumps([*blob, list(self.classes), entries]).encode())
        reads = 1 if with_times else FINGERPRINT_READS  # (the caches keep their keys)
        for label in sorted(per_class):  # files swapped between classes of equal names, sizes
            paths = per_class[label]
            for i in np.unique(np.linspace(0, len(paths) - 1, min(reads, len(paths))).round()):
                with contextlib.suppress(OSError), open(paths[int(i)], "rb") as f:
                    digest.update(f.read(4096))
        return digest.hexdigest()

    def images_outside_class_folders(self) -> list[str]:
        """The image files (relative paths, sorted) that no split reads: loose in a split's
        folder (train/x.png) or in a sub-folder of a class folder (train/ant/more/x.png)."""
        found = []
        for split in self.split_names():
            split_dir = os.path.join(self.root, split)
            found += [f"{split}/{name}" for name in _image_entries(split_dir)]
            for class_dir in _subfolders(split_dir):
                for sub in _subfolders(os.path.join(split_dir, class_dir)):
                    top = os.path.join(split_dir, class_dir, sub)
                    for folder, _, names in os.walk(top):
                        relative = os.path.relpath(folder, self.root).replace(os.sep, "/")
                        found += [
                            f"{relative}/{n}" for n in names if n.lower().endswith(IMAGE_EXTENSIONS)
                        ]
        return sorted(found)

    def num_examples(self, split: str) -> int:
        """Images of a split; KeyError when the image folder has no such sub-folder."""
        if not os.path.isdir(_folder_split_dir(self.root, split)):
            raise KeyError(f"no folder {_folder_split_dir(self.root, split)!r}")
        return len(self.files(split))

    def describe(self, splits: tuple[str, ...] = ("train", "validation")) -> dict:
        """What identifies this folder: the class names (labels) and the files per split."""
        return {
            "classes": list(self.classes),
            "num_files": {split: len(self.files(split)) for split in splits},
        }

    def shard(self, split: str, index: int, count: int, window: int = 4096) -> FileShard:
        del window  # files are shuffled exactly
        mine = self.files(split)[index::count]
        return FileShard(
            tuple(p for p, _, _ in mine),
            tuple(lab for _, lab, _ in mine),
            tuple(k for _, _, k in mine),
        )


def _image_entries(class_dir: str, files: bool = True) -> list[str]:
    """The file names in `class_dir` that the pipeline reads (IMAGE_EXTENSIONS), sorted; with
    `files=False` the entries named like images that are not files (a directory, a broken or
    looping link), which the pipeline leaves out (check_classes names them)."""
    try:
        with os.scandir(class_dir) as entries:  # is_file() needs no stat for a plain file
            return sorted(
                e.name
                for e in entries
                if e.name.lower().endswith(IMAGE_EXTENSIONS) and _is_file(e) == files
            )
    except (FileNotFoundError, NotADirectoryError):
        return []


def _subfolders(directory: str) -> list[str]:
    """The names of the directories in `directory`, sorted."""
    try:
        with os.scandir(directory) as entries:
            return sorted(e.name for e in entries if e.is_dir())
    except OSError:
        return []


def _is_file(entry: os.DirEntry) -> bool:
    try:
        return entry.is_file()
    except OSError:  # a link TensorFlow could not read either
        return False


def _decodes(path: str) -> bool:
    """Whether TensorFlow, the training pipeline's decoder, reads the image file `path` (a
    failure's C++ log line, "Local rendezvous is aborting with status: INVALID_ARGUMENT: Unknown
    image file format", is muted: the caller reports it)."""
    try:
        with runtime.native_stderr_muted():
            preprocessing.decode_rgb(tf.io.read_file(path))
    except (tf.errors.OpError, ValueError):
        return False
    return True


def folder_split(split: str) -> str:
    """An image folder's name of a split: tfds-style names map onto the folder layout,
    "validation" is val/."""
    return {"validation": "val"}.get(split, split)


def _folder_split_dir(root: str, split: str) -> str:
    return os.path.join(root, re.sub(r"\[.*\]$", "", folder_split(split)))


def _image_folder_error(root: str, problem: str) -> DataError:
    return DataError(
        f"The image folder {root!r} {problem}. Expected layout: <root>/train/<class>/<image> and "
        f"<root>/val/<class>/<image> ({FORMATS} files; one sub-directory per "
        f"class, the same class names in both). Set --config.image_folder=/path/to/root."
    )


def _open_folder(root: str) -> _FolderSource:
    """Checks the layout of an image folder; raises DataError naming what is missing."""
    if not root:
        raise _image_folder_error(root, "is not set (config.dataset is 'image_folder')")
    train_dir = os.path.join(root, "train")
    if not os.path.isdir(train_dir):  # ("has no train/" for a folder that is not there at all:
        missing = not os.path.lexists(root)  # hostile pass 26, #47; 27)
        raise _image_folder_error(root, "does not exist" if missing else "has no train/ directory")
    classes = tuple(_class_folders(root, "train"))
    source = _FolderSource(os.path.abspath(root), classes, f"folder:{os.path.abspath(root)}")
    if not classes or not source.files("train"):
        raise _image_folder_error(root, "has no images under train/<class>/")
    val_dir = os.path.join(root, "val")
    if not os.path.isdir(val_dir) or not source.files("validation"):
        raise _image_folder_error(root, "has no images under val/<class>/")
    val_classes = set(_class_folders(root, "val"))
    unknown = val_classes - set(classes)
    if unknown:
        raise _image_folder_error(root, f"has val/ classes missing from train/: {sorted(unknown)}")
    _refuse_shared_class_folders(root, "train", classes)
    _refuse_shared_class_folders(root, "val", sorted(val_classes))
    _refuse_names_not_utf8(source)
    return source


def _class_folders(root: str, split: str, hidden: bool = False) -> list[str]:
    """The class folders of root/split, sorted. Hidden folders (`.ipynb_checkpoints`, `.git`:
    names starting with a dot) are no classes (they became one, label 0, of images that are no
    class); with `hidden`, only those (check_classes names them)."""
    directory = os.path.join(root, split)
    folders = sorted(d for d in os.listdir(directory) if os.path.isdir(os.path.join(directory, d)))
    return [d for d in folders if d.startswith(".") == hidden]


def _refuse_names_not_utf8(source: _FolderSource) -> None:
    """DataError for a class folder or an image whose name is not UTF-8 (made under another
    encoding: `train/caf\\xe9/`): TensorFlow takes paths as UTF-8 strings, so tracing the
    pipeline failed in a traceback, and a class folder so named was called "no image that
    decodes"."""
    names = [f"train/{name}/" for name in source.classes]
    names += [key for split in ("train", "validation") for _, _, key in source.files(split)]
    for name in names:
        if not errors.is_utf8(name):
            raise _image_folder_error(
                source.root,
                f"has a name that is not UTF-8, {name!r} (bytes shown as \\udc..), "
                "which TensorFlow cannot open. Rename it to a UTF-8 name (for example with "
                "`convmv -f latin1 -t utf8 -r --notest <folder>`)",
            )


def _refuse_shared_class_folders(root: str, split: str, classes) -> None:
    """DataError when two class folders of `split` are one folder (links to it): each of its
    images would be read under both labels, a task no network can learn."""
    by_folder = collections.defaultdict(list)
    for name in classes:
        by_folder[os.path.realpath(os.path.join(root, split, name))].append(name)
    for folder, names in sorted(by_folder.items()):
        if len(names) > 1:
            named = " and ".join(f"{split}/{name}/" for name in names)
            raise DataError(
                f"The image folder {root!r} has class folders {named} that are one folder "
                f"({folder}), so each of its images would be trained under {len(names)} labels: "
                "make each class a folder of its own (copy it, or remove the extra link)."
            )


def _manual_dir_error(manual_dir: str, data_dir: str) -> DataError | None:
    """The DataError for a manual_dir that cannot build imagenet2012, or None if it looks right."""
    if not manual_dir:
        problem = "--config.manual_dir is not set"
    elif not os.path.isdir(manual_dir):
        problem = f"the manual_dir {manual_dir!r} does not exist"
    else:
        missing = [
            f
            for f in IMAGENET_ARCHIVES
            if not os.path.isfile(os.path.join(manual_dir, f))
            or os.path.getsize(os.path.join(manual_dir, f)) == 0
        ]
        if not missing:
            return None
        problem = f"the manual_dir {manual_dir!r} lacks (or has empty) {' and '.join(missing)}"
    return DataError(
        f"ImageNet (ILSVRC2012) is not built in --config.data_dir={data_dir!r} yet, and {problem}. "
        "Download ILSVRC2012_img_train.tar (about 138 GB) and ILSVRC2012_img_val.tar (about "
        "6.3 GB) from https://image-net.org/download-images (free, after registering and "
        "accepting the terms of access), put both files in one folder and pass it with "
        "--config.manual_dir=/path/to/that/folder; the first run then builds the tfds dataset "
        "into --config.data_dir once (hours). ILSVRC2012_img_test.tar is not needed."
    )


DOWNLOAD_AGAIN = "download it again (https://image-net.org/download-images) and rerun"


def _download_and_prepare(
    builder, manual_dir: str, data_dir: str, remedy: str = DOWNLOAD_AGAIN
) -> None:
    """Builds an imagenet2012 dataset from the two archives in manual_dir (TFRecord files).

    Without ILSVRC2012_img_test.tar the builder only logs that the test split is skipped. Its
    progress bars are shown on a terminal only (in a log file they are raw escape codes). The
    archives' headers are read first (`_check_archives`); a class archive inside the training
    archive that cannot be read fails the build (tfds removes its temporary folder, so a rerun
    builds again): DataError naming the archive, and `remedy` (what to do).
    """
    _check_archives(manual_dir, remedy)
    if not sys.stderr.isatty():
        tfds.disable_progress_bar()
    console.info(f"Building the tfds dataset from {manual_dir} into {builder.data_dir} (once).")
    start = time.monotonic()
    # tfds prints its own two lines to stdout ("Downloading and preparing dataset Unknown size",
    # "downloaded and prepared"): about a download that does not happen here.
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            builder.download_and_prepare(
                download_dir=os.path.join(data_dir, "downloads"),
                download_config=tfds.download.DownloadConfig(
                    manual_dir=manual_dir, compute_stats=tfds.download.ComputeStatsMode.SKIP
                ),
                file_format="tfrecord",
            )
    except (tarfile.TarError, EOFError) as e:  # (the archives' own headers were read above)
        train = os.path.join(manual_dir, IMAGENET_ARCHIVES[0])
        test = os.path.join(manual_dir, "ILSVRC2012_img_test.tar")
        where = f"{train} (or {test})" if os.path.exists(test) else train
        raise _unreadable_archive(f"A class archive inside {where}", e, remedy) from None
    console.info(f"Built the dataset in {time.monotonic() - start:.0f} s.")


# An ImageNet validation file: its number (1..50,000) is its line in tfds's validation labels.
_VALIDATION_FILE = re.compile(r"ILSVRC2012_val_(\d{8})\.JPEG")
_CLASS_ARCHIVE = re.compile(r"(n\d{8})\.tar")  # a training archive's member: one synset's images


def _check_archives(manual_dir: str, remedy: str) -> None:
    """Reads every header of both archives before the build (minutes; the build, hours, failed
    in a traceback at a cut or damaged archive, or at a file of another name): DataError naming
    the archive (or those files) and `remedy`. A class archive that is a link to another member
    is refused too: its images are that class's (tfds then met each image twice, a traceback:
    hostile pass 21, #24, #25), and so are the class archives' own problems
    (`_refuse_class_archive_problems`)."""
    train, val = (os.path.join(manual_dir, name) for name in IMAGENET_ARCHIVES)
    synsets = set(miniature.imagenet_synsets())
    strangers, links = [], []
    for name, is_link in _archive_files(train, remedy):
        found = _CLASS_ARCHIVE.fullmatch(name)
        if found is None or found[1] not in synsets:
            strangers.append(name)
        elif is_link:
            links.append(name)
    _refuse_strangers(train, strangers, "class archives (<synset>.tar: n01440764.tar)", remedy)
    if links:
        raise DataError(
            f"The archive {train} holds {len(links)} class archive(s) that are links to other "
            f"members, so their images would be another class's: {name_list(links)}. Make the "
            f"archive again of plain files, or {remedy}."
        )
    _refuse_class_archive_problems(train, remedy)
    _labels_by_file_name(val, remedy)


def _refuse_class_archive_problems(train: str, remedy: str) -> None:
    """DataError naming the class archives inside the training archive that are no readable tar,
    that hold no image (the class would never see an example: hostile pass 22, #31), or an image
    name that one of them holds twice or two of them hold (tfds keys each example by that name:
    an AssertionError traceback, #28, #29). Names as tfds's stream reader gives them (links
    skipped); every header of every class archive is read (about 1.3 million: minutes)."""
    first, twice, empty = {}, [], []  # image name -> its first class archive
    with tarfile.open(train, "r:*") as tar:  # (its own headers were read whole before)
        for member in tar.getmembers():
            if not member.isfile() or (name := _as_tfds_names_it(member.name)) is None:
                continue  # (a hidden file: tfds skips it)
            try:
                with tarfile.open(fileobj=tar.extractfile(member), mode="r:*") as inner:
                    images = [_as_tfds_names_it(m.name) for m in inner.getmembers() if m.isfile()]
            except (tarfile.TarError, EOFError) as e:
                what, again = f"A class archive inside {train}", f"make {name} again, or {remedy}"
                raise _unreadable_archive(what, e, again) from None
            if not any(images):
                empty.append(name)
            for image in filter(None, images):
                if image in first:
                    twice.append(f"{image} ({first[image]}, {name})")
                first.setdefault(image, name)
    if twice:
        raise DataError(
            f"The class archives inside {train} hold {len(twice)} image name(s) more than once "
            f"(a file added again, or to two classes): {name_list(twice)}. Make the archive again "
            f"with each file once, or {remedy}."
        )
    if empty:
        raise DataError(
            f"The archive {train} holds {len(empty)} class archive(s) with no image, whose class "
            f"would never see an example: {name_list(empty)}. Make the archive again with their "
            f"images, or {remedy}."
        )


def _labels_by_file_name(val_path: str, remedy: str = DOWNLOAD_AGAIN) -> dict[str, str]:
    """Validation synset per file of an archive, looked up by the number in its name; DataError
    naming the archive when it is not a readable tar or holds files of other names.

    tfds's own get_validation_labels zips the SORTED member names with the first len(members)
    shipped labels, which is right only for the complete 50,000-file archive; by-number lookup
    gives the same labels there and the right ones for a subset such as the miniature archive.
    Keyed by the names tfds gives the files (`_archive_files`), links included.
    """
    labels = miniature.validation_labels()
    numbers, strangers = {}, []
    for name, _ in _archive_files(val_path, remedy):
        found = _VALIDATION_FILE.fullmatch(os.path.basename(name))
        if found and 1 <= int(found[1]) <= len(labels):
            numbers[name] = int(found[1])
        else:
            strangers.append(name)
    expected = f"validation images (ILSVRC2012_val_NNNNNNNN.JPEG, 1..{len(labels)})"
    _refuse_strangers(val_path, strangers, expected, remedy)
    return {name: labels[number - 1] for name, number in numbers.items()}


def _archive_files(path: str, remedy: str) -> list[tuple[str, bool]]:
    """(name, is a link) of each file of the tar `path` as tfds's reader gives it (extractor's
    iter_tar: files and links to files, `./` and other normalizations dropped from the name,
    hidden and backup files skipped), every header read (a cut archive fails at the first member
    past its end): DataError naming it when it is not a readable tar, or when a name comes twice
    (`tar -r` of a file already in it: tfds failed in a traceback, two examples with one key), or
    in two folders (`X` and `a/X`: two examples of one image, hostile pass 22, #30).
    Compressed tars are read too, as tfds reads them."""
    try:
        with tarfile.open(path, "r:*") as tar:
            members = [m for m in tar.getmembers() if m.isfile() or m.islnk() or m.issym()]
    except (tarfile.TarError, EOFError) as e:
        raise _unreadable_archive(f"The archive {path}", e, remedy) from None
    found = [(_as_tfds_names_it(m.name), m.islnk() or m.issym()) for m in members]
    found = [(name, is_link) for name, is_link in found if name is not None]
    names = [os.path.basename(name) for name, _ in found]  # `X` and `a/X`: one image twice
    if twice := sorted({name for name, n in collections.Counter(names).items() if n > 1}):
        raise DataError(
            f"The archive {path} holds {len(twice)} name(s) more than once (a file added again: "
            f"tar -r, or in two folders): {name_list(twice)}. Make the archive again with each "
            f"file once, or {remedy}."
        )
    return found


def _as_tfds_names_it(name: str) -> str | None:
    """A member's name as tfds's iter_tar yields it (its _normpath): normalized (`./a` is `a`),
    None for a name it skips (hidden, absolute, above the archive, a backup~)."""
    name = os.path.normpath(name)
    skipped = name.startswith(".") or os.path.isabs(name) or name.endswith("~")
    return None if skipped or os.path.basename(name).startswith(".") else name


def _unreadable_archive(what: str, error: BaseException, remedy: str) -> DataError:
    """DataError: `what` (an archive) cannot be read as a tar, why, and `remedy`."""
    reason = str(error).strip().splitlines()[-1] if str(error).strip() else type(error).__name__
    # (tarfile's "r:*" lists each method's failure; the plain tar's is the last: "- method tar:
    # ReadError('invalid header')")
    reason = re.sub(r"^- method tar: \w+\('(.*)'\)$", r"\1", reason)
    return DataError(f"{what} is not a readable tar ({reason}: truncated or damaged): {remedy}.")


def _refuse_strangers(path: str, names: list[str], expected: str, remedy: str) -> None:
    """DataError naming the files of the archive `path` that are not `expected` (the builder has
    no label for them and failed in a traceback), unless there are none."""
    if names:
        raise DataError(
            f"The archive {path} holds {len(names)} file(s) that are not {expected}, so they "
            f"have no label: {name_list(names)}. Remove them (tar --delete -f {path} NAME), "
            f"or {remedy}."
        )


@contextlib.contextmanager
def _validation_labels_by_file_name():
    """Makes the real imagenet2012 builder label any validation archive by file number."""
    runtime.load_tensorflow_datasets()
    from tensorflow_datasets.datasets.imagenet2012 import imagenet_common

    with mock.patch.object(imagenet_common, "get_validation_labels", _labels_by_file_name):
        yield


@contextlib.contextmanager
def exclusive_build(directory: str):
    """An exclusive file lock in `directory`: processes sharing it build data one at a time."""
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, ".build.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _remove_incomplete_builds(builder) -> None:
    """Removes tfds's temporary folders of builds that died (only called while holding the lock).

    A killed imagenet2012 build leaves up to ~150 GB in <data_dir>/imagenet2012/incomplete.*/.
    """
    parent = os.fspath(builder.data_path.parent)
    if not os.path.isdir(parent):
        return
    for entry in os.listdir(parent):
        if entry.startswith("incomplete."):
            console.info(f"Removing an unfinished tfds build: {os.path.join(parent, entry)}")
            shutil.rmtree(os.path.join(parent, entry), ignore_errors=True)


def _build_tfds(config, data_dir: str, manual_dir: str) -> None:
    """Builds imagenet2012 into data_dir (generating the miniature archive first if needed).

    Readers never see a partial build: tfds's DatasetBuilder.download_and_prepare writes into
    <data_dir>/imagenet2012/incomplete.XXXXXX_<version>/ and renames it to <version>/ when
    complete (tensorflow_datasets/core/dataset_builder.py, via utils.incomplete_dir in
    tensorflow_datasets/core/utils/file_utils.py), and is_prepared() ignores the temporary
    folder. Two processes building the same data_dir take turns (the data_dir's lock); a miniature
    build also holds the archive's lock while it reads the archive, so a run that wants another
    spec in the same miniature_dir cannot replace the archive mid-build.
    """
    if config.dataset != "miniature":
        error = _manual_dir_error(manual_dir, data_dir)
        if error is not None:
            raise error
    with exclusive_build(data_dir), contextlib.ExitStack() as archive:
        builder = tfds.builder("imagenet2012", data_dir=data_dir)
        if builder.is_prepared():  # another process built it while this one waited
            return
        _remove_incomplete_builds(builder)
        if config.dataset == "miniature":
            spec = miniature.MiniatureSpec.from_config(config)
            archive.enter_context(miniature.generated(manual_dir, spec))
        remedy = DOWNLOAD_AGAIN  # what to do about an archive that cannot be read
        if config.dataset == "miniature":
            manifest = os.path.join(manual_dir, miniature.MANIFEST)
            remedy = f"delete {manifest} and rerun: the miniature archive is generated again"
        # By-number labels equal tfds's own for the full 50,000-image archive and stay right for
        # a partial one (a miniature archive given as manual_dir, or a subset a user made).
        with _validation_labels_by_file_name():
            _download_and_prepare(builder, manual_dir, data_dir, remedy)


def _check_miniature_build(builder, spec: miniature.MiniatureSpec, data_dir: str) -> None:
    """Raises DataError when a miniature build does not hold its spec's number of examples.

    Catches builds made while another run regenerated the archive (before the archive's lock).
    """
    expected = {
        "train": spec.num_classes * spec.train_per_class + spec.num_corrupt,
        "validation": spec.num_classes * spec.val_per_class + spec.num_corrupt,
    }
    found = {split: builder.info.splits[split].num_examples for split in expected}
    if found != expected:
        raise DataError(
            f"The miniature build in {data_dir!r} holds {found} examples, but its spec asks for "
            f"{expected}: it was built from another spec's archive (by an older version, while "
            "another run regenerated it). Delete that folder and rerun: it is rebuilt."
        )


def open_tfds(config, build: bool) -> _TfdsSource:
    """The imagenet2012 build of the config (real or miniature), building it first if allowed."""
    if config.dataset == "miniature":
        spec = miniature.MiniatureSpec.from_config(config)
        data_dir = os.path.join(config.data_dir, "miniature", spec.fingerprint())
        manual_dir, num_classes = config.miniature_dir, spec.num_classes
    else:
        data_dir, manual_dir, num_classes = config.data_dir, config.manual_dir, 1000
    builder = tfds.builder("imagenet2012", data_dir=data_dir)
    if not builder.is_prepared():
        if not build:
            raise DataError(
                f"The {config.dataset} dataset is not built in {data_dir!r}; call "
                "alexnet_jax.data.input_pipeline.prepare(config) first."
            )
        _build_tfds(config, data_dir, manual_dir)
        builder = tfds.builder("imagenet2012", data_dir=data_dir)
    if str(builder.info.file_format.value) != "tfrecord":
        raise DataError(
            f"{data_dir!r} holds imagenet2012 in {builder.info.file_format.value} "
            "format; this pipeline reads TFRecord files. Use another --config.data_dir."
        )
    if config.dataset == "miniature":
        _check_miniature_build(builder, spec, data_dir)
    identity = f"imagenet2012:{os.path.abspath(data_dir)}:{builder.version}"
    return _TfdsSource(builder, num_classes, identity, data_dir)


def open_cifar10(config) -> _TfdsSource:
    """The user's tfds cifar10 build in config.data_dir; never downloaded here (DataError)."""
    data_dir = os.path.expanduser(config.data_dir)
    builder = tfds.builder("cifar10", data_dir=data_dir)
    if not builder.is_prepared():
        raise DataError(
            f"CIFAR-10 is not prepared in config.data_dir={config.data_dir!r} (tfds 'cifar10', "
            f"version {builder.version}). Download and build it once (about 170 MB), then rerun: "
            'python -c "import tensorflow_datasets as tfds; '
            f"tfds.builder('cifar10', data_dir='{data_dir}').download_and_prepare()\"; or set "
            "--config.data_dir to the folder that holds it."
        )
    if str(builder.info.file_format.value) != "tfrecord":
        raise DataError(
            f"{data_dir!r} holds cifar10 in {builder.info.file_format.value} format; this "
            "pipeline reads TFRecord files. Use another --config.data_dir."
        )
    identity = f"cifar10:{os.path.abspath(data_dir)}:{builder.version}"
    return _TfdsSource(builder, CIFAR10_CLASSES, identity, data_dir, key_field=CIFAR10_KEY)


def open_source(config, build: bool):
    """The source of config.dataset (not synthetic), checked and, if `build`, built."""
    if config.dataset == "image_folder":
        source = _open_folder(config.image_folder)
        if build:
            source.check_classes()
        return source
    if config.dataset == "cifar10":
        return open_cifar10(config)
    return open_tfds(config, build)


def _directory_problem(path: str) -> str | None:
    """Why `path` cannot be (or become) a directory: it, or a folder above it, is a file."""
    path = os.path.expanduser(path)
    if os.path.exists(path):
        return None if os.path.isdir(path) else "is a file, not a directory"
    parent = os.path.dirname(os.path.abspath(path))
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    return None if os.path.isdir(parent) else f"lies inside {parent!r}, which is a file"


def _check_tfds_split_names(config) -> None:
    """Raises ConfigError for a split imagenet2012 can never have, before a build of hours."""
    for field in ("train_split", "eval_split"):
        names = {re.sub(r"\[.*?\]", "", part).strip() for part in str(config[field]).split("+")}
        unknown = sorted(names - set(IMAGENET_SPLITS))
        if unknown:
            raise ConfigError(
                f"config.{field}={config[field]!r} names {', '.join(map(repr, unknown))}, which "
                f"is not a split of imagenet2012 (its splits: "
                f"{', '.join(map(repr, IMAGENET_SPLITS))}; 'test' only with "
                f"ILSVRC2012_img_test.tar): set --config.{field} to one of them."
            )


def check_synthetic_splits(config) -> None:
    """Synthetic data has a training pool and an evaluation pool, no splits: train_split must be
    'train' and eval_split 'validation' or 'test' (the evaluation pool stands for either);
    another name (a typo, or 'train', whose numbers would be the evaluation pool's) is a
    ConfigError rather than numbers labelled with a split they are not from."""
    evaluated = ("validation", "test")  # not "train": the evaluation pool is not the training one
    for field, names in (("train_split", ("train",)), ("eval_split", evaluated)):
        if config[field] not in names:
            raise ConfigError(
                f"config.{field}={config[field]!r}: synthetic data has no splits, only a training "
                f"and an evaluation pool, which config.{field} names as "
                f"{' or '.join(map(repr, names))}; set --config.{field}={names[0]!r}."
            )


def check_before_build(config, training: bool = True) -> None:
    """Raises ConfigError for a directory field of the config's dataset that names a file or
    cannot be created (the missing ones are created), or lies inside the image folder
    (recipe.check_outside_image_folder), and for a tfds split name imagenet2012 never has; cheap, so
    prepare() runs it before any build. training=False leaves out the training-only folders
    (resized_cache_dir, image_store_dir)."""
    recipe.check_outside_image_folder(config, training=training)  # before any folder is made
    if config.dataset != "synthetic":  # (the data is read by TensorFlow: refused before a folder)
        runtime.check_address_space_for_tensorflow()
    if config.dataset in ("imagenet2012", "miniature"):
        _check_tfds_split_names(config)
    fields = {
        "imagenet2012": ["data_dir"],
        "cifar10": ["data_dir"],
        "miniature": ["data_dir", "miniature_dir"],
        "image_folder": ["image_folder"],
    }.get(config.dataset, [])
    fields += [f for f in ("resized_cache_dir", "image_store_dir") if config[f] and training]
    for field in fields:
        if not config[field]:
            continue
        problem = _directory_problem(config[field])
        if problem is None and field != "image_folder":  # image_folder must exist: not created
            problem = errors.directory_creation_problem(config[field])
        if problem:
            raise ConfigError(
                f"config.{field}={config[field]!r} {problem}: set --config.{field} to a directory "
                + (
                    "holding train/<class>/ and val/<class>/."
                    if field == "image_folder"
                    else "you can write (it is created if missing)."
                )
            )


def check_splits(config, source) -> None:
    """Raises ConfigError for a train_split / eval_split the source lacks (naming the ones it has),
    DataError for one that selects no examples."""
    for field in ("train_split", "eval_split"):
        split = config[field]
        try:
            num_examples = source.num_examples(split)
        except (KeyError, ValueError, AssertionError) as e:  # tfds: unknown split, bad slice
            has = ", ".join(repr(s) for s in source.split_names())
            raise ConfigError(
                f"config.{field}={split!r} is not a split of the {config.dataset} data in "
                f"{source.location!r}, which has {has}{source.split_hint}: set "
                f"--config.{field} to one of them."
            ) from e
        if num_examples == 0:
            raise DataError(
                f"config.{field}={split!r} selects no examples of the {config.dataset} data in "
                f"{source.location!r} (its splits: "
                f"{', '.join(repr(s) for s in source.split_names())}); choose another split."
            )


def dataset_identity(config, fingerprint: bool = True) -> dict:
    """What identifies the data a run trains on, as JSON values; cheap (no pass over the data).

    A resumed run should train on data with the same identity: for image folders the sorted class
    names (label i is classes[i], so an added class folder shifts labels), the files per split
    and, with `fingerprint`, each split's `fingerprint` (a stat per file, a short read of up
    to FINGERPRINT_READS files per class); for tfds builds
    (imagenet2012, miniature) the builder's version and the split sizes and shard counts of its
    dataset_info.json (plus the miniature spec's fingerprint); for synthetic data the example
    counts. Raises DataError when the data is not prepared yet.
    """
    identity = {"dataset": str(config.dataset)}
    if config.dataset == "synthetic":
        identity.update(
            num_train_examples=int(config.synthetic_train_examples),
            num_eval_examples=int(config.synthetic_eval_examples),
            num_classes=int(config.num_classes),
        )
        return identity
    source = open_source(config, build=False)
    if config.dataset == "image_folder":
        splits = (str(config.train_split), str(config.eval_split))
        identity.update(source.describe(splits))
        if fingerprint:  # (content_identity has its own, with the times)
            identity[FILES_FINGERPRINT] = {split: source.fingerprint(split) for split in splits}
        return identity
    identity.update(source.describe())
    if config.dataset == "miniature":
        spec = miniature.MiniatureSpec.from_config(config)
        identity["miniature_fingerprint"] = spec.fingerprint()
    return identity


def content_identity(config, split: str) -> dict:
    """What names the caches made from `split` (the image store, the mean image): the
    dataset_identity plus, for an image folder, its files' identity (`cache_key`), since class
    names and counts alone match another folder, or one with two classes swapped. For tfds and
    synthetic data it is the dataset_identity, so their caches keep their names."""
    identity = dataset_identity(config, fingerprint=False)  # (the caches keep their names)
    if config.dataset == "image_folder":
        identity["files"] = open_source(config, build=False).cache_key(split)
    return identity


FILES_FINGERPRINT = "files_fingerprint"  # an image folder's dataset_identity: per split
FINGERPRINT_READS = 64  # images per class whose first bytes a run's fingerprint reads


# ---- Pre-resize cache ---------------------------------------------------------------------------


def read_json(path: str) -> dict | None:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def write_json(path: str, value) -> None:
    """Writes `value` as JSON to `path` atomically (a temporary file, then a rename): a reader
    sees the old file or the whole new one, so a manifest marks only complete data."""
    with open(path + ".tmp", "w") as f:
        json.dump(value, f)
    os.replace(path + ".tmp", path)


def cache_dir(config, source) -> str:
    """The resize cache of this source, split and size: a hash of the three, under the root. An
    image folder's is keyed by its files (`cache_key`), not its path: a class renamed or added at
    the same path gets a new cache."""
    blob = json.dumps(
        [
            CACHE_VERSION,
            source.cache_key(config.train_split),
            config.train_split,
            int(config.resize_size),
            CACHE_JPEG_QUALITY,
        ]
    )
    return os.path.join(config.resized_cache_dir, hashlib.sha1(blob.encode()).hexdigest()[:16])


def _serialize_example(image: bytes, label: int, key: bytes) -> bytes:
    """A cache record, in the same tf.train.Example layout as tfds's imagenet2012 records."""
    feature = {
        "image": tf.train.Feature(bytes_list=tf.train.BytesList(value=[image])),
        "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[int(label)])),
        "file_name": tf.train.Feature(bytes_list=tf.train.BytesList(value=[key])),
    }
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def _write_cache_files(directory: str, examples: Iterator) -> tuple[list[str], list[int]]:
    """Writes (image, label, key) tuples into CACHE_SHARD_SIZE-record files, each atomically."""
    names, lengths = [], []
    while True:
        chunk = [example for _, example in zip(range(CACHE_SHARD_SIZE), examples, strict=False)]
        if not chunk:
            return names, lengths
        name = f"train-{len(names):05d}.tfrecord"
        path = os.path.join(directory, name)
        with tf.io.TFRecordWriter(path + ".tmp") as writer:
            for image, label, key in chunk:
                writer.write(_serialize_example(image, label, key))
        os.replace(path + ".tmp", path)
        names.append(name)
        lengths.append(len(chunk))


def build_resized_cache(config, source) -> str:
    """Re-encodes the training split once with shorter side config.resize_size (JPEG).

    Files no decoder can read are left out and their number is logged and kept in the manifest.
    Returns the cache directory; does nothing when a complete cache is already there.
    """
    directory = cache_dir(config, source)
    with exclusive_build(directory):
        manifest = read_json(os.path.join(directory, CACHE_MANIFEST))
        damaged = manifest is not None and damaged_cache_file(directory, manifest)
        if damaged:
            console.warning(
                f"The pre-resize cache {directory} is damaged ({damaged}); building it again."
            )
        if manifest is None or damaged:
            _remove_cache_files(directory)
            _write_resized_cache(config, source, directory)
        else:  # reused: its training set lacks what the build left out, as the build's did
            warn_left_out("pre-resize cache", manifest)
    return directory


def damaged_cache_file(directory: str, manifest: dict) -> str | None:
    """What is wrong with the first file of a complete cache that is missing or has another size
    than when the cache was completed (a truncated copy, a full disk), or None; an os.stat per
    file (caches of older versions recorded no sizes: only their presence is checked)."""
    try:
        files = [str(name) for name in manifest["files"]]
        sizes = manifest.get("sizes") or [None] * len(files)
        listed = list(zip(files, sizes, manifest["lengths"], strict=True))
    except (KeyError, TypeError, ValueError, AttributeError):
        return f"{os.path.join(directory, CACHE_MANIFEST)} is not a complete cache manifest"
    for name, size, _ in listed:
        path = os.path.join(directory, name)
        try:
            found = os.path.getsize(path)
        except OSError as e:
            return f"{path} cannot be read: {e.strerror or e}"
        if size is not None and found != size:
            return f"{path} holds {found} bytes, not the {size} written"
    return None


def _remove_cache_files(directory: str) -> None:
    """Removes a cache's manifest first (so that no reader takes the rest for complete), then its
    record files and what an interrupted build left (never the lock file)."""
    for name in sorted(os.listdir(directory), key=lambda n: n != CACHE_MANIFEST):
        if name == CACHE_MANIFEST or name.startswith("train-") or name.endswith(".tmp"):
            os.remove(os.path.join(directory, name))


def _reencoded_examples(shard, size: int, undecodable: list[str]) -> Iterator:
    """(JPEG bytes, label, key) of every decodable example of a shard, re-encoded with shorter
    side `size`, in fixed order; appends the keys of the undecodable ones to `undecodable`."""

    def reencode(example):
        image = preprocessing.reencode_resized(image_bytes(example), size, CACHE_JPEG_QUALITY)
        return {"image": image, "label": example["label"], "key": example["key"], "ok": True}

    def placeholder():
        return {
            "image": tf.constant(b""),
            "label": tf.constant(0, tf.int32),
            "key": tf.constant(b""),
            "ok": tf.constant(False),
        }

    batches = (
        shard.epoch_records(None)
        .batch(256)
        .map(shard.materialize)
        .interleave(
            lambda chunk: decode_chunk(chunk, reencode, placeholder),
            cycle_length=max(2, os.cpu_count() or 2),
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=True,
        )
        .prefetch(tf.data.AUTOTUNE)
        .with_options(dataset_options())
    )
    for batch in batches.as_numpy_iterator():
        undecodable.extend(k.decode(errors="replace") for k in batch[UNDECODABLE])
        for image, label, key, ok in zip(
            batch["image"], batch["label"], batch["key"], batch["ok"], strict=True
        ):
            if ok:
                yield image, label, key


def _write_resized_cache(config, source, directory: str) -> None:
    """Writes the cache files, then the manifest (whose presence marks a complete cache)."""
    shard = source.shard(config.train_split, 0, 1)
    console.info(f"Building the pre-resize cache of {shard.num_examples} images in {directory}.")
    undecodable = []
    examples = _reencoded_examples(shard, int(config.resize_size), undecodable)
    with errors.storage_errors_as(lambda e: _cache_write_error(directory, e)):
        names, lengths = _write_cache_files(directory, examples)
    manifest = {
        "version": CACHE_VERSION,
        "source": source.identity,
        "split": config.train_split,
        "resize_size": int(config.resize_size),
        "files": names,
        "lengths": lengths,
        "sizes": [os.path.getsize(os.path.join(directory, name)) for name in names],
        "num_undecodable": shard.num_examples - sum(lengths),
        "undecodable_files": undecodable,
    }
    warn_left_out("pre-resize cache", manifest)
    with errors.storage_errors_as(lambda e: _cache_write_error(directory, e)):
        write_json(os.path.join(directory, CACHE_MANIFEST), manifest)


def _cache_write_error(directory: str, error: BaseException) -> DataError:
    """A failed write of the cache (a full disk, a quota): the partial cache is removed, and the
    DataError names the cache and its field (not the run's workdir: no checkpoint is involved)."""
    with contextlib.suppress(OSError):
        _remove_cache_files(directory)
    return DataError(
        f"Writing the pre-resize cache in {directory!r} failed: "
        f"{errors.storage_error_reason(error, with_file=False)}; the partial cache was removed. "
        "Free disk space there (or fix its permissions) or choose another "
        "--config.resized_cache_dir, then rerun the same command."
    )


def train_shard(config, process_index: int, process_count: int):
    """This host's part of the training split: from the resize cache when one is configured."""
    source = open_source(config, build=False)
    window = int(config.shuffle_buffer_size)
    if not config.resized_cache_dir:
        return source.shard(config.train_split, process_index, process_count, window)
    directory = cache_dir(config, source)
    manifest = read_json(os.path.join(directory, CACHE_MANIFEST))
    if manifest is None:
        raise DataError(
            f"The pre-resize cache {directory!r} (--config.resized_cache_dir) is not "
            "built; call alexnet_jax.data.input_pipeline.prepare(config) first."
        )
    damaged = damaged_cache_file(directory, manifest)
    if damaged:
        raise DataError(
            f"The pre-resize cache {directory!r} (--config.resized_cache_dir) is damaged "
            f"({damaged}): delete that folder and rerun the same command (it is built again)."
        )
    paths = [os.path.join(directory, name) for name in manifest["files"]]
    return even_file_instructions(paths, manifest["lengths"], process_index, process_count, window)


def damaged_files_remedy(config, shard, from_cache: bool) -> str:
    """Where the record files of a shard (of the resize cache if `from_cache`) lie and what to
    do when one turns out damaged while it is read (a DataLossError: a corrupted or truncated
    record), for a DataError."""
    folders = sorted({os.path.dirname(name) for name in getattr(shard, "filenames", ())})
    where = ", ".join(map(repr, folders))
    if not folders:  # image files, read one by one: the user's own, never to be deleted
        return (
            f"a file of the image folder {config.image_folder!r} cannot be read: restore it, "
            "then rerun the same command"
        )
    if from_cache:
        return (
            f"a file of the pre-resize cache {where} (--config.resized_cache_dir) is damaged: "
            "delete that folder and rerun the same command (it is built again)"
        )
    return (
        f"a file of the {config.dataset} data in {where} is damaged: restore it, or delete that "
        "folder and prepare the data again (docs/DATA.md), then rerun the same command"
    )

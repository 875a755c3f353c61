"""Input pipeline: images/s per core of the training iterator, from full-size JPEGs, from the
pre-resize (shorter side 256) cache and from the 256x256 image store, with the augmentation on
the host or on the device.

    python benchmarks/input_pipeline.py --image_sides=350,500
    python benchmarks/input_pipeline.py --image_sides=300,450 --json=input.json
    python benchmarks/input_pipeline.py --augment_on=host,device   # both paths, alternated

--augment_on=device times the host's part of config.augment_on="device" (decoding the uint8 256
square, no crop, flip, lighting or normalization: those run in the jitted step, not timed here);
the `bytes/img` column is what each image costs to ship to the device. The image store
(config.image_store_dir, alexnet_jax/data/image_store.py) is timed with augment_on="device" only
(the store holds the squares the device crops); `disk/img` is what each source stores per image.

Generates --num_images miniature pictures (alexnet_jax.data.miniature) whose sides are drawn from
--image_sides, builds them with the real tfds imagenet2012 builder and the 256 cache under
--bench_dir (kept for the next run), then times `input_pipeline.create_train_iterator` with the
config's training recipe: --warmup batches, then --repeats trials of --num_batches batches; the
median trial is reported as wall-clock images/s, images/s per core, and images per CPU-second of
the whole process (the per-core rate when the cores are saturated, and less sensitive than wall
time to other jobs on the machine). TensorFlow does this work; JAX is not involved.
"""

from __future__ import annotations

import os
import sys
import time

import ml_collections
import numpy as np
from absl import flags
from ml_collections import config_flags

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_CONFIG = config_flags.DEFINE_config_file(
    "config", os.path.join(_REPO, "configs", "default.py"), "Config: the preprocessing timed."
)
_BENCH_DIR = flags.DEFINE_string(
    "bench_dir", "data/bench_input", "Where the generated images and their builds go."
)
_IMAGE_SIDES = flags.DEFINE_list(
    "image_sides", ["350", "500"], "Range of each side of the generated images, in px."
)
_NUM_IMAGES = flags.DEFINE_integer("num_images", 1200, "Generated training images.", lower_bound=1)
_BATCH = flags.DEFINE_integer("batch_size", 64, "Batch size of the timed iterator.", lower_bound=1)
_NUM_BATCHES = flags.DEFINE_integer("num_batches", 30, "Timed batches per trial.", lower_bound=1)
_REPEATS = flags.DEFINE_integer(
    "repeats", 3, "Timed trials (the median is reported).", lower_bound=1
)
_WARMUP = flags.DEFINE_integer("warmup", 5, "Untimed batches first.", lower_bound=0)
_AUGMENT_ON = common.one_or_more_of(
    flags.DEFINE_list(
        "augment_on", ["host"], "config.augment_on values to time (host, device), one row each."
    ),
    ("host", "device"),
)

COLUMNS = (
    ("source", "source", ""),
    ("augment_on", "augment", ""),
    ("image_bytes", "bytes/img", "d"),
    ("disk_bytes_per_image", "disk/img", ".0f"),
    ("images_per_s", "img/s", ".0f"),
    ("cores", "cores", "d"),
    ("images_per_s_per_core", "img/s/core", ".0f"),
    ("images_per_cpu_s", "img/CPU-s", ".0f"),
    ("images_per_cpu_s_best", "best", ".0f"),
)


def time_train_pipeline(
    config, batch_size: int, num_batches: int, trials: int = 3, warmup: int = 5
) -> dict:
    """Images/s of create_train_iterator: median over `trials` runs of num_batches after warm-up.

    Reports wall-clock images/s (and per core) and images per CPU-second of the whole process,
    which is the per-core rate when the cores are saturated and is less sensitive than wall time
    to other processes sharing the machine.
    """
    from alexnet_jax.data import input_pipeline

    iterator = input_pipeline.create_train_iterator(config, local_batch_size=batch_size)
    for _ in range(warmup):
        next(iterator)
    walls, cpus = [], []
    for _ in range(trials):
        wall, cpu = time.perf_counter(), common.cpu_seconds()
        for _ in range(num_batches):
            batch = next(iterator)
        walls.append(time.perf_counter() - wall)
        cpus.append(common.cpu_seconds() - cpu)
    cores = len(os.sched_getaffinity(0))
    images = batch_size * num_batches
    return {
        "image_bytes": batch["image"].nbytes // batch_size,
        "images_per_trial": images,
        "trials": trials,
        "cores": cores,
        "images_per_s": images / float(np.median(walls)),
        "images_per_s_per_core": images / float(np.median(walls)) / cores,
        "images_per_cpu_s": images / float(np.median(cpus)),
        "images_per_cpu_s_best": images / min(cpus),
    }


def benchmark(
    config,
    bench_dir: str,
    image_sides: tuple[int, int],
    num_images: int,
    batch_size: int,
    num_batches: int,
    trials: int = 3,
    warmup: int = 5,
    augment_on: tuple[str, ...] = ("host",),
) -> list[dict]:
    """Training-pipeline speed from full-size-like JPEGs and from the pre-resize (256) cache.

    Generates `num_images` miniature pictures whose sides are drawn from `image_sides` (350-500 px
    averages about 425x425 px, the area of ImageNet's typical 500x375), builds them with the real
    imagenet2012 builder and the pre-resize cache under bench_dir, then times the config's training
    preprocessing on both, once per `augment_on` value (alternated, so load changes hit each).
    """
    from alexnet_jax.data import data_sources, image_store, input_pipeline, miniature

    config = ml_collections.ConfigDict(config.to_dict())
    config.dataset, config.num_classes = "miniature", 4
    config.miniature_train_per_class, config.miniature_val_per_class = num_images // 4, 1
    config.miniature_image_sides, config.miniature_corrupt_files = tuple(image_sides), 0
    config.miniature_dir = os.path.join(bench_dir, f"archive-{image_sides[0]}-{image_sides[1]}")
    config.data_dir = os.path.join(bench_dir, "tfds")
    rows = []
    sources = (
        ("full-size JPEGs", "", ""),
        ("pre-resized 256 cache", "cache", ""),
        ("256x256 image store", "", "store"),
    )
    for name, cache, store in sources:
        config.resized_cache_dir = os.path.join(bench_dir, cache) if cache else ""
        config.image_store_dir = os.path.join(bench_dir, store) if store else ""
        config.augment_on = "device"  # prepare() checks the store's rule
        input_pipeline.prepare(config)
        archive_bytes = os.path.getsize(os.path.join(config.miniature_dir, miniature.TRAIN_TAR))
        disk = archive_bytes
        if cache:
            disk = common.directory_bytes(data_sources.cache_dir(config, _source(config)))
        if store:
            disk = common.directory_bytes(image_store.split_dir(config, config.train_split))
        for where in augment_on if not store else ("device",):
            config.augment_on = where
            timing = time_train_pipeline(config, batch_size, num_batches, trials, warmup)
            rows.append(
                {
                    "source": name,
                    "augment_on": where,
                    "disk_bytes_per_image": disk / num_images,
                    **timing,
                }
            )
    for row in rows:
        row["image_sides"] = list(image_sides)
        row["mean_jpeg_bytes"] = archive_bytes / num_images  # of the full-size files
    return rows


def _source(config):
    from alexnet_jax.data import data_sources

    return data_sources.open_source(config, build=False)


def main(argv) -> None:
    del argv
    threads = common.setup_process(common.THREADS.value)
    from alexnet_jax.core import runtime

    runtime.load_tensorflow()
    try:
        sides = tuple(int(v) for v in _IMAGE_SIDES.value)
    except ValueError:
        sides = ()
    if len(sides) != 2 or not 0 < sides[0] <= sides[1]:
        sides_text = ",".join(_IMAGE_SIDES.value)
        raise common.errors.UserError(f"--image_sides must be two sides MIN,MAX, got {sides_text}")
    try:
        config = _CONFIG.value
        config.dataset  # noqa: B018  (ml_collections raises on the first use of a failed load)
    except OSError as e:  # "Configuration is not available because of an earlier failure to
        # load": a missing file, or one whose get_config() raised (its reason is the cause)
        reason = [line.strip() for line in str(e.__cause__ or e).splitlines() if line.strip()]
        raise common.errors.UserError(
            f"--config could not be loaded ({reason[-1]}): give a config file with a "
            "get_config() function, e.g. --config=configs/default.py."
        ) from None
    common.rundir.refuse_a_run_folder(_BENCH_DIR.value, "--bench_dir")
    rows = benchmark(
        config,
        _BENCH_DIR.value,
        sides,
        num_images=_NUM_IMAGES.value,
        batch_size=_BATCH.value,
        num_batches=_NUM_BATCHES.value,
        trials=_REPEATS.value,
        warmup=_WARMUP.value,
        augment_on=tuple(_AUGMENT_ON.value),
    )
    common.report_rows(rows, COLUMNS, threads)


if __name__ == "__main__":
    common.run(main)

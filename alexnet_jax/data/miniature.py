"""Generator of the built-in miniature ILSVRC2012 archive: drawn pictures in the real tar layout.

`generate(directory, spec)` writes, deterministically and in seconds,
- `ILSVRC2012_img_train.tar`: one inner tar per synset (`n01440764.tar`) holding
  `n01440764_<id>.JPEG` files, exactly like the real archive;
- `ILSVRC2012_img_val.tar`: flat `ILSVRC2012_val_%08d.JPEG` files, named after real validation
  files whose label (tfds's shipped `validation_labels.txt`) is one of the chosen classes;
- `miniature.json`: the spec, its fingerprint and the names of the deliberately hard files.

`generated(directory, spec)` / `ensure_generated` make the archive safe to share between runs:
under an exclusive lock on the directory, it is generated into a temporary folder there and moved
in only when complete, manifest last; a run that reads the archive holds the lock meanwhile.

The classes are the first `num_classes` synsets in tfds's imagenet2012 label order, so the real
`imagenet2012` builder labels them 0..num_classes-1. Each class is a drawn shape of its own form and
colour (circle, square, triangle, stripes, ...) at a random position, size and rotation on a noisy
low-saturation background: a small convnet learns it within a few hundred images. Images are real
JPEG files of varied, mostly non-square sizes. A few files are deliberately hard, as in ImageNet:
a PNG under a .JPEG name, a CMYK JPEG, a grayscale JPEG and an image smaller than the crop; tests
can also ask for truly undecodable files (`num_corrupt`).
"""

from __future__ import annotations

import colorsys
import contextlib
import dataclasses
import fcntl
import hashlib
import importlib.resources
import io
import json
import math
import os
import shutil
import tarfile
import tempfile
from collections.abc import Iterator
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from alexnet_jax.core import runtime
from alexnet_jax.data import objects

GENERATOR_VERSION = 1  # bump when the pictures change, so cached archives are regenerated
TRAIN_TAR = "ILSVRC2012_img_train.tar"
VAL_TAR = "ILSVRC2012_img_val.tar"
MANIFEST = "miniature.json"
LOCK_FILE = ".archive.lock"  # in the archive's directory; see `generated`
INCOMPLETE_PREFIX = ".incomplete-"  # temporary folders of generation in progress (or killed)
HARD_KINDS = ("png", "cmyk", "gray", "tiny")  # each appears once per split (if there is room)
MAX_VAL_PER_CLASS = 50  # ILSVRC2012 has exactly 50 validation images per class
MAX_SIDE = 4096  # pixels: ILSVRC2012's pictures are smaller (100,000 needed 30 GB a picture)
MAX_TRAIN_PER_CLASS = 1300  # ILSVRC2012's largest classes have 1,300 training images
SHAPES = ("circle", "square", "triangle", "stripes", "cross", "ring", "star", "dots")
TASKS = ("shapes", "objects")  # objects: the harder task of data/objects.py
_TINY_SIDE_RANGE = (64, 120)  # "smaller than the crop" (227 or 224)


@dataclasses.dataclass(frozen=True)
class MiniatureSpec:
    """What to generate; the fingerprint names the archive and the tfds build made from it."""

    num_classes: int  # the first num_classes synsets of the imagenet2012 label order
    train_per_class: int
    val_per_class: int  # at most 50 (the real validation set has 50 per class)
    side_range: tuple[int, int] = (150, 500)  # each side of an image is drawn from this range
    hard_files: bool = True  # include the PNG / CMYK / grayscale / tiny files
    num_corrupt: int = 0  # extra undecodable files of class 0 per split (tests of skip-and-count)
    quality: int = 90  # JPEG quality
    seed: int = 2012  # the pictures never depend on the training seed
    task: str = "shapes"  # "shapes": a shape and colour per class; "objects": data/objects.py

    def fingerprint(self) -> str:
        """A short stable hash of the spec and the generator version (the "shapes" task's as
        before the task field existed, so that its earlier archives and runs are recognised)."""
        fields = dataclasses.asdict(self)
        if self.task == "shapes":
            del fields["task"]
        else:
            fields["objects_version"] = objects.VERSION
        blob = json.dumps([GENERATOR_VERSION, fields], sort_keys=True)
        return hashlib.sha1(blob.encode()).hexdigest()[:12]

    @classmethod
    def from_config(cls, config: Any) -> MiniatureSpec:
        """The miniature archive a config asks for (its num_classes and miniature_* fields)."""
        return cls(
            num_classes=int(config.num_classes),
            train_per_class=int(config.miniature_train_per_class),
            val_per_class=int(config.miniature_val_per_class),
            side_range=tuple(
                _whole(v, "miniature_image_sides") for v in config.miniature_image_sides
            ),
            num_corrupt=int(config.miniature_corrupt_files),
            task=str(config.miniature_task),
        )

    def validate(self) -> None:
        """Raises ValueError naming the field when the spec cannot be generated."""
        if self.task not in TASKS:
            raise ValueError(f"miniature_task must be one of {TASKS}, got {self.task!r}")
        most = objects.NUM_CLASSES if self.task == "objects" else 1000
        if not 1 <= self.num_classes <= most:
            raise ValueError(
                f"num_classes must be in 1..{most} for the {self.task!r} task, got "
                f"{self.num_classes}"
            )
        if not 1 <= self.train_per_class <= MAX_TRAIN_PER_CLASS:  # (a billion: 18 GB, killed)
            raise ValueError(
                f"train_per_class must be in 1..{MAX_TRAIN_PER_CLASS}, got {self.train_per_class}"
            )
        if self.num_corrupt < 0:
            raise ValueError(f"num_corrupt must be >= 0, got {self.num_corrupt}")
        if not 1 <= self.val_per_class + self.num_corrupt <= MAX_VAL_PER_CLASS:
            raise ValueError(
                f"val_per_class (+ num_corrupt) must be in 1..{MAX_VAL_PER_CLASS}, "
                f"got {self.val_per_class} (+ {self.num_corrupt})"
            )
        if len(self.side_range) != 2:
            raise ValueError(f"side_range must be a pair (min, max), got {self.side_range}")
        if not 1 <= self.side_range[0] <= self.side_range[1] <= MAX_SIDE:
            raise ValueError(
                f"side_range must be (min, max) with 1 <= min <= max <= {MAX_SIDE}: "
                f"{self.side_range}"
            )


def _whole(value: Any, field: str) -> int:
    """`value` as an int when it is a whole number (36.5 was generated as 36), else ValueError."""
    if isinstance(value, bool) or not float(value).is_integer():
        raise ValueError(f"{field} must hold whole numbers of pixels, got {value!r}")
    return int(value)


def _tfds_text_lines(name: str) -> list[str]:
    """Lines of a text file shipped with tfds's imagenet2012 builder (labels, validation labels)."""
    runtime.load_tensorflow_datasets()
    path = importlib.resources.files("tensorflow_datasets") / "datasets" / "imagenet2012" / name
    return path.read_text().strip().splitlines()


def imagenet_synsets() -> list[str]:
    """The 1000 ILSVRC2012 synsets in tfds's label order (label i is synsets[i])."""
    return _tfds_text_lines("labels.txt")


def validation_labels() -> list[str]:
    """Synset of each real validation file: entry i belongs to ILSVRC2012_val_{i + 1:08d}.JPEG."""
    return _tfds_text_lines("validation_labels.txt")


def validation_file_names(synsets: list[str], per_class: int) -> dict[str, list[str]]:
    """For each synset, the first `per_class` real validation file names labelled with it."""
    wanted = {s: [] for s in synsets}
    for index, synset in enumerate(validation_labels()):
        names = wanted.get(synset)
        if names is not None and len(names) < per_class:
            names.append(f"ILSVRC2012_val_{index + 1:08d}.JPEG")
    return wanted


def class_colour(class_index: int, num_classes: int) -> np.ndarray:
    """A saturated RGB colour per class, hues evenly spaced around the colour wheel."""
    hue = (class_index / max(num_classes, 1) + 0.02) % 1.0
    return np.array(colorsys.hsv_to_rgb(hue, 0.9, 0.95)) * 255.0


def _background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Low-saturation base colour, a random linear ramp and per-pixel noise, as uint8 [H, W, 3]."""
    grey = rng.uniform(60, 200)
    base = grey + rng.uniform(-25, 25, size=3)
    angle = rng.uniform(0, 2 * math.pi)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    ramp = (np.cos(angle) * xx / width + np.sin(angle) * yy / height) * rng.uniform(-50, 50)
    noise = rng.integers(-28, 29, size=(height, width, 3), dtype=np.int16)
    pixels = base[None, None, :] + ramp[:, :, None] + noise
    return np.clip(pixels, 0, 255).astype(np.uint8)


def _rotate(points: np.ndarray, centre: tuple[float, float], angle: float) -> list[tuple]:
    """Rotates (x, y) points given relative to `centre` by `angle` and moves them onto it."""
    c, s = math.cos(angle), math.sin(angle)
    rot = points @ np.array([[c, s], [-s, c]])
    return [(float(x) + centre[0], float(y) + centre[1]) for x, y in rot]


def _shape_polygons(shape: str, radius: float, angle: float, centre) -> list[list[tuple]]:
    """Polygons (in image coordinates) that draw one of the polygonal SHAPES."""
    r = radius
    if shape == "square":
        parts = [np.array([[-r, -r], [r, -r], [r, r], [-r, r]]) * 0.85]
    elif shape == "triangle":
        t = np.array([angle_k * 2 * math.pi / 3 - math.pi / 2 for angle_k in range(3)])
        parts = [np.stack([np.cos(t), np.sin(t)], axis=1) * r * 1.1]
    elif shape == "stripes":
        w = r / 2.8
        parts = [
            np.array([[x - w / 2, -r], [x + w / 2, -r], [x + w / 2, r], [x - w / 2, r]])
            for x in (-r + w / 2, 0.0, r - w / 2)
        ]
    elif shape == "cross":
        w = r / 3
        parts = [
            np.array([[-r, -w], [r, -w], [r, w], [-r, w]]),
            np.array([[-w, -r], [w, -r], [w, r], [-w, r]]),
        ]
    else:  # star
        t = np.arange(10) * math.pi / 5 - math.pi / 2
        radii = np.where(np.arange(10) % 2 == 0, r * 1.1, r * 0.45)
        parts = [np.stack([np.cos(t) * radii, np.sin(t) * radii], axis=1)]
    return [_rotate(p, centre, angle) for p in parts]


def _draw_shape(
    draw: ImageDraw.ImageDraw,
    shape: str,
    centre,
    radius: float,
    angle: float,
    colour: tuple[int, int, int],
) -> None:
    """Draws one class shape, filled with `colour`."""
    cx, cy = centre
    if shape == "circle":
        draw.ellipse((cx - radius, cy - radius, cx + radius, cy + radius), fill=colour)
    elif shape == "ring":
        draw.ellipse(
            (cx - radius, cy - radius, cx + radius, cy + radius),
            outline=colour,
            width=max(2, int(radius / 3)),
        )
    elif shape == "dots":
        step, dot = radius * 0.7, radius * 0.22
        for gx in (-1, 0, 1):
            for gy in (-1, 0, 1):
                ((x, y),) = _rotate(np.array([[gx * step, gy * step]]), centre, angle)
                draw.ellipse((x - dot, y - dot, x + dot, y + dot), fill=colour)
    else:
        for polygon in _shape_polygons(shape, radius, angle, centre):
            draw.polygon(polygon, fill=colour)


def draw_picture(
    class_index: int, num_classes: int, rng: np.random.Generator, height: int, width: int
) -> np.ndarray:
    """One picture of class `class_index` as uint8 [height, width, 3].

    The shape sits inside the central square of the image (what the paper's center crop keeps), at
    a random offset, size and rotation, filled with the class colour plus a little jitter.
    """
    pixels = _background(rng, height, width)
    image = Image.fromarray(pixels)
    side = min(height, width)
    centre = (
        width / 2 + rng.uniform(-0.16, 0.16) * side,
        height / 2 + rng.uniform(-0.16, 0.16) * side,
    )
    radius = side * rng.uniform(0.2, 0.34)
    colour = np.clip(class_colour(class_index, num_classes) + rng.uniform(-20, 20, 3), 0, 255)
    _draw_shape(
        ImageDraw.Draw(image),
        SHAPES[class_index % len(SHAPES)],
        centre,
        radius,
        rng.uniform(0, 2 * math.pi),
        tuple(int(v) for v in colour),
    )
    return np.asarray(image)


def encode_picture(pixels: np.ndarray, kind: str = "jpeg", quality: int = 90) -> bytes:
    """Encodes a picture as stored in the archive: "jpeg", or one of HARD_KINDS ("tiny" is JPEG)."""
    image = Image.fromarray(pixels)
    buffer = io.BytesIO()
    if kind == "png":
        image.save(buffer, format="PNG")
    elif kind == "cmyk":
        image.convert("CMYK").save(buffer, format="JPEG", quality=quality)
    elif kind == "gray":
        image.convert("L").save(buffer, format="JPEG", quality=quality)
    else:
        image.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def corrupt_bytes(rng: np.random.Generator, size: int = 4000) -> bytes:
    """A file that starts like a JPEG but cannot be decoded (no decoder recovers it)."""
    return b"\xff\xd8\xff\xe0" + rng.bytes(size)


def _picture_bytes(
    spec: MiniatureSpec, split: int, class_index: int, index: int, kind: str
) -> bytes:
    """The file content of one archive member; a pure function of its coordinates."""
    rng = np.random.default_rng([spec.seed, split, class_index, index])
    if kind == "corrupt":
        return corrupt_bytes(rng)
    low, high = _TINY_SIDE_RANGE if kind == "tiny" else spec.side_range
    height, width = (int(v) for v in rng.integers(low, high + 1, size=2))
    if spec.task == "objects":
        pixels = objects.draw_picture(class_index, rng, height, width)
    else:
        pixels = draw_picture(class_index, spec.num_classes, rng, height, width)
    return encode_picture(pixels, kind, spec.quality)


def _member_kinds(spec: MiniatureSpec, per_class: int) -> list[list[str]]:
    """kinds[c][i]: how member i of class c is encoded; hard kinds spread over classes (i >= 1)."""
    kinds = [["jpeg"] * per_class for _ in range(spec.num_classes)]
    kinds[0] += ["corrupt"] * spec.num_corrupt
    if spec.hard_files:
        for k, kind in enumerate(HARD_KINDS):
            class_index, index = k % spec.num_classes, 1 + k // spec.num_classes
            if index < per_class:
                kinds[class_index][index] = kind
    return kinds


def _add_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    """Adds bytes to a tar with fixed metadata, so archives are byte-for-byte reproducible."""
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), 0, 0o644
    tar.addfile(info, io.BytesIO(data))


def _tfds_rewritten_names() -> frozenset[str]:
    """Real file names whose bytes tfds's imagenet2012 builder converts (its CMYK and PNG fixes)."""
    runtime.load_tensorflow_datasets()
    from tensorflow_datasets.datasets.imagenet2012 import imagenet2012_dataset_builder as builder

    return frozenset(builder.CMYK_IMAGES) | frozenset(builder.PNG_IMAGES)


def _train_file_names(synset: str, count: int, avoid: frozenset[str]) -> list[str]:
    """ImageNet-style training file names, skipping the names in `avoid`."""
    names, number = [], 1
    while len(names) < count:
        name = f"{synset}_{number}.JPEG"
        if name not in avoid:
            names.append(name)
        number += 1
    return names


def _write_train_tar(path: str, spec: MiniatureSpec, synsets: list[str]) -> dict[str, str]:
    """Writes the nested training archive; returns {file name: kind} of the non-plain files."""
    special = {}
    kinds = _member_kinds(spec, spec.train_per_class)
    avoid = _tfds_rewritten_names()
    with tarfile.open(path, "w") as outer:
        for c, synset in enumerate(synsets):
            inner_bytes = io.BytesIO()
            with tarfile.open(fileobj=inner_bytes, mode="w") as inner:
                names = _train_file_names(synset, len(kinds[c]), avoid)
                for i, (name, kind) in enumerate(zip(names, kinds[c], strict=True)):
                    _add_member(inner, name, _picture_bytes(spec, 0, c, i, kind))
                    if kind != "jpeg":
                        special[name] = kind
            _add_member(outer, f"{synset}.tar", inner_bytes.getvalue())
    return special


def _write_val_tar(path: str, spec: MiniatureSpec, synsets: list[str]) -> dict[str, str]:
    """Writes the flat validation archive; returns {file name: kind} of the non-plain files."""
    special = {}
    kinds = _member_kinds(spec, spec.val_per_class)
    names = validation_file_names(synsets, spec.val_per_class + spec.num_corrupt)
    members = []
    for c, synset in enumerate(synsets):
        for i, kind in enumerate(kinds[c]):
            members.append((names[synset][i], c, i, kind))
    with tarfile.open(path, "w") as tar:
        for name, c, i, kind in sorted(members):
            _add_member(tar, name, _picture_bytes(spec, 1, c, i, kind))
            if kind != "jpeg":
                special[name] = kind
    return special


def generate(directory: str, spec: MiniatureSpec) -> dict:
    """Writes both archives and the manifest into `directory` (atomically per file); returns it."""
    spec.validate()
    os.makedirs(directory, exist_ok=True)
    synsets = imagenet_synsets()[: spec.num_classes]
    special = {}
    for name, writer in ((TRAIN_TAR, _write_train_tar), (VAL_TAR, _write_val_tar)):
        tmp = os.path.join(directory, name + ".tmp")
        special[name] = writer(tmp, spec, synsets)
        os.replace(tmp, os.path.join(directory, name))
    manifest = {
        "fingerprint": spec.fingerprint(),
        "spec": dataclasses.asdict(spec),
        "synsets": synsets,
        "special_files": special,
    }
    tmp = os.path.join(directory, MANIFEST + ".tmp")
    with open(tmp, "w") as f:
        json.dump(manifest, f, indent=1)
    os.replace(tmp, os.path.join(directory, MANIFEST))
    return manifest


def read_manifest(directory: str) -> dict | None:
    """The manifest of a generated archive, or None when there is none (or it is unreadable)."""
    try:
        with open(os.path.join(directory, MANIFEST)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _holds(directory: str, spec: MiniatureSpec) -> bool:
    """Whether `directory` holds the complete archive of `spec` (the manifest is moved in last)."""
    manifest = read_manifest(directory)
    complete = all(os.path.exists(os.path.join(directory, n)) for n in (TRAIN_TAR, VAL_TAR))
    return manifest is not None and complete and manifest["fingerprint"] == spec.fingerprint()


@contextlib.contextmanager
def _archive_lock(directory: str) -> Iterator[None]:
    """An exclusive lock on the archive in `directory`: one process generates or reads it at a time.

    The lock file stays in `directory` (which is never renamed), so every process locks the same
    file.
    """
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, LOCK_FILE), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _remove_incomplete(directory: str) -> None:
    """Removes what generators that died left (only called while holding the lock): temporary
    folders, and the `<file>.tmp` files of the older in-place generator."""
    left_over = {name + ".tmp" for name in (TRAIN_TAR, VAL_TAR, MANIFEST)}
    for entry in os.listdir(directory):
        if entry.startswith(INCOMPLETE_PREFIX):
            shutil.rmtree(os.path.join(directory, entry), ignore_errors=True)
        elif entry in left_over:
            os.remove(os.path.join(directory, entry))


def _generate_and_move_in(directory: str, spec: MiniatureSpec) -> None:
    """Generates into a temporary folder inside `directory`, then moves the files in.

    The old manifest goes first and the new one last, so an interruption at any point leaves
    either the old archive whole or no manifest (and the next call generates again).
    """
    tmp = tempfile.mkdtemp(prefix=INCOMPLETE_PREFIX, dir=directory)
    try:
        generate(tmp, spec)
        with contextlib.suppress(FileNotFoundError):
            os.remove(os.path.join(directory, MANIFEST))
        for name in (TRAIN_TAR, VAL_TAR, MANIFEST):
            os.replace(os.path.join(tmp, name), os.path.join(directory, name))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def generated(directory: str, spec: MiniatureSpec) -> Iterator[bool]:
    """Holds the lock of `directory` while it holds the archive of `spec`; yields True if generated.

    Read the archive inside the block (the tfds build does): another process that wants a
    different spec in the same directory waits for the lock instead of replacing the archive.
    """
    with _archive_lock(directory):
        _remove_incomplete(directory)
        if _holds(directory, spec):
            yield False
        else:
            _generate_and_move_in(directory, spec)
            yield True


def ensure_generated(directory: str, spec: MiniatureSpec) -> bool:
    """Generates the archive unless `directory` already holds one of this spec; True if it did."""
    with generated(directory, spec) as did_generate:
        return did_generate

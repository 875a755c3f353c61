"""The harder built-in task ("objects", alexnet_jax/data/objects.py): deterministic per seed,
balanced, and its classes distinct by a simple statistic of their pictures."""

import colorsys
import io
import tarfile

import numpy as np
from PIL import Image

from alexnet_jax.data import miniature, objects


def _hue_of_the_object(picture: np.ndarray) -> float:
    """The hue (0..1) of the picture's most saturated pixels (the object, mostly; the
    distractors are small): the circular mean over the top 10% by saturation."""
    rgb = picture.reshape(-1, 3).astype(np.float32) / 255.0
    hsv = np.array([colorsys.rgb_to_hsv(*p) for p in rgb[:: max(1, len(rgb) // 4000)]])
    top = hsv[hsv[:, 1] >= np.quantile(hsv[:, 1], 0.9)]
    angle = np.angle(np.mean(np.exp(2j * np.pi * top[:, 0])))
    return float(angle / (2 * np.pi)) % 1.0


def test_pictures_are_a_function_of_the_seed():
    one = objects.draw_picture(3, np.random.default_rng(7), 80, 96)
    again = objects.draw_picture(3, np.random.default_rng(7), 80, 96)
    other = objects.draw_picture(3, np.random.default_rng(8), 80, 96)
    assert one.shape == (80, 96, 3)
    assert one.dtype == np.uint8
    np.testing.assert_array_equal(one, again)
    assert np.abs(one.astype(int) - other.astype(int)).mean() > 5


def test_classes_are_distinct_by_the_objects_hue():
    """The statistic: the circular mean hue of each picture's most saturated pixels, averaged
    per class over 12 pictures. Neighbouring classes share half their hue interval by design,
    but no two classes' mean hues lie closer than half a class spacing (0.05 of the wheel);
    their means follow the class order around the wheel."""
    rng = np.random.default_rng(0)
    means = []
    for c in range(objects.NUM_CLASSES):
        hues = [_hue_of_the_object(objects.draw_picture(c, rng, 72, 72)) for _ in range(12)]
        means.append(np.angle(np.mean(np.exp(2j * np.pi * np.array(hues)))) / (2 * np.pi) % 1.0)
    means = np.array(means)
    centres = np.arange(objects.NUM_CLASSES) / objects.NUM_CLASSES
    off = (means - centres + 0.5) % 1.0 - 0.5
    assert np.all(np.abs(off) < 0.05), off  # each class's hue sits at its own centre
    gaps = np.abs((means[:, None] - means[None, :] + 0.5) % 1.0 - 0.5)
    assert gaps[~np.eye(objects.NUM_CLASSES, dtype=bool)].min() > 0.05


def test_the_archive_is_deterministic_and_balanced(tmp_path):
    """Two generations of the same spec are byte-identical; each class has exactly
    train_per_class training and val_per_class validation images."""
    spec = miniature.MiniatureSpec(
        num_classes=10, train_per_class=3, val_per_class=2, side_range=(64, 80), task="objects"
    )
    manifest = miniature.generate(str(tmp_path / "a"), spec)
    miniature.generate(str(tmp_path / "b"), spec)
    for name in (miniature.TRAIN_TAR, miniature.VAL_TAR):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    synsets = manifest["synsets"]
    with tarfile.open(tmp_path / "a" / miniature.TRAIN_TAR) as outer:
        for synset in synsets:
            data = io.BytesIO(outer.extractfile(f"{synset}.tar").read())
            with tarfile.open(fileobj=data) as inner:
                members = inner.getmembers()
                assert len(members) == 3
                Image.open(io.BytesIO(inner.extractfile(members[0]).read())).verify()
    with tarfile.open(tmp_path / "a" / miniature.VAL_TAR) as val:
        names = set(val.getnames())
    expected = miniature.validation_file_names(synsets, 2)
    assert sorted(names) == sorted(n for s in synsets for n in expected[s])
    other = miniature.MiniatureSpec(**{**manifest["spec"], "seed": 7, "side_range": (64, 80)})
    miniature.generate(str(tmp_path / "c"), other)
    train = miniature.TRAIN_TAR
    assert (tmp_path / "c" / train).read_bytes() != (tmp_path / "a" / train).read_bytes()

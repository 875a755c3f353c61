"""Hostile pass 22, #19-#20, #28-#31: ILSVRC2012 class archives holding an image name twice (in
one or in two of them) or no image, a validation image under two folders, all refused by the
check before the build in one line; and the BMP forms on which training and predict disagreed,
now refused by both or read alike by both."""

import io
import os
import struct
import subprocess
import sys
import tarfile

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from alexnet_jax.core.errors import DataError
from alexnet_jax.data import data_sources, image_files, preprocessing
from alexnet_jax.interop import weights_io
from tests.data.test_pass20_tars import TRAIN, VAL, _add_file, _copy_archives, good_archives

__all__ = ["good_archives"]  # (the fixture, imported: the miniature archives in the real layout)


def _edit_class_archives(good: str, manual: str, edit) -> None:
    """`good`'s archives copied to `manual`, each class archive's files (name, data) replaced by
    `edit(index of the class archive, its files)`."""
    _copy_archives(good, manual)
    good_train, train = os.path.join(good, TRAIN), os.path.join(manual, TRAIN)
    with tarfile.open(good_train) as old, tarfile.open(train, "w") as new:
        for k, member in enumerate(old.getmembers()):
            with tarfile.open(fileobj=old.extractfile(member)) as inner:
                files = [(m.name, inner.extractfile(m).read()) for m in inner.getmembers()]
            buffer = io.BytesIO()
            with tarfile.open(fileobj=buffer, mode="w") as out:
                for name, data in edit(k, files):
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    out.addfile(info, io.BytesIO(data))
            member.size = len(buffer.getvalue())
            new.addfile(member, io.BytesIO(buffer.getvalue()))


def _class_archive_names(manual: str) -> list[str]:
    with tarfile.open(os.path.join(manual, TRAIN)) as tar:
        return tar.getnames()


def _check(manual: str) -> None:
    data_sources._check_archives(manual, data_sources.DOWNLOAD_AGAIN)


@pytest.mark.parametrize("where", ["in two class archives", "twice in one class archive"])
def test_an_image_name_twice_in_the_class_archives_is_one_line_naming_them(
    good_archives, tmp_path, where
):
    """#28, #29: the first class's first image added to the second class archive, or again to
    its own: tfds built until `AssertionError: Two examples share the same hashed key!`, a
    traceback (the check read only the training archive's own names). Refused before it."""
    manual = str(tmp_path / "manual")
    _edit_class_archives(good_archives, manual, lambda k, files: files)
    _check(manual)  # the archives rewritten unchanged pass
    image = {}

    def add_again(k, files):
        image.setdefault("first", files[0])
        added = k == 1 if where == "in two class archives" else k == 0
        return [*files, image["first"]] if added else files

    _edit_class_archives(good_archives, manual, add_again)
    archives = _class_archive_names(manual)
    second = archives[1] if where == "in two class archives" else archives[0]
    said = rf"hold 1 image name\(s\) more than once .*: {image['first'][0]} \({archives[0]}, "
    with pytest.raises(DataError, match=said + rf"{second}\)\. Make the archive again"):
        _check(manual)


def test_a_class_archive_with_no_image_is_one_line_naming_it(good_archives, tmp_path):
    """#31: a class archive emptied (a tar with no member) built, and trained a class that never
    sees an example, no word. Refused, as an image folder's class with no image is."""
    manual = str(tmp_path / "manual")
    _edit_class_archives(good_archives, manual, lambda k, files: [] if k == 2 else files)
    empty = _class_archive_names(manual)[2]
    said = r"holds 1 class archive\(s\) with no image, whose class would never see an example: "
    with pytest.raises(DataError, match=said + rf"{empty}\. Make the archive again"):
        _check(manual)


def test_a_validation_image_also_in_a_folder_is_one_line_naming_it(good_archives, tmp_path):
    """#30: the validation archive holding X and a/X built 5 examples from 4 images, no word."""
    manual = _copy_archives(good_archives, str(tmp_path / "manual"))
    val = os.path.join(manual, VAL)
    with tarfile.open(val) as tar:
        first = tar.getmembers()[0]
        data = tar.extractfile(first).read()
    _add_file(val, f"a/{first.name}", data)
    said = rf"{val} holds 1 name\(s\) more than once .*: {first.name}\. Make the archive again"
    with pytest.raises(DataError, match=said):
        _check(manual)


# ---- BMPs: training (TensorFlow's decoder) and predict (Pillow) refuse the same ones ----------


def _bmp(bits: int, header: int = 40, compression: int = 0, extra: bytes = b"", colours=0):
    """A bottom-up 6 x 4 BMP of `bits` per pixel whose pixel bytes count up, with a DIB header of
    `header` bytes (12: OS/2's) whose 40 usual bytes are followed by `extra` (masks, a colour
    table: inside the header where it is longer, else after it)."""
    width, height = 6, 4
    pixels = bytes(k % 251 for k in range((width * bits + 31) // 32 * 4 * height))
    if header == 12:
        dib = struct.pack("<IHHHH", 12, width, height, 1, bits)
    else:
        dib = struct.pack("<IiiHHIIiiII", header, width, height, 1, bits, compression,
                          len(pixels), 0, 0, colours, 0)  # fmt: skip
        dib = (dib + extra).ljust(header, b"\0")
    offset = 14 + len(dib)
    return b"BM" + struct.pack("<IHHI", offset + len(pixels), 0, 0, offset) + dib + pixels


def _masks(*masks: int) -> bytes:
    return struct.pack(f"<{len(masks)}I", *masks)


USUAL = _masks(0xFF0000, 0xFF00, 0xFF)
BMPS = {
    "24-bit": _bmp(24),
    "32-bit": _bmp(32),
    "8-bit palette": _bmp(8, extra=bytes(range(256)) * 4, colours=256),
    "32-bit bitfields after a 40-byte header": _bmp(32, 40, 3, USUAL),
    "32-bit bitfields in RGB order after a 40-byte header": _bmp(
        32, 40, 3, _masks(0xFF, 0xFF00, 0xFF0000)
    ),
    "32-bit bitfields XBGR (Pillow reads it) after a 40-byte header": _bmp(32, 40, 3, USUAL[::-1]),
    "32-bit bitfields in a 56-byte header": _bmp(32, 56, 3, USUAL + _masks(0xFF000000)),
    "32-bit alphabitfields after a 40-byte header": _bmp(32, 40, 6, USUAL + _masks(0)),
    "32-bit alphabitfields in a 56-byte header": _bmp(32, 56, 6, USUAL + _masks(0xFF000000)),
    "24-bit RLE8-compressed": _bmp(24, 40, 1),
    "16-bit": _bmp(16),
    "16-bit bitfields 565": _bmp(16, 40, 3, _masks(0xF800, 0x7E0, 0x1F)),
    "4-bit palette": _bmp(4, extra=bytes(64), colours=16),
    "1-bit": _bmp(1, extra=_masks(0, 0xFFFFFF), colours=2),
    "OS/2 24-bit": _bmp(24, 12),
}


def _trained(data: bytes) -> np.ndarray | None:
    """What training reads of a picture (None: skipped as undecodable)."""
    try:
        return preprocessing.decode_rgb(tf.constant(data)).numpy()
    except tf.errors.InvalidArgumentError:
        return None


def _predicted(data: bytes, tmp_path) -> np.ndarray | None:
    """What predict reads of a picture (Pillow's RGB), or None where it refuses it."""
    path = tmp_path / "picture.bmp"
    path.write_bytes(data)
    try:
        image_files.load_image(str(path), weights_io.imported_weights_config("torchvision"))
    except DataError:
        return None
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


@pytest.mark.parametrize("form", list(BMPS))
def test_training_and_predict_refuse_the_same_bmps_and_read_the_others_alike(form, tmp_path):
    """#19, #20: 16-bit, 4-bit, 1-bit and OS/2 BMPs were skipped by training as undecodable and
    read by predict (Pillow); BI_ALPHABITFIELDS and compressed 24-bit ones were read by training
    and refused by Pillow. One predicate (image_files.refused_bmp) now decides for both."""
    data = BMPS[form]
    trained, predicted = _trained(data), _predicted(data, tmp_path)
    assert (trained is None) == (predicted is None), (trained, predicted)
    if trained is not None:
        np.testing.assert_array_equal(trained, predicted)
    assert (trained is None) == image_files.refused_bmp(data)


def test_predict_of_a_16_bit_bmp_is_one_error_line(run_dir, tmp_path):
    """#20 at the command line: the refused BMP is one `error:` line naming it, exit code 2."""
    path = tmp_path / "scan.bmp"
    path.write_bytes(BMPS["16-bit"])
    proc = subprocess.run(
        [sys.executable, "-m", "alexnet_jax.tools.predict", f"--workdir={run_dir}", str(path)],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": ""},
    )  # fmt: skip
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, proc.stderr[-3000:]
    assert f"Cannot read image {path}: a BMP form that training skips" in lines[0]

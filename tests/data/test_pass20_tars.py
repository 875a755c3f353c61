"""Hostile pass 20 (#64-#66, #68): ILSVRC2012 archives that are random bytes, cut short, or hold a
file of another name, given to `main.py --mode=prepare` (which builds the tfds dataset from them):
one `error:` line naming the archive and what to do, exit code 2, no traceback, and no half-built
dataset, so that a rerun with good archives builds."""

import io
import os
import shutil
import subprocess
import sys
import tarfile

import pytest

from alexnet_jax.data import miniature

# The default config's miniature (4 classes) at its smallest: 8 training and 4 validation images.
SPEC = miniature.MiniatureSpec(
    num_classes=4, train_per_class=2, val_per_class=1, side_range=(40, 60)
)
MINIATURE_FLAGS = [
    "--config.miniature_train_per_class=2",
    "--config.miniature_val_per_class=1",
    "--config.miniature_image_sides=(40, 60)",
]
TRAIN, VAL = miniature.TRAIN_TAR, miniature.VAL_TAR


@pytest.fixture(scope="module")
def good_archives(tmp_path_factory) -> str:
    """A folder with a good pair of small archives in the ILSVRC2012 layout (and its manifest)."""
    directory = str(tmp_path_factory.mktemp("good_archives"))
    miniature.generate(directory, SPEC)
    return directory


def _copy_archives(good: str, directory: str) -> str:
    os.makedirs(directory, exist_ok=True)
    for name in (TRAIN, VAL):
        shutil.copy(os.path.join(good, name), directory)
    return directory


def _prepare(repo_root: str, tmp_path, *flags: str, imagenet: bool = True):
    """main.py --mode=prepare in a subprocess (with configs/imagenet.py, unless not `imagenet`)."""
    config = []
    if imagenet:  # (mean_std: the build alone, without computing the mean image)
        config = [f"--config={os.path.join(repo_root, 'configs', 'imagenet.py')}"]
        config.append("--config.normalization=mean_std")
    args = [sys.executable, os.path.join(repo_root, "main.py"), *config, "--mode=prepare"]
    args += [f"--workdir={tmp_path / 'workdir'}", f"--config.data_dir={tmp_path / 'tfds'}", *flags]
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)


def _the_error_line(proc) -> str:
    """The one `error:` line of a refused run (exit code 2, no traceback)."""
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, proc.stderr[-3000:]
    return lines[0]


def _nothing_built(data_dir: str) -> None:
    """No build (complete or temporary) that a later run could take for a complete one."""
    built = os.path.join(data_dir, "imagenet2012")
    assert not os.path.isdir(built) or os.listdir(built) == [], os.listdir(built)


def _add_file(path: str, name: str, data: bytes) -> None:
    with tarfile.open(path, "a") as tar:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))


def test_random_bytes_for_archives_are_one_error_line_and_good_ones_then_build(
    good_archives, tmp_path, repo_root
):
    """#64: both archives 5,000 random bytes (tarfile's 'invalid header' in 48 lines)."""
    manual_dir = tmp_path / "random"
    manual_dir.mkdir()
    for name in (TRAIN, VAL):
        (manual_dir / name).write_bytes(os.urandom(5000))
    line = _the_error_line(_prepare(repo_root, tmp_path, f"--config.manual_dir={manual_dir}"))
    assert f"The archive {manual_dir / TRAIN} is not a readable tar" in line
    assert "download it again" in line
    _nothing_built(str(tmp_path / "tfds"))
    _copy_archives(good_archives, str(manual_dir))
    done = _prepare(repo_root, tmp_path, f"--config.manual_dir={manual_dir}")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Prepared the imagenet2012 data: 8 training and 4 eval examples" in done.stdout


def test_a_cut_short_train_archive_is_one_error_line_naming_it(good_archives, tmp_path, repo_root):
    """#65: the training archive cut in the middle (tarfile's 'unexpected end of data')."""
    manual_dir = _copy_archives(good_archives, str(tmp_path / "cut"))
    train = os.path.join(manual_dir, TRAIN)
    os.truncate(train, os.path.getsize(train) * 2 // 3 + 100)
    line = _the_error_line(_prepare(repo_root, tmp_path, f"--config.manual_dir={manual_dir}"))
    assert f"The archive {train} is not a readable tar (unexpected end of data" in line
    _nothing_built(str(tmp_path / "tfds"))


def test_a_file_of_another_name_in_the_val_archive_is_refused_naming_it(
    good_archives, tmp_path, repo_root
):
    """#66: holiday_photo.JPEG added to the validation archive (AttributeError: 'NoneType' object
    has no attribute 'group'). Refused, as one in the training archive is: neither has a label."""
    manual_dir = _copy_archives(good_archives, str(tmp_path / "holiday"))
    val = os.path.join(manual_dir, VAL)
    with tarfile.open(val) as tar:
        picture = tar.extractfile(tar.getmembers()[0]).read()
    _add_file(val, "holiday_photo.JPEG", picture)
    line = _the_error_line(_prepare(repo_root, tmp_path, f"--config.manual_dir={manual_dir}"))
    assert f"The archive {val} holds 1 file(s) that are not validation images" in line
    assert "holiday_photo.JPEG" in line
    assert "tar --delete" in line
    _nothing_built(str(tmp_path / "tfds"))


def test_a_file_of_another_name_in_the_train_archive_is_refused_naming_it(
    good_archives, tmp_path, repo_root
):
    """A picture beside the class archives of the training archive (the builder took its name
    for a synset and failed in a traceback)."""
    manual_dir = _copy_archives(good_archives, str(tmp_path / "stray"))
    train = os.path.join(manual_dir, TRAIN)
    _add_file(train, "holiday_photo.JPEG", b"\xff\xd8 not really a picture")
    line = _the_error_line(_prepare(repo_root, tmp_path, f"--config.manual_dir={manual_dir}"))
    assert f"The archive {train} holds 1 file(s) that are not class archives" in line
    assert "holiday_photo.JPEG" in line
    _nothing_built(str(tmp_path / "tfds"))


def test_a_damaged_class_archive_stops_the_build_which_a_rerun_then_makes(
    good_archives, tmp_path, repo_root
):
    """A class archive inside the training archive that is random bytes: its headers are whole,
    so tfds starts the build and fails inside it; tfds's temporary folder is removed, and a rerun
    with good archives builds."""
    manual_dir = _copy_archives(good_archives, str(tmp_path / "inner"))
    train = os.path.join(manual_dir, TRAIN)
    with tarfile.open(os.path.join(good_archives, TRAIN)) as good, tarfile.open(train, "w") as bad:
        for i, member in enumerate(good.getmembers()):
            data = good.extractfile(member).read()
            bad.addfile(member, io.BytesIO(os.urandom(len(data)) if i == 1 else data))
    line = _the_error_line(_prepare(repo_root, tmp_path, f"--config.manual_dir={manual_dir}"))
    assert f"A class archive inside {train} is not a readable tar" in line
    _nothing_built(str(tmp_path / "tfds"))
    _copy_archives(good_archives, manual_dir)
    done = _prepare(repo_root, tmp_path, f"--config.manual_dir={manual_dir}")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Prepared the imagenet2012 data: 8 training and 4 eval examples" in done.stdout


def test_a_cut_short_miniature_archive_is_one_error_line_and_regenerated_as_it_says(
    good_archives, tmp_path, repo_root
):
    """#68: the default config's generated miniature, its training archive cut short: the line
    says to delete its miniature.json; done, a rerun generates the archive again and builds."""
    miniature_dir = _copy_archives(good_archives, str(tmp_path / "miniature"))
    shutil.copy(os.path.join(good_archives, miniature.MANIFEST), miniature_dir)
    train = os.path.join(miniature_dir, TRAIN)
    os.truncate(train, os.path.getsize(train) // 2 + 100)
    flags = [f"--config.miniature_dir={miniature_dir}", *MINIATURE_FLAGS]
    line = _the_error_line(_prepare(repo_root, tmp_path, *flags, imagenet=False))
    manifest = os.path.join(miniature_dir, miniature.MANIFEST)
    assert f"The archive {train} is not a readable tar" in line
    assert f"delete {manifest} and rerun" in line
    data_dir = os.path.join(tmp_path, "tfds", "miniature", SPEC.fingerprint())
    _nothing_built(data_dir)
    os.remove(manifest)
    done = _prepare(repo_root, tmp_path, *flags, imagenet=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Prepared the miniature data: 8 training and 4 eval examples" in done.stdout


# ---- Hostile pass 21: archives made with other tools ------------------------------------------


def _repack(src: str, dst: str, rename=lambda name: name, extra=()) -> None:
    """`src` written again to `dst`, each member renamed by `rename`, then the `extra` members
    (TarInfo, data or None) appended."""
    with tarfile.open(src) as old, tarfile.open(dst, "w") as new:
        for member in old.getmembers():
            data = old.extractfile(member).read()
            member.name = rename(member.name)
            new.addfile(member, io.BytesIO(data))
        for info, data in extra:
            new.addfile(info, None if data is None else io.BytesIO(data))


def test_archives_with_dot_slash_names_and_a_linked_validation_image_build(
    good_archives, tmp_path, repo_root
):
    """Pass 21, #21, #22, #26: archives packed as `tar -C dir -cf x.tar .` (names `./...`), or
    whose validation archive holds a hard link (`ln a b`, then tar), passed the check and
    failed in tfds with a KeyError traceback (the labels were keyed by the raw member name,
    links left out), or (the training archive) were refused as "not class archives". tfds
    reads `./a` as `a` and follows links: so does the check, and the build succeeds."""
    manual = tmp_path / "manual"
    manual.mkdir()
    _repack(os.path.join(good_archives, TRAIN), str(manual / TRAIN), lambda n: f"./{n}")
    with tarfile.open(os.path.join(good_archives, VAL)) as tar:
        first = tar.getmembers()[0].name
        numbers = {int(m.name[15:23]) for m in tar.getmembers()}
    link = tarfile.TarInfo(f"./ILSVRC2012_val_{min(set(range(1, 100)) - numbers):08d}.JPEG")
    link.type, link.linkname = tarfile.LNKTYPE, f"./{first}"
    _repack(os.path.join(good_archives, VAL), str(manual / VAL), lambda n: f"./{n}", [(link, None)])
    proc = _prepare(repo_root, tmp_path, f"--config.manual_dir={manual}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("where", ["a file added twice", "a linked class archive"])
def test_a_name_given_twice_or_a_linked_class_archive_is_one_line(good_archives, tmp_path, where):
    """Pass 21, #23-#25: a validation image added again (`tar -rf`), or a class archive that is
    a hard or symbolic link to another, built until tfds met two examples with one key: a
    66-line AssertionError. The check refuses each in one line naming it."""
    from alexnet_jax.core.errors import DataError
    from alexnet_jax.data import data_sources

    manual = _copy_archives(good_archives, str(tmp_path / "manual"))
    if where == "a file added twice":
        with tarfile.open(os.path.join(manual, VAL)) as tar:
            first = tar.getmembers()[0]
            data = tar.extractfile(first).read()
        _add_file(os.path.join(manual, VAL), first.name, data)
        said = rf"holds 1 name\(s\) more than once .*: {first.name}\. Make the archive again"
    else:
        with tarfile.open(os.path.join(manual, TRAIN)) as tar:
            names = [m.name for m in tar.getmembers()]
        link = tarfile.TarInfo("n01530575.tar" if "n01530575.tar" not in names else "n01531178.tar")
        link.type, link.linkname = tarfile.SYMTYPE, names[0]
        _repack(
            os.path.join(good_archives, TRAIN), os.path.join(manual, TRAIN), extra=[(link, None)]
        )
        said = rf"class archive\(s\) that are links to other members.*: {link.name}\. Make"
    with pytest.raises(DataError, match=said):
        data_sources._check_archives(manual, data_sources.DOWNLOAD_AGAIN)

"""Weight files carry the conventions their numbers mean (variant, classes, input and resize size,
normalization, LRN convention, class names), `predict --weights` runs by them, export writes
exactly the path asked for and never leaves half a file, and the tools turn bad options and
damaged runs into one `error:` line with exit code 2.

The runs are conftest.py's: `run_dir`/`run_params` (torchvision variant, 64 px, mean/std) and
`lrn_run_dir` (one_tower at 227 px, normalization "mean", lrn_convention "paper": the two
conventions where a run here and PyTorch's differ).
"""

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from alexnet_jax.core import errors
from alexnet_jax.data import image_files
from alexnet_jax.interop import weights_io
from alexnet_jax.runs import rundir
from alexnet_jax.tools import export, figures, load, predict
from alexnet_jax.train import config_lib
from benchmarks import torch_models

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FORMATS = (".pth", ".safetensors", ".npz")


def reported(capsys, fn, *args, **kwargs) -> tuple[int, list[str]]:
    """(exit code, stderr lines) of `fn(*args)` inside the entry points' error report."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exited, errors.reported_as_exit():
        fn(*args, **kwargs)
    return exited.value.code, capsys.readouterr().err.splitlines()


def one_error_line(code: int, lines: list[str]) -> str:
    assert code == 2, lines
    assert len(lines) == 1, lines
    assert lines[0].startswith("error: "), lines
    return lines[0]


def write_photo(path, size=(300, 260), seed=0) -> str:
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), np.uint8)
    Image.fromarray(pixels).save(path)
    return str(path)


@pytest.fixture(scope="module")
def run_conventions(run_params) -> dict:
    """What every file exported from `run_dir` must record."""
    config, _ = run_params
    names = predict.class_names(config)
    return {
        "variant": "torchvision",
        "num_classes": 4,
        "input_size": 64,
        "resize_size": 72,
        "normalization": "mean_std",
        "lrn_convention": config.lrn_convention,
        "class_names": [name for _, name in names],
        "class_synsets": [synset for synset, _ in names],
    }


# ---- 1. Weights carry their conventions ---------------------------------------------------------


@pytest.mark.parametrize("suffix", FORMATS)
def test_each_format_records_the_runs_conventions_and_pytorch_still_loads_the_pth(
    run_params, run_conventions, tmp_path, suffix
):
    config, params = run_params
    conventions = weights_io.conventions_of(config, predict.known_class_names(config))
    path = weights_io.save_weights(params, conventions, str(tmp_path / f"model{suffix}"))
    assert weights_io.read_conventions(path) == run_conventions
    assert run_conventions["class_names"][0].endswith("(miniature)")
    if suffix == ".pth":  # PyTorch loads it strictly, the conventions in the state dict's metadata
        state_dict = torch.load(path, weights_only=True)
        net = torch_models.torchvision_alexnet(config.num_classes)
        net.load_state_dict(state_dict, strict=True)
        assert json.loads(state_dict._metadata[""]["alexnet_jax"]) == run_conventions
    elif suffix == ".safetensors":  # string values, lists as JSON
        from safetensors import safe_open

        with safe_open(path, framework="numpy") as f:
            metadata = f.metadata()
        assert metadata["normalization"] == "mean_std"
        assert metadata["input_size"] == "64"
        assert json.loads(metadata["class_names"]) == run_conventions["class_names"]
    else:  # readable without pickle; the conventions one uint8 entry
        with np.load(path, allow_pickle=False) as npz:
            assert npz["__conventions__"].dtype == np.uint8
            assert json.loads(npz["__conventions__"].tobytes()) == run_conventions


@pytest.mark.parametrize("suffix", FORMATS)
def test_a_file_from_elsewhere_records_no_conventions(run_params, tmp_path, suffix):
    config, params = run_params
    path = str(tmp_path / f"plain{suffix}")
    if suffix == ".pth":  # as torchvision's files: a state dict saved by torch.save
        torch.save(torch_models.torchvision_alexnet(config.num_classes).state_dict(), path)
    else:  # save_weights with a bare variant writes the layout alone
        weights_io.save_weights(params, "torchvision", path)
    assert weights_io.read_conventions(path) is None


def test_damaged_conventions_are_refused_naming_the_file_and_the_field(tmp_path):
    bad_json = tmp_path / "bad_json.npz"
    np.savez(bad_json, __conventions__=np.frombuffer(b"{not json", np.uint8))
    with pytest.raises(weights_io.WeightsFileError, match=r"bad_json\.npz refused: .* not JSON"):
        weights_io.read_conventions(str(bad_json))
    sd = torch_models.torchvision_alexnet(3).state_dict()
    fields = {
        "variant": "torchvision",
        "num_classes": 3,
        "input_size": 224,
        "resize_size": 256,
        "normalization": "mean/std",
        "lrn_convention": "paper",
    }
    sd._metadata[""]["alexnet_jax"] = json.dumps(fields)
    torch.save(sd, tmp_path / "bad_value.pth")
    with pytest.raises(weights_io.WeightsFileError, match=r"bad_value\.pth refused.*normalization"):
        weights_io.read_conventions(str(tmp_path / "bad_value.pth"))


def test_forward_options_are_recorded_only_where_a_run_changed_them(tmp_path):
    """A default run's conventions are the six fields files always held; a run with forward
    options adds exactly those it changed, which a safetensors header holds as JSON (booleans,
    integers) and reads back typed; an option a file does not record reads as its default (for
    predict too); a recorded option its variant refuses is refused naming the file and field;
    --mode=eval refuses a config whose option contradicts the file's."""
    from alexnet_jax.train import loop
    from configs import default

    config = default.get_config()
    assert set(weights_io.conventions_of(config)) == set(weights_io.CONVENTION_FIELDS)
    config.update(width="half", lrn=False, pool_window=2, activation="tanh")
    conventions = weights_io.conventions_of(config)
    changed = {"width": "half", "lrn": False, "pool_window": 2, "activation": "tanh"}
    assert {k: v for k, v in conventions.items() if k in weights_io.OPTION_DEFAULTS} == changed
    metadata = weights_io._safetensors_metadata(conventions)
    assert (metadata["lrn"], metadata["pool_window"], metadata["width"]) == ("false", "2", "half")
    assert weights_io._from_safetensors_metadata(metadata, "m.safetensors") == conventions
    full = weights_io.with_option_defaults(conventions)
    assert (full["spatial_norm2"], full["block1_order"]) == (False, "conv_relu_lrn_pool")
    model_config = weights_io.weights_config(conventions)
    assert (model_config.width, model_config.lrn, model_config.pool_stride) == ("half", False, 2)
    damaged = weights_io._safetensors_metadata({**conventions, "variant": "paper"})
    with pytest.raises(weights_io.WeightsFileError, match=r"m\.safetensors refused.*config\.width"):
        weights_io._from_safetensors_metadata(damaged, "m.safetensors")
    # --mode=eval of such a file refuses a config that builds another network (only the
    # conventions entry of an .npz is read: no weights needed)
    path = str(tmp_path / "options.npz")
    np.savez(path, __conventions__=np.frombuffer(json.dumps(conventions).encode(), np.uint8))
    config.update(torch_weights=path, activation="relu")
    with pytest.raises(errors.ConfigError, match="activation: file 'tanh', config 'relu'"):
        loop._check_weights_conventions(config)


# ---- 2. predict --weights runs by the file's conventions ----------------------------------------


def test_predict_from_exported_weights_equals_predict_from_the_run(lrn_run_dir, tmp_path):
    """A run with normalization "mean" and the paper's LRN, exported and read back: the same
    preprocessing, probabilities and class names as from its workdir (under PyTorch's
    conventions, assumed before, the top probability moves from 0.98 to 0.79)."""
    path = export.export_run(lrn_run_dir, str(tmp_path / "model.pth"))
    run_config, run_params = predict.load_model(lrn_run_dir, None, None)
    config, params = predict.load_model(None, path, "one_tower")
    for field in ("variant", "num_classes", "input_size", "resize_size", "normalization"):
        assert config[field] == run_config[field], field
    assert config.lrn_convention == run_config.lrn_convention == "paper"

    images = [write_photo(tmp_path / f"{i}.png", seed=i) for i in range(6)]
    for image in images:
        np.testing.assert_array_equal(
            image_files.load_image(image, config), image_files.load_image(image, run_config)
        )
    got = predict.predict(params, config, images)
    want = predict.predict(run_params, run_config, images)
    # Random weights saturate on some pictures: at least one must not, so that a change of
    # conventions would show in the probabilities.
    assert max(w[1].prob for w in want) > 0.01
    for g, w in zip(got, want, strict=True):
        assert [(p.index, p.synset, p.name) for p in g] == [(p.index, p.synset, p.name) for p in w]
        np.testing.assert_allclose([p.prob for p in g], [p.prob for p in w], atol=1e-5)
    assert got[0][0].name.endswith("(miniature)")


def test_a_file_without_conventions_gets_the_torchvision_conventions(tmp_path):
    path = str(tmp_path / "alexnet-owt.pth")
    torch.save(torch_models.torchvision_alexnet(1000).state_dict(), path)
    config, params = predict.load_model(None, path, None)  # no --variant: torchvision
    assert config.to_dict() == weights_io.imported_weights_config("torchvision").to_dict()
    assert (config.normalization, config.resize_size, config.input_size) == ("mean_std", 256, 224)
    assert predict.class_names(config)[0] == ("n01440764", "tench, Tinca tinca")
    assert params["fc8"]["kernel"].shape == (4096, 1000)


def test_a_variant_flag_contradicting_the_file_is_one_error(run_dir, tmp_path, capsys):
    path = export.export_run(run_dir, str(tmp_path / "model.npz"))
    line = one_error_line(*reported(capsys, predict.load_model, None, path, "one_tower"))
    assert "--variant=one_tower contradicts" in line
    assert "'torchvision'" in line
    assert predict.load_model(None, path, "torchvision")[0].variant == "torchvision"


# ---- 3. Export writes exactly the path asked for, whole or not at all ---------------------------


def test_export_writes_exactly_the_requested_path_with_an_upper_case_suffix(run_dir, tmp_path):
    """numpy's savez appends ".npz" to any other name: M.NPZ became M.NPZ.npz."""
    out = str(tmp_path / "M.NPZ")
    assert export.export_run(run_dir, out) == out  # the path main prints
    assert os.listdir(tmp_path) == ["M.NPZ"]
    assert weights_io.read_conventions(out)["variant"] == "torchvision"
    assert weights_io.load_weights(out, "torchvision")["fc8"]["bias"].shape == (4,)


def test_export_to_a_directory_is_one_error_and_leaves_it_alone(run_dir, tmp_path, capsys):
    target = tmp_path / "model.pth"
    target.mkdir()
    (target / "keep.txt").write_text("keep")
    line = one_error_line(*reported(capsys, export.export_run, run_dir, str(target)))
    assert "is a directory" in line
    assert os.listdir(target) == ["keep.txt"]
    assert os.listdir(tmp_path) == ["model.pth"]


def test_export_under_a_regular_file_is_one_error(run_dir, tmp_path, capsys):
    """A path whose directory is a file (ENOTDIR): what a read-only directory is to a user
    without rights (chmod does not stop root, which runs these tests)."""
    (tmp_path / "notes.txt").write_text("not a directory")
    out = str(tmp_path / "notes.txt" / "model.safetensors")
    line = one_error_line(*reported(capsys, export.export_run, run_dir, out))
    assert "notes.txt is a file, not a directory" in line
    assert os.listdir(tmp_path) == ["notes.txt"]


_LIMITED = (
    "import os, resource, signal, sys; "
    "resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit})); "
    "signal.signal(signal.SIGXFSZ, signal.SIG_IGN); os.execv(sys.executable, sys.argv[1:])"
)


def _with_file_size_limit(limit: int, *command: str) -> subprocess.CompletedProcess:
    """Runs `command` with every file it writes capped at `limit` bytes (RLIMIT_FSIZE, SIGXFSZ
    ignored): a write past it fails with EFBIG, as on a full disk."""
    launcher = [sys.executable, "-c", _LIMITED.format(limit=limit)]
    return subprocess.run(
        [*launcher, sys.executable, *command],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": ""},
    )


def test_export_to_a_full_disk_is_one_error_and_keeps_the_earlier_file(run_dir, tmp_path):
    out = tmp_path / "model.npz"
    out.write_bytes(b"an earlier good export")
    proc = _with_file_size_limit(
        2**20, "-m", "alexnet_jax.tools.export", f"--workdir={run_dir}", f"--to={out}"
    )
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert out.read_bytes() == b"an earlier good export"
    assert os.listdir(tmp_path) == ["model.npz"]  # no temporary file left behind
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    (line,) = [x for x in proc.stderr.splitlines() if x.startswith("error:")]
    assert f"Writing {out} failed: File too large (errno 27: over the file-size limit" in line
    assert "existing file is unchanged" in line


_SAVE_EVERY_FORMAT = """
import json, sys
import numpy as np
from alexnet_jax.interop import convert, weights_io

params = {
    layer: {name: np.ones(shape, np.float32) for name, shape in leaves.items()}
    for layer, leaves in convert.flax_param_shapes("torchvision", 4).items()
}
results = {}
for path in sys.argv[1:]:
    try:
        weights_io.save_weights(params, "torchvision", path)
        results[path] = "written"
    except Exception as e:
        results[path] = str(e)
print(json.dumps(results))
"""


def test_every_format_fails_whole_on_a_full_disk(tmp_path):
    """.pth, .safetensors and .npz under a 1 MB file size limit: each a WeightsFileError with the
    system's reason, the earlier file at the path unchanged, no temporary file left."""
    paths = [str(tmp_path / f"model{suffix}") for suffix in FORMATS]
    for path in paths:
        with open(path, "wb") as f:
            f.write(b"earlier " + path.encode())
    proc = _with_file_size_limit(2**20, "-c", _SAVE_EVERY_FORMAT, *paths)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(proc.stdout.splitlines()[-1])
    for path in paths:
        with open(path, "rb") as f:
            assert f.read() == b"earlier " + path.encode(), results[path]
        too_large = "File too large (errno 27: over the file-size limit, `ulimit -f`"
        assert results[path].startswith(f"Writing {path} failed: {too_large}")
    assert sorted(os.listdir(tmp_path)) == sorted(os.path.basename(p) for p in paths)


# ---- 4. figures: bad options are one error, before the model is loaded --------------------------


@pytest.fixture
def no_model_loading(monkeypatch):
    def load_run(workdir):
        raise AssertionError("the model was loaded before the options were checked")

    monkeypatch.setattr(load, "load_run", load_run)


@pytest.mark.parametrize(
    ("out", "options", "message"),
    [
        ("a_file.png", {}, "--out=.*a_file.png is a file"),
        ("a_file.png/figures", {}, "--out=.*lies under the file"),
        ("figures", {"k": -1}, "--neighbours must be an integer >= 1, got -1"),
        ("figures", {"num_queries": 0}, "--num_queries must be an integer >= 1, got 0"),
        ("figures", {"max_train_images": -5}, "--max_train_images must be an integer >= 0"),
    ],
)
def test_figures_refuses_bad_options_before_loading_the_model(
    no_model_loading, tmp_path, capsys, out, options, message
):
    (tmp_path / "a_file.png").write_bytes(b"an earlier figure")
    out = str(tmp_path / out)
    line = one_error_line(*reported(capsys, figures.make_figures, "no_run", out, **options))
    assert re.search(message, line), line
    assert (tmp_path / "a_file.png").read_bytes() == b"an earlier figure"
    assert os.listdir(tmp_path) == ["a_file.png"]


# ---- 5. A damaged config.json is one error in every tool ----------------------------------------


def _damaged_run(root, how: str) -> str:
    workdir = root / "run"
    workdir.mkdir()
    if how == "not_json":
        text = '{"variant": "torchvision", "num_cla'  # cut off mid-write
    else:  # JSON, but without fields a run's config has
        text = json.dumps({"variant": "torchvision", "input_size": 64})
    (workdir / rundir.CONFIG_FILE).write_text(text)
    return str(workdir)


_TOOLS = {
    "predict": lambda workdir, out: predict.load_model(workdir, None),
    "figures": lambda workdir, out: figures.make_figures(workdir, out),
    "export": lambda workdir, out: export.export_run(workdir, os.path.join(out, "model.pth")),
}


@pytest.mark.parametrize("how", ["not_json", "missing_fields"])
@pytest.mark.parametrize("tool", sorted(_TOOLS))
def test_tools_on_a_damaged_config_json_are_one_error(tmp_path, capsys, tool, how):
    workdir = _damaged_run(tmp_path, how)
    out = str(tmp_path / "out")
    line = one_error_line(*reported(capsys, _TOOLS[tool], workdir, out))
    assert os.path.join(workdir, "config.json") in line
    assert not os.path.exists(out)


# ---- --mode=eval of imported weights and predict agree ---------------------------------------


def test_eval_of_exported_weights_equals_predict_on_the_same_images(run_dir, tmp_path):
    """`--mode=eval --config.torch_weights=<export>` (the tf.data pipeline) and predict (its NumPy
    preprocessing) on the same validation files: the same top-1 and the same mean cross-entropy
    (all 4 classes' probabilities come back from predict, so the loss is exact)."""
    import tarfile

    import ml_collections

    from alexnet_jax.data import input_pipeline, miniature
    from alexnet_jax.train import loop

    config = config_lib.load_config(run_dir)
    input_pipeline.prepare(config)  # the tiny miniature archive of the run's config
    path = export.export_run(run_dir, str(tmp_path / "model.pth"))
    evaluated = ml_collections.ConfigDict(config.to_dict())
    evaluated.torch_weights = path
    metrics = loop.evaluate_checkpoint(evaluated, str(tmp_path / "eval"))
    # Pass 7, #40: the row of weights from elsewhere was the workdir's step-0 evaluation, which
    # a run started there later reported as its best. It is kept apart, naming the file.
    (row,) = rundir.read_metrics(str(tmp_path / "eval"))
    assert (row["step"], row["reeval"], row["torch_weights"]) == (0, True, path)
    assert rundir.run_evals([row]) == []

    synsets = miniature.imagenet_synsets()[: config.num_classes]
    names = miniature.validation_file_names(synsets, config.miniature_val_per_class)
    label_of = {name: label for label, s in enumerate(synsets) for name in names[s]}
    with tarfile.open(os.path.join(config.miniature_dir, "ILSVRC2012_img_val.tar")) as tar:
        tar.extractall(tmp_path / "val", members=[m for m in tar if m.name in label_of])
    files = sorted(label_of)
    loaded_config, params = predict.load_weights_file(path)
    results = predict.predict(params, loaded_config, [str(tmp_path / "val" / f) for f in files])
    top1 = np.mean([r[0].index == label_of[f] for f, r in zip(files, results, strict=True)])
    losses = [
        -np.log(next(p.prob for p in r if p.index == label_of[f]))
        for f, r in zip(files, results, strict=True)
    ]
    assert metrics["num_examples"] == len(files) == 12
    assert 1 - metrics["top1_error"] == pytest.approx(top1, abs=1e-9)
    assert metrics["loss"] == pytest.approx(float(np.mean(losses)), rel=1e-3)

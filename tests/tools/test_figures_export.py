"""Figures 3 and 4, training curves and export, on a tiny run of the torchvision variant.

The run (conftest.py's `run_dir` and `run_params`) is a real checkpoint and config.json in a
temporary workdir over a generated miniature dataset (4 classes, 64 px crops), so the tools go
through `load.load_run` and the input pipeline exactly as they do after `python main.py`.
"""

import json
import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from alexnet_jax.core.errors import UserError
from alexnet_jax.interop import weights_io
from alexnet_jax.model.models import create_model
from alexnet_jax.runs import plots, rundir
from alexnet_jax.tools import export, figures


def read_png(path: str) -> np.ndarray:
    assert os.path.exists(path), path
    return np.asarray(Image.open(path).convert("RGB"))


# ---- Figures and curves -----------------------------------------------------------------------


def test_figures_go_into_the_run_with_a_caption_band_and_have_the_expected_size(run_dir, tmp_path):
    workdir = shutil.copytree(run_dir, tmp_path / "run")
    paths = figures.make_figures(str(workdir), num_queries=3, k=5)  # no --out: into the run
    assert paths == [str(workdir / "figures" / name) for name in (figures.FIGURE3, figures.FIGURE4)]
    fig3, fig4 = (read_png(p) for p in paths)
    # torchvision's 64 kernels: 8x8 patches of 55 px with 2 px gaps.
    size3 = (8 * 57 + 2, 8 * 57 + 2)
    # 3 rows of (query + 5 neighbours) 64 px cells, 4 px gaps, 12 px after the query column.
    size4 = (4 + 3 * 68, 4 + 6 * 68 + 12)
    for image, (height, width) in ((fig3, size3), (fig4, size4)):
        assert image.shape[1] == width
        assert image[:height].astype(np.float32).var() > 0
        # Below the figure: whole caption lines of text (dark pixels on white).
        caption = image[height:]
        assert (caption.shape[0] - 2 * figures.GAP) % figures.CAPTION_LINE == 0
        assert caption.shape[0] >= 2 * figures.GAP + figures.CAPTION_LINE
        assert (caption.min(axis=-1) < 128).sum() > 50


def test_figure3_puts_the_paper_towers_side_by_side_with_per_kernel_normalisation():
    kernel = np.random.default_rng(0).normal(size=(11, 11, 3, 96)).astype(np.float32)
    kernel[..., 48] *= 1000.0  # per-kernel min-max: the scale of one kernel must not matter
    one_block = figures.conv1_kernel_image(kernel, towers=1)
    towers = figures.conv1_kernel_image(kernel, towers=2)
    assert one_block.shape == (458, 12 * 57 + 2, 3)  # 8x12 grid
    block_width = 6 * 57 + 2  # each tower an 8x6 grid
    assert towers.shape == (458, 2 * block_width + figures.TOWER_GAP, 3)
    right_first = towers[2:57, block_width + figures.TOWER_GAP + 2 :][:, :55]
    k48 = kernel[..., 48]
    expected = np.round(255 * (k48 - k48.min()) / (k48.max() - k48.min())).astype(np.uint8)
    np.testing.assert_array_equal(right_first[::5, ::5], expected)


def test_fc7_features_equal_relu_of_the_fc7_layer(run_params):
    config, params = run_params
    model = create_model(config)
    images = np.random.default_rng(1).normal(size=(2, 64, 64, 3)).astype(np.float32)
    feats = figures.make_fc7_fn(model)(params, images)
    assert feats.shape == (2, 4096)
    assert float(feats.min()) >= 0.0
    fc8 = params["fc8"]
    logits = np.asarray(feats) @ np.asarray(fc8["kernel"]) + np.asarray(fc8["bias"])
    expected = model.apply({"params": params}, images)
    np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-4)


def eval_style_batches(images: np.ndarray, batch_size: int):
    """Batches like the eval iterator's: [B, 1, ...] views, the last one padded with mask False."""
    for start in range(0, len(images), batch_size):
        chunk = images[start : start + batch_size]
        padded = np.zeros((batch_size, *images.shape[1:]), images.dtype)
        padded[: len(chunk)] = chunk
        yield {"image": padded[:, None], "mask": np.arange(batch_size) < len(chunk)}


@pytest.mark.parametrize("max_images", [0, 10])
def test_running_nearest_neighbours_equal_brute_force(max_images):
    rng = np.random.default_rng(4)
    train_images = rng.normal(size=(37, 2, 2, 3)).astype(np.float32)
    queries = rng.normal(size=(4, 2, 2, 3)).astype(np.float32)
    features = lambda params, x: jax.numpy.asarray(x).reshape(len(x), -1)  # identity "fc7"
    dist, images = figures.nearest_training_images(
        features, None, queries, eval_style_batches(train_images, 8), k=5, max_images=max_images
    )
    pool = train_images[:max_images] if max_images else train_images
    brute = np.linalg.norm(queries.reshape(4, 1, -1) - pool.reshape(1, len(pool), -1), axis=-1)
    order = np.argsort(brute, axis=1)[:, :5]
    np.testing.assert_allclose(dist, np.take_along_axis(brute, order, axis=1), rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(images, pool[order])


def test_training_curves_png_with_paper_lines(tmp_path):
    records = [
        {"step": s, "split": "train", "loss": 6.9 - s / 50, "top1": s / 400, "top5": s / 200}
        for s in range(10, 101, 10)
    ]
    records += [
        {
            "step": s,
            "split": "eval",
            "loss": 6.0 - s / 60,
            "top1": s / 300,
            "top5": s / 150,
            "top1_error": 1 - s / 300,
            "top5_error": 1 - s / 150,
        }
        for s in (50, 100)
    ]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (tmp_path / "config.json").write_text(json.dumps({"dataset": "imagenet2012"}))
    path = plots.plot_training_curves(str(tmp_path))
    assert path == str(tmp_path / rundir.CURVES_FILE)
    image = read_png(path)
    assert image.shape == (450, 1200, 3)
    assert image.astype(np.float32).var() > 0


# ---- Export -----------------------------------------------------------------------------------


class TorchvisionAlexNet(nn.Module):
    """torchvision.models.alexnet's layers and names, written out (torchvision is not installed)."""

    def __init__(self, num_classes: int):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 64, 11, stride=4, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(3, 2),
            nn.Conv2d(64, 192, 5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(3, 2),
            nn.Conv2d(192, 384, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(384, 256, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(256, 256, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(3, 2),
        )
        self.avgpool = nn.AdaptiveAvgPool2d(6)
        self.classifier = nn.Sequential(
            nn.Dropout(),
            nn.Linear(256 * 36, 4096),
            nn.ReLU(),
            nn.Dropout(),
            nn.Linear(4096, 4096),
            nn.ReLU(),
            nn.Linear(4096, num_classes),
        )

    def forward(self, x):
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


def test_exported_pth_gives_the_same_logits_in_pytorch(run_dir, run_params, tmp_path):
    path = export.export_run(run_dir, str(tmp_path / "model.pth"))
    config, params = run_params
    net = TorchvisionAlexNet(config.num_classes).eval()
    net.load_state_dict(torch.load(path, weights_only=True), strict=True)
    images = np.random.default_rng(2).normal(size=(3, 64, 64, 3)).astype(np.float32)
    expected = np.asarray(create_model(config).apply({"params": params}, images))
    with torch.no_grad():
        got = net(torch.from_numpy(images).permute(0, 3, 1, 2)).numpy()
    scale = np.abs(expected).max()
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4 * scale)


@pytest.mark.parametrize("suffix", [".safetensors", ".npz"])
def test_export_formats_read_back_to_the_same_params(run_params, tmp_path, suffix):
    if suffix == ".safetensors":
        pytest.importorskip("safetensors")
    config, params = run_params
    path = weights_io.save_weights(params, config, str(tmp_path / f"model{suffix}"))
    loaded = weights_io.load_weights(path, "torchvision")
    jax.tree_util.tree_map(
        lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0, atol=0),
        loaded,
        jax.device_get(params),
    )


def test_figures_out_that_cannot_be_created_is_one_message(run_dir, tmp_path):
    """An --out the file system refuses (here too long a name; the same path as a missing mount
    or a read-only disk) is one UserError naming --out and the reason, not a traceback."""
    bad = tmp_path / ("f" * 300) / "figures"
    with pytest.raises(UserError, match=r"--out=.* cannot be created \(File name too long"):
        figures.make_figures(run_dir, str(bad))


def test_export_refuses_an_unknown_format(run_dir, tmp_path):
    with pytest.raises(weights_io.WeightsFileError, match="unknown weights format"):
        export.export_run(run_dir, str(tmp_path / "model.onnx"))


# Runs a module as `python -m` with TensorFlow unimportable (a None entry in sys.modules makes
# `import tensorflow` raise ImportError), as on a machine where TensorFlow is missing or broken.
_WITHOUT_TENSORFLOW = (
    "import runpy, sys\n"
    "for name in ('tensorflow', 'tensorflow_datasets'):\n"
    "    sys.modules[name] = None\n"
    "sys.argv = [sys.argv[1], *sys.argv[2:]]\n"
    "runpy.run_module(sys.argv[0], run_name='__main__', alter_sys=True)\n"
)


def _run_without_tensorflow(module: str, *args: str) -> subprocess.CompletedProcess:
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    return subprocess.run(
        [sys.executable, "-c", _WITHOUT_TENSORFLOW, module, *args],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_export_and_predict_run_where_tensorflow_cannot_be_imported(run_dir, tmp_path):
    """`python -m alexnet_jax.tools.export` and `python -m alexnet_jax.tools.predict --workdir=...`
    read a run and finish without TensorFlow: they go through rundir.py, not the training loop."""
    out = str(tmp_path / "model.npz")
    exported = _run_without_tensorflow(
        "alexnet_jax.tools.export", f"--workdir={run_dir}", f"--to={out}"
    )
    assert exported.returncode == 0, exported.stderr[-3000:]
    assert f"wrote {out}" in exported.stdout
    assert os.path.getsize(out) > 0

    image = str(tmp_path / "square.png")
    Image.fromarray(np.full((80, 100, 3), 200, np.uint8)).save(image)
    predicted = _run_without_tensorflow("alexnet_jax.tools.predict", f"--workdir={run_dir}", image)
    assert predicted.returncode == 0, predicted.stderr[-3000:]
    lines = predicted.stdout.splitlines()
    assert lines[1] == image
    assert len([line for line in lines if line.startswith("  ")]) == 4  # 4 classes, top-5


def test_captions_wrap_by_measured_width_in_a_font_with_visible_spaces():
    """A caption's words are kept in order, separated by one space, each line fits the band
    (measured in the caption font), and a space is at least 3 pixels wide (Pillow's default font
    ran "kernels of" together)."""
    text = (
        "Figure 3 layout: the 96 conv1 kernels of the one_tower net after 72 training steps on "
        "miniature data. A short run on small data: the paper's figure shows a net trained for 90 "
        "epochs on ImageNet."
    )
    font = figures.caption_font()
    lines = figures.wrap_to_width(text, font, 300)
    assert " ".join(lines) == text
    assert len(lines) > 2
    assert all(font.getlength(line) <= 300 for line in lines)
    assert font.getlength("kernels of") - font.getlength("kernelsof") >= 3


def test_figure1s_cifar4_net_gets_both_figures_and_a_one_line_export_refusal(tmp_path):
    """The Figure 1 variant in the tools: figures draws its 32 conv1 kernels and Figure 4 from its
    last hidden layer (fc64, its `feature_layer`; the figure asked for a missing "fc7" before),
    and export, whose formats are the ImageNet variants' PyTorch layouts, refuses it with one
    message saying why (it raised from convert before)."""
    from tests.conftest import write_tiny_run

    cifar4 = dict(variant="cifar4", input_size=32, resize_size=32, init_scheme="he")
    workdir = write_tiny_run(str(tmp_path), dropout_rate=0.0, random_flip=False, **cifar4)
    paths = figures.make_figures(workdir, num_queries=2, k=3, max_train_images=8)
    assert [os.path.basename(p) for p in paths] == [figures.FIGURE3, figures.FIGURE4]
    for path in paths:  # pictures, not blank
        assert read_png(path)[:40].astype(np.float32).var() > 0
    refused = r"variant 'cifar4', which no export format serves: every format \(.pth, .safetensors"
    with pytest.raises(UserError, match=refused):
        export.export_run(workdir, str(tmp_path / "model.pth"))
    assert not os.path.exists(tmp_path / "model.pth")

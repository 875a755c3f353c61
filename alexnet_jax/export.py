"""Exports a run's latest parameters for use outside this project.

    python -m alexnet_jax.export --workdir=runs/default --to=model.pth          # torch.save
    python -m alexnet_jax.export --workdir=runs/default --to=model.safetensors  # PyTorch layout
    python -m alexnet_jax.export --workdir=runs/default --to=params.npz         # Flax layout

`.pth` and `.safetensors` hold the state dict of the PyTorch model of the run's variant (layer names
and layouts in alexnet_jax/convert.py; torchvision's `models.alexnet(num_classes=N)` for the
`torchvision` variant), made by `convert.to_torch_state_dict`, so a model trained here runs in
PyTorch. `.npz` holds the Flax params under '/'-joined paths ("conv1/kernel", ...). Every format
reads back with `weights_io.load_weights` (and `predict --weights`).
"""

from __future__ import annotations

from collections.abc import Sequence

from absl import app, flags

from alexnet_jax import rundir, weights_io
from alexnet_jax.errors import reported_as_exit


def define_flags() -> None:
    """The command line's flags; defined only when run as a program, so importing stays free."""
    flags.DEFINE_string("workdir", None, "The training run to export.", required=True)
    flags.DEFINE_string(
        "to",
        None,
        f"Output file; the format follows the suffix: {weights_io.FORMATS}.",
        required=True,
    )


def export_run(workdir: str, out_path: str) -> str:
    """Writes the latest checkpoint's params of the run in `workdir` to `out_path`; returns it."""
    weights_io.file_format(out_path)  # fail on a bad suffix before restoring anything
    config, params = rundir.load_run(workdir)
    return weights_io.save_weights(params, config.variant, out_path)


def main(argv: Sequence[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    with reported_as_exit():
        path = export_run(flags.FLAGS.workdir, flags.FLAGS.to)
    print(f"wrote {path}")


if __name__ == "__main__":
    define_flags()
    app.run(main)

"""Exports a run's latest parameters for use outside this project.

    python -m alexnet_jax.tools.export --workdir=runs/default --to=model.pth          # torch.save
    python -m alexnet_jax.tools.export --workdir=runs/default --to=model.safetensors  # PyTorch
    python -m alexnet_jax.tools.export --workdir=runs/default --to=params.npz         # Flax layout

`.pth` and `.safetensors` hold the state dict of the PyTorch model of the run's variant (layer names
and layouts in alexnet_jax/interop/convert.py; torchvision's `models.alexnet(num_classes=N)` for the
`torchvision` variant), made by `convert.to_torch_state_dict`, so a model trained here runs in
PyTorch. `.npz` holds the Flax params under '/'-joined paths ("conv1/kernel", ...). Every format
reads back with `weights_io.load_weights` (and `predict --weights`).

Every file also records the run's conventions (variant, num_classes, input and resize size,
normalization, LRN convention, class names: weights_io.conventions_of), so `predict --weights`
preprocesses and runs it as the run did, and PyTorch still loads it with
`model.load_state_dict(torch.load(path, weights_only=True))`.

The file is written at exactly the path given (`--to=M.NPZ` writes M.NPZ), through a temporary
file renamed into place: a failed write (a full disk, a path under a file) is one `error:` line,
exit code 2, and leaves no partial file and any earlier file at that path intact.
"""

from __future__ import annotations

import sys

if not __package__:  # run by its path, where Python cannot import the package
    sys.exit("error: run it as a module, from the repository: python -m alexnet_jax.tools.export")

from collections.abc import Sequence

from absl import app, flags

from alexnet_jax.core import console, errors, runtime
from alexnet_jax.core.errors import UserError, reported_as_exit
from alexnet_jax.interop import convert, weights_io
from alexnet_jax.runs import rundir
from alexnet_jax.tools import load, predict
from alexnet_jax.train import config_lib


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
    """Writes the latest checkpoint's params of the run in `workdir`, with the run's conventions,
    to exactly `out_path`; returns it."""
    if not out_path.strip():  # was ": unknown weights format ''" (hostile pass 26, #33)
        raise UserError(
            "--to is empty: give the file to write, e.g. --to=model.pth; its suffix picks the "
            f"format: {', '.join(weights_io.FORMATS)} (.pt and .bin write .pth)."
        )
    rundir.refuse_run_file(out_path, "--to")  # not over a run's records, not in checkpoints/
    weights_io.check_output_path(out_path)  # a bad suffix or place fails before restoring
    config = config_lib.load_config(workdir)
    if config.variant not in convert.VARIANTS:
        raise UserError(
            f"The run in {workdir} trains variant {config.variant!r}, which no export format "
            f"serves: every format ({', '.join(weights_io.FORMATS)}) is written and read back "
            f"with the layer layouts of the ImageNet variants {list(convert.VARIANTS)} only. Use "
            "its workdir directly (predict --workdir, --mode=eval, figures)."
        )
    if config.normalization == "mean_image":
        raise UserError(
            f"The run in {workdir} subtracts its training set's mean image "
            "(normalization='mean_image'), which the weights formats here do not carry: use its "
            "workdir directly (predict --workdir, --mode=eval); its mean image is "
            f"{workdir}/{rundir.MEAN_IMAGE_FILE}."
        )
    config, params = load.load_run(workdir)
    conventions = weights_io.conventions_of(config, predict.known_class_names(config))
    return weights_io.save_weights(params, conventions, out_path)


def main(argv: Sequence[str]) -> None:
    runtime.quiet_native_logs()
    runtime.quiet_library_logs()
    with reported_as_exit():
        if len(argv) > 1:
            raise UserError(f"unexpected arguments {argv[1:]}: export takes only flags.")
        runtime.check_environment()
        runtime.start_backend()
        path = export_run(flags.FLAGS.workdir, flags.FLAGS.to)
    console.out(f"wrote {path}")


if __name__ == "__main__":
    define_flags()
    app.run(main, flags_parser=errors.parse_flags)

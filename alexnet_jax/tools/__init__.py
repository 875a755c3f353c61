"""The command-line tools that read runs (README, "Tools").

Run as `python -m alexnet_jax.tools.<tool>`, a tool answers a Ctrl-C or a SIGTERM at any moment,
its imports included, with one line and exit code 130 or 143, its temporary files removed
(errors.exit_on_ctrl_c). Python sets sys.argv[0] to "-m" while it imports the packages above
the module it runs, so this happens before the tool's slow imports, and importing a tool from
Python (a notebook, the tests) changes no signal handler.
"""

import sys

if sys.argv[:1] == ["-m"]:
    from alexnet_jax.core import errors

    errors.exit_on_ctrl_c(sigterm=True)
    import logging

    # matplotlib's own warnings about its config folder (MPLCONFIGDIR a file, HOME read-only) are
    # two lines with no bearing on the figures (drawn on canvases, nothing cached): compare,
    # sweep and figure1 printed them through Python's last-resort handler, the absl tools
    # not (hostile pass 20, #76).
    logging.getLogger("matplotlib").setLevel(logging.ERROR)
    with errors.reported_as_exit():  # before NumPy, JAX and TensorFlow are imported
        errors.check_start()
        if "alexnet_jax.tools.launch" not in getattr(sys, "orig_argv", []):  # (it stays light)
            errors.import_jax()  # a JAX_* variable JAX refuses: one line

# The modules here that are tools (`python -m alexnet_jax.tools.<tool>`); the others are their
# library (load.py).
TOOLS = ("predict", "export", "figures", "compare", "sweep", "figure1", "launch")


def refuse_to_run(module: str) -> None:
    """`python -m` of a module here that is no tool: one `error:` line that names the tools,
    exit code 2 (it would have done nothing and exited 0)."""
    from alexnet_jax.core import errors

    with errors.reported_as_exit():
        raise errors.UserError(
            f"{module} is a library module of the tools, not a tool: run `python -m "
            f"alexnet_jax.tools.<tool> --help`, <tool> one of {', '.join(TOOLS)} (README, Tools)."
        )

"""alexnet-jax: AlexNet (Krizhevsky, Sutskever, Hinton 2012) in JAX/Flax."""

import os as _os
import sys as _sys

if _os.environ.get("MPLBACKEND"):  # (only then: matplotlib's import is not free)
    # The figures are drawn on canvases of their own (no pyplot): no backend is used, but a name
    # matplotlib does not know made its import raise, a traceback from main.py, compare and
    # figures (hostile pass 17, #59). Such a value is dropped, with a word.
    try:
        import matplotlib  # noqa: F401
    except ValueError:
        _bad = _os.environ.pop("MPLBACKEND")
        for _name in [m for m in _sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
            del _sys.modules[_name]  # (half-imported: imported afresh without it)
        print(
            f"warning: MPLBACKEND={_bad!r} is not a backend matplotlib knows: ignored (the "
            "figures are drawn without one).",
            file=_sys.stderr,
        )

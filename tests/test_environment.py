"""The pinned environment: requirements.txt (exact versions, generated from requirements.in)
matches requirements.in, the installed jax, and the jaxlib range of runtime.XLA_FLAGS_JAXLIB.

Reads files and package metadata only: no JAX computation.
"""

from __future__ import annotations

import importlib.metadata
import os

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REQUIREMENTS_TXT = os.path.join(ROOT, "requirements.txt")
REQUIREMENTS_IN = os.path.join(ROOT, "requirements.in")


def _requirement_lines(path: str) -> list[str]:
    """The requirement lines of a requirements file: comments, blank lines and `--hash` options
    dropped, backslash continuations joined."""
    with open(path, encoding="utf-8") as f:
        text = f.read().replace("\\\n", " ")
    lines = []
    for raw in text.splitlines():
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        line = " ".join(t for t in line.split() if not t.startswith("--hash"))
        lines.append(line)
    return lines


def _requirements(path: str) -> list[Requirement]:
    reqs = []
    for line in _requirement_lines(path):
        assert not line.startswith("-"), f"{os.path.basename(path)}: unexpected option {line!r}"
        reqs.append(Requirement(line))
    return reqs


def _pins() -> dict[str, str]:
    """{canonical name: pinned version} from requirements.txt."""
    reqs = _requirements(REQUIREMENTS_TXT)
    return {canonicalize_name(r.name): next(iter(r.specifier)).version for r in reqs}


def test_requirements_txt_pins_exact_versions():
    """Every requirement line of requirements.txt is `name==version` (an environment marker is
    allowed, a range, wildcard or URL is not), so an install gets exactly the tested versions."""
    reqs = _requirements(REQUIREMENTS_TXT)
    assert len(reqs) > 20, "requirements.txt should list the transitive dependencies too"
    not_pinned = []
    for req in reqs:
        specs = list(req.specifier)
        exact = (
            req.url is None
            and len(specs) == 1
            and specs[0].operator == "=="
            and "*" not in specs[0].version
        )
        if not exact:
            not_pinned.append(str(req))
    assert not not_pinned, f"not exact pins in requirements.txt: {not_pinned}"
    names = [canonicalize_name(r.name) for r in reqs if r.marker is None]
    assert len(names) == len(set(names)), "a package is pinned twice in requirements.txt"


def test_pinned_jaxlib_is_in_xla_flags_range():
    """The pinned jaxlib lies in runtime.XLA_FLAGS_JAXLIB [first, end), so the XLA flags that the
    project measured are really set in the pinned environment (outside it they are skipped)."""
    from alexnet_jax.core import runtime

    pin = _pins()["jaxlib"]
    first, end = runtime.XLA_FLAGS_JAXLIB
    assert first <= runtime._version_tuple(pin) < end, (
        f"requirements.txt pins jaxlib {pin}, outside XLA_FLAGS_JAXLIB {first} to <{end}: "
        "bound jax/jaxlib in requirements.in or re-measure the flags and move the range"
    )


@pytest.mark.parametrize("name", ["jax", "jaxlib"])
def test_installed_jax_matches_pin(name):
    """The installed jax and jaxlib are the versions pinned in requirements.txt, so the tests
    (and CI) run what is pinned, not whatever else is in the environment."""
    pin = _pins()[name]
    installed = importlib.metadata.version(name)
    assert installed == pin, (
        f"{name} {installed} is installed but requirements.txt pins {pin}: "
        "pip install -r requirements.txt"
    )


def test_every_requirements_in_package_is_pinned():
    """Every package named in requirements.in is pinned in requirements.txt, at a version its
    range there allows: requirements.txt was regenerated after requirements.in last changed."""
    pins = _pins()
    missing, outside = [], []
    for req in _requirements(REQUIREMENTS_IN):
        name = canonicalize_name(req.name)
        if name not in pins:
            missing.append(req.name)
        elif not req.specifier.contains(pins[name], prereleases=True):
            outside.append(f"{req.name}=={pins[name]} (requirements.in: {req.specifier})")
    assert not missing, f"in requirements.in but not pinned in requirements.txt: {missing}"
    assert not outside, f"pins outside their requirements.in range: {outside}"

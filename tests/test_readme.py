"""The README's set-up promise: its two Quickstart blocks are exactly what CI runs, and the test
requirements pin what the runtime requirements pin, at the same versions."""

import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _read(name: str) -> str:
    with open(os.path.join(ROOT, name)) as f:
        return f.read()


def quickstart_blocks(readme: str) -> list[list[str]]:
    """The command lines of each ```bash block of the README's Quickstart section."""
    section = readme[readme.index("## Quickstart") :]
    section = section[: section.index("\n## ")]
    blocks = re.findall(r"```bash\n(.*?)```", section, re.S)
    return [[line.strip() for line in block.splitlines() if line.strip()] for block in blocks]


def ci_commands(script: str) -> list[str]:
    """The command lines of .ci/run after its preamble (`set` and `cd`), comments dropped."""
    lines = [line.strip() for line in script.splitlines()]
    lines = [line for line in lines if line and not line.startswith("#")]
    start = next(i for i, line in enumerate(lines) if line.startswith("cd ")) + 1
    return lines[start:]


def pins(requirements: str) -> dict[str, str]:
    """{package: version} of a pip requirements file's `name==version` lines."""
    found = re.findall(r"^([A-Za-z0-9_.\-\[\]]+)==([^\s;#]+)", requirements, re.M)
    return {name.lower(): version for name, version in found}


def test_ci_runs_exactly_the_readme_quickstart_blocks_then_only_the_linter():
    """Block 1 installs and trains, block 2 installs the test requirements and runs the suite;
    .ci/run runs those lines, in that order, first; after them only ruff."""
    blocks = quickstart_blocks(_read("README.md"))
    assert len(blocks) == 2, blocks
    first, second = blocks
    assert first[-1] == "python main.py"
    assert "pip install -r requirements.txt" in first
    assert second == ["pip install -r requirements-test.txt", "python -m pytest"]
    commands = ci_commands(_read(".ci/run"))
    readme_lines = first + second
    assert commands[: len(readme_lines)] == readme_lines
    assert commands[len(readme_lines) :] == ["ruff check .", "ruff format --check ."]


def test_the_checker_sees_a_changed_line():
    """The comparison above is not vacuous: a README line that .ci/run lacks is caught."""
    readme = _read("README.md").replace("python -m pytest\n", "python -m pytest -x\n", 1)
    first, second = quickstart_blocks(readme)
    assert ci_commands(_read(".ci/run"))[: len(first + second)] != first + second


def test_test_requirements_pin_every_runtime_package_at_the_same_version():
    """requirements-test.txt is requirements.txt plus the test tools: the suite runs against the
    exact versions a user installs, and PyTorch is pinned (2.13.0, the CPU wheel's version)."""
    runtime = pins(_read("requirements.txt"))
    test = pins(_read("requirements-test.txt"))
    assert len(runtime) > 50
    assert {name: test.get(name) for name in runtime} == runtime
    assert test["torch"] == "2.13.0"
    assert {"pytest", "pytest-xdist", "ruff"} <= set(test)
    assert not {"pytest", "pytest-xdist", "ruff", "torch"} & set(runtime)


def test_a_benchmark_that_needs_torch_says_so_in_one_line_when_it_is_missing(tmp_path):
    """benchmarks/lrn.py and compare_torch.py without PyTorch: one `error:` line naming the
    install, exit code 2, no traceback (torch is hidden by a module that fails to import)."""
    (tmp_path / "torch.py").write_text("raise ImportError('torch hidden by the test')\n")
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT}"}
    for script in ("benchmarks/lrn.py", "benchmarks/compare_torch.py"):
        proc = subprocess.run(
            [sys.executable, script],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert proc.returncode == 2, proc.stderr[-2000:]
        assert proc.stderr.strip().splitlines() == [
            f"error: {script} compares against PyTorch, which is not installed: "
            "pip install -r requirements-test.txt (PyTorch 2.13), then rerun."
        ]

"""The package's structure: folders by concern whose imports run one way (function-level imports
included), no import cycle among modules, and the tools that read a run import no TensorFlow."""

import ast
import os
import subprocess
import sys

PACKAGE = "alexnet_jax"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The package's folders, lowest first: a module imports only from its own folder or one listed
# before it (README, "Layout").
FOLDERS = ("core", "model", "data", "interop", "runs", "train", "tools")


def _imported_modules(path: str, modules: set[str]) -> set[str]:
    """The package's modules ("folder.module") a source file imports anywhere (top level or
    inside functions), out of `modules`."""
    with open(path) as f:
        tree = ast.parse(f.read(), path)
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from alexnet_jax.f import a, b` imports modules f.a and f.b (or names of the
            # package f); `from alexnet_jax.f.a import x` imports module f.a.
            names = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] == PACKAGE and ".".join(parts[1:3]) in modules:
                found.add(".".join(parts[1:3]))
    return found


def package_modules() -> set[str]:
    """Every module of the package as "folder.module" (top-level modules as "module")."""
    modules = set()
    for folder, _, files in os.walk(os.path.join(ROOT, PACKAGE)):
        relative = os.path.relpath(folder, os.path.join(ROOT, PACKAGE))
        for name in files:
            if name.endswith(".py") and name != "__init__.py":
                module = name.removesuffix(".py")
                modules.add(module if relative == "." else f"{relative}.{module}")
    return modules


def import_graph() -> dict[str, set[str]]:
    """{module: modules of the package it imports}, for every module of alexnet_jax/."""
    modules = package_modules()
    return {
        module: _imported_modules(os.path.join(ROOT, PACKAGE, *module.split(".")) + ".py", modules)
        & modules
        for module in modules
    }


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    """Each import of a module from a folder above its own ("a.x -> b.y"), sorted."""
    rank = {folder: i for i, folder in enumerate(FOLDERS)}
    return sorted(
        f"{module} -> {dep}"
        for module, deps in graph.items()
        for dep in deps
        if rank[dep.split(".")[0]] > rank[module.split(".")[0]]
    )


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as [a, b, ..., a], or None (depth-first search with colours)."""
    state: dict[str, str] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        stack.append(node)
        for dep in sorted(graph[node]):
            if state.get(dep) == "open":
                return [*stack[stack.index(dep) :], dep]
            if dep not in state and (cycle := visit(dep)):
                return cycle
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_find_cycle_finds_a_planted_cycle():
    """The checker itself: a cycle through a function-level import is found and named."""
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    source = "def f():\n    from alexnet_jax.train import loop\n"
    tree_path = os.path.join(ROOT, "tests", "_cycle_probe.py")
    try:
        with open(tree_path, "w") as f:
            f.write(source)
        assert _imported_modules(tree_path, {"train.loop"}) == {"train.loop"}
    finally:
        os.remove(tree_path)


def test_no_import_cycle_among_package_modules():
    """No module of alexnet_jax imports itself through others, counting imports inside
    functions (a lazy import hides a cycle from Python but not from the design)."""
    graph = import_graph()
    assert {"runs.rundir", "train.loop", "train.experiment"} <= set(graph)  # the walk saw them
    assert find_cycle(graph) is None, f"import cycle: {' -> '.join(find_cycle(graph))}"


def test_folders_import_one_way_only():
    """Every module lives in one of the folders, and no module imports from a folder above its
    own (so no two folders import each other), counting imports inside functions."""
    graph = import_graph()
    assert {module.split(".")[0] for module in graph} == set(FOLDERS)
    assert upward_imports(graph) == []


def test_the_folder_check_sees_an_upward_import_inside_a_function(tmp_path):
    """The checker itself: an import of train/ from model/, hidden in a function, is reported."""
    probe = tmp_path / "probe.py"
    probe.write_text("def f():\n    from alexnet_jax.train import sharding\n")
    deps = _imported_modules(str(probe), {"train.sharding", "model.models"})
    assert deps == {"train.sharding"}
    graph = {"model.models": deps, "train.sharding": set()}
    assert upward_imports(graph) == ["model.models -> train.sharding"]


def test_run_readers_import_neither_the_training_loop_nor_tensorflow():
    """Importing the tools that read a run (predict, export, plots, figures, compare, sweep,
    figure1) and the run directory module loads neither alexnet_jax.train.loop, the input pipeline
    nor TensorFlow."""
    code = (
        "import sys\n"
        "from alexnet_jax.runs import plots, rundir\n"
        "from alexnet_jax.tools import compare, export, figure1, figures, load, predict, sweep\n"
        "loaded = [m for m in ('tensorflow', 'tensorflow_datasets', 'alexnet_jax.train.loop',\n"
        "          'alexnet_jax.data.input_pipeline', 'alexnet_jax.data.data_sources')\n"
        "          if m in sys.modules]\n"
        "print(loaded)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == "[]"


def test_tensorflow_is_imported_on_first_use_quietly_and_kept_off_the_accelerators():
    """The data modules import TensorFlow on their first use of it (runtime.tensorflow), not at
    import: through import_tensorflow_quietly (none of TensorFlow's import-time notices reach
    stderr) and then hide_accelerators_from_tensorflow, before any TensorFlow op runs."""
    code = (
        "import sys\n"
        "from alexnet_jax.core import runtime\n"
        "from alexnet_jax.data import data_sources, input_pipeline\n"
        "from alexnet_jax.train import loop\n"
        "print('tensorflow' in sys.modules, runtime._tensorflow_hidden.is_set())\n"
        "value = int(data_sources.tf.constant(41) + 1)\n"
        "tf = sys.modules['tensorflow']\n"
        "print(value, runtime._tensorflow_hidden.is_set(), tf.config.get_visible_devices('GPU'))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.splitlines() == ["False False", "42 True []"]
    assert "oneDNN" not in proc.stderr, proc.stderr  # TensorFlow's import-time notices
    assert "absl::InitializeLog" not in proc.stderr, proc.stderr


def test_readme_layout_table_names_every_module_once():
    """The README's layout table has one row per folder, in FOLDERS' order, whose backticked
    `name.py` cells name each module of alexnet_jax/ exactly once and no other: a module added or
    removed without the README is caught."""
    import re

    with open(os.path.join(ROOT, "README.md")) as f:
        readme = f.read()
    layout = readme[readme.index("## Layout") :]
    layout = layout[: layout.index("\n## ")]
    folders, named = [], []
    for line in layout.splitlines():
        row = re.match(r"\|\s*`(\w+)/`\s*\|([^|]*)\|", line)
        if row:
            folder, cell = row.groups()
            folders.append(folder)
            named += [f"{folder}/{name}" for name in re.findall(r"`(\w+\.py)`", cell)]
    assert tuple(folders) == FOLDERS
    modules = sorted(f"{module.replace('.', '/')}.py" for module in import_graph())
    assert len(named) == len(set(named)), sorted(name for name in named if named.count(name) > 1)
    assert sorted(named) == modules


def test_every_test_named_in_the_reliability_table_exists():
    """docs/RELIABILITY.md names the test that pins each case: each name is a test function of
    the file it is listed under (a renamed or deleted test would leave a case unpinned)."""
    import re

    with open(os.path.join(ROOT, "docs", "RELIABILITY.md")) as f:
        doc = f.read()
    named = 0
    for cell in re.findall(r"\| (`tests/[^|]*)\|\s*$", doc, flags=re.MULTILINE):
        current = None
        for path, name in re.findall(r"`(tests/(?:\w+/)?\w+\.py)?::(test_\w+)`", cell):
            current = path or current
            with open(os.path.join(ROOT, current)) as f:
                assert f"def {name}(" in f.read(), f"{current}::{name}"
            named += 1
    assert named >= 30


def test_every_test_named_in_hacking_exists():
    """docs/HACKING.md names the test that exercises each research change: each is a test
    function of the file it names."""
    import re

    with open(os.path.join(ROOT, "docs", "HACKING.md")) as f:
        named = re.findall(r"(tests/(?:\w+/)?\w+\.py)::(test_\w+)", f.read())
    assert len(named) >= 4
    for path, name in named:
        with open(os.path.join(ROOT, path)) as f:
            assert f"def {name}(" in f.read(), f"{path}::{name}"


def test_no_source_file_matches_a_gitignore_pattern():
    """Every .py file of the package, the tests, configs, sweeps, benchmarks and scripts would
    be committed: none matches a .gitignore pattern (`runs/` once matched alexnet_jax/runs/, and
    a new module there was never committed)."""
    sources = [
        os.path.relpath(os.path.join(folder, name), ROOT)
        for top in ("alexnet_jax", "tests", "configs", "sweeps", "benchmarks", "scripts")
        for folder, _, names in os.walk(os.path.join(ROOT, top))
        for name in names
        if name.endswith(".py")
    ]
    assert len(sources) > 80
    proc = subprocess.run(
        ["git", "check-ignore", "--no-index", *sources],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 1, f"ignored by .gitignore: {proc.stdout.split()}"

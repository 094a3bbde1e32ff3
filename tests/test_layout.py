"""The package's layers, as the README's Layout table states them: each package imports only the
packages below it, the command lines import no other command line, and TensorFlow-free
modules stay free of it (the commands check a run directory before paying for the import)."""

import ast
import os
import subprocess
import sys

import pytest
from support import PATIENCE
from support import REPO

PACKAGE = os.path.join(REPO, "atalp_tf")

# Bottom to top; packages on one level do not import each other.
LEVELS = [
    {"choices", "errors", "pixels"},
    {"atomic", "losses", "optimizers", "plots"},
    {"attacks"},
    {"models", "datasets"},
    {"runs"},
    {"training"},
    {"evaluation", "inspection"},
    {"reproduction"},
    {"cli"},
    {"train", "evaluate", "visualize", "reproduce"},
]
LEVEL = {name: i for i, names in enumerate(LEVELS) for name in names}


def _modules():
    for folder, _, names in os.walk(PACKAGE):
        for name in sorted(names):
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                yield os.path.relpath(path, PACKAGE), path


def _imports(path):
    """The atalp_tf modules ``path`` imports anywhere (deferred imports in functions too)."""
    found = set()
    for node in ast.walk(ast.parse(open(path).read())):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("atalp_tf"):
            if node.module == "atalp_tf":
                found.update(f"atalp_tf.{alias.name}" for alias in node.names)
            else:
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("atalp_tf"))
    return found


def _package(relative):
    return relative.split(os.sep)[0].removesuffix(".py")


def test_every_module_has_a_level():
    assert {_package(r) for r, _ in _modules()} - {"__init__"} == set(LEVEL)


@pytest.mark.parametrize("relative,path", [m for m in _modules() if m[0] != "__init__.py"], ids=lambda v: v)
def test_imports_go_down_the_levels_only(relative, path):
    own = _package(relative)
    upward = sorted(
        module for module in _imports(path)
        if (other := module.split(".")[1]) != own and LEVEL[other] >= LEVEL[own]
    )
    assert not upward, f"{relative} (level {LEVEL[own]}) imports {upward}"


@pytest.mark.slow
@pytest.mark.parametrize("command", ["train", "evaluate", "visualize", "reproduce"])
def test_a_command_defines_its_flags_without_importing_tensorflow(command):
    # ``python -m`` imports the package with argv[0] == "-m": a mistyped flag must then be
    # reported without the seconds TensorFlow's import takes.
    code = (f"import sys; import atalp_tf.{command}; "
            "print(sorted(m for m in ('tensorflow', 'keras') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=PATIENCE)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "[]"


def test_run_directory_file_names_live_in_rundir_only():
    from atalp_tf.runs.rundir import RunDir

    names = {v for k, v in vars(RunDir).items() if k.isupper() and isinstance(v, str) and "." in v}
    assert {"run_config.json", "split.json", "results.json", "model.keras"} <= names
    for relative, path in _modules():
        if relative == os.path.join("runs", "rundir.py"):
            continue
        strings = {n.value for n in ast.walk(ast.parse(open(path).read()))
                   if isinstance(n, ast.Constant) and isinstance(n.value, str)}
        assert not strings & names, f"{relative} spells {strings & names}: use RunDir's names"


def _module_name(relative):
    name = "atalp_tf." + relative[:-3].replace(os.sep, ".")
    return name.removesuffix(".__init__")


def test_no_modules_import_each_other_in_a_cycle():
    modules = {_module_name(r): p for r, p in _modules()}
    graph = {}
    for name, path in modules.items():
        targets = set()
        for node in ast.walk(ast.parse(open(path).read())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("atalp_tf"):
                # ``from package import module`` names the module; ``from module import name`` the module.
                for alias in node.names:
                    full = f"{node.module}.{alias.name}"
                    targets.add(full if full in modules else node.module)
            elif isinstance(node, ast.Import):
                targets.update(a.name for a in node.names if a.name in modules)
        # A package's __init__ is imported on the way to any of its modules: not an edge of interest.
        graph[name] = {t for t in targets if t in modules and t != name and not name.startswith(t + ".")
                       and t != "atalp_tf"}
    state, cycles = {}, []

    def visit(name, path):
        state[name] = "open"
        for target in sorted(graph[name]):
            if state.get(target) == "open":
                cycles.append(path[path.index(target):] + [target])
            elif target not in state:
                visit(target, path + [target])
        state[name] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert not cycles, cycles


def test_no_file_of_the_package_is_ignored_by_git():
    # A .gitignore pattern for an output folder once matched atalp_tf/runs/ and kept two of its
    # modules out of every clone, while this checkout passed.
    if not os.path.isdir(os.path.join(REPO, ".git")):
        pytest.skip("not a git checkout")
    paths = [path for _, path in _modules()]
    result = subprocess.run(["git", "check-ignore", "--no-index", *paths], cwd=REPO, capture_output=True, text=True,
                            timeout=PATIENCE)
    assert result.stdout.strip() == "", f"ignored by git: {result.stdout.split()}"


@pytest.mark.slow
def test_the_package_names_its_public_face_and_loads_it_lazily():
    code = ("import sys, importlib, atalp_tf; loaded = sorted(m for m in ('tensorflow', 'keras') if m in sys.modules); "
            "importlib.import_module('atalp_tf.evaluate'); "
            "print(loaded, callable(atalp_tf.evaluate), callable(atalp_tf.train), "
            "all(hasattr(atalp_tf, name) for name in atalp_tf.__all__))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=PATIENCE)
    assert result.returncode == 0, result.stderr[-2000:]
    # Nothing heavy on import; the functions stay functions when the command modules load.
    assert result.stdout.split() == ["[]", "True", "True", "True"]


def test_ci_runs_the_readmes_full_test_command_and_the_readme_gives_the_fast_one():
    with open(os.path.join(REPO, "README.md"), encoding="utf-8") as f:
        commands = [line.strip() for line in f if line.startswith("    python3 -m venv .venv")]
    with open(os.path.join(REPO, ".ci", "run"), encoding="utf-8") as f:
        ci = [line.strip() for line in f if line.startswith("python3 -m venv .venv")]
    assert len(ci) == 1 and ci[0] in commands, (ci, commands)
    assert ci[0].endswith("pytest -q -n 2 tests") and "ruff check ." in ci[0]
    assert any(c.endswith('pytest -q -n 2 -m "not slow" tests') for c in commands), commands

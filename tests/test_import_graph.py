"""The package's imports run one way (read from the source with `ast`, nothing is imported):

  entry points (train.py, eval.py, cross_validation) -> trainer -> {evaluation, preparation}
  -> run -> registry -> methods -> the library (models, losses, data, metrics, ...)

Imports inside functions count too (they hide the graph, so each must be allowed below with its
reason). `CROWDJAX_IMPORT_GRAPH_ROOT=<checkout>` checks another checkout's `crowdjax/`.
"""

from __future__ import annotations

import ast
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(
    os.environ.get("CROWDJAX_IMPORT_GRAPH_ROOT", pathlib.Path(__file__).resolve().parents[1])
)

# The engine: what runs a method. A method, and the library under it, imports none of it.
ENGINE = {
    "crowdjax.benchmark_files",
    "crowdjax.cli",
    "crowdjax.checkpointing",
    "crowdjax.cross_validation",
    "crowdjax.embedded_data",
    "crowdjax.eval_writer",
    "crowdjax.evals",
    "crowdjax.evaluation",
    "crowdjax.prediction",
    "crowdjax.preemption",
    "crowdjax.paper_report",
    "crowdjax.paper_runs",
    "crowdjax.precise_bn",
    "crowdjax.preparation",
    "crowdjax.reproduce",
    "crowdjax.run",
    "crowdjax.step_cost",
    "crowdjax.trainer",
    "crowdjax.workdir",
    "crowdjax.workdir_lock",
}
LIBRARY_PACKAGES = ("crowdjax.methods", "crowdjax.models", "crowdjax.losses", "crowdjax.data")

# Module -> what it must not reach, directly or through other modules (one way down).
_ENTRY_POINTS = {
    "crowdjax.benchmark_files",
    "crowdjax.cross_validation",
    "crowdjax.prediction",
    "crowdjax.reproduce",
    "crowdjax.serve",
    "crowdjax.tta_eval",
}
NEVER_REACHES = {
    "crowdjax.trainer": _ENTRY_POINTS,
    "crowdjax.evaluation": {"crowdjax.trainer", "crowdjax.preparation", *_ENTRY_POINTS},
    "crowdjax.preparation": {"crowdjax.trainer", "crowdjax.evaluation", *_ENTRY_POINTS},
    "crowdjax.checkpointing": {
        "crowdjax.trainer",
        "crowdjax.evaluation",
        "crowdjax.preparation",
        "crowdjax.cross_validation",
    },
    "crowdjax.run": ENGINE - {"crowdjax.run"},
    "crowdjax.registry": ENGINE,
}

# (importing module, imported module) -> why the import sits inside a function: only to break a
# real cycle with a heavy optional dependency. Empty: every crowdjax import is at module level.
FUNCTION_LEVEL_ALLOWED: dict[tuple[str, str], str] = {}


def _module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, pathlib.Path]:
    return {_module_name(p): p for p in sorted((ROOT / "crowdjax").rglob("*.py"))}


MODULES = _modules()


def _targets(node: ast.AST, module: str) -> list[str]:
    """The crowdjax modules an import statement names."""
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    else:
        base = node.module or ""
        if node.level:  # Relative: from the importing module's package.
            package = module.split(".")
            is_package = MODULES[module].name == "__init__.py"
            package = package[: len(package) - node.level + (1 if is_package else 0)]
            base = ".".join([*package, base] if base else package)
        # `from package import name`: the submodule `name` if there is one, else the package.
        names = [
            f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base
            for alias in node.names
        ]
    # A submodule's parent packages run first, but only to define the package: an import is
    # an edge to the module it names (a package's own imports are its __init__'s edges).
    return [n for n in names if n.startswith("crowdjax.") and n in MODULES and n != module]


def _imports(module: str) -> list[tuple[str, bool, int]]:
    """(imported module, inside a function, line) of every crowdjax import of `module`."""
    tree = ast.parse(MODULES[module].read_text(), filename=str(MODULES[module]))
    found = []

    def visit(node: ast.AST, in_function: bool) -> None:
        if isinstance(node, ast.Import | ast.ImportFrom):
            found.extend((t, in_function, node.lineno) for t in _targets(node, module))
        inside = in_function or isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        for child in ast.iter_child_nodes(node):
            visit(child, inside)

    visit(tree, False)
    return found


IMPORTS = {module: _imports(module) for module in MODULES}
GRAPH = {module: {t for t, _, _ in found} for module, found in IMPORTS.items()}


def _reachable(start: str) -> dict[str, list[str]]:
    """Every module `start` reaches, with one import path to it."""
    paths, todo = {start: [start]}, [start]
    while todo:
        current = todo.pop()
        for nxt in sorted(GRAPH[current]):
            if nxt not in paths:
                paths[nxt] = [*paths[current], nxt]
                todo.append(nxt)
    return paths


def test_the_graph_is_read():
    assert len(MODULES) > 50, ROOT
    assert "crowdjax.run" in GRAPH["crowdjax.trainer"]
    assert "crowdjax.registry" in GRAPH["crowdjax.run"]


def test_there_is_no_cycle():
    cycles = []
    for module in MODULES:
        for nxt in GRAPH[module]:
            back = _reachable(nxt)
            if module in back:
                cycles.append(" -> ".join([module, *back[module]]))
    assert not cycles, "import cycles:\n" + "\n".join(sorted(set(cycles)))


@pytest.mark.parametrize("module", sorted(NEVER_REACHES))
def test_an_engine_module_never_imports_one_above_it(module):
    reached = _reachable(module)
    wrong = [" -> ".join(reached[m]) for m in sorted(NEVER_REACHES[module]) if m in reached]
    assert not wrong, f"{module} reaches modules above it:\n" + "\n".join(wrong)


def test_methods_and_the_library_never_import_the_engine():
    wrong = []
    for module in MODULES:
        if module.startswith(LIBRARY_PACKAGES) or module == "crowdjax.registry":
            reached = _reachable(module)
            wrong += [" -> ".join(reached[m]) for m in sorted(ENGINE) if m in reached]
    assert not wrong, "imports of the engine from below it:\n" + "\n".join(wrong)


def test_crowdjax_imports_inside_functions_are_allowed_with_a_reason():
    hidden = [
        f"{module}:{line} imports {target}"
        for module, found in IMPORTS.items()
        for target, in_function, line in found
        if in_function and (module, target) not in FUNCTION_LEVEL_ALLOWED
    ]
    assert not hidden, "crowdjax imports inside functions:\n" + "\n".join(hidden)
    assert all(reason.strip() for reason in FUNCTION_LEVEL_ALLOWED.values())


def test_importing_the_library_defines_no_command_line_flags():
    """Commands inside the package (`python -m crowdjax.serve`, ...) define their absl flags
    when run, so a notebook or a test can import any two of them (two modules defining
    --config at import collide)."""
    script = (
        "import importlib, pkgutil, crowdjax\n"
        "from absl import flags\n"
        "for m in pkgutil.walk_packages(crowdjax.__path__, 'crowdjax.'):\n"
        "    importlib.import_module(m.name)\n"
        "print(sorted(k for k in flags.FLAGS.flags_by_module_dict() if 'crowdjax' in k))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip() == "[]", out.stdout

"""Every notebook under notebooks/ runs end to end, so none goes stale.

Each notebook is executed with nbclient in a fresh kernel of *this* interpreter (a kernelspec
named ``python3`` written to a temporary JUPYTER_PATH, which takes precedence over any user-level
``python3`` spec pointing at another Python), with the repository root as working directory.
Matplotlib uses the inline backend: non-interactive, and it renders every figure, so errors that
only appear when a figure is drawn fail the test too. A failing cell fails the test with its
source and traceback.
"""

from __future__ import annotations

import json
import pathlib
import re
import sys

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

REPO = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))
CELL_TIMEOUT_S = 300
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


@pytest.fixture
def python3_kernel(tmp_path, monkeypatch):
    """A ``python3`` kernelspec that runs this interpreter with a non-interactive backend."""
    spec_dir = tmp_path / "kernels" / "python3"
    spec_dir.mkdir(parents=True)
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (crowdjax tests)",
        "language": "python",
        "env": {"MPLBACKEND": "module://matplotlib_inline.backend_inline"},
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path))
    return "python3"


def test_notebooks_exist():
    assert NOTEBOOKS, f"no notebooks found under {REPO / 'notebooks'}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_committed_without_outputs(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    dirty = [
        i
        for i, cell in enumerate(nb.cells)
        if cell.cell_type == "code" and (cell.outputs or cell.execution_count is not None)
    ]
    assert not dirty, f"{path.name}: cells {dirty} carry outputs; clear them before committing"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs(path, python3_kernel):
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb,
        timeout=CELL_TIMEOUT_S,
        kernel_name=python3_kernel,
        resources={"metadata": {"path": str(REPO)}},
    )
    try:
        client.execute()
    except CellExecutionError as err:
        pytest.fail(f"{path.relative_to(REPO)}: a cell failed\n{_ANSI.sub('', str(err))}")

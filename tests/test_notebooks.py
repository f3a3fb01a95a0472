"""Every notebook in notebooks/ runs top to bottom in a fresh kernel, offline, in under two minutes (the lesson,
02_teach, in tests/test_teach.py, which also checks what it says)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb"))
BUDGET = 120.0  # seconds per notebook on 2 cores


def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Point every proxy variable at a closed port: a kernel started now inherits them, so any download fails at
    once instead of hanging."""
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")


def test_the_three_notebooks_are_there_without_outputs():
    import nbformat

    assert [p.name for p in NOTEBOOKS] == ["01_explore.ipynb", "02_teach.ipynb", "03_training.ipynb"]
    for path in NOTEBOOKS:
        notebook = nbformat.read(path, as_version=4)
        for cell in notebook.cells:
            assert cell.cell_type != "code" or (not cell.outputs and cell.execution_count is None), path.name


@pytest.mark.slow
@pytest.mark.parametrize("path", [p for p in NOTEBOOKS if p.name != "02_teach.ipynb"], ids=lambda p: p.name)
def test_notebook_runs_offline(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import nbclient
    import nbformat

    offline(monkeypatch)
    notebook = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        notebook, timeout=BUDGET, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
    )
    start = time.perf_counter()
    client.execute()  # raises CellExecutionError on the first failing cell
    elapsed = time.perf_counter() - start
    print(f"[timing] {path.name}: {elapsed:.1f} s")
    assert elapsed < BUDGET, f"{path.name} took {elapsed:.0f} s"
    errors = [o for c in notebook.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors

"""The example notebooks: generated from notebooks/make_notebooks.py, stored without outputs, and each one runs top
to bottom (nbclient, the venv's python3 kernel) on the bundled sample and the lab traces."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest

NB_DIR = Path(__file__).resolve().parent.parent / "notebooks"
NOTEBOOKS = sorted(p.name for p in NB_DIR.glob("*.ipynb"))
#: Notebooks that read the shared lab data (the first uses only the bundled sample).
NEEDS_SHARED = {"02_kmemleak_diagnosis.ipynb", "03_strict_vs_lazy.ipynb"}


def test_at_least_three_notebooks_generated_and_stripped() -> None:
    assert len(NOTEBOOKS) >= 3, NOTEBOOKS
    res = subprocess.run([sys.executable, str(NB_DIR / "make_notebooks.py"), "--check"], capture_output=True,
                         text=True)
    assert res.returncode == 0, f"notebooks differ from make_notebooks.py: {res.stdout}{res.stderr}"
    for name in NOTEBOOKS:
        nb = nbformat.read(NB_DIR / name, as_version=4)
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert not cell.outputs and cell.execution_count is None, f"{name}: outputs committed"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs(name: str, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    from nbclient import NotebookClient

    if name in NEEDS_SHARED:
        shared = request.getfixturevalue("shared_data")
        monkeypatch.setenv("IOVATRACE_SHARED_DATA", str(shared))
    nb = nbformat.read(NB_DIR / name, as_version=4)
    start = time.monotonic()
    # Any cell error raises CellExecutionError naming the cell and the traceback.
    NotebookClient(nb, timeout=240, kernel_name="python3", resources={"metadata": {"path": str(NB_DIR)}}).execute()
    elapsed = time.monotonic() - start
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    images = [o for o in outputs if "data" in o and "image/png" in o.data]
    assert images, f"{name}: no figure was displayed"
    assert elapsed < 180, f"{name}: {elapsed:.0f} s"

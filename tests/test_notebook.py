"""examples/colab.ipynb runs top to bottom on the CPU with tiny settings, so it cannot rot."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from portanet import data as datasets

NOTEBOOK = Path(__file__).resolve().parents[1] / "examples" / "colab.ipynb"
TINY = {"epochs": 2, "train_limit": 1000, "hidden": [32]}


def test_the_colab_notebook_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    try:
        datasets.load_mnist(progress=False)
    except datasets.DatasetUnavailableError as exc:
        pytest.skip(f"MNIST is not available here: {str(exc).splitlines()[0]}")
    root = str(NOTEBOOK.parents[1])
    monkeypatch.setenv("PORTANET_NOTEBOOK", json.dumps(TINY))
    monkeypatch.setenv("PYTHONPATH", root + ":" + __import__("os").environ.get("PYTHONPATH", ""))
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbclient.NotebookClient(notebook, timeout=120, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    text = "\n".join(out.get("text", "") for cell in notebook.cells
                     for out in cell.get("outputs", []))
    assert "portanet check: all OK" in text
    assert "numpy on cpu: test accuracy" in text
    images = [out for cell in notebook.cells for out in cell.get("outputs", [])
              if "image/png" in out.get("data", {})]
    assert len(images) == 1  # the learning curves, inline
    assert "no 'cnn-fast' preset yet" in text or "cnn-" in text

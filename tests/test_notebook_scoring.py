"""notebooks/scoring.ipynb runs end to end offline (fake judge server, no key, no ../shared)."""

import sys
from pathlib import Path

import pytest
from skips import need

nbformat = need("nbformat", "make setup")
nbclient = need("nbclient", "make setup")

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "scoring.ipynb"


def _kernel_python_ok() -> None:
    """The 'python3' kernel must run this environment's interpreter (so the package imports)."""
    from jupyter_client.kernelspec import KernelSpecManager

    spec = KernelSpecManager().get_kernel_spec("python3")
    exe = spec.argv[0]
    # jupyter_client replaces a bare 'python' with sys.executable when it starts the kernel
    assert exe in ("python", "python3", sys.executable) or Path(exe).resolve() == Path(sys.executable).resolve(), (
        f"kernel 'python3' runs {exe}, not {sys.executable}; install a kernel spec into this environment: "
        f"{sys.executable} -m ipykernel install --sys-prefix --name python3")


def test_scoring_notebook_runs_offline(tmp_path):
    _kernel_python_ok()
    nb = nbformat.read(NOTEBOOK, as_version=4)
    assert "../shared" not in NOTEBOOK.read_text() and "OPENAI_API_KEY=sk-" in nb.cells[0].source
    client = nbclient.NotebookClient(nb, kernel_name="python3", timeout=300,
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    outputs = "\n".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "requests sent: 8" in outputs and "requests sent after a rerun: 8" in outputs
    assert "ORACLE best-of-N (upper bound)" in outputs
    assert "decode_" not in outputs.split("--- first request")[1].split("--- estimate")[0]   # anonymised prompt
    images = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if "image/png" in o.get("data", {})]
    assert len(images) >= 2

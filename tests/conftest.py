import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
sys.path.insert(0, str(Path(__file__).parent))   # tests' own helpers (spec_oracle, tiny_models)


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models run several times faster on one thread (thread hand-offs dominate), and the
    machine's cores are shared; the thread count comes back after the module."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)

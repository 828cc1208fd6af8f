"""Every command lists and helps whatever extras are installed, and one that needs a missing
extra says so in one line (naming the pip extra), exit code 2, before any work.

The CLI runs in subprocesses where the packages of the missing extras cannot be imported
(:mod:`import_blocker`): the core install alone, then each extra alone.
"""

from __future__ import annotations

import configparser
import json
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from attn_transition.commands import command_names
from attn_transition.extras import EXTRAS, MissingExtraError, missing_extra_message, require
from import_blocker import ROOT, _DIST_OF, blocked_for, cli_calls

COMBINATIONS = [(), ("models",), ("eval",), ("contrast",), ("lm-eval",), ("notebooks",)]


def _setup_extras() -> dict[str, set[str]]:
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    out = {}
    for extra, text in cfg["options.extras_require"].items():
        lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
        if extra != "dev":
            out[extra] = {Requirement(line).name for line in lines}
    return out


def test_extras_table_matches_setup_cfg():
    import_of = {dist: name for name, dist in _DIST_OF.items()}
    setup = {extra: {import_of.get(d.replace("_", "-"), d.replace("-", "_")) for d in dists}
             for extra, dists in _setup_extras().items()}
    assert setup == {extra: set(modules) for extra, modules in EXTRAS.items()}


def test_require_is_one_line_naming_the_extra():
    require("nothing", "json")                                      # importable: no error
    with pytest.raises(MissingExtraError) as info:
        require("attn-transition judge", "no_such_package_xyz", extra="eval", alternative="or not")
    text = str(info.value)
    assert "\n" not in text and 'pip install "attn-transition[eval]"' in text
    assert text.startswith("attn-transition judge needs no_such_package_xyz, which is not installed")
    assert text.endswith("; or not")


def test_an_import_error_naming_a_package_of_an_extra_is_worded_as_its_extra():
    assert 'pip install "attn-transition[models]"' in missing_extra_message(
        ImportError("Loading a GGUF checkpoint in PyTorch, requires both PyTorch and GGUF>=0.10.0"))
    assert 'attn-transition[contrast]' in missing_extra_message(ModuleNotFoundError("x", name="peft"))
    assert missing_extra_message(ModuleNotFoundError("x", name="somethingelse")) is None


@pytest.mark.parametrize("extras", COMBINATIONS, ids=lambda e: "+".join(e) or "core")
def test_every_command_helps_with_only_these_extras(extras):
    names = command_names()
    assert {"bench", "clues", "convert", "demo", "generate", "judge", "lm-eval", "report"} <= set(names)
    calls = [["--help"]] + [[name, "--help"] for name in names] + [["clues", step, "--help"] for step in (
        "biographies", "profile", "contrast", "augment", "finetune", "qa", "run")]
    results = cli_calls(calls, blocked_for(extras))
    top = results[0]
    assert top["code"] == 0, top
    for name in names:
        assert f"    {name} " in top["out"], (name, top["out"])
    for argv, res in zip(calls[1:], results[1:]):
        assert res["code"] == 0, (argv, res)
        assert "Traceback" not in res["err"], (argv, res["err"])
        assert "usage:" in res["out"] or "attn-transition lm-eval" in res["out"], (argv, res["out"][:300])


def _generation_file(path: Path) -> Path:
    path.write_text(json.dumps([{"document": "d", "summary": "s", "id": "1", "decode_or": "a",
                                 "decode_classic": "b"}]))
    return path


def _assert_one_line(res: dict, extra: str) -> None:
    assert res["code"] == 2, res
    lines = res["err"].strip().splitlines()
    assert len(lines) == 1, res["err"]
    assert f'pip install "attn-transition[{extra}]"' in lines[0], lines[0]


def test_first_use_of_a_missing_extra_stops_before_any_work(tmp_path):
    cache = tmp_path / "empty-cache"
    texts = tmp_path / "texts.csv"
    texts.write_text("text\nAda Lovelace was born in London.\n")
    gen = _generation_file(tmp_path / "gen.json")
    judged = tmp_path / "judged.json"               # a seed judged file: report reads it, then needs ROUGE
    judged.write_text(json.dumps([{**json.loads(gen.read_text())[0], "eval_scores": [50, 60],
                                   "gpt4_eva": "'decode_or': 50\n'decode_classic': 60"}]))
    calls = {
        "lm-eval": (["lm-eval", "--model", "attn-transition", "--tasks", "niah_single_1"], "lm-eval"),
        "ruler": (["bench", "--suite", "ruler", "--output-dir", str(tmp_path / "ruler")], "lm-eval"),
        "bench": (["bench", "--output-dir", str(tmp_path / "bench")], "eval"),
        "judge": (["judge", str(gen)], "eval"),
        "clues": (["clues", "--out", str(tmp_path / "clues")], "contrast"),
        "finetune": (["clues", "finetune", str(texts), "-o", str(tmp_path / "ft")], "contrast"),
        "qa": (["clues", "qa", str(texts), "--adapter", str(tmp_path), "-o", str(tmp_path / "qa")], "contrast"),
        "profile": (["clues", "profile", str(texts), "-o", str(tmp_path / "prof.jsonl")], "models"),
        "generate": (["generate", str(texts), "-o", str(tmp_path / "gen-out.json")], "models"),
        "report-rouge": (["report", str(judged)], "eval"),
    }
    before = sorted(p.name for p in tmp_path.iterdir())
    results = cli_calls([argv for argv, _ in calls.values()], blocked_for(()),
                        env={"ATTN_TRANSITION_CACHE": str(cache), "OPENAI_API_KEY": "placeholder"})
    for (name, (_, extra)), res in zip(calls.items(), results):
        _assert_one_line(res, extra)
    assert sorted(p.name for p in tmp_path.iterdir()) == before        # nothing written, no folder made
    assert not cache.exists()                                            # no model converted


def test_embedded_models_need_gguf_only_until_converted(tmp_path):
    """With the models extra missing, a converted model still loads: the check is about converting."""
    cache = tmp_path / "cache"
    (cache / "smollm2-135m").mkdir(parents=True)
    (cache / "smollm2-135m" / "config.json").write_text("{}")
    code = (
        "from attn_transition.evaluation.runtime.requirements import require_embedded\n"
        f"require_embedded(['smollm2-135m'], {str(cache)!r})\n"
        "try:\n"
        f"    require_embedded(['gemma3-270m', 'org/model'], {str(cache)!r})\n"
        "except Exception as exc:\n"
        "    print('ERR', exc)\n")
    from import_blocker import run_blocked

    proc = run_blocked(code, blocked_for(()))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("ERR the embedded model gemma3-270m") and "attn-transition[models]" in proc.stdout

"""Every subcommand against a corpus of bad inputs built here: one line naming what is wrong,
exit code 2, no traceback, and every file that existed before is byte-identical afterwards."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from skips import need

from attn_transition.cli import main

from test_clues_support import char_tokenizer, save_tiny

GOOD = [{"document": "a short text about cats.", "summary": "cats.", "id": "1", "decode_or": "cats"},
        {"document": "another text about dogs.", "summary": "dogs.", "id": "2", "decode_or": "dogs"}]

# name -> the bytes of a bad input file (None: no file at all; "dir": a directory of that name)
BAD_FILES: dict[str, object] = {
    "missing": None,
    "directory": "dir",
    "utf16": b"\xff\xfe[\x00]\x00",
    "binary": b"\x7fELF\x02\x01\x01\x00\x00\x00" * 20,
    "latin1": '[{"document": "café", "summary": "s", "id": "1"}]'.encode("latin-1"),
    "zero-bytes": b"",
    "truncated": json.dumps(GOOD).encode()[:-20],
    "top-level-object": b'{"document": "a", "summary": "b", "id": "1"}',
    "huge-single-line": b"[" + b'"x",' * 500_000 + b'"x"',
}
BAD_FILE_WORDS = {"missing": "does not exist", "directory": "is a directory", "utf16": "UTF-16",
                  "binary": "NUL bytes", "latin1": "not UTF-8", "zero-bytes": "is empty",
                  "truncated": "not valid JSON", "top-level-object": "JSON list",
                  "huge-single-line": "not valid JSON"}


def _bad_records() -> dict[str, tuple[list, str]]:
    """name -> (records, a fragment of the expected message)."""
    def with_(i: int, **fields):
        out = [dict(r) for r in GOOD]
        out[i].update(fields)
        return out

    return {
        "null-document": (with_(1, document=None), "record 1 (id '2') field 'document' must be a string, got null"),
        "number-summary": (with_(0, summary=3), "field 'summary' must be a string, got int"),
        "list-output": (with_(0, decode_or=["a"]), "field 'decode_or' must be a string, got list"),
        "duplicate-ids": (with_(1, id="1"), "records 0 and 1 have the same id '1'"),
        "mixed-id-types": (with_(1, id=2), "use one type for all ids"),
        "no-summary-field": ([{"document": "d", "id": "1", "decode_or": "x"}], "has no 'summary' field"),
    }


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _write(path: Path, content: object) -> Path:
    if content == "dir":
        path.mkdir()
    elif content is not None:
        path.write_bytes(content)  # type: ignore[arg-type]
    return path


def _refused(capsys, root: Path, argv: list[str], fragment: str = "") -> str:
    """Run the CLI; assert exit 2, one stderr line, no traceback, nothing on disk changed."""
    before = _snapshot(root)
    capsys.readouterr()
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert code == 2, (argv, code, err)
    lines = [line for line in err.split("\n") if line and "\r" not in line]   # transformers' loading bars aside
    assert len(lines) == 1 and lines[0].startswith(f"attn-transition {argv[0]}: error: ") and "Traceback" not in err, err
    assert fragment in err, (fragment, err)
    assert _snapshot(root) == before, f"{argv} changed files"
    return err


@pytest.fixture
def judge_env(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "dummy")       # never used: every case fails before a request


# ----------------------------------------------------------------------------- unreadable files

@pytest.mark.parametrize("name", list(BAD_FILES))
@pytest.mark.parametrize("command", ["judge-dry-run", "judge", "report"])
def test_judge_and_report_refuse_every_unreadable_file(tmp_path, capsys, judge_env, name, command):
    path = _write(tmp_path / f"{name}.json", BAD_FILES[name])
    argv = {"judge-dry-run": ["judge", path, "--dry-run"],
            "judge": ["judge", path, "--base-url", "http://127.0.0.1:9/v1", "--max-retries", "0"],
            "report": ["report", path, "--no-rouge"]}[command]
    err = _refused(capsys, tmp_path, argv, BAD_FILE_WORDS[name])
    assert path.name in err


@pytest.mark.parametrize("name", [n for n in BAD_FILES if n != "top-level-object"])
def test_generate_refuses_every_unreadable_data_file(tmp_path, capsys, name):
    path = _write(tmp_path / f"{name}.jsonl", BAD_FILES[name])
    words = {**BAD_FILE_WORDS, "truncated": "line 1 is not valid JSON"}
    err = _refused(capsys, tmp_path, ["generate", path, "-o", tmp_path / "out.json", "--model", tmp_path / "none"],
                   words[name] if name != "missing" else "does not exist")
    assert path.name in err


@pytest.mark.parametrize("name", ["missing", "directory", "utf16", "binary", "latin1", "zero-bytes", "truncated"])
def test_clues_steps_refuse_every_unreadable_file(tmp_path, capsys, name):
    path = _write(tmp_path / f"{name}.jsonl", BAD_FILES[name])
    fragment = BAD_FILE_WORDS[name] if name != "truncated" else "is not valid JSON"
    _refused(capsys, tmp_path, ["clues", "augment", path, "-o", tmp_path / "aug.jsonl"], fragment)
    _refused(capsys, tmp_path, ["clues", "contrast", path, path, "-o", tmp_path / "c.jsonl"], fragment)
    _refused(capsys, tmp_path, ["clues", "profile", path, "-o", tmp_path / "p.jsonl", "--model", tmp_path / "none"],
             fragment)


def test_a_bom_and_windows_line_ends_are_fine(tmp_path, capsys):
    path = tmp_path / "bom.json"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(GOOD, indent=1).replace("\n", "\r\n").encode())
    assert main(["judge", str(path), "--dry-run"]) == 0
    assert "2 documents" in capsys.readouterr().out


# ----------------------------------------------------------------------------- wrong records

@pytest.mark.parametrize("name", list(_bad_records()))
@pytest.mark.parametrize("command", ["judge", "report"])
def test_records_with_wrong_fields_are_refused_naming_record_and_field(tmp_path, capsys, judge_env, name, command):
    records, fragment = _bad_records()[name]
    if command == "report":                              # a judged file in the seed's format
        records = [{**r, "gpt4_eva": "decode_or: 50", "eval_scores": [50, 50]} for r in records]
    path = tmp_path / "gen.json"
    path.write_text(json.dumps(records), encoding="utf-8")
    argv = ["judge", path, "--dry-run"] if command == "judge" else ["report", path, "--no-rouge"]
    _refused(capsys, tmp_path, argv, fragment)


@pytest.mark.parametrize("records, fragment", [
    ([{**GOOD[0], "document": None}], "has no 'document' field"),
    ([{**GOOD[0], "document": "   "}], "empty or non-text 'document'"),
    ([{**GOOD[0], "summary": ["x"]}], "field 'summary' must be text, got list"),
    ([GOOD[0], {**GOOD[1], "id": "1"}], "repeats id '1'"),
])
def test_generate_refuses_wrong_records_before_loading_a_model(tmp_path, capsys, records, fragment):
    path = tmp_path / "data.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    _refused(capsys, tmp_path, ["generate", path, "-o", tmp_path / "out.json", "--model", tmp_path / "none"], fragment)


def test_a_nan_score_in_a_judged_file_is_refused_with_its_line(tmp_path, capsys):
    path = tmp_path / "judged.json"
    path.write_text('[\n{"document": "d", "summary": "s", "id": "1", "decode_or": "x",\n'
                    '"gpt4_eva": "decode_or: 50", "eval_scores": [NaN]}\n]', encoding="utf-8")
    _refused(capsys, tmp_path, ["report", path, "--no-rouge"], "line 3: NaN is not valid JSON")


# ----------------------------------------------------------------------------- colliding paths

def test_outputs_never_overwrite_the_input_or_the_cache(tmp_path, capsys, judge_env):
    gen = tmp_path / "gen.json"
    gen.write_text(json.dumps(GOOD), encoding="utf-8")
    cache = tmp_path / "gen.judge-cache.jsonl"
    cache.write_text(json.dumps({"key": "k", "content": "{}"}) + "\n", encoding="utf-8")
    base = ["judge", gen, "--base-url", "http://127.0.0.1:9/v1"]
    _refused(capsys, tmp_path, base + ["-o", gen], "-o/--output")
    _refused(capsys, tmp_path, base + ["--cache", gen], "--cache")
    _refused(capsys, tmp_path, base + ["-o", cache], "same file as the scores")
    _refused(capsys, tmp_path, base + ["-o", tmp_path / "sub" / ".." / "gen.json"], "same file as the input")
    _refused(capsys, tmp_path, ["report", gen, "--json", gen, "--no-rouge"], "--json")
    _refused(capsys, tmp_path, ["generate", gen, "-o", gen, "--overwrite", "--model", tmp_path / "none"],
             "same file as the input data")
    src = tmp_path / "texts.jsonl"
    src.write_text(json.dumps({"text": "a b c"}) + "\n", encoding="utf-8")
    _refused(capsys, tmp_path, ["clues", "profile", src, "-o", src, "--resume", "--model", tmp_path / "none"],
             "--output")


# ----------------------------------------------------------------------------- the model side

@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return save_tiny(tmp_path_factory.mktemp("tiny"), char_tokenizer(), layers=2)


def _data(tmp_path: Path, document: str = "a short text.") -> Path:
    path = tmp_path / "data.jsonl"
    path.write_text(json.dumps({"document": document, "summary": "s", "id": "1"}) + "\n", encoding="utf-8")
    return path


@pytest.mark.parametrize("command", ["generate", "bench"])
def test_a_model_path_that_is_not_a_model_and_a_missing_device(tmp_path, capsys, tiny, command):
    not_model = tmp_path / "not-a-model"
    not_model.mkdir()
    (not_model / "config.json").write_text('{"model_type": "no-such-type"}', encoding="utf-8")
    head = ["generate", _data(tmp_path), "-o", tmp_path / "out.json"] if command == "generate" else \
        ["bench", "--tasks", "kv", "--lengths", "64", "--output-dir", tmp_path / "run"]
    _refused(capsys, tmp_path, head + ["--model", not_model], "could not load model")
    _refused(capsys, tmp_path, head + ["--model", tmp_path / "nowhere"], "does not exist")
    import torch

    if not torch.cuda.is_available():
        _refused(capsys, tmp_path, head + ["--model", tiny, "--device", "cuda"], "no CUDA device")
    _refused(capsys, tmp_path, head + ["--model", tiny, "--device", "gpu0"], "is not a torch device")


def test_generate_refuses_a_prompt_longer_than_the_context(tmp_path, capsys, tiny):
    long = " ".join(["word"] * 200)                      # char tokenizer: ~800 tokens > 512 positions
    _refused(capsys, tmp_path, ["generate", _data(tmp_path, long), "-o", tmp_path / "out.json", "--model", tiny,
                                "--template", "base", "--no-progress"], "exceed the model's context of 512 tokens")


def test_bench_refuses_lengths_past_the_context(tmp_path, capsys, tiny):
    _refused(capsys, tmp_path, ["bench", "--model", tiny, "--tasks", "kv", "--lengths", "600",
                                "--output-dir", tmp_path / "run"], "exceed the model's context of 512 tokens")


def test_a_tokenizer_that_cannot_pad_is_refused(tmp_path, capsys):
    folder = tmp_path / "nopad"
    save_tiny(folder, char_tokenizer(), layers=2)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    for key in ("pad_token", "eos_token"):
        config.pop(key, None)
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    special = folder / "special_tokens_map.json"
    if special.exists():
        special.write_text("{}")
    _refused(capsys, tmp_path, ["generate", _data(tmp_path), "-o", tmp_path / "out.json", "--model", folder,
                                "--template", "base"], "neither a pad nor an end-of-text token")


def test_unknown_embedded_model_to_convert(tmp_path, capsys):
    _refused(capsys, tmp_path, ["convert", "smollm3", "--cache-dir", tmp_path / "cache"], "unknown embedded model")


def test_demo_and_templates_read_their_files_through_the_one_reader(tmp_path, capsys, tiny):
    bad = _write(tmp_path / "prompt.txt", BAD_FILES["utf16"])
    _refused(capsys, tmp_path, ["demo", "--prompt-file", bad, "--model", tiny], "UTF-16")
    template = _write(tmp_path / "template.json", b'{"name": "t", "version": 1, "kind": "base", "template": ')
    _refused(capsys, tmp_path, ["generate", _data(tmp_path), "-o", tmp_path / "out.json", "--model", tiny,
                                "--template", template], "prompt template: ")


def test_lm_eval_with_a_model_path_that_does_not_exist(tmp_path, capsys):
    need("lm_eval", "make setup")
    argv = ["lm-eval", "--model", "attn-transition", "--model_args", f"pretrained={tmp_path / 'nowhere'}",
            "--tasks", "niah_single_1", "--device", "cpu"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("attn-transition lm-eval: error: model folder") and "does not exist" in err[-1], err[-3:]

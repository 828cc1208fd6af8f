"""The runtime layer: one reader for input files, one output-path rule, one log rule, processes."""

from __future__ import annotations

import json
import os

import pytest

from attn_transition.errors import UsageError
from attn_transition.evaluation.runtime import dist, files, log


# ----------------------------------------------------------------------------- input files

@pytest.mark.parametrize("content, fragment", [
    (None, "does not exist"),
    ("dir", "is a directory"),
    (b"", "is empty"),
    (b" \n\n", "is empty"),
    (b"\xff\xfe[\x00]\x00", "is UTF-16 text; save it as UTF-8"),
    (b"[1, 2]\x00\x00", "NUL bytes"),
    (b'[{"a": "caf\xe9"}]', "is not UTF-8 text (byte 0xe9 on line 1)"),
    (b'[\n{"a": 1},\n{"a": 2\n]', "is not valid JSON (line 4"),
    (b'[\n{"score": NaN}\n]', "line 2: NaN is not valid JSON"),
    (b'{"a": 1}', "holds dict at the top level; expected a JSON list"),
    (b"null", "holds null at the top level"),
])
def test_every_bad_input_file_is_one_line_naming_the_file(tmp_path, content, fragment):
    path = tmp_path / "in.json"
    if content == "dir":
        path.mkdir()
    elif content is not None:
        path.write_bytes(content)
    with pytest.raises(UsageError) as info:
        files.read_json(path, expect=list)
    message = str(info.value)
    assert fragment in message and str(path) in message and "\n" not in message, message


def test_a_bom_and_windows_line_ends_are_read_as_plain_utf8(tmp_path):
    path = tmp_path / "in.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"id": 1, "t": "\xe2\x80\x99"}\r\n\r\n{"id": 2}\r\n')
    assert files.read_jsonl(path) == [(1, {"id": 1, "t": "\u2019"}), (3, {"id": 2})]


def test_jsonl_errors_name_the_line(tmp_path):
    path = tmp_path / "in.jsonl"
    path.write_text('{"id": 1}\n{"id": 2\n', encoding="utf-8")
    with pytest.raises(UsageError, match=r"in.jsonl: line 2 is not valid JSON \(Expecting"):
        files.read_jsonl(path)
    path.write_text('{"id": 1}\n\n{"x": Infinity}\n', encoding="utf-8")
    with pytest.raises(UsageError, match="line 3: Infinity is not valid JSON"):
        files.read_jsonl(path)


# ----------------------------------------------------------------------------- output paths

def test_no_output_may_be_an_input_or_another_output(tmp_path):
    gen = tmp_path / "gen.json"
    gen.write_text("[]")
    link = tmp_path / "link.json"
    link.symlink_to(gen)
    files.check_paths(inputs={"outputs": gen}, outputs={"scores": tmp_path / "s.json", "cache": tmp_path / "c.jsonl"})
    for outputs, fragment in [({"scores": gen}, "scores"), ({"scores": link}, "scores"),
                              ({"scores": tmp_path / "sub" / ".." / "gen.json"}, "scores"),
                              ({"scores": tmp_path / "x.json", "cache": tmp_path / "x.json"}, "cache")]:
        with pytest.raises(UsageError) as info:
            files.check_paths(inputs={"outputs": gen}, outputs=outputs)
        assert str(info.value).startswith(fragment + " ") and info.value.field == fragment
        assert "same file as the" in str(info.value)
    files.check_paths(inputs={"outputs": gen}, outputs={"scores": None})


def test_atomic_write_leaves_the_old_file_whole_when_writing_fails(tmp_path):
    path = tmp_path / "out.json"
    files.write_json_atomic(path, [1, 2])

    def fail(fh):
        fh.write("[half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        files.atomic_write(path, fail)
    assert json.loads(path.read_text()) == [1, 2] and os.listdir(tmp_path) == ["out.json"]
    with pytest.raises(UsageError, match="is a directory"):
        files.write_json_atomic(tmp_path, [])


# ----------------------------------------------------------------------------- logs

@pytest.mark.parametrize("tail", [b'{"key": "c", "text": "it', b'{"key": "c", "text": "it\xe2\x80'],
                         ids=["ascii", "inside-a-multibyte-character"])
def test_a_torn_last_line_is_skipped_reported_and_never_rewritten(tmp_path, tail):
    path = tmp_path / "cache.jsonl"
    whole = b'{"key": "a"}\n{"key": "b", "text": "it\xe2\x80\x99s"}\n'
    path.write_bytes(whole + tail)
    got = log.read_log(path)
    assert got.objects == [{"key": "a"}, {"key": "b", "text": "it\u2019s"}]
    assert got.skipped == [3] and got.torn_tail and "interrupted write" in got.note()
    assert path.read_bytes() == whole + tail                      # the reader changed nothing
    log.AppendLog(path).append([{"key": "c", "text": "again"}])
    assert path.read_bytes() == whole + tail + b'\n{"key": "c", "text": "again"}\n'   # appended, not rewritten
    again = log.read_log(path)
    assert [o["key"] for o in again.objects] == ["a", "b", "c"] and again.skipped == [3] and not again.torn_tail


def test_a_whole_last_object_without_its_newline_counts_and_is_finished_by_the_writer(tmp_path):
    path = tmp_path / "records.jsonl"
    path.write_bytes(b'{"n": 1}\n{"n": 2}')
    assert log.read_log(path).objects == [{"n": 1}, {"n": 2}] and not log.read_log(path).skipped
    log.AppendLog(path).append([{"n": 3}])
    assert path.read_bytes() == b'{"n": 1}\n{"n": 2}\n{"n": 3}\n'


def test_damaged_lines_anywhere_are_skipped_with_their_numbers_and_missing_logs_are_empty(tmp_path):
    path = tmp_path / "records.jsonl"
    path.write_bytes(b'{"n": 1}\n[1]\n\xff\xfe\n\n{"n": 2}\n')
    got = log.read_log(path)
    assert got.objects == [{"n": 1}, {"n": 2}] and got.skipped == [2, 3] and not got.torn_tail
    assert "damage" in got.note()
    assert log.read_log(tmp_path / "none.jsonl").objects == [] and log.read_log(tmp_path / "none.jsonl").note() is None
    with pytest.raises(UsageError, match="is a directory"):
        log.read_log(tmp_path)


# ----------------------------------------------------------------------------- processes

def test_one_process_is_its_own_world(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    shard = dist.detect_shard()
    assert (shard.rank, shard.world, shard.main) == (0, 1, True)
    assert dist.gather(shard, {"x": 1}) == [{"x": 1}]
    dist.barrier(shard)
    dist.close(shard)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    shard = dist.detect_shard()
    assert shard.take(list("abcde")) == ["b", "d"] and not shard.main
    monkeypatch.setenv("RANK", "2")
    with pytest.raises(UsageError, match="RANK=2 is outside WORLD_SIZE=2"):
        dist.detect_shard()

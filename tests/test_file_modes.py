"""Files written atomically get the mode the user's umask gives any new file (0o666 & ~umask),
not the 0o600 of a private temporary file."""

from __future__ import annotations

import os
import stat

import pytest

from attn_transition.evaluation.clues.textio import write_jsonl
from attn_transition.evaluation.runtime.files import atomic_write, write_json_atomic, write_text_atomic


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_atomic_writes_follow_the_umask(tmp_path, umask):
    before = os.umask(umask)
    try:
        plain = tmp_path / "plain.txt"
        plain.write_text("x")                                   # what any new file gets
        write_json_atomic(tmp_path / "results.json", {"a": 1})
        write_text_atomic(tmp_path / "summary.md", "# s\n")
        write_jsonl(tmp_path / "clues.jsonl", [{"a": 1}])
        existing = tmp_path / "old.json"
        existing.write_text("{}")
        os.chmod(existing, 0o600)
        atomic_write(existing, lambda fh: fh.write("{}"))      # replaced: a new file, the umask's mode
    finally:
        os.umask(before)
    want = 0o666 & ~umask
    assert _mode(plain) == want
    for name in ("results.json", "summary.md", "clues.jsonl", "old.json"):
        assert _mode(tmp_path / name) == want, name
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clues.jsonl", "old.json", "plain.txt", "results.json",
                                                          "summary.md"]           # no temporary file left


def test_a_failed_write_leaves_no_temporary_file(tmp_path):
    def fail(fh):
        fh.write("half")
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        atomic_write(tmp_path / "r.json", fail)
    assert list(tmp_path.iterdir()) == []

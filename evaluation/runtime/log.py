"""Append-only record logs (JSON lines): one writer, one reader, one rule for a torn tail.

Every log the project keeps (the bench's records, the judge's answer cache, the clues'
profiles) is a file of JSON objects, one per line, each batch appended with one write and an
fsync, so an interruption loses at most the batch in flight.

The rule for a write cut short (Ctrl-C, a crash, a full disk):

- the **reader** reads bytes and decodes each line on its own, so a line cut inside a
  multi-byte UTF-8 character spoils that line only. An unfinished last line (no newline) is
  kept when it is still a whole JSON object and otherwise skipped; any other line that is not
  a JSON object is skipped too. The reader reports what it skipped (:meth:`LogContents.note`)
  and never changes the file;
- the **writer** never rewrites or truncates a log (another process may be reading or
  appending to it): before its first append it ends an unfinished last line with a newline,
  so the torn line stays on its own (and is skipped by every reader) and new lines never join it.

What a skipped line held was never counted as done, so the command simply does it again.
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional

from attn_transition.errors import UsageError

__all__ = ["LogContents", "read_log", "AppendLog"]


@dataclass
class LogContents:
    """What a log holds: its readable objects with their line numbers, and what was skipped."""

    path: Path
    entries: list[tuple[int, dict[str, Any]]] = field(default_factory=list)   # (line number, object)
    skipped: list[int] = field(default_factory=list)                          # unreadable line numbers
    torn_tail: bool = False                                                   # the last line was cut short

    @property
    def objects(self) -> list[dict[str, Any]]:
        return [obj for _, obj in self.entries]

    def note(self) -> Optional[str]:
        """One line on what was skipped, or None."""
        if not self.skipped:
            return None
        lines = ", ".join(map(str, self.skipped[:5])) + (" ..." if len(self.skipped) > 5 else "")
        why = "an interrupted write" if self.skipped == [self.skipped[-1]] and self.torn_tail else \
            "interrupted writes or damage"
        return (f"{self.path}: skipped {len(self.skipped)} unreadable line(s) ({why}: line {lines}); "
                f"what they held is done again")


def _check_file(path: Path) -> None:
    if path.is_dir():
        raise UsageError(f"{path} is a directory, not a log file; give the path of a .jsonl file")


def read_log(path: str | os.PathLike) -> LogContents:
    """The objects of a log (an empty one for a missing or empty file); see the module doc."""
    path = Path(path)
    out = LogContents(path)
    if not path.exists():
        return out
    _check_file(path)
    data = path.read_bytes()
    lines = data.split(b"\n")
    finished = len(lines) - 1                 # lines before the last newline; lines[-1] is unfinished (or b"")
    for number, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            obj = None
        if isinstance(obj, dict):
            out.entries.append((number, obj))
        else:
            out.skipped.append(number)
            out.torn_tail = out.torn_tail or number > finished
    return out


class AppendLog:
    """Appends objects to a log, one line each, one write and an fsync per call; thread-safe.
    Objects must be valid JSON (a NaN is a ValueError: JSON has none)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        _check_file(self.path)
        self._lock = threading.Lock()
        self._checked = False                 # the tail is looked at before the first append

    def _unfinished(self) -> bool:
        try:
            with self.path.open("rb") as fh:
                if fh.seek(0, os.SEEK_END) == 0:
                    return False
                fh.seek(-1, os.SEEK_END)
                return fh.read(1) != b"\n"
        except FileNotFoundError:
            return False

    def append(self, objects: Iterable[dict[str, Any]]) -> None:
        text = "".join(json.dumps(o, ensure_ascii=False, allow_nan=False) + "\n" for o in objects)
        if not text:
            return
        with self._lock:
            if not self._checked:
                if self._unfinished():
                    text = "\n" + text        # end the torn line; never truncate it
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._checked = True
            with self.path.open("a", encoding="utf-8") as fh:
                fh.write(text)
                fh.flush()
                os.fsync(fh.fileno())

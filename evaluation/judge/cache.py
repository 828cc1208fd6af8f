"""The judge's answer cache: an append-only JSONL log, one line per answer the server gave.

Lines are keyed by :func:`~.payload.cache_key` and are appended, flushed and fsynced as
answers arrive, so a crash or Ctrl-C loses nothing already paid for. A write cut short
follows the project's one rule for logs (:mod:`..runtime.log`): the unreadable line is
skipped and reported on load, the file is never rewritten, and the next answer starts on a
new line. Malformed answers are cached too: they were paid for, and a re-ask is a different
request (see :func:`~.payload.request_seed`).
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path
from typing import Optional

from ..runtime.log import AppendLog, read_log

__all__ = ["JudgeCache", "file_sha256"]


class JudgeCache:
    """Append-only JSONL cache of answers, safe to share between threads."""

    def __init__(self, path: str | os.PathLike, *, enabled: bool = True):
        self.path = Path(path)
        self.enabled = enabled
        self._entries: dict[str, dict] = {}
        self.skipped_lines = 0
        if enabled:
            contents = read_log(self.path)
            for number, entry in contents.entries:
                if isinstance(entry.get("key"), str):
                    self._entries[entry["key"]] = entry
                else:
                    contents.skipped.append(number)             # an object, but not an answer
            self.skipped_lines = len(contents.skipped)
            if contents.note():
                print(f"judge: {contents.note()}", file=sys.stderr)
        self._log = AppendLog(self.path)

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str) -> Optional[dict]:
        return self._entries.get(key) if self.enabled else None

    def put(self, key: str, entry: dict) -> None:
        entry = {"key": key, **entry}
        self._entries[key] = entry
        if self.enabled:
            self._log.append([entry])


def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()

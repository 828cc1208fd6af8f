"""Files written so that an interruption never leaves half of one: write a temporary file
next to the target, flush it to disk, then rename it into place (atomic on POSIX and
Windows). One reader for JSON with errors that name the file and the line."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import IO, Any, Callable

from attn_transition.errors import UsageError

__all__ = ["atomic_write", "write_text_atomic", "write_json_atomic", "read_json"]


def atomic_write(path: str | os.PathLike, write: Callable[[IO[str]], Any]) -> None:
    """Call ``write(handle)`` on a temporary text file and move it onto ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):                   # only when something failed before the rename
            os.unlink(tmp)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    atomic_write(path, lambda fh: fh.write(text))


def write_json_atomic(path: str | os.PathLike, data: Any, *, indent: int = 1) -> None:
    atomic_write(path, lambda fh: json.dump(data, fh, ensure_ascii=False, indent=indent))


def read_json(path: str | os.PathLike) -> Any:
    """Parse a JSON file; a missing or malformed file is a UsageError naming it (and the line)."""
    path = Path(path)
    if not path.exists():
        raise UsageError(f"{path} does not exist")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise UsageError(f"{path} is not valid JSON (line {exc.lineno}: {exc.msg})") from None

"""Reading and writing the clues pipeline's files (CSV / JSONL with a ``text`` column, JSON).

Every input is read through the runtime layer's one reader (:mod:`..runtime.files`: one-line errors
for a missing, binary, non-UTF-8, empty or malformed file) and every write is atomic (a temporary
file, then a rename), so an interrupted run never leaves a half-written file where a finished one
is expected.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from attn_transition.errors import UsageError

from ..runtime import files
from ..runtime.files import atomic_write, write_text_atomic

__all__ = ["SUFFIXES", "read_rows", "read_texts", "write_rows", "read_jsonl", "write_jsonl", "write_json",
           "write_text", "read_json", "json_safe"]

SUFFIXES = (".csv", ".jsonl")


def _suffix(path: Path, what: str) -> str:
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise UsageError(f"{what} {path} must end in .csv or .jsonl (got {suffix or 'no suffix'!r})")
    return suffix


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """All records of a JSONL file; a broken line is reported with its number."""
    rows = []
    for number, row in files.read_jsonl(path):
        if not isinstance(row, dict):
            raise UsageError(f"{path}:{number} is not a JSON object; each line must be one record")
        rows.append(row)
    return rows


def read_rows(path: str | Path) -> list[dict[str, Any]]:
    """Records of a .csv (header row) or .jsonl file."""
    path = Path(path)
    if _suffix(path, "input file") == ".jsonl":
        return read_jsonl(path)
    return [dict(row) for row in csv.DictReader(io.StringIO(files.read_text(path)))]


def read_texts(path: str | Path, column: str = "text") -> list[dict[str, Any]]:
    """Records that all have a non-empty string ``column``; UsageError naming the first bad row."""
    rows = read_rows(path)
    if not rows:
        raise UsageError(f"{path} has no records; it needs at least one row with a {column!r} column")
    if column not in rows[0]:
        raise UsageError(f"{path} has no {column!r} column (columns: {', '.join(map(str, rows[0])) or 'none'}); "
                         f"rename the column holding the training text to {column!r}")
    for number, row in enumerate(rows):
        value = row.get(column)
        if not isinstance(value, str):
            raise UsageError(f"{path}: record {number} has no string {column!r} (got {type(value).__name__})")
        if not value.strip():
            raise UsageError(f"{path}: record {number} has an empty {column!r}; remove empty texts")
    return rows


def json_safe(value: Any) -> Any:
    """NaN / inf -> None, recursively (JSON has no NaN)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def write_jsonl(path: str | Path, rows: Iterable[Mapping[str, Any]]) -> None:
    rows = list(rows)
    atomic_write(Path(path), lambda h: h.writelines(json.dumps(json_safe(r), ensure_ascii=False) + "\n"
                                                     for r in rows))


def write_rows(path: str | Path, rows: Sequence[Mapping[str, Any]]) -> None:
    """.jsonl: one object a line; .csv: the union of keys as columns (lists/dicts as JSON)."""
    path = Path(path)
    if _suffix(path, "output file") == ".jsonl":
        write_jsonl(path, rows)
        return
    columns: list[str] = []
    for row in rows:
        columns.extend(k for k in row if k not in columns)

    def cell(value: Any) -> Any:
        return json.dumps(json_safe(value), ensure_ascii=False) if isinstance(value, (list, dict)) else value

    def write(handle) -> None:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: cell(row.get(k)) for k in columns})

    atomic_write(path, write)


def write_json(path: str | Path, data: Any) -> None:
    atomic_write(Path(path), lambda h: h.write(json.dumps(json_safe(data), indent=2, ensure_ascii=False) + "\n"))


def write_text(path: str | Path, text: str) -> None:
    write_text_atomic(path, text)


def read_json(path: str | Path) -> Any:
    try:
        return files.read_json(path)
    except UsageError as exc:
        raise UsageError(f"{exc}; delete it to recompute") from None

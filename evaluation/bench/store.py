"""Results on disk: an append-only JSONL log of finished (item, config) pairs, and the
final JSON written atomically.

The log's first line is a header naming the run's identity (model, seed, task-data
version, prompt format, generation settings); every later line is one finished
record. Records are appended one batch at a time with a single write and an fsync, so
an interrupted run loses at most the batch in flight. ``--resume`` reads every log in
the output folder, checks the identity, and skips the pairs already there. The only
repair ever made is to an unfinished last line (a write cut short by Ctrl-C or a crash):
readers skip it, and the process that owns the log finishes or drops it before appending
again; any other unreadable line stops the resume with an error that says which line to fix.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, Iterable, Optional

from attn_transition.errors import UsageError

__all__ = ["LOG_FORMAT", "log_name", "RecordLog", "read_log", "read_logs", "repair_tail",
           "check_identity"]

LOG_FORMAT = "attn-transition-bench-log/1"


def log_name(rank: int, world: int) -> str:
    return "records.jsonl" if world == 1 else f"records.rank{rank}-of-{world}.jsonl"


def read_log(path: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """``(header, records)`` of one log; UsageError naming the first bad line."""
    header: Optional[dict[str, Any]] = None
    records: list[dict[str, Any]] = []
    hint = f"fix or delete that line (or move {path.name} away and start again)"
    with open(path, encoding="utf-8") as fh:
        lines = fh.readlines()
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            if lineno == len(lines) and not line.endswith("\n"):
                break          # an append cut short: never counted as done (its writer repairs it)
            raise UsageError(f"--resume: {path} line {lineno} is not valid JSON (an interrupted write?); "
                             f"{hint}") from None
        if not isinstance(obj, dict) or obj.get("type") not in ("header", "record"):
            raise UsageError(f"--resume: {path} line {lineno} is neither a header nor a record; {hint}")
        if obj["type"] == "header":
            if header is not None or records:
                raise UsageError(f"--resume: {path} line {lineno} is a second header; {hint}")
            if obj.get("format") != LOG_FORMAT:
                raise UsageError(f"--resume: {path} line {lineno} is a header of an unknown format "
                                 f"{obj.get('format')!r} (expected {LOG_FORMAT}); {hint}")
            header = obj
            continue
        if header is None:
            raise UsageError(f"--resume: {path} does not start with a header line; {hint}")
        missing = [k for k in ("item", "config", "output", "correct") if k not in obj]
        if missing:
            raise UsageError(f"--resume: {path} line {lineno} lacks {', '.join(missing)}; {hint}")
        records.append(obj)
    if header is None:
        raise UsageError(f"--resume: {path} is empty or has no header; delete it and start again")
    return header, records


def repair_tail(path: Path) -> Optional[str]:
    """Finish or drop an unfinished last line of a log (an append cut short); what was done, or None.

    An append writes whole lines in one call, so only the last line can be cut: if it is still
    a complete JSON object it gets its newline back, otherwise it is dropped (its pair was never
    counted as finished and is simply run again).
    """
    path = Path(path)
    data = path.read_bytes()
    if not data or data.endswith(b"\n"):
        return None
    cut = data.rfind(b"\n") + 1                       # start of the unfinished line (0: the only line)
    try:
        json.loads(data[cut:].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        with open(path, "r+b") as fh:
            fh.truncate(cut)
        return f"dropped the unfinished last line of {path.name} (an interrupted write)"
    with open(path, "ab") as fh:
        fh.write(b"\n")
    return f"completed the last line of {path.name} (its newline was missing)"


def read_logs(folder: Path) -> list[tuple[Path, dict[str, Any], list[dict[str, Any]]]]:
    """Every ``records*.jsonl`` in ``folder`` (all ranks of earlier runs), sorted by name."""
    return [(p, *read_log(p)) for p in sorted(folder.glob("records*.jsonl"))]


def check_identity(path: Path, header: dict[str, Any], identity: dict[str, Any]) -> None:
    """UsageError unless the log was made by a run with the same identity."""
    theirs = header.get("identity", {})
    diff = [k for k in sorted(set(theirs) | set(identity)) if theirs.get(k) != identity.get(k)]
    if diff:
        shown = "; ".join(f"{k}: log has {theirs.get(k)!r}, this run {identity.get(k)!r}" for k in diff[:3])
        raise UsageError(f"--resume: {path} was made by a different run ({shown}); rerun with the same "
                         f"options or use another --output-dir")


class RecordLog:
    """Append-only JSONL log of one process. Creating it writes the header if the file is new."""

    def __init__(self, path: Path, identity: dict[str, Any]):
        self.path = Path(path)
        if self.path.exists() and self.path.stat().st_size > 0:
            note = repair_tail(self.path)          # only this process ever appends to this file
            if note:
                print(f"resume: {note}", file=sys.stderr)
        else:
            self._write([{"type": "header", "format": LOG_FORMAT, "identity": identity}])

    def _write(self, objs: Iterable[dict[str, Any]]) -> None:
        text = "".join(json.dumps(o, ensure_ascii=False) + "\n" for o in objs)
        if not text:
            return
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())

    def append(self, records: Iterable[dict[str, Any]]) -> None:
        self._write({"type": "record", **r} for r in records)

"""The bench's record log: an append-only JSONL file of finished (item, config) pairs.

The log's first line is a header naming the run's identity (model, seed, task-data
version, prompt format, generation settings); every later line is one finished record.
Records are appended one batch at a time (:class:`~attn_transition.evaluation.runtime.log.AppendLog`),
so an interrupted run loses at most the batch in flight. ``--resume`` reads every log in the
output folder once, checks the identity, and skips the pairs already there.

A folder holds a run's results when it has a record log of any rank (``records*.jsonl``, whatever
the number of processes that wrote it) or a ``results.json``: :func:`refuse_results` is the one
guard every bench command (``bench`` and ``bench --suite ruler``, their CLIs and runners) puts
before writing, so a new run never mixes its records with an earlier run's unless ``--resume``.

A write cut short follows the project's one rule for logs (:mod:`..runtime.log`): readers skip
an unreadable line, report it and never change the file; the writer never truncates (under data
parallel every rank reads every log while the others append). A skipped record is run again.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Iterable, Optional

from attn_transition.errors import UsageError

from ..runtime.log import AppendLog
from ..runtime.log import read_log as read_lines

__all__ = ["LOG_FORMAT", "LOG_PATTERN", "RESULTS_NAME", "log_name", "log_paths", "results_in", "refuse_results",
           "require_logs", "RecordLog", "read_log", "read_logs", "check_identity"]

LOG_FORMAT = "attn-transition-bench-log/1"
LOG_PATTERN = "records*.jsonl"      # every rank's log (log_name), of any earlier run
RESULTS_NAME = "results.json"
_RECORD_FIELDS = ("item", "config", "output", "correct")


def log_name(rank: int, world: int) -> str:
    return "records.jsonl" if world == 1 else f"records.rank{rank}-of-{world}.jsonl"


def log_paths(folder: str | Path) -> list[Path]:
    """Every record log in ``folder`` (all ranks of earlier runs), sorted by name."""
    return sorted(Path(folder).glob(LOG_PATTERN))


def results_in(folder: str | Path) -> list[str]:
    """Names of the files that make ``folder`` a run's results: record logs, ``results.json``."""
    return [p.name for p in log_paths(folder)] + [RESULTS_NAME] * (Path(folder) / RESULTS_NAME).exists()


def refuse_results(folder: str | Path, *, resume: bool, found: Optional[Iterable[str]] = None) -> None:
    """UsageError naming ``--resume`` when ``folder`` already holds results and ``resume`` is off;
    nothing in the folder is touched. ``found``: the :func:`results_in` names, when the caller
    gathered them from several processes (so all decide alike before any writes)."""
    names = sorted(set(results_in(folder) if found is None else found))
    if names and not resume:
        shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
        raise UsageError(f"{folder} already holds results; add --resume to continue them or choose another "
                         f"--output-dir (it has {shown})")


def require_logs(folder: str | Path) -> None:
    """UsageError unless ``folder`` holds a record log for ``--resume`` to continue."""
    if not log_paths(folder):
        raise UsageError(f"--resume: {folder} holds no {LOG_PATTERN} to continue; drop --resume to start there")


def read_log(path: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """``(header, records)`` of one log; UsageError naming the first line that is readable but wrong."""
    contents = read_lines(path)
    if contents.note():
        print(f"resume: {contents.note()}", file=sys.stderr)
    hint = f"fix or delete that line (or move {Path(path).name} away and start again)"
    header: Optional[dict[str, Any]] = None
    records: list[dict[str, Any]] = []
    for lineno, obj in contents.entries:
        if obj.get("type") == "header":
            if header is not None or records:
                raise UsageError(f"resume: {path} line {lineno} is a second header; {hint}")
            if obj.get("format") != LOG_FORMAT:
                raise UsageError(f"resume: {path} line {lineno} is a header of an unknown format "
                                 f"{obj.get('format')!r} (expected {LOG_FORMAT}); {hint}")
            header = obj
        elif obj.get("type") == "record":
            if header is None:
                raise UsageError(f"resume: {path} does not start with a header line; {hint}")
            missing = [k for k in _RECORD_FIELDS if k not in obj]
            if missing:
                raise UsageError(f"resume: {path} line {lineno} lacks {', '.join(missing)}; {hint}")
            records.append(obj)
        else:
            raise UsageError(f"resume: {path} line {lineno} is neither a header nor a record; {hint}")
    if header is None:
        raise UsageError(f"resume: {path} is empty or has no header; delete it and start again")
    return header, records


def read_logs(folder: Path) -> list[tuple[Path, dict[str, Any], list[dict[str, Any]]]]:
    """``(path, header, records)`` of every log in ``folder`` (:func:`log_paths`)."""
    return [(p, *read_log(p)) for p in log_paths(folder)]


def check_identity(path: Path, header: dict[str, Any], identity: dict[str, Any]) -> None:
    """UsageError unless the log was made by a run with the same identity."""
    theirs = header.get("identity", {})
    diff = [k for k in sorted(set(theirs) | set(identity)) if theirs.get(k) != identity.get(k)]
    if diff:
        shown = "; ".join(f"{k}: log has {theirs.get(k)!r}, this run {identity.get(k)!r}" for k in diff[:3])
        raise UsageError(f"resume: {path} was made by a different run ({shown}); rerun with the same "
                         f"options or use another output folder")


class RecordLog:
    """The append-only log of one process. Creating it writes the header if the file is new."""

    def __init__(self, path: Path, identity: dict[str, Any]):
        self.path = Path(path)
        self._log = AppendLog(self.path)
        if not self.path.exists() or self.path.stat().st_size == 0:
            self._log.append([{"type": "header", "format": LOG_FORMAT, "identity": identity}])

    def append(self, records: Iterable[dict[str, Any]]) -> None:
        self._log.append({"type": "record", **r} for r in records)

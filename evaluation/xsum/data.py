"""Documents to summarize: ``{"document", "summary", "id"}`` records from a local file or the hub.

Readers for ``.jsonl`` (one object a line), ``.json`` (a list, or ``{"data": [...]}``) and
``.csv`` (a header row), and the hub through ``datasets``. Every reader checks its rows the
same way and names the record (and line or row) and the field that is wrong; ids become
text and must be unique. Extra fields (earlier generations, scores) are dropped. The data
argument ``sample`` names the packaged sample (:data:`SAMPLE_PATH`, inside the installed
package, so it works from a wheel as from a checkout).
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import Any, Callable, Iterable

from attn_transition.errors import UsageError
from attn_transition.extras import require

from ..runtime import files
from ..seedformat import REQUIRED_FIELDS

__all__ = ["SAMPLE_PATH", "SAMPLE_NAME", "HUB_DATASET", "data_path", "load_documents", "new_record"]

SAMPLE_PATH = Path(__file__).parent.parent / "data" / "xsum_sample.jsonl"
SAMPLE_NAME = "sample"           # the data argument that names SAMPLE_PATH
HUB_DATASET = "EdinburghNLP/xsum"


def data_path(source: str | os.PathLike) -> Path:
    """The local path a data argument names: :data:`SAMPLE_PATH` for ``sample`` (unless a file of
    that name is in the working folder), else the argument itself, ``~`` expanded."""
    path = Path(str(source)).expanduser()
    if str(source) == SAMPLE_NAME and not path.exists():
        return SAMPLE_PATH
    return path


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:300]


def _check_rows(rows: Iterable[Any], source: str, where: Callable[[int], str]) -> list[dict]:
    """Keep ``document``, ``summary``, ``id`` of every row; raise naming the row and field that is wrong."""
    out: list[dict] = []
    seen: dict[str, int] = {}
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise UsageError(f"{source}: {where(i)} is a {type(row).__name__}, expected an object with "
                             f"fields {', '.join(REQUIRED_FIELDS)}")
        for name in REQUIRED_FIELDS:
            if name not in row or row[name] is None:
                found = ", ".join(map(str, row)) or "none"
                raise UsageError(f"{source}: {where(i)} (id {row.get('id', '?')!r}) has no {name!r} field "
                                 f"(fields found: {found}); every record needs {', '.join(REQUIRED_FIELDS)}")
        if not isinstance(row["document"], str) or not row["document"].strip():
            raise UsageError(f"{source}: {where(i)} (id {row['id']!r}) has an empty or non-text 'document'")
        if not isinstance(row["summary"], str):
            raise UsageError(f"{source}: {where(i)} (id {row['id']!r}) field 'summary' must be text, "
                             f"got {type(row['summary']).__name__}")
        doc_id = str(row["id"])
        if doc_id in seen:
            raise UsageError(f"{source}: {where(i)} repeats id {doc_id!r} of {where(seen[doc_id])}; "
                             f"ids must be unique (they key --resume and the merge of shards)")
        seen[doc_id] = i
        out.append({"document": row["document"], "summary": row["summary"], "id": doc_id})
    return out


def _read_jsonl(path: Path) -> list[dict]:
    pairs = files.read_jsonl(path)
    return _check_rows([row for _, row in pairs], str(path), lambda i: f"record {i} (line {pairs[i][0]})")


def _read_json(path: Path) -> list[dict]:
    data = files.read_json(path)
    if isinstance(data, dict) and isinstance(data.get("data"), list):
        data = data["data"]
    if not isinstance(data, list):
        raise UsageError(f"{path}: expected a JSON list of records (or {{\"data\": [...]}}), "
                         f"got {type(data).__name__}")
    return _check_rows(data, str(path), lambda i: f"record {i}")


def _read_csv(path: Path) -> list[dict]:
    rows = list(csv.DictReader(io.StringIO(files.read_text(path))))
    # Row i is on line i + 2 (line 1 is the header) unless a field spans lines.
    return _check_rows(rows, str(path), lambda i: f"record {i} (row {i + 2})")


_READERS = {".jsonl": _read_jsonl, ".json": _read_json, ".csv": _read_csv}


def _read_hub(name: str, split: str) -> list[dict]:
    require(f"loading {name}", "datasets", extra="eval",
            alternative=f"or pass a local JSON / JSONL / CSV file with fields {', '.join(REQUIRED_FIELDS)}")
    import datasets

    try:
        ds = datasets.load_dataset(name, split=split)
    except Exception as exc:  # network, offline mode, unknown split: all the user's to fix
        raise UsageError(f"could not load {name} (split {split!r}) through datasets: {_first_line(exc)}; "
                         f"without the Hugging Face hub pass a local JSON / JSONL / CSV file with fields "
                         f"{', '.join(REQUIRED_FIELDS)} instead") from None
    return _check_rows(ds, f"{name}[{split}]", lambda i: f"record {i}")


def load_documents(source: str | os.PathLike = SAMPLE_PATH, split: str = "test") -> list[dict]:
    """Documents as ``{"document", "summary", "id"}`` dicts (ids as text), in input order.

    ``source`` is a local ``.json`` (a list of objects), ``.jsonl`` or ``.csv`` file, ``sample``
    (the packaged sample), or a dataset id on the Hugging Face hub (``EdinburghNLP/xsum``; also
    ``xsum``) loaded through ``datasets`` with ``split``. Extra fields (earlier generations, scores) are ignored.
    """
    text = str(source)
    path = data_path(source)
    if path.is_file():
        reader = _READERS.get(path.suffix.lower())
        if reader is None:
            raise UsageError(f"{path}: unsupported file type {path.suffix or '(none)'!r}; "
                             f"use one of {', '.join(_READERS)}")
        return reader(path)
    if path.is_dir():
        raise UsageError(f"{path} is a directory; pass a .json, .jsonl or .csv file")
    if text.lower() == "xsum":
        text = HUB_DATASET
    if path.suffix.lower() in _READERS or text.startswith((".", "/", "~")) or "/" not in text:
        raise UsageError(f"data file {text} does not exist; pass a local .json / .jsonl / .csv file, "
                         f"{SAMPLE_NAME} (the packaged sample of news articles) or a hub dataset id such as "
                         f"{HUB_DATASET}")
    return _read_hub(text, split)


def new_record(doc: dict) -> dict:
    """A fresh output record in the seed's key order: document, summary, id."""
    return {"document": doc["document"], "summary": doc["summary"], "id": str(doc["id"])}

"""Files of a run: the output, its metadata sidecar and the rank shards of a multi-process run.

``<output>`` is the seed's JSON list of records (written atomically after every batch, so
an interruption keeps what is finished); ``<output>.meta.json`` records how it was made
(model, prompt template, grid, settings, versions, timings, each document's prompt length
and bucket). Under ``accelerate launch`` rank ``k`` writes ``<output>.rank<k>.json`` (and
its own sidecar) and rank 0 merges the shards in input order; shards left by an interrupted
run are merged by a later ``--resume`` and removed once the output holds every output.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Iterable, Optional, Sequence

from attn_transition.errors import UsageError

from ..seedformat import read_json, read_records

__all__ = ["META_FORMAT", "meta_path", "shard_path", "existing_shards", "shard_indices", "merge_outputs",
           "merge_shards", "merge_rank_shards", "missing_outputs", "remove_shards", "drop_merged_shards",
           "combine_timings", "add_timings", "read_meta"]

META_FORMAT = "attn_transition.generate/1"


# --------------------------------------------------------------------------- paths

def meta_path(output: str | os.PathLike) -> Path:
    """The sidecar of an output file: ``<output>.meta.json``."""
    output = Path(output)
    return output.with_name(output.name + ".meta.json")


def shard_path(output: Path, rank: int) -> Path:
    return output.with_name(f"{output.name}.rank{rank}.json")


def existing_shards(output: Path) -> list[Path]:
    """Shard files of ``output`` left by any earlier multi-process run (any world size)."""
    pattern = re.compile(re.escape(output.name) + r"\.rank\d+\.json")
    return sorted(p for p in output.parent.glob(f"{output.name}.rank*.json") if pattern.fullmatch(p.name))


def shard_indices(n: int, rank: int, world: int) -> list[int]:
    """Positions handled by ``rank`` of ``world`` processes (round robin, so lengths balance)."""
    assert 0 <= rank < world, (rank, world)
    return list(range(rank, n, world))


# --------------------------------------------------------------------------- merging shards

def merge_outputs(records: list[dict], others: Iterable[dict]) -> int:
    """Copy into ``records`` (matched by id) every ``decode_*`` key they lack; returns the count."""
    by_id = {str(r["id"]): r for r in records}          # ids compare as text (a seed file may hold ints)
    added = 0
    for rec in others:
        target = by_id.get(str(rec.get("id")))
        if target is None:
            continue
        for key, value in rec.items():
            if key.startswith("decode_") and key not in target:
                target[key] = value
                added += 1
    return added


def merge_shards(output: Path, records: list[dict]) -> int:
    """Merge into ``records`` the outputs of every shard an earlier run left; returns the count."""
    return sum(merge_outputs(records, read_records(shard)) for shard in existing_shards(output))


def merge_rank_shards(output: Path, records: list[dict], world: int) -> list[dict[str, dict]]:
    """Merge into ``records`` the shard of each of ``world`` ranks; returns each rank's timings."""
    per_rank = []
    for rank in range(world):
        shard = shard_path(output, rank)
        merge_outputs(records, read_records(shard))
        per_rank.append((read_meta(meta_path(shard)) or {}).get("timings", {}))
    return per_rank


def missing_outputs(records: Sequence[dict], keys: Sequence[str]) -> int:
    """How many of the ``keys`` the ``records`` lack, all records together."""
    return sum(1 for r in records for k in keys if k not in r)


def remove_shards(output: Path) -> None:
    """Delete every shard of ``output`` and its sidecar."""
    for shard in existing_shards(output):
        meta_path(shard).unlink(missing_ok=True)
        shard.unlink()


def drop_merged_shards(output: Path, records: Sequence[dict], keys: Sequence[str]) -> int:
    """Remove the shards once ``records`` (the output's) hold every output; otherwise keep them
    for a later resume. Returns the number of outputs still missing (0: the shards are gone)."""
    missing = missing_outputs(records, keys)
    if not missing:
        remove_shards(output)
    return missing


# --------------------------------------------------------------------------- metadata

def combine_timings(per_rank: Iterable[dict[str, dict]]) -> dict[str, dict]:
    """Timings of ranks that ran side by side: documents add up, seconds is the slowest rank's."""
    out: dict[str, dict] = {}
    for timings in per_rank:
        for key, t in timings.items():
            prev = out.get(key, {"seconds": 0.0, "documents": 0})
            out[key] = {"seconds": max(prev["seconds"], t["seconds"]), "documents": prev["documents"] + t["documents"]}
    return out


def add_timings(earlier: dict[str, dict], now: dict[str, dict]) -> dict[str, dict]:
    """Timings of successive runs on one output: seconds and documents add up."""
    out = dict(earlier)
    for key, t in now.items():
        prev = out.get(key, {"seconds": 0.0, "documents": 0})
        out[key] = {"seconds": round(prev.get("seconds", 0.0) + t["seconds"], 3),
                    "documents": prev.get("documents", 0) + t["documents"]}
    return out


def read_meta(path: Path) -> Optional[dict]:
    """The sidecar at ``path`` (None when there is none); UsageError when it is unreadable."""
    if not path.exists():
        return None
    try:
        data = read_json(path)
    except UsageError as exc:
        raise UsageError(f"{exc}; delete it to resume without the old metadata") from None
    if not isinstance(data, dict):
        raise UsageError(f"{path} must hold a JSON object; delete it to resume without the old metadata")
    return data

"""Several processes: rank, world, gather and barrier, one mechanism for every command.

``accelerate launch`` and ``torchrun`` both start one process per rank with ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK`` (and the rendezvous address) in the environment; that is all
this module reads. Objects are exchanged through ``torch.distributed`` with the gloo backend
(CPU, so it works with or without GPUs); a group that a launcher or library already set up
is used as it is. A single process needs none of it.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Any, Sequence, TypeVar

from attn_transition.errors import UsageError

__all__ = ["Shard", "detect_shard", "gather", "barrier", "close"]

T = TypeVar("T")


@dataclass(frozen=True)
class Shard:
    """This process's place among ``world`` processes."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Rank 0: the process that merges and writes the shared results."""
        return self.rank == 0

    def take(self, items: Sequence[T]) -> list[T]:
        """Every ``world``-th item, starting at ``rank`` (the ranks' shares are disjoint and cover all)."""
        return list(items[self.rank::self.world])

    def device(self) -> str:
        """``cuda:<local rank>`` where CUDA is available, else ``cpu``."""
        import torch

        return f"cuda:{self.local_rank}" if torch.cuda.is_available() else "cpu"


def detect_shard() -> Shard:
    """From ``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK`` (set by ``accelerate launch`` and ``torchrun``)."""
    try:
        world = int(os.environ.get("WORLD_SIZE", "1") or 1)
        rank = int(os.environ.get("RANK", "0") or 0)
        local = int(os.environ.get("LOCAL_RANK", str(rank)) or rank)
    except ValueError:
        raise UsageError("RANK / WORLD_SIZE / LOCAL_RANK must be integers when set") from None
    if world < 1 or not 0 <= rank < world:
        raise UsageError(f"RANK={rank} is outside WORLD_SIZE={world}")
    return Shard(rank, world, local)


_OWN_GROUP = False     # the process group was created here: destroy it in close()


def _group() -> Any:
    import torch.distributed as dist

    global _OWN_GROUP
    if not dist.is_initialized():
        dist.init_process_group("gloo", timeout=datetime.timedelta(hours=24))
        _OWN_GROUP = True
    return dist


def gather(shard: Shard, obj: T) -> list[T]:
    """Every rank's ``obj`` (picklable), in rank order, on every rank; ``[obj]`` for one process."""
    if shard.world == 1:
        return [obj]
    dist = _group()
    out: list[Any] = [None] * shard.world
    dist.all_gather_object(out, obj)
    return out


def barrier(shard: Shard) -> None:
    """Wait until every rank is here (nothing for one process)."""
    if shard.world > 1:
        _group().barrier()


def close(shard: Shard) -> None:
    """The last step of a run: every rank waits until all are done (rank 0 has written the
    results), then a group created here is torn down in order (a gloo group left to the
    interpreter's exit can abort a process whose peer is still busy)."""
    global _OWN_GROUP
    if shard.world == 1:
        return
    import torch.distributed as dist

    if dist.is_initialized():
        dist.barrier()
        if _OWN_GROUP:
            dist.destroy_process_group()
            _OWN_GROUP = False

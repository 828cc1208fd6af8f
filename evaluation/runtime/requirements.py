"""What the evaluation commands need from the optional extras, checked before any work.

Each function raises :class:`~attn_transition.extras.MissingExtraError` (one line naming the
pip extra, exit code 2 at the command line) when a package is missing, so a command stops
before it loads a model or writes a file, never halfway through.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Optional

from attn_transition.extras import require

__all__ = ["require_embedded", "require_finetuning", "require_plots", "require_judge_client"]


def require_embedded(models: Iterable[Optional[str]], cache: Optional[str | Path] = None, *,
                     force: bool = False) -> None:
    """gguf and accelerate (the ``models`` extra) when one of ``models`` is an embedded model not
    converted yet into the cache, or any embedded one with ``force`` (converting reads its GGUF file,
    which transformers refuses to load without accelerate)."""
    from ..models import EMBEDDED, cache_dir

    todo = [m for m in dict.fromkeys(models)
            if m in EMBEDDED and (force or not (cache_dir(cache) / m / "config.json").exists())]
    if todo:
        require(f"the embedded model {', '.join(todo)}, converted once into {cache_dir(cache)},", "gguf",
                "accelerate", extra="models")


def require_finetuning(purpose: str) -> None:
    """peft and accelerate (the ``contrast`` extra): LoRA adapters and transformers' Trainer."""
    require(purpose, "peft", "accelerate", extra="contrast")


def require_plots(purpose: str, alternative: str = "") -> None:
    """matplotlib (the ``eval`` extra)."""
    require(purpose, "matplotlib", extra="eval", alternative=alternative)


def require_judge_client(purpose: str = "attn-transition judge") -> None:
    """openai (the ``eval`` extra): the judge's Chat Completions client."""
    require(purpose, "openai", extra="eval", alternative="--dry-run needs no client")

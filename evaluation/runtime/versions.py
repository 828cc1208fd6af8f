"""What a results file records about the software that made it (one capture for every command)."""

from __future__ import annotations

import platform
import sys
from importlib import metadata
from typing import Optional, Sequence

__all__ = ["PACKAGES", "library_versions"]

PACKAGES: tuple[str, ...] = ("torch", "transformers", "tokenizers", "accelerate", "datasets", "numpy")


def library_versions(packages: Sequence[str] = PACKAGES) -> dict[str, Optional[str]]:
    """``{"python": ..., "platform": ..., "attn-transition": ..., package: version or None}``."""
    import attn_transition

    out: dict[str, Optional[str]] = {"python": sys.version.split()[0], "platform": platform.platform(),
                                     "attn-transition": attn_transition.__version__}
    for name in packages:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out

"""The platforms the plugin runs on, as one table: for each, the vLLM attention backend it
overrides, the class that overrides it, and the check it adds at engine start.

Registration (:func:`register_backends`, in every process vLLM starts) and the engine-start
check (:func:`~.engine.check_vllm_config`) both read :data:`PLATFORMS`, so a new backend is one
row here and one module beside :mod:`.cpu` / :mod:`.cuda` (its classes combine the mixins of
:mod:`.backends` with vLLM's). Classes and checks are named by dotted path, as vLLM's own backend
registry names them (``register_backend`` in vllm/v1/attention/backends/registry.py): a
platform's module imports that platform's vLLM backend, so only the current platform's is ever
imported, and this module imports no other module of the plugin (the platform modules import
the rest; nothing imports them but vLLM and :func:`load`).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable, Optional

__all__ = ["PlatformBackend", "PLATFORMS", "current_platform_backend", "load", "register_backends"]


@dataclass(frozen=True)
class PlatformBackend:
    """One platform's row: ``backend`` is the ``AttentionBackendEnum`` member's name the plugin
    overrides; ``backend_class`` the overriding class (``module.Class``); ``engine_check`` the
    engine-start check (``module:function``, called with the ``VllmConfig``)."""

    backend: str
    backend_class: str
    engine_check: str


_HERE = "attn_transition.patches.vllm"

# vLLM platform name (``Platform.is_<name>()``) -> its row. The CPU platform always picks
# CPU_ATTN (``CpuPlatform.get_attn_backend_cls``, vllm/platforms/cpu.py); on CUDA the engine
# check selects FLASH_ATTN.
PLATFORMS: dict[str, PlatformBackend] = {
    "cpu": PlatformBackend("CPU_ATTN", f"{_HERE}.cpu.TransitionCPUBackend", f"{_HERE}.cpu:check_cpu_engine"),
    "cuda": PlatformBackend("FLASH_ATTN", f"{_HERE}.cuda.TransitionFlashAttentionBackend",
                            f"{_HERE}.cuda:check_cuda_engine"),
}


def current_platform_backend(platform: Any = None) -> Optional[tuple[str, PlatformBackend]]:
    """``(name, row)`` of vLLM's current platform (or ``platform``), or None where the plugin has
    no backend."""
    if platform is None:
        from vllm.platforms import current_platform as platform
    for name, row in PLATFORMS.items():
        if getattr(platform, f"is_{name}")():
            return name, row
    return None


def load(path: str) -> Callable[..., Any]:
    """The object at ``module:name`` (or ``module.name``)."""
    module, _, name = path.rpartition(":") if ":" in path else path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def register_backends() -> None:
    """Override vLLM's attention backend of this platform (its row's ``backend``) with the row's
    class; nothing on a platform without a row (the engine-start check refuses it)."""
    from vllm.v1.attention.backends.registry import AttentionBackendEnum, register_backend

    found = current_platform_backend()
    if found is not None:
        _, row = found
        register_backend(AttentionBackendEnum[row.backend], row.backend_class)

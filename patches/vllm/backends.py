"""Backend registration and what every backend's implementation shares.

vLLM resolves an attention backend by its enum member's path, which a plugin may override
(``register_backend`` in vllm/v1/attention/backends/registry.py). The CPU platform always picks
``CPU_ATTN`` (``CpuPlatform.get_attn_backend_cls``, vllm/platforms/cpu.py); on CUDA the plugin
overrides ``FLASH_ATTN`` and the engine check selects it. The overriding backends are subclasses of
vLLM's own; their ``get_impl_cls`` (called while each ``Attention`` layer is built, under the
engine's current config: ``Attention.__init__``, vllm/model_executor/layers/attention/attention.py)
hands out vLLM's own implementation class unless the engine asks for the plugin
(``additional_config={"attn_transition": <config or "none">}``), so an engine that does not ask runs
exactly vLLM's code.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import torch

from .engine import EngineTransition, engine_transition
from .rows import LayerTransition

__all__ = ["register_backends", "asked_config", "make_layer_transition"]


def asked_config() -> Optional[EngineTransition]:
    """What the engine being built in this process asks of the plugin (its default config, or
    ``NO_DEFAULT`` for per-request configs only), or None: the plugin is off."""
    from vllm.config import get_current_vllm_config

    return engine_transition(get_current_vllm_config().additional_config)


def make_layer_transition(impl: Any, *, budget: Callable[[torch.device, int, int], Any]
                          ) -> LayerTransition:
    """A layer's :class:`LayerTransition` from a backend implementation's settings (``scale``,
    ``logits_soft_cap``, ``sinks``, ``sliding_window`` as vLLM's implementations store them) and the
    model's schedule layout (:func:`~attn_transition.families.schedule_layout`). Installs the
    step rows in this worker (:mod:`.steps`)."""
    from vllm.config import get_current_vllm_config

    from attn_transition.families import schedule_layout

    from .steps import install_step_rows

    if getattr(impl, "alibi_slopes", None) is not None:
        raise NotImplementedError("attn_transition: ALiBi attention is not supported by the vLLM plugin")
    install_step_rows()
    num_layers, layout = schedule_layout(get_current_vllm_config().model_config.hf_text_config)
    softcap = getattr(impl, "logits_soft_cap", None) or None     # vLLM stores 0 for none
    window = impl.sliding_window
    if isinstance(window, tuple):                                # FlashAttention: (window - 1, 0), (-1, -1) none
        window = window[0] + 1 if window[0] >= 0 else None
    elif window is not None and window <= 0:                     # CPU: -1 for none
        window = None
    return LayerTransition(layout, num_layers, scaling=float(impl.scale), softcap=softcap,
                           sinks=impl.sinks, window=window, budget=budget)


def register_backends() -> None:
    """Override vLLM's default attention backend of this platform with the transition's subclass
    (its row of :data:`~.platforms.PLATFORMS`), and install the caller-side check of each
    request's transition (:mod:`.requests`)."""
    from vllm.v1.attention.backends.registry import AttentionBackendEnum, register_backend

    from .platforms import current_platform_backend
    from .requests import install_request_check

    install_request_check()

    found = current_platform_backend()
    if found is not None:
        _, row = found
        register_backend(AttentionBackendEnum[row.backend], row.backend_class)

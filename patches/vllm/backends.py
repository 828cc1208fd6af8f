"""What every backend of the plugin shares: the two mixins a platform's module combines with
vLLM's own backend and implementation classes.

vLLM resolves an attention backend by its enum member's path, which a plugin may override
(``register_backend`` in vllm/v1/attention/backends/registry.py; the plugin's rows are
:data:`~.platforms.PLATFORMS`). The overriding backends are subclasses of vLLM's own; their
``get_impl_cls`` (called while each ``Attention`` layer is built, under the engine's current config:
``Attention.__init__``, vllm/model_executor/layers/attention/attention.py) hands out vLLM's own
implementation class unless the engine asks for the plugin
(``additional_config={"attn_transition": <config or "none">}``), so an engine that does not ask runs
exactly vLLM's code. A new backend is::

    class TransitionXImpl(TransitionImpl, XImpl):          # the mixin first: its forward wraps XImpl's
        def cache_reader(self, layer, kv_cache): ...       # reads X's paged cache layout
        def attention_window(self): ...                    # X's sliding_window as a width, or None

    class TransitionXBackend(TransitionBackend, XBackend):
        transition_impl, stock_impl = TransitionXImpl, XImpl
"""

from __future__ import annotations

from typing import Any, Optional

import torch
from vllm.config import get_current_vllm_config
from vllm.v1.attention.backend import AttentionType

from attn_transition.budget import chunk_budget
from attn_transition.families import schedule_layout

from .asked import EngineTransition, engine_transition
from .rows import CacheReader, LayerTransition
from .steps import STEP_ATTR, install_step_rows

__all__ = ["TransitionImpl", "TransitionBackend", "asked_config", "layer_budget"]


def asked_config() -> Optional[EngineTransition]:
    """What the engine being built in this process asks of the plugin (its default config, or
    ``NO_DEFAULT`` for per-request configs only), or None: the plugin is off."""
    return engine_transition(get_current_vllm_config().additional_config)


def layer_budget(device: torch.device, heads: int, keys: int) -> Any:
    """The edited rows' memory budget: the core's automatic one (:func:`~attn_transition.budget.chunk_budget`)."""
    return chunk_budget("auto", device, heads, keys)


class TransitionImpl:
    """The edited-rows step of an attention implementation: vLLM's ``forward`` computes every row
    of the step, then this one overwrites the rows the step's requests edit (:mod:`.rows`).

    Mixed in before a vLLM implementation class, which stores ``scale``, ``logits_soft_cap``,
    ``sinks``, ``sliding_window``, ``alibi_slopes``, ``attn_type`` and ``head_size``. A subclass says
    how its cache is read (:meth:`cache_reader`) and how its implementation stores the window
    (:meth:`attention_window`).
    """

    transition: Optional[LayerTransition]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        edited = asked_config() is not None and self.attn_type == AttentionType.DECODER
        self.transition = self._layer_transition() if edited else None

    def cache_reader(self, layer: Any, kv_cache: torch.Tensor) -> CacheReader:
        """The reader of this implementation's paged cache (keys of earlier chunks)."""
        raise NotImplementedError(f"{type(self).__name__} must define cache_reader")

    def attention_window(self) -> Optional[int]:
        """The sliding window's width (keys a row sees, itself included), or None: full attention."""
        raise NotImplementedError(f"{type(self).__name__} must define attention_window")

    def _layer_transition(self) -> LayerTransition:
        """The layer's :class:`LayerTransition` from the implementation's settings and the model's
        schedule layout (:func:`~attn_transition.families.schedule_layout`); installs the step rows
        in this worker (:mod:`.steps`)."""
        if getattr(self, "alibi_slopes", None) is not None:
            # The engine-start check refuses ALiBi models (:func:`~.engine.uses_alibi`); a model
            # whose config does not say so is caught here, before any row is edited.
            raise RuntimeError("attn_transition: this layer uses ALiBi, which the vLLM plugin cannot edit "
                               "(the engine-start check did not see it in the model's config)")
        install_step_rows()
        num_layers, layout = schedule_layout(get_current_vllm_config().model_config.hf_text_config)
        softcap = getattr(self, "logits_soft_cap", None) or None        # vLLM stores 0 for none
        return LayerTransition(layout, num_layers, scaling=float(self.scale), softcap=softcap,
                               sinks=self.sinks, window=self.attention_window(), budget=layer_budget)

    def forward(self, layer: Any, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                kv_cache: torch.Tensor, attn_metadata: Any, output: torch.Tensor,
                output_scale: Optional[torch.Tensor] = None,
                output_block_scale: Optional[torch.Tensor] = None) -> torch.Tensor:
        result = super().forward(layer, query, key, value, kv_cache, attn_metadata, output,  # type: ignore[misc]
                                 output_scale=output_scale, output_block_scale=output_block_scale)
        if self.transition is not None and getattr(attn_metadata, STEP_ATTR, None):
            self.transition.overwrite(layer, attn_metadata, query, key, value, kv_cache, output,
                                     self.cache_reader(layer, kv_cache))
        return result


class TransitionBackend:
    """A backend whose layers get :attr:`transition_impl` when the engine asks for the plugin and
    vLLM's :attr:`stock_impl` otherwise. Mixed in before the vLLM backend class."""

    transition_impl: type
    stock_impl: type

    @classmethod
    def get_impl_cls(cls) -> type:
        return cls.transition_impl if asked_config() is not None else cls.stock_impl

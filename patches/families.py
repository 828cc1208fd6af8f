"""Per-architecture facts, as a small table keyed by ``config.model_type``.

The attention function itself is architecture-agnostic: transformers hands it the
query/key/value after RoPE and the cache update, the layer's mask (sliding windows
included) and the layer's ``scaling`` / ``softcap``. What differs per family is only
how many decoder layers the schedule spreads over and a note for users.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from attn_transition.errors import UnsupportedModelError

__all__ = ["Family", "FAMILIES", "family_for", "num_decoder_layers", "schedule_layout"]


@dataclass(frozen=True)
class Family:
    model_type: str
    layers_field: str = "num_hidden_layers"
    note: str = ""


FAMILIES: dict[str, Family] = {
    f.model_type: f
    for f in (
        Family("llama"),
        Family("mistral", note="sliding-window layers keep their window (edits never land outside it)"),
        Family("qwen2", note="layers above max_window_layers may use a sliding window; it is kept"),
        Family("qwen3", note="q/k norms are applied before the attention function; nothing special"),
        Family("gemma3_text", note="5 of every 6 layers are sliding-window; the window is kept; "
                                   "query_pre_attn_scalar scaling and any softcap are honoured"),
        Family("phi3", note="fused qkv projection; nothing special for the attention function"),
    )
}


def family_for(config: Any) -> Family:
    """The table entry for a model config, or :class:`UnsupportedModelError` naming its type."""
    model_type = getattr(config, "model_type", None)
    family = FAMILIES.get(model_type)
    if family is None:
        hint = ""
        if model_type == "gemma3":
            hint = " (for the multimodal Gemma 3 checkpoint, load the text model with Gemma3ForCausalLM)"
        raise UnsupportedModelError(
            f"attention transition does not support model_type {model_type!r}{hint}; "
            f"supported: {', '.join(sorted(FAMILIES))}")
    return family


def num_decoder_layers(config: Any) -> int:
    family = family_for(config)
    return int(getattr(config, family.layers_field))


def schedule_layout(config: Any) -> tuple[int, dict[int, int]]:
    """Layers the schedule spreads over, and attention ``layer_idx`` -> schedule layer where they
    differ (empty for ordinary decoders: every layer is an attention layer)."""
    return num_decoder_layers(config), {}

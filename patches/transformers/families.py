"""The transformers side of the model-layout facts (:mod:`attn_transition.families` holds the
engine-neutral table): how a transformers user edits what the table refuses as a whole."""

from __future__ import annotations

from typing import Any

from attn_transition import families
from attn_transition.errors import UnsupportedModelError

__all__ = ["family_for"]


def family_for(config: Any) -> families.Family:
    """:func:`attn_transition.families.family_for`; a multimodal model whose text decoder is
    supported is refused with the transformers way out (enable the decoder, or load the text-only
    checkpoint)."""
    try:
        return families.family_for(config)
    except UnsupportedModelError as err:
        if families.text_decoder_type(config) not in families.FAMILIES:
            raise
        raise UnsupportedModelError(f"{err}; in transformers: at.enable(model.get_decoder()), or load the "
                                    f"text-only checkpoint with AutoModelForCausalLM") from None

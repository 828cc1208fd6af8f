"""Tiny random models of every supported family, built from configs (no downloads)."""

from __future__ import annotations

import torch

VOCAB = 97


def _common(**extra):
    base = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=6,
                num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                pad_token_id=0, bos_token_id=1, eos_token_id=2)
    base.update(extra)
    return base


def family_configs():
    from transformers import (Gemma3TextConfig, LlamaConfig, MistralConfig, Phi3Config, Qwen2Config,
                              Qwen3Config)

    return {
        "llama": LlamaConfig(**_common()),
        "mistral": MistralConfig(**_common(sliding_window=48)),
        "qwen2": Qwen2Config(**_common()),
        "qwen3": Qwen3Config(**_common(head_dim=8)),
        "gemma3_text": Gemma3TextConfig(**_common(head_dim=8, sliding_window=48, query_pre_attn_scalar=8,
                                                 final_logit_softcapping=30.0,
                                                 layer_types=["sliding_attention", "sliding_attention",
                                                              "full_attention"] * 2)),
        "phi3": Phi3Config(**_common()),
    }


def tiny_model(family: str = "llama", *, seed: int = 0, attn_implementation: str = "sdpa", **overrides):
    from transformers import AutoModelForCausalLM

    config = family_configs()[family]
    for key, value in overrides.items():
        setattr(config, key, value)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, attn_implementation=attn_implementation)
    # Random init gives near-uniform attention; sharpen it so eliminations and additions happen.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("q_proj.weight", "k_proj.weight", "qkv_proj.weight")):
                p.mul_(6.0)
    return model.eval()


def ids(batch: int, n: int, *, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(3, VOCAB, (batch, n), generator=g)

"""Tiny random models of every supported family, built from configs (no downloads)."""

from __future__ import annotations

import torch

VOCAB = 97
N = 150                                      # prompt length of the tiny-model tests


def edit_configs():
    """Both schedules with thresholds lowered so that a ``N``-token prompt gets edited."""
    import attn_transition as at

    return at.ClassicConfig(min_length=0, beta=0.5), at.SRAConfig(begin_length=4, threshold_len=24)


def left_padded(batch: int, n: int, *, row: int, pad: int, seed: int = 0):
    """Random ids ``(batch, n)`` and their 0/1 mask with ``pad`` left-padding positions in ``row``."""
    x = ids(batch, n, seed=seed)
    mask = torch.ones_like(x)
    mask[row, :pad] = 0
    return x, mask


def greedy(mask: torch.Tensor, new_tokens: int, **extra) -> dict:
    """``generate`` keywords of a greedy batch run that returns its logits."""
    return dict(max_new_tokens=new_tokens, do_sample=False, pad_token_id=0, attention_mask=mask,
                return_dict_in_generate=True, output_logits=True, **extra)


def logits(model, x, **kw) -> torch.Tensor:
    """One forward pass without gradients; its logits."""
    with torch.no_grad():
        return model(x, **kw).logits


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


def tiny_model(family: str = "llama", *, seed: int = 0, attn_implementation: str = "sdpa", dtype=None,
               **overrides):
    """The tiny sharpened model of one of ``family_configs()``; ``dtype=torch.float64`` for tests
    that compare two computational paths (the weights are drawn in float32 either way, so a
    float64 model is the float32 one, upcast)."""
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
    if dtype is not None:
        model = model.to(dtype)
    return model.eval()


def reweight64(weights: torch.Tensor, layer_idx: int, num_layers: int, config, *, allowed=None) -> torch.Tensor:
    """``at.reweight`` computed in float64 (``at.reweight`` edits in float32 whatever it is given):
    the same plan and the same in-place edits, on a float64 copy. A reference for float64 paths."""
    from attn_transition.schedules import apply_plan, layer_plan, plan_rows

    out = weights.detach().to(torch.float64, copy=True)                 # (batch, heads, n, n)
    n = out.shape[-1]
    plan = layer_plan(config, layer_idx, num_layers, n)
    if plan:
        rows = torch.tensor(plan_rows(plan))
        sub = out[:, :, rows]                                           # (batch, heads, r, n) copy
        apply_plan(sub, plan)
        if allowed is not None:
            sub.mul_(allowed.to(torch.bool).expand_as(out)[:, :, rows])
        out[:, :, rows] = sub
    return out


def ids(batch: int, n: int, *, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(3, VOCAB, (batch, n), generator=g)


# ---------------------------------------------------------------------------------------------
# Every family in attn_transition/families.py (tests/test_families.py). Kept apart from family_configs()
# so the six-family suite in test_patch.py stays fast.

# Field values shared by every tiny config; a family's config class only receives the fields it
# declares (so one table serves Llama-, MoE-, MLA- and Mamba-style configs alike).
_TINY = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=5,
             num_attention_heads=4, num_key_value_heads=2, head_dim=8, max_position_embeddings=4096,
             pad_token_id=0, bos_token_id=1, eos_token_id=2,
             # mixture of experts
             num_experts=4, num_local_experts=4, n_routed_experts=4, num_experts_per_tok=2,
             moe_intermediate_size=32, shared_expert_intermediate_size=32, n_shared_experts=1,
             n_group=1, topk_group=1, first_k_dense_replace=1)
_SWA = 48            # sliding / chunked windows, shorter than the test prompts
_HYBRID_TYPES = ["linear_attention", "full_attention", "linear_attention", "full_attention",
                 "full_attention", "full_attention"]     # 4 softmax layers out of 6


def _field_names(cls) -> set:
    import dataclasses
    import inspect

    try:
        return {f.name for f in dataclasses.fields(cls)}
    except TypeError:                    # configs that are not dataclasses (older transformers)
        return set(inspect.signature(cls.__init__).parameters)


def _tiny(model_type: str, **overrides):
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    cls = CONFIG_MAPPING[model_type]
    names = _field_names(cls)
    kwargs = {k: v for k, v in _TINY.items() if k in names}
    kwargs.update(overrides)
    return cls(**kwargs)


def _sliding(pattern: str, n: int = 5) -> list:
    """``"ssf"`` -> sliding, sliding, full, repeated to ``n`` layers; the last layer is full
    (several families require it)."""
    kind = {"s": "sliding_attention", "f": "full_attention", "c": "chunked_attention"}
    return [kind[pattern[i % len(pattern)]] for i in range(n - 1)] + ["full_attention"]


# Multi-head latent attention: q/k heads of 8 + 4, value heads of 6, one key/value head per query head.
_MLA = dict(q_lora_rank=16, kv_lora_rank=16, qk_nope_head_dim=8, qk_rope_head_dim=4, v_head_dim=6,
            num_key_value_heads=4)
_DELTANET = dict(num_hidden_layers=6, layer_types=_HYBRID_TYPES, linear_num_key_heads=2, linear_num_value_heads=4,
                 linear_key_head_dim=8, linear_value_head_dim=8)
_MAMBA2 = dict(mamba_n_heads=8, mamba_d_head=8, mamba_d_state=8, mamba_chunk_size=32)

# model_type -> overrides of _TINY (only families available in the installed transformers are built);
# grouped as in attn_transition/families.py.
_FAMILY_OVERRIDES = {
    # dense decoders of the Llama kind
    "llama": {},
    "mistral": dict(sliding_window=_SWA),
    "ministral": dict(sliding_window=_SWA, layer_types=_sliding("sf")),
    "ministral3": dict(sliding_window=_SWA),
    "qwen2": dict(use_sliding_window=True, sliding_window=_SWA, max_window_layers=2),
    "qwen3": {},
    "olmo": {},
    "olmo2": {},
    "olmo3": dict(sliding_window=_SWA, layer_types=_sliding("ssf")),
    "granite": dict(attention_multiplier=0.25, embedding_multiplier=2.0, residual_multiplier=0.5,
                    logits_scaling=2.0),
    "cohere": {},
    "cohere2": dict(sliding_window=_SWA, layer_types=_sliding("ssf")),
    "glm": {},
    "glm4": {},
    "smollm3": dict(no_rope_layers=[1, 0, 1, 0, 1]),
    "starcoder2": dict(sliding_window=_SWA),
    "phi3": {},
    "stablelm": dict(partial_rotary_factor=0.5),
    "persimmon": {},
    "nemotron": {},
    "helium": {},
    "hunyuan_v1_dense": {},
    "ernie4_5": {},
    "seed_oss": {},
    "exaone": {},
    "exaone4": dict(sliding_window=_SWA, layer_types=_sliding("ssf")),
    "internlm3": {},
    "iquestcoder": {},
    "hyperclovax": {},
    "jais2": {},
    "apertus": {},
    "apertus1p5_text": {},
    "arcee": {},
    "bitnet": {},
    "nanochat": dict(final_logit_softcapping=15.0),
    "cwm": dict(sliding_window=_SWA, layer_types=_sliding("sf")),
    "beam": dict(sliding_window=_SWA, layer_types=_sliding("sf")),
    "kolibri1": dict(sliding_window=_SWA, layer_types=_sliding("sf")),
    "laguna": {},
    "diffllama": {},
    "doge": dict(keep_window_size=2048),
    # Gemma
    "gemma": {},
    "gemma2": dict(sliding_window=_SWA, query_pre_attn_scalar=8, attn_logit_softcapping=5.0,
                   final_logit_softcapping=30.0, layer_types=_sliding("sf")),
    "gemma3_text": dict(sliding_window=_SWA, query_pre_attn_scalar=8, layer_types=_sliding("ssf")),
    # six layers: with five, the two KV-sharing layers read keys the edited rows cannot reach
    "gemma3n_text": dict(num_hidden_layers=6, sliding_window=_SWA, layer_types=_sliding("sf", 6),
                         vocab_size_per_layer_input=VOCAB, hidden_size_per_layer_input=8, laurel_rank=4,
                         num_kv_shared_layers=2, activation_sparsity_pattern=[0.0] * 6, altup_num_inputs=2),
    "gemma4_text": dict(sliding_window=_SWA, layer_types=_sliding("ssf"), vocab_size_per_layer_input=VOCAB,
                        hidden_size_per_layer_input=8, global_head_dim=16),
    "gemma4_unified_text": dict(sliding_window=_SWA, layer_types=_sliding("ssf"), vocab_size_per_layer_input=VOCAB,
                                hidden_size_per_layer_input=8, global_head_dim=16),
    "vaultgemma": dict(sliding_window=_SWA, query_pre_attn_scalar=8, attn_logit_softcapping=5.0,
                       layer_types=_sliding("sf")),
    # older absolute-position / fused-qkv decoders
    "gpt_neox": dict(rotary_pct=0.5),
    "phi": dict(partial_rotary_factor=0.5),
    "gpt_bigcode": dict(n_embd=32, n_layer=5, n_head=4, n_positions=4096, n_inner=64, multi_query=True),
    "gpt2": dict(n_embd=32, n_layer=5, n_head=4, n_positions=4096, n_inner=64),
    "gptj": dict(n_embd=32, n_layer=5, n_head=4, rotary_dim=4, n_positions=4096, n_inner=64),
    "codegen": dict(n_embd=32, n_layer=5, n_head=4, rotary_dim=4, n_positions=4096, n_ctx=4096, n_inner=64),
    "ctrl": dict(n_embd=32, dff=64, n_layer=5, n_head=4, n_positions=4096, resid_pdrop=0.0, embd_pdrop=0.0),
    "opt": dict(ffn_dim=64, word_embed_proj_dim=32, dropout=0.0),
    "biogpt": dict(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0),
    # mixture of experts
    # floor_scale as released: the temperature tuning of NoPE layers starts at 8192 tokens (it scales q
    # by absolute index, padding included, so with it on even the stock model is not padding-invariant)
    "llama4_text": dict(intermediate_size_mlp=64, num_local_experts=2, num_experts_per_tok=1,
                        attention_chunk_size=_SWA, layer_types=_sliding("cccf"), no_rope_layers=[1, 1, 1, 0, 1],
                        floor_scale=8192),
    "mixtral": dict(sliding_window=_SWA),
    "qwen2_moe": {},
    "qwen3_moe": {},
    "phimoe": {},
    "olmoe": {},
    "flex_olmo": {},
    "granitemoe": dict(attention_multiplier=0.25),
    "granitemoeshared": dict(attention_multiplier=0.25, shared_intermediate_size=32),
    "cohere2_moe": dict(sliding_window=_SWA, layer_types=_sliding("ssf")),
    "glm4_moe": {},
    "dbrx": dict(d_model=32, n_heads=4, n_layers=5, max_seq_len=4096,
                 attn_config=dict(kv_n_heads=2, rope_theta=10000.0, clip_qkv=8.0),
                 ffn_config=dict(ffn_hidden_size=64, moe_num_experts=4, moe_top_k=2, hidden_size=32)),
    "jetmoe": {},
    "minimax_m2": {},
    "dots1": {},
    "hunyuan_v1_moe": {},
    "hy_v3": dict(mlp_layer_types=["dense"] + ["sparse"] * 4, num_shared_experts=1),
    "ernie4_5_moe": {},
    "aria_text": {},
    "afmoe": dict(sliding_window=_SWA, layer_types=_sliding("sf"), num_dense_layers=1),
    "exaone_moe": dict(sliding_window=_SWA, layer_types=_sliding("sf")),
    "sarvam_moe": {},
    "solar_open": {},
    "mellum": {},
    # multi-head latent attention
    "deepseek_v2": _MLA,
    "deepseek_v3": _MLA,
    "glm4_moe_lite": dict(_MLA, mlp_layer_types=["dense"] + ["sparse"] * 4),
    "minicpm3": dict(_MLA, dim_model_base=32),
    "youtu": _MLA,
    "sarvam_mla": _MLA,
    "axk1": dict(_MLA, mlp_layer_types=["dense"] + ["sparse"] * 4),
    "longcat_flash": dict(_MLA, num_layers=3, head_dim=4, ffn_hidden_size=64, expert_ffn_hidden_size=32,
                          moe_topk=2, zero_expert_num=2),
    # attention sinks
    "gpt_oss": dict(sliding_window=_SWA, layer_types=_sliding("sf")),
    "granite_swa": dict(sliding_window=_SWA, layer_types=_sliding("sf")),
    "granitemoe_swa": dict(sliding_window=_SWA, layer_types=_sliding("sf")),
    "mimo_v2_flash": dict(sliding_window=_SWA, layer_types=_sliding("sf")),
    "flint": dict(sliding_window=_SWA, layer_types=_sliding("sf")),
    # hybrids, each with four or more softmax-attention layers among other kinds
    "qwen3_next": _DELTANET,
    "qwen3_5_text": _DELTANET,
    "qwen3_5_moe_text": _DELTANET,
    "jamba": dict(num_hidden_layers=8, attn_layer_period=2, attn_layer_offset=1, expert_layer_period=2,
                  expert_layer_offset=1, mamba_d_state=8, mamba_dt_rank=8, use_mamba_kernels=False),
    "bamba": dict(_MAMBA2, num_hidden_layers=6, attn_layer_indices=[1, 3, 4, 5]),
    "granitemoehybrid": dict(_MAMBA2, num_hidden_layers=6, layer_types=_HYBRID_TYPES, shared_intermediate_size=32),
    "nemotron_h": dict(layers_block_type=["linear_attention", "full_attention", "mlp", "full_attention", "moe",
                                          "full_attention", "full_attention"],
                       num_hidden_layers=7, ssm_state_size=8, mamba_num_heads=8, mamba_head_dim=8, n_groups=1,
                       chunk_size=32, moe_shared_expert_intermediate_size=32, use_mamba_kernels=False),
    "falcon_h1": dict(_MAMBA2, mamba_d_ssm=64),
    "lfm2": dict(num_hidden_layers=6, layer_types=["conv", "full_attention", "conv", "full_attention",
                                                    "full_attention", "full_attention"]),
    "lfm2_moe": dict(num_hidden_layers=6, num_dense_layers=1,
                     layer_types=["conv", "full_attention", "conv", "full_attention", "full_attention",
                                  "full_attention"]),
    "lfm3": dict(num_hidden_layers=6, sliding_window=_SWA,
                 layer_types=["conv", "sliding_attention", "conv", "full_attention", "sliding_attention",
                              "full_attention"]),
    "minimax": dict(num_hidden_layers=6, layer_types=_HYBRID_TYPES, block_size=16),
    "olmo_hybrid": dict(num_hidden_layers=6, layer_types=_HYBRID_TYPES, linear_num_key_heads=2,
                        linear_num_value_heads=2, linear_key_head_dim=8, linear_value_head_dim=8),
    "kimi_linear": dict(_MLA, num_hidden_layers=6, layer_types=_HYBRID_TYPES, q_lora_rank=None, linear_head_dim=8,
                        linear_num_heads=4, mlp_layer_types=["dense"] + ["sparse"] * 5),
    "lara_mini": dict(num_hidden_layers=6, sliding_window=_SWA,
                      layer_types=["linear_attention", "sliding_attention", "linear_attention", "full_attention",
                                   "sliding_attention", "full_attention"]),
    "recurrent_gemma": dict(num_hidden_layers=6, lru_width=32, attention_window_size=_SWA,
                            block_types=["recurrent", "attention", "recurrent", "attention", "attention",
                                         "attention"]),
}


def all_family_configs() -> dict:
    """A tiny config for every family in the table, as far as the installed transformers has it."""
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    return {t: _tiny(t, **kw) for t, kw in _FAMILY_OVERRIDES.items() if t in CONFIG_MAPPING}


_OUT_WEIGHTS = ("o_proj.weight", "dense.weight", "c_proj.weight", "out_proj.weight")
# Families whose attention output is small next to the residual stream (scaled or unit-variance
# embeddings, Granite's residual multiplier): their attention output projection is scaled up more.
_SHARPEN = {
    **{f: dict(output=6.0) for f in ("gemma", "granite", "biogpt")},
    **{f: dict(output=4.0) for f in ("sarvam_mla", "sarvam_moe", "granitemoehybrid", "gpt_bigcode", "gpt2", "hy_v3")},
    **{f: dict(output=12.0) for f in ("vaultgemma", "ctrl", "minicpm3")},
    "minimax": dict(output=40.0),
    "nanochat": dict(output=100.0),            # its embeddings are drawn with std 1
}
_CALIBRATION = "attn_transition_test_calibration"


def _score_spreads(model) -> dict:
    """One stock forward; for every attention module, the standard deviation of its scaled
    scores ``q k^T * scaling`` over the (query, key) pairs its mask allows."""
    import sys

    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, eager_mask

    spreads: dict = {}

    def measure(module, query, key, value, attention_mask, scaling=None, **kwargs):
        k = key.repeat_interleave(query.shape[1] // key.shape[1], 1)
        s = query.float() @ k.float().transpose(-1, -2) * (query.shape[-1] ** -0.5 if scaling is None else scaling)
        allowed = torch.ones(s.shape[-2:], dtype=torch.bool).tril() if attention_mask is None else \
            attention_mask[..., :key.shape[2]] > torch.finfo(attention_mask.dtype).min / 2
        spreads[module] = float(s.masked_select(allowed.expand_as(s)).std())
        eager = sys.modules[type(module).__module__].eager_attention_forward
        return eager(module, query, key, value, attention_mask, scaling=scaling, **kwargs)

    AttentionInterface.register(_CALIBRATION, measure)
    AttentionMaskInterface.register(_CALIBRATION, eager_mask)
    impl = model.config._attn_implementation
    model.set_attn_implementation(_CALIBRATION)
    try:
        with torch.no_grad():
            model(ids(1, 150, seed=99))
    finally:
        model.set_attn_implementation(impl)
    return spreads


def sharpen(model, *, spread: float = 4.0, output: float = 2.0, sinks: float = 2.0):
    """Make a random model's attention sharp enough for the schedules to remove and move mass.

    Random initialisation gives near-uniform rows. Each attention module's own ``scaling``
    (the factor it passes to the attention function) is set so that its scaled scores have
    standard deviation ``spread`` on a random prompt, whatever the family's projections and
    q/k norms; ``output`` scales the attention output projection so that attention moves the
    residual stream, and attention-sink logits (gpt-oss) are drawn with standard deviation
    ``sinks`` so the sink takes a real share.
    """
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(_OUT_WEIGHTS):
                p.mul_(output)
        for module in model.modules():
            if isinstance(getattr(module, "sinks", None), torch.nn.Parameter):
                module.sinks.normal_(0.0, sinks)
    for module, measured in _score_spreads(model).items():
        module.scaling = module.scaling * spread / measured
    return model


def family_model(family: str, *, seed: int = 0, attn_implementation=None):
    """The tiny sharpened model of one family, on its default attention implementation."""
    from transformers import AutoModelForCausalLM

    config = _tiny(family, **_FAMILY_OVERRIDES[family])
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, attn_implementation=attn_implementation)
    return sharpen(model.eval(), **_SHARPEN.get(family, {}))

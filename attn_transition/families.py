"""Per-architecture facts, as a small table keyed by ``config.model_type``: the model-layout facts
both engines need (the transformers integration and the vLLM plugin read the same Hugging Face
config: ``model.config`` / vLLM's ``hf_text_config``).

The attention function itself is architecture-agnostic: transformers hands it the
query/key/value after RoPE (or none, on NoPE layers) and the cache update, the layer's
mask (sliding windows, chunks and padding included) and the layer's ``scaling`` /
``softcap`` / sink logits. What differs per family is which decoder layers hold softmax
attention (hybrid models mix them with Mamba, convolution or linear-attention layers),
how the schedule counts them, and a note for users.

Every family in :data:`FAMILIES` is exercised by ``tests/test_families.py`` on a tiny
random model; :data:`REFUSED` lists the decoder families that were examined and cannot be
edited faithfully, with the reason given to the user.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from attn_transition.errors import UnsupportedModelError

__all__ = ["Family", "FAMILIES", "REFUSED", "SOFTMAX_LAYER_TYPES", "OTHER_LAYER_TYPES", "family_for",
           "text_decoder_type", "num_decoder_layers", "attention_layers", "schedule_layout"]

# ``config.layer_types`` entries of decoder layers that run softmax attention (Falcon-H1's
# "hybrid" layers run attention and a Mamba mixer side by side), and of layers that do not.
SOFTMAX_LAYER_TYPES = frozenset({"full_attention", "sliding_attention", "chunked_attention", "hybrid"})
OTHER_LAYER_TYPES = frozenset({"linear_attention", "conv", "mamba", "mlp", "moe"})


@dataclass(frozen=True)
class Family:
    model_type: str
    note: str = ""
    layers_field: str = "num_hidden_layers"
    # Only some decoder layers hold softmax attention; ``config.layer_types`` says which.
    hybrid: bool = False
    # Attention modules per decoder layer, numbered layer_idx = k * i + j (LongCat-Flash: 2).
    attention_per_layer: int = 1


def _f(model_type: str, note: str = "", **kw: Any) -> Family:
    return Family(model_type, note, **kw)


_SWA = "sliding-window layers keep their window (edits never land outside it)"
_HYBRID = "hybrid: only its softmax-attention layers are edited and counted by the schedule"
_MLA = "multi-head latent attention: the value head size differs from the query/key head size"
_SINKS = ("learned attention sinks take their share of each row's softmax (the sink logit joins the softmax and "
          "is then dropped); edits move only the mass they remove")

FAMILIES: dict[str, Family] = {
    f.model_type: f
    for f in (
        # --- dense decoders of the Llama kind (RoPE, RMSNorm, grouped-query attention)
        _f("llama", "Llama 2 / 3 / 3.x, SmolLM2, ..."),
        _f("mistral", "Mistral 7B; " + _SWA),
        _f("ministral", "Ministral: alternating sliding / full layers; " + _SWA),
        _f("ministral3", "Ministral 3; " + _SWA),
        _f("qwen2", "Qwen2 / 2.5; layers above max_window_layers may use a sliding window; it is kept"),
        _f("qwen3", "Qwen3: q/k norms, applied before the attention function"),
        _f("olmo", "OLMo 1"),
        _f("olmo2", "OLMo 2: q/k norms over the full projection"),
        _f("olmo3", "OLMo 3: " + _SWA),
        _f("granite", "Granite 3: attention_multiplier is the layer's scaling and is honoured"),
        _f("cohere", "Command-R: parallel attention / MLP block"),
        _f("cohere2", "Command R7B / A: 3 of every 4 layers sliding-window (kept); global layers without RoPE"),
        _f("glm", "GLM-4 (first generation): partial rotary embedding"),
        _f("glm4", "GLM-4-0414"),
        _f("smollm3", "SmolLM3: every fourth layer has no RoPE (NoPE); nothing special for the attention function"),
        _f("starcoder2", "StarCoder2: biased projections; " + _SWA),
        _f("phi3", "Phi-3 / Phi-4 (phi-4 checkpoints use this model_type): fused qkv projection"),
        _f("stablelm", "StableLM: partial rotary embedding"),
        _f("persimmon", "Persimmon: q/k layer norms, partial rotary embedding"),
        _f("nemotron", "Nemotron / Minitron: partial rotary embedding"),
        _f("helium", "Helium"),
        _f("hunyuan_v1_dense", "Hunyuan dense: q/k norms after RoPE"),
        _f("ernie4_5", "ERNIE 4.5"),
        _f("seed_oss", "Seed-OSS"),
        _f("exaone", "EXAONE 3 / 3.5"),
        _f("exaone4", "EXAONE 4: " + _SWA),
        _f("internlm3", "InternLM3"),
        _f("iquestcoder", "IQuest-Coder"),
        _f("hyperclovax", "HyperCLOVA X"),
        _f("jais2", "Jais 2"),
        _f("apertus", "Apertus: q/k norms, xIELU MLP"),
        _f("apertus1p5_text", "Apertus 1.5 text decoder"),
        _f("arcee", "Arcee (AFM)"),
        _f("bitnet", "BitNet b1.58: an extra norm on the attention output"),
        _f("nanochat", "nanochat: q/k norms after RoPE, final-logit softcap"),
        _f("cwm", "Code World Model: " + _SWA),
        _f("beam", "Beam: " + _SWA),
        _f("kolibri1", "Kolibri 1: " + _SWA),
        _f("laguna", "Laguna"),
        _f("diffllama", "differential attention: the layer calls the attention function twice (two softmax "
                        "maps over shared q/k); both maps are edited, then combined by the model"),
        _f("doge", "Doge: dynamic mask attention (a learned additive mask, honoured like any mask)"),
        # --- Gemma: sliding windows, softcaps, query_pre_attn_scalar
        _f("gemma", "Gemma 1"),
        _f("gemma2", "Gemma 2: eager only (the base is Gemma 2's own eager attention); attention-logit softcap "
                     "and the scaling from query_pre_attn_scalar honoured; " + _SWA),
        _f("gemma3_text", "Gemma 3 (text): 5 of every 6 layers sliding-window, the window is kept; the scaling "
                          "from query_pre_attn_scalar and any softcap honoured"),
        _f("gemma3n_text", "Gemma 3n text decoder: the last layers reuse earlier layers' keys / values "
                           "(KV sharing); " + _SWA),
        _f("gemma4_text", "Gemma 4 text decoder: global layers have a larger head size than sliding ones; "
                          + _SWA),
        _f("gemma4_unified_text", "Gemma 4 unified text decoder: " + _SWA),
        _f("vaultgemma", "VaultGemma: eager only; attention-logit softcap honoured; " + _SWA),
        # --- older absolute-position / fused-qkv decoders
        _f("gpt_neox", "GPT-NeoX, Pythia: fused qkv, partial rotary embedding"),
        _f("phi", "Phi-1 / 1.5 / 2: partial rotary embedding, biased projections"),
        _f("gpt_bigcode", "StarCoder / SantaCoder: multi-query attention", layers_field="n_layer"),
        _f("gpt2", "GPT-2: absolute positions, fused qkv projection", layers_field="n_layer"),
        _f("gptj", "GPT-J: partial rotary embedding", layers_field="n_layer"),
        _f("codegen", "CodeGen: fused qkv, partial rotary embedding", layers_field="n_layer"),
        _f("ctrl", "CTRL: sinusoidal absolute positions", layers_field="n_layer"),
        _f("opt", "OPT: learned absolute positions"),
        _f("biogpt", "BioGPT: learned absolute positions"),
        # --- mixture of experts
        _f("llama4_text", "Llama 4 text decoder: chunked-attention layers keep their chunks; NoPE layers (with "
                          "attention-temperature tuning of q) and L2-normalised q/k are applied before the "
                          "attention function"),
        _f("mixtral", "Mixtral; " + _SWA),
        _f("qwen2_moe", "Qwen2-MoE (Qwen1.5-MoE)"),
        _f("qwen3_moe", "Qwen3-MoE"),
        _f("phimoe", "Phi-3.5-MoE"),
        _f("olmoe", "OLMoE"),
        _f("flex_olmo", "FlexOlmo"),
        _f("granitemoe", "Granite 3 MoE: attention_multiplier (the layer's scaling) honoured"),
        _f("granitemoeshared", "Granite MoE with shared experts: attention_multiplier (the layer's scaling) honoured"),
        _f("cohere2_moe", "Cohere 2 MoE: " + _SWA),
        _f("glm4_moe", "GLM-4.5 / 4.6"),
        _f("dbrx", "DBRX: fused, clipped qkv", layers_field="n_layers"),
        _f("jetmoe", "JetMoE: mixture of attention heads (the attention function sees the routed heads)"),
        _f("minimax_m2", "MiniMax-M2"),
        _f("dots1", "dots.llm1"),
        _f("hunyuan_v1_moe", "Hunyuan MoE"),
        _f("hy_v3", "Hunyuan V3"),
        _f("ernie4_5_moe", "ERNIE 4.5 MoE"),
        _f("aria_text", "Aria text decoder"),
        _f("afmoe", "AFMoE: " + _SWA),
        _f("exaone_moe", "EXAONE MoE: " + _SWA),
        _f("sarvam_moe", "Sarvam MoE"),
        _f("solar_open", "Solar Open"),
        _f("mellum", "Mellum 2"),
        # --- multi-head latent attention
        _f("deepseek_v2", "DeepSeek-V2: " + _MLA),
        _f("deepseek_v3", "DeepSeek-V3 / R1: " + _MLA),
        _f("glm4_moe_lite", "GLM-4.7-Flash: " + _MLA),
        _f("minicpm3", "MiniCPM3: " + _MLA),
        _f("youtu", "Youtu-LLM: " + _MLA),
        _f("sarvam_mla", "Sarvam MLA: " + _MLA),
        _f("axk1", "A.X K1: " + _MLA),
        _f("longcat_flash", "LongCat-Flash: two attention sublayers per decoder layer (layer_idx 2i and 2i+1), "
                            "both counted by the schedule; " + _MLA, layers_field="num_layers", attention_per_layer=2),
        # --- attention sinks
        _f("gpt_oss", "gpt-oss: eager only (the base is its own eager attention); " + _SINKS + "; " + _SWA),
        _f("granite_swa", "Granite SWA: eager only; " + _SINKS + " (its eager function applies the sink as an "
                          "output scale, the same softmax); " + _SWA),
        _f("granitemoe_swa", "Granite MoE SWA: eager only; " + _SINKS + "; " + _SWA),
        _f("mimo_v2_flash", "MiMo-V2-Flash: eager only; " + _SINKS + "; value head size differs; " + _SWA),
        _f("flint", "flint: eager only; " + _SINKS + "; " + _SWA),
        # --- hybrids: the schedule counts the softmax-attention layers only (see schedule_layout)
        _f("qwen3_next", "Qwen3-Next: " + _HYBRID + " (gated DeltaNet layers are left alone; the output gate "
                         "of its attention acts after the edited rows)", hybrid=True),
        _f("qwen3_5_text", "Qwen3.5 text decoder: " + _HYBRID + " (gated DeltaNet layers are left alone)",
           hybrid=True),
        _f("qwen3_5_moe_text", "Qwen3.5-MoE text decoder: " + _HYBRID, hybrid=True),
        _f("jamba", "Jamba: " + _HYBRID + " (Mamba layers are left alone); attention without RoPE", hybrid=True),
        _f("bamba", "Bamba: " + _HYBRID + " (Mamba-2 layers are left alone)", hybrid=True),
        _f("granitemoehybrid", "Granite 4: " + _HYBRID + " (Mamba-2 layers are left alone)", hybrid=True),
        _f("nemotron_h", "Nemotron-H: " + _HYBRID + " (Mamba-2, MLP and MoE layers are left alone)", hybrid=True),
        _f("falcon_h1", "Falcon-H1: every layer runs attention and a Mamba-2 mixer side by side; the attention "
                        "half of every layer is edited and counted", hybrid=True),
        _f("lfm2", "LFM2: " + _HYBRID + " (short-convolution layers are left alone)", hybrid=True),
        _f("lfm2_moe", "LFM2-MoE: " + _HYBRID + " (short-convolution layers are left alone)", hybrid=True),
        _f("lfm3", "LFM3: " + _HYBRID + " (short-convolution layers are left alone); " + _SWA, hybrid=True),
        _f("minimax", "MiniMax-Text-01: " + _HYBRID + " (lightning-attention layers are left alone)", hybrid=True),
        _f("olmo_hybrid", "OLMo hybrid: " + _HYBRID + " (linear-attention layers are left alone)", hybrid=True),
        _f("kimi_linear", "Kimi Linear: " + _HYBRID + " (delta-attention layers are left alone); its softmax "
                          "layers use " + _MLA, hybrid=True),
        _f("lara_mini", "Lara mini: " + _HYBRID + " (linear-attention layers are left alone); " + _SWA,
           hybrid=True),
        _f("recurrent_gemma", "RecurrentGemma: " + _HYBRID + " (RG-LRU layers are left alone); its attention "
                              "layers are local (sliding window, kept)", hybrid=True),
    )
}

_ENC_DEC = ("not a decoder-only model: this causal-LM head is the decoder half of an encoder or "
            "encoder-decoder architecture (cross-attention, bidirectional pre-training)")
_NOT_REGISTRY = "its attention does not go through transformers' AttentionInterface, so it cannot be patched"
_NO_SOFTMAX = "it has no softmax attention (a state-space / recurrent model)"
_SPARSE = ("sparse attention: an indexer chooses which keys each query sees and passes them to the "
           "attention function as extra arguments; the edited rows would see keys the model does not")

_POSITION_BIAS = ("its attention adds a learned relative-position bias (position_bias=) to the scores, "
                  "which the edited rows do not add")
_LOOPED = ("looped decoder: the same attention layers run several times per token, so a layer's depth is "
           "not its layer_idx and the schedule has no position for each run")

# Decoder families examined and refused, with the reason the user is told.
REFUSED: dict[str, str] = {
    **{t: _ENC_DEC for t in (
        "bart", "bert", "bert-generation", "big_bird", "bigbird_pegasus", "blenderbot", "blenderbot-small",
        "camembert", "data2vec-text", "electra", "ernie", "marian", "mbart", "megatron-bert", "mvp",
        "pegasus", "plbart", "prophetnet", "rembert", "roberta", "roberta-prelayernorm", "roc_bert",
        "roformer", "trocr", "whisper", "xlm", "xlm-roberta", "xlm-roberta-xl", "xmod", "musicgen",
        "musicgen_melody")},
    **{t: _NOT_REGISTRY for t in (
        "bloom", "cpmant", "falcon", "gpt_neo", "gpt_neox_japanese", "mpt", "openai-gpt", "reformer", "xglm",
        "xlnet")},
    **{t: _NO_SOFTMAX for t in ("mamba", "mamba2", "falcon_mamba", "rwkv", "xlstm")},
    **{t: _SPARSE for t in ("deepseek_v32", "glm_moe_dsa", "axk2", "hy_v4", "minimax_m3_vl_text")},
    **{t: _LOOPED for t in ("hrm_text", "dory", "inkling2_loop_text")},
    **{t: _POSITION_BIAS for t in ("inkling_text", "inkling2_text")},
    "dots3_note_text": _SPARSE,
    "deepseek_v4": ("compressed attention: the keys are a sliding window plus compressed summaries of earlier "
                    "blocks, not one key per token, so the schedule's token positions have no key columns"),
    "blt": ("byte-level model: local byte encoders / decoders cross-attend to a global transformer over "
            "patches, so there is no token-level self-attention to edit"),
    "git": ("image-to-text decoder whose image tokens share the self-attention bidirectionally "
            "(is_causal=False); not a causal prompt"),
    "zamba": ("one attention block is shared by several depths (the depth is a forward argument, not the "
              "module's layer_idx), so the schedule has no position for each call"),
    "zamba2": ("one attention block is shared by several depths (the depth is a forward argument, not the "
               "module's layer_idx), so the schedule has no position for each call"),
}


def text_decoder_type(config: Any) -> Optional[str]:
    """The ``model_type`` of a multimodal config's text decoder (``config.text_config``), or None."""
    return getattr(getattr(config, "text_config", None), "model_type", None)


def _multimodal_hint(config: Any) -> str:
    text_type = text_decoder_type(config)
    if text_type is None:
        return ""
    if text_type in FAMILIES:
        return (f"; it is a multimodal model whose text decoder (a {text_type!r} model) is supported: edit the "
                f"text decoder alone (the vision/audio towers are left untouched)")
    return f"; it is a multimodal model whose text decoder ({text_type!r}) is not supported either"


def family_for(config: Any) -> Family:
    """The table entry for a model config, or :class:`UnsupportedModelError` naming its type and why.

    Engine-neutral: the message says what to edit, not how in a given engine (the transformers
    integration adds its way, :func:`attn_transition.patches.transformers.families.family_for`)."""
    model_type = getattr(config, "model_type", None)
    family = FAMILIES.get(model_type)
    if family is not None:
        return family
    if model_type in REFUSED:
        raise UnsupportedModelError(
            f"attention transition does not support model_type {model_type!r}: {REFUSED[model_type]}")
    raise UnsupportedModelError(
        f"attention transition does not support model_type {model_type!r}{_multimodal_hint(config)}; "
        f"supported: {', '.join(sorted(FAMILIES))}")


def num_decoder_layers(config: Any) -> int:
    """Number of decoder layers (all of them, attention or not)."""
    family = family_for(config)
    return int(getattr(config, family.layers_field))


def attention_layers(config: Any) -> list[int]:
    """Decoder-layer indices (the attention modules' ``layer_idx``) that run softmax attention."""
    family = family_for(config)
    n = num_decoder_layers(config)
    if not family.hybrid:
        return list(range(n * family.attention_per_layer))
    types = list(getattr(config, "layer_types", None) or ())
    if len(types) != n:
        raise UnsupportedModelError(
            f"{family.model_type}: config.layer_types has {len(types)} entries for {n} decoder layers")
    unknown = sorted(set(types) - SOFTMAX_LAYER_TYPES - OTHER_LAYER_TYPES)
    if unknown:
        raise UnsupportedModelError(
            f"{family.model_type}: unknown decoder layer type(s) {unknown}; cannot tell which layers hold "
            f"softmax attention")
    layers = [i for i, t in enumerate(types) if t in SOFTMAX_LAYER_TYPES]
    if not layers:
        raise UnsupportedModelError(f"{family.model_type}: this config has no softmax-attention layer")
    return layers


def schedule_layout(config: Any) -> tuple[int, dict[int, int]]:
    """How the schedule spreads over the model: ``(num_layers, {layer_idx: position})``.

    The schedule counts softmax-attention layers only. In an ordinary model that is every
    decoder layer and the map is the identity. In a hybrid model (Jamba, Qwen3-Next, LFM2,
    Nemotron-H, ...) the Mamba / convolution / linear-attention layers have no post-softmax
    matrix to edit; counting them would hand their share of the sweep (the blocks of rows
    the classic schedule edits at that depth, the SRA spans that move with depth) to layers
    that cannot use it, so those parts of the prompt would never be edited. Counting only
    the attention layers gives the A attention layers of a hybrid the same schedule as an
    A-layer transformer: position p is the p-th attention layer from the bottom.
    """
    layers = attention_layers(config)
    return len(layers), {layer: position for position, layer in enumerate(layers)}

"""Per-architecture facts, as a small table keyed by ``config.model_type``.

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
from typing import Any

from attn_transition.errors import UnsupportedModelError

__all__ = ["Family", "FAMILIES", "REFUSED", "SOFTMAX_LAYER_TYPES", "OTHER_LAYER_TYPES", "family_for",
           "num_decoder_layers", "attention_layers", "schedule_layout"]

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


def _f(model_type: str, note: str = "", **kw: Any) -> Family:
    return Family(model_type, note, **kw)


_SWA = "sliding-window layers keep their window (edits never land outside it)"
_HYBRID = "hybrid: only its softmax-attention layers are edited and counted by the schedule"

FAMILIES: dict[str, Family] = {
    f.model_type: f
    for f in (
        # Llama and close relatives
        _f("llama", "Llama 2 / 3 / 3.x, SmolLM2, ..."),
        _f("llama4_text", "Llama 4 text: chunked-attention layers keep their chunks; NoPE layers (with "
                          "attention-temperature tuning of q) and L2-normalised q/k are applied before "
                          "the attention function"),
        _f("mistral", _SWA),
        _f("ministral", "alternating sliding / full layers; " + _SWA),
        _f("ministral3", "Ministral 3; " + _SWA),
        _f("mixtral", "mixture of experts; " + _SWA),
        _f("qwen2", "Qwen2 / 2.5; layers above max_window_layers may use a sliding window; it is kept"),
        _f("qwen2_moe", "Qwen2-MoE (Qwen1.5-MoE)"),
        _f("qwen3", "q/k norms are applied before the attention function"),
        _f("qwen3_moe", "Qwen3-MoE"),
        _f("qwen3_next", "Qwen3-Next; " + _HYBRID + " (gated DeltaNet layers are left alone; the "
                         "output gate of its attention acts after the edited rows)", hybrid=True),
        _f("qwen3_5_text", "Qwen3.5 text decoder; " + _HYBRID, hybrid=True),
        _f("qwen3_5_moe_text", "Qwen3.5-MoE text decoder; " + _HYBRID, hybrid=True),
        _f("gemma", "Gemma 1"),
        _f("gemma2", "eager only (the base is Gemma 2's own eager attention); attention-logit softcap "
                     "and query_pre_attn_scalar scaling are honoured; " + _SWA),
        _f("gemma3_text", "5 of every 6 layers are sliding-window: the window is kept; "
                          "query_pre_attn_scalar scaling and any softcap are honoured"),
        _f("gemma4_text", "Gemma 4 text decoder: sliding and global layers with different head sizes; "
                          + _SWA),
        _f("vaultgemma", "attention-logit softcap honoured; " + _SWA),
        _f("phi", "Phi-1 / 1.5 / 2: partial rotary embedding, biased projections"),
        _f("phi3", "Phi-3 / Phi-4 (phi-4 checkpoints use this model_type): fused qkv projection"),
        _f("phimoe", "Phi-3.5-MoE"),
        _f("olmo", "OLMo 1"),
        _f("olmo2", "q/k norms over the full projection, applied before the attention function"),
        _f("olmo3", "OLMo 3: " + _SWA),
        _f("olmoe", "OLMoE"),
        _f("flex_olmo", "FlexOlmo"),
        _f("granite", "Granite 3: attention_multiplier is the layer's scaling and is honoured"),
        _f("granitemoe", "Granite 3 MoE: attention_multiplier scaling honoured"),
        _f("granitemoeshared", "Granite MoE with shared experts: attention_multiplier scaling honoured"),
        _f("granitemoehybrid", "Granite 4: " + _HYBRID + " (Mamba-2 layers are left alone)", hybrid=True),
        _f("cohere", "Command-R: parallel attention / MLP block"),
        _f("cohere2", "Command R7B / A: 3 of every 4 layers sliding-window (kept), global layers without "
                      "RoPE"),
        _f("cohere2_moe", "Cohere 2 MoE: " + _SWA),
        _f("glm", "GLM-4 (first generation): partial rotary embedding"),
        _f("glm4", "GLM-4-0414"),
        _f("glm4_moe", "GLM-4.5 / 4.6"),
        _f("deepseek_v2", "multi-head latent attention: the value head size differs from the query/key "
                          "head size"),
        _f("deepseek_v3", "DeepSeek-V3 / R1: multi-head latent attention; the value head size differs "
                          "from the query/key head size"),
        _f("gpt_oss", "eager only; learned attention sinks take their share of each row's softmax "
                      "(the sink logit joins the softmax and is then dropped); " + _SWA),
        _f("smollm3", "SmolLM3: every fourth layer has no RoPE (NoPE); nothing special for the attention "
                      "function"),
        _f("starcoder2", "biased projections; " + _SWA),
        _f("gpt_neox", "Pythia, GPT-NeoX: fused qkv, partial rotary embedding"),
        _f("stablelm", "partial rotary embedding"),
        _f("persimmon", "q/k layer norms, partial rotary embedding"),
        _f("nemotron", "Nemotron (Minitron): partial rotary embedding"),
        _f("nemotron_h", "Nemotron-H: " + _HYBRID + " (Mamba-2, MLP and MoE layers are left alone)",
           hybrid=True),
        _f("helium", "Helium"),
        _f("hunyuan_v1_dense", "Hunyuan dense: q/k norms after RoPE"),
        _f("hunyuan_v1_moe", "Hunyuan MoE"),
        _f("ernie4_5", "ERNIE 4.5"),
        _f("ernie4_5_moe", "ERNIE 4.5 MoE"),
        _f("seed_oss", "Seed-OSS"),
        _f("exaone4", "EXAONE 4: " + _SWA),
        _f("apertus", "Apertus: q/k norms, xIELU MLP"),
        _f("arcee", "Arcee (AFM)"),
        _f("bitnet", "BitNet b1.58: an extra norm after attention"),
        _f("jetmoe", "JetMoE: mixture of attention heads (the attention function sees the routed heads)"),
        _f("minimax_m2", "MiniMax-M2"),
        _f("dots1", "dots.llm1"),
        _f("diffllama", "differential attention: both softmax maps of a layer are edited, then combined "
                        "by the model"),
        _f("gpt_bigcode", "StarCoder / SantaCoder: multi-query attention", layers_field="n_layer"),
        _f("lfm2", "LFM2: " + _HYBRID + " (short-convolution layers are left alone)", hybrid=True),
        _f("falcon_h1", "Falcon-H1: every layer runs attention and a Mamba-2 mixer side by side; the "
                        "attention half of every layer is edited", hybrid=True),
        _f("jamba", "Jamba: " + _HYBRID + " (Mamba layers are left alone)", hybrid=True),
        _f("bamba", "Bamba: " + _HYBRID + " (Mamba-2 layers are left alone)", hybrid=True),
    )
}

_ENC_DEC = ("not a decoder-only model: this causal-LM head is the decoder half of an encoder or "
            "encoder-decoder architecture (cross-attention, bidirectional pre-training)")
_NOT_REGISTRY = "its attention does not go through transformers' AttentionInterface, so it cannot be patched"
_NO_SOFTMAX = "it has no softmax attention (a state-space / recurrent model)"
_SPARSE = ("sparse attention: an indexer chooses which keys each query sees and passes them to the "
           "attention function as extra arguments; the edited rows would see keys the model does not")

# Decoder families examined and refused, with the reason the user is told.
REFUSED: dict[str, str] = {
    **{t: _ENC_DEC for t in (
        "bart", "bert", "bert-generation", "big_bird", "bigbird_pegasus", "blenderbot", "blenderbot-small",
        "camembert", "data2vec-text", "electra", "ernie", "marian", "mbart", "megatron-bert", "mvp",
        "pegasus", "plbart", "prophetnet", "rembert", "roberta", "roberta-prelayernorm", "roc_bert",
        "roformer", "trocr", "whisper", "xlm", "xlm-roberta", "xlm-roberta-xl", "xmod")},
    **{t: _NOT_REGISTRY for t in (
        "bloom", "cpmant", "falcon", "gpt_neo", "gpt_neox_japanese", "mpt", "openai-gpt", "reformer", "xglm",
        "xlnet")},
    **{t: _NO_SOFTMAX for t in ("mamba", "mamba2", "falcon_mamba", "rwkv", "xlstm")},
    **{t: _SPARSE for t in ("deepseek_v32", "glm_moe_dsa", "axk2", "hy_v4", "minimax_m3_vl_text")},
    "hrm_text": ("the same attention layers run several times per token (recurrent H/L cycles), so a "
                 "layer's depth is not its layer_idx and the schedule has no position for it"),
    "zamba": ("one attention block is shared by several depths (the depth is a forward argument, not the "
              "module's layer_idx), so the schedule has no position for each call"),
    "zamba2": ("one attention block is shared by several depths (the depth is a forward argument, not the "
               "module's layer_idx), so the schedule has no position for each call"),
}


def _multimodal_hint(config: Any) -> str:
    text = getattr(config, "text_config", None)
    text_type = getattr(text, "model_type", None)
    if text_type is None:
        return ""
    if text_type in FAMILIES:
        return (f"; it is a multimodal model: enable its text decoder instead, at.enable(model.get_decoder()) "
                f"(a {text_type!r} model; the vision/audio towers are left untouched), or load the text-only "
                f"checkpoint with AutoModelForCausalLM")
    return f"; it is a multimodal model whose text decoder ({text_type!r}) is not supported either"


def family_for(config: Any) -> Family:
    """The table entry for a model config, or :class:`UnsupportedModelError` naming its type and why."""
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
        return list(range(n))
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

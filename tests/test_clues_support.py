"""Helpers for the clues tests: tiny tokenizers and tiny random models built here (no downloads).

(No tests in this file; the helpers live under a test_clues* name so the clues tests own them.)
"""

from __future__ import annotations

import string
from pathlib import Path

import torch

CHARS = string.ascii_letters + string.digits + string.punctuation + " "
SPECIALS = ["<pad>", "<s>", "</s>", "<unk>"]


def _wrap(tk, **extra):
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="<pad>", bos_token="<s>", eos_token="</s>",
                                   unk_token="<unk>", **extra)


def char_tokenizer():
    """One token per non-space character; spaces are skipped (offsets point into the text)."""
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers

    vocab = {t: i for i, t in enumerate(SPECIALS)}
    for ch in CHARS.strip():
        vocab.setdefault(ch, len(vocab))
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(),
                                                pre_tokenizers.Split(Regex("."), behavior="isolated")])
    return _wrap(tk)


def word_tokenizer(words):
    """Word-level: runs of word characters and single punctuation marks; unknown words -> <unk>."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {t: i for i, t in enumerate(SPECIALS)}
    for w in words:
        vocab.setdefault(w, len(vocab))
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(),
                                                pre_tokenizers.Punctuation(behavior="isolated")])
    return _wrap(tk)


def metaspace_tokenizer(words):
    """Word-level with a SentencePiece-style leading '▁' on every word but the first: like Gemma,
    a token's span includes the space before it."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    vocab = {t: i for i, t in enumerate(SPECIALS)}
    for w in words:
        vocab.setdefault(w, len(vocab))
        vocab.setdefault("▁" + w, len(vocab))
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="never")
    tk.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="never")
    return _wrap(tk)


def tiny_llama(vocab_size: int, *, seed: int = 0, layers: int = 4, attn_implementation: str = "eager"):
    from transformers import AutoModelForCausalLM, LlamaConfig

    config = LlamaConfig(vocab_size=vocab_size, hidden_size=64, num_hidden_layers=layers, num_attention_heads=4,
                         num_key_value_heads=2, intermediate_size=128, max_position_embeddings=512,
                         pad_token_id=0, bos_token_id=1, eos_token_id=2, tie_word_embeddings=False)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, attn_implementation=attn_implementation)
    with torch.no_grad():                     # sharper attention than the near-uniform random init
        for name, p in model.named_parameters():
            if name.endswith(("q_proj.weight", "k_proj.weight")):
                p.mul_(4.0)
    return model.eval()


def save_tiny(folder: Path, tokenizer, *, seed: int = 0, layers: int = 4) -> Path:
    """A tiny Llama and its tokenizer saved as a model folder that load_model() accepts."""
    model = tiny_llama(len(tokenizer), seed=seed, layers=layers, attn_implementation="sdpa")
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder

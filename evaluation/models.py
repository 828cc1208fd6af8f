"""The models every command uses: the shared ``--model`` / ``--device`` / ``--dtype`` options, the
one greedy, left-padded batch generation, and ``attn-transition convert``.

Loading itself (the two embedded models that install from PyPI, or any hub id / folder; the
one-time GGUF conversion into ``$ATTN_TRANSITION_CACHE``) is :mod:`attn_transition.models`,
re-exported here.
"""

from __future__ import annotations

import argparse
from typing import Any, Sequence

from attn_transition.commands import register_command
from attn_transition.models import (DEFAULT_MODEL, DTYPES, EMBEDDED, EmbeddedModel, cache_dir, check_device, convert,
                                    load_model, resolve_model)

__all__ = ["EmbeddedModel", "EMBEDDED", "DEFAULT_MODEL", "cache_dir", "convert", "load_model",
           "resolve_model", "check_device", "generate_greedy", "add_model_arguments", "MODEL_FLAGS"]


def generate_greedy(model: Any, tokenizer: Any, prompts: Sequence[str], *, max_new_tokens: int,
                    add_special_tokens: bool, plain_switch: bool = False) -> list[str]:
    """Greedy continuations of ``prompts`` (left padded); only the new text is returned.

    ``plain_switch`` passes ``attn_transition=False`` to ``generate`` (stock attention on an
    enabled model)."""
    import torch

    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        enc = tokenizer(list(prompts), return_tensors="pt", padding=True, add_special_tokens=add_special_tokens)
    finally:
        tokenizer.padding_side = side
    device = getattr(model, "device", None) or next(model.parameters()).device
    enc = {k: v.to(device) for k, v in enc.items() if k in ("input_ids", "attention_mask")}
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    kwargs: dict[str, Any] = dict(max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
                                  pad_token_id=pad_id, temperature=None, top_p=None, top_k=None)
    if plain_switch:
        from attn_transition.keywords import SWITCH_KWARG

        kwargs[SWITCH_KWARG] = False
    with torch.inference_mode():
        out = model.generate(**enc, **kwargs)                            # (batch, prompt + new)
    new = out[:, enc["input_ids"].shape[1]:]                              # (batch, new)
    return tokenizer.batch_decode(new, skip_special_tokens=True)


# The fields of load_model as the commands that take add_model_arguments spell them.
MODEL_FLAGS: dict[str, str] = {"dtype": "--dtype", "device": "--device"}


def add_model_arguments(parser: argparse.ArgumentParser, default: str = DEFAULT_MODEL) -> None:
    """The model options every subcommand shares."""
    group = parser.add_argument_group("model")
    group.add_argument("--model", default=default,
                       help=f"embedded name ({', '.join(EMBEDDED)}), a local folder or a hub id (default {default})")
    group.add_argument("--device", default="cpu", help="torch device, e.g. cpu, cuda, cuda:1 (default cpu)")
    group.add_argument("--dtype", default="float32", choices=DTYPES, help="weights dtype (default float32)")
    group.add_argument("--device-map", default=None,
                       help="'auto' to spread a model larger than one GPU over several (needs accelerate)")
    group.add_argument("--cache-dir", default=None,
                       help="where converted embedded models live (default $ATTN_TRANSITION_CACHE or ~/.cache/attn_transition)")


# ``attn-transition convert``: prepare the embedded models ahead of time.
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("names", nargs="*", default=[DEFAULT_MODEL],
                        help=f"embedded models to convert (default {DEFAULT_MODEL}); choices: {', '.join(EMBEDDED)}")
    parser.add_argument("--cache-dir", default=None, help="where converted models go (default "
                                                          "$ATTN_TRANSITION_CACHE or ~/.cache/attn_transition)")
    parser.add_argument("--force", action="store_true", help="convert again even if cached")


def run(args: argparse.Namespace) -> int:
    from .runtime.requirements import require_embedded

    require_embedded(args.names, args.cache_dir, force=args.force)     # before anything is converted
    for name in args.names:
        print(convert(name, args.cache_dir, force=args.force))
    return 0

register_command('convert', help='convert an embedded GGUF model once into the local cache',
                 add_arguments=add_arguments, run=run)

"""``attn-transition demo``: one long prompt answered with and without attention transition.

The prompt is a news article from the small sample shipped with the package (about 440
tokens with SmolLM2's chat template, just over the classic schedule's ``min_length`` of
400) and a request to summarize it. The model answers twice, greedily: once stock and
once with ``attn_transition.enable(model, config)``; the answers are printed side by
side with a line saying whether they differ. Takes well under a minute on a CPU.
"""

from __future__ import annotations

import argparse
import shutil
import textwrap
import time
from dataclasses import dataclass
from typing import Any, Optional

from attn_transition.commands import register_command
from attn_transition.config import ClassicConfig, TransitionConfig, parse_config
from attn_transition.errors import UsageError, did_you_mean

from .models import MODEL_FLAGS
from .xsum import SAMPLE_PATH, generate_batch, load_documents, load_template, prompt_lengths

__all__ = ["DemoResult", "answer_both", "side_by_side", "add_arguments", "run", "EPILOG"]

EPILOG = """examples:
  attn-transition demo                                   # SmolLM2, the default classic config
  attn-transition demo --config sra:begin_length=5,threshold_len=50
  attn-transition demo --model gemma3-270m --template base --document syn-0003
  attn-transition demo --prompt-file my_long_prompt.txt  # your own prompt, used as is
"""


@dataclass(frozen=True)
class DemoResult:
    prompt: str
    prompt_tokens: int
    config: TransitionConfig
    plain: str
    transition: str
    seconds_plain: float
    seconds_transition: float

    @property
    def differ(self) -> bool:
        return self.plain != self.transition

    @property
    def below_min_length(self) -> bool:
        return isinstance(self.config, ClassicConfig) and self.prompt_tokens < self.config.min_length


def answer_both(model: Any, tokenizer: Any, prompt: str, config: TransitionConfig, *,
                add_special_tokens: bool, max_new_tokens: int = 32) -> DemoResult:
    """Greedy answers of the stock model and of the model with ``config``; the model is left
    as it was (``enabled`` restores the previous state)."""
    import attn_transition as at

    n = prompt_lengths(tokenizer, [prompt], add_special_tokens)[0]
    started = time.perf_counter()
    plain_switch = at.is_enabled(model)
    plain = generate_batch(model, tokenizer, [prompt], max_new_tokens=max_new_tokens,
                           add_special_tokens=add_special_tokens, plain_switch=plain_switch)[0]
    middle = time.perf_counter()
    with at.enabled(model, config):
        edited = generate_batch(model, tokenizer, [prompt], max_new_tokens=max_new_tokens,
                                add_special_tokens=add_special_tokens)[0]
    return DemoResult(prompt, n, config, plain, edited, middle - started, time.perf_counter() - middle)


def side_by_side(left: str, right: str, titles: tuple[str, str], width: int) -> str:
    """Two wrapped columns of ``width`` characters each, separated by ' | '."""
    def wrap(text: str) -> list[str]:
        lines: list[str] = []
        for para in text.strip().splitlines() or [""]:
            lines += textwrap.wrap(para, width) or [""]
        return lines

    a, b = wrap(left), wrap(right)
    rows = [f"{titles[0]:<{width}} | {titles[1]}", f"{'-' * width}-+-{'-' * width}"]
    for i in range(max(len(a), len(b))):
        rows.append(f"{(a[i] if i < len(a) else ''):<{width}} | {b[i] if i < len(b) else ''}".rstrip())
    return "\n".join(rows)


def verdict(result: DemoResult) -> str:
    if result.below_min_length:
        return (f"The prompt has {result.prompt_tokens} tokens, fewer than min_length="
                f"{result.config.min_length}: the transition edits nothing and the answers are identical. "
                f"Use a longer prompt or --config classic:min_length=<smaller>.")
    if not result.differ:
        return "The answers are identical: this setting did not change the greedy answer for this prompt."
    a, b = result.plain, result.transition
    first = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
    return f"The answers differ (from character {first} on)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from .models import add_model_arguments

    parser.add_argument("--config", default="classic",
                        help="transition config, e.g. classic, sra, classic:alpha=1,beta=0.5 (default classic)")
    parser.add_argument("--document", default=None,
                        help=f"id of a document in the packaged sample {SAMPLE_PATH.name} (default: the first)")
    parser.add_argument("--prompt-file", default=None, help="a text file used as the prompt, as is")
    parser.add_argument("--template", default="auto", help="base, chat, auto (default) or a JSON template file")
    parser.add_argument("--max-new-tokens", type=int, default=32, help="new tokens per answer (default 32)")
    parser.add_argument("--width", type=int, default=0, help="column width (default: half the terminal)")
    add_model_arguments(parser)


def _prompt(args: argparse.Namespace, tokenizer: Any) -> tuple[str, bool, str]:
    """``(prompt, add_special_tokens, where it came from)``."""
    if args.prompt_file:
        from pathlib import Path

        from .runtime.files import read_text

        path = Path(args.prompt_file).expanduser()
        return read_text(path), True, str(path)
    docs = load_documents(SAMPLE_PATH)
    if args.document is None:
        doc = docs[0]
    else:
        by_id = {d["id"]: d for d in docs}
        if args.document not in by_id:
            extra = did_you_mean(args.document, by_id)
            raise UsageError(f"--document {args.document!r} is not in the sample{extra}; ids: {', '.join(by_id)}")
        doc = by_id[args.document]
    template = load_template(args.template, tokenizer)
    return (template.render(doc["document"], tokenizer), template.add_special_tokens,
            f"sample document {doc['id']}, template {template.name} v{template.version}")


def run(args: argparse.Namespace) -> int:
    config: Optional[TransitionConfig] = parse_config(args.config)
    if args.max_new_tokens < 1:
        raise UsageError(f"--max-new-tokens must be an int >= 1, got {args.max_new_tokens}")
    from .models import load_model

    t0 = time.perf_counter()
    model, tokenizer = load_model(args.model, device=args.device, dtype=args.dtype,
                                  device_map=args.device_map, cache=args.cache_dir)
    prompt, special, where = _prompt(args, tokenizer)
    result = answer_both(model, tokenizer, prompt, config, add_special_tokens=special,
                         max_new_tokens=args.max_new_tokens)
    width = args.width or max(30, (shutil.get_terminal_size((120, 24)).columns - 3) // 2)
    print(f"model {args.model}; prompt: {where}, {result.prompt_tokens} tokens; config {config}")
    print()
    print(side_by_side(result.plain, result.transition,
                       (f"without transition ({result.seconds_plain:.1f} s)",
                        f"with transition ({result.seconds_transition:.1f} s)"), width))
    print()
    print(verdict(result))
    print(f"total {time.perf_counter() - t0:.1f} s")
    return 0

register_command('demo', help='answer one long prompt with and without the transition',
                 add_arguments=add_arguments, run=run, epilog=EPILOG, flags=MODEL_FLAGS)

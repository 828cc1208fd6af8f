"""``attn-transition demo``: one long prompt answered with and without attention transition.

The prompt is a news article from the small sample shipped with the package (about 470
tokens with SmolLM2's chat template, just over the classic schedule's ``min_length`` of
400) and a request to summarize it. The model answers twice, greedily: once stock and
once with ``attn_transition.enable(model, config)``; the answers are printed side by
side with a line saying whether they differ. Before the timed answers one untimed short
answer of each warms the model up, so neither time carries the process's one-off costs; each
time is one greedy answer (prefill and up to ``--max-new-tokens`` new tokens), without the model
load, and the output says so (:func:`timing_note`): one answer on a busy machine varies by more
than the transition costs, which ``benchmarks/prefill.py`` measures. The inputs
(config, prompt file, document id) are checked before the model is loaded. Takes well
under a minute on a CPU.

The default config, ``classic:alpha=1,beta=0.5``, visibly changes SmolLM2's answer to
the default prompt; the reference defaults (``--config classic``) change a word or
nothing. ``attn-transition bench --tune`` chooses a config on a dev split for a model.
"""

from __future__ import annotations

import argparse
import shutil
import textwrap
import time
from dataclasses import dataclass
from typing import Any, Optional

from attn_transition.commands import register_command
from attn_transition.config import TransitionConfig, format_config, parse_config
from attn_transition.errors import UsageError, did_you_mean

from .models import MODEL_FLAGS
from .xsum import SAMPLE_PATH, generate_batch, load_documents, load_template, prompt_lengths

__all__ = ["DemoResult", "DEFAULT_CONFIG", "answer_both", "warm_up", "side_by_side", "verdict", "timing_note",
           "add_arguments", "run", "EPILOG"]

DEFAULT_CONFIG = "classic:alpha=1,beta=0.5"

EPILOG = f"""examples:
  attn-transition demo                                   # SmolLM2, {DEFAULT_CONFIG}
  attn-transition demo --config classic                  # the reference defaults (changes little here)
  attn-transition demo --config sra:begin_length=5,threshold_len=50
  attn-transition demo --model gemma3-270m --template base --document syn-0003
  attn-transition demo --prompt-file my_long_prompt.txt  # your own prompt, used as is

A config that acts on a model: attn-transition bench --model NAME --tune (chosen on a dev split).
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
    edits: bool = True          # whether ``config`` edits any row of this prompt on this model


    @property
    def differ(self) -> bool:
        return self.plain != self.transition

    @property
    def below_min_length(self) -> bool:
        """Nothing is edited because the prompt is shorter than the config's ``min_length`` (a
        field of the classic schedule, and of any schedule that declares one)."""
        return not self.edits and self.prompt_tokens < getattr(self.config, "min_length", -1)


def warm_up(model: Any, tokenizer: Any, prompt: str, config: TransitionConfig, *, add_special_tokens: bool) -> None:
    """One untimed two-token answer (a prefill and one decoding step), stock and with ``config``:
    the first calls of a process pay one-off costs (kernel selection, allocator growth, lazy
    imports) that would otherwise be charged to whichever answer is timed first."""
    import attn_transition as at

    plain_switch = at.is_enabled(model)
    generate_batch(model, tokenizer, [prompt], max_new_tokens=2, add_special_tokens=add_special_tokens,
                   plain_switch=plain_switch)
    with at.enabled(model, config):
        generate_batch(model, tokenizer, [prompt], max_new_tokens=2, add_special_tokens=add_special_tokens)


def answer_both(model: Any, tokenizer: Any, prompt: str, config: TransitionConfig, *,
                add_special_tokens: bool, max_new_tokens: int = 32, warm: bool = True) -> DemoResult:
    """Greedy answers of the stock model and of the model with ``config``, each timed after an
    untimed warm-up (``warm``); the model is left as it was (``enabled`` restores the previous
    state)."""
    import attn_transition as at

    n = prompt_lengths(tokenizer, [prompt], add_special_tokens)[0]
    if warm:
        warm_up(model, tokenizer, prompt, config, add_special_tokens=add_special_tokens)
    started = time.perf_counter()
    plain_switch = at.is_enabled(model)
    plain = generate_batch(model, tokenizer, [prompt], max_new_tokens=max_new_tokens,
                           add_special_tokens=add_special_tokens, plain_switch=plain_switch)[0]
    middle = time.perf_counter()
    with at.enabled(model, config):
        edited = generate_batch(model, tokenizer, [prompt], max_new_tokens=max_new_tokens,
                                add_special_tokens=add_special_tokens)[0]
    return DemoResult(prompt, n, config, plain, edited, middle - started, time.perf_counter() - middle,
                      edits=edits_anything(model, config, n))


def edits_anything(model: Any, config: TransitionConfig, n: int) -> bool:
    """Whether ``config`` edits any layer of ``model`` on an ``n``-token prompt (its plan, which
    every schedule has: the verdict then says why the two answers cannot differ)."""
    from attn_transition.families import schedule_layout
    from attn_transition.schedules import layer_plan

    num_layers, _ = schedule_layout(model.config)
    return any(layer_plan(config, layer, num_layers, n) for layer in range(num_layers))


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
                f"Use a longer prompt or --config {result.config.schedule}:min_length=<smaller>.")
    if not result.edits:
        return (f"{format_config(result.config)} edits no row of this {result.prompt_tokens}-token prompt on this "
                f"model (its plan is empty), so the answers are identical. Use a longer prompt or another config.")
    if not result.differ:
        return ("The answers are identical: this setting did not change the greedy answer for this prompt. "
                f"Try a stronger one (--config {DEFAULT_CONFIG}), or let attn-transition bench --tune choose one.")
    a, b = result.plain, result.transition
    first = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
    return f"The answers differ (from character {first} on)."


PERFORMANCE_DOC = "docs/performance.md"


def timing_note(result: DemoResult, load_seconds: float, max_new_tokens: int) -> str:
    """What the two times above the answers include, and what they are not: each is one greedy
    ``generate`` call (the prompt's prefill and up to ``max_new_tokens`` new tokens; an answer
    that ends early generates fewer) after the untimed warm-up of both, without the model load;
    a single call on a shared CPU varies by more than the transition costs, which
    :data:`PERFORMANCE_DOC` measures."""
    return textwrap.fill(
        f"(times: each is one greedy answer, the prefill of the {result.prompt_tokens}-token prompt plus up to "
        f"{max_new_tokens} new tokens, after an untimed warm-up of both; the model load ({load_seconds:.1f} s) is "
        f"not in them. With the transition the layers it edits compute their prompt's attention rows "
        f"explicitly, a cost {PERFORMANCE_DOC} measures on an idle machine (prefill and per new token, "
        f"interleaved with stock). One answer on a busy machine varies by more than that cost, so these two "
        f"times do not measure it.)", 100)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from .models import add_model_arguments

    parser.add_argument("--config", default=DEFAULT_CONFIG,
                        help=f"transition config, e.g. classic (the reference defaults), sra, classic:alpha=1.5,beta=1 "
                             f"(default {DEFAULT_CONFIG}, which visibly changes SmolLM2's answer to the default prompt)")
    parser.add_argument("--document", default=None,
                        help=f"id of a document in the packaged sample {SAMPLE_PATH.name} (default: the first)")
    parser.add_argument("--prompt-file", default=None, help="a text file used as the prompt, as is")
    parser.add_argument("--template", default="auto", help="base, chat, auto (default) or a JSON template file")
    parser.add_argument("--max-new-tokens", type=int, default=32, help="new tokens per answer (default 32)")
    parser.add_argument("--width", type=int, default=0, help="column width (default: half the terminal)")
    add_model_arguments(parser)


@dataclass(frozen=True)
class DemoInput:
    """What ``run`` answers, read and checked before the model is loaded: the prompt file's text,
    or the sample document to render with the model's template."""
    config: TransitionConfig
    prompt_text: Optional[str] = None
    prompt_path: Optional[str] = None
    document: Optional[dict] = None


def check_inputs(args: argparse.Namespace) -> DemoInput:
    """Every input the user gives, checked (UsageError, exit code 2) without loading a model."""
    config = parse_config(args.config)
    if args.max_new_tokens < 1:
        raise UsageError(f"--max-new-tokens must be an int >= 1, got {args.max_new_tokens}")
    if args.prompt_file:
        from pathlib import Path

        from .runtime.files import read_text

        path = Path(args.prompt_file).expanduser()
        return DemoInput(config, prompt_text=read_text(path), prompt_path=str(path))
    docs = load_documents(SAMPLE_PATH)
    if args.document is None:
        return DemoInput(config, document=docs[0])
    by_id = {d["id"]: d for d in docs}
    if args.document not in by_id:
        extra = did_you_mean(args.document, by_id)
        raise UsageError(f"--document {args.document!r} is not in the sample{extra}; ids: {', '.join(by_id)}")
    return DemoInput(config, document=by_id[args.document])


def _prompt(inputs: DemoInput, template_name: str, tokenizer: Any) -> tuple[str, bool, str]:
    """``(prompt, add_special_tokens, where it came from)``."""
    if inputs.prompt_text is not None:
        return inputs.prompt_text, True, str(inputs.prompt_path)
    doc = inputs.document
    assert doc is not None
    template = load_template(template_name, tokenizer)
    return (template.render(doc["document"], tokenizer), template.add_special_tokens,
            f"sample document {doc['id']}, template {template.name} v{template.version}")


def run(args: argparse.Namespace) -> int:
    inputs = check_inputs(args)
    config = inputs.config
    from .models import load_model

    t0 = time.perf_counter()
    model, tokenizer = load_model(args.model, device=args.device, dtype=args.dtype,
                                  device_map=args.device_map, cache=args.cache_dir)
    load_seconds = time.perf_counter() - t0
    prompt, special, where = _prompt(inputs, args.template, tokenizer)
    result = answer_both(model, tokenizer, prompt, config, add_special_tokens=special,
                         max_new_tokens=args.max_new_tokens)
    width = args.width or max(30, (shutil.get_terminal_size((120, 24)).columns - 3) // 2)
    print(f"model {args.model}; prompt: {where}, {result.prompt_tokens} tokens; config {config}")
    print()
    print(side_by_side(result.plain, result.transition,
                       (f"without transition ({result.seconds_plain:.1f} s)",
                        f"with transition ({result.seconds_transition:.1f} s)"), width))
    print(timing_note(result, load_seconds, args.max_new_tokens))
    print()
    print(verdict(result))
    print(f"total {time.perf_counter() - t0:.1f} s")
    return 0

register_command('demo', help='answer one long prompt with and without the transition',
                 add_arguments=add_arguments, run=run, epilog=EPILOG, flags=MODEL_FLAGS)

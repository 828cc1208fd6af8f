"""Turning a :class:`~.tasks.Sample` into a prompt of a target length in a model's tokens.

Length control: the builder adds filler sentences until the tokenised prompt (chat
template, question and answer prefix included) is as long as possible without
exceeding the target; with filler sentences of 8-15 tokens the result is within 3%
of the target for targets of 512 tokens and more.

Depth: a needle at depth ``d`` goes after ``round(d * k)`` of the ``k`` filler
sentences (0 = before all filler, 1 = after all of it, right before the question).
The depth measured in tokens (tokens of context before the needle / context tokens)
is recorded with every prompt; it differs from ``d`` by at most about one sentence.

Formats: ``chat`` wraps the context and question in the tokenizer's chat template
(a user turn) and starts the assistant's answer with the priming suffix; ``plain``
writes ``<context> Question: ... Answer: <prime>`` for base models.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

from attn_transition.errors import UsageError

from .tasks import Sample, get_task, task_data

__all__ = ["Prompt", "FORMATS", "resolve_format", "render", "build_prompt", "prompt_tokens"]

FORMATS = ("auto", "chat", "plain")


@dataclass(frozen=True)
class Prompt:
    """A built prompt. ``needle_depths`` are the token depths (0..1) of the needles."""

    item_id: str
    text: str
    n_tokens: int
    n_filler: int
    chat: bool
    needle_depths: tuple[float, ...]

    def as_dict(self) -> dict[str, Any]:
        return {"text": self.text, "n_tokens": self.n_tokens, "n_filler": self.n_filler, "chat": self.chat,
                "needle_token_depths": [round(d, 4) for d in self.needle_depths]}


def resolve_format(fmt: str, tokenizer: Any) -> bool:
    """``True`` for the chat format. ``auto`` uses the chat template when the tokenizer has one."""
    if fmt not in FORMATS:
        raise UsageError(f"--prompt-format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    has_template = getattr(tokenizer, "chat_template", None) is not None
    if fmt == "chat" and not has_template:
        raise UsageError("--prompt-format chat needs a tokenizer with a chat template; this one has none "
                         "(use --prompt-format plain)")
    return has_template if fmt == "auto" else fmt == "chat"


def prompt_tokens(tokenizer: Any, text: str, chat: bool) -> list[int]:
    """Token ids of a rendered prompt (the chat template already holds its special tokens)."""
    return tokenizer(text, add_special_tokens=not chat)["input_ids"]


def _place(sample: Sample, filler: Sequence[str]) -> tuple[list[str], list[int]]:
    """Insert the needles into the filler; returns the sentences and each needle's index."""
    k = len(filler)
    slots = [min(k, max(0, round(n.depth * k))) for n in sample.needles]
    sentences = list(filler)
    # Insert from the back so earlier slots keep their meaning; ties keep needle order.
    for i in sorted(range(len(slots)), key=lambda i: (slots[i], i), reverse=True):
        sentences.insert(slots[i], sample.needles[i].text)
    where = [sentences.index(n.text) for n in sample.needles]
    return sentences, where


def render(sample: Sample, filler: Sequence[str], tokenizer: Any, chat: bool) -> tuple[str, str, list[int]]:
    """Prompt text for ``sample`` with the given filler.

    Returns ``(text, context, needle_char_offsets)`` where offsets index ``text``.
    """
    formats = task_data()["formats"]
    sentences, _ = _place(sample, filler)
    context = sample.separator.join(sentences)
    user = formats["context"].format(intro=sample.intro, context=context, question=sample.question)
    if chat:
        head = tokenizer.apply_chat_template([{"role": "user", "content": user}], tokenize=False,
                                             add_generation_prompt=True)
        text = head + formats["chat_answer"].format(prime=sample.prime)
    else:
        text = user + formats["plain_answer"].format(prime=sample.prime)
    start = text.index(context)
    offsets = [start + context.index(n.text) for n in sample.needles]
    return text, context, offsets


def build_prompt(sample: Sample, tokenizer: Any, chat: bool, *, max_steps: int = 12) -> Prompt:
    """The longest prompt of ``sample`` that stays within ``sample.length`` tokens."""
    task = get_task(sample.task)
    target = sample.length

    def measure(k: int) -> tuple[int, list[str]]:
        filler = task.filler(sample, k)
        text = render(sample, filler, tokenizer, chat)[0]
        return len(prompt_tokens(tokenizer, text, chat)), filler

    base, _ = measure(0)
    if base > target:
        raise UsageError(f"length {target} is too short for task {sample.task!r}: its instructions, needles "
                         f"and question alone take {base} tokens; use lengths above {base}")
    probe = task.filler(sample, 32)
    per = sum(len(tokenizer(sample.separator + s, add_special_tokens=False)["input_ids"]) for s in probe)
    per = max(1.0, per / max(1, len(probe)))                   # tokens per filler sentence
    k = max(0, int((target - base) / per))
    best_k, best_n = 0, base
    tried: dict[int, int] = {}
    for _ in range(max_steps):
        if k in tried:
            break
        n, _ = measure(k)
        tried[k] = n
        if n <= target and n > best_n or (n <= target and k > best_k and n == best_n):
            best_k, best_n = k, n
        if n > target:
            k -= max(1, math.ceil((n - target) / per))
        elif target - n >= per:
            k += max(1, math.floor((target - n) / per))
        elif k + 1 not in tried:
            k += 1                                              # one more may still fit
        else:
            break
        k = max(0, k)
    filler = task.filler(sample, best_k)
    text, context, offsets = render(sample, filler, tokenizer, chat)
    ids = prompt_tokens(tokenizer, text, chat)
    assert len(ids) == best_n, f"re-rendering changed the length: {len(ids)} != {best_n}"
    start = text.index(context)
    ctx_first = len(prompt_tokens(tokenizer, text[:start], chat))
    ctx_last = len(prompt_tokens(tokenizer, text[:start + len(context)], chat))
    span = max(1, ctx_last - ctx_first)
    depths = tuple(min(1.0, max(0.0, (len(prompt_tokens(tokenizer, text[:o], chat)) - ctx_first) / span))
                   for o in offsets)
    return Prompt(item_id=sample.item_id, text=text, n_tokens=len(ids), n_filler=best_k, chat=chat,
                  needle_depths=depths)

"""Fact-memorisation QA over the biographies: few-shot prompts, greedy answers, EM and token F1.

Prompts (version :data:`PROMPT_VERSION`) are data: for a person and a field, ``shots``
other people (drawn with a generator seeded by ``(seed, person, field)``, all from the
same, trained-on biographies) contribute their question and answer for the same field,
then the person's own question follows. Only people whose (normalised) value for the
field differs from the person's are drawn, so no prompt shows its own gold answer; when
fewer such people exist, all of them are used (fewer shots)::

    Question: In which city was Clara Dunmore born?
    Answer: Porto

    Question: In which city was Hugo Ingram born?
    Answer:

Decoding is greedy; the answer is the generated text up to the first newline, stripped.

Scoring follows SQuAD's normalisation (lowercase, punctuation removed, the articles
a/an/the removed, whitespace collapsed): exact match is equality of the normalised
strings; F1 is the harmonic mean of precision and recall of the normalised answers'
word multisets (1 if both are empty, 0 if only one is).
"""

from __future__ import annotations

import random
import re
import string
from collections import Counter
from dataclasses import asdict, dataclass
from typing import Any, Sequence

from attn_transition.errors import UsageError

from .biographies import FIELDS, Biography, question

__all__ = ["PROMPT_VERSION", "QAItem", "normalize_answer", "exact_match", "token_f1", "cut_answer",
           "build_items", "generate_answers", "score"]

PROMPT_VERSION = "qa-v2"          # v2: no shot shares the gold answer
SHOT_FORMAT = "Question: {question}\nAnswer: {answer}\n\n"
QUERY_FORMAT = "Question: {question}\nAnswer:"

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = set(string.punctuation)


def normalize_answer(text: str) -> str:
    text = text.lower()
    text = "".join(ch for ch in text if ch not in _PUNCT)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def exact_match(prediction: str, gold: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(gold))


def token_f1(prediction: str, gold: str) -> float:
    pred, ref = normalize_answer(prediction).split(), normalize_answer(gold).split()
    if not pred or not ref:
        return float(pred == ref)
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def cut_answer(generated: str) -> str:
    """The generated continuation up to its first newline, stripped."""
    return generated.split("\n", 1)[0].strip()


@dataclass(frozen=True)
class QAItem:
    person_id: int
    name: str
    field: str
    question: str
    answer: str
    prompt: str
    shots: tuple[int, ...]     # person_ids of the few-shot examples

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def build_items(bios: Sequence[Biography], *, shots: int = 3, seed: int = 0,
                fields: Sequence[str] = FIELDS) -> list[QAItem]:
    """One item per (person, field); few-shot examples from other people of ``bios`` whose answer
    for the field differs from the person's (as many as exist, up to ``shots``)."""
    if shots < 0:
        raise UsageError(f"--shots must be >= 0, got {shots}")
    if shots > len(bios) - 1:
        raise UsageError(f"--shots {shots} needs at least {shots + 1} biographies, got {len(bios)}")
    unknown = [f for f in fields if f not in FIELDS]
    if unknown:
        raise UsageError(f"unknown field(s) {', '.join(unknown)}; fields: {', '.join(FIELDS)}")
    items = []
    for bio in bios:
        for field in fields:
            gold = normalize_answer(bio.fields[field])
            others = [b for b in bios if b.person_id != bio.person_id and normalize_answer(b.fields[field]) != gold]
            rng = random.Random(f"{PROMPT_VERSION}:{seed}:{bio.person_id}:{field}")
            chosen = rng.sample(others, min(shots, len(others)))
            prefix = "".join(SHOT_FORMAT.format(question=question(field, o.name), answer=o.fields[field])
                             for o in chosen)
            q = question(field, bio.name)
            items.append(QAItem(bio.person_id, bio.name, field, q, bio.fields[field],
                                prefix + QUERY_FORMAT.format(question=q), tuple(o.person_id for o in chosen)))
    return items


def _NewlineStop(tokenizer: Any, prompt_length: int):
    """A stopping criterion: a row is finished once its generated text holds a newline.
    (Decoding the new tokens works for every tokenizer, unlike matching token strings.)"""
    import torch
    from transformers import StoppingCriteria

    class NewlineStop(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            texts = tokenizer.batch_decode(input_ids[:, prompt_length:], skip_special_tokens=True)
            return torch.tensor(["\n" in t for t in texts], dtype=torch.bool, device=input_ids.device)

    return NewlineStop()


def generate_answers(model: Any, tokenizer: Any, prompts: Sequence[str], *, batch_size: int = 16,
                     max_new_tokens: int = 16, progress: bool = True, desc: str = "qa") -> list[str]:
    """Greedy continuation of each prompt (left-padded batches), cut at the first newline."""
    import torch
    from tqdm.auto import tqdm
    from transformers import StoppingCriteriaList

    if batch_size < 1:
        raise UsageError(f"--qa-batch-size must be >= 1, got {batch_size}")
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    answers: list[str] = []
    try:
        for start in tqdm(range(0, len(prompts), batch_size), desc=desc, disable=not progress, leave=False):
            batch = list(prompts[start:start + batch_size])
            enc = tokenizer(batch, return_tensors="pt", padding=True).to(device)
            stop = StoppingCriteriaList([_NewlineStop(tokenizer, enc["input_ids"].shape[1])])
            with torch.no_grad():
                out = model.generate(**enc, do_sample=False, max_new_tokens=max_new_tokens,
                                     pad_token_id=tokenizer.pad_token_id, stopping_criteria=stop)
            new = out[:, enc["input_ids"].shape[1]:]                          # (batch, generated)
            answers.extend(cut_answer(t) for t in tokenizer.batch_decode(new, skip_special_tokens=True))
    finally:
        tokenizer.padding_side = side
        model.train(was_training)
    return answers


def score(items: Sequence[QAItem], predictions: Sequence[str]) -> dict[str, Any]:
    """EM and F1 (in %) per field and overall (mean over all items), with counts."""
    assert len(items) == len(predictions), (len(items), len(predictions))
    per: dict[str, list[tuple[float, float]]] = {}
    for item, pred in zip(items, predictions):
        per.setdefault(item.field, []).append((exact_match(pred, item.answer), token_f1(pred, item.answer)))
    result: dict[str, Any] = {"fields": {}}
    everything: list[tuple[float, float]] = []
    for field in [f for f in FIELDS if f in per] + sorted(set(per) - set(FIELDS)):
        pairs = per[field]
        everything.extend(pairs)
        result["fields"][field] = {"n": len(pairs), "em": 100 * sum(p[0] for p in pairs) / len(pairs),
                                   "f1": 100 * sum(p[1] for p in pairs) / len(pairs)}
    n = len(everything)
    result["overall"] = {"n": n, "em": 100 * sum(p[0] for p in everything) / n if n else float("nan"),
                         "f1": 100 * sum(p[1] for p in everything) / n if n else float("nan")}
    return result

"""Procedurally generated long-context tasks (pure: a seeded ``random.Random``, no model).

A task turns ``(seed, target length, depth, index)`` into a :class:`Sample`: the
needle sentence(s) with the depth each goes to, the question, the answer-priming
suffix and the gold answer, plus a seed from which :meth:`Task.filler` draws as many
filler sentences as the prompt builder needs to reach the target length in a given
tokenizer's tokens. All texts come from the versioned data file ``tasks/v1.json``;
no sentence is copied from anywhere.

Tasks:

* ``fact``: the secret code (a two-digit number) of one person, hidden at a controlled
  depth in notes about other people, three of which give other people's codes (the
  needle-in-a-haystack setting with same-kind distractors).
* ``kv``: a list of "The number of <key> is <value>." sentences (keys are invented
  hyphenated words, values two-digit numbers); the key asked for sits at a controlled
  position (lost in the middle).
* ``multihop``: the first and the second digit of a person's code are given in two
  notes half the context apart; the answer names both ("4 and 7").

``Sample.chance`` is the accuracy of a uniform guess over the answer vocabulary: 1/90
for the two-digit numbers of ``fact`` and ``kv``, 1/81 for the ordered digit pairs of
``multihop`` (first digit 1-9, second 0-9 and different from the first).
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from attn_transition.errors import UsageError, did_you_mean

__all__ = ["DATA_FILE", "task_data", "Needle", "Sample", "Task", "TASKS", "get_task", "parse_tasks",
           "make_samples", "DEFAULT_TASKS", "sample_seed", "count_word"]

DATA_FILE = Path(__file__).with_name("tasks") / "v1.json"


@lru_cache(maxsize=None)
def task_data(path: str = str(DATA_FILE)) -> dict[str, Any]:
    """The task texts and word lists (cached). Raises UsageError if the file is unusable."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise UsageError(f"cannot read the bench task file {path}: {exc}; reinstall attn-transition") from None
    for key in ("version", "syllables", "colours", "things", "places", "times", "activities",
                "filler_templates", "formats", "tasks"):
        if key not in data:
            raise UsageError(f"bench task file {path} lacks the key {key!r}; reinstall attn-transition")
    return data


@dataclass(frozen=True)
class Needle:
    """A sentence the answer depends on, to be placed at ``depth`` (0 = first, 1 = last)."""

    text: str
    depth: float


@dataclass(frozen=True)
class Sample:
    """One benchmark item before tokenisation.

    ``answer`` is the gold string; ``filler_seed`` and ``avoid`` let the task draw the
    filler (words in ``avoid`` never occur in it, so the answer and the asked-for
    entity occur only where the needles put them).
    """

    item_id: str
    task: str
    length: int            # target prompt length in the model's tokens
    depth: float           # nominal depth of the (first) needle, 0..1
    intro: str
    needles: tuple[Needle, ...]
    question: str
    prime: str
    answer: str
    separator: str
    filler_seed: int
    avoid: tuple[str, ...] = ()
    scatter: tuple[str, ...] = ()   # distractor sentences spread at random among the filler
    chance: float = 0.0    # accuracy of guessing uniformly from the answer vocabulary

    def as_dict(self) -> dict[str, Any]:
        return {"item_id": self.item_id, "task": self.task, "length": self.length, "depth": self.depth,
                "needles": [[n.text, n.depth] for n in self.needles], "question": self.question,
                "prime": self.prime, "answer": self.answer}


def sample_seed(seed: int, task: str, length: int, depth: float, index: int) -> str:
    """The string seed of one item: items are independent of which others are generated."""
    return f"attn-transition-bench|{seed}|{task}|{length}|{depth:.4f}|{index}"


def count_word(text: str, word: str) -> int:
    """Occurrences of ``word`` in ``text`` as a whole word (not inside another word or number)."""
    return len(re.findall(rf"(?<![\w]){re.escape(word)}(?![\w])", text))


def _name(rng: random.Random, syllables: Sequence[str], parts: int = 3) -> str:
    return "".join(rng.choice(syllables) for _ in range(parts)).capitalize()


def _distinct_names(rng: random.Random, syllables: Sequence[str], k: int, avoid: Iterable[str] = (),
                    parts: int = 3) -> list[str]:
    seen = {a.lower() for a in avoid}
    out: list[str] = []
    while len(out) < k:
        n = _name(rng, syllables, parts)
        if n.lower() not in seen:
            seen.add(n.lower())
            out.append(n)
    return out


def _story_sentence(rng: random.Random, data: dict[str, Any], avoid: set[str]) -> str:
    """One filler fact about invented people; never mentions a word in ``avoid``."""
    while True:
        template = rng.choice(data["filler_templates"])
        name, name2 = _distinct_names(rng, data["syllables"], 2)
        if name.lower() in avoid or name2.lower() in avoid:
            continue
        return template.format(name=name, name2=name2, colour=rng.choice(data["colours"]),
                               thing=rng.choice(data["things"]), place=rng.choice(data["places"]),
                               time=rng.choice(data["times"]), activity=rng.choice(data["activities"]))


@dataclass(frozen=True)
class Task:
    """A registered task: how to make a sample and how to draw its filler."""

    name: str
    description: str
    make: Callable[[random.Random, dict[str, Any], int, float, str], Sample] = field(repr=False)
    filler: Callable[[Sample, int], list[str]] = field(repr=False)


# ----------------------------------------------------------------------------- fact
def _make_fact(rng: random.Random, data: dict[str, Any], length: int, depth: float, item_id: str) -> Sample:
    spec = data["tasks"]["fact"]
    name = _name(rng, data["syllables"])
    code = str(rng.randrange(10, 100))
    fill = dict(name=name, code=code)
    distractors = []
    others = _distinct_names(rng, data["syllables"], int(spec.get("distractors", 0)), avoid=[name])
    for other in others:
        other_code = str(rng.choice([c for c in range(10, 100) if str(c) != code]))
        distractors.append(spec["distractor"].format(other=other, other_code=other_code))
    needles = (Needle(spec["needle"].format(**fill), depth),)
    return Sample(item_id=item_id, task="fact", length=length, depth=depth, intro=spec["intro"],
                  needles=needles, question=spec["question"].format(**fill), prime=spec["prime"].format(**fill),
                  answer=spec["answer"].format(**fill), separator=spec["separator"],
                  filler_seed=rng.randrange(2 ** 31), avoid=(name, code), scatter=tuple(distractors),
                  chance=1 / 90)


def _fact_filler(sample: Sample, k: int) -> list[str]:
    """Story sentences with the sample's distractor sentences spread among them."""
    data = task_data()
    rng = random.Random(sample.filler_seed)
    avoid = {a.lower() for a in sample.avoid}
    scatter = list(sample.scatter[:k])
    out = [_story_sentence(rng, data, avoid) for _ in range(k - len(scatter))]
    for sentence in scatter:
        out.insert(rng.randrange(len(out) + 1), sentence)
    return out


# ----------------------------------------------------------------------------- kv
def _kv_key(rng: random.Random, data: dict[str, Any]) -> str:
    """An invented key: words of ``key_parts`` syllables each, joined by hyphens."""
    parts = data["tasks"]["kv"].get("key_parts", [2, 2])
    return "-".join(_name(rng, data["syllables"], parts=p).lower() for p in parts)


def _make_kv(rng: random.Random, data: dict[str, Any], length: int, depth: float, item_id: str) -> Sample:
    spec = data["tasks"]["kv"]
    key = _kv_key(rng, data)
    value = str(rng.randrange(10, 100))
    fill = dict(key=key, value=value)
    needles = (Needle(spec["line"].format(**fill), depth),)
    return Sample(item_id=item_id, task="kv", length=length, depth=depth, intro=spec["intro"], needles=needles,
                  question=spec["question"].format(**fill), prime=spec["prime"].format(**fill),
                  answer=value, separator=spec["separator"], filler_seed=rng.randrange(2 ** 31),
                  avoid=(key, value), chance=1 / 90)


def _kv_filler(sample: Sample, k: int) -> list[str]:
    """Other ``key: value`` lines: distinct keys, values never equal to the answer."""
    data = task_data()
    spec = data["tasks"]["kv"]
    rng = random.Random(sample.filler_seed)
    key, value = sample.avoid
    seen = {key}
    values = [str(v) for v in range(10, 100) if str(v) != value]
    out: list[str] = []
    while len(out) < k:
        other = _kv_key(rng, data)
        if other in seen:
            continue
        seen.add(other)
        out.append(spec["line"].format(key=other, value=rng.choice(values)))
    return out


# ----------------------------------------------------------------------------- multihop
def _make_multihop(rng: random.Random, data: dict[str, Any], length: int, depth: float,
                   item_id: str) -> Sample:
    spec = data["tasks"]["multihop"]
    name = _name(rng, data["syllables"])
    first = rng.randrange(1, 10)
    second = rng.choice([d for d in range(10) if d != first])    # two different facts are needed
    fill = dict(name=name, first=str(first), second=str(second))
    # The second digit goes half the context away from the first: depth d and (d + 0.5) mod 1.
    other = round((depth + 0.5) % 1.0, 4) if depth < 1.0 else 0.5
    texts = [t.format(**fill) for t in spec["needles"]]
    needles = (Needle(texts[0], depth), Needle(texts[1], other))
    return Sample(item_id=item_id, task="multihop", length=length, depth=depth, intro=spec["intro"],
                  needles=needles, question=spec["question"].format(**fill), prime=spec["prime"].format(**fill),
                  answer=spec["answer"].format(**fill), separator=spec["separator"],
                  filler_seed=rng.randrange(2 ** 31), avoid=(name,), chance=1 / 81)


def _story_filler(sample: Sample, k: int) -> list[str]:
    data = task_data()
    rng = random.Random(sample.filler_seed)
    avoid = {a.lower() for a in sample.avoid}
    return [_story_sentence(rng, data, avoid) for _ in range(k)]


TASKS: dict[str, Task] = {
    t.name: t for t in (
        Task("fact", "fact retrieval: a secret code hidden among other synthetic facts", _make_fact, _fact_filler),
        Task("kv", "key-value retrieval (lost in the middle)", _make_kv, _kv_filler),
        Task("multihop", "two facts far apart, joined into one answer", _make_multihop, _story_filler),
    )
}
DEFAULT_TASKS: tuple[str, ...] = ("fact", "kv", "multihop")


def get_task(name: str) -> Task:
    """The registered task called ``name``; UsageError with a did-you-mean hint otherwise."""
    if name not in TASKS:
        extra = did_you_mean(name, TASKS)
        raise UsageError(f"unknown task {name!r}{extra}; --tasks takes a comma list of {', '.join(TASKS)}")
    return TASKS[name]


def parse_tasks(text: str) -> tuple[str, ...]:
    names = tuple(dict.fromkeys(p.strip() for p in text.split(",") if p.strip()))
    if not names:
        raise UsageError(f"--tasks needs at least one task name, e.g. --tasks {','.join(DEFAULT_TASKS)}")
    for n in names:
        get_task(n)
    return names


def make_samples(tasks: Sequence[str], lengths: Sequence[int], depths: Sequence[float], per_cell: int,
                 seed: int) -> list[Sample]:
    """``per_cell`` samples for every (task, length, depth), in that nested order.

    Each sample depends only on ``(seed, task, length, depth, index)``, so adding a length
    or a task never changes the others' items.
    """
    data = task_data()
    out: list[Sample] = []
    for task_name in tasks:
        task = get_task(task_name)
        for length in lengths:
            for depth in depths:
                for i in range(per_cell):
                    item_id = f"{task_name}-L{length}-d{round(depth * 100):03d}-{i}"
                    rng = random.Random(sample_seed(seed, task_name, length, depth, i))
                    out.append(task.make(rng, data, length, depth, item_id))
    return out

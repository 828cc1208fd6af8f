"""Test helpers around the package's offline judge server (not a test file).

``FakeJudgeServer`` (in ``attn_transition.evaluation.fake_judge``) is a real HTTP server on
127.0.0.1 that speaks Chat Completions to the real ``openai`` client; this module adds the
small generation files the judge tests feed it, and a recorder for injected sleeps.
"""

from __future__ import annotations

import json
from pathlib import Path

from attn_transition.evaluation.fake_judge import FakeJudgeServer, fake_score  # noqa: F401  (re-exported)

KEYS = ["decode_or", "decode_al_05_be_01_lay_2", "decode_al_1_be_05_lay_1", "decode_al_15_be_08_lay_2"]
FAKE_MODEL = "fake-judge"

_WORDS = ["river", "council", "bridge", "harbour", "library", "market", "station", "tower", "school", "farm",
          "bakery", "garden", "museum", "stadium", "clinic", "ferry"]


def candidate_text(doc: int, k: int) -> str:
    """A candidate summary: unique per (document, candidate), free of any config name."""
    return f"The {_WORDS[(doc + k) % len(_WORDS)]} story number {doc} told in way {k}, with {doc * 7 + k} facts."


def make_records(n_docs: int = 4, keys: list[str] = KEYS, with_prompt_tokens: bool = False) -> list[dict]:
    records = []
    for d in range(n_docs):
        rec = {"document": f"Article {d}. " + " ".join(f"The {w} opened on day {d}." for w in _WORDS[: 5 + d]),
               "summary": f"The {_WORDS[d % len(_WORDS)]} opened on day {d}.", "id": f"doc{d}"}
        for k, key in enumerate(keys):
            rec[key] = candidate_text(d, k)
        if with_prompt_tokens:
            rec["prompt_tokens"] = 400 + 100 * d
        records.append(rec)
    return records


def write_outputs(directory: Path, n_docs: int = 4, keys: list[str] = KEYS, name: str = "out.json",
                  with_prompt_tokens: bool = False) -> Path:
    path = Path(directory) / name
    path.write_text(json.dumps(make_records(n_docs, keys, with_prompt_tokens)), encoding="utf-8")
    return path


class SleepRecorder:
    """An injectable ``sleep`` that records the requested waits and returns at once."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)

"""Test helpers around the package's offline judge server (not a test file).

``FakeJudgeServer`` here is :class:`attn_transition.evaluation.judge.testing.FakeJudgeServer`
(a real HTTP server on 127.0.0.1 that speaks Chat Completions to the real ``openai``
client) told to misbehave on cue; this module also adds the small generation files the
judge tests feed it, and a recorder for injected sleeps.

Behaviours (consumed one per request from ``script``, then ``default``): ``ok``, ``429``
(with ``Retry-After: retry_after``), ``500``, ``malformed`` (not JSON), ``incomplete``
(JSON missing one label), ``slow`` (answers after ``slow_seconds``), ``context_length``
(400 ``context_length_exceeded``, as for a too long prompt), ``bad_format`` (400 naming
``response_format``), ``bad_body`` (200 whose body is not a chat completion). ``fail_after=k``
answers 500 to every request after the k-th successful answer::

    with FakeJudgeServer(script=["429", "ok", "malformed"], fail_after=None) as server:
        client = OpenAI(base_url=server.base_url, api_key="dummy", max_retries=0)
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any, Iterable, Optional

from attn_transition.evaluation.judge import testing
from attn_transition.evaluation.judge.testing import candidates, error_body, tokens
from attn_transition.evaluation.judge.testing import fake_score  # noqa: F401  (re-exported)

BEHAVIOURS = ("ok", "429", "500", "malformed", "incomplete", "slow", "context_length", "bad_format", "bad_body")
CONTEXT_LENGTH_MESSAGE = ("This model's maximum context length is 128 tokens. However, your messages resulted in "
                          "{n} tokens. Please reduce the length of the messages.")


class FakeJudgeServer(testing.FakeJudgeServer):
    """The package's stand-in server, answering each request with the next scripted behaviour."""

    def __init__(self, *, script: Iterable[str] = (), default: str = "ok", fail_after: Optional[int] = None,
                 retry_after: str = "0.05", slow_seconds: float = 5.0, **kwargs: Any):
        super().__init__(**kwargs)
        self.script = list(script)
        for b in [*self.script, default]:
            assert b in BEHAVIOURS, f"unknown behaviour {b!r}; known: {BEHAVIOURS}"
        self.default = default
        self.fail_after = fail_after
        self.retry_after = retry_after
        self.slow_seconds = slow_seconds
        self._release = threading.Event()

    def stop(self) -> None:
        self._release.set()                   # wake up 'slow' answers
        super().stop()

    def _next_behaviour(self) -> str:
        with self._lock:
            if self.fail_after is not None and self.answered >= self.fail_after:
                return "500"
            return self.script.pop(0) if self.script else self.default

    def answer(self, body: dict) -> testing.Answer:
        behaviour = self._next_behaviour()
        unknown = self.unknown_model(body)
        if unknown is not None:
            return unknown
        if behaviour == "429":
            return 429, error_body("Rate limit reached (fake)", "requests", code="rate_limit_exceeded"), \
                {"Retry-After": self.retry_after}
        if behaviour == "500":
            return 500, error_body("The server had an error (fake)", "server_error"), {}
        if behaviour == "context_length":
            prompt = "".join(str(m.get("content", "")) for m in body.get("messages", []))
            return 400, error_body(CONTEXT_LENGTH_MESSAGE.format(n=tokens(prompt)), param="messages",
                                   code="context_length_exceeded"), {}
        if behaviour == "bad_format":
            return 400, error_body("Invalid parameter: 'response_format' of type 'json_schema' is not supported "
                                   "with this model (fake)", param="response_format"), {}
        if behaviour == "bad_body":
            return 200, ["not", "a", "chat", "completion"], {}
        if behaviour == "slow":
            self._release.wait(self.slow_seconds)
        if behaviour == "malformed":
            content = "Here are my scores: " + ", ".join(f"{lab}: {self.scorer(t)}" for lab, t in candidates(body))
            return self.completion(body, content)
        reply = self.reply(body)
        if behaviour == "incomplete" and reply:
            reply.pop(next(iter(reply)))
        return self.completion(body, json.dumps(reply))


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

"""Pure logic of the LLM judge: what one request shows, the request payload, its cache key,
and strict validation of the reply. No I/O beyond reading the packaged prompt data.

Anonymisation: the judge sees candidates labelled ``S1``, ``S2``, ... in the order they are
presented; the configuration keys (``decode_or``, ``decode_al_05_be_01_lay_2``) never enter
a request. The presented order is a shuffle drawn from ``(seed, document index, document
id, repeat)``, so it differs across documents and repeats and is reproducible from the seed.

Payload: ``build_payload`` returns the exact JSON body sent to ``/chat/completions``
(minus ``model``). The cache key is the SHA-256 of that payload, the model and the base
URL, so a changed prompt text, candidate text, order, seed or server never reuses a cached
answer, and an unchanged one never pays twice.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Optional, Sequence

from attn_transition.errors import UsageError

__all__ = ["PROTOCOLS", "RESPONSE_FORMATS", "PROMPTS_PATH", "ReplyError", "Reply", "load_prompts",
           "presentation_order", "make_labels", "request_seed", "build_messages", "response_format", "with_reask",
           "build_payload", "cache_key", "parse_reply", "estimate_tokens", "OUTPUT_TOKENS_PER_CANDIDATE",
           "MAX_TOKENS_AUTO", "REPLY_TOKENS_BASE", "REPLY_TOKENS_PER_CANDIDATE", "reply_token_limit"]

PROTOCOLS = ("joint", "single")
RESPONSE_FORMATS = ("json_schema", "json_object", "none")
PROMPTS_PATH = Path(__file__).parent.parent / "prompts" / "judge_prompts.json"
SCHEMA_NAME = "summary_scores"
# Dry-run estimate of the reply: a one-sentence reason, the score and the JSON around them.
OUTPUT_TOKENS_PER_CANDIDATE = 45
CHARS_PER_TOKEN = 4.0   # rough English average for GPT-style BPE tokenizers
# The default reply limit (``--max-tokens auto``), sized from the reply schema: per candidate, its
# label, ``{"reason": <one sentence>, "score": <int>}`` and the JSON around it is about 45 tokens
# (OUTPUT_TOKENS_PER_CANDIDATE); 100 leaves room for a long sentence, and the base covers the outer
# braces and a code fence. A reply that runs past it is cut short (finish_reason "length") and
# re-asked, instead of running on until --timeout.
MAX_TOKENS_AUTO = "auto"
REPLY_TOKENS_BASE = 50
REPLY_TOKENS_PER_CANDIDATE = 100


class ReplyError(ValueError):
    """The judge's reply is not a complete, valid answer (malformed JSON, missing label...)."""


@dataclass(frozen=True)
class Reply:
    scores: dict[str, int]    # label -> score
    reasons: dict[str, str]   # label -> reason ('' when the reply gave none)


@lru_cache(maxsize=4)
def _load(path: str) -> dict:
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    assert set(PROTOCOLS) <= set(data["protocols"]), f"prompt file lacks a protocol: {sorted(data['protocols'])}"
    return data


def load_prompts(path: Optional[str | Path] = None) -> dict:
    """The prompt data (see ``prompts/judge_prompts.json``); versioned by its ``version`` field."""
    return _load(str(path or PROMPTS_PATH))


def make_labels(n: int, prefix: str = "S") -> list[str]:
    return [f"{prefix}{i + 1}" for i in range(n)]


def presentation_order(keys: Sequence[str], seed: int, doc_index: int, doc_id: str, repeat: int) -> list[str]:
    """The order in which a document's candidates are shown in one repeat (a seeded shuffle).

    ``random.Random`` seeded with a string is stable across Python processes and versions
    (it hashes the string with SHA-512), so the order is reproducible from the seed alone.
    """
    rng = random.Random(f"order:{seed}:{doc_index}:{doc_id}:{repeat}")
    order = list(keys)
    rng.shuffle(order)
    return order


def request_seed(seed: int, doc_index: int, repeat: int, attempt: int, candidate: str = "") -> int:
    """The ``seed`` request parameter: differs per repeat and per re-ask after a bad reply, so
    that a re-ask is a new request (new cache key) rather than the cached bad answer."""
    digest = hashlib.sha256(f"request:{seed}:{doc_index}:{repeat}:{attempt}:{candidate}".encode()).hexdigest()
    return int(digest[:8], 16) & 0x7FFFFFFF


def build_messages(prompts: dict, protocol: str, document: str, texts: Sequence[str], labels: Sequence[str],
                   reference: Optional[str] = None) -> list[dict[str, str]]:
    """System + user message for one request. ``texts[i]`` is shown under ``labels[i]``."""
    if protocol not in PROTOCOLS:
        raise UsageError(f"--protocol must be one of {', '.join(PROTOCOLS)}, got {protocol!r}")
    assert len(texts) == len(labels) >= 1, f"texts/labels mismatch: {len(texts)} vs {len(labels)}"
    assert protocol == "joint" or len(texts) == 1, f"protocol 'single' shows one candidate, got {len(texts)}"
    spec = prompts["protocols"][protocol]
    blocks = "\n".join(prompts["candidate_block"].format(label=lab, text=txt) for lab, txt in zip(labels, texts))
    ref = prompts["reference_block"].format(summary=reference) if reference is not None else ""
    user = spec["user"].format(n=len(labels), labels=", ".join(labels), document=document, reference=ref,
                               candidates=blocks)
    return [{"role": "system", "content": spec["system"]}, {"role": "user", "content": user}]


def response_format(labels: Sequence[str], mode: str) -> Optional[dict]:
    """``response_format`` of the request: a strict JSON schema with one entry per label,
    plain JSON mode, or nothing (the reply is then validated just as strictly)."""
    if mode == "none":
        return None
    if mode == "json_object":
        return {"type": "json_object"}
    if mode != "json_schema":
        raise UsageError(f"--response-format must be one of {', '.join(RESPONSE_FORMATS)}, got {mode!r}")
    entry = {"type": "object", "properties": {"reason": {"type": "string"}, "score": {"type": "integer"}},
             "required": ["reason", "score"], "additionalProperties": False}
    schema = {"type": "object", "properties": {lab: entry for lab in labels}, "required": list(labels),
              "additionalProperties": False}
    return {"type": "json_schema", "json_schema": {"name": SCHEMA_NAME, "strict": True, "schema": schema}}


def reply_token_limit(n_labels: int) -> int:
    """The ``max_tokens`` of a request showing ``n_labels`` candidates under ``--max-tokens auto``:
    ``REPLY_TOKENS_BASE + REPLY_TOKENS_PER_CANDIDATE * n_labels`` (150 for one, 2,550 for 25)."""
    if n_labels < 1:
        raise ValueError(f"a request shows at least one candidate, got {n_labels}")
    return REPLY_TOKENS_BASE + REPLY_TOKENS_PER_CANDIDATE * n_labels


def build_payload(*, prompts: dict, protocol: str, document: str, texts: Sequence[str], labels: Sequence[str],
                  reference: Optional[str], response_format_mode: str, temperature: float, seed: int,
                  max_tokens: Optional[int] = None) -> dict[str, Any]:
    """The request body (everything but ``model``), as sent to ``chat.completions.create``."""
    payload: dict[str, Any] = {
        "messages": build_messages(prompts, protocol, document, texts, labels, reference),
        "temperature": float(temperature),
        "seed": int(seed),
    }
    fmt = response_format(labels, response_format_mode)
    if fmt is not None:
        payload["response_format"] = fmt
    if max_tokens is not None:
        payload["max_tokens"] = int(max_tokens)
    return payload


REASK = ("Your reply could not be used: {error}. Reply again with only the JSON object asked for: "
         "one entry per summary label, each with a short \"reason\" and an integer \"score\" from 0 to 100.")


def with_reask(payload: dict[str, Any], reply: Optional[str], error: str) -> dict[str, Any]:
    """The payload of a re-ask: the first request, the reply that failed, and what was wrong with it
    (a greedy server asked the same thing again would answer the same)."""
    brief = error if len(error) <= 300 else error[:297] + "..."
    messages = [*payload["messages"], {"role": "assistant", "content": reply or ""},
                {"role": "user", "content": REASK.format(error=brief)}]
    return {**payload, "messages": messages}


def cache_key(payload: dict, model: str, base_url: str) -> str:
    """SHA-256 over the canonical JSON of payload + model + base URL."""
    blob = json.dumps({"payload": payload, "model": model, "base_url": base_url.rstrip("/")},
                      sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


_FENCE = re.compile(r"^```(?:json)?\s*\n?(.*?)\n?```$", re.S | re.I)


def _score_value(value: Any, label: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ReplyError(f"score of {label} is {value!r}, not a number")
    if isinstance(value, float) and not (math.isfinite(value) and value.is_integer()):
        raise ReplyError(f"score of {label} is {value!r}, not an integer")
    if not 0 <= value <= 100:
        raise ReplyError(f"score of {label} is {value!r}, outside 0-100")
    return int(value)


def parse_reply(content: Optional[str], labels: Sequence[str]) -> Reply:
    """Validate a reply strictly: a JSON object with exactly the given labels, each an object
    ``{"reason": str, "score": int 0-100}`` (a bare integer is accepted too). Anything else
    raises :class:`ReplyError`: nothing is guessed from free text."""
    if content is None or not content.strip():
        raise ReplyError("empty reply")
    text = content.strip()
    fence = _FENCE.match(text)
    if fence:
        text = fence.group(1).strip()
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ReplyError(f"reply is not valid JSON ({exc.msg} at char {exc.pos})") from None
    if not isinstance(data, dict):
        raise ReplyError(f"reply is a JSON {type(data).__name__}, expected an object")
    missing = [lab for lab in labels if lab not in data]
    extra = [k for k in data if k not in labels]
    if missing or extra:
        raise ReplyError("reply labels do not match: " + "; ".join(
            part for part in (f"missing {', '.join(missing)}" if missing else "",
                              f"unexpected {', '.join(map(str, extra))}" if extra else "") if part))
    scores: dict[str, int] = {}
    reasons: dict[str, str] = {}
    for lab in labels:
        entry = data[lab]
        if isinstance(entry, dict):
            if "score" not in entry:
                raise ReplyError(f"entry {lab} has no 'score'")
            scores[lab] = _score_value(entry["score"], lab)
            reason = entry.get("reason", "")
            reasons[lab] = reason if isinstance(reason, str) else json.dumps(reason)
        else:
            scores[lab] = _score_value(entry, lab)
            reasons[lab] = ""
    return Reply(scores, reasons)


def estimate_tokens(text: str) -> int:
    """Rough token count (about 4 characters per token); used only by ``--dry-run``."""
    return math.ceil(len(text) / CHARS_PER_TOKEN)

"""The settings of one judge run (:class:`JudgeOptions`), checked when they are made."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Union

from attn_transition.errors import UsageError

from .client import DEFAULT_BASE_URL
from .payload import MAX_TOKENS_AUTO, PROTOCOLS, RESPONSE_FORMATS, reply_token_limit

__all__ = ["JudgeOptions", "DEFAULT_JUDGE_MODEL"]

DEFAULT_JUDGE_MODEL = "gpt-4o"


@dataclass(frozen=True)
class JudgeOptions:
    """What to ask and how. Validated on construction (UsageError naming the field).

    Args:
        judge_model: the judge's model name on the server.
        base_url: an OpenAI-compatible endpoint.
        protocol: ``joint`` (every candidate of a document in one request, the seed's) or ``single``.
        repeats: requests per document with other candidate orders (judge noise), >= 1.
        seed: seed of the candidate orders and of the request seeds.
        with_reference: show the reference summary to the judge.
        response_format: structured-output mode the server supports (replies are validated anyway).
        temperature: in [0, 2].
        max_tokens: the reply limit: ``"auto"`` (default) sizes it per request from the reply
            schema (:func:`~.payload.reply_token_limit`), an integer >= 1 is sent as is, ``None``
            sends no limit (the server's own).
        reask: re-asks after a malformed or incomplete reply, >= 0.
        concurrency: requests in flight, >= 1. max_retries: on 429/5xx/timeouts, >= 0.
        timeout: seconds per request. price_in, price_out: USD per 1M tokens (both or neither).
    """

    judge_model: str = DEFAULT_JUDGE_MODEL
    base_url: str = DEFAULT_BASE_URL
    protocol: str = "joint"
    repeats: int = 1
    seed: int = 0
    with_reference: bool = False
    response_format: str = "json_schema"
    temperature: float = 0.0
    max_tokens: Union[int, str, None] = MAX_TOKENS_AUTO
    reask: int = 2                   # extra requests after a malformed/incomplete reply
    concurrency: int = 4
    max_retries: int = 6
    timeout: float = 120.0
    price_in: Optional[float] = None
    price_out: Optional[float] = None

    def __post_init__(self) -> None:
        def bad(name: str, message: str) -> UsageError:
            return UsageError(f"{name} {message}", field=name)

        if self.protocol not in PROTOCOLS:
            raise bad("protocol", f"must be one of {', '.join(PROTOCOLS)}, got {self.protocol!r}")
        if self.response_format not in RESPONSE_FORMATS:
            raise bad("response_format", f"must be one of {', '.join(RESPONSE_FORMATS)}, got {self.response_format!r}")
        for name, low in (("repeats", 1), ("concurrency", 1), ("reask", 0), ("max_retries", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise bad(name, f"must be an integer >= {low}, got {value!r}")
        if not 0.0 <= self.temperature <= 2.0:
            raise bad("temperature", f"must be in [0, 2], got {self.temperature!r}")
        if self.max_tokens not in (None, MAX_TOKENS_AUTO) and (
                isinstance(self.max_tokens, bool) or not isinstance(self.max_tokens, int) or self.max_tokens < 1):
            raise bad("max_tokens", f"must be {MAX_TOKENS_AUTO!r}, None (no limit) or an integer >= 1, "
                                    f"got {self.max_tokens!r}")
        if not self.timeout > 0:
            raise bad("timeout", f"must be > 0 seconds, got {self.timeout!r}")
        if (self.price_in is None) != (self.price_out is None):
            raise UsageError("give price_in and price_out together (USD per 1M input / output tokens)",
                             field=("price_in", "price_out"))
        for name in ("price_in", "price_out"):
            value = getattr(self, name)
            if value is not None and not value >= 0:
                raise bad(name, f"must be >= 0 USD per 1M tokens, got {value!r}")
        if not self.judge_model:
            raise bad("judge_model", "must not be empty")

    def reply_limit(self, n_labels: int) -> Optional[int]:
        """The ``max_tokens`` sent with a request showing ``n_labels`` candidates (None: none sent)."""
        return reply_token_limit(n_labels) if self.max_tokens == MAX_TOKENS_AUTO else self.max_tokens

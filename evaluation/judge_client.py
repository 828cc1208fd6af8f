"""The judge's network side: an append-only answer cache and a retrying Chat Completions call.

* :class:`JudgeCache` -- JSONL, one line per answer the server gave (HTTP 200), keyed by
  :func:`~.judge_payload.cache_key`. Lines are appended, flushed and fsynced as answers
  arrive, so a crash or Ctrl-C loses nothing already paid for; a torn last line (a crash
  mid-write) is skipped on load. Malformed answers are cached too: they were paid for, and
  re-asking uses a different request (see ``request_seed``).
* :class:`JudgeClient` -- calls the official ``openai`` client (built with
  ``max_retries=0``: retrying is done here). 429, 408/409, 5xx, timeouts and connection
  errors are retried with exponential backoff (deterministic jitter), honouring the
  server's ``retry-after-ms`` / ``Retry-After`` headers; every wait is recorded in
  ``waits``. Errors that retrying cannot fix (unknown model, rejected key, bad request)
  become a one-line :class:`~attn_transition.errors.UsageError` at once.
"""

from __future__ import annotations

import email.utils
import hashlib
import json
import os
import random
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from attn_transition.errors import UsageError

__all__ = ["RetryPolicy", "Completion", "JudgeCache", "JudgeClient", "Aborted", "retry_after_seconds", "file_sha256"]

DEFAULT_BASE_URL = "https://api.openai.com/v1"
RETRYABLE_STATUS = frozenset({408, 409, 429})


class Aborted(Exception):
    """Raised inside a worker when the run is stopping (another request failed for good)."""


@dataclass(frozen=True)
class RetryPolicy:
    max_retries: int = 6        # retries after the first try
    base_delay: float = 1.0     # seconds; doubled per retry
    max_delay: float = 60.0     # cap of the computed backoff (a server's Retry-After may exceed it)
    max_retry_after: float = 600.0

    def __post_init__(self) -> None:
        if not isinstance(self.max_retries, int) or self.max_retries < 0:
            raise UsageError(f"--max-retries must be an integer >= 0, got {self.max_retries!r}")
        if not self.base_delay > 0 or not self.max_delay >= self.base_delay:
            raise UsageError(f"retry delays must satisfy 0 < base_delay <= max_delay, got "
                             f"{self.base_delay!r}, {self.max_delay!r}")

    def backoff(self, attempt: int, key: str) -> float:
        """Delay before retry ``attempt`` (0-based): base * 2**attempt, capped, times a
        jitter in [0.5, 1] drawn from the request key (spreads concurrent retries, reproducible)."""
        jitter = 0.5 + 0.5 * random.Random(f"{key}:{attempt}").random()
        return min(self.max_delay, self.base_delay * 2.0 ** attempt) * jitter


@dataclass(frozen=True)
class Completion:
    content: Optional[str]
    finish_reason: Optional[str]
    prompt_tokens: int
    completion_tokens: int
    cached: bool
    model: Optional[str] = None


class JudgeCache:
    """Append-only JSONL cache of answers, safe to share between threads."""

    def __init__(self, path: str | os.PathLike, *, enabled: bool = True):
        self.path = Path(path)
        self.enabled = enabled
        self._lock = threading.Lock()
        self._entries: dict[str, dict] = {}
        self.skipped_lines = 0
        if enabled and self.path.exists():
            with self.path.open(encoding="utf-8") as fh:
                for line in fh:
                    if not line.strip():
                        continue
                    try:
                        entry = json.loads(line)
                        self._entries[entry["key"]] = entry
                    except (json.JSONDecodeError, KeyError, TypeError):
                        self.skipped_lines += 1    # a torn line from a crash mid-write
            if self.skipped_lines:
                print(f"judge: skipped {self.skipped_lines} unreadable line(s) in {self.path}", file=sys.stderr)

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str) -> Optional[dict]:
        return self._entries.get(key) if self.enabled else None

    def put(self, key: str, entry: dict) -> None:
        entry = {"key": key, **entry}
        line = json.dumps(entry, ensure_ascii=False) + "\n"
        with self._lock:
            self._entries[key] = entry
            if not self.enabled:
                return
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as fh:
                fh.write(line)
                fh.flush()
                os.fsync(fh.fileno())


def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def retry_after_seconds(headers: Any) -> Optional[float]:
    """Seconds the server asks us to wait: ``retry-after-ms``, else ``Retry-After`` as
    seconds or an HTTP date; ``None`` when absent or unreadable."""
    if headers is None:
        return None
    ms = headers.get("retry-after-ms")
    if ms is not None:
        try:
            return max(0.0, float(ms) / 1000.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _error_text(exc: Exception) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])
    return str(getattr(exc, "message", None) or exc).splitlines()[0][:300]


def _error_code(exc: Exception) -> Optional[str]:
    code = getattr(exc, "code", None)
    if code:
        return str(code)
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict) and err.get("code"):
            return str(err["code"])
    return None


@dataclass
class JudgeClient:
    """Sends payloads through an ``openai.OpenAI`` client with caching and retries.

    ``sleep(seconds)`` is injectable (tests); the default waits on ``stop`` so that an
    abort interrupts a backoff at once.
    """

    client: Any                     # openai.OpenAI
    model: str
    base_url: str
    cache: JudgeCache
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    sleep: Optional[Callable[[float], None]] = None
    stop: threading.Event = field(default_factory=threading.Event)
    waits: list = field(default_factory=list)      # every backoff/Retry-After wait, in seconds
    sent: int = 0                                  # HTTP requests sent (retries included)
    cache_path_hint: str = ""

    def __post_init__(self) -> None:
        self._lock = threading.Lock()

    def _sleep(self, seconds: float) -> None:
        with self._lock:
            self.waits.append(seconds)
        if self.sleep is not None:
            self.sleep(seconds)
            if self.stop.is_set():
                raise Aborted()
        elif self.stop.wait(seconds):
            raise Aborted()

    def complete(self, payload: dict, key: str) -> Completion:
        """The answer to ``payload``: from the cache, else from the server (then cached)."""
        hit = self.cache.get(key)
        if hit is not None:
            usage = hit.get("usage") or {}
            return Completion(hit.get("content"), hit.get("finish_reason"), int(usage.get("prompt_tokens", 0)),
                              int(usage.get("completion_tokens", 0)), True, hit.get("response_model"))
        response = self._send(payload, key)
        choice = response.choices[0] if response.choices else None
        content = choice.message.content if choice is not None and choice.message is not None else None
        finish = getattr(choice, "finish_reason", None) if choice is not None else None
        usage = getattr(response, "usage", None)
        pt = int(getattr(usage, "prompt_tokens", 0) or 0)
        ct = int(getattr(usage, "completion_tokens", 0) or 0)
        self.cache.put(key, {"model": self.model, "base_url": self.base_url, "content": content,
                             "finish_reason": finish, "usage": {"prompt_tokens": pt, "completion_tokens": ct},
                             "response_model": getattr(response, "model", None), "time": time.time()})
        return Completion(content, finish, pt, ct, False, getattr(response, "model", None))

    def _fatal(self, exc: Exception) -> UsageError:
        import openai

        status = getattr(exc, "status_code", None)
        text = _error_text(exc)
        where = self.base_url
        saved = f"; answers so far are kept in {self.cache_path_hint}" if self.cache_path_hint else ""
        if isinstance(exc, openai.NotFoundError):
            if _error_code(exc) == "model_not_found" or "model" in text.lower():
                return UsageError(f"{where} does not serve judge model {self.model!r} (404 model_not_found: "
                                  f"{text}); pass a model it serves with --judge-model{saved}")
            return UsageError(f"{where}/chat/completions answered 404 ({text}); check --base-url "
                              f"(an OpenAI-compatible server's URL usually ends in /v1){saved}")
        if isinstance(exc, openai.AuthenticationError):
            return UsageError(f"{where} rejected the API key (401: {text}); export OPENAI_API_KEY=<a valid key>"
                              f"{saved}")
        if isinstance(exc, openai.PermissionDeniedError):
            return UsageError(f"{where} refused the request (403: {text}){saved}")
        if isinstance(exc, openai.BadRequestError) and "response_format" in text.lower():
            return UsageError(f"{where} rejected the response_format (400: {text}); try --response-format "
                              f"json_object or --response-format none{saved}")
        return UsageError(f"{where} answered {status} ({text}){saved}")

    def _send(self, payload: dict, key: str) -> Any:
        import openai

        last: Optional[Exception] = None
        for attempt in range(self.retry.max_retries + 1):
            if self.stop.is_set():
                raise Aborted()
            with self._lock:
                self.sent += 1
            try:
                return self.client.chat.completions.create(model=self.model, **payload)
            except (openai.APITimeoutError, openai.APIConnectionError) as exc:   # timeout is a subclass
                last, wait = exc, None
            except openai.APIStatusError as exc:
                status = exc.status_code
                if status not in RETRYABLE_STATUS and status < 500:
                    raise self._fatal(exc) from None
                last = exc
                wait = retry_after_seconds(exc.response.headers if exc.response is not None else None)
                if wait is not None:
                    wait = min(wait, self.retry.max_retry_after)
            if attempt == self.retry.max_retries:
                break
            self._sleep(wait if wait is not None else self.retry.backoff(attempt, key))
        saved = f"; answers so far are kept in {self.cache_path_hint}, rerun to continue" \
            if self.cache_path_hint else ""
        tries = self.retry.max_retries + 1
        if isinstance(last, openai.APITimeoutError):
            raise UsageError(f"{self.base_url} timed out {tries} time(s) in a row; raise --timeout or check the "
                             f"server{saved}")
        if isinstance(last, openai.APIConnectionError):
            raise UsageError(f"cannot reach {self.base_url} ({_error_text(last)}) after {tries} tries; check "
                             f"--base-url and that the server is running{saved}")
        status = getattr(last, "status_code", "?")
        raise UsageError(f"{self.base_url} kept failing (HTTP {status}: {_error_text(last)}) after {tries} "
                         f"tries{saved}")

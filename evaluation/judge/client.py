"""The judge's network side: a retrying Chat Completions call through the official client.

:class:`JudgeClient` answers a payload from the :class:`~.cache.JudgeCache` when it can,
else calls the official ``openai`` client (built with ``max_retries=0``: retrying is done
here) and caches the answer. 429, 408/409, 5xx, timeouts and connection errors are retried
with exponential backoff (deterministic jitter), honouring the server's ``retry-after-ms`` /
``Retry-After`` headers; every wait is recorded in ``waits`` and said as it happens, one line
on stderr (:meth:`JudgeClient.say`: which document and candidate, what failed, which retry, how
long the wait).

A slow server: the connection of a request that ran past ``--timeout`` is closed (the
``openai`` client's HTTP transport closes it on the timeout), so a server that stops work on a
request whose client has gone frees it (vLLM: ``with_cancellation`` on its chat route,
``vllm/entrypoints/openai/chat_completion/api_router.py``; ``transformers serve``:
``CancelOnDisconnect`` in ``transformers/cli/serving/utils.py``). After the first timeout the
client sends one request at a time for the rest of the run (those already in flight finish
first; :meth:`JudgeClient._gate`), so its retries never stack on a server that is already too
slow; the second timeout says what to rerun with (a larger ``--timeout``, ``--concurrency 1``).

Errors that retrying cannot fix and that hit every request (unknown model, rejected key, an
unsupported ``response_format`` or other request setting) become a one-line
:class:`~attn_transition.errors.UsageError` at once; a 400 about one request's content
(``context_length_exceeded``...) raises :class:`Rejected`, which the caller records as that
request's failure. Anything else the client raises (an unreadable answer...) is a one-line
``UsageError`` as well, never a traceback.
"""

from __future__ import annotations

import email.utils
import os
import random
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from attn_transition.errors import UsageError

from .cache import JudgeCache

__all__ = ["DEFAULT_BASE_URL", "STAND_IN_FINGERPRINT", "RetryPolicy", "Completion", "JudgeClient", "Aborted", "Rejected",
           "retry_after_seconds", "import_optional"]

DEFAULT_BASE_URL = "https://api.openai.com/v1"
# The system_fingerprint of every reply of the offline stand-in server (:mod:`.testing`): its scores
# are no judgement, and the scores file says so.
STAND_IN_FINGERPRINT = "attn-transition-stand-in"
RETRYABLE_STATUS = frozenset({408, 409, 429})
# Statuses a server may give for one request's own content (400; 413 too large; 422 invalid
# input, e.g. text-generation-inference's over-long prompts), and the codes that always mean
# content: recorded as that request's failure, the run goes on.
CONTENT_STATUS = frozenset({400, 413, 422})
CONTENT_ERROR_CODES = frozenset({"context_length_exceeded", "string_above_max_length", "content_filter",
                                 "content_policy_violation", "invalid_prompt"})
# Request parameters that are the same in every request: a 400 about them is fatal at once.
RUN_WIDE_PARAMS = ("model", "response_format", "temperature", "seed", "max_tokens", "max_completion_tokens")


class Aborted(Exception):
    """Raised inside a worker when the run is stopping (another request failed for good)."""


class Rejected(Exception):
    """The server refused this one request (HTTP 400 about its content); not retried."""

    def __init__(self, status: int, code: Optional[str], text: str):
        super().__init__(f"the server rejected the request (HTTP {status}"
                         + (f" {code}" if code else "") + f": {text})")
        self.status, self.code, self.text = status, code, text


def import_optional(module: str, purpose: str, pip_name: Optional[str] = None, alternative: str = "") -> Any:
    """``importlib.import_module(module)``, or a one-line UsageError naming the package and
    the pip command. Imports the top-level package first (a ``None`` there blocks it)."""
    import importlib

    top = module.split(".")[0]
    try:
        importlib.import_module(top)
        return importlib.import_module(module)
    except ImportError:
        pip_name = pip_name or top
        raise UsageError(f"{purpose} needs the {top} package, which is not installed: pip install {pip_name} "
                         f"(or all evaluation extras: pip install \"attn-transition[eval]\")"
                         + (f"; {alternative}" if alternative else "")) from None


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


class _Slot:
    """A held :meth:`JudgeClient._gate` slot; released on leaving the ``with`` block."""

    def __init__(self, client: "JudgeClient") -> None:
        self._client = client

    def __enter__(self) -> "_Slot":
        return self

    def __exit__(self, *exc: Any) -> None:
        self._client._release()


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
    notify: Optional[Callable[[str], None]] = None  # one line per retry or note; default: stderr
    notes: list = field(default_factory=list)      # every line given to notify
    stand_in: bool = False                         # an answer came from the offline stand-in (not a judge)
    concurrency: int = 0                           # --concurrency: HTTP requests in flight at most (0: no limit)
    placeholder_key: bool = False                  # no OPENAI_API_KEY: a loopback server got a placeholder
    timeouts: int = 0                              # requests that ran past --timeout, this run

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._noted: set[str] = set()
        self._slots = threading.Condition()
        self._active = 0                           # HTTP requests in flight now
        self._capacity = self.concurrency if self.concurrency > 0 else None    # None: no limit

    def _note_server(self, fingerprint: Optional[str]) -> None:
        """Remember an answer from the offline stand-in (:mod:`.testing`), which marks its replies."""
        if fingerprint == STAND_IN_FINGERPRINT:
            self.stand_in = True

    def say(self, line: str) -> None:
        """One line for the user as it happens (above the progress bar), through ``notify``."""
        with self._lock:
            self.notes.append(line)
        if self.notify is not None:
            self.notify(line)
        else:
            from tqdm import tqdm

            tqdm.write(line, file=sys.stderr)

    def say_once(self, topic: str, line: str) -> None:
        """:meth:`say` ``line`` the first time ``topic`` comes up in this run only."""
        with self._lock:
            if topic in self._noted:
                return
            self._noted.add(topic)
        self.say(line)

    def _timeout_s(self) -> Optional[float]:
        """The per-request timeout of the underlying client (seconds), when it is a plain number."""
        timeout = getattr(self.client, "timeout", None)
        return float(timeout) if isinstance(timeout, (int, float)) and not isinstance(timeout, bool) else None

    def _failure(self, exc: Exception) -> str:
        """What went wrong with one try, in a few words."""
        import openai

        if isinstance(exc, openai.APITimeoutError):
            timeout = self._timeout_s()
            return f"no answer within {timeout:g} s (--timeout)" if timeout is not None else \
                "the request timed out (--timeout)"
        if isinstance(exc, openai.APIConnectionError):
            return f"cannot reach {self.base_url} ({_error_text(exc)[:120]})"
        return f"HTTP {getattr(exc, 'status_code', '?')} ({_error_text(exc)[:120]})"

    def _sleep(self, seconds: float) -> None:
        with self._lock:
            self.waits.append(seconds)
        if self.sleep is not None:
            self.sleep(seconds)
            if self.stop.is_set():
                raise Aborted()
        elif self.stop.wait(seconds):
            raise Aborted()

    def complete(self, payload: dict, key: str, item: str = "") -> Completion:
        """The answer to ``payload``: from the cache, else from the server (then cached).
        ``item`` names the request in the lines said about it (e.g. ``document 'd1' (4 candidates)``)."""
        hit = self.cache.get(key)
        if hit is not None:
            self._note_server(hit.get("system_fingerprint"))
            usage = hit.get("usage") or {}
            return Completion(hit.get("content"), hit.get("finish_reason"), int(usage.get("prompt_tokens", 0)),
                              int(usage.get("completion_tokens", 0)), True, hit.get("response_model"))
        response = self._send(payload, key, item)
        try:                            # a non-compliant 200 body may lack any of these
            choice = response.choices[0] if response.choices else None
            content = choice.message.content if choice is not None and choice.message is not None else None
            finish = getattr(choice, "finish_reason", None) if choice is not None else None
            usage = getattr(response, "usage", None)
            pt = int(getattr(usage, "prompt_tokens", 0) or 0)
            ct = int(getattr(usage, "completion_tokens", 0) or 0)
            if content is not None and not isinstance(content, str):
                raise TypeError(f"message content is a {type(content).__name__}, not text")
        except Exception as exc:
            raise self._unexpected(exc) from None
        fingerprint = getattr(response, "system_fingerprint", None)
        fingerprint = fingerprint if isinstance(fingerprint, str) else None
        self._note_server(fingerprint)
        self.cache.put(key, {"model": self.model, "base_url": self.base_url, "content": content,
                             "finish_reason": finish, "usage": {"prompt_tokens": pt, "completion_tokens": ct},
                             "response_model": getattr(response, "model", None), "system_fingerprint": fingerprint,
                             "time": time.time()})
        return Completion(content, finish, pt, ct, False, getattr(response, "model", None))

    def kept_in(self) -> str:
        """The cache file, when it exists and holds answers ('' otherwise: nothing to point to)."""
        if not self.cache_path_hint or not self.cache.enabled or len(self.cache) == 0:
            return ""
        return self.cache_path_hint if os.path.exists(self.cache_path_hint) else ""

    def _saved(self, rerun: bool = False) -> str:
        """The end of an error line: where the answers so far are, when there are any."""
        kept = self.kept_in()
        if not kept:
            return ""
        return f"; answers so far are kept in {kept}" + (", rerun to continue" if rerun else "")

    def _unexpected(self, exc: Exception) -> UsageError:
        """Anything the client raised that is not an HTTP status, timeout or connection error."""
        text = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else "no message"
        return UsageError(f"{self.base_url} gave an answer the openai client could not handle "
                          f"({type(exc).__name__}: {text}); check that --base-url is an OpenAI-compatible "
                          f"Chat Completions server{self._saved()}")

    def _rejected(self, exc: Exception) -> Optional[Rejected]:
        """A 400 about this request's content (recorded, the run goes on), else ``None`` (fatal):
        a 400 about a setting every request shares, or one naming ``response_format``."""
        status = getattr(exc, "status_code", None)
        if status not in CONTENT_STATUS:
            return None
        code, text = _error_code(exc), _error_text(exc)
        param = str(getattr(exc, "param", None) or "")
        if code not in CONTENT_ERROR_CODES and ("response_format" in text.lower() or code == "model_not_found"
                                                or param.split(".")[0] in RUN_WIDE_PARAMS):
            return None
        return Rejected(status, code, text)

    def _fatal(self, exc: Exception) -> UsageError:
        import openai

        status = getattr(exc, "status_code", None)
        text = _error_text(exc)
        where = self.base_url
        saved = self._saved()
        if status == 400 and (_error_code(exc) == "model_not_found" or getattr(exc, "param", None) == "model"):
            return UsageError(f"{where} does not accept judge model {self.model!r} (400: {text}); pass a model it "
                              f"serves with --judge-model{saved}")
        if isinstance(exc, openai.NotFoundError):
            if _error_code(exc) == "model_not_found" or "model" in text.lower():
                return UsageError(f"{where} does not serve judge model {self.model!r} (404 model_not_found: "
                                  f"{text}); pass a model it serves with --judge-model{saved}")
            return UsageError(f"{where}/chat/completions answered 404 ({text}); check --base-url "
                              f"(an OpenAI-compatible server's URL usually ends in /v1){saved}")
        if isinstance(exc, openai.AuthenticationError):
            if self.placeholder_key:
                return UsageError(f"{where} wants an API key (401: {text}): OPENAI_API_KEY is not set, so a "
                                  f"placeholder was sent, as a server on this machine usually needs none; export "
                                  f"OPENAI_API_KEY=<the key the server was started with>{saved}")
            return UsageError(f"{where} rejected the API key (401: {text}); export OPENAI_API_KEY=<a valid key>"
                              f"{saved}")
        if isinstance(exc, openai.PermissionDeniedError):
            return UsageError(f"{where} refused the request (403: {text}){saved}")
        if isinstance(exc, openai.BadRequestError) and "response_format" in text.lower():
            return UsageError(f"{where} rejected the response_format (400: {text}); try --response-format "
                              f"json_object or --response-format none{saved}")
        param = getattr(exc, "param", None)
        if status in CONTENT_STATUS and param == "max_tokens":
            return UsageError(f"{where} rejected the request setting 'max_tokens' (400: {text}); pass "
                              f"--max-tokens none to send no reply limit{saved}")
        if status in CONTENT_STATUS and param:
            return UsageError(f"{where} rejected the request setting {param!r} (400: {text}); change the option "
                              f"that sets it (see attn-transition judge --help){saved}")
        return UsageError(f"{where} answered {status} ({text}){saved}")

    def _gate(self) -> "_Slot":
        """A slot for one HTTP request: waits while ``concurrency`` requests (one after a timeout)
        are in flight; raises :class:`Aborted` when the run stops meanwhile."""
        with self._slots:
            while self._capacity is not None and self._active >= self._capacity:
                if self.stop.is_set():
                    raise Aborted()
                self._slots.wait(0.05)
            self._active += 1
        return _Slot(self)

    def _release(self) -> None:
        with self._slots:
            self._active -= 1
            self._slots.notify_all()

    def _timed_out(self) -> list[tuple[str, str]]:
        """Count a timeout. The first lowers the requests in flight to one, the second tells what to
        rerun with: returns those notes as (topic, line), for :meth:`say_once` after the retry line."""
        with self._slots:
            self.timeouts += 1
            count = self.timeouts
            lowered = self._capacity is not None and self._capacity > 1
            if lowered:
                self._capacity = 1
        timeout = self._timeout_s()
        limit = f"--timeout {timeout:g} s" if timeout is not None else "--timeout"
        notes = []
        if lowered:
            notes.append(("one-at-a-time", f"judge: the server did not answer within {limit}: one request at a "
                                           f"time from now on (those in flight finish first), so retries do not "
                                           f"stack on it"))
        if count >= 2:
            larger = f"--timeout {max(4 * timeout, 120.0):g}" if timeout is not None else "a larger --timeout"
            one = " --concurrency 1" if self.concurrency > 1 else ""
            notes.append(("slow-server", f"judge: timeouts repeat ({limit}): "
                                         f"this server needs longer per request; stop (Ctrl-C keeps every answer "
                                         f"received) and rerun with {larger}{one}"))
        return notes

    def _send(self, payload: dict, key: str, item: str = "") -> Any:
        import_optional("openai", "the judge")
        import openai

        prefix = f"judge: {item}: " if item else "judge: "
        last: Optional[Exception] = None
        for attempt in range(self.retry.max_retries + 1):
            if self.stop.is_set():
                raise Aborted()
            notes: list[tuple[str, str]] = []
            slot = self._gate()             # Aborted when the run stops while it waits
            try:
                with slot:
                    with self._lock:
                        self.sent += 1
                    try:
                        return self.client.chat.completions.create(model=self.model, **payload)
                    except openai.APITimeoutError:
                        notes = self._timed_out()     # before the slot is given back, at the capacity it lowers
                        raise
            except openai.APITimeoutError as exc:     # the transport closed the connection: the server may cancel
                last, wait = exc, None
            except openai.APIConnectionError as exc:
                last, wait = exc, None
            except openai.APIStatusError as exc:
                status = exc.status_code
                if status not in RETRYABLE_STATUS and status < 500:
                    rejected = self._rejected(exc)
                    if rejected is not None:
                        raise rejected from None
                    raise self._fatal(exc) from None
                last = exc
                wait = retry_after_seconds(exc.response.headers if exc.response is not None else None)
                if wait is not None:
                    wait = min(wait, self.retry.max_retry_after)
            except Exception as exc:     # APIResponseValidationError, a broken body...: one line, not a traceback
                raise self._unexpected(exc) from None
            if attempt == self.retry.max_retries:
                break
            delay = wait if wait is not None else self.retry.backoff(attempt, key)
            asked = " as the server asked" if wait is not None else ""
            self.say(f"{prefix}{self._failure(last)}; retry {attempt + 1} of {self.retry.max_retries} in "
                     f"{delay:.1f} s{asked}")
            for topic, line in notes:
                self.say_once(topic, line)
            self._sleep(delay)
        saved = self._saved(rerun=True)
        tries = self.retry.max_retries + 1
        about = f" ({item})" if item else ""
        if isinstance(last, openai.APITimeoutError):
            one = " or pass --concurrency 1" if self.concurrency > 1 else ""
            raise UsageError(f"{self.base_url} timed out {tries} time(s) in a row{about}; raise --timeout{one}, or "
                             f"check the server{saved}")
        if isinstance(last, openai.APIConnectionError):
            raise UsageError(f"cannot reach {self.base_url} ({_error_text(last)}) after {tries} tries; check "
                             f"--base-url and that the server is running{saved}")
        status = getattr(last, "status_code", "?")
        raise UsageError(f"{self.base_url} kept failing (HTTP {status}: {_error_text(last)}) after {tries} "
                         f"tries{saved}")

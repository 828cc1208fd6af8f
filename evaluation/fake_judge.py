"""An offline stand-in for an OpenAI-compatible judge server, for demos and tests.

``FakeJudgeServer`` speaks enough of the Chat Completions protocol (``POST
/v1/chat/completions``, ``GET /v1/models``) for the official ``openai`` client. It reads
the candidates out of the judge prompt (``<candidate id="S1">...</candidate>`` blocks) and
scores each with :func:`fake_score`, a deterministic number from a hash of the candidate's
text: the scores carry no information about quality, they only make the pipeline run
end to end without a key or a network. It can also be told to misbehave, for tests:

    with FakeJudgeServer(script=["429", "ok", "malformed"], fail_after=None) as server:
        client = OpenAI(base_url=server.base_url, api_key="dummy", max_retries=0)

Behaviours (consumed one per request from ``script``, then ``default``): ``ok``, ``429``
(with ``Retry-After: retry_after``), ``500``, ``malformed`` (not JSON), ``incomplete``
(JSON missing one label), ``slow`` (answers after ``slow_seconds``), ``context_length``
(400 ``context_length_exceeded``, as for a too long prompt), ``bad_format`` (400 naming
``response_format``), ``bad_body`` (200 whose body is not a chat completion). ``fail_after=k``
answers 500 to every request after the k-th successful answer. An unknown model gets
404 ``model_not_found``. ``requests`` keeps every request body (parsed) for inspection.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Iterable, Optional

__all__ = ["FakeJudgeServer", "fake_score", "BEHAVIOURS"]

BEHAVIOURS = ("ok", "429", "500", "malformed", "incomplete", "slow", "context_length", "bad_format", "bad_body")
CONTEXT_LENGTH_MESSAGE = ("This model's maximum context length is 128 tokens. However, your messages resulted in "
                          "{n} tokens. Please reduce the length of the messages.")
_CANDIDATE = re.compile(r'<candidate id="([^"]+)">\n(.*?)\n</candidate>', re.S)


def fake_score(text: str) -> int:
    """A deterministic 0-100 score from a hash of ``text`` (no meaning beyond that)."""
    return int(hashlib.sha256(text.encode("utf-8")).hexdigest()[:8], 16) % 101


def _candidates(body: dict) -> list[tuple[str, str]]:
    text = "\n".join(str(m.get("content", "")) for m in body.get("messages", []) if m.get("role") == "user")
    return _CANDIDATE.findall(text)


def _tokens(text: str) -> int:
    return len(text) // 4 + 1


class FakeJudgeServer:
    """A threaded local HTTP server on an ephemeral port; use as a context manager."""

    def __init__(self, *, models: Iterable[str] = ("fake-judge",), script: Iterable[str] = (),
                 default: str = "ok", fail_after: Optional[int] = None, retry_after: str = "0.05",
                 slow_seconds: float = 5.0, scorer: Callable[[str], int] = fake_score, host: str = "127.0.0.1"):
        self.models = set(models)
        self.script = list(script)
        for b in [*self.script, default]:
            assert b in BEHAVIOURS, f"unknown behaviour {b!r}; known: {BEHAVIOURS}"
        self.default = default
        self.fail_after = fail_after
        self.retry_after = retry_after
        self.slow_seconds = slow_seconds
        self.scorer = scorer
        self.requests: list[dict] = []        # parsed bodies of every chat request, in arrival order
        self.raw_bodies: list[str] = []
        self.answered = 0                     # successful (200) answers
        self.usage_sent = {"prompt_tokens": 0, "completion_tokens": 0}
        self._lock = threading.Lock()
        self._release = threading.Event()
        self._server = ThreadingHTTPServer((host, 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread: Optional[threading.Thread] = None

    # -- life cycle -------------------------------------------------------------------------
    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> "FakeJudgeServer":
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.02},
                                        name="fake-judge", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._release.set()                   # wake up 'slow' answers
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> "FakeJudgeServer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    @property
    def n_requests(self) -> int:
        return len(self.requests)

    # -- behaviour ----------------------------------------------------------------------------
    def _next_behaviour(self) -> str:
        with self._lock:
            if self.fail_after is not None and self.answered >= self.fail_after:
                return "500"
            return self.script.pop(0) if self.script else self.default

    def _answer(self, body: dict, behaviour: str) -> tuple[int, Any, dict[str, str]]:
        model = body.get("model")
        if model not in self.models:
            return 404, {"error": {"message": f"The model `{model}` does not exist or you do not have access to it.",
                                   "type": "invalid_request_error", "param": None, "code": "model_not_found"}}, {}
        if behaviour == "429":
            return 429, {"error": {"message": "Rate limit reached (fake)", "type": "requests",
                                   "param": None, "code": "rate_limit_exceeded"}}, {"Retry-After": self.retry_after}
        if behaviour == "500":
            return 500, {"error": {"message": "The server had an error (fake)", "type": "server_error",
                                   "param": None, "code": None}}, {}
        if behaviour == "context_length":
            prompt = "".join(str(m.get("content", "")) for m in body.get("messages", []))
            return 400, {"error": {"message": CONTEXT_LENGTH_MESSAGE.format(n=_tokens(prompt)),
                                   "type": "invalid_request_error", "param": "messages",
                                   "code": "context_length_exceeded"}}, {}
        if behaviour == "bad_format":
            return 400, {"error": {"message": "Invalid parameter: 'response_format' of type 'json_schema' is not "
                                              "supported with this model (fake)", "type": "invalid_request_error",
                                   "param": "response_format", "code": None}}, {}
        if behaviour == "bad_body":
            return 200, ["not", "a", "chat", "completion"], {}
        if behaviour == "slow":
            self._release.wait(self.slow_seconds)
        cands = _candidates(body)
        if behaviour == "malformed":
            content = "Here are my scores: " + ", ".join(f"{lab}: {self.scorer(t)}" for lab, t in cands)
        else:
            reply = {lab: {"reason": "fake judge: score derived from a hash of the text", "score": self.scorer(t)}
                     for lab, t in cands}
            if behaviour == "incomplete" and reply:
                reply.pop(next(iter(reply)))
            content = json.dumps(reply)
        prompt = "".join(str(m.get("content", "")) for m in body.get("messages", []))
        usage = {"prompt_tokens": _tokens(prompt), "completion_tokens": _tokens(content)}
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        with self._lock:
            self.answered += 1
            n = self.answered
            self.usage_sent["prompt_tokens"] += usage["prompt_tokens"]
            self.usage_sent["completion_tokens"] += usage["completion_tokens"]
        return 200, {"id": f"chatcmpl-fake-{n}", "object": "chat.completion", "created": 0, "model": model,
                     "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                                  "finish_reason": "stop"}], "usage": usage}, {}

    def _handler_class(self) -> type:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:   # keep test output clean
                pass

            def _send(self, status: int, payload: Any, headers: Optional[dict[str, str]] = None) -> None:
                data = json.dumps(payload).encode("utf-8")
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                try:
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):   # the client gave up (timeout)
                    pass

            def do_GET(self) -> None:
                if self.path.rstrip("/") == "/v1/models":
                    self._send(200, {"object": "list", "data": [{"id": m, "object": "model", "owned_by": "fake"}
                                                                for m in sorted(server.models)]})
                else:
                    self._send(404, {"error": {"message": f"no route {self.path}", "type": "invalid_request_error",
                                               "param": None, "code": None}})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length).decode("utf-8")
                if self.path.rstrip("/") != "/v1/chat/completions":
                    self._send(404, {"error": {"message": f"no route {self.path}", "type": "invalid_request_error",
                                               "param": None, "code": None}})
                    return
                try:
                    body = json.loads(raw)
                except json.JSONDecodeError:
                    self._send(400, {"error": {"message": "body is not JSON", "type": "invalid_request_error",
                                               "param": None, "code": None}})
                    return
                with server._lock:
                    server.requests.append(body)
                    server.raw_bodies.append(raw)
                status, payload, headers = server._answer(body, server._next_behaviour())
                self._send(status, payload, headers)

        return Handler

"""Testing helper: an offline stand-in for an OpenAI-compatible judge server. It is NOT a judge.

It lets the judge pipeline run end to end without an API key or a network: the scoring
notebook (``notebooks/scoring.ipynb``) demonstrates with it, and the test suite builds its
misbehaving server on it. Never report its scores as results.

``FakeJudgeServer`` speaks enough of the Chat Completions protocol (``POST
/v1/chat/completions``, ``GET /v1/models``) for the official ``openai`` client. It reads
the candidates out of the judge prompt (``<candidate id="S1">...</candidate>`` blocks) and
scores each with :func:`fake_score`, a deterministic number from a hash of the candidate's
text: the scores carry no information about quality. An unknown model gets 404
``model_not_found``; ``requests`` keeps every request body (parsed) for inspection::

    with FakeJudgeServer() as server:
        client = OpenAI(base_url=server.base_url, api_key="dummy", max_retries=0)

From the command line: ``attn-transition judge OUTPUTS.json --stand-in`` starts it in-process and
judges against it (scores in ``OUTPUTS.stand-in.scores.json``); ``python -m
attn_transition.evaluation.judge.testing [--host H] [--port P] [--model M]`` serves it until
Ctrl-C and prints its URL. Every reply carries the ``system_fingerprint``
:data:`~.client.STAND_IN_FINGERPRINT`, so a scores file made from its answers records
``"stand_in": true`` and ``attn-transition report`` heads it "not a judgement: stand-in scores".

A subclass changes how a request is answered by overriding :meth:`FakeJudgeServer.answer`,
using :meth:`~FakeJudgeServer.unknown_model`, :meth:`~FakeJudgeServer.reply` and
:meth:`~FakeJudgeServer.completion` as building blocks.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Iterable, Optional

from .client import STAND_IN_FINGERPRINT

__all__ = ["FakeJudgeServer", "fake_score", "error_body", "candidates", "tokens"]

Answer = tuple[int, Any, dict[str, str]]      # HTTP status, JSON body, extra headers
_CANDIDATE = re.compile(r'<candidate id="([^"]+)">\n(.*?)\n</candidate>', re.S)


def fake_score(text: str) -> int:
    """A deterministic 0-100 score from a hash of ``text`` (no meaning beyond that)."""
    return int(hashlib.sha256(text.encode("utf-8")).hexdigest()[:8], 16) % 101


def candidates(body: dict) -> list[tuple[str, str]]:
    """(label, text) of every candidate block in a request's user messages."""
    text = "\n".join(str(m.get("content", "")) for m in body.get("messages", []) if m.get("role") == "user")
    return _CANDIDATE.findall(text)


def tokens(text: str) -> int:
    """The token count the stand-in reports in ``usage`` (about 4 characters per token)."""
    return len(text) // 4 + 1


def error_body(message: str, type: str = "invalid_request_error", param: Optional[str] = None,
               code: Optional[str] = None) -> dict:
    """An error answer in the OpenAI shape."""
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


class FakeJudgeServer:
    """A threaded local HTTP server on an ephemeral port; use as a context manager."""

    def __init__(self, *, models: Iterable[str] = ("fake-judge",), scorer: Callable[[str], int] = fake_score,
                 host: str = "127.0.0.1", port: int = 0):
        self.models = set(models)
        self.scorer = scorer
        self.requests: list[dict] = []        # parsed bodies of every chat request, in arrival order
        self.raw_bodies: list[str] = []
        self.answered = 0                     # successful (200) answers
        self.usage_sent = {"prompt_tokens": 0, "completion_tokens": 0}
        self._lock = threading.Lock()
        self.host = host
        self._server = ThreadingHTTPServer((host, port), self._handler_class())
        self._server.daemon_threads = True
        self._thread: Optional[threading.Thread] = None

    # -- life cycle -------------------------------------------------------------------------
    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def base_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/v1"

    def start(self) -> "FakeJudgeServer":
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.02},
                                        name="fake-judge", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
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

    # -- answers ------------------------------------------------------------------------------
    def answer(self, body: dict) -> Answer:
        """The answer to one chat request: 404 for an unknown model, else every candidate scored."""
        return self.unknown_model(body) or self.completion(body, json.dumps(self.reply(body)))

    def unknown_model(self, body: dict) -> Optional[Answer]:
        """404 ``model_not_found`` when the request names a model this server does not serve."""
        model = body.get("model")
        if model in self.models:
            return None
        return 404, error_body(f"The model `{model}` does not exist or you do not have access to it.",
                               code="model_not_found"), {}

    def reply(self, body: dict) -> dict:
        """The judge's JSON reply: every candidate label with a reason and its :attr:`scorer` score."""
        return {lab: {"reason": "fake judge: score derived from a hash of the text", "score": self.scorer(t)}
                for lab, t in candidates(body)}

    def completion(self, body: dict, content: str) -> Answer:
        """A 200 chat completion holding ``content``, with usage counted (and added to ``usage_sent``)."""
        prompt = "".join(str(m.get("content", "")) for m in body.get("messages", []))
        usage = {"prompt_tokens": tokens(prompt), "completion_tokens": tokens(content)}
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        with self._lock:
            self.answered += 1
            n = self.answered
            self.usage_sent["prompt_tokens"] += usage["prompt_tokens"]
            self.usage_sent["completion_tokens"] += usage["completion_tokens"]
        return 200, {"id": f"chatcmpl-fake-{n}", "object": "chat.completion", "created": 0, "model": body.get("model"),
                     "system_fingerprint": STAND_IN_FINGERPRINT,
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
                    self._send(404, error_body(f"no route {self.path}"))

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length).decode("utf-8")
                if self.path.rstrip("/") != "/v1/chat/completions":
                    self._send(404, error_body(f"no route {self.path}"))
                    return
                try:
                    body = json.loads(raw)
                except json.JSONDecodeError:
                    self._send(400, error_body("body is not JSON"))
                    return
                with server._lock:
                    server.requests.append(body)
                    server.raw_bodies.append(raw)
                self._send(*server.answer(body))

        return Handler


# -- python -m attn_transition.evaluation.judge.testing ---------------------------------------

def main(argv: Optional[list[str]] = None) -> int:
    """Serve the stand-in until Ctrl-C, its URL printed first (``--help`` for the options)."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m attn_transition.evaluation.judge.testing",
        description="Serve the offline stand-in for an OpenAI-compatible judge server. It is NOT a judge: it "
                    "scores each candidate by a hash of its text, so the judge pipeline can run without a key "
                    "or a network. To judge against it in one step: attn-transition judge OUTPUTS.json --stand-in",
        epilog="then: attn-transition judge OUTPUTS.json --base-url URL --judge-model MODEL "
               "(a loopback URL needs no OPENAI_API_KEY)",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=0, help="port to listen on (0: any free port)")
    parser.add_argument("--model", action="append", default=None,
                        help="model name it answers to, repeatable (default: fake-judge)")
    args = parser.parse_args(argv)
    try:
        server = FakeJudgeServer(models=args.model or ("fake-judge",), host=args.host, port=args.port)
    except OSError as exc:
        parser.exit(2, f"{parser.prog}: error: cannot listen on {args.host}:{args.port} ({exc.strerror}); "
                       f"choose another --host/--port\n")
    with server:
        print(f"stand-in judge (not a judge: scores are a hash of each text) at {server.base_url}, "
              f"model(s) {', '.join(sorted(server.models))}; Ctrl-C stops it", flush=True)
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())

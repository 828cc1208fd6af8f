"""The judge against a server slower than its --timeout, and against one that wants a key.

``SlowServer`` is the package's stand-in server made slow: its first ``slow`` requests get no answer
for ``slow_seconds`` (far past the client's timeout), and with ``hold`` each later one waits for
company (another request in flight) up to ``hold`` seconds, as a batching server does, so that
requests sent together are seen together. Like vLLM and ``transformers serve``,
it stops working on a request once its client has closed the connection. It records how many of the
judge's requests it holds at each arrival (a request ends when its answer is about to be written, or
when its connection is seen closed), so the assertions are on counts and lines, never on durations;
the client's waits are injected.
"""

from __future__ import annotations

import json
import select
import socket
import threading
import time
from collections import Counter
from typing import Any, Optional

import pytest

from attn_transition.cli import main
from attn_transition.errors import UsageError
from attn_transition.evaluation.judge import JudgeOptions, judge_file
from attn_transition.evaluation.judge import testing
from attn_transition.evaluation.judge.plan import LOCAL_PLACEHOLDER_KEY

from fake_openai import FAKE_MODEL, FakeJudgeServer, SleepRecorder, write_outputs


class _ClientGone(Exception):
    """The client closed the connection before its answer was ready: nothing to write."""


def _client_gone(conn: socket.socket) -> bool:
    """Whether the peer of ``conn`` has closed it (readable at end of file), without consuming data."""
    try:
        readable, _, _ = select.select([conn], [], [], 0)
        return bool(readable) and conn.recv(1, socket.MSG_PEEK) == b""
    except (OSError, ValueError):         # closed here already
        return True


class SlowServer(testing.FakeJudgeServer):
    """The stand-in, slow for its first ``slow`` requests, cancelling a request whose client left;
    with ``api_key`` it answers 401 to any other bearer key, with ``refuse_max_tokens`` 400 to a
    request carrying ``max_tokens`` (as a server that wants ``max_completion_tokens`` does)."""

    def __init__(self, *, slow: int = 0, slow_seconds: float = 30.0, hold: float = 0.0,
                 api_key: Optional[str] = None, refuse_max_tokens: bool = False, **kwargs: Any):
        super().__init__(models=(FAKE_MODEL,), **kwargs)
        self.slow_left = slow
        self.slow_seconds = slow_seconds
        self.hold = hold
        self.api_key = api_key
        self.refuse_max_tokens = refuse_max_tokens
        self.running: set = set()             # connections of the requests being worked on
        self.in_flight: list[int] = []        # len(running) at each arrival, the arriving one included
        self.cancelled = 0                    # slow requests whose client closed the connection first
        self.bearers: list[Optional[str]] = []
        self._local = threading.local()
        self._closing = threading.Event()

    def stop(self) -> None:
        self._closing.set()
        super().stop()

    def _handler_class(self) -> type:
        base, server = super()._handler_class(), self

        class Handler(base):
            def do_POST(self) -> None:
                server._local.conn = self.connection
                server._local.bearer = self.headers.get("Authorization")
                try:
                    super().do_POST()
                except _ClientGone:
                    self.close_connection = True

        return Handler

    def _end(self, conn: socket.socket) -> None:
        with self._lock:
            self.running.discard(conn)

    def answer(self, body: dict) -> testing.Answer:
        conn = self._local.conn
        with self._lock:
            self.running = {c for c in self.running if not _client_gone(c)}    # work of departed clients stops
            self.running.add(conn)
            self.in_flight.append(len(self.running))
            self.bearers.append(self._local.bearer)
            slow = self.slow_left > 0
            self.slow_left -= slow
        if self.api_key is not None and self._local.bearer != f"Bearer {self.api_key}":
            self._end(conn)
            return 401, testing.error_body("Invalid API key (fake)", "invalid_request_error",
                                           code="invalid_api_key"), {}
        if self.refuse_max_tokens and "max_tokens" in body:
            self._end(conn)
            return 400, testing.error_body("Unsupported parameter: 'max_tokens' is not supported with this model "
                                           "(fake)", param="max_tokens", code="unsupported_parameter"), {}
        if slow:
            deadline = time.monotonic() + self.slow_seconds
            while time.monotonic() < deadline and not self._closing.is_set():
                if _client_gone(conn):
                    with self._lock:
                        self.cancelled += 1
                    self._end(conn)
                    raise _ClientGone()
                select.select([conn], [], [], 0.05)
        else:
            deadline = time.monotonic() + self.hold
            while time.monotonic() < deadline and len(self.running) < 2 and not self._closing.is_set():
                time.sleep(0.01)
        self._end(conn)                        # before the answer is written: the client reads it after this
        return super().answer(body)

    def wait_cancelled(self, n: int, limit: float = 30.0) -> int:
        """Wait (up to ``limit`` s, not an assertion on time) until ``n`` slow requests were seen cancelled."""
        end = time.monotonic() + limit
        while self.cancelled < n and time.monotonic() < end:
            time.sleep(0.02)
        return self.cancelled


def _opts(server, **kw) -> JudgeOptions:
    return JudgeOptions(**{"judge_model": FAKE_MODEL, "base_url": server.base_url, "max_retries": 3, **kw})


def _judge_lines(err: str) -> list[str]:
    """The judge's own lines (not the progress bar's redraws)."""
    return [line for line in err.replace("\r", "\n").splitlines() if line.startswith("judge: ") and "%|" not in line]


def _slow_run(tmp_path, capsys, *, docs: int, slow: int, concurrency: int, hold: float = 0.0,
              timeout: float = 1.5):
    out = write_outputs(tmp_path, n_docs=docs)
    sleep = SleepRecorder()
    with SlowServer(slow=slow, hold=hold) as server:
        _, doc = judge_file(out, _opts(server, concurrency=concurrency, timeout=timeout), api_key="test",
                            sleep=sleep, progress=False)
        cancelled = server.wait_cancelled(slow)
    return server, doc, sleep, cancelled, _judge_lines(capsys.readouterr().err)


def test_each_retry_line_is_said_once_naming_its_document_the_attempt_and_the_wait(tmp_path, capsys):
    server, doc, sleep, cancelled, lines = _slow_run(tmp_path, capsys, docs=3, slow=2, concurrency=2)
    retries = [line for line in lines if "no answer within" in line]
    assert len(retries) == 2 and Counter(retries).most_common(1)[0][1] == 1, lines     # once each
    named = sorted(line.split(":")[1].strip() for line in retries)
    assert named == ["document 'doc0' (4 candidates)", "document 'doc1' (4 candidates)"], retries
    for line in retries:                    # the attempt (k of N) and the wait, as recorded
        assert "no answer within 1.5 s (--timeout); retry 1 of 3 in " in line
        assert line.endswith(" s") and line.rsplit(" in ", 1)[1] in [f"{w:.1f} s" for w in sleep.waits]
    assert len(sleep.waits) == 2 and doc["summary"]["complete_documents"] == 3


def test_after_a_timeout_the_server_holds_one_request_at_a_time_never_more_than_the_concurrency(tmp_path, capsys):
    # answers after the slow ones wait up to 0.3 s for a second request, well inside the 2 s timeout
    server, doc, _, cancelled, lines = _slow_run(tmp_path, capsys, docs=6, slow=3, concurrency=3, hold=0.3,
                                                 timeout=2.0)
    assert cancelled == 3                   # each timed-out request's connection was closed: the server let it go
    assert len(server.in_flight) >= 3 + 3 + 3                 # 3 timed out, their 3 retries, 3 more documents
    assert max(server.in_flight[:3]) <= 3
    assert server.in_flight[3:] == [1] * (len(server.in_flight) - 3), server.in_flight   # then one at a time
    assert doc["summary"]["complete_documents"] == 6
    assert sum("one request at a time from now on" in line for line in lines) == 1, lines


def test_repeated_timeouts_say_once_what_to_rerun_with(tmp_path, capsys):
    *_, lines = _slow_run(tmp_path, capsys, docs=4, slow=3, concurrency=3)
    advice = [line for line in lines if "timeouts repeat" in line]
    assert advice == ["judge: timeouts repeat (--timeout 1.5 s): this server needs longer per request; stop "
                      "(Ctrl-C keeps every answer received) and rerun with --timeout 120 --concurrency 1"], lines


def test_a_single_timeout_gives_no_advice(tmp_path, capsys):
    *_, lines = _slow_run(tmp_path, capsys, docs=2, slow=1, concurrency=1)
    assert len(lines) == 1 and "retry 1 of 3" in lines[0], lines     # concurrency 1: nothing to lower either


# -- the cache is named only when it holds answers ------------------------------------------
def test_the_final_line_names_the_cache_only_when_it_exists(tmp_path, monkeypatch, capsys):
    out = write_outputs(tmp_path, n_docs=2)
    cache = tmp_path / "out.judge-cache.jsonl"
    monkeypatch.setenv("OPENAI_API_KEY", "test")
    argv = ["judge", str(out), "--judge-model", FAKE_MODEL, "--timeout", "1.5", "--max-retries", "0",
            "--concurrency", "1", "--quiet"]
    with SlowServer(slow=1) as server:                  # the first request never answers in time
        assert main(argv + ["--base-url", server.base_url]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "timed out 1 time(s) in a row (document 'doc0' (4 candidates))" in err
    assert not cache.exists() and "kept in" not in err and "judge-cache" not in err, err


def test_a_later_failure_names_the_cache_that_holds_the_answers_so_far(tmp_path):
    out = write_outputs(tmp_path, n_docs=2)
    with SlowServer() as server:
        opts = _opts(server, concurrency=1, timeout=1.5, max_retries=0)
        judge_file(out, opts, api_key="test", progress=False, use_cache=True)      # doc0 and doc1 answered
        write_outputs(tmp_path, n_docs=3)                                          # a third document
        server.slow_left = 1
        with pytest.raises(UsageError) as info:
            judge_file(out, opts, api_key="test", progress=False)
    assert f"answers so far are kept in {tmp_path / 'out.judge-cache.jsonl'}, rerun to continue" in str(info.value)


def test_ctrl_c_before_any_answer_names_no_cache(tmp_path, capsys):
    out = write_outputs(tmp_path, n_docs=2)

    def stop(result):
        raise KeyboardInterrupt

    with FakeJudgeServer(script=["context_length"]) as server:      # refused: recorded, not cached
        with pytest.raises(KeyboardInterrupt):
            judge_file(out, _opts(server, concurrency=1), api_key="test", on_result=stop, progress=False)
    lines = _judge_lines(capsys.readouterr().err)
    assert lines == ["judge: interrupted; no answer had arrived yet, so nothing was kept"]
    assert not (tmp_path / "out.judge-cache.jsonl").exists()


# -- keys -------------------------------------------------------------------------------------
def test_a_loopback_server_that_wants_a_key_names_openai_api_key(tmp_path, monkeypatch, capsys):
    out = write_outputs(tmp_path, n_docs=1)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with SlowServer(api_key="sk-local") as server:
        argv = ["judge", str(out), "--base-url", server.base_url, "--judge-model", FAKE_MODEL, "--quiet"]
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert server.bearers == [f"Bearer {LOCAL_PLACEHOLDER_KEY}"]
        assert len(err.splitlines()) == 1, err
        assert "401" in err and "OPENAI_API_KEY is not set" in err and "export OPENAI_API_KEY=" in err
        monkeypatch.setenv("OPENAI_API_KEY", "sk-wrong")               # a key of one's own that is wrong
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert "rejected the API key" in err and "is not set" not in err
        monkeypatch.setenv("OPENAI_API_KEY", "sk-local")
        assert main(argv) == 0
    assert json.loads((tmp_path / "out.scores.json").read_text())["summary"]["complete_documents"] == 1


# -- the reply limit ----------------------------------------------------------------------------
def test_requests_carry_the_schema_sized_reply_limit_by_default(tmp_path):
    out = write_outputs(tmp_path, n_docs=2)
    with SlowServer() as server:
        judge_file(out, _opts(server), api_key="test", progress=False)
        judge_file(out, _opts(server, protocol="single"), api_key="test", progress=False)
        judge_file(out, _opts(server, max_tokens=None), api_key="test", progress=False, use_cache=False)
        judge_file(out, _opts(server, max_tokens=64), api_key="test", progress=False, use_cache=False)
        sent = [body.get("max_tokens") for body in server.requests]
    assert sent == [50 + 100 * 4] * 2 + [50 + 100] * 8 + [None] * 2 + [64] * 2


def test_a_server_refusing_max_tokens_says_how_to_send_none(tmp_path, monkeypatch, capsys):
    out = write_outputs(tmp_path, n_docs=1)
    monkeypatch.setenv("OPENAI_API_KEY", "test")
    with SlowServer(refuse_max_tokens=True) as server:
        argv = ["judge", str(out), "--base-url", server.base_url, "--judge-model", FAKE_MODEL, "--quiet"]
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "'max_tokens'" in err and "--max-tokens none" in err, err
        assert main(argv + ["--max-tokens", "none"]) == 0


# -- output paths are checked before any request ----------------------------------------------
@pytest.mark.parametrize("flag, target", [("-o", "{tmp}/out.json/s.json"), ("-o", "/proc/nope/s.json"),
                                          ("--cache", "{tmp}/out.json/c.jsonl"), ("--cache", "{tmp}")])
def test_an_output_that_cannot_be_written_is_refused_before_any_request(tmp_path, monkeypatch, capsys, flag,
                                                                         target):
    out = write_outputs(tmp_path, n_docs=2)
    monkeypatch.setenv("OPENAI_API_KEY", "test")
    with SlowServer() as server:
        rc = main(["judge", str(out), "--base-url", server.base_url, "--judge-model", FAKE_MODEL, "--quiet",
                   flag, target.format(tmp=tmp_path)])
        assert server.n_requests == 0
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and f"{flag} " in err, err
    assert not (tmp_path / "out.scores.json").exists() and not (tmp_path / "out.judge-cache.jsonl").exists()

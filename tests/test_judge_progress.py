"""The judge says what happens while it waits: every retry and timeout as one line, a server that
ignores response_format once, and an interruption keeps the answers received (resumable). A
server on this machine needs no API key."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from attn_transition.cli import main
from attn_transition.errors import UsageError
from attn_transition.evaluation.judge import JudgeOptions, judge_file
from attn_transition.evaluation.judge.cache import JudgeCache
from attn_transition.evaluation.judge.plan import LOCAL_PLACEHOLDER_KEY, is_loopback, make_client

from fake_openai import FAKE_MODEL, FakeJudgeServer, SleepRecorder, write_outputs

ROOT = Path(__file__).resolve().parents[1]


def _opts(server, **kw) -> JudgeOptions:
    return JudgeOptions(**{"judge_model": FAKE_MODEL, "base_url": server.base_url, "concurrency": 1,
                           "max_retries": 3, **kw})


def _judge_lines(err: str) -> list[str]:
    """The judge's own lines (not the progress bar's redraws)."""
    pieces = err.replace("\r", "\n").splitlines()
    return [line for line in pieces if line.startswith("judge: ") and "%|" not in line]


def test_each_retry_and_timeout_is_one_line_as_it_happens_and_the_answers_land(tmp_path, capsys):
    out = write_outputs(tmp_path, n_docs=2)
    with FakeJudgeServer(script=["slow", "500", "429"], slow_seconds=30, retry_after="0.05") as server:
        _, doc = judge_file(out, _opts(server, timeout=0.3), api_key="test", sleep=SleepRecorder(), progress=False)
        assert server.n_requests == 2 + 3
    lines = _judge_lines(capsys.readouterr().err)
    assert len(lines) == 3, lines
    item = "judge: document 'doc0' (4 candidates): "                  # concurrency 1: all three hit doc0
    assert lines[0].startswith(item + "no answer within 0.3 s (--timeout); retry 1 of 3 in ")
    assert lines[1].startswith(item + "HTTP 500 (The server had an error (fake)); retry 2 of 3 in ")
    assert lines[2] == item + "HTTP 429 (Rate limit reached (fake)); retry 3 of 3 in 0.1 s as the server asked"
    assert doc["summary"]["complete_documents"] == 2 and doc["summary"]["failed_requests"] == 0


def test_cli_shows_retries_on_stderr_with_a_loopback_server_and_no_key(tmp_path, monkeypatch, capsys):
    out = write_outputs(tmp_path, n_docs=2)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with FakeJudgeServer(script=["slow", "429"], slow_seconds=30, retry_after="0.05") as server:
        code = main(["judge", str(out), "--base-url", server.base_url, "--judge-model", FAKE_MODEL,
                     "--timeout", "0.5", "--concurrency", "1"])
        assert server.n_requests == 4
    captured = capsys.readouterr()
    assert code == 0, captured.err
    lines = _judge_lines(captured.err)
    assert lines[0] == (f"judge: asking {FAKE_MODEL} at {server.base_url} (1 request(s) at a time, --timeout 0.5 s, "
                        f"--max-retries 6); answers kept in {tmp_path / 'out.judge-cache.jsonl'} as they arrive")
    assert [line.split(";")[0] for line in lines[1:]] == [
        "judge: document 'doc0' (4 candidates): no answer within 0.5 s (--timeout)",
        "judge: document 'doc0' (4 candidates): HTTP 429 (Rate limit reached (fake))"]   # its retry
    assert "2/2 documents fully scored" in captured.out
    scores = json.loads((tmp_path / "out.scores.json").read_text())
    assert scores["judge"]["stand_in"] is True            # the package's stand-in answered: marked


@pytest.mark.parametrize("url, local", [
    ("http://127.0.0.1:8000/v1", True), ("http://localhost:11434/v1", True), ("http://[::1]:8080/v1", True),
    ("http://127.0.0.2/v1", True), ("https://api.openai.com/v1", False), ("http://10.0.0.5:8000/v1", False),
    ("http://localhost.example.com/v1", False)])
def test_loopback_urls(url, local):
    assert is_loopback(url) is local


def test_a_local_server_gets_a_placeholder_key_a_remote_one_needs_a_real_one(tmp_path, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    cache = JudgeCache(tmp_path / "c.jsonl", enabled=False)
    client = make_client(JudgeOptions(judge_model="m", base_url="http://localhost:8000/v1"), cache)
    assert client.client.api_key == LOCAL_PLACEHOLDER_KEY
    with pytest.raises(UsageError, match="OPENAI_API_KEY is not set"):
        make_client(JudgeOptions(judge_model="m", base_url="http://10.0.0.5:8000/v1"), cache)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-own")
    assert make_client(JudgeOptions(judge_model="m", base_url="http://localhost:8000/v1"), cache).client.api_key \
        == "sk-own"


def test_replies_that_ignore_response_format_are_said_once(tmp_path, capsys):
    out = write_outputs(tmp_path, n_docs=2)
    with FakeJudgeServer(script=["malformed", "malformed"]) as server:
        _, doc = judge_file(out, _opts(server, reask=2), api_key="test", progress=False)
    lines = _judge_lines(capsys.readouterr().err)
    assert len(lines) == 1 and "not JSON although --response-format json_schema asked for JSON" in lines[0]
    assert "ignore response_format" in lines[0]
    assert doc["summary"]["bad_replies"] == 2 and doc["summary"]["complete_documents"] == 2
    with FakeJudgeServer(script=["malformed"]) as server:
        judge_file(out, _opts(server, response_format="none"), api_key="test", progress=False, use_cache=False)
    assert _judge_lines(capsys.readouterr().err) == []          # JSON was not asked for: nothing to say


def test_ctrl_c_says_where_the_answers_are_kept(tmp_path, capsys):
    out = write_outputs(tmp_path, n_docs=3)

    def stop(result):
        raise KeyboardInterrupt

    with FakeJudgeServer() as server:
        with pytest.raises(KeyboardInterrupt):
            judge_file(out, _opts(server), api_key="test", on_result=stop, progress=False)
    lines = _judge_lines(capsys.readouterr().err)
    assert lines == [f"judge: interrupted; every answer received so far is kept in {tmp_path / 'out.judge-cache.jsonl'}"
                     f"; rerun the same command to continue"]


def _cache_lines(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_a_killed_run_keeps_every_answer_received_and_resumes(tmp_path, monkeypatch):
    out = write_outputs(tmp_path, n_docs=4)
    cache = tmp_path / "out.judge-cache.jsonl"
    with FakeJudgeServer(script=["ok", "ok"], default="slow", slow_seconds=60) as server:
        argv = ["judge", str(out), "--base-url", server.base_url, "--judge-model", FAKE_MODEL, "--concurrency", "1",
                "--quiet"]
        env = {**os.environ, "OPENAI_API_KEY": "test",
               "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
        proc = subprocess.Popen([sys.executable, "-m", "attn_transition.cli", *argv], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 120
            while len(_cache_lines(cache)) < 2 and time.monotonic() < deadline and proc.poll() is None:
                time.sleep(0.1)
            assert len(_cache_lines(cache)) == 2, proc.stderr.read() if proc.poll() is not None else "timeout"
        finally:
            proc.kill()                                            # no chance to clean up: a kill -9
            proc.wait()
        assert not (tmp_path / "out.scores.json").exists()
        server.default = "ok"
        before = server.n_requests
        monkeypatch.setenv("OPENAI_API_KEY", "test")
        assert main(argv) == 0
        assert server.n_requests - before == 2                      # only the two documents without an answer
    scores = json.loads((tmp_path / "out.scores.json").read_text())
    assert scores["summary"]["complete_documents"] == 4 and scores["usage"]["cached_requests"] == 2

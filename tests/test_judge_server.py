"""The judge against a real local HTTP server speaking Chat Completions to the real openai client.

The server (``FakeJudgeServer``) scores each candidate by a hash of its text, counts requests
and usage, and can be told to answer 429 (Retry-After 0.05 s), 500, malformed JSON, an
incomplete object, 404 for an unknown model, or slowly. Waits are injected and recorded;
nothing here measures time.
"""

import io
import json
import socket

import pytest
from skips import need

from attn_transition.cli import main
from attn_transition.errors import UsageError
from attn_transition.evaluation.judge import JudgeOptions, judge_file
from attn_transition.evaluation.judge.cache import JudgeCache
from attn_transition.evaluation.judge.payload import presentation_order, request_seed

from fake_openai import FAKE_MODEL, KEYS, FakeJudgeServer, SleepRecorder, fake_score, make_records, write_outputs

_CAND = '<candidate id="'


def _opts(server, **kw):
    base = dict(judge_model=FAKE_MODEL, base_url=server.base_url, concurrency=3, max_retries=3)
    base.update(kw)
    return JudgeOptions(**base)


def _presented_texts(body):
    import re

    user = body["messages"][1]["content"]
    return re.findall(r'<candidate id="S\d+">\n(.*?)\n</candidate>', user, re.S)


def test_scores_map_back_to_the_right_candidates_and_are_anonymous(tmp_path):
    out = write_outputs(tmp_path, n_docs=4)
    records = make_records(4)
    with FakeJudgeServer() as server:
        path, doc = judge_file(out, _opts(server, repeats=2), api_key="test", progress=False)
        raw = list(server.raw_bodies)
    assert path == tmp_path / "out.scores.json" and path.exists()
    assert len(raw) == 4 * 2
    for body in raw:                                   # anonymisation: no config name reaches the judge
        assert "decode_" not in body and "al_05" not in body and "be_01" not in body and "lay_2" not in body
        assert "doc0" not in body                      # nor the document ids
    for d, entry in enumerate(doc["documents"]):
        for k, key in enumerate(KEYS):
            assert entry["scores"][key] == [fake_score(records[d][key])] * 2, (d, key)
    assert doc["summary"] == {"documents": 4, "complete_documents": 4, "failed_requests": 0, "bad_replies": 0}
    assert json.loads(path.read_text())["documents"] == doc["documents"]


def test_order_shuffled_per_document_and_repeat_reproducible_from_seed(tmp_path):
    out = write_outputs(tmp_path, n_docs=4)
    records = make_records(4)
    with FakeJudgeServer() as server:
        _, doc = judge_file(out, _opts(server, repeats=3, seed=11), api_key="test", progress=False)
        bodies = list(server.requests)
    seen = set()
    for d, entry in enumerate(doc["documents"]):
        for r, order in enumerate(entry["orders"]):
            assert order == presentation_order(KEYS, 11, d, f"doc{d}", r)
            seen.add(tuple(order))
            # the server saw exactly this order: find its request by the request seed
            body = next(b for b in bodies if b["seed"] == request_seed(11, d, r, 0))
            text_to_key = {records[d][k]: k for k in KEYS}
            assert [text_to_key[t] for t in _presented_texts(body)] == order
    assert len(seen) >= 6, seen                                       # 12 requests, orders vary


def test_429_retry_after_honoured_and_500_backed_off(tmp_path):
    out = write_outputs(tmp_path, n_docs=3)
    sleep = SleepRecorder()
    with FakeJudgeServer(script=["429", "500"], retry_after="0.05") as server:
        _, doc = judge_file(out, _opts(server, concurrency=1), api_key="test", sleep=sleep, progress=False)
        n = server.n_requests
    assert n == 3 + 2                                                  # two retried requests
    assert sleep.waits[0] == 0.05                                      # the server's Retry-After, exactly
    assert 1.0 <= sleep.waits[1] <= 2.0                                # 2nd retry: 1 s x 2**1 x jitter in [0.5, 1]
    assert len(sleep.waits) == 2
    assert doc["summary"]["complete_documents"] == 3
    assert doc["usage"]["http_requests"] == 5 and doc["usage"]["new_requests"] == 3


def test_timeout_is_retried(tmp_path):
    out = write_outputs(tmp_path, n_docs=1)
    sleep = SleepRecorder()
    with FakeJudgeServer(script=["slow"], slow_seconds=30) as server:
        _, doc = judge_file(out, _opts(server, timeout=0.3), api_key="test", sleep=sleep, progress=False)
        assert server.n_requests == 2
    assert len(sleep.waits) == 1 and doc["summary"]["complete_documents"] == 1


def test_malformed_reply_is_reasked_then_recorded_with_raw_text(tmp_path):
    out = write_outputs(tmp_path, n_docs=2)
    with FakeJudgeServer(script=["malformed", "incomplete"]) as server:
        # concurrency 1: request order is deterministic; doc 0 gets both bad answers, then a good one
        _, doc = judge_file(out, _opts(server, concurrency=1, reask=2), api_key="test", progress=False)
        assert server.n_requests == 2 + 1 + 1
    fails = doc["documents"][0]["failures"]
    assert [f["attempt"] for f in fails] == [0, 1] and all(f["recovered"] for f in fails)
    assert fails[0]["raw"].startswith("Here are my scores") and "not valid JSON" in fails[0]["error"]
    assert "missing S1" in fails[1]["error"] and json.loads(fails[1]["raw"])
    assert doc["summary"]["complete_documents"] == 2 and doc["summary"]["bad_replies"] == 2


def test_a_reask_tells_the_judge_what_was_wrong_and_differs_from_the_first_request(tmp_path):
    out = write_outputs(tmp_path, n_docs=1)
    with FakeJudgeServer(script=["malformed"]) as server:
        _, doc = judge_file(out, _opts(server, concurrency=1, reask=2), api_key="test", progress=False)
        first, second = server.requests[:2]
    assert doc["summary"]["complete_documents"] == 1
    assert second["messages"][:len(first["messages"])] == first["messages"]
    said, told = second["messages"][len(first["messages"]):]
    assert said["role"] == "assistant" and said["content"].startswith("Here are my scores")
    assert told["role"] == "user" and "could not be used: " in told["content"]
    assert doc["documents"][0]["failures"][0]["error"] in told["content"]
    # the dry run walks the same attempts (the re-ask included): the cache settles everything now
    from attn_transition.evaluation.judge import dry_run

    got = dry_run(out, _opts(server, concurrency=1, reask=2), out=io.StringIO())
    assert (got["cached_requests"], got["requests_to_send"]) == (1, 0)


def test_permanently_malformed_is_a_recorded_failure_not_a_guess(tmp_path):
    out = write_outputs(tmp_path, n_docs=2)
    with FakeJudgeServer(default="malformed") as server:
        path, doc = judge_file(out, _opts(server, reask=1), api_key="test", progress=False)
        assert server.n_requests == 2 * 2
        # a rerun pays nothing: the bad answers are cached as well
        _, again = judge_file(out, _opts(server, reask=1), api_key="test", progress=False)
        assert server.n_requests == 4
    for entry in doc["documents"]:
        assert all(v == [None] for v in entry["scores"].values())
        assert len(entry["failures"]) == 2 and not any(f["recovered"] for f in entry["failures"])
        assert all(f["raw"].startswith("Here are my scores") for f in entry["failures"])
    assert doc["summary"]["failed_requests"] == 2 and doc["summary"]["complete_documents"] == 0
    assert again["documents"] == doc["documents"]


def test_cache_second_run_makes_no_request_and_cost_is_summed(tmp_path):
    out = write_outputs(tmp_path, n_docs=3)
    with FakeJudgeServer() as server:
        opts = _opts(server, price_in=2.0, price_out=8.0)
        _, first = judge_file(out, opts, api_key="test", progress=False)
        sent = dict(server.usage_sent)
        assert server.n_requests == 3
        _, second = judge_file(out, opts, api_key="test", progress=False)
        assert server.n_requests == 3                                   # zero new requests
    u1, u2 = first["usage"], second["usage"]
    assert (u1["prompt_tokens"], u1["completion_tokens"]) == (sent["prompt_tokens"], sent["completion_tokens"])
    assert u1["cost_usd"] == pytest.approx((sent["prompt_tokens"] * 2.0 + sent["completion_tokens"] * 8.0) / 1e6)
    assert u1["new_requests"] == 3 and u2["new_requests"] == 0 and u2["cached_requests"] == 3
    assert u2["cost_usd"] == u1["cost_usd"] and u2["new_cost_usd"] == 0.0
    assert second["documents"] == first["documents"]
    assert len(JudgeCache(tmp_path / "out.judge-cache.jsonl")) == 3


def test_unknown_price_is_unknown_not_guessed(tmp_path):
    out = write_outputs(tmp_path, n_docs=1)
    with FakeJudgeServer() as server:
        _, doc = judge_file(out, _opts(server), api_key="test", progress=False)
    assert doc["usage"]["cost_usd"] is None and "unknown" in doc["usage"]["cost_note"]
    assert doc["usage"]["prompt_tokens"] > 0


def test_resume_after_server_dies_sends_only_the_rest(tmp_path):
    out = write_outputs(tmp_path, n_docs=6)
    total = 6 * 2
    sleep = SleepRecorder()
    # the cache key holds the base URL, so the "restarted" server keeps its address
    with FakeJudgeServer(fail_after=5) as server:
        opts = _opts(server, repeats=2, max_retries=2)
        with pytest.raises(UsageError, match="kept failing.*rerun to continue"):
            judge_file(out, opts, api_key="test", sleep=sleep, progress=False)
        assert server.answered == 5
        assert len(JudgeCache(tmp_path / "out.judge-cache.jsonl")) == 5      # everything paid for is kept
        assert not (tmp_path / "out.scores.json").exists()
        server.fail_after = None                                           # the server recovers
        before = server.n_requests
        _, doc = judge_file(out, opts, api_key="test", sleep=sleep, progress=False)
        assert server.n_requests - before == total - 5                      # only the missing requests
        assert server.answered == total
    assert doc["summary"]["complete_documents"] == 6 and doc["usage"]["cached_requests"] == 5


def test_resume_after_keyboard_interrupt(tmp_path):
    out = write_outputs(tmp_path, n_docs=5)
    seen = []

    def hook(result):
        seen.append(result.spec.doc_index)
        if len(seen) == 2:
            raise KeyboardInterrupt

    with FakeJudgeServer() as server:
        opts = _opts(server, concurrency=1)
        with pytest.raises(KeyboardInterrupt):
            judge_file(out, opts, api_key="test", on_result=hook, progress=False)
        assert server.n_requests == 2
        _, doc = judge_file(out, opts, api_key="test", progress=False)
        assert server.n_requests == 5                                   # only the three remaining documents
        asked_again = {b["seed"] for b in server.requests[2:]}
        assert asked_again == {request_seed(0, d, 0, 0) for d in (2, 3, 4)}
    assert doc["summary"]["complete_documents"] == 5


def test_concurrency_limit_is_respected(tmp_path, monkeypatch):
    import threading

    import attn_transition.evaluation.judge.plan as judge_mod

    out = write_outputs(tmp_path, n_docs=8)
    original = judge_mod._judge_one
    lock = threading.Lock()
    active, peaks = [0], []

    def counting(*args, **kw):
        with lock:
            active[0] += 1
            peaks.append(active[0])
        try:
            return original(*args, **kw)
        finally:
            with lock:
                active[0] -= 1

    monkeypatch.setattr(judge_mod, "_judge_one", counting)
    with FakeJudgeServer() as server:
        _, doc = judge_file(out, _opts(server, concurrency=2), api_key="test", progress=False)
    assert len(peaks) == 8 and max(peaks) <= 2
    assert doc["summary"]["complete_documents"] == 8


def test_single_protocol_with_reference(tmp_path):
    out = write_outputs(tmp_path, n_docs=2)
    records = make_records(2)
    with FakeJudgeServer() as server:
        _, doc = judge_file(out, _opts(server, protocol="single", repeats=2, with_reference=True),
                            api_key="test", progress=False)
        assert server.n_requests == 2 * 2 * len(KEYS)
        assert all(b["messages"][1]["content"].count(_CAND) == 1 for b in server.requests)
        assert all("A reference summary" in b["messages"][1]["content"] for b in server.requests)
    assert doc["documents"][1]["orders"] is None
    assert doc["documents"][1]["scores"][KEYS[2]] == [fake_score(records[1][KEYS[2]])] * 2


# -- command line: one-line errors, exit code 2, nothing lost ----------------------------------
def test_cli_unknown_model_is_a_one_line_error(tmp_path, monkeypatch, capsys):
    out = write_outputs(tmp_path, n_docs=2)
    monkeypatch.setenv("OPENAI_API_KEY", "test")
    with FakeJudgeServer() as server:
        rc = main(["judge", str(out), "--base-url", server.base_url, "--judge-model", "gpt-9", "--quiet"])
        assert server.n_requests >= 1
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1
    assert "does not serve judge model 'gpt-9'" in err and "--judge-model" in err


def test_cli_missing_key_says_how_to_set_it(tmp_path, monkeypatch, capsys):
    out = write_outputs(tmp_path, n_docs=1)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    assert main(["judge", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "export OPENAI_API_KEY=" in err and "--base-url" in err
    assert main(["judge", str(out), "--base-url", "http://192.0.2.1:8000/v1", "--quiet"]) == 2
    assert "OPENAI_API_KEY=dummy" in capsys.readouterr().err
    # a server on this machine needs no key: the run goes on (and here finds nobody listening)
    assert main(["judge", str(out), "--base-url", "http://127.0.0.1:9/v1", "--max-retries", "0", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "OPENAI_API_KEY" not in err and "cannot reach http://127.0.0.1:9/v1" in err


def test_cli_unreachable_server(tmp_path, monkeypatch, capsys):
    out = write_outputs(tmp_path, n_docs=1)
    monkeypatch.setenv("OPENAI_API_KEY", "test")
    with socket.socket() as s:                 # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    rc = main(["judge", str(out), "--base-url", f"http://127.0.0.1:{port}/v1", "--max-retries", "0", "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and "cannot reach" in err and "--base-url" in err


def test_cli_bad_generation_file_names_record_and_field(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("OPENAI_API_KEY", "test")
    bad = tmp_path / "bad.json"
    records = make_records(3)
    del records[1]["summary"]
    bad.write_text(json.dumps(records))
    assert main(["judge", str(bad), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "record 1" in err and "'summary'" in err


def test_cli_full_run_and_dry_run(tmp_path, monkeypatch, capsys):
    out = write_outputs(tmp_path, n_docs=2)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    assert main(["judge", str(out), "--dry-run", "--repeats", "2"]) == 0       # needs no key, sends nothing
    text = capsys.readouterr().out
    assert "[user]" in text and "4 requests" in text and "cost $" in text and "decode_" not in text.split("---")[2]
    monkeypatch.setenv("OPENAI_API_KEY", "test")
    with FakeJudgeServer() as server:
        rc = main(["judge", str(out), "--base-url", server.base_url, "--judge-model", FAKE_MODEL, "--quiet",
                   "-o", str(tmp_path / "s.json"), "--price-in", "1", "--price-out", "1"])
        assert rc == 0 and server.n_requests == 2
    printed = capsys.readouterr().out
    assert "2/2 documents fully scored" in printed and "cost $" in printed
    saved = json.loads((tmp_path / "s.json").read_text())
    assert saved["format"] == "attn_transition.judge_scores" and saved["outputs"]["path"] == "out.json"


# -- the cache survives a torn last line; per-request 400s; unreadable answers; dry run ---------
def test_torn_cache_line_does_not_swallow_the_next_answer(tmp_path):
    path = tmp_path / "c.jsonl"
    good = json.dumps({"key": "good", "content": "kept"})
    path.write_text(good + "\n" + '{"key": "torn", "cont', encoding="utf-8")     # crash mid-write: no newline
    cache = JudgeCache(path)
    assert cache.skipped_lines == 1 and cache.get("good")["content"] == "kept"
    cache.put("new", {"content": "paid for"})
    cache.put("newer", {"content": "also paid for"})
    again = JudgeCache(path)
    assert again.skipped_lines == 1                                    # only the torn line itself
    assert {k: again.get(k)["content"] for k in ("good", "new", "newer")} == \
        {"good": "kept", "new": "paid for", "newer": "also paid for"}
    assert path.read_text(encoding="utf-8").endswith("\n")


def test_a_cache_torn_inside_a_multibyte_character_loads_and_keeps_its_answers(tmp_path):
    path = tmp_path / "c.jsonl"
    good = json.dumps({"key": "good", "content": "it\u2019s kept"}, ensure_ascii=False).encode()
    torn = json.dumps({"key": "torn", "content": "the judge\u2019s reply"}, ensure_ascii=False).encode()
    cut = torn.index("\u2019".encode()) + 1                            # inside the 3-byte apostrophe
    path.write_bytes(good + b"\n" + torn[:cut])
    for _ in range(2):                                                 # every later run loads it too
        cache = JudgeCache(path)
        assert cache.skipped_lines == 1 and cache.get("good")["content"] == "it\u2019s kept"
    cache.put("new", {"content": "paid for"})
    assert JudgeCache(path).get("new")["content"] == "paid for"
    assert path.read_bytes().startswith(good + b"\n" + torn[:cut] + b"\n")   # nothing rewritten


def test_context_length_400_is_a_recorded_failure_and_the_run_goes_on(tmp_path):
    from attn_transition.evaluation.judge.scores import load_scores
    from attn_transition.evaluation.report import ReportOptions, build_report

    out = write_outputs(tmp_path, n_docs=3)
    with FakeJudgeServer(script=["ok", "context_length"]) as server:
        # concurrency 1: document 1 gets the 400; it is not re-asked (the same prompt would be refused again)
        path, doc = judge_file(out, _opts(server, concurrency=1, reask=2), api_key="test", progress=False)
        assert server.n_requests == 3
    refused = doc["documents"][1]
    assert all(v == [None] for v in refused["scores"].values())
    [failure] = refused["failures"]
    assert failure["http_status"] == 400 and failure["raw"] is None
    assert "context_length_exceeded" in failure["error"] and "maximum context length" in failure["error"]
    for d in (0, 2):
        assert all(v[0] is not None for v in doc["documents"][d]["scores"].values())
    assert doc["summary"] == {"documents": 3, "complete_documents": 2, "failed_requests": 1, "bad_replies": 0}
    rep = build_report(load_scores(path), ReportOptions(n_boot=200, folds=2, rouge=False))
    assert rep["documents"]["complete"] == 2 and rep["documents"]["total"] == 3
    [excluded] = rep["documents"]["excluded"]
    assert excluded["id"] == "doc1" and "context_length_exceeded" in excluded["reason"]


@pytest.mark.parametrize("behaviour, message", [
    ("bad_format", "rejected the response_format"),
    ("bad_body", "could not handle"),
])
def test_cli_run_wide_400_and_unreadable_answer_are_one_line_errors(tmp_path, monkeypatch, capsys, behaviour,
                                                                    message):
    out = write_outputs(tmp_path, n_docs=3)
    monkeypatch.setenv("OPENAI_API_KEY", "test")
    with FakeJudgeServer(script=["ok", behaviour]) as server:
        rc = main(["judge", str(out), "--base-url", server.base_url, "--judge-model", FAKE_MODEL, "--quiet",
                   "--concurrency", "1"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1, err
    assert message in err and "answers so far are kept in" in err and "out.judge-cache.jsonl" in err
    assert len(JudgeCache(tmp_path / "out.judge-cache.jsonl")) == 1          # the answer before it is kept


@pytest.mark.parametrize("answer, name", [("invalid", "Data returned by API invalid"),
                                          ("no_choices", "AttributeError")])
def test_client_exception_outside_http_errors_is_a_one_line_usage_error(tmp_path, answer, name):
    from types import SimpleNamespace

    import openai

    from attn_transition.evaluation.judge.client import JudgeClient

    class Invalid(openai.APIResponseValidationError):
        def __init__(self) -> None:          # no HTTP response object needed for this test
            Exception.__init__(self, "Data returned by API invalid for expected schema.")

    def create(**kw):
        if answer == "invalid":
            raise Invalid()
        return object()                      # a 200 body without 'choices'

    stub = SimpleNamespace(chat=SimpleNamespace(completions=SimpleNamespace(create=create)))
    cache = JudgeCache(tmp_path / "c.jsonl")
    client = JudgeClient(stub, "m", "http://x/v1", cache, cache_path_hint=str(cache.path))
    with pytest.raises(UsageError) as info:
        client.complete({"messages": []}, "k")
    text = str(info.value)
    assert len(text.splitlines()) == 1 and name in text
    assert len(cache) == 0 and not cache.path.exists()
    assert "kept in" not in text                            # no answer yet: no cache file to point to
    cache.put("earlier", {"content": "paid for"})           # once it holds an answer, the error names it
    with pytest.raises(UsageError) as info:
        client.complete({"messages": []}, "k")
    assert f"answers so far are kept in {cache.path}" in str(info.value)
    assert len(cache) == 1


def test_dry_run_counts_cached_answers_and_estimates_only_the_rest(tmp_path, monkeypatch, capsys):
    from attn_transition.evaluation.judge import dry_run

    out = write_outputs(tmp_path, n_docs=3)
    with FakeJudgeServer() as server:
        opts = _opts(server, price_in=1.0, price_out=1.0)
        judge_file(out, opts, api_key="test", progress=False)
        assert server.n_requests == 3
        write_outputs(tmp_path, n_docs=4)             # one more document; the first three are unchanged
        partial = dry_run(out, opts)
        full = dry_run(out, opts, use_cache=False)
        assert server.n_requests == 3                 # a dry run sends nothing
    assert (partial["requests"], partial["cached_requests"], partial["requests_to_send"]) == (4, 3, 1)
    assert (full["cached_requests"], full["requests_to_send"]) == (0, 4)
    assert 0 < partial["prompt_tokens"] < full["prompt_tokens"] / 2
    assert 0 < partial["cost_usd"] < full["cost_usd"] / 2
    assert partial["completion_tokens"] == full["completion_tokens"] // 4
    text = capsys.readouterr().out
    assert "3 already answered in the cache" in text and "1 to send" in text
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    args = ["judge", str(out), "--dry-run", "--base-url", server.base_url, "--judge-model", FAKE_MODEL]
    assert main(args) == 0 and "3 already answered in the cache" in capsys.readouterr().out
    assert main(args + ["--no-cache"]) == 0 and "4 to send" in capsys.readouterr().out


def test_missing_openai_package_is_a_one_line_error(tmp_path, monkeypatch, capsys):
    import sys

    out = write_outputs(tmp_path, n_docs=1)
    monkeypatch.setenv("OPENAI_API_KEY", "test")
    monkeypatch.setitem(sys.modules, "openai", None)          # makes `import openai` fail
    assert main(["judge", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "openai" in err and 'pip install "attn-transition[eval]"' in err
    assert "pip install openai" in err


# -- a real OpenAI-compatible server: transformers serve with the embedded SmolLM2 -------------
@pytest.mark.slow
def test_end_to_end_against_transformers_serve(tmp_path, monkeypatch):
    """The judge's protocol against a real server (not judging quality): requests, recorded bad
    replies, re-asks that are new requests, a scores file, exit 0, and a rerun that pays nothing."""
    import os
    import shutil
    import subprocess
    import sys
    import time
    import urllib.request

    need("fastapi", "transformers serve needs transformers[serving]: make setup")
    from attn_transition.evaluation.models import resolve_model

    folder = resolve_model("smollm2-135m")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    exe = shutil.which("transformers") or os.path.join(os.path.dirname(sys.executable), "transformers")
    server = subprocess.Popen([exe, "serve", folder, "--host", "127.0.0.1", "--port", str(port), "--log-level",
                               "warning"], env={**os.environ, "HF_HUB_OFFLINE": "1"},
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(240):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1).read()
                break
            except OSError:
                assert server.poll() is None, "transformers serve exited"
                time.sleep(0.5)
        else:
            pytest.fail("transformers serve did not come up in 120 s")
        out = write_outputs(tmp_path, n_docs=2)
        monkeypatch.setenv("OPENAI_API_KEY", "local")
        argv = ["judge", str(out), "--base-url", f"http://127.0.0.1:{port}/v1", "--judge-model", folder,
                "--response-format", "none", "--max-tokens", "48", "--reask", "1", "--concurrency", "1",
                "--quiet"]
        assert main(argv) == 0
        doc = json.loads((tmp_path / "out.scores.json").read_text())
        cache = [json.loads(line) for line in (tmp_path / "out.judge-cache.jsonl").read_text().splitlines()]
        asked = doc["usage"]["new_requests"]
        assert 2 <= asked <= 4 and len(cache) == asked and len({c["key"] for c in cache}) == asked
        for entry in doc["documents"]:                 # every failure is recorded with the server's raw reply
            assert all(isinstance(f["raw"], str) and f["error"] for f in entry["failures"])
        assert main(argv) == 0                         # the rerun is answered from the cache
        again = json.loads((tmp_path / "out.scores.json").read_text())
        assert again["usage"]["new_requests"] == 0 and again["documents"] == doc["documents"]
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()


def test_cli_file_without_candidates_says_run_generate_first(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("OPENAI_API_KEY", "test")
    data = tmp_path / "data.json"
    data.write_text(json.dumps([{"document": "d", "summary": "s", "id": "1"}]))
    assert main(["judge", str(data), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no 'decode_*' candidate fields" in err
    assert "run `attn-transition generate` on its documents first" in err
    assert not (tmp_path / "data.scores.json").exists()

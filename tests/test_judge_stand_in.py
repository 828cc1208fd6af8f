"""The offline stand-in judge from the command line (``judge --stand-in``, ``python -m
...judge.testing``), and a report over its scores that says they are no judgement."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from attn_transition.cli import main

from fake_openai import FAKE_MODEL, FakeJudgeServer, write_outputs

ROOT = Path(__file__).resolve().parents[1]
STAND_IN_HEADER = "not a judgement: stand-in scores"


def test_judge_stand_in_needs_no_key_and_marks_its_scores(tmp_path, monkeypatch, capsys):
    out = write_outputs(tmp_path, n_docs=3)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    assert main(["judge", str(out), "--stand-in", "--quiet"]) == 0
    captured = capsys.readouterr()
    assert "NOT a judgement" in captured.err and "3/3 documents fully scored" in captured.out
    scores_path = tmp_path / "out.stand-in.scores.json"          # never the real judge's out.scores.json
    scores = json.loads(scores_path.read_text())
    assert scores["judge"]["stand_in"] is True and scores["judge"]["model"] == "stand-in"
    assert scores["usage"]["cost_usd"] == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json", "out.stand-in.scores.json"]   # no cache

    assert main(["report", str(scores_path), "--no-rouge", "--json", str(tmp_path / "r.json")]) == 0
    text = capsys.readouterr().out
    assert text.splitlines()[0] == f"# Judge report: out.stand-in.scores.json -- {STAND_IN_HEADER}"
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["source"]["stand_in"] is True and report["notes"][0].startswith(STAND_IN_HEADER)


def test_stand_in_and_base_url_exclude_each_other(tmp_path, capsys):
    out = write_outputs(tmp_path, n_docs=1)
    assert main(["judge", str(out), "--stand-in", "--base-url", "http://localhost:8000/v1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--stand-in starts its own server: drop --base-url" in err


def test_a_report_over_a_real_judges_scores_is_not_marked(tmp_path, capsys):
    out = write_outputs(tmp_path, n_docs=3)
    scores_path = tmp_path / "out.scores.json"
    with FakeJudgeServer() as server:
        assert main(["judge", str(out), "--base-url", server.base_url, "--judge-model", FAKE_MODEL, "--quiet"]) == 0
    doc = json.loads(scores_path.read_text())
    doc["judge"]["stand_in"] = False                             # as a real server's scores are recorded
    scores_path.write_text(json.dumps(doc))
    capsys.readouterr()
    assert main(["report", str(scores_path), "--no-rouge"]) == 0
    text = capsys.readouterr().out
    assert STAND_IN_HEADER not in text and text.splitlines()[0] == "# Judge report: out.scores.json"


def test_python_m_testing_has_a_help_and_serves_until_ctrl_c(tmp_path, monkeypatch, capsys):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    module = "attn_transition.evaluation.judge.testing"
    helped = subprocess.run([sys.executable, "-m", module, "--help"], env=env, capture_output=True, text=True,
                            timeout=120)
    text = " ".join(helped.stdout.split())
    assert helped.returncode == 0 and "--port PORT" in text and "NOT a judge" in text
    # Ctrl-C as a terminal sends it: SIGINT at its default disposition in the child (a test run started in
    # the background by a shell without job control inherits SIGINT ignored, and Python then never raises
    # KeyboardInterrupt).
    proc = subprocess.Popen([sys.executable, "-m", module, "--port", "0", "--model", "local-judge"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        first = proc.stdout.readline()
        assert "stand-in judge" in first, proc.stderr.read() if proc.poll() is not None else first
        url = next(word.rstrip(",") for word in first.split() if word.startswith("http://"))
        out = write_outputs(tmp_path, n_docs=2)
        monkeypatch.delenv("OPENAI_API_KEY", raising=False)          # a loopback server: no key needed
        assert main(["judge", str(out), "--base-url", url, "--judge-model", "local-judge", "--quiet"]) == 0
        assert json.loads((tmp_path / "out.scores.json").read_text())["judge"]["stand_in"] is True
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0

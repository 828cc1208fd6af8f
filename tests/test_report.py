"""The report's statistics on hand-computed examples, and the report over our own scores file."""

import json

import numpy as np
import pytest

from attn_transition.errors import UsageError
from attn_transition.evaluation.judge import JudgeOptions, judge_file
from attn_transition.evaluation.judge.scores import ScoreTable, load_scores
from attn_transition.evaluation.report import (ReportOptions, build_report, crossfit_best, length_variable,
                                               render_markdown, rouge_scores)

from fake_openai import FAKE_MODEL, KEYS, FakeJudgeServer, make_records, write_outputs

#            decode_or   a    b
HAND = np.array([[50, 60, 40],
                 [60, 60, 80],
                 [40, 50, 40],
                 [70, 60, 90]], dtype=float)
HAND_KEYS = ["decode_or", "decode_al_05_be_01_lay_2", "decode_al_1_be_05_lay_1"]


def _table(scores=HAND, keys=HAND_KEYS, records=None):
    n = scores.shape[0]
    return ScoreTable("judge", "hand.json", list(keys), [f"d{i}" for i in range(n)], scores.copy(),
                      ~np.isnan(scores).any(axis=1), [], records)


def test_hand_computed_means_differences_win_tie_loss_oracle():
    rep = build_report(_table(), ReportOptions(n_boot=2000, folds=2, rouge=False))
    assert rep["plain"]["mean"] == 55.0 and rep["plain"]["n"] == 4
    a, b = rep["configs"]
    assert (a["key"], a["mean"], a["diff"], (a["wins"], a["ties"], a["losses"])) == \
        ("decode_al_05_be_01_lay_2", 57.5, 2.5, (2, 1, 1))          # diffs 10, 0, 10, -10
    assert (b["mean"], b["diff"], (b["wins"], b["ties"], b["losses"])) == (62.5, 7.5, (2, 1, 1))  # -10, 20, 0, 20
    s = rep["summary"]
    assert s["mean_over_configs"]["mean"] == 60.0 and s["mean_over_configs"]["diff"] == 5.0   # per doc 50,70,45,75
    assert s["oracle_best_of_n"]["mean"] == 70.0 and s["oracle_best_of_n"]["diff"] == 15.0    # per doc 60,80,50,90
    assert (s["oracle_best_of_n"]["wins"], s["oracle_best_of_n"]["losses"]) == (4, 0)
    assert "ORACLE" in s["oracle_best_of_n"]["label"]
    assert s["best_fixed_in_sample"]["key"] == "decode_al_1_be_05_lay_1" and s["best_fixed_in_sample"]["mean"] == 62.5


def test_bootstrap_interval_contains_mean_and_is_deterministic():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 101, size=(40, 3)).astype(float)
    opts = ReportOptions(n_boot=2000, folds=2, rouge=False, seed=3)
    r1, r2 = build_report(_table(scores), opts), build_report(_table(scores), opts)
    assert r1 == r2                                                    # same seed, same intervals
    for row in r1["configs"]:
        assert row["diff_ci"][0] < row["diff"] < row["diff_ci"][1]
        assert row["mean_ci"][0] < row["mean"] < row["mean_ci"][1]
        d = scores[:, HAND_KEYS.index(row["key"])] - scores[:, 0]
        assert row["diff"] == pytest.approx(d.mean())
        assert d.min() <= row["diff_ci"][0] and row["diff_ci"][1] <= d.max()
    other = build_report(_table(scores), ReportOptions(n_boot=2000, folds=2, rouge=False, seed=4))
    assert other["configs"][1]["diff_ci"] != r1["configs"][1]["diff_ci"]
    assert other["configs"][1]["diff"] == r1["configs"][1]["diff"]


def test_constant_difference_gives_a_degenerate_interval():
    scores = np.array([[10, 13], [50, 53], [20, 23], [90, 93]], dtype=float)
    rep = build_report(_table(scores, HAND_KEYS[:2]), ReportOptions(n_boot=500, folds=2, rouge=False))
    assert rep["configs"][0]["diff"] == 3.0 and rep["configs"][0]["diff_ci"] == [3.0, 3.0]
    assert (rep["configs"][0]["wins"], rep["configs"][0]["ties"], rep["configs"][0]["losses"]) == (4, 0, 0)


def test_crossfit_exposes_selection_bias():
    # doc 0 favours config A, doc 1 favours B: in-sample best mean is 5, chosen-elsewhere gives 0
    configs = np.array([[10.0, 0.0], [0.0, 10.0]])
    picked, chosen = crossfit_best(configs, folds=2, seed=0)
    assert picked.tolist() == [0.0, 0.0] and sorted(chosen) == [0, 1]
    # a config best everywhere is picked in every fold
    dominant = np.array([[5.0, 9.0], [1.0, 2.0], [3.0, 4.0], [0.0, 7.0]])
    picked, chosen = crossfit_best(dominant, folds=2, seed=1)
    assert chosen == [1, 1] and picked.tolist() == [9.0, 2.0, 4.0, 7.0]


def test_incomplete_documents_are_excluded_and_no_plain_is_an_error():
    scores = HAND.copy()
    scores[1, 2] = np.nan
    rep = build_report(_table(scores), ReportOptions(n_boot=500, folds=2, rouge=False))
    assert rep["plain"]["n"] == 3 and rep["plain"]["mean"] == pytest.approx((50 + 40 + 70) / 3)
    with pytest.raises(UsageError, match="decode_or"):
        build_report(_table(HAND[:, 1:], HAND_KEYS[1:]), ReportOptions(n_boot=500, rouge=False))


def test_length_variable_prefers_prompt_tokens():
    recs = make_records(3, with_prompt_tokens=True)
    name, values = length_variable(recs)
    assert name == "prompt_tokens" and values.tolist() == [400.0, 500.0, 600.0]
    del recs[1]["prompt_tokens"]
    name, values = length_variable(recs)
    assert name == "document_words" and values.tolist() == [len(r["document"].split()) for r in recs]


def test_prompt_tokens_from_the_generation_metadata_sidecar(tmp_path):
    out = write_outputs(tmp_path, n_docs=3)
    (tmp_path / "out.json.meta.json").write_text(json.dumps(
        {"format": "attn_transition.generate/1",
         "documents": [{"id": f"doc{i}", "bucket": 800, "prompt_tokens": 790 + i} for i in range(3)]}))
    with FakeJudgeServer() as server:
        path, _ = judge_file(out, JudgeOptions(judge_model=FAKE_MODEL, base_url=server.base_url),
                             api_key="test", progress=False)
    table = load_scores(path)
    assert table.prompt_tokens == [790.0, 791.0, 792.0]
    rep = build_report(table, ReportOptions(n_boot=200, folds=2, rouge=False, length_edges=(791,)))
    assert rep["length_buckets"]["variable"] == "prompt_tokens"
    assert [b["n"] for b in rep["length_buckets"]["buckets"]] == [1, 2]


def test_length_buckets_with_explicit_edges():
    recs = make_records(4, keys=HAND_KEYS, with_prompt_tokens=True)     # 400, 500, 600, 700 tokens
    rep = build_report(_table(records=recs), ReportOptions(n_boot=500, folds=2, rouge=False, length_edges=(550,)))
    lb = rep["length_buckets"]
    assert lb["variable"] == "prompt_tokens" and lb["edges"] == [550.0]
    short, long = lb["buckets"]
    assert (short["n"], long["n"]) == (2, 2)
    assert short["plain"]["mean"] == 55.0 and long["plain"]["mean"] == 55.0
    assert short["oracle_best_of_n"]["mean"] == 70.0 and long["oracle_best_of_n"]["mean"] == 70.0
    assert short["mean_over_configs"]["diff"] == 5.0                        # (50+70)/2 - 55


def test_bucket_labels_are_whole_numbers():
    """Edges can fall between lengths (quantiles such as 533.333, or given); lengths are whole, so
    the labels are: [lo, hi) holds the lengths ceil(lo) .. ceil(hi) - 1."""
    recs = make_records(4, keys=HAND_KEYS, with_prompt_tokens=True)     # 400, 500, 600, 700 tokens
    rep = build_report(_table(records=recs), ReportOptions(n_boot=200, folds=2, rouge=False,
                                                           length_edges=(450.5, 600.25)))
    labels = [b["label"] for b in rep["length_buckets"]["buckets"]]
    assert labels == ["< 451", "451 - 601", ">= 601"], labels
    assert [b["n"] for b in rep["length_buckets"]["buckets"]] == [1, 2, 1]


def test_rouge_is_computed_offline_against_the_summary():
    recs = [{"summary": "the cat sat on the mat", "decode_or": "the cat sat on the mat", "decode_x": "a dog ran"}]
    r = rouge_scores(recs, ["decode_or", "decode_x"])
    assert r.shape == (1, 2, 3)
    assert r[0, 0].tolist() == [100.0, 100.0, 100.0] and r[0, 1].tolist() == [0.0, 0.0, 0.0]


def test_report_over_our_scores_file_with_noise_and_position(tmp_path):
    out = write_outputs(tmp_path, n_docs=6, with_prompt_tokens=True)
    with FakeJudgeServer() as server:
        path, _ = judge_file(out, JudgeOptions(judge_model=FAKE_MODEL, base_url=server.base_url, repeats=3),
                             api_key="test", progress=False)
    table = load_scores(path)
    assert table.source == "judge" and table.keys == KEYS and table.records is not None
    rep = build_report(table, ReportOptions(n_boot=500, folds=3))
    assert rep["documents"]["complete"] == 6
    noise = rep["judge_noise"]
    # the fake judge scores a text the same way wherever it stands: no noise, no position effect
    assert noise["repeats"] == 3 and noise["pairs"] == 6 * 4 and noise["mean_sd"] == 0.0
    assert noise["all_equal_fraction"] == 1.0 and noise["position"]["slope"] == pytest.approx(0.0, abs=1e-9)
    assert sum(noise["position"]["n_by_position"]) == 6 * 4 * 3
    assert rep["length_buckets"]["variable"] == "prompt_tokens"
    assert rep["source"]["usage"]["requests"] == 18
    md = render_markdown(rep)
    assert "Judge noise" in md and "By length (prompt length in tokens)" in md


def test_position_bias_is_detected(tmp_path):
    # a judge that adds 10 points to whatever it sees first
    out = write_outputs(tmp_path, n_docs=5)
    with FakeJudgeServer() as server:
        path, _ = judge_file(out, JudgeOptions(judge_model=FAKE_MODEL, base_url=server.base_url, repeats=4),
                             api_key="test", progress=False)
    data = json.loads(path.read_text())
    for doc in data["documents"]:
        for r, order in enumerate(doc["orders"]):
            doc["scores"][order[0]][r] = min(100, doc["scores"][order[0]][r] + 10)
    path.write_text(json.dumps(data))
    rep = build_report(load_scores(path), ReportOptions(n_boot=500, folds=2, rouge=False))
    pos = rep["judge_noise"]["position"]
    assert pos["residual_by_position"][0] > 0 > pos["residual_by_position"][-1]
    assert pos["slope"] < 0 and pos["slope_ci"][1] < 0


def test_changed_generation_file_is_refused(tmp_path):
    out = write_outputs(tmp_path, n_docs=2)
    with FakeJudgeServer() as server:
        path, _ = judge_file(out, JudgeOptions(judge_model=FAKE_MODEL, base_url=server.base_url),
                             api_key="test", progress=False)
    recs = json.loads(out.read_text())
    recs[0]["decode_or"] += " edited"
    out.write_text(json.dumps(recs))
    with pytest.raises(UsageError, match="changed since it was judged"):
        load_scores(path)


def _judged_with_sidecar(tmp_path, buckets):
    out = write_outputs(tmp_path, n_docs=len(buckets))
    (tmp_path / "out.json.meta.json").write_text(json.dumps(
        {"format": "attn_transition.generate/1",
         "documents": [{"id": f"doc{i}", "bucket": b, "prompt_tokens": 700 + 100 * i} for i, b in enumerate(buckets)]}))
    with FakeJudgeServer() as server:
        path, _ = judge_file(out, JudgeOptions(judge_model=FAKE_MODEL, base_url=server.base_url),
                             api_key="test", progress=False)
    return path


def test_length_buckets_follow_the_recorded_selection_bucket(tmp_path):
    path = _judged_with_sidecar(tmp_path, [1200, 800, 1200, 1600, 800, 1200])
    table = load_scores(path)
    assert table.selection_buckets == [1200.0, 800.0, 1200.0, 1600.0, 800.0, 1200.0]
    rep = build_report(table, ReportOptions(n_boot=200, folds=2, rouge=False))
    lb = rep["length_buckets"]
    assert lb["variable"] == "selection_bucket"
    assert [(b["label"], b["n"]) for b in lb["buckets"]] == [("800", 2), ("1200", 3), ("1600", 1)]
    plain = table.scores[:, table.plain_index]
    assert lb["buckets"][1]["plain"]["mean"] == pytest.approx(plain[[0, 2, 5]].mean())
    md = render_markdown(rep)
    assert "By length (selection bucket" in md and "| 1200 | 3 |" in md
    # explicit edges still bucket by prompt length
    rep = build_report(table, ReportOptions(n_boot=200, folds=2, rouge=False, length_edges=(950,)))
    assert rep["length_buckets"]["variable"] == "prompt_tokens"
    assert [b["n"] for b in rep["length_buckets"]["buckets"]] == [3, 3]


def test_a_document_without_a_selection_bucket_falls_back_to_prompt_length(tmp_path):
    path = _judged_with_sidecar(tmp_path, [800, None, 1200])
    table = load_scores(path)
    assert table.selection_buckets is None and table.prompt_tokens == [700.0, 800.0, 900.0]
    rep = build_report(table, ReportOptions(n_boot=200, folds=2, rouge=False))
    assert rep["length_buckets"]["variable"] == "prompt_tokens"

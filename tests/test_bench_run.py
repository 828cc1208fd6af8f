"""attn-transition bench end to end on a tiny random Llama and a character tokenizer:
outputs, resume after an interrupt, tuning, data-parallel shards and the CLI's error paths."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

import attn_transition as at
from attn_transition.cli import main
from attn_transition.evaluation.bench import store
from attn_transition.config import format_config as config_label
from attn_transition.evaluation.bench.runner import BenchSettings, edits_anything, run_bench
from attn_transition.evaluation.runtime.dist import Shard, detect_shard
from test_bench_pure import HELD, char_tokenizer, contents, hold

pytestmark = pytest.mark.usefixtures("one_thread")     # tiny models: one thread (conftest)

AGGRESSIVE = "classic:min_length=0,alpha=5,beta=1.5"      # changes greedy outputs of the tiny model
MILD = "sra:begin_length=10,threshold_len=40"
A_LABEL, M_LABEL = config_label(at.parse_config(AGGRESSIVE)), config_label(at.parse_config(MILD))
SETTINGS = BenchSettings(tasks=("fact", "kv"), lengths=(400, 520), depths=(0.0, 1.0), configs=(AGGRESSIVE, MILD),
                         max_new_tokens=3, batch_size=2, n_boot=500)


def tiny_lm(seed: int = 0, max_positions: int = 2048):
    from transformers import AutoModelForCausalLM, LlamaConfig

    cfg = LlamaConfig(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=4,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=max_positions,
                      pad_token_id=0, bos_token_id=1, eos_token_id=2)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(cfg, attn_implementation="sdpa")
    with torch.no_grad():                      # sharpen attention so the edits matter
        for name, p in model.named_parameters():
            if name.endswith(("q_proj.weight", "k_proj.weight")):
                p.mul_(6.0)
    return model.eval()


@pytest.fixture(scope="module")
def lm():
    return tiny_lm(), char_tokenizer()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, lm):
    folder = tmp_path_factory.mktemp("tiny-llama")
    model, tok = lm
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def _key(records):
    """Records without the fields that legitimately differ between runs (timing, rank)."""
    return [{k: v for k, v in r.items() if k not in ("seconds", "rank", "type")} for r in records]


@pytest.fixture(scope="module")
def full_run(lm, tmp_path_factory):
    model, tok = lm
    out = tmp_path_factory.mktemp("full")
    return out, run_bench(model, tok, SETTINGS, out, model_name="tiny", progress=False)


def test_run_writes_results_summary_and_plots(full_run, lm):
    out, results = full_run
    n_items = 2 * 2 * 2
    assert len(results["items"]) == n_items
    assert (A_LABEL, M_LABEL) == ("classic:alpha=5,beta=1.5,min_length=0", MILD)
    configs = ["stock", A_LABEL, M_LABEL]
    assert results["summary"]["configs"] == configs
    assert [(r["item"], r["config"]) for r in results["records"]] == [
        (it["item_id"], c) for it in results["items"] for c in configs]
    for r in results["records"]:
        assert set(r) >= {"item", "config", "output", "line", "correct", "seconds", "n_tokens"}
    for it in results["items"]:
        assert it["prompt"]["text"].count(it["needles"][0][0]) == 1
        assert it["prompt"]["n_tokens"] <= it["length"]
    meta = results["meta"]
    assert meta["complete"] and meta["model"] == "tiny" and meta["chat"] is True
    assert {"torch", "transformers", "python"} <= set(meta["versions"])
    assert set(meta["seconds_per_config"]) == set(configs)
    assert meta["configs"][A_LABEL]["alpha"] == 5.0
    # The aggressive config really edits the tiny model at these lengths and changes some outputs.
    cmp = {c["treatment"]: c for c in results["summary"]["comparison"]}
    assert cmp[A_LABEL]["changed"] > 0
    assert not at.is_enabled(lm[0]), "the run must leave the model as it found it"
    on_disk = json.loads((out / "results.json").read_text())
    assert on_disk["records"] == json.loads(json.dumps(results["records"]))
    md = (out / "summary.md").read_text()
    assert "Paired difference to the stock model" in md and A_LABEL in md
    for png in ("heatmap.png", "accuracy_vs_length.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # The log holds exactly the records of the results.
    _, logged = store.read_log(out / "records.jsonl")
    assert sorted(map(str, _key(logged))) == sorted(map(str, _key(results["records"])))


def test_stock_outputs_equal_plain_generate_and_accuracy_is_the_mean(full_run, lm):
    from attn_transition.evaluation.bench.runner import generate_batch

    model, tok = lm
    _, results = full_run
    it = results["items"][0]
    got = generate_batch(model, tok, [it["prompt"]["text"]], chat=True, max_new_tokens=3)[0]
    stock = next(r for r in results["records"] if r["item"] == it["item_id"] and r["config"] == "stock")
    assert got == stock["output"]
    for row in results["summary"]["accuracy"]:
        mine = [r["correct"] for r in results["records"] if r["config"] == row["config"]]
        assert row["n"] == len(mine) and row["correct"] == sum(mine)


def test_resume_after_interrupt_redoes_nothing_and_matches_an_uninterrupted_run(lm, full_run, tmp_path):
    model, tok = lm
    _, full = full_run
    seen: list[dict] = []

    def interrupt_after_three_batches(records):
        seen.extend(records)
        if len(seen) >= 6:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_bench(model, tok, SETTINGS, tmp_path, model_name="tiny", progress=False,
                  on_records=interrupt_after_three_batches)
    _, logged = store.read_log(tmp_path / "records.jsonl")
    assert len(logged) == 6 and not (tmp_path / "results.json").exists()
    done = {(r["item"], r["config"]) for r in logged}

    # Without --resume the folder is refused, and nothing in it changes.
    before = (tmp_path / "records.jsonl").read_bytes()
    with pytest.raises(at.UsageError, match="add --resume"):
        run_bench(model, tok, SETTINGS, tmp_path, model_name="tiny", progress=False)
    assert (tmp_path / "records.jsonl").read_bytes() == before
    with open(tmp_path / "records.jsonl", "a", encoding="utf-8") as fh:
        fh.write('{"type": "record", "item": "fact-L')             # a write cut short by Ctrl-C

    redone: list[dict] = []
    resumed = run_bench(model, tok, SETTINGS, tmp_path, model_name="tiny", progress=False, resume=True,
                        on_records=redone.extend)
    assert len(redone) == len(full["records"]) - 6
    assert done.isdisjoint((r["item"], r["config"]) for r in redone)
    assert _key(resumed["records"]) == _key(full["records"])
    assert resumed["summary"]["accuracy"] == full["summary"]["accuracy"]
    # Resuming a finished run generates nothing.
    again: list[dict] = []
    run_bench(model, tok, SETTINGS, tmp_path, model_name="tiny", progress=False, resume=True,
              on_records=again.extend, write_report=False)
    assert again == []


def test_resume_refuses_a_log_of_another_run(lm, full_run, tmp_path):
    model, tok = lm
    out, _ = full_run
    other = BenchSettings(**{**SETTINGS.__dict__, "seed": 1})
    with pytest.raises(at.UsageError, match="different run"):
        run_bench(model, tok, other, out, model_name="tiny", progress=False, resume=True)



@pytest.mark.parametrize("name", HELD)
def test_run_bench_refuses_a_folder_with_results_before_running_and_keeps_them(lm, tmp_path, name):
    # Before, only this rank's log counted: a folder with another world's logs was written into.
    model, tok = lm
    before = hold(tmp_path, name)
    with pytest.raises(at.UsageError, match=rf"already holds results; add --resume .* \(it has {name}\)"):
        run_bench(model, tok, SETTINGS, tmp_path, model_name="tiny", progress=False,
                  on_records=lambda records: pytest.fail("generated before refusing"))
    assert contents(tmp_path) == before

def test_tune_chooses_on_dev_and_reports_test_only(lm, tmp_path):
    model, tok = lm
    settings = BenchSettings(tasks=("kv",), lengths=(400,), depths=(0.0, 0.5, 1.0), per_cell=2,
                             configs=(MILD, AGGRESSIVE), max_new_tokens=2, batch_size=3, tune=True, n_boot=200)
    res = run_bench(model, tok, settings, tmp_path, model_name="tiny", progress=False)
    tune = res["meta"]["tune"]
    split = {it["item_id"]: it["split"] for it in res["items"]}
    assert sorted(split.values()) == ["dev"] * 3 + ["test"] * 3
    assert tune["chosen"] in (M_LABEL, A_LABEL) and tune["grid"] == [M_LABEL, A_LABEL]
    for r in res["records"]:
        if split[r["item"]] == "test":
            assert r["config"] in ("stock", tune["chosen"]), r
    dev_records = [r for r in res["records"] if split[r["item"]] == "dev"]
    assert len(dev_records) == 3 * 3
    assert res["summary"]["configs"] == ["stock", tune["chosen"]]
    assert all(row["n"] == 3 for row in res["summary"]["accuracy"])
    assert res["meta"]["complete"]


def test_shard_assignment_and_detection_from_the_environment():
    assert Shard(0, 2).take(list(range(7))) == [0, 2, 4, 6]
    assert Shard(1, 2).take(list(range(7))) == [1, 3, 5]
    env = {"RANK": "1", "WORLD_SIZE": "3", "LOCAL_RANK": "1"}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        assert detect_shard() == Shard(1, 3, 1)
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    assert detect_shard() == Shard()


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not built in")
def test_two_process_run_merges_to_the_single_process_result(lm, model_dir, tmp_path):
    """``torchrun``-style environment, two CPU processes on gloo: the same records as one process."""
    model, tok = lm
    settings = BenchSettings(tasks=("kv",), lengths=(400,), depths=(0.0, 0.5, 1.0), configs=(AGGRESSIVE,),
                             max_new_tokens=2, batch_size=2, n_boot=200)
    single = run_bench(model, tok, settings, tmp_path / "single", model_name=str(model_dir), progress=False,
                       write_report=False)
    out = tmp_path / "dp"
    script = "import sys; from attn_transition.cli import main; sys.exit(main(sys.argv[1:]))"
    args = ["bench", "--model", str(model_dir), "--tasks", "kv", "--lengths", "400", "--depths", "0,50,100",
            "--config", AGGRESSIVE, "--max-new-tokens", "2", "--batch-size", "2", "--n-boot", "200",
            "--output-dir", str(out), "--no-progress"]
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs = []
    for rank in range(2):
        env = {**os.environ, "RANK": str(rank), "WORLD_SIZE": "2", "LOCAL_RANK": str(rank),
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "OMP_NUM_THREADS": "1"}
        procs.append(subprocess.Popen([sys.executable, "-c", script, *args], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    try:
        outs = [p.communicate(timeout=240) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert [p.returncode for p in procs] == [0, 0], outs
    assert sorted(p.name for p in out.glob("records*.jsonl")) == ["records.rank0-of-2.jsonl",
                                                                  "records.rank1-of-2.jsonl"]
    ranks = {r["item"]: r["rank"] for r in store.read_log(out / "records.rank1-of-2.jsonl")[1]}
    assert set(ranks) == {single["items"][1]["item_id"]} and set(ranks.values()) == {1}
    merged = json.loads((out / "results.json").read_text())
    assert merged["meta"]["world_size"] == 2 and merged["meta"]["complete"]
    assert [(r["item"], r["config"], r["output"]) for r in merged["records"]] == [
        (r["item"], r["config"], r["output"]) for r in single["records"]]


# ------------------------------------------------------------------ CLI
def _cli(capsys, *args):
    code = main(["bench", *map(str, args)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


SMALL = ["--tasks", "kv", "--lengths", "400", "--depths", "0,100", "--max-new-tokens", "2", "--n-boot", "200",
         "--no-progress"]


def test_cli_runs_on_a_model_folder(capsys, model_dir, tmp_path):
    code, out, err = _cli(capsys, "--model", model_dir, *SMALL, "--config", AGGRESSIVE, "--oracle",
                          "--output-dir", tmp_path / "run")
    assert code == 0, err
    assert "accuracy (all items)" in out and "ORACLE UPPER BOUND" in out
    res = json.loads((tmp_path / "run" / "results.json").read_text())
    assert res["meta"]["load_seconds"] >= 0 and "oracle" in res["summary"]
    assert "ORACLE UPPER BOUND" in (tmp_path / "run" / "summary.md").read_text()


@pytest.mark.parametrize("args, message", [
    (["--config", "classic:alpah=1"], "has no field 'alpah' (did you mean 'alpha'?)"),
    (["--config", "classic:alpha=-1"], "ClassicConfig.alpha must be"),
    (["--config", "classic:alpha="], "--config 'classic:alpha=': ClassicConfig.alpha must be a number, got ''"),
    (["--config", "clasic"], "did you mean 'classic'?"),
    (["--tasks", "fact,kvv"], "unknown task 'kvv' (did you mean 'kv'?)"),
    (["--lengths", "512,abc"], "--lengths takes a comma list of integers"),
    (["--depths", "0,150"], "--depths must be percentages in [0, 100]"),
    (["--per-cell", "0"], "--per-cell must be an int >= 1"),
    (["--model", "/nonexistent/model-folder"], "does not exist"),
])
def test_cli_bad_input_is_one_line_and_exit_2(capsys, tmp_path, args, message):
    code, out, err = _cli(capsys, *args, "--output-dir", tmp_path / "x", "--no-progress")
    assert code == 2
    assert err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "x").exists() or not any((tmp_path / "x").iterdir())


def test_cli_length_beyond_the_model_context(capsys, model_dir, tmp_path):
    code, _, err = _cli(capsys, "--model", model_dir, *SMALL, "--lengths", "400,4000",
                        "--output-dir", tmp_path / "x")
    assert code == 2 and err.count("\n") == 1, err
    assert "exceed the model's context of 2048 tokens" in err and "4000" in err


def test_cli_resume_with_a_corrupted_log_changes_nothing(capsys, model_dir, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    log = run / "records.jsonl"
    log.write_text('{"type": "header", "format": "attn-transition-bench-log/1", "identity": {}}\n'
                   '{"type": "record", "item": "kv-L400-d000-0", "config": "stock", "output": "1", "correct": false}\n'
                   '{"type": "record", "item": "kv-L400-d000-1"}\n', encoding="utf-8")
    before = log.read_bytes()
    code, _, err = _cli(capsys, "--model", model_dir, *SMALL, "--output-dir", run, "--resume")
    assert code == 2 and err.count("\n") == 1
    assert "line 3 lacks config, output, correct" in err and "fix or delete that line" in err
    assert log.read_bytes() == before and sorted(p.name for p in run.iterdir()) == ["records.jsonl"]
    # --resume on a folder without any log, and a new run into a folder that has one.
    code, _, err = _cli(capsys, "--model", model_dir, *SMALL, "--output-dir", tmp_path / "empty", "--resume")
    assert code == 2 and "holds no records" in err
    code, _, err = _cli(capsys, "--model", model_dir, *SMALL, "--output-dir", run)
    assert code == 2 and "add --resume" in err and log.read_bytes() == before



@pytest.mark.parametrize("name", HELD)
def test_cli_refuses_a_folder_with_results_naming_resume_and_keeps_them(capsys, model_dir, tmp_path, name):
    before = hold(tmp_path / "run", name)
    code, _, err = _cli(capsys, "--model", model_dir, *SMALL, "--output-dir", tmp_path / "run")
    assert code == 2 and err.count("\n") == 1, err
    assert f"already holds results; add --resume to continue them or choose another --output-dir (it has {name})" \
        in err
    assert contents(tmp_path / "run") == before

def test_lengths_below_the_schedule_thresholds_are_reported(lm):
    model, _ = lm
    # ClassicConfig's default min_length is 400: a 300-token prompt is never edited.
    assert not edits_anything(at.ClassicConfig(), 4, 300)
    assert edits_anything(at.ClassicConfig(), 4, 500)
    assert edits_anything(at.SRAConfig(), 4, 400)

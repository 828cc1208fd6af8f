"""``attn-transition generate`` and ``demo`` end to end with a tiny random Llama and a tiny
word-level tokenizer built here (no downloads), through ``attn_transition.cli.main``."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

import attn_transition as at
from attn_transition.cli import main
from attn_transition.config import ClassicConfig, SRAConfig
from attn_transition.evaluation.seedformat import read_records, write_json_atomic, write_records
from attn_transition.evaluation.runtime.dist import Shard
from attn_transition.evaluation.xsum import cli, runner
from attn_transition.evaluation.xsum.data import SAMPLE_PATH, load_documents
from attn_transition.evaluation.xsum.store import META_FORMAT, existing_shards, meta_path, shard_path
from attn_transition.evaluation.xsum.templates import PROMPTS_DIR, load_template

FIXTURE = Path(__file__).parent / "fixtures" / "xsum_sample.jsonl"
FIXTURE_IDS = ["syn-0101", "syn-0001", "syn-0102", "syn-0103", "syn-0002", "syn-0104", "syn-0003", "syn-0105"]
# The fixture's short documents are ~60-140 tokens: lower min_length so they are edited too;
# strong settings so the tiny model's greedy text visibly changes.
CLASSIC = "classic:alpha=1.5,beta=1.5,min_length=20"
SRA = "sra:begin_length=5,threshold_len=20"
CLASSIC_CFG = ClassicConfig(alpha=1.5, beta=1.5, min_length=20)
SRA_CFG = SRAConfig(begin_length=5, threshold_len=20)
CLASSIC_KEY = "decode_al_15_be_15_lay_2_min20"
SRA_KEY = "decode_sra_beg_5_thr_20"
CHAT_TEMPLATE = ("{% for m in messages %}{{ m['role'] }} : {{ m['content'] }} . {% endfor %}"
                 "{% if add_generation_prompt %}assistant :{% endif %}")


def _words(text: str) -> set[str]:
    return set(re.findall(r"\w+|[^\w\s]+", text))


def _build(folder: Path, chat: bool) -> Path:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import AutoModelForCausalLM, LlamaConfig, PreTrainedTokenizerFast

    words: set[str] = _words("system user assistant : .")
    for path in (FIXTURE, SAMPLE_PATH):
        for line in path.read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            words |= _words(row["document"] + " " + row["summary"])
    for path in PROMPTS_DIR.glob("summarize_*.json"):
        words |= _words(path.read_text(encoding="utf-8"))
    specials = ["[PAD]", "[UNK]", "<s>", "</s>"]
    vocab = {w: i for i, w in enumerate(specials + sorted(words - set(specials)))}
    core = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, pad_token="[PAD]", unk_token="[UNK]",
                                        bos_token="<s>", eos_token="</s>")
    if chat:
        tokenizer.chat_template = CHAT_TEMPLATE
    config = LlamaConfig(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=6,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                         pad_token_id=0, bos_token_id=2, eos_token_id=3)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config)
    with torch.no_grad():                      # sharpen attention so the schedules remove and move mass
        for name, p in model.named_parameters():
            if name.endswith(("q_proj.weight", "k_proj.weight")):
                p.mul_(6.0)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> str:
    return str(_build(tmp_path_factory.mktemp("tiny-base"), chat=False))


@pytest.fixture(scope="module")
def tiny_chat_dir(tmp_path_factory) -> str:
    return str(_build(tmp_path_factory.mktemp("tiny-chat"), chat=True))


def run_generate(*extra: str, data: str | None = str(FIXTURE)) -> int:
    argv = ["generate"] + ([data] if data else []) + ["--no-progress", "--max-new-tokens", "2"] + list(extra)
    return main(argv)


def load(folder: str):
    from attn_transition.evaluation.models import load_model

    return load_model(folder)


def direct(model, tokenizer, prompt: str, config=None, max_new_tokens: int = 2) -> str:
    """One prompt alone (no padding), stock or inside ``enabled``: the reference for the pipeline."""
    enc = tokenizer([prompt], return_tensors="pt", add_special_tokens=True)
    kwargs = dict(max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    with torch.inference_mode():
        if config is None:
            out = model.generate(**enc, **kwargs)
        else:
            with at.enabled(model, config):
                out = model.generate(**enc, **kwargs)
    return tokenizer.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)


# --------------------------------------------------------------------------- the happy path

BASE_ARGS = ("--config", CLASSIC, "--config", SRA, "--limit", "4")


@pytest.fixture(scope="module")
def base_run(tiny_dir, tmp_path_factory) -> Path:
    """Four fixture documents (one long), plain + two configs, one document per batch."""
    out = tmp_path_factory.mktemp("base-run") / "out.json"
    assert run_generate("-o", str(out), "--model", tiny_dir, *BASE_ARGS, "--batch-size", "1") == 0
    return out


def copy_run(src: Path, dst_dir: Path) -> Path:
    dst = dst_dir / src.name
    dst.write_bytes(src.read_bytes())
    meta_path(dst).write_bytes(meta_path(src).read_bytes())
    return dst


def test_generate_writes_the_seed_format(base_run):
    records = read_records(base_run)
    assert [r["id"] for r in records] == FIXTURE_IDS[:4]
    for rec in records:
        assert list(rec) == ["document", "summary", "id", "decode_or", CLASSIC_KEY, SRA_KEY]
        assert all(isinstance(rec[k], str) and rec[k] for k in ("decode_or", CLASSIC_KEY, SRA_KEY))
    # The transition changes the greedy text of some document (else the next test proves little).
    assert any(r[CLASSIC_KEY] != r["decode_or"] for r in records)
    assert any(r[SRA_KEY] != r["decode_or"] for r in records)


def test_outputs_are_those_of_the_stock_and_the_enabled_model(tiny_dir, base_run):
    model, tokenizer = load(tiny_dir)
    template = load_template("auto", tokenizer)
    assert template.name == "summarize_base"            # this tokenizer has no chat template
    for rec in read_records(base_run)[1::2]:            # the long document and a short one
        prompt = template.render(rec["document"], tokenizer)
        assert rec["decode_or"] == direct(model, tokenizer, prompt)
        assert rec[CLASSIC_KEY] == direct(model, tokenizer, prompt, CLASSIC_CFG)
        assert rec[SRA_KEY] == direct(model, tokenizer, prompt, SRA_CFG)
    assert not at.is_enabled(model)


def test_metadata_sidecar(tiny_dir, base_run):
    meta = json.loads(meta_path(base_run).read_text(encoding="utf-8"))
    assert meta["format"] == META_FORMAT and meta["output"] == "out.json"
    assert meta["model"]["name"] == tiny_dir and meta["model"]["num_layers"] == 6
    assert meta["model"]["model_type"] == "llama" and meta["model"]["dtype"] == "float32"
    assert meta["prompt_template"]["name"] == "summarize_base" and meta["prompt_template"]["version"] == 1
    assert meta["prompt_template"]["text"] == {"template": "{document} Please summarize context above:"}
    assert meta["data"]["source"] == str(FIXTURE)
    assert meta["data"]["split"] is None                  # a local file has no split (--split is the hub's)
    assert meta["grid"]["keys"] == ["decode_or", CLASSIC_KEY, SRA_KEY]
    assert meta["grid"]["configs"][CLASSIC_KEY] == {"schedule": "classic", "alpha": 1.5, "beta": 1.5,
                                                    "intervals_per_layer": 2, "strategy": "adding",
                                                    "min_length": 20}
    assert meta["grid"]["configs"][SRA_KEY]["begin_length"] == 5
    assert meta["generation"] == {"max_new_tokens": 2, "do_sample": False, "num_beams": 1, "batch_size": 1,
                                  "padding_side": "left", "add_special_tokens": True}
    assert meta["versions"]["transformers"] and meta["versions"]["torch"]
    assert meta["versions"]["attn-transition"] == at.__version__
    assert set(meta["timings"]) == {"decode_or", CLASSIC_KEY, SRA_KEY}
    assert all(t["documents"] == 4 and t["seconds"] >= 0 for t in meta["timings"].values())
    _, tokenizer = load(tiny_dir)
    lengths = [len(tokenizer(d["document"] + " Please summarize context above:")["input_ids"])
               for d in load_documents(FIXTURE)[:4]]
    assert meta["documents"] == [{"id": i, "bucket": None, "prompt_tokens": n}
                                 for i, n in zip(FIXTURE_IDS[:4], lengths)]
    assert max(lengths) > 300 and min(lengths) < 100
    assert meta["runs"][-1]["finished"] is True and meta["seed"] == 0 and meta["runs"][-1]["world_size"] == 1


def test_chat_template_is_chosen_for_a_chat_tokenizer(tiny_chat_dir, tmp_path):
    out = tmp_path / "chat.json"
    assert run_generate("-o", str(out), "--model", tiny_chat_dir, "--grid", "none", "--no-plain",
                        "--config", CLASSIC, "--limit", "2") == 0
    meta = json.loads(meta_path(out).read_text(encoding="utf-8"))
    assert meta["prompt_template"]["name"] == "summarize_chat"
    assert meta["generation"]["add_special_tokens"] is False
    _, tokenizer = load(tiny_chat_dir)
    doc = read_records(out)[0]["document"]
    prompt = tokenizer.apply_chat_template(
        [{"role": "system", "content": meta["prompt_template"]["text"]["system"]},
         {"role": "user", "content": doc + "\n\nPlease summarize the article above in one sentence."}],
        tokenize=False, add_generation_prompt=True)
    assert prompt.startswith("system : You are a news editor.")
    assert meta["documents"][0]["prompt_tokens"] == len(tokenizer(prompt, add_special_tokens=False)["input_ids"])


def test_bucket_selection(tiny_dir, tmp_path):
    _, tokenizer = load(tiny_dir)
    template = load_template("base")
    docs = load_documents(FIXTURE)
    lengths = {d["id"]: len(tokenizer(template.render(d["document"]))["input_ids"]) for d in docs}
    short = sorted(n for n in lengths.values() if n < 200)
    bucket = short[len(short) // 2]                    # around the middle short document
    expected = [i for i in FIXTURE_IDS if abs(lengths[i] - bucket) <= 0.25 * bucket][:2]
    assert expected
    out = tmp_path / "b.json"
    assert run_generate("-o", str(out), "--model", tiny_dir, "--grid", "none", "--no-plain", "--config", CLASSIC,
                        "--buckets", f"{bucket},5000", "--per-bucket", "2", "--bucket-tolerance", "0.25") == 0
    records = read_records(out)
    assert [r["id"] for r in records] == expected
    meta = json.loads(meta_path(out).read_text(encoding="utf-8"))
    assert meta["selection"]["counts"] == {str(bucket): len(expected), "5000": 0}
    assert [d["bucket"] for d in meta["documents"]] == [bucket] * len(expected)
    assert [d["prompt_tokens"] for d in meta["documents"]] == [lengths[i] for i in expected]
    assert list(records[0]) == ["document", "summary", "id", CLASSIC_KEY]


# --------------------------------------------------------------------------- resume

def test_resume_fills_only_missing_outputs(tiny_dir, base_run, tmp_path):
    out = copy_run(base_run, tmp_path)
    first = read_records(out)
    edited = json.loads(out.read_text(encoding="utf-8"))
    edited[0]["decode_or"] = "KEEP ME"                 # an entry resume must not touch
    del edited[1][CLASSIC_KEY]                          # entries resume must fill
    del edited[3]["decode_or"]
    out.write_text(json.dumps(edited), encoding="utf-8")
    # --limit 5 also appends the fifth document after the first four.
    assert run_generate("-o", str(out), "--model", tiny_dir, "--config", CLASSIC, "--config", SRA,
                        "--limit", "5", "--resume") == 0
    records = read_records(out)
    assert [r["id"] for r in records] == FIXTURE_IDS[:5]
    assert records[0]["decode_or"] == "KEEP ME"
    assert records[1][CLASSIC_KEY] == first[1][CLASSIC_KEY] and records[3]["decode_or"] == first[3]["decode_or"]
    assert records[1:4] == first[1:4]                  # dict equality: the same values, key order aside
    assert all(k in records[4] for k in ("decode_or", CLASSIC_KEY, SRA_KEY))
    meta = json.loads(meta_path(out).read_text(encoding="utf-8"))
    generated = {k: v["documents"] for k, v in meta["runs"][-1]["generated"].items()}
    assert generated == {"decode_or": 2, CLASSIC_KEY: 2, SRA_KEY: 1}
    assert meta["timings"]["decode_or"]["documents"] == 6 and len(meta["runs"]) == 2
    assert len(meta["documents"]) == 5


def test_resume_a_file_written_by_the_seeds_code(tiny_dir, tmp_path):
    docs = load_documents(FIXTURE)[:2]
    seed_records = [{"document": d["document"], "summary": d["summary"], "id": d["id"],
                     "decode_al_05_be_01_lay_2": f"seed text {i}", "decode_or": f"seed plain {i}",
                     "gpt4_eva": "'decode_or': '45'", "eval_scores": [45, 80]} for i, d in enumerate(docs)]
    out = tmp_path / "token_1200_evaluation.json"
    out.write_text(json.dumps(seed_records, indent=1), encoding="utf-8")
    original = out.read_bytes()
    # Nothing missing: the file keeps its bytes; only the sidecar is written.
    assert run_generate("-o", str(out), "--model", tiny_dir, "--resume", "--no-plain", data=None) == 0
    assert out.read_bytes() == original and meta_path(out).exists()
    meta_path(out).unlink()
    # No data argument: the documents are those of the file itself.
    assert run_generate("-o", str(out), "--model", tiny_dir, "--resume",
                        "--grid", "alpha=0.5;beta=0.1;intervals_per_layer=2,3", data=None) == 0
    records = read_records(out)
    for i, rec in enumerate(records):
        assert list(rec) == ["document", "summary", "id", "decode_al_05_be_01_lay_2", "decode_or", "gpt4_eva",
                             "eval_scores", "decode_al_05_be_01_lay_3"]
        assert rec["decode_al_05_be_01_lay_2"] == f"seed text {i}" and rec["decode_or"] == f"seed plain {i}"
        assert rec["eval_scores"] == [45, 80] and rec["decode_al_05_be_01_lay_3"]
    meta = json.loads(meta_path(out).read_text(encoding="utf-8"))
    assert {k: v["documents"] for k, v in meta["runs"][-1]["generated"].items()} == {"decode_al_05_be_01_lay_3": 2}


def test_ctrl_c_keeps_finished_batches(tiny_dir, tmp_path, monkeypatch, capsys):
    calls = {"n": 0}
    real = runner.generate_batch

    def interrupted(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(runner, "generate_batch", interrupted)
    out = tmp_path / "i.json"
    args = ("-o", str(out), "--model", tiny_dir, "--grid", "none", "--config", CLASSIC, "--limit", "2",
            "--batch-size", "1")
    assert run_generate(*args) == 130
    assert "finished work was saved" in capsys.readouterr().err
    records = read_records(out)
    # The first batch (the longest prompt comes first: syn-0001) was saved before the interrupt.
    assert [("decode_or" in r, CLASSIC_KEY in r) for r in records] == [(False, False), (True, False)]
    monkeypatch.setattr(runner, "generate_batch", real)
    assert run_generate(*args, "--resume") == 0
    assert all("decode_or" in r and CLASSIC_KEY in r for r in read_records(out))


def test_ctrl_c_in_the_first_batch_says_that_nothing_was_generated(tiny_dir, tmp_path, monkeypatch, capsys):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(runner, "generate_batch", interrupted)
    out = tmp_path / "i.json"
    assert run_generate("-o", str(out), "--model", tiny_dir, "--config", CLASSIC, "--limit", "2") == 130
    err = capsys.readouterr().err
    assert "finished work was saved" not in err
    assert f"no output was generated; {out} lists the 2 selected documents without outputs" in err
    assert [key for r in read_records(out) for key in r if key.startswith("decode_")] == []


def test_resume_takes_the_settings_it_is_not_given_from_the_metadata(tiny_dir, tmp_path, capsys):
    """A resume without --model, --max-new-tokens, --template and configs repeats the run it
    continues (the defaults would be smollm2-135m, 50 tokens, auto, classic), so it needs no flags."""
    out = tmp_path / "o.json"
    first = ["generate", str(FIXTURE), "--no-progress", "-o", str(out), "--model", tiny_dir, "--max-new-tokens", "3",
             "--template", "base", "--config", CLASSIC, "--no-plain"]
    assert main(first + ["--limit", "1"]) == 0
    capsys.readouterr()
    assert main(["generate", str(FIXTURE), "--no-progress", "-o", str(out), "--limit", "2", "--resume"]) == 0
    err = capsys.readouterr().err
    assert "resuming with the settings of o.json.meta.json: --model" in err and "--max-new-tokens 3" in err
    records, meta = read_records(out), json.loads(meta_path(out).read_text(encoding="utf-8"))
    assert [sorted(k for k in r if k.startswith("decode_")) for r in records] == [[CLASSIC_KEY], [CLASSIC_KEY]]
    assert meta["model"]["name"] == tiny_dir and meta["generation"]["max_new_tokens"] == 3
    assert meta["prompt_template"]["name"] == "summarize_base" and meta["grid"]["keys"] == [CLASSIC_KEY]
    reference = tmp_path / "reference.json"            # the same two documents in one uninterrupted run
    assert main([*first[:4], str(reference), *first[5:], "--limit", "2"]) == 0
    assert read_records(reference) == records
    capsys.readouterr()
    # an explicit flag that contradicts the file is still refused in one line
    assert main(["generate", str(FIXTURE), "--no-progress", "-o", str(out), "--resume", "--max-new-tokens", "4"]) == 2
    assert "--max-new-tokens 3" in _error(capsys)


def test_the_packaged_sample_by_name(tiny_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)                        # not the checkout: the name, not a path, finds it
    assert run_generate("-o", "s.json", "--model", tiny_dir, "--limit", "1", data="sample") == 0
    first = json.loads(SAMPLE_PATH.read_text(encoding="utf-8").splitlines()[0])
    assert [r["id"] for r in read_records(tmp_path / "s.json")] == [str(first["id"])]
    assert json.loads(meta_path(tmp_path / "s.json").read_text(encoding="utf-8"))["data"]["source"] == "sample"
    capsys.readouterr()
    assert run_generate("-o", "t.json", "--model", tiny_dir, data="evaluation/data/xsum_sample.jsonl") == 2
    assert "sample (the packaged sample of news articles)" in _error(capsys)


# --------------------------------------------------------------------------- ranks (accelerate)

def _run_ranks(world: int, argv: list[str], monkeypatch) -> list[object]:
    """Run ``world`` ranks of one launch side by side (threads) with a real barrier between them."""
    import threading

    barrier = threading.Barrier(world, timeout=300)
    local = threading.local()
    monkeypatch.setattr(cli, "detect_shard", lambda: Shard(rank=local.rank, world=world))
    monkeypatch.setattr(cli, "barrier", lambda shard: barrier.wait())
    monkeypatch.setattr(cli, "close", lambda shard: barrier.wait())
    results: list[object] = [None] * world

    def one(rank: int) -> None:
        local.rank = rank
        try:
            results[rank] = run_generate(*argv)
        except BaseException as exc:          # surfaced by the assertion below
            results[rank] = exc
            barrier.abort()

    threads = [threading.Thread(target=one, args=(rank,)) for rank in range(world)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def test_two_ranks_write_shards_and_rank_0_merges_in_input_order(tiny_dir, base_run, tmp_path, monkeypatch):
    """Also checks left padding: each rank batches a ~400-token prompt with a ~100-token one, and
    the merged file must equal the one-document-per-batch run."""
    out = tmp_path / "sharded.json"
    assert _run_ranks(2, ["-o", str(out), "--model", tiny_dir, *BASE_ARGS], monkeypatch) == [0, 0]
    assert read_records(out) == read_records(base_run)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sharded.json", "sharded.json.meta.json"]
    meta = json.loads(meta_path(out).read_text(encoding="utf-8"))
    assert meta["runs"][-1]["world_size"] == 2 and len(meta["documents"]) == 4
    assert {k: t["documents"] for k, t in meta["timings"].items()} == {"decode_or": 4, CLASSIC_KEY: 4, SRA_KEY: 4}


def _leave_shard(out: Path, base_run: Path, model_name: str) -> Path:
    """What an interrupted 2-rank run leaves: rank 1's finished shard and its sidecar, no output."""
    base = read_records(base_run)
    shard = shard_path(out, 1)
    write_records(shard, [base[1], base[3]])
    meta = json.loads(meta_path(base_run).read_text(encoding="utf-8"))
    write_json_atomic(meta_path(shard), {"rank": 1, "world_size": 2, "timings": {},
                                         "model": {"name": model_name},
                                         "prompt_template": meta["prompt_template"],
                                         "generation": meta["generation"]})
    return shard


def test_leftover_shards_need_resume_or_overwrite(tiny_dir, base_run, tmp_path, capsys):
    out = tmp_path / "out.json"
    shard = _leave_shard(out, base_run, tiny_dir)
    before = shard.read_bytes()
    assert run_generate("-o", str(out), "--model", tiny_dir, *BASE_ARGS) == 2
    err = _error(capsys)
    assert "out.json.rank1.json" in err and "--resume" in err and "--overwrite" in err
    assert shard.read_bytes() == before and not out.exists()
    # --resume keeps rank 1's outputs (nothing regenerated for them) and removes the shard after merging
    calls = []
    real = runner.generate_batch

    def counting(model, tokenizer, prompts, **kw):
        calls.append(len(prompts))
        return real(model, tokenizer, prompts, **kw)

    import pytest as _pytest

    with _pytest.MonkeyPatch.context() as mp:
        mp.setattr(runner, "generate_batch", counting)
        assert run_generate("-o", str(out), "--model", tiny_dir, *BASE_ARGS, "--resume") == 0
    assert read_records(out) == read_records(base_run)
    assert sum(calls) == 2 * 3                # documents 0 and 2, three outputs each
    assert existing_shards(out) == []


def test_overwrite_drops_leftover_shards(tiny_dir, base_run, tmp_path):
    out = tmp_path / "out.json"
    shard = _leave_shard(out, base_run, "some-other-model")
    assert run_generate("-o", str(out), "--model", tiny_dir, *BASE_ARGS, "--overwrite") == 0
    assert not shard.exists() and not meta_path(shard).exists()
    assert read_records(out) == read_records(base_run)


def test_resume_refuses_a_shard_of_another_model(tiny_dir, base_run, tmp_path, capsys):
    out = tmp_path / "out.json"
    shard = _leave_shard(out, base_run, "some-other-model")
    before = shard.read_bytes()
    assert run_generate("-o", str(out), "--model", tiny_dir, *BASE_ARGS, "--resume") == 2
    assert "some-other-model" in _error(capsys)
    assert shard.read_bytes() == before and not out.exists()


# --------------------------------------------------------------------------- bad input: exit 2, nothing lost

def _error(capsys) -> str:
    """The one error line (transformers' own weight-loading bar may precede it)."""
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    ours = [line for line in lines if line.startswith("attn-transition generate:")]
    assert len(ours) == 1 and lines[-1] == ours[0], lines
    assert ours[0].startswith("attn-transition generate: error: ")
    return ours[0]


def test_missing_field_in_data_file(tiny_dir, tmp_path, capsys):
    rows = [json.loads(line) for line in FIXTURE.read_text(encoding="utf-8").splitlines()[:3]]
    del rows[1]["document"]
    data = tmp_path / "bad.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    out = tmp_path / "o.json"
    assert run_generate("-o", str(out), "--model", tiny_dir, data=str(data)) == 2
    err = _error(capsys)
    assert "record 1 (line 2)" in err and "'document'" in err and "syn-0001" in err
    assert not out.exists()


def test_empty_bucket_selection(tiny_dir, tmp_path, capsys):
    out = tmp_path / "o.json"
    assert run_generate("-o", str(out), "--model", tiny_dir, "--buckets", "5000,9000") == 2
    err = _error(capsys)
    assert re.search(r"8 prompts scanned are \d+\.\.\d+ tokens long", err) and "--bucket-tolerance" in err
    assert not out.exists()


def test_bad_grid_value(tmp_path, capsys):
    assert run_generate("-o", str(tmp_path / "o.json"), "--grid", "alpha=0.5,-1;beta=0.1") == 2
    assert "ClassicConfig.alpha must be a number in (0, inf), got -1.0" in _error(capsys)
    assert run_generate("-o", str(tmp_path / "o.json"), "--config", "classic:bata=1") == 2
    assert "did you mean 'beta'" in _error(capsys)


def test_config_errors_name_the_flag(tmp_path, capsys):
    assert run_generate("-o", str(tmp_path / "o.json"), "--config", "classic:alpha=") == 2
    assert "--config 'classic:alpha=': ClassicConfig.alpha must be a number, got ''" in _error(capsys)
    assert run_generate("-o", str(tmp_path / "o.json"), "--grid", "alpha=0.5,-1") == 2
    assert _error(capsys).startswith("attn-transition generate: error: --grid 'alpha=0.5,-1': ")
    assert not (tmp_path / "o.json").exists()


def test_existing_output_needs_resume_or_overwrite(tiny_dir, tmp_path, capsys):
    out = tmp_path / "o.json"
    out.write_text("[precious, unparsed]", encoding="utf-8")
    assert run_generate("-o", str(out), "--model", tiny_dir) == 2
    assert "--resume" in _error(capsys) and out.read_text(encoding="utf-8") == "[precious, unparsed]"
    assert run_generate("-o", str(out), "--model", tiny_dir, "--resume", "--overwrite") == 2
    assert "exclude each other" in _error(capsys)
    assert run_generate("-o", str(out), "--model", tiny_dir, "--resume") == 2
    assert "not valid JSON" in _error(capsys) and out.read_text(encoding="utf-8") == "[precious, unparsed]"


def test_resume_refuses_other_settings(tiny_dir, tmp_path, capsys):
    out = tmp_path / "o.json"
    assert run_generate("-o", str(out), "--model", tiny_dir, "--limit", "1") == 0
    capsys.readouterr()
    before = out.read_text(encoding="utf-8")
    assert run_generate("-o", str(out), "--model", tiny_dir, "--limit", "1", "--resume",
                        "--max-new-tokens", "4") == 2
    assert "--max-new-tokens 2" in _error(capsys)
    other = tmp_path / "tldr.json"
    other.write_text(json.dumps({"name": "tldr", "version": 1, "kind": "base", "template": "{document} TL;DR:"}),
                     encoding="utf-8")
    assert run_generate("-o", str(out), "--model", tiny_dir, "--limit", "1", "--resume", "--template",
                        str(other)) == 2
    assert "prompt template 'summarize_base' v1" in _error(capsys)
    assert run_generate("-o", str(out), "--model", tiny_dir, "--limit", "1", "--resume", "--template", "chat") == 2
    assert "no chat template" in _error(capsys)
    assert out.read_text(encoding="utf-8") == before


def test_template_and_hub_errors(tiny_dir, tmp_path, capsys):
    assert run_generate("-o", str(tmp_path / "o.json"), "--model", tiny_dir, "--template", "bsae") == 2
    assert "did you mean 'base'" in _error(capsys)
    assert run_generate("-o", str(tmp_path / "o.json"), data=str(tmp_path / "none.jsonl")) == 2
    assert "does not exist" in _error(capsys)


# --------------------------------------------------------------------------- demo

def test_demo_answers_with_and_without(tiny_dir, capsys):
    from attn_transition.evaluation import demo

    model, tokenizer = load(tiny_dir)
    template = load_template("auto", tokenizer)
    prompt = template.render(load_documents(SAMPLE_PATH)[0]["document"], tokenizer)
    cfg = CLASSIC_CFG
    result = demo.answer_both(model, tokenizer, prompt, cfg, add_special_tokens=True, max_new_tokens=2)
    assert result.transition == direct(model, tokenizer, prompt, cfg)   # plain: see generate's tests
    assert not at.is_enabled(model)

    assert main(["demo", "--model", tiny_dir, "--config", CLASSIC, "--max-new-tokens", "2", "--width", "40"]) == 0
    text = capsys.readouterr().out
    assert "without transition" in text and "with transition" in text
    assert result.plain.split()[0] in text and result.transition.split()[0] in text
    assert demo.verdict(result) in text
    assert ("The answers differ" in text) == (result.plain != result.transition)
    long_short = demo.answer_both(model, tokenizer, "a b c", ClassicConfig(), add_special_tokens=True,
                                  max_new_tokens=2)
    assert long_short.below_min_length and "fewer than min_length=400" in demo.verdict(long_short)
    assert not long_short.edits
    # Another schedule with nothing to edit on this prompt: SRA's spans need more rows than "a b c" has.
    empty = demo.answer_both(model, tokenizer, "a b c", SRAConfig(), add_special_tokens=True, max_new_tokens=2)
    assert not empty.edits and not empty.below_min_length
    assert "edits no row of this" in demo.verdict(empty) and "sra" in demo.verdict(empty)
    assert result.edits and "edits no row" not in demo.verdict(result)

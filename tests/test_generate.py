"""Pure parts of ``attn-transition generate``: data files, prompt templates, bucketing,
grids, config keys, shard merging. No model is loaded here."""

from __future__ import annotations

import csv
import json
import sys
import types
from pathlib import Path

import pytest

from attn_transition.config import ClassicConfig, SRAConfig
from attn_transition.errors import ConfigError, UsageError
from attn_transition.evaluation.seedformat import config_key
from attn_transition.evaluation.xsum import collect_configs, parse_grid, seed_grid
from attn_transition.evaluation.xsum.data import SAMPLE_PATH, load_documents
from attn_transition.evaluation.xsum.selection import (bucket_of, empty_selection_message, select_by_buckets,
                                                       select_first)
from attn_transition.evaluation.xsum.store import (combine_timings, existing_shards, merge_outputs, meta_path,
                                                   shard_indices, shard_path)
from attn_transition.evaluation.xsum.templates import load_template

FIXTURE = Path(__file__).parent / "fixtures" / "xsum_sample.jsonl"
FIXTURE_IDS = ["syn-0101", "syn-0001", "syn-0102", "syn-0103", "syn-0002", "syn-0104", "syn-0003", "syn-0105"]

# The 23 generation keys of the seed's published token_1200 file (decode_or aside).
SEED_FILE_KEYS = [
    "decode_al_05_be_01_lay_2", "decode_al_1_be_01_lay_2", "decode_al_15_be_01_lay_2", "decode_al_05_be_01_lay_3",
    "decode_al_1_be_01_lay_3", "decode_al_05_be_08_lay_1", "decode_al_05_be_1_lay_1", "decode_al_1_be_05_lay_1",
    "decode_al_1_be_08_lay_1", "decode_al_15_be_05_lay_1", "decode_al_05_be_05_lay_2", "decode_al_05_be_08_lay_2",
    "decode_al_05_be_1_lay_2", "decode_al_1_be_05_lay_2", "decode_al_1_be_08_lay_2", "decode_al_15_be_05_lay_2",
    "decode_al_05_be_05_lay_3", "decode_al_05_be_08_lay_3", "decode_al_1_be_03_lay_3", "decode_al_1_be_1_lay_2",
    "decode_al_05_be_12_lay_2", "decode_al_05_be_15_lay_2", "decode_al_15_be_03_lay_3", "decode_al_15_be_08_lay_2",
]


def fixture_rows() -> list[dict]:
    return [json.loads(line) for line in FIXTURE.read_text(encoding="utf-8").splitlines() if line.strip()]


# --------------------------------------------------------------------------- data files

def test_fixture_and_packaged_sample_load():
    docs = load_documents(FIXTURE)
    assert [d["id"] for d in docs] == FIXTURE_IDS
    assert all(list(d) == ["document", "summary", "id"] for d in docs)
    sample = load_documents(SAMPLE_PATH)
    assert len(sample) >= 3 and all(d["document"] and d["summary"] for d in sample)


def test_json_and_csv_give_the_same_documents(tmp_path):
    rows = fixture_rows()
    (tmp_path / "d.json").write_text(json.dumps(rows), encoding="utf-8")
    with (tmp_path / "d.csv").open("w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["id", "summary", "document"])
        writer.writeheader()
        writer.writerows(rows)
    expected = load_documents(FIXTURE)
    assert load_documents(tmp_path / "d.json") == expected
    assert load_documents(tmp_path / "d.csv") == expected


def test_numeric_ids_become_text_and_extra_fields_are_dropped(tmp_path):
    path = tmp_path / "d.json"
    path.write_text(json.dumps([{"document": "a b", "summary": "s", "id": 7, "decode_or": "x"}]), encoding="utf-8")
    assert load_documents(path) == [{"document": "a b", "summary": "s", "id": "7"}]


def test_missing_field_names_record_line_and_field(tmp_path):
    rows = fixture_rows()[:3]
    del rows[2]["summary"]
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    with pytest.raises(UsageError) as err:
        load_documents(path)
    msg = str(err.value)
    assert "record 2 (line 3)" in msg and "'summary'" in msg and rows[2]["id"] in msg


def test_bad_json_line_and_duplicate_ids(tmp_path):
    path = tmp_path / "broken.jsonl"
    path.write_text('{"document": "a", "summary": "b", "id": "1"}\n{"document": \n', encoding="utf-8")
    with pytest.raises(UsageError, match="line 2 is not valid JSON"):
        load_documents(path)
    dup = tmp_path / "dup.jsonl"
    row = {"document": "a", "summary": "b", "id": "same"}
    dup.write_text(json.dumps(row) + "\n" + json.dumps(row) + "\n", encoding="utf-8")
    with pytest.raises(UsageError, match="repeats id 'same'"):
        load_documents(dup)


def test_missing_file_and_unsupported_type(tmp_path):
    with pytest.raises(UsageError, match="does not exist"):
        load_documents(tmp_path / "nope.jsonl")
    other = tmp_path / "d.txt"
    other.write_text("x", encoding="utf-8")
    with pytest.raises(UsageError, match="unsupported file type"):
        load_documents(other)


def test_hub_failure_is_a_usage_error_suggesting_a_local_file(monkeypatch):
    calls = []

    def offline(name, split=None):
        calls.append((name, split))
        raise ConnectionError("Couldn't reach 'EdinburghNLP/xsum' on the Hub (LocalEntryNotFoundError)")

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=offline))
    with pytest.raises(UsageError) as err:
        load_documents("xsum", split="validation")
    assert calls == [("EdinburghNLP/xsum", "validation")]
    assert "local JSON / JSONL / CSV file" in str(err.value) and "Couldn't reach" in str(err.value)


def test_hub_rows_are_checked_like_local_rows(monkeypatch):
    rows = [{"document": "d1", "summary": "s1", "id": "1"}, {"document": "d2", "summary": "s2", "id": "2"}]
    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=lambda name, split: rows))
    assert [d["id"] for d in load_documents("EdinburghNLP/xsum")] == ["1", "2"]


# --------------------------------------------------------------------------- prompt templates

class FakeChatTokenizer:
    chat_template = "{{ messages }}"

    def apply_chat_template(self, messages, tokenize, add_generation_prompt):
        assert tokenize is False and add_generation_prompt is True
        return "".join(f"<{m['role']}>{m['content']}" for m in messages) + "<assistant>"


class FakeBaseTokenizer:
    chat_template = None


def test_base_template_is_the_seeds_prompt():
    template = load_template("base")
    assert (template.name, template.version, template.kind) == ("summarize_base", 1, "base")
    assert template.render("The article.") == "The article. Please summarize context above:"
    assert template.add_special_tokens is True


def test_auto_picks_chat_only_with_a_chat_template():
    assert load_template("auto", FakeBaseTokenizer()).kind == "base"
    chat = load_template("auto", FakeChatTokenizer())
    assert chat.name == "summarize_chat" and chat.add_special_tokens is False
    text = chat.render("DOC", FakeChatTokenizer())
    assert text.startswith("<system>" + chat.system) and "<user>DOC\n\n" in text and text.endswith("<assistant>")
    with pytest.raises(UsageError, match="no chat template"):
        load_template("chat", FakeBaseTokenizer())


def test_template_file(tmp_path):
    path = tmp_path / "t.json"
    path.write_text(json.dumps({"name": "tldr", "version": 3, "kind": "base", "template": "{document}\nTL;DR:"}),
                    encoding="utf-8")
    template = load_template(str(path), FakeBaseTokenizer())
    assert template.render("x {y}") == "x {y}\nTL;DR:"
    assert template.as_dict()["source"] == str(path) and template.as_dict()["version"] == 3
    path.write_text(json.dumps({"name": "t", "version": 1, "kind": "base", "templte": "{document}"}), encoding="utf-8")
    with pytest.raises(UsageError, match="did you mean 'template'"):
        load_template(str(path))
    path.write_text(json.dumps({"name": "t", "version": 1, "kind": "base", "template": "no placeholder"}),
                    encoding="utf-8")
    with pytest.raises(UsageError, match=r"containing \{document\}"):
        load_template(str(path))
    with pytest.raises(UsageError, match="did you mean 'chat'"):
        load_template("chta")
    with pytest.raises(UsageError, match="does not exist"):
        load_template(str(tmp_path / "missing.json"))


# --------------------------------------------------------------------------- selection

def test_bucket_of_picks_the_nearest_window():
    assert bucket_of(790, [800, 1200], 0.1) == 800
    assert bucket_of(1000, [800, 1200], 0.1) is None
    assert bucket_of(110, [100, 120], 0.2) == 100        # tie: the smaller bucket
    assert bucket_of(115, [100, 120], 0.2) == 120
    assert bucket_of(880, [800], 0.1) == 800 and bucket_of(881, [800], 0.1) is None


def test_select_by_buckets_fills_in_order_and_stops_early():
    lengths = [100, 790, 805, 1250, 820, 1190]

    def stream():
        yield from lengths
        raise AssertionError("read past the point where every bucket was full")

    sel = select_by_buckets(stream(), [800, 1200], per_bucket=2, tolerance=0.1)
    assert sel.indices == [1, 2, 3, 5]
    assert sel.buckets == [800, 800, 1200, 1200]
    assert sel.counts == {800: 2, 1200: 2} and sel.scanned == 6 and sel.observed == (100, 1250)


def test_select_by_buckets_short_and_empty():
    sel = select_by_buckets([100, 130, 400], [800], per_bucket=5, tolerance=0.1)
    assert sel.indices == [] and sel.observed == (100, 400)
    msg = empty_selection_message(sel, [800], 0.1)
    assert "100..400" in msg and "--bucket-tolerance" in msg and "--limit" in msg
    with pytest.raises(UsageError, match="--bucket-tolerance"):
        select_by_buckets([1], [800], per_bucket=1, tolerance=1.5)
    with pytest.raises(UsageError, match="--per-bucket"):
        select_by_buckets([1], [800], per_bucket=0, tolerance=0.1)


def test_select_first():
    assert select_first(5, 3).indices == [0, 1, 2]
    assert select_first(2, 3).indices == [0, 1]
    assert select_first(4, None).indices == [0, 1, 2, 3]
    with pytest.raises(UsageError, match="--limit"):
        select_first(4, 0)


# --------------------------------------------------------------------------- grids and keys

def test_seed_grid_matches_the_seeds_key_names():
    grid = seed_grid()
    assert len(grid) == 3 * 7 * 3
    keys = [config_key(c) for c in grid]
    assert len(set(keys)) == len(keys)
    assert set(SEED_FILE_KEYS) <= set(keys)
    assert parse_grid("seed") == grid


def test_compact_grid_spec():
    configs = parse_grid("alpha=0.5,1;beta=0.1,0.5;intervals_per_layer=2")
    assert [(c.alpha, c.beta, c.intervals_per_layer) for c in configs] == [
        (0.5, 0.1, 2), (0.5, 0.5, 2), (1.0, 0.1, 2), (1.0, 0.5, 2)]
    sra = parse_grid("sra:elimi_factor_inter=0.3,0.5;begin_length=5")
    assert sra == [SRAConfig(elimi_factor_inter=0.3, begin_length=5), SRAConfig(elimi_factor_inter=0.5, begin_length=5)]
    assert parse_grid("none") == []
    assert parse_grid("classic:min_length=50") == [ClassicConfig(min_length=50)]


@pytest.mark.parametrize("spec, pattern", [
    ("alpha=0.5,-1", r"ClassicConfig.alpha must be a number in \(0, inf\), got -1.0"),
    ("alpah=1", "did you mean 'alpha'"),
    ("classik:alpha=1", "did you mean 'classic'"),
    ("alpha", "must look like name=value"),
    ("alpha=1;alpha=2", "appears twice"),
    ("intervals_per_layer=1.5", "ClassicConfig.intervals_per_layer must be an int"),
])
def test_bad_grid_specs(spec, pattern):
    with pytest.raises(ConfigError, match=pattern):
        parse_grid(spec)


def test_collect_configs_order_default_and_dedup():
    assert list(collect_configs(None, [])) == ["decode_al_05_be_01_lay_2"]
    configs = collect_configs("alpha=0.5,1;beta=0.1;intervals_per_layer=2", ["classic", "sra", "classic:alpha=1"])
    assert list(configs) == ["decode_al_05_be_01_lay_2", "decode_al_1_be_01_lay_2", "decode_sra"]
    assert collect_configs("none", ["sra"]) == {"decode_sra": SRAConfig()}
    with pytest.raises(ConfigError, match="cannot be named"):
        collect_configs(None, ["classic:alpha=12"])


# --------------------------------------------------------------------------- shards and merging

def test_shards_cover_every_position_once():
    for n in (0, 1, 7, 10):
        for world in (1, 2, 3):
            parts = [shard_indices(n, r, world) for r in range(world)]
            assert sorted(i for p in parts for i in p) == list(range(n))


def test_merge_outputs_fills_only_missing_keys():
    records = [{"document": "d", "summary": "s", "id": "1", "decode_or": "keep"},
               {"document": "d", "summary": "s", "id": "2"}]
    shard = [{"id": "2", "decode_or": "new", "decode_sra": "x", "gpt4_eva": "ignored"},
             {"id": "1", "decode_or": "overwrite?", "decode_sra": "y"},
             {"id": "3", "decode_or": "unknown id"}]
    assert merge_outputs(records, shard) == 3
    assert records[0] == {"document": "d", "summary": "s", "id": "1", "decode_or": "keep", "decode_sra": "y"}
    assert records[1] == {"document": "d", "summary": "s", "id": "2", "decode_or": "new", "decode_sra": "x"}


def test_merge_outputs_matches_ids_as_text():
    """A file written by other code may hold numeric ids; shards always hold text."""
    records = [{"document": "d", "summary": "s", "id": 7}, {"document": "d", "summary": "s", "id": "8"}]
    assert merge_outputs(records, [{"id": "7", "decode_or": "a"}, {"id": 8, "decode_or": "b"}]) == 2
    assert [r["decode_or"] for r in records] == ["a", "b"]


def test_meta_and_shard_paths(tmp_path):
    out = tmp_path / "xsum.json"
    assert meta_path(out) == tmp_path / "xsum.json.meta.json"
    assert shard_path(out, 3) == tmp_path / "xsum.json.rank3.json"
    for name in ("xsum.json.rank0.json", "xsum.json.rank12.json", "xsum.json.rank0.json.meta.json",
                 "other.json.rank0.json", "xsum.json.rankx.json"):
        (tmp_path / name).write_text("[]", encoding="utf-8")
    assert [p.name for p in existing_shards(out)] == ["xsum.json.rank0.json", "xsum.json.rank12.json"]


def test_combine_timings_of_parallel_ranks():
    ranks = [{"decode_or": {"seconds": 2.0, "documents": 3}},
             {"decode_or": {"seconds": 5.0, "documents": 2}, "decode_sra": {"seconds": 1.0, "documents": 2}}]
    assert combine_timings(ranks) == {"decode_or": {"seconds": 5.0, "documents": 5},
                                      "decode_sra": {"seconds": 1.0, "documents": 2}}

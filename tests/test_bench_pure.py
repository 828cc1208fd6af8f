"""attn-transition bench, pure parts: task generators, prompt building, scoring, statistics, log files."""

from __future__ import annotations

import json
import random
import re
import string

import pytest

from attn_transition.errors import UsageError
from attn_transition.evaluation.runtime import files as fileio
from attn_transition.evaluation.bench import analysis, store
from attn_transition.evaluation.bench.prompts import _place, build_prompt, render, resolve_format
from attn_transition.evaluation.bench.scoring import exact_match, first_line, normalise, score
from attn_transition.evaluation.bench.tasks import (DEFAULT_TASKS, count_word, get_task, make_samples,
                                                     parse_tasks, task_data)

DEPTHS = (0.0, 0.25, 0.5, 0.75, 1.0)


def char_tokenizer(chat: bool = True):
    """One token per character (a BPE without merges), optionally with a tiny chat template."""
    from tokenizers import Tokenizer, decoders, models
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3}
    for ch in sorted(set(string.printable) - set("\x0b\x0c")):
        vocab.setdefault(ch, len(vocab))
    core = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    core.decoder = decoders.Fuse()
    tok = PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", bos_token="<s>", eos_token="</s>",
                                  unk_token="<unk>")
    tok.padding_side = "left"
    if chat:
        tok.chat_template = ("{% for m in messages %}<s>{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
                             "{% if add_generation_prompt %}<s>assistant: {% endif %}")
    return tok


@pytest.fixture(scope="module")
def tok():
    return char_tokenizer()


# ------------------------------------------------------------------ task generators
def test_samples_are_deterministic_in_the_seed_and_independent_of_each_other():
    a = make_samples(DEFAULT_TASKS, (600, 900), DEPTHS, 2, seed=3)
    b = make_samples(DEFAULT_TASKS, (600, 900), DEPTHS, 2, seed=3)
    c = make_samples(DEFAULT_TASKS, (600, 900), DEPTHS, 2, seed=4)
    assert a == b
    assert len(a) == len(DEFAULT_TASKS) * 2 * len(DEPTHS) * 2
    assert len({s.item_id for s in a}) == len(a)
    assert sum(x.answer != y.answer or x.needles != y.needles for x, y in zip(a, c)) > len(a) // 2
    # An item depends only on (seed, task, length, depth, index), not on what else is generated.
    only_kv = make_samples(("kv",), (900,), (0.5,), 2, seed=3)
    assert only_kv == [s for s in a if s.task == "kv" and s.length == 900 and s.depth == 0.5]
    # The filler drawn for a sample is deterministic too.
    task = get_task(a[0].task)
    assert task.filler(a[0], 20) == task.filler(a[0], 20)


@pytest.mark.parametrize("task", DEFAULT_TASKS)
def test_answer_and_needles_occur_exactly_once_in_the_prompt(tok, task):
    for s in make_samples((task,), (700, 1200), DEPTHS, 2, seed=11):
        p = build_prompt(s, tok, chat=True)
        for needle in s.needles:
            assert p.text.count(needle.text) == 1, (s.item_id, needle.text)
        if task == "multihop":
            # The answer names the two digits; each is given once, in its own needle, and nowhere else.
            first, second = s.answer.split(" and ")
            assert first != second and first in "123456789" and second in "0123456789"
            assert count_word(s.needles[0].text, first) == 1 and count_word(s.needles[1].text, second) == 1
            assert re.findall(r"\d", p.text) == sorted([first, second], key=p.text.index), s.item_id
        else:
            assert count_word(p.text, s.answer) == 1, (s.item_id, s.answer, p.text)
        assert p.text.endswith(s.prime), p.text[-80:]


@pytest.mark.parametrize("task", DEFAULT_TASKS)
def test_asked_entity_occurs_only_in_needles_question_and_prime(tok, task):
    """The person (fact, multihop) or key (kv) asked about is named nowhere in the filler."""
    for s in make_samples((task,), (700, 1200), DEPTHS, 2, seed=5):
        p = build_prompt(s, tok, chat=True)
        entity = s.avoid[0]
        where = sum(count_word(n.text, entity) for n in s.needles) + count_word(s.question, entity) \
            + count_word(s.prime, entity)
        assert where >= len(s.needles) + 1, (s.item_id, entity)
        assert count_word(p.text, entity) == where, (s.item_id, entity)


def test_fact_distractors_never_carry_the_answer_and_are_spread_in_the_filler(tok):
    data = json.loads(json.dumps(task_data()))
    data["tasks"]["fact"]["distractors"] = 6
    task = get_task("fact")
    for i in range(20):
        s = task.make(random.Random(i), data, 900, 0.5, f"fact-{i}")
        assert len(s.scatter) == 6
        for d in s.scatter:
            assert count_word(d, s.answer) == 0 and s.avoid[0] not in d, (d, s.answer)
        filler = task.filler(s, 40)
        assert len(filler) == 40 and all(d in filler for d in s.scatter)
        assert all(count_word(f, s.answer) == 0 and s.avoid[0] not in f for f in filler)


@pytest.mark.parametrize("task", DEFAULT_TASKS)
@pytest.mark.parametrize("chat", [True, False])
def test_prompt_length_is_within_three_percent_of_the_target(tok, task, chat):
    tokenizer = tok if chat else char_tokenizer(chat=False)
    for target in (1500, 2500):
        for s in make_samples((task,), (target,), (0.0, 0.5, 1.0), 1, seed=2):
            p = build_prompt(s, tokenizer, chat=chat)
            ids = tokenizer(p.text, add_special_tokens=not chat)["input_ids"]
            assert len(ids) == p.n_tokens
            assert 0.97 * target <= p.n_tokens <= target, (s.item_id, p.n_tokens, target)


def test_needle_depth_is_placed_by_filler_sentences_and_reported_in_tokens(tok):
    for s in make_samples(("fact", "kv"), (2000,), DEPTHS, 1, seed=7):
        p = build_prompt(s, tok, chat=True)
        filler = get_task(s.task).filler(s, p.n_filler)
        sentences, where = _place(s, filler)
        assert where[0] == round(s.depth * p.n_filler), (s.item_id, where, p.n_filler)
        assert sentences[where[0]] == s.needles[0].text
        # One filler sentence is ~40 characters = 40 tokens of ~1900: the token depth is close.
        assert abs(p.needle_depths[0] - s.depth) < 0.05, (s.item_id, p.needle_depths, s.depth)
    first = make_samples(("fact",), (2000,), (0.0,), 1, seed=7)[0]
    last = make_samples(("fact",), (2000,), (1.0,), 1, seed=7)[0]
    text_first, context, _ = render(first, get_task("fact").filler(first, 30), tok, True)
    assert context.startswith(first.needles[0].text)
    text_last, context, _ = render(last, get_task("fact").filler(last, 30), tok, True)
    assert context.endswith(last.needles[0].text)


def test_multihop_needles_are_half_the_context_apart(tok):
    for s in make_samples(("multihop",), (2000,), DEPTHS, 1, seed=1):
        p = build_prompt(s, tok, chat=True)
        gap = abs(p.needle_depths[0] - p.needle_depths[1])
        assert 0.45 <= gap <= 0.55, (s.item_id, p.needle_depths)


def test_length_too_short_for_the_task_is_a_usage_error(tok):
    s = make_samples(("fact",), (50,), (0.5,), 1, seed=0)[0]
    with pytest.raises(UsageError, match="too short for task 'fact'"):
        build_prompt(s, tok, chat=True)


def test_unknown_task_suggests_the_nearest_name():
    with pytest.raises(UsageError, match=r"unknown task 'fakt' \(did you mean 'fact'\?\)"):
        parse_tasks("fakt,kv")
    assert parse_tasks("kv, fact,kv") == ("kv", "fact")


def test_format_resolution(tok):
    assert resolve_format("auto", tok) is True
    assert resolve_format("auto", char_tokenizer(chat=False)) is False
    assert resolve_format("plain", tok) is False
    with pytest.raises(UsageError, match="has none"):
        resolve_format("chat", char_tokenizer(chat=False))


# ------------------------------------------------------------------ scoring
@pytest.mark.parametrize("text, expected", [
    ("The Secret  Code!", "secret code"),
    ("  47.\n", "47"),
    ("It's an apple, a pear", "its apple pear"),
    ("kalo-mira: 47", "kalo mira 47"),
    ("Ｆｕｌｌ width", "full width"),
])
def test_normalise(text, expected):
    assert normalise(text) == expected


@pytest.mark.parametrize("prediction, gold, ok", [
    ("47", "47", True),
    ("47.", "47", True),
    ("47, I think", "47", True),
    ("The 47", "47", True),
    ("147", "47", False),
    ("4 7", "47", False),
    ("the code is 47", "47", False),
    ("", "47", False),
    ("Gota Mipo.", "gota mipo", True),
    ("Gota", "Gota Mipo", False),
    ("anything", "", False),
])
def test_exact_match(prediction, gold, ok):
    assert exact_match(prediction, gold) is ok


def test_score_uses_the_first_non_empty_line():
    assert first_line("\n\n  47\n99") == "47"
    assert score(" 97. The house", "97") == ("97. The house", True)
    assert score(":\n\n- 97", "97") == (":", False)
    assert score("   \n", "97") == ("", False)


# ------------------------------------------------------------------ statistics
def _outcomes(table: dict[str, list[int]]) -> dict:
    return {(f"i{k}", c): {"correct": bool(v), "output": f"{c}:{v}" if c != "stock" else f"s:{v}"}
            for c, vs in table.items() for k, v in enumerate(vs)}


def test_paired_comparison_matches_hand_computation():
    items = [{"item_id": f"i{k}", "task": "fact", "length": 512, "depth": 0.0} for k in range(10)]
    # stock right on 0-4; config right on 0-2 and 5-9: 3 ties-right, 2 losses, 5 wins, 0 ties-wrong.
    outcomes = _outcomes({"stock": [1, 1, 1, 1, 1, 0, 0, 0, 0, 0], "cfg": [1, 1, 1, 0, 0, 1, 1, 1, 1, 1]})
    c = analysis.compare(items, outcomes, "stock", "cfg", n_boot=2000)
    assert (c["n"], c["wins"], c["ties"], c["losses"]) == (10, 5, 3, 2)
    assert c["mean_baseline"] == pytest.approx(0.5) and c["mean_treatment"] == pytest.approx(0.8)
    assert c["diff"] == pytest.approx(0.3)
    # exact McNemar on discordant 2 vs 5: 2 * P(X <= 2), X ~ Bin(7, 1/2) = 2 * (1 + 7 + 21) / 128
    assert c["mcnemar_p"] == pytest.approx(58 / 128)
    assert c["ci_low"] < 0.3 < c["ci_high"] and -1 <= c["ci_low"] and c["ci_high"] <= 1
    assert c["changed"] == 10          # every output string differs in this fixture
    acc = analysis.accuracy(items, outcomes, "cfg")
    assert (acc["n"], acc["correct"], acc["accuracy"]) == (10, 8, 0.8)
    assert acc["ci_low"] < 0.8 < acc["ci_high"]


def test_bootstrap_interval_is_paired():
    """Two arms at 50% that differ on one item of 40: the paired interval hugs the one-item difference
    (an unpaired bootstrap of two 50% arms would span about +-20 points)."""
    items = [{"item_id": f"i{k}", "task": "fact", "length": 512, "depth": 0.0} for k in range(40)]
    stock = [k % 2 for k in range(40)]
    cfg = list(stock)
    cfg[0] = 1                                   # the only discordant item: a win
    c = analysis.compare(items, _outcomes({"stock": stock, "cfg": cfg}), "stock", "cfg", n_boot=4000)
    assert c["diff"] == pytest.approx(1 / 40) and (c["wins"], c["losses"]) == (1, 0)
    assert c["ci_low"] == 0.0 and c["ci_high"] <= 3 / 40, (c["ci_low"], c["ci_high"])


def test_comparison_uses_only_items_both_configs_have():
    items = [{"item_id": f"i{k}", "task": "kv", "length": 1024, "depth": 0.5} for k in range(4)]
    outcomes = _outcomes({"stock": [1, 0, 1, 0], "cfg": [1, 1, 1, 1]})
    del outcomes[("i3", "cfg")]
    c = analysis.compare(items, outcomes, "stock", "cfg", n_boot=500)
    assert c["n"] == 3 and c["wins"] == 1 and c["diff"] == pytest.approx(1 / 3)


def test_oracle_is_the_per_item_union_and_labelled():
    items = [{"item_id": f"i{k}", "task": "fact", "length": 512, "depth": d}
             for k, d in enumerate((0.0, 0.5, 1.0, 0.0))]
    outcomes = _outcomes({"stock": [0, 0, 1, 0], "a": [1, 0, 0, 0], "b": [0, 1, 0, 0]})
    orc = analysis.oracle(items, outcomes, ["a", "b"])
    assert [orc[(f"i{k}", analysis.ORACLE)]["correct"] for k in range(4)] == [True, True, False, False]
    summary = analysis.summarise(items, outcomes, ["stock", "a", "b"], show_oracle=True, n_boot=500)
    assert summary["oracle"]["accuracy"]["accuracy"] == 0.5
    assert "ORACLE UPPER BOUND" in summary["oracle"]["label"]
    assert [r["config"] for r in summary["accuracy"]] == ["stock", "a", "b"]   # never in the main table
    assert "oracle" not in analysis.summarise(items, outcomes, ["stock", "a", "b"], n_boot=500)


def test_choose_config_takes_the_best_dev_accuracy_and_the_first_on_ties():
    items = [{"item_id": f"i{k}", "task": "fact", "length": 512, "depth": 0.0} for k in range(4)]
    outcomes = _outcomes({"a": [1, 0, 0, 0], "b": [1, 1, 0, 0], "c": [0, 1, 1, 0]})
    chosen, rows = analysis.choose_config(items, outcomes, ["a", "b", "c"])
    assert chosen == "b" and [r["correct"] for r in rows] == [1, 2, 2]


def test_split_is_stratified_and_seeded():
    items = [{"item_id": f"{t}-{n}-{k}", "task": t, "length": n, "depth": 0.0}
             for t in ("fact", "kv") for n in (512, 1024) for k in range(5)]
    one = analysis.split_items(items, 0.4, random.Random(1).shuffle)
    two = analysis.split_items(items, 0.4, random.Random(1).shuffle)
    assert one == two and set(one) == {it["item_id"] for it in items}
    for t in ("fact", "kv"):
        for n in (512, 1024):
            dev = [i for i, s in one.items() if i.startswith(f"{t}-{n}-") and s == "dev"]
            assert len(dev) == 2, (t, n, dev)


def test_accuracy_tables_group_by_keys():
    items = [{"item_id": f"i{k}", "task": "fact", "length": n, "depth": 0.0}
             for k, n in enumerate((512, 512, 1024, 1024))]
    outcomes = _outcomes({"stock": [1, 0, 0, 0], "cfg": [1, 1, 0, 1]})
    rows = analysis.accuracy_table(items, outcomes, ["stock", "cfg"], ("length",))
    got = {(r["length"], r["config"]): r["accuracy"] for r in rows}
    assert got == {(512, "stock"): 0.5, (512, "cfg"): 1.0, (1024, "stock"): 0.0, (1024, "cfg"): 0.5}


# ------------------------------------------------------------------ log files
def test_log_round_trip_and_a_damaged_line_is_skipped_reported_and_left_alone(tmp_path, capsys):
    path = tmp_path / "records.jsonl"
    log = store.RecordLog(path, {"model": "m", "seed": 0})
    log.append([{"item": "a", "config": "stock", "output": "47", "correct": True}])
    log.append([{"item": "b", "config": "stock", "output": "x", "correct": False}])
    header, records = store.read_log(path)
    assert header["identity"] == {"model": "m", "seed": 0}
    assert [r["item"] for r in records] == ["a", "b"]
    with open(path, "a", encoding="utf-8") as fh:
        fh.write('{"type": "record", "item": "c", "conf\n')
    before = path.read_bytes()
    capsys.readouterr()
    assert [r["item"] for r in store.read_log(path)[1]] == ["a", "b"]        # c was never counted: it reruns
    assert "skipped 1 unreadable line(s)" in capsys.readouterr().err and path.read_bytes() == before
    with pytest.raises(UsageError, match="different run"):
        store.check_identity(path, header, {"model": "m", "seed": 1})


def test_readable_lines_that_are_wrong_stop_the_resume_with_their_line(tmp_path):
    path = tmp_path / "records.jsonl"
    store.RecordLog(path, {"model": "m"}).append([{"item": "a", "config": "stock", "output": "1", "correct": True}])
    for line, fragment in [('{"type": "record", "item": "b"}', "line 3 lacks config, output, correct"),
                           ('{"type": "header", "format": "attn-transition-bench-log/1"}', "line 3 is a second header"),
                           ('{"kind": "other"}', "line 3 is neither a header nor a record")]:
        text = path.read_text(encoding="utf-8").splitlines(keepends=True)[:2]
        path.write_text("".join(text) + line + "\n", encoding="utf-8")
        with pytest.raises(UsageError, match=fragment):
            store.read_log(path)


def test_readers_skip_an_unfinished_last_line_and_the_writer_never_truncates(tmp_path):
    """Under data parallel every rank reads every log while the others may be appending: reading
    must never modify a file, and appending after a torn line leaves it whole, on its own line."""
    path = tmp_path / "records.jsonl"
    store.RecordLog(path, {"model": "m"}).append([{"item": "a", "config": "stock", "output": "1", "correct": True}])
    done = ["a"]
    for tail in ('{"type": "record", "item": "b"', '{"type": "record", "item": "b", "output": "\u2019'):
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(tail)                                                  # cut mid-write (also inside a character)
        if tail.endswith("\u2019"):
            path.write_bytes(path.read_bytes()[:-1])                        # ... cut inside its UTF-8 bytes
        before = path.read_bytes()
        assert [r["item"] for r in store.read_log(path)[1]] == done          # the torn b is not done
        assert path.read_bytes() == before                                  # reading changed nothing
        store.RecordLog(path, {"model": "m"}).append([{"item": "c", "config": "stock", "output": "2",
                                                       "correct": False}])
        assert path.read_bytes().startswith(before + b"\n")                # appended after it, nothing cut
        done.append("c")
    assert [r["item"] for r in store.read_log(path)[1]] == ["a", "c", "c"]


def test_a_whole_last_record_without_its_newline_counts(tmp_path):
    path = tmp_path / "records.jsonl"
    store.RecordLog(path, {"model": "m"}).append([{"item": "a", "config": "stock", "output": "47", "correct": True}])
    with open(path, "a", encoding="utf-8") as fh:
        fh.write('{"type": "record", "item": "b", "config": "stock", "output": "1", "correct": false}')
    assert [r["item"] for r in store.read_log(path)[1]] == ["a", "b"]
    store.RecordLog(path, {"model": "m"}).append([{"item": "c", "config": "stock", "output": "2", "correct": False}])
    assert [r["item"] for r in store.read_log(path)[1]] == ["a", "b", "c"]


def test_repeated_depths_lengths_or_tasks_are_refused():
    from attn_transition.evaluation.bench.runner import BenchSettings

    for kwargs, message in ((dict(depths=(0.25, 0.254)), "depths has repeated values (depths are told apart "
                                                         "in whole percents): 25,25.4"),
                            (dict(lengths=(512, 512)), "lengths has repeated values"),
                            (dict(tasks=("kv", "kv")), "tasks has repeated values")):
        with pytest.raises(UsageError, match=re.escape(message)):
            BenchSettings(**kwargs)



# The files that make a folder a run's results, for bench and bench --suite ruler alike: a log of
# one process, a rank's log of a data-parallel run (any number of ranks), the merged results.
HELD = ("records.jsonl", "records.rank1-of-2.jsonl", "results.json")


def hold(folder, name):
    """``folder`` holding only ``name``; returns its contents, to check that a refusal kept them."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text('{"type": "header", "format": "attn-transition-bench-log/1", "identity": {}}\n'
                               if name.endswith(".jsonl") else '{"format": "earlier results"}', encoding="utf-8")
    return contents(folder)


def contents(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.mark.parametrize("name", HELD)
def test_a_folder_with_results_is_refused_without_resume_and_kept(tmp_path, name):
    before = hold(tmp_path, name)
    assert store.results_in(tmp_path) == [name]
    with pytest.raises(UsageError) as info:
        store.refuse_results(tmp_path, resume=False)
    assert str(info.value) == (f"{tmp_path} already holds results; add --resume to continue them or choose another "
                               f"--output-dir (it has {name})")
    store.refuse_results(tmp_path, resume=True)
    assert contents(tmp_path) == before


def test_an_empty_or_unrelated_folder_is_not_refused_and_resume_needs_a_log(tmp_path):
    store.refuse_results(tmp_path / "missing", resume=False)
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "summary.md").write_text("x")
    store.refuse_results(tmp_path, resume=False)
    with pytest.raises(UsageError, match=r"--resume: .* holds no records\*\.jsonl to continue; drop --resume"):
        store.require_logs(tmp_path)
    hold(tmp_path, "results.json")
    with pytest.raises(UsageError, match="holds no records"):       # results alone: nothing to continue
        store.require_logs(tmp_path)
    hold(tmp_path, "records.rank0-of-4.jsonl")
    store.require_logs(tmp_path)
    assert [p.name for p in store.log_paths(tmp_path)] == ["records.rank0-of-4.jsonl"]


def test_the_refusal_lists_what_every_rank_found(tmp_path):
    found = ["records.rank0-of-2.jsonl", "records.rank1-of-2.jsonl", "records.rank0-of-2.jsonl", "results.json",
             "records.jsonl"]
    with pytest.raises(UsageError, match=r"\(it has records.jsonl, records.rank0-of-2.jsonl, "
                                         r"records.rank1-of-2.jsonl and 1 more\)$"):
        store.refuse_results(tmp_path, resume=False, found=found)
    store.refuse_results(tmp_path, resume=False, found=[])

def test_atomic_json_write_replaces_whole_files(tmp_path):
    path = tmp_path / "results.json"
    fileio.write_json_atomic(path, {"a": 1})
    fileio.write_json_atomic(path, {"b": [1, 2]})
    assert json.loads(path.read_text()) == {"b": [1, 2]}
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]


def test_settings_hold_parsed_configs_the_first_of_each_in_order():
    import attn_transition as at
    from attn_transition.evaluation.bench.runner import BenchSettings

    s = BenchSettings(configs=("sra", "classic:alpha=1", at.SRAConfig(), "classic:alpha=1.0,beta=0.1"))
    assert s.configs == (at.SRAConfig(), at.ClassicConfig(alpha=1.0))
    assert list(s.labelled()) == ["sra", "classic:alpha=1"] and s.as_dict()["configs"] == ["sra", "classic:alpha=1"]
    with pytest.raises(at.ConfigError, match="did you mean 'classic'"):
        BenchSettings(configs=("clasic",))

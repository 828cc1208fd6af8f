"""Token dropout: the dropout law per rank (statistical, seeded), punctuation and special-token
safety, reproducibility, validation, and the augment CLI on CSV / JSONL."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest

from attn_transition.cli import main
from attn_transition.errors import UsageError
from attn_transition.evaluation.clues.align import word_spans
from attn_transition.evaluation.clues.augment import (AugmentConfig, ScoredText, apply_drops, augment_rows,
                                                      augment_text, drop_probability, droppable_ranks,
                                                      is_protected, probabilities)
from test_clues_support import metaspace_tokenizer

M = 30  # units in the law test


def _letters_item(scores):
    """Units 'a' 'b' ... separated by spaces; each unit one character, so a drop is visible as a space."""
    letters = [chr(ord("a") + k % 26) for k in range(len(scores))]
    text = " ".join(letters)
    spans = [(2 * k, 2 * k + 1) for k in range(len(scores))]
    return ScoredText(text, spans, [False] * len(scores), list(scores))


def _drop_matrix(item, config, index=0):
    rows = []
    for text, dropped in augment_text(item, config, index):
        mask = [text[a:b].strip() == "" for a, b in item.spans]
        assert sum(mask) == dropped
        rows.append(mask)
    return np.array(rows)                                          # (copies, units)


@pytest.mark.parametrize("alpha, beta", [(0.7, 0.1), (1.0, 0.5), (0.3, 0.02)])
def test_empirical_drop_rate_per_rank_matches_the_law(alpha, beta):
    rng = np.random.default_rng(123)
    scores = rng.permutation(M).astype(float)                      # distinct scores in shuffled positions
    item = _letters_item(scores)
    draws = 4000
    config = AugmentConfig(mode="contrast", alpha=alpha, beta=beta, copies=draws, seed=7)
    drops = _drop_matrix(item, config)
    ranks = droppable_ranks(scores.tolist(), [False] * M)
    assert sorted(ranks) == list(range(M))
    assert ranks[int(np.argmax(scores))] == 0                      # highest score -> rank 0
    for unit, r in enumerate(ranks):
        p = drop_probability(r, alpha, beta)
        observed = drops[:, unit].mean()
        se = math.sqrt(p * (1 - p) / draws)
        # 4.5 standard errors: over 90 checks a false alarm has probability < 1e-3 (and the run is seeded)
        assert abs(observed - p) <= 4.5 * se + 1e-12, f"rank {r}: observed {observed:.4f}, p(r) {p:.4f}, se {se:.4f}"
    assert drops[:, ranks.index(0)].sum() == 0                     # p(0) = 0: the top clue is always kept


def test_random_mode_flat_and_matched_rates():
    scores = list(range(M))
    item = _letters_item(scores)
    flat = AugmentConfig(mode="random", alpha=0.4, copies=3000, seed=1)
    drops = _drop_matrix(item, flat)
    se = math.sqrt(0.4 * 0.6 / 3000)
    assert np.all(np.abs(drops.mean(axis=0) - 0.4) <= 4.5 * se)
    matched = AugmentConfig(mode="random", alpha=0.7, beta=0.1, match_rate=True, copies=1)
    p = probabilities(droppable_ranks([None] * M, [False] * M), matched)
    expected = sum(drop_probability(r, 0.7, 0.1) for r in range(M)) / M
    assert p == pytest.approx([expected] * M)


def test_drop_probability_law_values():
    assert drop_probability(0, 0.7, 0.1) == 0.0
    assert drop_probability(10, 0.7, 0.1) == pytest.approx(0.7 * (1 - math.exp(-1.0)))
    assert drop_probability(10, 0.7, 0.0) == 0.0
    assert drop_probability(10_000, 0.7, 0.1) == pytest.approx(0.7)


def test_ranks_skip_protected_units_and_put_nan_last():
    assert droppable_ranks([0.5, None, 0.9, 0.1, math.nan], [False, False, False, True, False]) == [1, 2, 0, None, 3]


def test_punctuation_and_special_tokens_are_never_dropped():
    tok = metaspace_tokenizer(["Ann,", "born", "in", "Leeds.", "(Yorkshire)", "</s>"])
    text = "Ann, born in Leeds. (Yorkshire) </s>"
    enc = tok(text, return_offsets_mapping=True)
    spans = [tuple(o) for o in enc["offset_mapping"]]
    special = [i in tok.all_special_ids for i in enc["input_ids"]]
    assert special[-1], "the literal </s> is a special token here"
    item = ScoredText(text, spans, special, [0.0] * len(spans))
    config = AugmentConfig(mode="contrast", alpha=1.0, beta=50.0, copies=20, seed=0)   # drop all but rank 0
    for out, dropped in augment_text(item, config, 0):
        assert len(out) == len(text)
        for k, ch in enumerate(text):
            if not ch.isalnum() and not ch.isspace():
                assert out[k] == ch, f"character {ch!r} at {k} was removed: {out!r}"
        assert out.endswith("</s>")
        assert dropped == 4                     # 5 droppable units (Ann, born, in, Leeds, Yorkshire), rank 0 kept
    assert is_protected(" ,.", False) and is_protected("word", True) and not is_protected("a.", False)
    assert apply_drops("a.b c", [(0, 3), (4, 5)], [True, False]) == " .  c"


def test_seeded_reproducible_and_order_independent():
    texts = ["Ann was born in Leeds.", "Bob works for Amberly Bank.", "Cy studied Geology."]
    items = [ScoredText(t, word_spans(t), [False] * len(word_spans(t)), [None] * len(word_spans(t))) for t in texts]
    config = AugmentConfig(mode="random", alpha=0.5, copies=5, seed=3)
    first = augment_rows([{"text": t} for t in texts], items, config)
    again = augment_rows([{"text": t} for t in texts], items, config)
    assert first == again
    alone = augment_text(items[2], config, 2)
    assert [r["text"] for r in first if r["source"] == 2 and r["copy"] > 0] == [t for t, _ in alone]
    other = augment_rows([{"text": t} for t in texts], items, AugmentConfig(mode="random", alpha=0.5, copies=5, seed=4))
    assert [r["text"] for r in other] != [r["text"] for r in first]
    assert [r["copy"] for r in first[:6]] == [0, 1, 2, 3, 4, 5] and first[0]["text"] == texts[0]


@pytest.mark.parametrize("kwargs, match", [
    ({"alpha": 1.5}, "alpha must be in"), ({"alpha": -0.1}, "alpha must be in"), ({"beta": -1.0}, "beta must be"),
    ({"copies": -1}, "copies"), ({"mode": "contrst"}, "did you mean 'contrast'"),
])
def test_config_validation(kwargs, match):
    with pytest.raises(UsageError, match=match):
        AugmentConfig(**kwargs)


# -- CLI ---------------------------------------------------------------------------------------

def _contrast_file(path, texts):
    rows = []
    for t in texts:
        spans = word_spans(t)
        rows.append({"kind": "contrast", "version": 1, "text": t, "spans": [list(s) for s in spans],
                     "special": [False] * len(spans), "diff": [float(-k) for k in range(len(spans))],
                     "large": [float(k) for k in range(len(spans))], "small": [0.0] * len(spans)})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_augment_cli_csv_and_jsonl(tmp_path, capsys):
    texts = ["Ann was born in Leeds, a city.", "Bob works for Amberly Bank."]
    src = tmp_path / "in.csv"
    with src.open("w", newline="") as h:
        w = csv.DictWriter(h, fieldnames=["text", "id"])
        w.writeheader()
        w.writerows({"text": t, "id": i} for i, t in enumerate(texts))
    scores = tmp_path / "contrast.jsonl"
    _contrast_file(scores, texts)
    out = tmp_path / "out.jsonl"
    assert main(["clues", "augment", str(src), "-o", str(out), "--mode", "contrast", "--scores", str(scores),
                 "--copies", "4", "--alpha", "1", "--beta", "2"]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 2 * 5 and rows[0]["text"] == texts[0] and rows[0]["id"] == "0"
    for r in rows:
        assert r["text"].startswith(texts[r["source"]].split()[0])   # rank 0 (the first word) is always kept
        assert r["text"].count(",") == texts[r["source"]].count(",")
    out_csv = tmp_path / "out.csv"
    assert main(["clues", "augment", str(out), "-o", str(out_csv), "--mode", "random", "--copies", "1"]) == 0
    with out_csv.open() as h:
        assert len(list(csv.DictReader(h))) == 20


def test_augment_cli_bad_input_is_one_line_exit_2(tmp_path, capsys):
    src = tmp_path / "in.csv"
    src.write_text("body\nhello world\n")
    out = tmp_path / "out.jsonl"
    assert main(["clues", "augment", str(src), "-o", str(out), "--mode", "random"]) == 2
    err = capsys.readouterr().err.strip()
    assert "no 'text' column" in err and len(err.splitlines()) == 1
    assert not out.exists()
    good = tmp_path / "good.jsonl"
    good.write_text(json.dumps({"text": "hello world"}) + "\n")
    assert main(["clues", "augment", str(good), "-o", str(out), "--alpha", "2", "--mode", "random"]) == 2
    assert "alpha must be in [0, 1]" in capsys.readouterr().err
    assert main(["clues", "augment", str(good), "-o", str(out), "--beta", "-1", "--mode", "random"]) == 2
    assert "beta must be" in capsys.readouterr().err
    scores = tmp_path / "contrast.jsonl"
    _contrast_file(scores, ["another text"])
    assert main(["clues", "augment", str(good), "-o", str(out), "--scores", str(scores)]) == 2
    assert "mismatched" in capsys.readouterr().err
    empty = tmp_path / "empty.jsonl"
    empty.write_text(json.dumps({"text": "ok"}) + "\n" + json.dumps({"text": "  "}) + "\n")
    assert main(["clues", "augment", str(empty), "-o", str(out), "--mode", "random"]) == 2
    assert "record 1 has an empty 'text'" in capsys.readouterr().err
    assert not out.exists()

"""Alignment of per-token scores across two different tokenizers, and the contrast built on it
(all expectations computed by hand)."""

from __future__ import annotations

import math

import pytest

from attn_transition.errors import UsageError
from attn_transition.evaluation.clues.align import align_scores, trim_span, word_spans
from attn_transition.evaluation.clues.contrast import contrast_record, contrast_records, descending_rank, normalise
from attn_transition.evaluation.clues.profile import text_sha
from test_clues_support import char_tokenizer, metaspace_tokenizer

TEXT = "Ann, born in Leeds."


def _spans(tok, text):
    enc = tok(text, return_offsets_mapping=True)
    return tok.convert_ids_to_tokens(enc["input_ids"]), [tuple(o) for o in enc["offset_mapping"]]


def test_char_scores_onto_metaspace_tokens_by_overlap():
    chars, char_spans = _spans(char_tokenizer(), TEXT)
    words, word_spans_ = _spans(metaspace_tokenizer(["Ann,", "born", "in", "Leeds."]), TEXT)
    assert chars[:4] == ["A", "n", "n", ","] and len(chars) == 16
    assert words == ["Ann,", "▁born", "▁in", "▁Leeds."]
    assert word_spans_ == [(0, 4), (4, 9), (9, 12), (12, 19)]     # leading spaces inside the spans
    scores = [float(k + 1) for k in range(16)]                    # char k -> k + 1
    scores[-1] = math.nan                                         # the last token has no profile
    got = align_scores(TEXT, char_spans, scores, word_spans_)
    # "Ann," = chars 1..4 -> 2.5; "born" = 5..8 -> 6.5; "in" = 9, 10 -> 9.5; "Leeds." = 11..15 (the "." is NaN) -> 13
    assert got == [2.5, 6.5, 9.5, 13.0]


def test_metaspace_scores_onto_chars_and_words():
    _, word_spans_ = _spans(metaspace_tokenizer(["Ann,", "born", "in", "Leeds."]), TEXT)
    _, char_spans = _spans(char_tokenizer(), TEXT)
    got = align_scores(TEXT, word_spans_, [10.0, 20.0, 30.0, 40.0], char_spans)
    assert got == [10.0] * 4 + [20.0] * 4 + [30.0] * 2 + [40.0] * 6
    # onto words: "Ann" (0,3) and "," (3,4) both inside "Ann,"; "Leeds" and "." inside "▁Leeds."
    units = word_spans(TEXT)
    assert [TEXT[a:b] for a, b in units] == ["Ann", ",", "born", "in", "Leeds", "."]
    assert align_scores(TEXT, word_spans_, [10.0, 20.0, 30.0, 40.0], units) == [10.0, 10.0, 20.0, 30.0, 40.0, 40.0]


def test_partial_overlaps_are_weighted_by_length():
    text = "abcdef"
    # sources "ab" (1.0) and "cdef" (4.0); target "abc" overlaps 2 chars of the first, 1 of the second
    got = align_scores(text, [(0, 2), (2, 6)], [1.0, 4.0], [(0, 3), (3, 6), (0, 0)])
    assert got[0] == pytest.approx((2 * 1.0 + 1 * 4.0) / 3)
    assert got[1] == 4.0
    assert math.isnan(got[2])                                     # an empty (special) unit has no score


def test_trim_span():
    assert trim_span(" ab ", (0, 4)) == (1, 3)
    assert trim_span(" ab ", (0, 1)) is None
    with pytest.raises(AssertionError):
        trim_span("ab", (0, 5))


def test_normalise_and_rank():
    assert normalise([3.0, 1.0, 2.0, math.nan], "rank")[:3] == [1.0, 0.0, 0.5]
    assert math.isnan(normalise([3.0, 1.0, 2.0, math.nan], "rank")[3])
    assert normalise([1.0, 1.0, 3.0], "rank") == [0.25, 0.25, 1.0]          # ties share their mean rank
    z = normalise([1.0, 2.0, 3.0], "zscore")
    assert z == pytest.approx([-1.2247449, 0.0, 1.2247449])
    assert normalise([1.0, 10.0, 100.0], "log-zscore") == pytest.approx([-1.2247449, 0.0, 1.2247449])
    assert descending_rank([0.1, math.nan, 0.5, 0.5]) == [2, None, 0, 1]
    with pytest.raises(UsageError, match="normalise"):
        normalise([1.0], "minmax")


def _record(tok, text, scores, model):
    tokens, spans = _spans(tok, text)
    assert len(scores) == len(tokens)
    return {"kind": "profile", "version": 1, "index": 0, "model": model, "text": text, "text_sha": text_sha(text),
            "input_ids": list(range(len(tokens))), "tokens": tokens, "offsets": [list(s) for s in spans],
            "special": [False] * len(tokens), "profile": scores}


def test_contrast_on_small_tokens_hand_checked():
    small = _record(metaspace_tokenizer(["Ann,", "born", "in", "Leeds."]), TEXT, [0.4, 0.3, 0.2, None], "small")
    large_scores = [float(k + 1) for k in range(16)]
    large_scores[-1] = None
    large = _record(char_tokenizer(), TEXT, large_scores, "large")
    rec = contrast_record(small, large, units="small", method="rank")
    assert rec["tokens"] == ["Ann,", "▁born", "▁in", "▁Leeds."]
    assert rec["large"] == [2.5, 6.5, 9.5, 13.0]
    # both normalised over the units finite on both sides ("▁Leeds." has no small score, so it is left
    # out of the large ranks too): small ranks 0.4 -> 1, 0.3 -> 0.5, 0.2 -> 0; large 2.5 -> 0, 6.5 -> 0.5, 9.5 -> 1
    assert rec["large_norm"][:3] == [0.0, 0.5, 1.0] and math.isnan(rec["large_norm"][3])
    assert rec["diff"][:3] == pytest.approx([0 - 1.0, 0.5 - 0.5, 1.0 - 0.0])
    assert math.isnan(rec["diff"][3])
    assert rec["rank"] == [2, 1, 0, None]
    words = contrast_record(small, large, units="words", method="none")
    assert words["tokens"] == ["Ann", ",", "born", "in", "Leeds", "."]
    nan = math.nan
    assert _same(words["small"], [0.4, 0.4, 0.3, 0.2, nan, nan])     # "▁Leeds." had no score
    assert _same(words["large"], [2.0, 4.0, 6.5, 9.5, 13.0, nan])    # "." was the last char token
    assert _same(words["diff"], [b - a for a, b in zip(words["small"], words["large"])])


LONG = "Ann, born in Leeds, works at Copperleaf Foods."
LONG_WORDS = ["Ann,", "born", "in", "Leeds,", "works", "at", "Copperleaf", "Foods."]


def _with_bos(rec, score):
    """``rec`` with a special BOS token (empty span) in front, as real tokenizers add it."""
    return {**rec, "input_ids": [99] + rec["input_ids"], "tokens": ["<s>"] + rec["tokens"],
            "offsets": [[0, 0]] + rec["offsets"], "special": [True] + rec["special"],
            "profile": [score] + rec["profile"]}


@pytest.mark.parametrize("units", ["small", "large", "words"])
def test_same_order_on_shared_units_gives_zero_diff(units):
    """Both models order the units they share identically; the small one also has a BOS attention sink
    (a special unit) and no score for its last token, the large one has no score for "▁works" and its
    last character. Normalised over the same units, every shared unit's diff is exactly 0."""
    word_score = [0.5, 0.125, 0.0625, 0.375, 0.25, 0.03125, 0.4375, None]   # small, per word (exact binary)
    small = _with_bos(_record(metaspace_tokenizer(LONG_WORDS), LONG, word_score, "small"), 0.95)
    chars, char_spans = _spans(char_tokenizer(), LONG)
    word_of = [next(k for k, (a, b) in enumerate(small["offsets"][1:]) if a <= s0 < b) for s0, _ in char_spans]
    large_scores = [None if word_of[c] == 4 else 10.0 * (word_score[word_of[c]] or 0.0) for c in range(len(chars))]
    large_scores[-1] = None                                              # its last token
    large = _with_bos(_record(char_tokenizer(), LONG, large_scores, "large"), 99.0)
    rec = contrast_record(small, large, units=units, method="rank")
    shared = [i for i, (a, b) in enumerate(zip(rec["small"], rec["large"]))
              if not rec["special"][i] and math.isfinite(a) and math.isfinite(b)]
    assert len(shared) >= 5, rec["tokens"]
    assert all(rec["diff"][i] == 0.0 for i in shared), [(rec["tokens"][i], rec["diff"][i]) for i in shared]
    others = [i for i in range(len(rec["diff"])) if i not in shared]
    assert others and all(math.isnan(rec["diff"][i]) and rec["rank"][i] is None for i in others)
    if units != "words":                                                 # the BOS unit: special, no diff
        assert rec["special"][0] and math.isnan(rec["diff"][0])


def _same(got, expected):
    return len(got) == len(expected) and all(
        (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b) for a, b in zip(got, expected))


def test_mismatched_profile_files_are_refused():
    tok = metaspace_tokenizer(["Ann,", "born", "in", "Leeds."])
    a = _record(tok, TEXT, [0.4, 0.3, 0.2, None], "small")
    other = "Ann, born in Leeds!"
    b = _record(char_tokenizer(), other, [1.0] * 16, "large")
    with pytest.raises(UsageError, match="mismatched profile files"):
        contrast_records([a], [b])
    with pytest.raises(UsageError, match="mismatched profile files: small has 1 texts"):
        contrast_records([a], [])
    with pytest.raises(UsageError, match="not a profile file"):
        contrast_records([{"kind": "contrast"}], [a])

"""Biography generator (seeded, tags = field values, every field present) and the EM / F1 scorer
(hand-computed cases)."""

from __future__ import annotations

import re
from dataclasses import replace

import pytest

from attn_transition.errors import UsageError
from attn_transition.evaluation.clues.biographies import (FIELDS, QUESTIONS, TEMPLATES, check_fields, from_record,
                                                          generate, strip_tags, tagged_spans, to_record)
from attn_transition.evaluation.clues.qa import build_items, cut_answer, exact_match, normalize_answer, score, token_f1


def test_generator_is_seeded_and_deterministic():
    assert generate(25, seed=3) == generate(25, seed=3)
    assert generate(25, seed=3) != generate(25, seed=4)
    assert generate(10, seed=3)[0] != generate(10, seed=4)[0]


def test_tags_match_field_values_and_every_field_is_present():
    bios = generate(60, seed=1)
    check_fields(bios)
    assert len({b.name for b in bios}) == 60
    for bio in bios:
        assert set(bio.fields) == set(FIELDS)
        assert strip_tags(bio.tagged) == bio.text
        spans = tagged_spans(bio.tagged)
        assert sorted(f for f, *_ in spans) == sorted(FIELDS)
        for field, value, start, end in spans:
            assert bio.text[start:end] == value == bio.fields[field]
        assert bio.text.startswith(bio.name)
        assert "<" not in bio.text and bio.tagged.count("<") == 2 * len(FIELDS)
    # variety: each field's sentences come from several of its templates
    for field, templates in TEMPLATES.items():
        expected = {t.format(S="S", P="P", p="p", s="s", v="V") for t in templates}
        seen = {_frame(b, field) for b in bios}
        assert seen <= expected, seen - expected
        assert len(seen) >= 3, f"{field}: only {seen}"
    assert from_record(to_record(bios[0])) == bios[0]


def _frame(bio, field):
    """The sentence of ``field`` with its value, the name and the pronouns replaced by placeholders."""
    sentence = next(x for x in re.split(r"(?<=\.) ", bio.tagged) if f"<{field}>" in x)
    sentence = re.sub(rf"<{field}>.*?</{field}>", "V", sentence)
    sentence = sentence.replace(bio.name + "'s", "P").replace(bio.name, "S")
    sentence = re.sub(r"^(He|She) ", "S ", re.sub(r"^(His|Her) ", "P ", sentence))
    return sentence.replace(" his ", " p ").replace(" her ", " p ").replace(" he ", " s ").replace(" she ", " s ")


def test_generator_rejects_bad_counts():
    with pytest.raises(UsageError, match="number of biographies"):
        generate(0)
    with pytest.raises(UsageError, match="number of biographies"):
        generate(10**6)


def test_qa_items_use_other_people_as_shots():
    bios = generate(6, seed=0)
    items = build_items(bios, shots=3, seed=0)
    assert len(items) == 6 * len(FIELDS)
    for item in items:
        assert item.person_id not in item.shots and len(set(item.shots)) == 3
        assert item.prompt.endswith(f"Question: {QUESTIONS[item.field].format(name=item.name)}\nAnswer:")
        assert item.prompt.count("Question:") == 4
        assert item.answer == bios[item.person_id].fields[item.field]
    assert build_items(bios, shots=3, seed=0) == items
    with pytest.raises(UsageError, match="needs at least"):
        build_items(bios, shots=6)


def _shot_answers(item):
    return re.findall(r"Answer: (.+)\n", item.prompt)          # the query's own "Answer:" ends the prompt


def test_qa_shots_never_show_the_gold_answer():
    bios = generate(40, seed=0)
    by_id = {b.person_id: b for b in bios}
    items = build_items(bios, shots=3, seed=0)
    shared = sum(1 for i in items if any(normalize_answer(b.fields[i.field]) == normalize_answer(i.answer)
                                         for b in bios if b.person_id != i.person_id))
    assert shared > 40, shared                  # many people share a university / major / company / city
    for item in items:
        gold = normalize_answer(item.answer)
        assert len(item.shots) == 3 and len(_shot_answers(item)) == 3
        assert all(normalize_answer(by_id[p].fields[item.field]) != gold for p in item.shots), item
        assert all(normalize_answer(a) != gold for a in _shot_answers(item)), item.prompt


def test_qa_uses_as_many_shots_as_people_with_another_answer():
    bios = generate(5, seed=1)
    # persons 0..3 all work for "the Nimbus Robotics" / "Nimbus Robotics" (one answer once normalised)
    bios = [replace(b, fields={**b.fields, "company": "Nimbus Robotics" if b.person_id % 2 else
                               "the Nimbus Robotics"}) if b.person_id < 4 else
            replace(b, fields={**b.fields, "company": "Zephyr Telecom"}) for b in bios]
    items = {(i.person_id, i.field): i for i in build_items(bios, shots=3, seed=0)}
    for person in range(4):                     # one other person (4) has another company
        item = items[(person, "company")]
        assert item.shots == (4,) and _shot_answers(item) == ["Zephyr Telecom"]
        assert item.prompt.count("Question:") == 2
    last = items[(4, "company")]                # everyone else differs from person 4: a full 3 shots
    assert len(last.shots) == 3 and "Zephyr Telecom" not in _shot_answers(last)
    assert all(len(items[(p, "birth_date")].shots) == 3 for p in range(5))


def test_squad_normalisation_em_and_f1_by_hand():
    assert normalize_answer("  The  University of Leeds! ") == "university of leeds"
    assert normalize_answer("An apple, a pear") == "apple pear"
    assert exact_match("the University of Westmere", "University of Westmere.") == 1.0
    assert exact_match("Westmere", "University of Westmere") == 0.0
    # pred "University of Leeds" vs gold "the University of Westmere": common {university, of} = 2,
    # precision 2/3, recall 2/3 -> F1 2/3
    assert token_f1("University of Leeds", "the University of Westmere") == pytest.approx(2 / 3)
    # pred "12 May" vs gold "12 May 1990": precision 1, recall 2/3 -> F1 0.8
    assert token_f1("12 May", "12 May 1990") == pytest.approx(0.8)
    assert token_f1("Leeds", "Porto") == 0.0
    assert token_f1("the", "a") == 1.0                    # both empty after normalisation
    assert token_f1("the", "Leeds") == 0.0
    # repeated words count once per occurrence (multiset)
    assert token_f1("bank bank", "bank") == pytest.approx(2 * 0.5 * 1 / 1.5)
    assert cut_answer(" Leeds\nQuestion: next") == "Leeds"


def test_score_per_field_and_overall():
    bios = generate(4, seed=0)
    items = [i for i in build_items(bios, shots=1) if i.field in ("birth_city", "major")]
    preds = [i.answer if k % 2 == 0 else "nothing" for k, i in enumerate(items)]
    result = score(items, preds)
    n_city = sum(i.field == "birth_city" for i in items)
    assert set(result["fields"]) == {"birth_city", "major"}
    assert result["fields"]["birth_city"]["n"] == n_city == 4
    correct = sum(1 for k, _ in enumerate(items) if k % 2 == 0)
    assert result["overall"]["em"] == pytest.approx(100 * correct / len(items))
    assert result["overall"]["n"] == len(items)

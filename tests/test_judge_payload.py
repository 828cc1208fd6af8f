"""Pure parts of the judge: payload, anonymisation, order, cache key, reply validation, prices."""

import json

import pytest

from attn_transition.errors import UsageError
from attn_transition.evaluation.judge import JudgeOptions, RequestSpec, cost_usd, payload_for, plan_requests, price_for
from attn_transition.evaluation.judge.client import RetryPolicy, retry_after_seconds
from attn_transition.evaluation.judge.payload import (ReplyError, build_payload, cache_key, load_prompts,
                                                      parse_reply, presentation_order, response_format)

from fake_openai import KEYS, make_records


def _payload(**kw):
    args = dict(prompts=load_prompts(), protocol="joint", document="An article.", texts=["first", "second"],
                labels=["S1", "S2"], reference=None, response_format_mode="json_schema", temperature=0.0, seed=7)
    args.update(kw)
    return build_payload(**args)


def test_payload_shows_texts_under_labels_and_no_config_names():
    records = make_records(2)
    opts = JudgeOptions(judge_model="m")
    for spec in plan_requests(records, opts):
        payload, labels = payload_for(spec, records[spec.doc_index], opts, load_prompts())
        body = json.dumps(payload)
        assert "decode_" not in body and "al_05" not in body and "lay_" not in body, body
        user = payload["messages"][1]["content"]
        # each label is followed by the text of the key presented at that position
        for lab, key in zip(labels, spec.keys):
            assert f'<candidate id="{lab}">\n{records[spec.doc_index][key]}\n</candidate>' in user
        schema = payload["response_format"]["json_schema"]["schema"]
        assert schema["required"] == labels == ["S1", "S2", "S3", "S4"]
        assert schema["additionalProperties"] is False


def test_reference_only_when_asked():
    assert "A reference summary" not in json.dumps(_payload())
    with_ref = _payload(reference="The gold summary.")
    assert "The gold summary." in with_ref["messages"][1]["content"]


def test_response_format_modes():
    assert response_format(["S1"], "json_object") == {"type": "json_object"}
    assert response_format(["S1"], "none") is None
    assert "response_format" not in _payload(response_format_mode="none")
    with pytest.raises(UsageError, match="--response-format"):
        response_format(["S1"], "xml")


def test_order_is_a_seeded_shuffle_reproducible_and_varied():
    keys = [f"k{i}" for i in range(8)]
    a = presentation_order(keys, 0, 3, "id3", 1)
    assert a == presentation_order(keys, 0, 3, "id3", 1)            # reproducible
    assert sorted(a) == keys                                          # a permutation
    orders = {tuple(presentation_order(keys, 0, d, f"id{d}", r)) for d in range(5) for r in range(3)}
    assert len(orders) >= 12                                          # differs across documents and repeats
    assert presentation_order(keys, 1, 3, "id3", 1) != a              # another seed, another order


def test_single_protocol_plans_one_request_per_candidate_and_repeat():
    records = make_records(3)
    specs = plan_requests(records, JudgeOptions(protocol="single", repeats=2))
    assert len(specs) == 3 * 2 * len(KEYS)
    assert all(len(s.keys) == 1 for s in specs)
    joint = plan_requests(records, JudgeOptions(protocol="joint", repeats=2))
    assert len(joint) == 6 and all(sorted(s.keys) == sorted(KEYS) for s in joint)


def test_cache_key_depends_on_payload_model_and_base_url():
    p = _payload()
    k = cache_key(p, "m", "http://x/v1")
    assert k == cache_key(json.loads(json.dumps(p)), "m", "http://x/v1/")    # canonical, trailing slash ignored
    assert k != cache_key(p, "m2", "http://x/v1")
    assert k != cache_key(p, "m", "http://y/v1")
    assert k != cache_key(_payload(seed=8), "m", "http://x/v1")
    assert k != cache_key(_payload(texts=["second", "first"]), "m", "http://x/v1")


def test_reask_is_a_different_request():
    records = make_records(1)
    opts = JudgeOptions()
    spec = plan_requests(records, opts)[0]
    p0, _ = payload_for(spec, records[0], opts, load_prompts(), attempt=0)
    p1, _ = payload_for(spec, records[0], opts, load_prompts(), attempt=1)
    assert p0["messages"] == p1["messages"] and p0["seed"] != p1["seed"]


@pytest.mark.parametrize("content, expected", [
    ('{"S1": {"reason": "ok", "score": 70}, "S2": {"reason": "meh", "score": 0}}', {"S1": 70, "S2": 0}),
    ('```json\n{"S1": {"reason": "", "score": 100}, "S2": 5}\n```', {"S1": 100, "S2": 5}),
    ('{"S1": {"score": 70.0, "reason": "x"}, "S2": {"score": 1, "reason": "y"}}', {"S1": 70, "S2": 1}),
])
def test_parse_reply_accepts_complete_answers(content, expected):
    assert parse_reply(content, ["S1", "S2"]).scores == expected


@pytest.mark.parametrize("content, message", [
    ("S1: 70, S2: 40", "not valid JSON"),
    ('{"S1": {"reason": "", "score": 70}}', "missing S2"),
    ('{"S1": 1, "S2": 2, "S3": 3}', "unexpected S3"),
    ('{"S1": 101, "S2": 2}', "outside 0-100"),
    ('{"S1": "70", "S2": 2}', "not a number"),
    ('{"S1": true, "S2": 2}', "not a number"),
    ('{"S1": 70.5, "S2": 2}', "not an integer"),
    ('{"S1": {"reason": "no score"}, "S2": 2}', "no 'score'"),
    ('[70, 2]', "expected an object"),
    ("", "empty reply"),
    (None, "empty reply"),
])
def test_parse_reply_rejects_anything_incomplete(content, message):
    with pytest.raises(ReplyError, match=message):
        parse_reply(content, ["S1", "S2"])


def test_prices_table_overrides_and_unknown():
    opts = JudgeOptions(judge_model="gpt-4o")
    assert price_for("gpt-4o", opts)["input"] == 2.5
    assert price_for("gpt-4o-2024-08-06", opts)["output"] == 10.0          # dated snapshot
    assert price_for("gpt-4o-mini", opts)["input"] == 0.15                   # not confused with gpt-4o
    assert price_for("llama-3-8b", opts) is None
    assert cost_usd(1000, 1000, None) is None
    over = JudgeOptions(judge_model="llama", price_in=1.0, price_out=3.0)
    assert cost_usd(2_000_000, 1_000_000, price_for("llama", over)) == pytest.approx(5.0)


@pytest.mark.parametrize("kw, message", [
    ({"protocol": "pairwise"}, "protocol must be one of"), ({"repeats": 0}, "repeats must be an integer >= 1"),
    ({"concurrency": 0}, "concurrency must be"), ({"price_in": 1.0}, "give price_in and price_out together"),
    ({"temperature": 3.0}, "temperature must be in"), ({"response_format": "x"}, "response_format must be one of"),
    ({"reask": True}, "reask must be an integer"),
])
def test_options_validation_names_the_field(kw, message):
    with pytest.raises(UsageError, match=message) as info:
        JudgeOptions(**kw)
    assert next(iter(kw)) in (info.value.field if isinstance(info.value.field, tuple) else (info.value.field,))


def test_the_cli_words_option_errors_with_its_flags(tmp_path, capsys):
    from attn_transition.cli import main

    assert main(["judge", str(tmp_path / "x.json"), "--concurrency", "0", "--dry-run"]) == 2
    assert capsys.readouterr().err == "attn-transition judge: error: --concurrency must be an integer >= 1, got 0\n"
    assert main(["judge", str(tmp_path / "x.json"), "--price-in", "1", "--dry-run"]) == 2
    assert "give --price-in and --price-out together" in capsys.readouterr().err


def test_retry_after_headers_and_backoff():
    assert retry_after_seconds({"retry-after": "0.05"}) == 0.05
    assert retry_after_seconds({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    assert retry_after_seconds({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}) == 0.0    # in the past
    assert retry_after_seconds({"retry-after": "soon"}) is None
    assert retry_after_seconds({}) is None
    policy = RetryPolicy(base_delay=1.0, max_delay=8.0)
    delays = [policy.backoff(a, "k") for a in range(6)]
    assert delays == [policy.backoff(a, "k") for a in range(6)]                # deterministic
    for a, d in enumerate(delays):
        cap = min(8.0, 2.0 ** a)
        assert cap / 2 <= d <= cap, (a, d)


def test_request_spec_candidate():
    assert RequestSpec(0, 0, ("a",)).candidate == "a"
    assert RequestSpec(0, 0, ("a", "b")).candidate is None


def test_the_default_reply_limit_is_sized_from_the_schema_and_none_sends_none():
    from attn_transition.evaluation.judge.payload import reply_token_limit

    records = make_records(1)
    for protocol, n in (("joint", len(KEYS)), ("single", 1)):
        opts = JudgeOptions(judge_model="m", protocol=protocol)
        assert opts.max_tokens == "auto"
        for spec in plan_requests(records, opts):
            payload, labels = payload_for(spec, records[0], opts, load_prompts())
            assert len(labels) == n and payload["max_tokens"] == reply_token_limit(n) == 50 + 100 * n
    spec = plan_requests(records, JudgeOptions(judge_model="m"))[0]
    assert "max_tokens" not in payload_for(spec, records[0], JudgeOptions(judge_model="m", max_tokens=None),
                                           load_prompts())[0]
    assert payload_for(spec, records[0], JudgeOptions(judge_model="m", max_tokens=7), load_prompts())[0][
        "max_tokens"] == 7


@pytest.mark.parametrize("bad", [0, -3, True, 2.5, "none", "lots"])
def test_a_bad_reply_limit_is_refused_naming_the_field(bad):
    with pytest.raises(UsageError, match="max_tokens must be 'auto', None") as info:
        JudgeOptions(judge_model="m", max_tokens=bad)
    assert info.value.field == "max_tokens"


def test_max_tokens_flag_reads_auto_none_or_a_count(capsys):
    import argparse

    from attn_transition.cli import main
    from attn_transition.evaluation.judge.cli import max_tokens_arg

    assert (max_tokens_arg("auto"), max_tokens_arg("None"), max_tokens_arg("48")) == ("auto", None, 48)
    for bad in ("0", "-1", "4.5", "many"):
        with pytest.raises(argparse.ArgumentTypeError):
            max_tokens_arg(bad)
    assert main(["judge", "x.json", "--max-tokens", "0"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--max-tokens" in err and "auto, none or an integer >= 1" in err


def test_request_names_say_document_candidate_repeat_and_reask():
    from attn_transition.evaluation.judge.plan import request_name

    records = make_records(2)
    joint = JudgeOptions(judge_model="m", repeats=2)
    spec = plan_requests(records, joint)[3]
    assert request_name(spec, records[1], joint) == "document 'doc1' (4 candidates, repeat 2 of 2)"
    single = JudgeOptions(judge_model="m", protocol="single", reask=2)
    spec = plan_requests(records, single)[1]
    assert request_name(spec, records[0], single, attempt=1) == f"document 'doc0' ({spec.keys[0]}, re-ask 1 of 2)"

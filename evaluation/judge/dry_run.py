"""``--dry-run``: the first request's prompt and an estimate of what the run would send.

Requests the cache already settles (a cached valid reply, or every attempt cached and
malformed) cost nothing and are counted apart; the rest are estimated at about 4
characters per token, plus ``OUTPUT_TOKENS_PER_CANDIDATE`` reply tokens per candidate.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any, Optional

from ..seedformat import read_records
from .cache import JudgeCache
from .options import JudgeOptions
from .payload import OUTPUT_TOKENS_PER_CANDIDATE, ReplyError, cache_key, estimate_tokens, load_prompts, parse_reply
from .plan import RequestSpec, default_cache_path, payload_for, plan_requests, reply_problem
from .pricing import cost_usd, price_for

__all__ = ["dry_run"]


def _cached_outcome(spec: RequestSpec, record: dict, options: JudgeOptions, prompts: dict,
                    cache: JudgeCache) -> bool:
    """Whether the run would settle ``spec`` from the cache alone, walking the attempts as
    :func:`~.plan._judge_one` does: a cached valid reply, or every attempt cached and malformed."""
    previous = None
    for attempt in range(options.reask + 1):
        payload, labels = payload_for(spec, record, options, prompts, attempt, previous)
        hit = cache.get(cache_key(payload, options.judge_model, options.base_url))
        if hit is None:
            return False
        try:
            parse_reply(hit.get("content"), labels)
        except ReplyError as exc:
            previous = (hit.get("content"), reply_problem(exc, hit.get("finish_reason")))
            continue
        return True
    return True


def dry_run(outputs: str | os.PathLike, options: JudgeOptions, out: Any = None, *,
            cache_path: Optional[str | os.PathLike] = None, use_cache: bool = True) -> dict:
    """Print the first request's prompt and estimate tokens and cost of what the run would
    send: requests the cache already settles cost nothing and are counted apart."""
    out = out or sys.stdout
    records = read_records(outputs)
    specs = plan_requests(records, options)
    prompts = load_prompts()
    cache = JudgeCache(cache_path or default_cache_path(outputs), enabled=use_cache)
    prompt_tokens = completion_tokens = n_cached = 0
    first = None
    for spec in specs:
        payload, labels = payload_for(spec, records[spec.doc_index], options, prompts)
        first = first or payload
        if use_cache and _cached_outcome(spec, records[spec.doc_index], options, prompts, cache):
            n_cached += 1
            continue
        prompt_tokens += sum(estimate_tokens(m["content"]) for m in payload["messages"]) + 4 * len(payload["messages"])
        completion_tokens += OUTPUT_TOKENS_PER_CANDIDATE * len(labels)
    price = price_for(options.judge_model, options)
    cost = cost_usd(prompt_tokens, completion_tokens, price)
    assert first is not None
    print(f"--- first request ({options.protocol}, model {options.judge_model}, {options.base_url}) ---", file=out)
    for m in first["messages"]:
        print(f"[{m['role']}]\n{m['content']}\n", file=out)
    if "response_format" in first:
        print(f"[response_format] {json.dumps(first['response_format'])[:300]}...\n", file=out)
    cost_text = f"${cost:.2f} ({price['source']})" if cost is not None else \
        f"unknown (no price for {options.judge_model!r}; pass --price-in/--price-out)"
    in_cache = (f"{n_cached} already answered in the cache {cache.path} (cost nothing), "
                if use_cache else "cache not used (--no-cache), ")
    print(f"--- estimate for {outputs}: {len(records)} documents x {options.repeats} repeat(s) = {len(specs)} "
          f"requests; {in_cache}{len(specs) - n_cached} to send: ~{prompt_tokens:,} input + "
          f"~{completion_tokens:,} output tokens (~{OUTPUT_TOKENS_PER_CANDIDATE} per candidate; about 4 characters "
          f"per token; re-asks after bad replies not included), cost {cost_text}", file=out)
    return {"requests": len(specs), "cached_requests": n_cached, "requests_to_send": len(specs) - n_cached,
            "prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens, "cost_usd": cost,
            "first_payload": first}

"""``attn-transition judge OUTPUTS.json``: score generations with an LLM judge.

Reads a generation file in the seed's format (a JSON list of records with ``document``,
``summary``, ``id``, ``decode_or`` and one ``decode_<config>`` per setting) and asks an
OpenAI-compatible Chat Completions server for a 0-100 score of every candidate.

Protocols
  joint   the seed's: one request per document holding every candidate; cut-off endings
          and repetition are not penalised (wording: ``prompts/judge_prompts.json``).
  single  one request per candidate.
Candidates are anonymised (labels S1, S2, ...; no configuration name reaches the judge) and
shuffled per document and repeat with a recorded seed; ``--repeats N`` re-asks with other
orders, which measures the judge's own noise and position bias (see ``report``).

Replies must be JSON (``--response-format json_schema`` by default, a strict schema with
one entry per label); a malformed or incomplete reply is re-asked ``--reask`` times and
then recorded as a failure with its raw text -- never dropped or guessed.

Every answer is appended to a JSONL cache (default ``OUTPUTS.judge-cache.jsonl``) keyed
by a hash of the request payload, model and base URL: rerunning after a crash, Ctrl-C or
a server failure re-sends only what was not answered yet, and costs nothing already paid.

The scores file (default ``OUTPUTS.scores.json``, written atomically), format version 1::

    {"format": "attn_transition.judge_scores", "format_version": 1,
     "outputs": {"path": <generation file, relative to the scores file>, "sha256": str, "documents": int},
     "plain_key": "decode_or", "candidate_keys": [str, ...],
     "judge": {"model", "base_url", "protocol", "with_reference", "repeats", "seed", "temperature",
               "response_format", "max_tokens", "reask", "prompts": {"name", "version", "sha256"}},
     "usage": {"requests", "new_requests", "cached_requests", "http_requests",
               "prompt_tokens", "completion_tokens", "new_prompt_tokens", "new_completion_tokens",
               "price_usd_per_1m": {"input", "output", "source"} | null,
               "cost_usd": float | null, "new_cost_usd": float | null, "cost_note": str},
     "summary": {"documents", "complete_documents", "failed_requests", "bad_replies"},
     "documents": [{"index": int, "id": str,
                    "scores": {key: [score or null, one per repeat]},
                    "reasons": {key: [str or null, one per repeat]},
                    "orders": [[key, ...] per repeat] | null (joint: presented order, position 1 first),
                    "failures": [{"repeat", "candidate" (single) | null, "attempt", "error", "raw",
                                  "finish_reason", "recovered": bool,
                                  "http_status": int (only for a request the server refused)}]}]}

A failed repeat leaves ``null`` in ``scores``; ``failures`` holds every bad reply
(``recovered`` when a re-ask of the same repeat then succeeded) and every request the server
refused for its content (HTTP 400, e.g. ``context_length_exceeded``; ``raw`` is null, the
server's error text is in ``error``; not re-asked, not cached: a rerun asks again).
``failed_requests`` counts repeats left without scores; ``bad_replies`` counts bad replies only.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import threading
from collections import deque
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from attn_transition.commands import register_command
from attn_transition.errors import UsageError

from .judge_client import (DEFAULT_BASE_URL, Aborted, JudgeCache, JudgeClient, Rejected, RetryPolicy, file_sha256,
                           import_optional)
from .judge_payload import (OUTPUT_TOKENS_PER_CANDIDATE, PROMPTS_PATH, PROTOCOLS, RESPONSE_FORMATS, ReplyError,
                            build_payload, cache_key, estimate_tokens, load_prompts, make_labels, parse_reply,
                            presentation_order, request_seed)
from .seedformat import PLAIN_KEY, candidate_keys, read_records, write_json_atomic

__all__ = ["JudgeOptions", "RequestSpec", "plan_requests", "price_for", "cost_usd", "judge_records",
           "judge_file", "dry_run", "default_scores_path", "default_cache_path", "SCORES_FORMAT",
           "add_arguments", "run"]

SCORES_FORMAT = "attn_transition.judge_scores"
SCORES_FORMAT_VERSION = 1
DEFAULT_JUDGE_MODEL = "gpt-4o"
PRICES_PATH = Path(__file__).parent / "prompts" / "judge_prices.json"

EPILOG = """examples:
  attn-transition judge out.json --dry-run                       # one prompt + estimated tokens and cost
  export OPENAI_API_KEY=sk-...; attn-transition judge out.json   # gpt-4o, joint protocol -> out.scores.json
  attn-transition judge out.json --repeats 3 --protocol single --with-reference
  OPENAI_API_KEY=dummy attn-transition judge out.json --base-url http://localhost:8000/v1 --judge-model Qwen/Qwen2.5-7B-Instruct
  attn-transition report out.scores.json --markdown report.md

Rerunning the same command reuses every cached answer (out.judge-cache.jsonl): after a crash,
Ctrl-C or a server error only the missing requests are sent. A reply that stays malformed is
recorded as a failure (raw text in the scores file); rerun with a larger --reask to ask again
(only the new attempts are sent). A request the server refuses for its content (HTTP 400, e.g.
context_length_exceeded) is recorded as a failure with the server's message; the others go on.
"""


@dataclass(frozen=True)
class JudgeOptions:
    judge_model: str = DEFAULT_JUDGE_MODEL
    base_url: str = DEFAULT_BASE_URL
    protocol: str = "joint"
    repeats: int = 1
    seed: int = 0
    with_reference: bool = False
    response_format: str = "json_schema"
    temperature: float = 0.0
    max_tokens: Optional[int] = None
    reask: int = 2                   # extra requests after a malformed/incomplete reply
    concurrency: int = 4
    max_retries: int = 6
    timeout: float = 120.0
    price_in: Optional[float] = None
    price_out: Optional[float] = None

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise UsageError(f"--protocol must be one of {', '.join(PROTOCOLS)}, got {self.protocol!r}")
        if self.response_format not in RESPONSE_FORMATS:
            raise UsageError(f"--response-format must be one of {', '.join(RESPONSE_FORMATS)}, "
                             f"got {self.response_format!r}")
        for name, low in (("repeats", 1), ("concurrency", 1), ("reask", 0), ("max_retries", 0)):
            value = getattr(self, name)
            if not isinstance(value, int) or value < low:
                raise UsageError(f"--{name.replace('_', '-')} must be an integer >= {low}, got {value!r}")
        if not 0.0 <= self.temperature <= 2.0:
            raise UsageError(f"--temperature must be in [0, 2], got {self.temperature!r}")
        if self.max_tokens is not None and self.max_tokens < 1:
            raise UsageError(f"--max-tokens must be >= 1, got {self.max_tokens!r}")
        if not self.timeout > 0:
            raise UsageError(f"--timeout must be > 0 seconds, got {self.timeout!r}")
        if (self.price_in is None) != (self.price_out is None):
            raise UsageError("give --price-in and --price-out together (USD per 1M input / output tokens)")
        for name in ("price_in", "price_out"):
            value = getattr(self, name)
            if value is not None and not value >= 0:
                raise UsageError(f"--{name.replace('_', '-')} must be >= 0 USD per 1M tokens, got {value!r}")
        if not self.judge_model:
            raise UsageError("--judge-model must not be empty")


@dataclass(frozen=True)
class RequestSpec:
    """One request to make: document, repeat, and the candidates it shows, in order."""

    doc_index: int
    repeat: int
    keys: tuple[str, ...]            # presented order; one key for the 'single' protocol

    @property
    def candidate(self) -> Optional[str]:
        return self.keys[0] if len(self.keys) == 1 else None


@dataclass
class TrialResult:
    spec: RequestSpec
    scores: Optional[dict[str, int]]          # key -> score; None when every attempt failed
    reasons: Optional[dict[str, str]]
    failures: list[dict] = field(default_factory=list)
    new: list[tuple[int, int]] = field(default_factory=list)      # (prompt, completion) tokens, sent now
    cached: list[tuple[int, int]] = field(default_factory=list)   # same, answered from the cache


# -- pure planning ------------------------------------------------------------------------------
def record_keys(records: Sequence[dict]) -> list[str]:
    """Candidate keys of the file (those of the first record); every record must have the same set."""
    if not records:
        raise UsageError("the generation file holds no records")
    keys = candidate_keys(records[0])
    if not keys:
        raise UsageError(f"record 0 (id {records[0].get('id')!r}) has no 'decode_*' candidate fields")
    for i, rec in enumerate(records):
        ks = candidate_keys(rec)
        if set(ks) != set(keys):
            diff = sorted(set(ks) ^ set(keys))
            raise UsageError(f"record {i} (id {rec.get('id')!r}) has candidate fields differing from record 0: "
                             f"{', '.join(diff)}; every record must hold the same configurations")
    return keys


def plan_requests(records: Sequence[dict], options: JudgeOptions) -> list[RequestSpec]:
    """Every request of the run, in a fixed order (document, repeat, candidate)."""
    keys = record_keys(records)
    specs: list[RequestSpec] = []
    for i, rec in enumerate(records):
        for r in range(options.repeats):
            if options.protocol == "joint":
                specs.append(RequestSpec(i, r, tuple(presentation_order(keys, options.seed, i, str(rec["id"]), r))))
            else:
                specs.extend(RequestSpec(i, r, (k,)) for k in keys)
    return specs


def payload_for(spec: RequestSpec, record: dict, options: JudgeOptions, prompts: dict,
                attempt: int = 0) -> tuple[dict, list[str]]:
    """Payload and labels of one request (pure)."""
    labels = make_labels(len(spec.keys), prompts.get("label_prefix", "S"))
    payload = build_payload(
        prompts=prompts, protocol=options.protocol, document=record["document"],
        texts=[record[k] for k in spec.keys], labels=labels,
        reference=record["summary"] if options.with_reference else None,
        response_format_mode=options.response_format, temperature=options.temperature,
        seed=request_seed(options.seed, spec.doc_index, spec.repeat, attempt, spec.candidate or ""),
        max_tokens=options.max_tokens)
    return payload, labels


# -- prices -------------------------------------------------------------------------------------
def price_for(model: str, options: JudgeOptions, table_path: Path = PRICES_PATH) -> Optional[dict]:
    """USD per 1M tokens for ``model``: the overrides, else the table (exact name or a dated
    snapshot of it), else ``None`` (cost unknown)."""
    if options.price_in is not None:
        return {"input": float(options.price_in), "output": float(options.price_out), "source": "--price-in/--price-out"}
    table = json.loads(table_path.read_text(encoding="utf-8"))
    prices = table["usd_per_1m_tokens"]
    name = model.split("/")[-1]
    base = re.sub(r"-\d{4}-\d{2}-\d{2}$", "", name)
    for candidate in (name, base):
        if candidate in prices:
            return {"input": float(prices[candidate]["input"]), "output": float(prices[candidate]["output"]),
                    "source": f"price table {table['version']} ({candidate})"}
    return None


def cost_usd(prompt_tokens: int, completion_tokens: int, price: Optional[dict]) -> Optional[float]:
    if price is None:
        return None
    return (prompt_tokens * price["input"] + completion_tokens * price["output"]) / 1e6


# -- running ------------------------------------------------------------------------------------
def _judge_one(spec: RequestSpec, record: dict, options: JudgeOptions, prompts: dict,
               client: JudgeClient) -> TrialResult:
    result = TrialResult(spec, None, None)
    for attempt in range(options.reask + 1):
        payload, labels = payload_for(spec, record, options, prompts, attempt)
        try:
            comp = client.complete(payload, cache_key(payload, options.judge_model, options.base_url))
        except Rejected as exc:        # e.g. context_length_exceeded: a re-ask would be rejected alike
            result.failures.append({"repeat": spec.repeat, "candidate": spec.candidate, "attempt": attempt,
                                    "error": str(exc), "raw": None, "finish_reason": None, "recovered": False,
                                    "http_status": exc.status})
            break
        (result.cached if comp.cached else result.new).append((comp.prompt_tokens, comp.completion_tokens))
        try:
            reply = parse_reply(comp.content, labels)
        except ReplyError as exc:
            error = str(exc)
            if comp.finish_reason == "length":
                error += " (the reply hit the token limit: raise --max-tokens)"
            result.failures.append({"repeat": spec.repeat, "candidate": spec.candidate, "attempt": attempt,
                                    "error": error, "raw": comp.content, "finish_reason": comp.finish_reason,
                                    "recovered": False})
            continue
        result.scores = {key: reply.scores[lab] for key, lab in zip(spec.keys, labels)}
        result.reasons = {key: reply.reasons[lab] for key, lab in zip(spec.keys, labels)}
        for failure in result.failures:
            failure["recovered"] = True
        break
    return result


def _run_pool(specs: Sequence[RequestSpec], work: Callable[[RequestSpec], TrialResult], concurrency: int,
              stop: threading.Event, on_result: Optional[Callable[[TrialResult], None]],
              progress: bool) -> dict[RequestSpec, TrialResult]:
    """Run ``work`` over ``specs`` with at most ``concurrency`` requests in flight. A new
    request is submitted only after a result was handled, so an interrupt (or an exception
    raised by ``on_result``) leaves at most ``concurrency - 1`` extra requests running."""
    from tqdm import tqdm

    results: dict[RequestSpec, TrialResult] = {}
    pending: dict[Future, RequestSpec] = {}
    queue = deque(specs)
    stop.clear()
    pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="judge")
    bar = tqdm(total=len(specs), desc="judge", unit="req", disable=not progress, file=sys.stderr)
    fatal: Optional[BaseException] = None
    try:
        while queue or pending:
            while queue and len(pending) < concurrency and fatal is None:
                spec = queue.popleft()
                pending[pool.submit(work, spec)] = spec
            if not pending:
                break
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                spec = pending.pop(fut)
                try:
                    res = fut.result()
                except Aborted:
                    continue
                except BaseException as exc:        # UsageError from the client: stop the run
                    if fatal is None:
                        fatal = exc
                        stop.set()
                    continue
                results[spec] = res
                bar.update(1)
                if on_result is not None:
                    on_result(res)
            if fatal is not None and not pending:
                break
    except BaseException:
        stop.set()
        pool.shutdown(wait=False, cancel_futures=True)
        bar.close()
        raise
    pool.shutdown(wait=True)
    bar.close()
    if fatal is not None:
        raise fatal
    return results


def judge_records(records: Sequence[dict], options: JudgeOptions, client: JudgeClient, *,
                  on_result: Optional[Callable[[TrialResult], None]] = None, progress: bool = True) -> dict:
    """Judge every record; returns the scores document (without the ``outputs`` block)."""
    keys = record_keys(records)
    prompts = load_prompts()
    specs = plan_requests(records, options)
    work = lambda spec: _judge_one(spec, records[spec.doc_index], options, prompts, client)  # noqa: E731
    results = _run_pool(specs, work, options.concurrency, client.stop, on_result, progress)

    by_doc: dict[int, list[RequestSpec]] = {}
    for spec in specs:
        by_doc.setdefault(spec.doc_index, []).append(spec)
    documents = []
    new_pt = new_ct = old_pt = old_ct = n_new = n_cached = failed = bad = 0
    for i, rec in enumerate(records):
        scores: dict[str, list] = {k: [None] * options.repeats for k in keys}
        reasons: dict[str, list] = {k: [None] * options.repeats for k in keys}
        orders: Optional[list] = [] if options.protocol == "joint" else None
        failures: list[dict] = []
        for spec in by_doc.get(i, []):
            res = results[spec]
            if orders is not None:
                orders.append(list(spec.keys))
            failures.extend(res.failures)
            bad += sum("http_status" not in f for f in res.failures)      # replies; not requests the server refused
            for pt, ct in res.new:
                new_pt, new_ct, n_new = new_pt + pt, new_ct + ct, n_new + 1
            for pt, ct in res.cached:
                old_pt, old_ct, n_cached = old_pt + pt, old_ct + ct, n_cached + 1
            if res.scores is None:
                failed += 1
                continue
            for key, value in res.scores.items():
                scores[key][spec.repeat] = value
                reasons[key][spec.repeat] = res.reasons[key]
        documents.append({"index": i, "id": str(rec["id"]), "scores": scores, "reasons": reasons,
                          "orders": orders, "failures": failures})
    complete = sum(all(v is not None for vals in d["scores"].values() for v in vals) for d in documents)
    price = price_for(options.judge_model, options)
    total_cost = cost_usd(new_pt + old_pt, new_ct + old_ct, price)
    usage = {
        "requests": n_new + n_cached, "new_requests": n_new, "cached_requests": n_cached,
        "http_requests": client.sent,
        "prompt_tokens": new_pt + old_pt, "completion_tokens": new_ct + old_ct,
        "new_prompt_tokens": new_pt, "new_completion_tokens": new_ct,
        "price_usd_per_1m": price, "cost_usd": total_cost, "new_cost_usd": cost_usd(new_pt, new_ct, price),
        "cost_note": ("tokens as counted by the server's 'usage'; cost = tokens x price" if price else
                      f"cost unknown: no price for {options.judge_model!r} in the table; "
                      f"pass --price-in/--price-out (USD per 1M tokens)"),
    }
    prompt_data = load_prompts()
    judge_meta = {k: v for k, v in asdict(options).items()
                  if k not in ("concurrency", "max_retries", "timeout", "price_in", "price_out")}
    judge_meta = {"model": judge_meta.pop("judge_model"), **judge_meta}
    judge_meta["prompts"] = {"name": prompt_data["name"], "version": prompt_data["version"],
                             "sha256": file_sha256(PROMPTS_PATH)}
    return {"format": SCORES_FORMAT, "format_version": SCORES_FORMAT_VERSION, "plain_key": PLAIN_KEY,
            "candidate_keys": keys, "judge": judge_meta, "usage": usage,
            "summary": {"documents": len(records), "complete_documents": complete, "failed_requests": failed,
                        "bad_replies": bad},
            "documents": documents}


def default_scores_path(outputs: str | os.PathLike) -> Path:
    p = Path(outputs)
    return p.with_name(p.stem + ".scores.json")


def default_cache_path(outputs: str | os.PathLike) -> Path:
    p = Path(outputs)
    return p.with_name(p.stem + ".judge-cache.jsonl")




def make_client(options: JudgeOptions, cache: JudgeCache, *, api_key: Optional[str] = None,
                sleep: Optional[Callable[[float], None]] = None) -> JudgeClient:
    """The official ``openai`` client (its own retries off) wrapped with cache and retries."""
    key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY")
    if not key:
        hint = ("export OPENAI_API_KEY=sk-..." if options.base_url == DEFAULT_BASE_URL else
                "a local server that needs no key still needs a placeholder: export OPENAI_API_KEY=dummy")
        raise UsageError(f"OPENAI_API_KEY is not set; {hint} (or use --base-url for a local OpenAI-compatible "
                         f"server; --dry-run needs no key)")
    OpenAI = import_optional("openai", "the judge").OpenAI

    client = OpenAI(api_key=key, base_url=options.base_url, max_retries=0, timeout=options.timeout)
    return JudgeClient(client, options.judge_model, options.base_url, cache,
                       RetryPolicy(max_retries=options.max_retries), sleep=sleep,
                       cache_path_hint=str(cache.path) if cache.enabled else "")


def judge_file(outputs: str | os.PathLike, options: JudgeOptions, *, scores_path: Optional[str | os.PathLike] = None,
               cache_path: Optional[str | os.PathLike] = None, use_cache: bool = True, api_key: Optional[str] = None,
               sleep: Optional[Callable[[float], None]] = None,
               on_result: Optional[Callable[[TrialResult], None]] = None, progress: bool = True,
               client: Optional[JudgeClient] = None) -> tuple[Path, dict]:
    """Judge a generation file and write the scores file; returns (path, scores document)."""
    outputs = Path(outputs)
    records = read_records(outputs)
    record_keys(records)
    scores_path = Path(scores_path) if scores_path else default_scores_path(outputs)
    cache = JudgeCache(cache_path or default_cache_path(outputs), enabled=use_cache)
    if client is None:
        client = make_client(options, cache, api_key=api_key, sleep=sleep)
    doc = judge_records(records, options, client, on_result=on_result, progress=progress)
    rel = os.path.relpath(outputs.resolve(), scores_path.resolve().parent)
    doc = {"format": doc.pop("format"), "format_version": doc.pop("format_version"),
           "outputs": {"path": rel, "sha256": file_sha256(outputs), "documents": len(records)}, **doc}
    write_json_atomic(scores_path, doc)
    return scores_path, doc


def _cached_outcome(spec: RequestSpec, record: dict, options: JudgeOptions, prompts: dict,
                    cache: JudgeCache) -> bool:
    """Whether the run would settle ``spec`` from the cache alone, walking the attempts as
    :func:`_judge_one` does: a cached valid reply, or every attempt cached and malformed."""
    for attempt in range(options.reask + 1):
        payload, labels = payload_for(spec, record, options, prompts, attempt)
        hit = cache.get(cache_key(payload, options.judge_model, options.base_url))
        if hit is None:
            return False
        try:
            parse_reply(hit.get("content"), labels)
        except ReplyError:
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


# -- command line -------------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("outputs", metavar="OUTPUTS.json", help="generation file in the seed's format")
    parser.add_argument("-o", "--output", metavar="PATH", help="scores file (default: OUTPUTS.scores.json)")
    parser.add_argument("--judge-model", default=DEFAULT_JUDGE_MODEL, help=f"judge model (default {DEFAULT_JUDGE_MODEL})")
    parser.add_argument("--base-url", default=DEFAULT_BASE_URL,
                        help="OpenAI-compatible server, e.g. http://localhost:8000/v1 (vLLM), "
                             "http://localhost:8080/v1 (llama.cpp), http://localhost:11434/v1 (Ollama)")
    parser.add_argument("--protocol", choices=PROTOCOLS, default="joint",
                        help="joint: all candidates of a document in one request (the seed's); single: one per request")
    parser.add_argument("--with-reference", action="store_true", help="show the reference summary to the judge")
    parser.add_argument("--repeats", type=int, default=1, help="ask N times with other candidate orders (judge noise)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the candidate orders and request seeds")
    parser.add_argument("--response-format", choices=RESPONSE_FORMATS, default="json_schema",
                        help="structured output mode the server supports (replies are validated strictly anyway)")
    parser.add_argument("--temperature", type=float, default=0.0)
    parser.add_argument("--max-tokens", type=int, default=None, help="reply token limit (default: the server's)")
    parser.add_argument("--reask", type=int, default=2, help="re-asks after a malformed/incomplete reply")
    parser.add_argument("--concurrency", type=int, default=4, help="requests in flight at once")
    parser.add_argument("--max-retries", type=int, default=6, help="retries on 429/5xx/timeouts (backoff)")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per request")
    parser.add_argument("--cache", metavar="PATH", help="answer cache (default: OUTPUTS.judge-cache.jsonl)")
    parser.add_argument("--no-cache", action="store_true", help="neither read nor write the answer cache")
    parser.add_argument("--price-in", type=float, help="USD per 1M input tokens (overrides the table)")
    parser.add_argument("--price-out", type=float, help="USD per 1M output tokens (overrides the table)")
    parser.add_argument("--dry-run", action="store_true",
                        help="print one prompt, how many requests the cache already answers, and the estimated "
                             "tokens/cost of the rest; send nothing")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def options_from_args(args: argparse.Namespace) -> JudgeOptions:
    return JudgeOptions(judge_model=args.judge_model, base_url=args.base_url.rstrip("/"), protocol=args.protocol,
                        repeats=args.repeats, seed=args.seed, with_reference=args.with_reference,
                        response_format=args.response_format, temperature=args.temperature,
                        max_tokens=args.max_tokens, reask=args.reask, concurrency=args.concurrency,
                        max_retries=args.max_retries, timeout=args.timeout, price_in=args.price_in,
                        price_out=args.price_out)


def _fmt_cost(value: Optional[float]) -> str:
    return "unknown" if value is None else f"${value:.4f}"


def run(args: argparse.Namespace) -> int:
    options = options_from_args(args)
    if args.dry_run:
        dry_run(args.outputs, options, cache_path=args.cache, use_cache=not args.no_cache)
        return 0
    path, doc = judge_file(args.outputs, options, scores_path=args.output, cache_path=args.cache,
                           use_cache=not args.no_cache, progress=not args.quiet)
    u, s = doc["usage"], doc["summary"]
    print(f"wrote {path}: {s['complete_documents']}/{s['documents']} documents fully scored, "
          f"{s['failed_requests']} failed request(s), {s['bad_replies']} bad repl(ies) recorded")
    print(f"usage: {u['requests']} answers ({u['new_requests']} new, {u['cached_requests']} cached), "
          f"{u['prompt_tokens']:,} input + {u['completion_tokens']:,} output tokens, cost {_fmt_cost(u['cost_usd'])} "
          f"(this run {_fmt_cost(u['new_cost_usd'])})")
    if u["cost_usd"] is None:
        print(f"note: {u['cost_note']}")
    return 0

register_command('judge', help='score generations with an LLM judge (OpenAI-compatible API)',
                 add_arguments=add_arguments, run=run, epilog=EPILOG)

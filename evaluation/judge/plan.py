"""Running the judge over a generation file: which requests to make, a bounded worker pool
that sends them, and the scores file that collects the answers.

Every request is planned up front (:func:`plan_requests`: document, repeat, and the
candidates it shows in their presented order); :func:`judge_records` sends them through a
:class:`~.client.JudgeClient` with at most ``concurrency`` in flight, re-asks after a bad
reply, and folds the answers into the scores document; :func:`judge_file` reads the
generation file and writes that document next to it.

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

import json
import os
import sys
import threading
from collections import deque
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

from attn_transition.errors import UsageError

from ..runtime.files import check_paths
from ..seedformat import PLAIN_KEY, candidate_keys, read_records, write_json_atomic
from .cache import JudgeCache, file_sha256
from .client import DEFAULT_BASE_URL, Aborted, JudgeClient, Rejected, RetryPolicy, import_optional
from .options import JudgeOptions
from .payload import (PROMPTS_PATH, ReplyError, build_payload, cache_key, load_prompts, make_labels, parse_reply,
                      presentation_order, request_seed, with_reask)
from .pricing import cost_usd, price_for

__all__ = ["LOCAL_PLACEHOLDER_KEY", "is_loopback", "request_name", "RequestSpec", "TrialResult", "record_keys",
           "plan_requests", "payload_for", "judge_records", "make_client", "judge_file", "default_scores_path",
           "default_cache_path", "SCORES_FORMAT", "SCORES_FORMAT_VERSION"]

SCORES_FORMAT = "attn_transition.judge_scores"
SCORES_FORMAT_VERSION = 1


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


# -- planning (pure) ----------------------------------------------------------------------------
def record_keys(records: Sequence[dict]) -> list[str]:
    """Candidate keys of the file (those of the first record); every record must have the same set."""
    if not records:
        raise UsageError("the generation file holds no records; run `attn-transition generate` first to make "
                         "the candidates to judge")
    keys = candidate_keys(records[0])
    if not keys:
        raise UsageError(f"record 0 (id {records[0].get('id')!r}) has no 'decode_*' candidate fields: nothing to "
                         f"judge; run `attn-transition generate` on its documents first")
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
                attempt: int = 0, previous: Optional[tuple[Optional[str], str]] = None) -> tuple[dict, list[str]]:
    """Payload and labels of one request (pure). A re-ask (``attempt`` > 0) carries ``previous``:
    the reply that failed and what was wrong with it (:func:`~.payload.with_reask`)."""
    labels = make_labels(len(spec.keys), prompts.get("label_prefix", "S"))
    payload = build_payload(
        prompts=prompts, protocol=options.protocol, document=record["document"],
        texts=[record[k] for k in spec.keys], labels=labels,
        reference=record["summary"] if options.with_reference else None,
        response_format_mode=options.response_format, temperature=options.temperature,
        seed=request_seed(options.seed, spec.doc_index, spec.repeat, attempt, spec.candidate or ""),
        max_tokens=options.reply_limit(len(labels)))
    if previous is not None:
        payload = with_reask(payload, *previous)
    return payload, labels


def reply_problem(exc: ReplyError, finish_reason: Optional[str]) -> str:
    """What was wrong with a reply, as recorded and as told to the judge on a re-ask."""
    error = str(exc)
    if finish_reason == "length":
        error += " (the reply hit the token limit: raise --max-tokens)"
    return error


def request_name(spec: RequestSpec, record: dict, options: JudgeOptions, attempt: int = 0) -> str:
    """How the lines said about one request name it: the document id, then its candidate's key
    (``single``) or how many it shows (``joint``), the repeat and the re-ask when there are several,
    e.g. ``document 'd7' (decode_or, repeat 2 of 3)`` or ``document 'd7' (25 candidates, re-ask 1 of 2)``."""
    shown = [spec.keys[0] if options.protocol == "single" else f"{len(spec.keys)} candidates"]
    if options.repeats > 1:
        shown.append(f"repeat {spec.repeat + 1} of {options.repeats}")
    if attempt > 0:
        shown.append(f"re-ask {attempt} of {options.reask}")
    return f"document {str(record.get('id'))!r} ({', '.join(shown)})"


# -- running ------------------------------------------------------------------------------------
def _judge_one(spec: RequestSpec, record: dict, options: JudgeOptions, prompts: dict,
               client: JudgeClient) -> TrialResult:
    result = TrialResult(spec, None, None)
    previous: Optional[tuple[Optional[str], str]] = None       # (reply, what was wrong) of the last attempt
    for attempt in range(options.reask + 1):
        payload, labels = payload_for(spec, record, options, prompts, attempt, previous)
        try:
            comp = client.complete(payload, cache_key(payload, options.judge_model, options.base_url),
                                   request_name(spec, record, options, attempt))
        except Rejected as exc:        # e.g. context_length_exceeded: a re-ask would be rejected alike
            result.failures.append({"repeat": spec.repeat, "candidate": spec.candidate, "attempt": attempt,
                                    "error": str(exc), "raw": None, "finish_reason": None, "recovered": False,
                                    "http_status": exc.status})
            break
        (result.cached if comp.cached else result.new).append((comp.prompt_tokens, comp.completion_tokens))
        try:
            reply = parse_reply(comp.content, labels)
        except ReplyError as exc:
            if options.response_format != "none" and not _is_json(comp.content):
                client.say_once("not-json", f"judge: a reply is not JSON although --response-format "
                                            f"{options.response_format} asked for JSON: the server seems to ignore "
                                            f"response_format (transformers serve does: pass --response-format none "
                                            f"there); such replies are re-asked and recorded as failures (see "
                                            f"--reask)")
            error = reply_problem(exc, comp.finish_reason)
            result.failures.append({"repeat": spec.repeat, "candidate": spec.candidate, "attempt": attempt,
                                    "error": error, "raw": comp.content, "finish_reason": comp.finish_reason,
                                    "recovered": False})
            previous = (comp.content, error)
            continue
        result.scores = {key: reply.scores[lab] for key, lab in zip(spec.keys, labels)}
        result.reasons = {key: reply.reasons[lab] for key, lab in zip(spec.keys, labels)}
        for failure in result.failures:
            failure["recovered"] = True
        break
    return result


def _is_json(text: Optional[str]) -> bool:
    """Whether ``text`` is a JSON value (code fences around it allowed, as some servers add them)."""
    if text is None:
        return False
    body = text.strip()
    if body.startswith("```"):
        body = body.strip("`").removeprefix("json").strip()
    try:
        json.loads(body)
    except ValueError:
        return False
    return True


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
    judge_meta["stand_in"] = client.stand_in        # the offline stand-in answered: not a judgement
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


LOCAL_PLACEHOLDER_KEY = "placeholder-for-a-local-server"


def is_loopback(base_url: str) -> bool:
    """Whether ``base_url`` names this machine (127.0.0.0/8, localhost, ::1)."""
    import ipaddress
    from urllib.parse import urlsplit

    try:
        host = urlsplit(base_url).hostname or ""
    except ValueError:
        return False
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# -- files --------------------------------------------------------------------------------------
def make_client(options: JudgeOptions, cache: JudgeCache, *, api_key: Optional[str] = None,
                sleep: Optional[Callable[[float], None]] = None) -> JudgeClient:
    """The official ``openai`` client (its own retries off) wrapped with cache and retries."""
    key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY")
    placeholder = not key and is_loopback(options.base_url)
    if placeholder:
        key = LOCAL_PLACEHOLDER_KEY              # a server on this machine: the client needs some key
    if not key:
        hint = ("export OPENAI_API_KEY=sk-..." if options.base_url == DEFAULT_BASE_URL else
                "export the server's key, or for a server that needs none a placeholder: export "
                "OPENAI_API_KEY=dummy (a server on this machine needs no key)")
        raise UsageError(f"OPENAI_API_KEY is not set; {hint} (or use --base-url for a local OpenAI-compatible "
                         f"server; --dry-run needs no key)")
    OpenAI = import_optional("openai", "the judge").OpenAI

    client = OpenAI(api_key=key, base_url=options.base_url, max_retries=0, timeout=options.timeout)
    return JudgeClient(client, options.judge_model, options.base_url, cache,
                       RetryPolicy(max_retries=options.max_retries), sleep=sleep,
                       cache_path_hint=str(cache.path) if cache.enabled else "", concurrency=options.concurrency,
                       placeholder_key=placeholder)


def judge_file(outputs: str | os.PathLike, options: JudgeOptions, *, scores_path: Optional[str | os.PathLike] = None,
               cache_path: Optional[str | os.PathLike] = None, use_cache: bool = True, api_key: Optional[str] = None,
               sleep: Optional[Callable[[float], None]] = None,
               on_result: Optional[Callable[[TrialResult], None]] = None, progress: bool = True,
               client: Optional[JudgeClient] = None) -> tuple[Path, dict]:
    """Judge a generation file and write the scores file; returns (path, scores document)."""
    outputs = Path(outputs)
    scores_path = Path(scores_path) if scores_path else default_scores_path(outputs)
    cache_path = Path(cache_path or default_cache_path(outputs))
    check_paths(inputs={"input": outputs}, outputs={"scores": scores_path, "cache": cache_path if use_cache else None})
    records = read_records(outputs)
    record_keys(records)
    cache = JudgeCache(cache_path, enabled=use_cache)
    if client is None:
        client = make_client(options, cache, api_key=api_key, sleep=sleep)
    if progress:
        kept = f"kept in {cache.path} as they arrive" if cache.enabled else "not kept (--no-cache)"
        client.say(f"judge: asking {options.judge_model} at {options.base_url} ({options.concurrency} request(s) at "
                   f"a time, --timeout {options.timeout:g} s, --max-retries {options.max_retries}); answers {kept}")
    try:
        doc = judge_records(records, options, client, on_result=on_result, progress=progress)
    except KeyboardInterrupt:
        if not cache.enabled:
            kept = "answers were not kept (--no-cache)"
        elif len(cache) and cache.path.exists():
            kept = f"every answer received so far is kept in {cache.path}; rerun the same command to continue"
        else:
            kept = "no answer had arrived yet, so nothing was kept"
        client.say(f"judge: interrupted; {kept}")
        raise
    rel = os.path.relpath(outputs.resolve(), scores_path.resolve().parent)
    doc = {"format": doc.pop("format"), "format_version": doc.pop("format_version"),
           "outputs": {"path": rel, "sha256": file_sha256(outputs), "documents": len(records)}, **doc}
    write_json_atomic(scores_path, doc)
    return scores_path, doc

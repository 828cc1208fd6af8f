"""``attn-transition judge OUTPUTS.json``: score generations with an LLM judge.

Thin layer: parses options into :class:`~.options.JudgeOptions` and calls
:func:`~.dry_run.dry_run` or :func:`~.plan.judge_file`, then prints the totals.
"""

from __future__ import annotations

import argparse
import sys
from typing import Optional, Union

from attn_transition.commands import register_command
from attn_transition.errors import UsageError

from ..runtime.files import check_outputs
from ..runtime.requirements import require_judge_client
from .client import DEFAULT_BASE_URL
from .dry_run import dry_run
from .options import DEFAULT_JUDGE_MODEL, JudgeOptions
from .payload import (MAX_TOKENS_AUTO, PROTOCOLS, REPLY_TOKENS_BASE, REPLY_TOKENS_PER_CANDIDATE,
                      RESPONSE_FORMATS)
from .plan import default_cache_path, default_scores_path, judge_file

__all__ = ["EPILOG", "add_arguments", "options_from_args", "run", "max_tokens_arg", "check_output_flags"]

EPILOG = """examples:
  attn-transition judge out.json --dry-run                       # one prompt + estimated tokens and cost
  export OPENAI_API_KEY=sk-...; attn-transition judge out.json   # gpt-4o, joint protocol -> out.scores.json
  attn-transition judge out.json --repeats 3 --protocol single --with-reference
  attn-transition judge out.json --base-url http://localhost:8000/v1 --judge-model Qwen/Qwen2.5-7B-Instruct  # no key needed
  attn-transition judge out.json --stand-in                      # offline stand-in, no key: NOT a judgement
  attn-transition report out.scores.json --markdown report.md

Rerunning the same command reuses every cached answer (out.judge-cache.jsonl): after a crash,
Ctrl-C or a server error only the missing requests are sent. A reply that stays malformed is
recorded as a failure (raw text in the scores file); rerun with a larger --reask to ask again
(only the new attempts are sent). A request the server refuses for its content (HTTP 400, e.g.
context_length_exceeded) is recorded as a failure with the server's message; the others go on.
Every retry and timeout is told as it happens, one line on stderr naming the document (and the
candidate, with --protocol single). A server slower than --timeout: the timed-out request's
connection is closed (a server that stops work on a closed request frees it), the run goes on one
request at a time, and repeated timeouts say what to rerun with (a larger --timeout, --concurrency 1).
A --base-url on this machine (127.0.0.1, localhost, ::1) needs no OPENAI_API_KEY. transformers serve
ignores response_format: add --response-format none (replies are still checked as strictly).
"""


def max_tokens_arg(text: str) -> Union[int, str, None]:
    """``--max-tokens``: ``auto``, ``none`` (None: no limit sent) or an integer >= 1."""
    word = text.strip().lower()
    if word == MAX_TOKENS_AUTO:
        return MAX_TOKENS_AUTO
    if word == "none":
        return None
    try:
        value = int(word)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not auto, none or an integer >= 1")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("outputs", metavar="OUTPUTS.json", help="generation file in the seed's format")
    parser.add_argument("-o", "--output", metavar="PATH", help="scores file (default: OUTPUTS.scores.json)")
    parser.add_argument("--judge-model", default=DEFAULT_JUDGE_MODEL, help=f"judge model (default {DEFAULT_JUDGE_MODEL})")
    parser.add_argument("--base-url", default=DEFAULT_BASE_URL,
                        help="OpenAI-compatible server, e.g. http://localhost:8000/v1 (vLLM, or transformers "
                             "serve with --response-format none), http://localhost:8080/v1 (llama.cpp), "
                             "http://localhost:11434/v1 (Ollama)")
    parser.add_argument("--protocol", choices=PROTOCOLS, default="joint",
                        help="joint: all candidates of a document in one request (the seed's); single: one per request")
    parser.add_argument("--with-reference", action="store_true", help="show the reference summary to the judge")
    parser.add_argument("--repeats", type=int, default=1, help="ask N times with other candidate orders (judge noise)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the candidate orders and request seeds")
    parser.add_argument("--response-format", choices=RESPONSE_FORMATS, default="json_schema",
                        help="structured output mode the server supports (replies are validated strictly anyway)")
    parser.add_argument("--temperature", type=float, default=0.0, help="sampling temperature of the judge, in [0, 2]")
    parser.add_argument("--max-tokens", type=max_tokens_arg, default=MAX_TOKENS_AUTO, metavar="auto|none|N",
                        help=f"reply token limit. auto (default): sized from the reply schema, "
                             f"{REPLY_TOKENS_BASE} + {REPLY_TOKENS_PER_CANDIDATE} per candidate shown (the reply is "
                             f"one label, a one-sentence reason and a score per candidate, about 45 tokens each), "
                             f"so a reply that rambles is cut short and re-asked instead of running past --timeout "
                             f"on a slow server; none: send no limit (the server's own); N: that many tokens")
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
    parser.add_argument("--stand-in", action="store_true",
                        help="judge against the offline stand-in server, started here: NOT a judgement (it scores "
                             "each text by a hash), to try the pipeline without a key or a network; writes "
                             "OUTPUTS.stand-in.scores.json unless -o, caches nothing, and the report says "
                             "'not a judgement'")


def options_from_args(args: argparse.Namespace) -> JudgeOptions:
    return JudgeOptions(judge_model=args.judge_model, base_url=args.base_url.rstrip("/"), protocol=args.protocol,
                        repeats=args.repeats, seed=args.seed, with_reference=args.with_reference,
                        response_format=args.response_format, temperature=args.temperature,
                        max_tokens=args.max_tokens, reask=args.reask, concurrency=args.concurrency,
                        max_retries=args.max_retries, timeout=args.timeout, price_in=args.price_in,
                        price_out=args.price_out)


def _fmt_cost(value: Optional[float]) -> str:
    return "unknown" if value is None else f"${value:.4f}"


STAND_IN_MODEL = "stand-in"


def _stand_in_run(args: argparse.Namespace) -> int:
    """``--stand-in``: the stand-in server in this process, the judge against it."""
    from pathlib import Path

    from .testing import FakeJudgeServer

    if args.base_url.rstrip("/") != DEFAULT_BASE_URL:
        raise UsageError("--stand-in starts its own server: drop --base-url")
    outputs = Path(args.outputs)
    with FakeJudgeServer(models=(STAND_IN_MODEL,)) as server:
        args.base_url, args.judge_model = server.base_url, STAND_IN_MODEL
        args.output = args.output or str(outputs.with_name(outputs.stem + ".stand-in.scores.json"))
        args.no_cache, args.stand_in = True, False
        args.price_in = args.price_out = 0.0                # nothing is paid
        print("judge: --stand-in: the offline stand-in answers (scores are a hash of each text): NOT a judgement",
              file=sys.stderr)
        return run(args)


def check_output_flags(args: argparse.Namespace) -> None:
    """Before any request: the scores file and the answer cache a run writes (given or default)
    can be written, else a one-line UsageError naming ``-o`` or ``--cache``."""
    scores = args.output or str(default_scores_path(args.outputs))
    cache = None if args.no_cache else (args.cache or str(default_cache_path(args.outputs)))
    check_outputs(files={"-o": scores, "--cache": cache})


def run(args: argparse.Namespace) -> int:
    if args.stand_in and not args.dry_run:
        return _stand_in_run(args)
    options = options_from_args(args)
    if not args.dry_run:                      # a dry run writes nothing
        check_output_flags(args)
        require_judge_client()
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
                 add_arguments=add_arguments, run=run, epilog=EPILOG,
                 flags={"scores": "-o/--output", "cache": "--cache", "input": "OUTPUTS.json",
                        **{name: "--" + name.replace("_", "-") for name in (
                            "judge_model", "protocol", "response_format", "repeats", "concurrency", "reask",
                            "max_retries", "temperature", "max_tokens", "timeout", "price_in", "price_out")}})

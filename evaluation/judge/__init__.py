"""``attn-transition judge``: score generations with an LLM judge.

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
then recorded as a failure with its raw text -- never dropped or guessed. Each reply is
bounded by ``--max-tokens`` (``auto``: 50 + 100 tokens per candidate shown, sized from that
schema; ``none``: the server's limit).

Every answer is appended to a JSONL cache (default ``OUTPUTS.judge-cache.jsonl``) keyed
by a hash of the request payload, model and base URL: rerunning after a crash, Ctrl-C or
a server failure re-sends only what was not answered yet, and costs nothing already paid.

Layers, each usable on its own:

* :mod:`.payload`: what one request shows, its payload and cache key, strict reply parsing (pure);
* :mod:`.options`: :class:`JudgeOptions`, the settings of a run;
* :mod:`.cache`: the append-only JSONL answer cache;
* :mod:`.client`: the retrying Chat Completions call (official ``openai`` client);
* :mod:`.pricing`: prices per 1M tokens and the cost of a run;
* :mod:`.plan`: request planning, the worker pool, the scores file (schema there);
* :mod:`.dry_run`: one prompt and the estimated tokens and cost, nothing sent;
* :mod:`.scores`: judged scores (ours or a seed file) read into one table;
* :mod:`.testing`: an offline stand-in server for demos and tests (not a judge);
* :mod:`.cli`: the command.
"""

from .cache import JudgeCache
from .client import DEFAULT_BASE_URL, JudgeClient, RetryPolicy
from .dry_run import dry_run
from .options import DEFAULT_JUDGE_MODEL, JudgeOptions
from .plan import (SCORES_FORMAT, RequestSpec, TrialResult, default_cache_path, default_scores_path, judge_file,
                   judge_records, make_client, payload_for, plan_requests, record_keys)
from .pricing import cost_usd, price_for
from .scores import ScoreTable, load_scores

__all__ = ["JudgeOptions", "DEFAULT_JUDGE_MODEL", "DEFAULT_BASE_URL", "RequestSpec", "TrialResult", "record_keys",
           "plan_requests", "payload_for", "price_for", "cost_usd", "judge_records", "judge_file", "make_client",
           "dry_run", "default_scores_path", "default_cache_path", "SCORES_FORMAT", "JudgeCache", "JudgeClient",
           "RetryPolicy", "ScoreTable", "load_scores"]

"""Time per prompt of vLLM stock vs vLLM with the attention-transition plugin (CPU or GPU).

One engine per setting (stock, then one per ``--config``), all started first and alive together;
then rounds: in each round every length is run on every engine, the engine order rotated from
round to round (interleaved, so a slower period of a shared machine falls on every setting),
each prompt fresh (random token ids, a new seed per round and length), one request at a time:

- one ``generate`` of ``1 + --decode-steps`` new tokens per prompt, timed by the engine's own
  timestamps (``RequestOutput.metrics``, with ``disable_log_stats=False``): prefill from the
  request's scheduling to its first token, decode per token from the first token to the last.

Prefix caching is off on every engine (each is started with ``enable_prefix_caching=False``, the
plugin's as well as the stock one, so both compute every prompt in full; with the plugin it would be
salted by each request's config and width, see docs/vllm.md). The report gives, per length, each setting's
median seconds and its ratio to stock (ratio of medians, and the median of the per-round ratios).

    .venv-vllm/bin/python benchmarks/vllm_bench.py --tokens 1024,2048,4096 --rounds 3 --out runs/vllm-bench
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="smollm2-135m", help="embedded model name or a model folder (default smollm2-135m)")
    p.add_argument("--tokens", default="1024,2048,4096", help="prompt lengths, comma-separated")
    p.add_argument("--config", action="append", default=None, help="transition config (repeatable; default classic and sra)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    p.add_argument("--decode-steps", type=int, default=16, help="tokens timed for decode (default 16)")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--out", default="runs/vllm-bench", help="output folder (results.json, table.md)")
    args = p.parse_args(argv)
    args.tokens = [int(t) for t in args.tokens.split(",")]
    args.config = args.config or ["classic", "sra"]
    return args


def model_folder(model: str) -> str:
    from attn_transition.evaluation.models import resolve_model

    return resolve_model(model)


def start_engines(folder: str, configs: list[str], args: argparse.Namespace) -> dict[str, Any]:
    # Every engine is alive at once: without a size, each CPU engine takes most of the machine's memory
    # for its KV cache (VLLM_CPU_KVCACHE_SPACE, GiB; one request of 4k tokens needs a fraction of one).
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    from vllm import LLM

    engines = {}
    for name in ["stock", *configs]:
        extra = {} if name == "stock" else {"additional_config": {"attn_transition": name}}
        started = time.perf_counter()
        engines[name] = LLM(model=folder, dtype=args.dtype, enforce_eager=True, seed=0, skip_tokenizer_init=True,
                            max_model_len=max(args.tokens) + args.decode_steps + 8, enable_prefix_caching=False,
                            disable_log_stats=False, **extra)
        print(f"engine {name}: started in {time.perf_counter() - started:.0f} s", flush=True)
    return engines


def timed(llm: Any, prompt: list[int], new_tokens: int) -> tuple[float, float]:
    """(prefill seconds, decode seconds per token) of one request, from the engine's own timestamps
    (``RequestOutput.metrics``: scheduled, first token, last token; the engine core's monotonic clock)."""
    from vllm import SamplingParams

    params = SamplingParams(max_tokens=new_tokens, min_tokens=new_tokens, temperature=0.0, detokenize=False)
    (output,) = llm.generate([{"prompt_token_ids": prompt}], params, use_tqdm=False)
    m = output.metrics
    return m.first_token_ts - m.scheduled_ts, (m.last_token_ts - m.first_token_ts) / max(new_tokens - 1, 1)


def run(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    folder = model_folder(args.model)
    engines = start_engines(folder, args.config, args)
    vocab = engines["stock"].llm_engine.model_config.get_vocab_size()
    names = list(engines)
    for name in names:                                           # warm-up: one short prompt each
        timed(engines[name], list(range(10, 138)), 2)
    rows: list[dict[str, Any]] = []
    for r in range(args.rounds):
        for n in args.tokens:
            g = torch.Generator().manual_seed(1000 * r + n)
            prompt = torch.randint(10, vocab, (n,), generator=g).tolist()
            order = names[r % len(names):] + names[:r % len(names)]
            for name in order:
                prefill, decode = timed(engines[name], prompt, 1 + args.decode_steps)
                rows.append({"round": r, "tokens": n, "setting": name, "prefill_s": prefill,
                             "decode_s_per_token": decode})
                print(f"round {r} {n:>5} tokens {name:>8}: prefill {prefill:.3f} s, "
                      f"decode {rows[-1]['decode_s_per_token'] * 1e3:.1f} ms/token", flush=True)
    return {"model": args.model, "dtype": args.dtype, "settings": names, "tokens": args.tokens,
            "rounds": args.rounds, "decode_steps": args.decode_steps, "threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count(), "rows": rows}


def table(result: dict[str, Any]) -> str:
    lines = ["| tokens | setting | prefill s (median) | prefill ratio | paired ratio (median) | decode ms/token | decode ratio |",
             "|---|---|---|---|---|---|---|"]
    for n in result["tokens"]:
        by = {s: [r for r in result["rows"] if r["tokens"] == n and r["setting"] == s] for s in result["settings"]}
        base_p = statistics.median(r["prefill_s"] for r in by["stock"])
        base_d = statistics.median(r["decode_s_per_token"] for r in by["stock"])
        for s in result["settings"]:
            p = statistics.median(r["prefill_s"] for r in by[s])
            d = statistics.median(r["decode_s_per_token"] for r in by[s])
            paired = statistics.median(a["prefill_s"] / b["prefill_s"] for a, b in zip(by[s], by["stock"]))
            lines.append(f"| {n} | {s} | {p:.3f} | {p / base_p:.2f}x | {paired:.2f}x | {d * 1e3:.1f} | "
                         f"{d / base_d if base_d else float('nan'):.2f}x |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    args = parse_args(argv)
    result = run(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(result, indent=1))
    text = table(result)
    (out / "table.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

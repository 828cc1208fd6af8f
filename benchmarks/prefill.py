"""Prefill time and peak memory: stock model vs attention transition, side by side.

One run, one input, every variant measured in turn (interleaved repeats, so drift in
machine load hits all variants alike); results are printed as ratios to the stock
model. Variants:

- ``stock``        the model as loaded (sdpa)
- ``classic``      ``enable(model, ClassicConfig())``: only the edited rows are explicit
- ``sra``          ``enable(model, SRAConfig())``
- ``full-matrix``  ``enable(model, ClassicConfig(), full_matrix=True)``: every layer's full
                   attention matrix materialised, as the reference implementation does

Peak memory: on CUDA ``torch.cuda.max_memory_allocated``; on CPU each variant runs once
more in a fresh subprocess where a sampling thread reads the resident set size
(``/proc/self/statm``) during the prefill and reports its peak above the level before
it. The subprocess sets ``MALLOC_MMAP_THRESHOLD_`` so that large tensors are returned to
the system when freed and the resident size follows live memory.

    python benchmarks/prefill.py                       # SmolLM2-135M, 4096 tokens, CPU
    python benchmarks/prefill.py --tokens 2048 --repeats 3 --json prefill.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time

import torch

VARIANTS = ("stock", "classic", "sra", "full-matrix")


def _configure(model, variant: str):
    import attn_transition as at

    if variant == "stock":
        if at.is_enabled(model):
            at.disable(model)
    elif variant == "classic":
        at.enable(model, at.ClassicConfig())
    elif variant == "sra":
        at.enable(model, at.SRAConfig())
    elif variant == "full-matrix":
        at.enable(model, at.ClassicConfig(), full_matrix=True)
    else:
        raise SystemExit(f"unknown variant {variant!r}; choose from {', '.join(VARIANTS)}")


def _input(model, tokens: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    vocab = model.config.vocab_size
    return torch.randint(10, vocab - 10, (1, tokens), generator=g)


def _prefill(model, ids: torch.Tensor) -> float:
    if ids.is_cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    with torch.no_grad():
        model(ids, use_cache=False, logits_to_keep=1)
    if ids.is_cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - start


def _load(args):
    from attn_transition.evaluation.models import load_model

    model, _ = load_model(args.model, device=args.device, dtype=args.dtype)
    return model


def _memory_child(args) -> None:
    """Run one variant once in this fresh process; print the peak RSS growth in bytes."""
    model = _load(args)
    ids = _input(model, args.tokens, args.seed).to(args.device)
    _configure(model, args.child)
    with torch.no_grad():
        model(ids[:, :64], use_cache=False, logits_to_keep=1)     # warm up allocator and kernels
    page = os.sysconf("SC_PAGE_SIZE")

    def rss() -> int:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * page

    before = rss()
    peak = [before]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], rss())
            time.sleep(0.0005)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _prefill(model, ids)
    done.set()
    sampler.join()
    print(json.dumps({"peak_growth_bytes": max(peak[0], rss()) - before}))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--tokens", type=int, default=4096)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--json", default=None, help="also write the results here")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.child:
        _memory_child(args)
        return 0

    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    model = _load(args)
    ids = _input(model, args.tokens, args.seed).to(args.device)
    print(f"model {args.model} ({model.config.model_type}, {model.config.num_hidden_layers} layers), "
          f"{args.tokens} tokens, {args.device} {args.dtype}, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}", flush=True)
    for v in variants:                                   # warm-up pass per variant (short input)
        _configure(model, v)
        _prefill(model, ids[:, :256])
    times: dict[str, list[float]] = {v: [] for v in variants}
    for r in range(args.repeats):
        for v in (variants if r % 2 == 0 else variants[::-1]):
            _configure(model, v)
            if args.device.startswith("cuda"):
                torch.cuda.reset_peak_memory_stats()
            times[v].append(_prefill(model, ids))
            print(f"  repeat {r + 1}/{args.repeats} {v:12s} {times[v][-1]:7.2f} s", flush=True)
    _configure(model, "stock")

    memory: dict[str, float | None] = {}
    if not args.skip_memory:
        for v in variants:
            if args.device.startswith("cuda"):
                _configure(model, v)
                torch.cuda.reset_peak_memory_stats()
                base = torch.cuda.memory_allocated()
                _prefill(model, ids)
                memory[v] = torch.cuda.max_memory_allocated() - base
            else:
                cmd = [sys.executable, __file__, "--child", v, "--model", args.model, "--tokens", str(args.tokens),
                       "--device", args.device, "--dtype", args.dtype, "--seed", str(args.seed)]
                if args.threads:
                    cmd += ["--threads", str(args.threads)]
                env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="131072")
                out = subprocess.run(cmd, capture_output=True, text=True, env=env)
                if out.returncode != 0:                  # keep the timings measured above
                    last = (out.stderr.strip().splitlines() or ["no output"])[-1]
                    print(f"  memory of {v}: the measuring process failed ({last}); reported as n/a", flush=True)
                    memory[v] = None
                    continue
                memory[v] = json.loads(out.stdout.strip().splitlines()[-1])["peak_growth_bytes"]
        _configure(model, "stock")

    stock_t = statistics.median(times["stock"]) if "stock" in times else None
    stock_m = memory.get("stock")
    rows = []
    print(f"\n| variant | prefill s (median of {args.repeats}) | time vs stock | peak memory MiB | memory vs stock |")
    print("|---|---|---|---|---|")
    for v in variants:
        t = statistics.median(times[v])
        m = memory.get(v)
        rt = t / stock_t if stock_t else None
        rm = (m / stock_m) if (m is not None and stock_m) else None
        rows.append({"variant": v, "seconds": times[v], "median_s": t, "time_ratio": rt,
                     "peak_bytes": m, "memory_ratio": rm})
        mem_text = f"{m / 2**20:.0f}" if m is not None else "n/a"
        print(f"| {v} | {t:.2f} | {rt:.2f}x | {mem_text} | {f'{rm:.2f}x' if rm is not None else 'n/a'} |")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"model": args.model, "tokens": args.tokens, "device": args.device, "dtype": args.dtype,
                       "threads": torch.get_num_threads(), "torch": torch.__version__,
                       "machine": platform.machine(), "cpu_count": os.cpu_count(), "rows": rows}, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())

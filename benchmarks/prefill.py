"""Prefill time, peak memory and decode latency: stock model vs attention transition, as a
sweep over prompt lengths.

For each length the variants run on the same random prompt and are reported as ratios to
the stock model:

- ``stock``        the model as loaded (sdpa)
- ``classic``      ``enable(model, ClassicConfig())``: only the edited rows are explicit
- ``sra``          ``enable(model, SRAConfig())``
- ``full-matrix``  ``enable(model, ClassicConfig(), full_matrix=True)``: every layer's full
                   attention matrix materialised, as the reference implementation does
                   (slow; only when named in ``--variants``)
- any other registered schedule by its name (``attn_transition.schedule_names()``: one an
  installed package declares in the entry-point group ``attn_transition.schedules``), with its
  default config unless ``--config`` gives one (only when named in ``--variants``)

``--config SPEC`` (repeatable, e.g. ``classic:min_length=0``) replaces the config of the
variants of that schedule (``full-matrix`` uses the classic one); ``--max-chunk-mib N`` is
passed on as ``enable(..., max_chunk_mib=N)`` (``none``: ``max_chunk_mib=None``), only when
given; the JSON records the value in effect (given, or ``enable``'s default).

How each figure is measured:

- Prefill time: one forward pass over the whole prompt (``use_cache=False``,
  ``logits_to_keep=1``). Every variant gets a short warm-up (and on CUDA one full-length
  stock pass warms the allocator); then ``--repeats`` rounds run every variant once, in
  the opposite order each round, so drift in machine load hits all variants alike. The
  median is reported.
- Peak memory: growth above the level right before the prefill. On CUDA
  ``torch.cuda.max_memory_allocated`` during the timed passes. On CPU each variant runs
  once more in a fresh subprocess (all lengths, shortest first) where a sampling thread
  reads the resident set size (``/proc/self/statm``); the subprocess sets
  ``MALLOC_MMAP_THRESHOLD_`` so that large tensors go back to the system when freed and
  the resident size follows live memory.
- Decode latency (``--decode-tokens``, default the largest ``--tokens`` length): each variant
  prefills the prompt once with a cache (with that variant on), takes one untimed step,
  then ``--decode-rounds`` rounds (alternating order again; short rounds, so that the
  machine's drift hits every variant alike) time ``--decode-steps`` greedy steps of one
  token each; ms/token is the median over rounds (each round's figure and its
  minor page faults per token are in the JSON). The cache keeps growing across rounds (a few
  tokens on a long prompt), equally for every variant.
- Ratios to stock: of the medians (``time_ratio``, ``decode_ratio``, the plot's), and paired by
  round (``time_ratio_paired``, ``decode_ratio_paired``: the median over rounds of the variant's
  figure over stock's in the same round). Round ``i`` of every variant ran back to back, so
  the paired ratio cancels drift between rounds that the ratio of medians only averages out.
- Rows edited: the share of (layer, query row) pairs the schedule edits at that length
  (from ``attn_transition.layer_plan``), the work the transition adds to the stock pass.

The plot shows the time, memory and decode ratios against the length (time and decode paired by
round where every row has the paired figure, as the targets are read). Its dashed line at
1.0x is the physical limit: the stock model's own cost, what a transition that costs
nothing would show (the edited rows are a small share of all rows, about 2/(L+1) of a
layer's rows for classic, but that share is not a time bound: the edited rows are
recomputed on top of the stock pass). The dotted lines are the targets: 1.10x for prefill
time, 1.02x for decode.

Models: an embedded name (``smollm2-135m``, ``gemma3-270m``), a folder or hub id, or a
random-weight model built from a config (nothing downloaded): ``random:smollm2-135m``
(SmolLM2-135M's shape), ``random:llama3-8b`` (Llama-3-8B's shape) or ``random:tiny`` (for
tests). Time and memory depend on the shape, not on the weights, so a random model stands
in for the real one; its context is raised to fit the longest prompt (prompt plus decode
steps). A real model refuses lengths
beyond its ``max_position_embeddings``.

``--pad N`` prefills a padded batch instead of one prompt: two rows, the prompt and its last
``n - N`` tokens left-padded by ``N`` (what ``generate`` runs on a batch of prompts of two
lengths), so every call carries a padding mask. Prefill only (``--decode-tokens none``).

``--optional-tokens`` lengths are tried after the others, for lengths that may not fit in
memory. The JSON file is rewritten after every length, so a run that dies later keeps what
it measured.

Outputs: a markdown table on stdout, and ``--json`` (default
``<--out>/prefill-sweep.json``) with the same table beside it as ``.md`` and the plot as
``.png`` (``--plot``). ``--merge A.json [B.json ...]`` combines earlier result files (for
each length, the last file that has it) into one JSON, table and plot without measuring;
with one file it redraws that file's table and plot. Exit status: 0; 1 if a measurement
of a ``--tokens`` length failed (it is reported as n/a and the rest kept; failures at
``--optional-tokens`` lengths are reported only); 2 for a usage error.

    python benchmarks/prefill.py                                  # random:smollm2-135m, 2k..16k, CPU
    python benchmarks/prefill.py --model smollm2-135m --tokens 2048,4096,8192 --decode-tokens 4096
    python benchmarks/prefill.py --model random:llama3-8b --device cuda --tokens 8k,32k,64k \\
        --optional-tokens 128k                                    # bfloat16 on CUDA

One script of about 900 lines, not a package, on purpose: it must run as ``python
benchmarks/prefill.py`` (also copied alone to a GPU machine) and be read top to bottom; its
sections are the models, the measurements (time, memory in subprocesses, decode), the
sweep, and the output (table, JSON, plot).
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

VARIANTS = ("stock", "classic", "sra", "full-matrix")      # the built-in ones; variant_names() adds the rest
DEFAULT_VARIANTS = "stock,classic,sra"


def variant_names() -> list[str]:
    """``stock``, every registered schedule's name (``classic`` and ``sra`` first), ``full-matrix``."""
    import attn_transition as at

    others = [name for name in at.schedule_names() if name not in VARIANTS]
    return [*VARIANTS[:3], *others, VARIANTS[3]]
DEFAULT_TOKENS = "2048,4096,8192,16384"
DEFAULT_MODEL = "random:smollm2-135m"
TIME_TARGET = 1.10
DECODE_TARGET = 1.02
WARMUP_TOKENS = 64

# Shapes of the random-weight models (LlamaConfig fields). max_position_embeddings is raised
# to fit the longest prompt of a run.
RANDOM_SHAPES: dict[str, dict[str, Any]] = {
    "llama3-8b": dict(vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                      num_attention_heads=32, num_key_value_heads=8, rope_theta=500000.0, rms_norm_eps=1e-5,
                      max_position_embeddings=8192, tie_word_embeddings=False,
                      bos_token_id=128000, eos_token_id=128001),
    "smollm2-135m": dict(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                         num_attention_heads=9, num_key_value_heads=3, rope_theta=100000.0, rms_norm_eps=1e-5,
                         max_position_embeddings=8192, tie_word_embeddings=True,
                         bos_token_id=1, eos_token_id=2),
    "tiny": dict(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=6,
                 num_attention_heads=4, num_key_value_heads=2, rope_theta=10000.0, rms_norm_eps=1e-5,
                 max_position_embeddings=2048, tie_word_embeddings=True, bos_token_id=1, eos_token_id=2),
}
RANDOM_PREFIX = "random:"
# Contexts of the embedded models, to refuse a too-long run before converting one (about a minute).
EMBEDDED_CONTEXT = {"smollm2-135m": 8192, "gemma3-270m": 32768}


def fail(message: str) -> None:
    """A usage error: one line on stderr, exit status 2."""
    print(f"prefill.py: error: {message}", file=sys.stderr)
    raise SystemExit(2)


# ----------------------------------------------------------------------------- arguments

def parse_lengths(text: str) -> list[int]:
    """``"2048,4k,8192"`` -> ``[2048, 4096, 8192]`` (sorted, unique; ``k`` means 1024)."""
    lengths = []
    for item in filter(None, (p.strip().lower() for p in text.split(","))):
        scale = 1024 if item.endswith("k") else 1
        try:
            value = int(item[:-1] if scale > 1 else item) * scale
        except ValueError:
            fail(f"--tokens takes a comma list of lengths like 2048,4096 or 8k,16k, got {item!r}")
        if value < 1:
            fail(f"--tokens lengths must be >= 1, got {item!r}")
        lengths.append(value)
    if not lengths:
        fail("--tokens needs at least one length")
    return sorted(set(lengths))


def decode_lengths(spec: str, lengths: list[int], everything: list[int]) -> list[int]:
    """Which lengths get a decode measurement: ``max`` (the largest of ``--tokens``), ``all``
    (every length, optional ones too), ``none`` or a comma list."""
    spec = spec.strip().lower()
    if spec == "max":
        return [max(lengths)]
    if spec == "all":
        return list(everything)
    if spec in ("none", "0", ""):
        return []
    chosen = parse_lengths(spec)
    missing = [n for n in chosen if n not in everything]
    if missing:
        fail(f"--decode-tokens {missing} are not among the measured lengths {everything}")
    return chosen


def parse_variants(text: str) -> list[str]:
    variants = [v.strip() for v in text.split(",") if v.strip()]
    names = variant_names()
    unknown = [v for v in variants if v not in names]
    if unknown or not variants:
        fail(f"unknown variant(s) {unknown or text!r}; choose from {', '.join(names)}")
    if "stock" not in variants:
        variants.insert(0, "stock")                       # every ratio needs it
    return list(dict.fromkeys(variants))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=DEFAULT_MODEL,
                        help=f"random:{{{','.join(RANDOM_SHAPES)}}}, an embedded name, a folder or a hub id "
                             f"(default {DEFAULT_MODEL})")
    parser.add_argument("--tokens", default=DEFAULT_TOKENS, help=f"comma list of prompt lengths (default {DEFAULT_TOKENS})")
    parser.add_argument("--optional-tokens", default=None,
                        help="lengths tried after --tokens whose failure (e.g. out of memory) is reported but "
                             "does not change the exit status")
    parser.add_argument("--repeats", type=int, default=2, help="timed rounds per length (default 2)")
    parser.add_argument("--variants", default=DEFAULT_VARIANTS,
                        help=f"comma list from {', '.join(VARIANTS)} or another registered schedule's name "
                             f"(default {DEFAULT_VARIANTS})")
    parser.add_argument("--config", action="append", default=[], metavar="SPEC",
                        help="config of the variants of one schedule, e.g. classic:min_length=0 (repeatable)")
    parser.add_argument("--max-chunk-mib", default=None, metavar="N",
                        help="passed as enable(..., max_chunk_mib=N), 'none' for None; omitted unless given")
    parser.add_argument("--decode-tokens", default="max",
                        help="lengths to measure decode at: max (default), all, none or a comma list")
    parser.add_argument("--decode-rounds", type=int, default=8,
                        help="interleaved decode rounds, each variant once per round (default 8)")
    parser.add_argument("--decode-steps", type=int, default=4, help="greedy decode steps per round (default 4)")
    parser.add_argument("--pad", type=int, default=0, metavar="N",
                        help="prefill a batch of two rows, the second left-padded by N tokens (default 0: one row)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default=None, choices=("float32", "bfloat16", "float16"),
                        help="weights dtype (default bfloat16 on CUDA, float32 otherwise)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-memory", action="store_true", help="do not measure peak memory")
    parser.add_argument("--memory-jobs", type=int, default=1,
                        help="CPU memory processes run at a time (default 1; each holds a copy of the model)")
    parser.add_argument("--out", default="results/prefill", help="folder for the default output files")
    parser.add_argument("--json", default=None, help="results file (default <out>/prefill-sweep.json)")
    parser.add_argument("--plot", default=None, help="plot file (default: the JSON path with .png)")
    parser.add_argument("--no-plot", action="store_true")
    parser.add_argument("--merge", nargs="+", default=None, metavar="JSON",
                        help="combine earlier result files into --json (and its table and plot); measure nothing")
    parser.add_argument("--memory-child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--positions", type=int, default=None, help=argparse.SUPPRESS)   # the parent's context
    return parser


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if args.dtype is None:
        args.dtype = "bfloat16" if args.device.startswith("cuda") else "float32"
    if args.repeats < 1:
        fail(f"--repeats must be >= 1, got {args.repeats}")
    if args.memory_jobs < 1:
        fail(f"--memory-jobs must be >= 1, got {args.memory_jobs}")
    if args.decode_steps < 1:
        fail(f"--decode-steps must be >= 1, got {args.decode_steps}")
    if args.decode_rounds < 1:
        fail(f"--decode-rounds must be >= 1, got {args.decode_rounds}")
    if args.pad < 0:
        fail(f"--pad must be >= 0, got {args.pad}")
    if args.pad and args.decode_tokens != "none":
        fail(f"--pad {args.pad} measures the prefill only; add --decode-tokens none")
    args.enable_kwargs = {}
    if args.max_chunk_mib is not None:
        args.enable_kwargs["max_chunk_mib"] = parse_chunk_mib(args.max_chunk_mib)
    args.json = Path(args.json) if args.json else Path(args.out) / "prefill-sweep.json"
    args.plot = None if args.no_plot else (Path(args.plot) if args.plot else args.json.with_suffix(".png"))
    return args


# ----------------------------------------------------------------------------- models

def random_config(name: str, positions: int):
    """The LlamaConfig of ``random:<name>``, its context raised to ``positions`` if shorter."""
    from transformers import LlamaConfig

    if name not in RANDOM_SHAPES:
        fail(f"unknown random model {RANDOM_PREFIX}{name}; choose from "
             f"{', '.join(RANDOM_PREFIX + n for n in RANDOM_SHAPES)}")
    shape = dict(RANDOM_SHAPES[name])
    shape["max_position_embeddings"] = max(shape["max_position_embeddings"], positions)
    return LlamaConfig(**shape)


def build_random_model(name: str, *, device: str, dtype: str, positions: int, seed: int):
    """A random-weight model of a known shape, created directly on ``device``."""
    import torch
    from transformers import AutoModelForCausalLM

    config = random_config(name, positions)
    torch.manual_seed(seed)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=getattr(torch, dtype), attn_implementation="sdpa")
    return model.eval()


def refuse_context(name: str, limit: int, positions: int) -> None:
    same = f"random:{name}" if name in RANDOM_SHAPES else "random:..."
    fail(f"{name}'s context is {limit} tokens (max_position_embeddings) and this run needs {positions} positions "
         f"(prompt + decode steps); use shorter --tokens or the same shape with random weights (--model {same})")


def load_pretrained_model(name: str, *, device: str, dtype: str, positions: int):
    """An embedded model, folder or hub id; refuses a prompt longer than its context."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from attn_transition.errors import UsageError
    from attn_transition.evaluation.models import resolve_model

    if positions > EMBEDDED_CONTEXT.get(name, positions):
        refuse_context(name, EMBEDDED_CONTEXT[name], positions)
    try:
        where = resolve_model(name)
        limit = getattr(AutoConfig.from_pretrained(where), "max_position_embeddings", None)
    except (UsageError, OSError, ValueError) as exc:
        fail(f"could not load model {name!r}: {str(exc).splitlines()[0]}")
    if limit is not None and positions > limit:
        refuse_context(name, limit, positions)
    model = AutoModelForCausalLM.from_pretrained(where, dtype=getattr(torch, dtype), attn_implementation="sdpa")
    return model.to(device).eval()


def load_benchmark_model(args: argparse.Namespace, positions: int):
    if args.model.startswith(RANDOM_PREFIX):
        return build_random_model(args.model[len(RANDOM_PREFIX):], device=args.device, dtype=args.dtype,
                                  positions=positions, seed=args.seed)
    return load_pretrained_model(args.model, device=args.device, dtype=args.dtype, positions=positions)


def positions_needed(lengths: list[int], decoded: list[int], rounds: int, steps: int) -> int:
    """The longest sequence a run builds: a prompt, plus its decode steps if it is decoded."""
    extra = 1 + rounds * steps
    return max([max(lengths)] + [n + extra for n in decoded])


def model_shape(model) -> dict[str, Any]:
    cfg = model.config
    keys = ("model_type", "hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
            "head_dim", "intermediate_size", "vocab_size", "max_position_embeddings", "sliding_window")
    shape = {k: getattr(cfg, k, None) for k in keys}
    if shape["head_dim"] is None and shape["hidden_size"] and shape["num_attention_heads"]:
        shape["head_dim"] = shape["hidden_size"] // shape["num_attention_heads"]
    shape["parameters"] = sum(p.numel() for p in model.parameters())
    return shape


# ----------------------------------------------------------------------------- variants

def variant_configs(specs: list[str], variants: Sequence[str] = ()) -> dict[str, Any]:
    """The transition config of every variant (``stock``: None; a schedule's name: its default
    config; ``full-matrix``: classic's), after ``--config`` replacements. ``classic`` and ``sra``
    are always there; another registered schedule where ``variants`` or ``specs`` name it."""
    import attn_transition as at

    by_schedule = {"classic": at.ClassicConfig(), "sra": at.SRAConfig()}
    for name in variants:
        if name not in ("stock", "full-matrix") and name not in by_schedule:
            by_schedule[name] = at.schedule_class(name)()
    for spec in specs:
        try:
            config = at.parse_config(spec)
        except at.ConfigError as exc:
            fail(f"--config {spec!r}: {exc}")
        by_schedule[config.schedule] = config
    return {"stock": None, **by_schedule, "full-matrix": by_schedule["classic"]}


def parse_chunk_mib(text: str) -> Optional[float]:
    if text.strip().lower() == "none":
        return None
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        fail(f"--max-chunk-mib takes a number of MiB > 0 or 'none', got {text!r}")
    return value


def chunk_setting(extra: dict[str, Any]) -> dict[str, Any]:
    """The max_chunk_mib in effect and where it comes from, for the JSON."""
    import inspect

    import attn_transition as at

    if "max_chunk_mib" in extra:
        return {"max_chunk_mib": extra["max_chunk_mib"], "max_chunk_mib_from": "--max-chunk-mib"}
    parameter = inspect.signature(at.enable).parameters.get("max_chunk_mib")
    if parameter is None:
        return {"max_chunk_mib": None, "max_chunk_mib_from": "enable() has no such keyword"}
    return {"max_chunk_mib": parameter.default, "max_chunk_mib_from": "enable() default"}


def make_configure(model, configs: dict[str, Any], extra: dict[str, Any]) -> Callable[[str], None]:
    """A function that puts ``model`` in the state of one variant; ``extra`` goes to ``enable``."""
    import attn_transition as at

    def configure(variant: str) -> None:
        if variant == "stock":
            if at.is_enabled(model):
                at.disable(model)
            return
        try:
            at.enable(model, configs[variant], full_matrix=(variant == "full-matrix"), **extra)
        except TypeError as exc:
            if "max_chunk_mib" in str(exc):
                fail("this attn_transition's enable() has no max_chunk_mib keyword; drop --max-chunk-mib")
            raise

    return configure


def edited_row_fraction(config, num_layers: int, n: int) -> float:
    """Share of (layer, query row) pairs the schedule edits on a prompt of ``n`` tokens."""
    import attn_transition as at

    if config is None or n == 0:
        return 0.0
    edited = 0
    for layer in range(num_layers):
        rows = set()
        for edit in at.layer_plan(config, layer, num_layers, n):
            rows.update(range(edit.start, edit.end))
        edited += len(rows)
    return edited / (num_layers * n)


# ----------------------------------------------------------------------------- measurements

def prompt_ids(vocab: int, tokens: int, seed: int, device: str):
    """A random prompt (the same for every variant and process with this seed)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    return torch.randint(10, vocab - 10, (1, tokens), generator=g).to(device)


def padded_batch(ids, pad: int):
    """``(inputs, mask)``: with ``pad`` 0 the prompt and no mask; else two rows, the prompt and its
    last ``n - pad`` tokens left-padded by ``pad`` positions, and their 0/1 mask (2, n)."""
    import torch

    if not pad:
        return ids, None
    n = ids.shape[1]
    row = torch.cat([torch.zeros_like(ids[:, :pad]), ids[:, pad:]], 1)         # (1, n)
    mask = torch.ones(2, n, dtype=torch.long, device=ids.device)              # (2, n)
    mask[1, :pad] = 0
    return torch.cat([ids, row]), mask                                         # (2, n), (2, n)


def synchronize(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_prefill(model, ids, mask=None) -> float:
    """Seconds of one prefill without a cache (``mask``: a padded batch's 0/1 mask)."""
    import torch

    device = str(ids.device)
    synchronize(device)
    start = time.perf_counter()
    with torch.no_grad():
        model(ids, attention_mask=mask, use_cache=False, logits_to_keep=1)
    synchronize(device)
    return time.perf_counter() - start


def short_error(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:200]


def _release(device: str) -> None:
    import torch

    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()


def measure_prefill(model, ids, variants: list[str], configure: Callable[[str], None],
                    repeats: int, log: Callable[[str], None], mask=None) -> dict[str, dict[str, Any]]:
    """Interleaved prefill timings of every variant on ``ids`` (and ``mask``, a padded batch's);
    on CUDA also peak memory.

    Returns ``{variant: {"seconds": [...], "peak_bytes": int | None, "error": str | None}}``."""
    import torch

    device = str(ids.device)
    cuda = device.startswith("cuda")
    result = {v: {"seconds": [], "peak_bytes": None, "error": None} for v in variants}
    for v in variants:                                     # warm-up: kernels, allocator, patch
        configure(v)
        time_prefill(model, ids[:, :WARMUP_TOKENS])
    n = ids.shape[1]
    if cuda:                                               # the allocator's pools at this length
        configure("stock")
        try:
            time_prefill(model, ids, mask)
        except RuntimeError as exc:
            log(f"  {n:>7d} tokens  full-length warm-up failed: {short_error(exc)}")
            _release(device)
    for r in range(repeats):
        for v in (variants if r % 2 == 0 else variants[::-1]):
            if result[v]["error"]:
                continue
            configure(v)
            try:
                if cuda:
                    torch.cuda.reset_peak_memory_stats()
                    base = torch.cuda.memory_allocated()
                seconds = time_prefill(model, ids, mask)
                if cuda:
                    peak = torch.cuda.max_memory_allocated() - base
                    result[v]["peak_bytes"] = max(result[v]["peak_bytes"] or 0, peak)
            except RuntimeError as exc:                    # out of memory and kin: keep the others
                result[v]["error"] = short_error(exc)
                log(f"  {n:>7d} tokens  {v:12s} failed: {result[v]['error']}")
                _release(device)
                continue
            result[v]["seconds"].append(seconds)
            log(f"  {n:>7d} tokens  repeat {r + 1}/{repeats}  {v:12s} {seconds:8.3f} s")
    configure("stock")
    return result


def cache_keyword(model) -> str:
    """The forward keyword that takes the cache (``cache`` in recent transformers)."""
    import inspect

    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def returned_cache(out):
    cache = getattr(out, "cache", None)
    return cache if cache is not None else out.past_key_values


def minor_faults() -> int:
    """Minor page faults of this process so far (0 where the platform does not count them)."""
    try:
        import resource
    except ImportError:
        return 0
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def decode_steps(model, state: dict[str, Any], steps: int) -> tuple[float, float]:
    """Run ``steps`` greedy one-token steps on ``state`` (cache, next token); seconds per token
    and minor page faults per token (the dynamic cache reallocates its tensors every step; the
    count tells an allocator effect from the patch's own cost when a variant's decode differs)."""
    import torch

    device = str(state["next"].device)
    keyword = cache_keyword(model)
    synchronize(device)
    faults = minor_faults()
    start = time.perf_counter()
    with torch.no_grad():
        for _ in range(steps):
            out = model(state["next"], use_cache=True, logits_to_keep=1, **{keyword: state["cache"]})
            state["cache"] = returned_cache(out)
            state["next"] = out.logits[:, -1:].argmax(-1)             # (1, 1)
    synchronize(device)
    return (time.perf_counter() - start) / steps, (minor_faults() - faults) / steps


def measure_decode(model, ids, variants: list[str], configure: Callable[[str], None], repeats: int,
                   steps: int, log: Callable[[str], None]) -> dict[str, dict[str, Any]]:
    """Per-token decode latency after prefilling ``ids`` with a cache, per variant.

    ``full-matrix`` decodes exactly like ``classic`` and is left out.
    Returns ``{variant: {"ms_per_token": float | None, "error": str | None}}``."""
    import torch

    device = str(ids.device)
    n = ids.shape[1]
    variants = [v for v in variants if v != "full-matrix"]
    states: dict[str, dict[str, Any]] = {}
    result = {v: {"ms_per_token": None, "rounds_ms": [], "faults_per_token": [], "error": None} for v in variants}
    for v in variants:
        configure(v)
        try:
            with torch.no_grad():
                out = model(ids, use_cache=True, logits_to_keep=1)
            states[v] = {"cache": returned_cache(out), "next": out.logits[:, -1:].argmax(-1)}
            del out
            decode_steps(model, states[v], 1)                           # warm-up step
        except RuntimeError as exc:
            result[v]["error"] = short_error(exc)
            states.pop(v, None)
            log(f"  {n:>7d} tokens  decode {v:12s} failed: {result[v]['error']}")
            _release(device)
    for r in range(repeats):
        for v in (variants if r % 2 == 0 else variants[::-1]):
            if v not in states:
                continue
            configure(v)
            try:
                seconds, faults = decode_steps(model, states[v], steps)
                ms = 1000 * seconds
            except RuntimeError as exc:
                result[v]["error"] = short_error(exc)
                del states[v]
                log(f"  {n:>7d} tokens  decode {v:12s} failed: {result[v]['error']}")
                _release(device)
                continue
            result[v]["rounds_ms"].append(ms)
            result[v]["faults_per_token"].append(faults)
            log(f"  {n:>7d} tokens  decode {r + 1}/{repeats}  {v:12s} {ms:8.2f} ms/token"
                f"  ({faults:.0f} page faults/token)")
    for v in variants:
        if result[v]["rounds_ms"]:
            result[v]["ms_per_token"] = statistics.median(result[v]["rounds_ms"])
    configure("stock")
    del states
    _release(device)
    return result


def memory_child_command(args: argparse.Namespace, variant: str, lengths: list[int], positions: int) -> list[str]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--memory-child", variant,
           "--model", args.model, "--tokens", ",".join(map(str, lengths)), "--device", args.device,
           "--dtype", args.dtype, "--seed", str(args.seed), "--decode-tokens", "none", "--no-plot",
           "--pad", str(args.pad)]
    cmd += [f"--config={spec}" for spec in args.config]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    if args.max_chunk_mib is not None:
        cmd += ["--max-chunk-mib", args.max_chunk_mib]
    cmd += ["--positions", str(positions)]                # a random model's context as in the parent
    return cmd


def measure_cpu_memory(args: argparse.Namespace, variants: list[str], lengths: list[int], positions: int,
                       log: Callable[[str], None]) -> dict[str, dict[int, dict[str, Any]]]:
    """Peak RSS growth of each variant's prefill at each length, one fresh process per variant
    (``--memory-jobs`` of them at a time: each reads its own resident size only).

    Returns ``{variant: {tokens: {"peak_bytes": int | None, "error": str | None}}}``."""
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="131072")
    pending, running, results = list(variants), {}, {}
    while pending or running:
        while pending and len(running) < args.memory_jobs:
            v = pending.pop(0)
            log(f"  memory of {v} at {lengths} (fresh process)")
            running[v] = subprocess.Popen(memory_child_command(args, v, lengths, positions), env=env, text=True,
                                          stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        v = next(iter(running))
        stdout, stderr = running.pop(v).communicate()
        results[v] = parse_memory_child(v, stdout, stderr, lengths, log)
    return results


def parse_memory_child(variant: str, stdout: str, stderr: str, lengths: list[int],
                       log: Callable[[str], None]) -> dict[int, dict[str, Any]]:
    found: dict[int, dict[str, Any]] = {}
    for line in stdout.splitlines():
        if line.startswith("{"):
            item = json.loads(line)
            found[item["tokens"]] = {"peak_bytes": item.get("peak_bytes"), "error": item.get("error")}
    missing = [n for n in lengths if n not in found]
    if missing:
        last = (stderr.strip().splitlines() or ["no output"])[-1][:200]
        log(f"  memory of {variant}: the measuring process failed ({last})")
        for n in missing:
            found[n] = {"peak_bytes": None, "error": f"memory process failed: {last}"}
    return found


def peak_rss_growth(run: Callable[[], None]) -> int:
    """Peak resident set size above the level before ``run()``, sampled every 0.5 ms."""
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
    try:
        run()
    finally:
        done.set()
        sampler.join()
    return max(peak[0], rss()) - before


def memory_child(args: argparse.Namespace, lengths: list[int]) -> int:
    """Run one variant's prefill at each length in this fresh process; one JSON line each."""
    model = load_benchmark_model(args, args.positions)
    configure = make_configure(model, variant_configs(args.config, [args.memory_child]), args.enable_kwargs)
    configure(args.memory_child)
    vocab = model.config.vocab_size
    time_prefill(model, prompt_ids(vocab, WARMUP_TOKENS, args.seed, args.device))   # warm-up
    for n in lengths:
        ids, mask = padded_batch(prompt_ids(vocab, n, args.seed, args.device), args.pad)
        gc.collect()
        try:
            grown = peak_rss_growth(lambda: time_prefill(model, ids, mask))
            print(json.dumps({"tokens": n, "peak_bytes": grown}), flush=True)
        except RuntimeError as exc:
            print(json.dumps({"tokens": n, "error": short_error(exc)}), flush=True)
            return 1
    return 0


# ----------------------------------------------------------------------------- results

def cpu_model() -> Optional[str]:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def environment(args: argparse.Namespace, model, configs: dict[str, Any], variants: list[str],
                decoded: list[int]) -> dict[str, Any]:
    import torch
    import transformers

    import attn_transition as at

    cuda = args.device.startswith("cuda")
    return {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": " ".join(["prefill.py"] + args.argv),
        "machine": platform.machine(), "platform": platform.platform(), "cpu": cpu_model(),
        "cpu_count": os.cpu_count(), "threads": torch.get_num_threads(),
        "python": platform.python_version(), "torch": torch.__version__,
        "transformers": transformers.__version__, "attn_transition": at.__version__,
        "cuda": cuda, "gpu": torch.cuda.get_device_name(args.device) if cuda else None,
        "device": args.device, "dtype": args.dtype, "model": args.model, "model_shape": model_shape(model),
        "variants": variants, "configs": {v: repr(configs[v]) for v in variants if configs[v] is not None},
        **chunk_setting(args.enable_kwargs), "repeats": args.repeats, "decode_tokens": decoded,
        "batch": 2 if args.pad else 1, "pad": args.pad,
        "decode_rounds": args.decode_rounds, "decode_steps": args.decode_steps,
        "memory": None if args.skip_memory else (
            "torch.cuda.max_memory_allocated above the level before the prefill" if cuda else
            "peak RSS growth during the prefill, one fresh process per variant, MALLOC_MMAP_THRESHOLD_=131072"),
        "physical_limit": 1.0, "time_target": TIME_TARGET, "decode_target": DECODE_TARGET,
    }


def new_row(n: int, variant: str, config, num_layers: int, optional: bool = False) -> dict[str, Any]:
    return {"tokens": n, "variant": variant, "optional": optional, "config": None if config is None else repr(config),
            "edited_row_fraction": edited_row_fraction(config, num_layers, n),
            "seconds": [], "median_s": None, "time_ratio": None,
            "peak_bytes": None, "peak_mib": None, "memory_ratio": None,
            "decode_ms_per_token": None, "decode_ratio": None,
            "time_ratio_paired": None, "decode_ratio_paired": None, "error": None}


def fill_prefill(row: dict[str, Any], measured: dict[str, Any]) -> None:
    row["seconds"] = measured["seconds"]
    row["median_s"] = statistics.median(measured["seconds"]) if measured["seconds"] else None
    if measured["peak_bytes"] is not None:
        row["peak_bytes"] = measured["peak_bytes"]
    add_error(row, measured["error"])


def add_error(row: dict[str, Any], error: Optional[str]) -> None:
    if error:
        row["error"] = error if not row["error"] else f"{row['error']}; {error}"


def _ratio(value, reference) -> Optional[float]:
    if value is None or not reference:
        return None
    return value / reference


def paired_ratio(values: Optional[list], reference: Optional[list]) -> Optional[float]:
    """Median over rounds of ``values[i] / reference[i]``: round ``i`` of a variant ran next to
    round ``i`` of stock, so each ratio sees the same machine load. None unless both have the
    same number of rounds, all positive."""
    if not values or not reference or len(values) != len(reference):
        return None
    if any(v is None or v <= 0 for v in values) or any(r is None or r <= 0 for r in reference):
        return None
    return statistics.median(v / r for v, r in zip(values, reference))


def add_ratios(rows: list[dict[str, Any]]) -> None:
    """Fill the ratios of every row to the stock row of the same length: of the medians, and
    paired by round (``*_paired``)."""
    stock = {r["tokens"]: r for r in rows if r["variant"] == "stock"}
    for r in rows:
        ref = stock.get(r["tokens"], {})
        r["peak_mib"] = None if r["peak_bytes"] is None else r["peak_bytes"] / 2 ** 20
        r["time_ratio"] = _ratio(r["median_s"], ref.get("median_s"))
        r["memory_ratio"] = _ratio(r["peak_bytes"], ref.get("peak_bytes"))
        r["decode_ratio"] = _ratio(r["decode_ms_per_token"], ref.get("decode_ms_per_token"))
        r["time_ratio_paired"] = paired_ratio(r["seconds"], ref.get("seconds"))
        r["decode_ratio_paired"] = paired_ratio(r.get("decode_rounds_ms"), ref.get("decode_rounds_ms"))


def _fmt(value, spec: str, suffix: str = "") -> str:
    return "n/a" if value is None else f"{value:{spec}}{suffix}"


def markdown_table(rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    shape = meta.get("model_shape") or {}
    lines = [
        f"`{meta.get('command', '')}`: {meta.get('model')} ({shape.get('num_hidden_layers')} layers, "
        f"{shape.get('num_attention_heads')} heads, {shape.get('num_key_value_heads')} KV heads, hidden "
        f"{shape.get('hidden_size')}), {meta.get('device')} {meta.get('dtype')}"
        + (f" ({meta['gpu']})" if meta.get("gpu") else "")
        + f", {meta.get('threads')} threads of {meta.get('cpu_count')} CPUs, torch {meta.get('torch')}, "
        f"transformers {meta.get('transformers')}, {meta.get('date')}; max_chunk_mib {meta.get('max_chunk_mib')} "
        f"({meta.get('max_chunk_mib_from')}); median of {meta.get('repeats')} interleaved rounds"
        + (f", decode: median of {meta.get('decode_rounds', meta.get('repeats'))} interleaved rounds of "
           f"{meta.get('decode_steps')} steps" if meta.get("decode_tokens", True) else ", no decode")
        + (f"; a padded batch of 2 rows, the second left-padded by {meta['pad']} tokens." if meta.get("pad") else "."),
        "",
        "| tokens | variant | prefill s | time vs stock | paired | peak MiB | memory vs stock "
        "| decode ms/token | decode vs stock | paired | rows edited |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        decode = "-" if r["decode_ms_per_token"] is None and not r["error"] else _fmt(r["decode_ms_per_token"], ".2f")
        decode_ratio = "-" if decode == "-" else _fmt(r["decode_ratio"], ".3f", "x")
        decode_paired = "-" if decode == "-" else _fmt(r.get("decode_ratio_paired"), ".3f", "x")
        lines.append(
            f"| {r['tokens']} | {r['variant']} | {_fmt(r['median_s'], '.3f')} | {_fmt(r['time_ratio'], '.2f', 'x')} "
            f"| {_fmt(r.get('time_ratio_paired'), '.2f', 'x')} | {_fmt(r['peak_mib'], '.0f' if (r['peak_mib'] or 0) >= 100 else '.1f')} "
            f"| {_fmt(r['memory_ratio'], '.2f', 'x')} | {decode} | {decode_ratio} | {decode_paired} "
            f"| {100 * r['edited_row_fraction']:.1f}% |")
    errors = [r for r in rows if r["error"]]
    if errors:
        lines.append("")
        lines += [f"- {r['tokens']} tokens{' (optional)' if r.get('optional') else ''}, {r['variant']}: "
                  f"{r['error']}" for r in errors]
    return "\n".join(lines) + "\n"


def write_results(path: Path, meta: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    """The JSON file, and the markdown table beside it (``.md``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")
    tmp.replace(path)
    path.with_suffix(".md").write_text(markdown_table(rows, meta))


def length_label(n: int) -> str:
    return f"{n // 1024}k" if n >= 1024 and n % 1024 == 0 else str(n)


def write_plot(path: Path, meta: dict[str, Any], rows: list[dict[str, Any]]) -> bool:
    """Time, memory and decode ratios against the length; False if matplotlib is missing."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("no plot: matplotlib is not installed (pip install matplotlib)", flush=True)
        return False
    def paired_or_not(key: str) -> tuple[str, str]:
        """The paired ratio where every row has one (the targets are on it), else the ratio of medians."""
        paired = f"{key}_paired"
        has = [r for r in rows if r.get(key) is not None]
        return (paired, " (paired)") if has and all(r.get(paired) is not None for r in has) else (key, "")

    time_key, time_note = paired_or_not("time_ratio")
    panels = [(time_key, f"prefill time vs stock{time_note}", TIME_TARGET, "1.10x target")]
    if any(r["memory_ratio"] is not None for r in rows):
        panels.append(("memory_ratio", "peak memory vs stock", None, None))
    if any(r["decode_ratio"] is not None for r in rows):
        decode_key, decode_note = paired_or_not("decode_ratio")
        panels.append((decode_key, f"decode ms/token vs stock{decode_note}", DECODE_TARGET, "1.02x target"))
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4.6), squeeze=False)
    variants = [v for v in dict.fromkeys(r["variant"] for r in rows) if v != "stock"]
    for ax, (key, title, target, target_label) in zip(axes[0], panels):
        for v in variants:
            points = sorted((r["tokens"], r[key]) for r in rows if r["variant"] == v and r[key] is not None)
            if points:
                ax.plot(*zip(*points), marker="o", label=v)
        ax.axhline(1.0, color="black", linestyle="--", linewidth=1, label="1.0x physical limit (stock)")
        if target is not None:
            ax.axhline(target, color="tab:red", linestyle=":", linewidth=1, label=target_label)
        ax.set_xscale("log", base=2)
        lengths = sorted({r["tokens"] for r in rows})
        ax.set_xticks(lengths, [length_label(n) for n in lengths])
        ax.minorticks_off()
        ax.set_xlabel("prompt tokens")
        ax.set_ylabel("ratio to stock")
        ax.set_title(title)
        ax.grid(True, alpha=0.3)
        # Below the axes: inside, it can cover the target line it is read against.
        ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, frameon=False)
    fig.suptitle(f"{meta.get('model')}, {meta.get('device')} {meta.get('dtype')}, {meta.get('date')}", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def merge_results(args: argparse.Namespace) -> int:
    """Combine result files: for each length, the rows of the last file that has it."""
    metas, by_length = [], {}
    for name in args.merge:
        try:
            data = json.loads(Path(name).read_text())
        except (OSError, ValueError) as exc:
            fail(f"--merge cannot read {name}: {exc}")
        metas.append(data["meta"])
        lengths = {r["tokens"] for r in data["rows"]}
        for n in lengths:
            by_length[n] = [r for r in data["rows"] if r["tokens"] == n]
    rows = [r for n in sorted(by_length) for r in by_length[n]]
    meta = dict(metas[-1], merged_from=[str(p) for p in args.merge], sources=metas)
    write_results(args.json, meta, rows)
    if args.plot:
        write_plot(args.plot, meta, rows)
    print(markdown_table(rows, meta), end="")
    return exit_status(rows)


# ----------------------------------------------------------------------------- main

def run_sweep(args: argparse.Namespace, lengths: list[int], optional: list[int]) -> int:
    """Measure every length (``optional`` ones last); write the JSON, table and plot."""
    variants = parse_variants(args.variants)
    everything = sorted(set(lengths) | set(optional))
    decoded = decode_lengths(args.decode_tokens, lengths, everything)
    if args.pad >= everything[0]:
        fail(f"--pad {args.pad} leaves nothing of the shortest prompt ({everything[0]} tokens); "
             f"give a --pad below every --tokens length")
    positions = positions_needed(everything, decoded, args.decode_rounds, args.decode_steps)
    configs = variant_configs(args.config, variants)

    def log(text: str) -> None:
        print(text, flush=True)

    model = load_benchmark_model(args, positions)
    configure = make_configure(model, configs, args.enable_kwargs)
    meta = environment(args, model, configs, variants, decoded)
    meta.update(required_tokens=lengths, optional_tokens=optional)
    shape = meta["model_shape"]
    log(f"model {args.model} ({shape['num_hidden_layers']} layers, {shape['num_attention_heads']} heads, "
        f"{shape['parameters'] / 1e6:.1f}M parameters), {args.device} {args.dtype}, {meta['threads']} threads, "
        f"torch {meta['torch']}; lengths {lengths}" + (f", then if they fit {optional}" if optional else "")
        + f"; decode at {decoded or 'none'}")
    rows: list[dict[str, Any]] = []
    for n in lengths + [m for m in optional if m not in lengths]:
        ids, mask = padded_batch(prompt_ids(model.config.vocab_size, n, args.seed, args.device), args.pad)
        here = {v: new_row(n, v, configs[v], shape["num_hidden_layers"], optional=n not in lengths)
                for v in variants}
        for v, measured in measure_prefill(model, ids, variants, configure, args.repeats, log, mask).items():
            fill_prefill(here[v], measured)
        if n in decoded:
            for v, measured in measure_decode(model, ids, variants, configure, args.decode_rounds,
                                              args.decode_steps, log).items():
                here[v]["decode_ms_per_token"] = measured["ms_per_token"]
                here[v]["decode_rounds_ms"] = measured["rounds_ms"]
                here[v]["decode_faults_per_token"] = measured["faults_per_token"]
                add_error(here[v], measured["error"] and f"decode: {measured['error']}")
        rows += here.values()
        add_ratios(rows)
        write_results(args.json, meta, rows)                # a later failure keeps what is measured
        del ids
        _release(args.device)

    if not args.skip_memory and not args.device.startswith("cuda"):
        del model, configure                                # the children need the memory
        _release(args.device)
        for v, per_length in measure_cpu_memory(args, variants, everything, positions, log).items():
            for n, measured in per_length.items():
                row = next(r for r in rows if r["tokens"] == n and r["variant"] == v)
                row["peak_bytes"] = measured["peak_bytes"]
                add_error(row, measured["error"])
    add_ratios(rows)
    write_results(args.json, meta, rows)
    if args.plot:
        write_plot(args.plot, meta, rows)
    print()
    print(markdown_table(rows, meta), end="")
    print(f"\nwrote {args.json}" + (f", {args.plot}" if args.plot else ""), flush=True)
    return exit_status(rows)


def exit_status(rows: list[dict[str, Any]]) -> int:
    """1 if a measurement of a required length failed, else 0 (optional lengths may fail)."""
    return 1 if any(r["error"] and not r.get("optional") for r in rows) else 0


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    if args.merge:
        return merge_results(args)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        fail(f"--device {args.device} but torch sees no CUDA device")
    lengths = parse_lengths(args.tokens)
    if args.memory_child:
        args.positions = args.positions or max(lengths)
        return memory_child(args, lengths)
    optional = parse_lengths(args.optional_tokens) if args.optional_tokens else []
    return run_sweep(args, lengths, optional)


if __name__ == "__main__":
    sys.exit(main())

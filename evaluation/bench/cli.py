"""``attn-transition bench``: stock model vs attention transition on the same long prompts.

Thin layer: parses options into :class:`~.runner.BenchSettings`, picks the output
folder, loads the model and calls :func:`~.runner.run_bench`.
"""

from __future__ import annotations

import argparse
import datetime
import re
import sys
import time
from pathlib import Path

from attn_transition.commands import register_command
from attn_transition.errors import UsageError

from . import ruler
from ..runtime.dist import Shard, detect_shard, gather
from .runner import DEFAULT_CONFIGS, TUNE_GRID, BenchSettings, run_bench
from .tasks import DEFAULT_TASKS, TASKS, parse_tasks

EPILOG = """examples:
  attn-transition bench                                  # SmolLM2, stock vs classic vs sra, < 10 min on 2 CPU cores
  attn-transition bench --model gemma3-270m              # the base model (plain prompts, no chat template)
  attn-transition bench --config classic:alpha=1,beta=0.5 --config sra --lengths 1024,4096 --per-cell 4
  attn-transition bench --tune                           # pick a config on a dev split, report it on the test split
  attn-transition bench --resume                         # continue the newest interrupted run of this model
  attn-transition bench --suite ruler --per-cell 4       # lm_eval's offline RULER tasks at 1024,2048,4096 tokens
  accelerate launch --num_processes 4 -m attn_transition.cli bench --device cuda --per-cell 20 --batch-size 16

tasks: """ + "; ".join(f"{t.name}: {t.description}" for t in TASKS.values())


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from attn_transition.evaluation.models import add_model_arguments

    add_model_arguments(parser)
    g = parser.add_argument_group("benchmark")
    g.add_argument("--suite", default="bench", choices=("bench", "ruler"),
                   help=f"bench: this project's tasks (default); ruler: lm-evaluation-harness's RULER tasks that "
                        f"build their data offline (--tasks default {','.join(ruler.DEFAULT_TASKS)}; --lengths "
                        f"default {','.join(map(str, ruler.DEFAULT_LENGTHS))}; --per-cell = lm_eval's --limit)")
    g.add_argument("--tasks", default=",".join(DEFAULT_TASKS),
                   help=f"comma list of tasks (default {','.join(DEFAULT_TASKS)}; choices: {', '.join(TASKS)})")
    g.add_argument("--lengths", default="512,1024,2048",
                   help="comma list of prompt lengths in the model's tokens (default 512,1024,2048)")
    g.add_argument("--depths", default="0,50,100",
                   help="comma list of needle depths in percent of the context (default 0,50,100; "
                        "e.g. 0,25,50,75,100 for a finer heatmap)")
    g.add_argument("--per-cell", type=int, default=1,
                   help="items per (task, length, depth) cell (default 1)")
    g.add_argument("--config", action="append", default=None, metavar="SPEC",
                   help="transition config, repeatable: classic, sra, 'classic:alpha=1,beta=0.5,"
                        "intervals_per_layer=2' (default: classic and sra with their defaults)")
    g.add_argument("--seed", type=int, default=0, help="seed of the generated items (default 0)")
    g.add_argument("--max-new-tokens", type=int, default=8, help="greedy tokens generated per prompt (default 8)")
    g.add_argument("--batch-size", type=int, default=1,
                   help="prompts per generate call, left padded (default 1; raise it on a GPU)")
    g.add_argument("--prompt-format", default="auto", choices=("auto", "chat", "plain"),
                   help="chat template or plain completion (default auto: chat if the tokenizer has a template)")
    g.add_argument("--tune", action="store_true",
                   help="split items into dev/test, pick the best --config (default: a built-in grid) on dev, "
                        "report only the chosen one on test")
    g.add_argument("--dev-fraction", type=float, default=0.5, help="share of items in the dev split (default 0.5)")
    g.add_argument("--oracle", action="store_true",
                   help="also print the per-item best config, labelled as an oracle upper bound (never a result)")
    g.add_argument("--n-boot", type=int, default=10000, help="bootstrap resamples (default 10000)")
    o = parser.add_argument_group("output")
    o.add_argument("--output-dir", default=None,
                   help="where results go (default runs/bench-<model>-<time>)")
    o.add_argument("--resume", action="store_true",
                   help="continue an interrupted run in --output-dir (default: the newest runs/bench-<model>-*), "
                        "skipping finished (item, config) pairs")
    o.add_argument("--no-progress", action="store_true", help="no progress bars")
    o.add_argument("--threads", type=int, default=None,
                   help="CPU threads for torch (default: torch's own choice, usually the core count)")


def _ints(text: str, option: str) -> tuple[int, ...]:
    try:
        values = tuple(int(p) for p in text.split(",") if p.strip())
    except ValueError:
        raise UsageError(f"{option} takes a comma list of integers like 512,1024,2048, got {text!r}") from None
    if not values:
        raise UsageError(f"{option} needs at least one value, got {text!r}")
    return values


def _depths(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(p) for p in text.split(",") if p.strip())
    except ValueError:
        raise UsageError(f"--depths takes a comma list of percentages like 0,25,50,75,100, got {text!r}") from None
    if not values or any(not 0 <= v <= 100 for v in values):
        raise UsageError(f"--depths must be percentages in [0, 100], got {text!r}")
    return tuple(dict.fromkeys(round(v / 100, 4) for v in values))


def settings_from_args(args: argparse.Namespace) -> BenchSettings:
    configs = tuple(args.config) if args.config else (TUNE_GRID if args.tune else DEFAULT_CONFIGS)
    return BenchSettings(tasks=parse_tasks(args.tasks), lengths=tuple(dict.fromkeys(_ints(args.lengths, "--lengths"))),
                         depths=_depths(args.depths), per_cell=args.per_cell, seed=args.seed, configs=configs,
                         max_new_tokens=args.max_new_tokens, batch_size=args.batch_size,
                         prompt_format=args.prompt_format, tune=args.tune, dev_fraction=args.dev_fraction,
                         oracle=args.oracle, n_boot=args.n_boot)


def _slug(model: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", Path(model.rstrip("/")).name or model).strip("-") or "model"


def output_dir(args: argparse.Namespace, shard: Shard) -> Path:
    """The run's folder: ``--output-dir``, the newest matching run on ``--resume``, or a new one."""
    if args.output_dir:
        out = Path(args.output_dir).expanduser()
        if args.resume and not any(out.glob("records*.jsonl")):
            raise UsageError(f"--resume: {out} holds no records*.jsonl to continue; drop --resume to start there")
        return out
    slug = _slug(args.model)
    if args.resume:
        runs = sorted((p for p in Path("runs").glob(f"bench-{slug}-*") if any(p.glob("records*.jsonl"))),
                      key=lambda p: p.stat().st_mtime)
        if not runs:
            raise UsageError(f"--resume: no earlier run of {args.model} under runs/; pass its --output-dir")
        return runs[-1]
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path(gather(shard, str(Path("runs") / f"bench-{slug}-{stamp}"))[0])   # rank 0's name


def run(args: argparse.Namespace) -> int:
    if args.suite == "ruler":
        from .ruler_cli import run as run_ruler

        return run_ruler(args)
    from attn_transition.evaluation.models import load_model

    from . import store

    settings = settings_from_args(args)                   # bad tasks / configs fail before loading
    shard = detect_shard()
    out = output_dir(args, shard)
    previous = store.read_logs(out) if args.resume else None   # read once; a corrupted log fails before loading
    if not args.resume and any((out / name).exists() for name in (store.log_name(shard.rank, shard.world),
                                                                  "results.json")):
        raise UsageError(f"{out} already holds bench results; add --resume to continue them or choose "
                         f"another --output-dir")
    if args.no_progress:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    if args.threads is not None:
        if args.threads < 1:
            raise UsageError(f"--threads must be an int >= 1, got {args.threads}")
        import torch

        torch.set_num_threads(args.threads)
    device = args.device
    if shard.world > 1 and device == "cuda":
        device = f"cuda:{shard.local_rank}"
    t0 = time.perf_counter()
    model, tokenizer = load_model(args.model, device=device, dtype=args.dtype, device_map=args.device_map,
                                  cache=args.cache_dir)
    load_seconds = time.perf_counter() - t0
    try:
        results = run_bench(model, tokenizer, settings, out, model_name=args.model, resume=args.resume,
                            previous=previous, shard=shard, progress=not args.no_progress,
                            extra_meta={"load_seconds": round(load_seconds, 2)})
    except KeyboardInterrupt:
        print(f"bench: interrupted; finished prompts are in {out}; continue with the same command plus "
              f"--resume --output-dir {out}", file=sys.stderr)
        raise
    if results is not None:
        _print_summary(results, out)
    return 0


def _print_summary(results: dict, out: Path) -> None:
    s = results["summary"]
    acc = {r["config"]: r for r in s["accuracy"]}
    print(f"accuracy ({s['scope']}):")
    for config in s["configs"]:
        r = acc[config]
        print(f"  {config:<40} {100 * r['accuracy']:5.1f}%  (n={r['n']})")
    for c in s["comparison"]:
        if c.get("n"):
            print(f"  {c['treatment']} - stock: {100 * c['diff']:+.1f} pts, 95% CI [{100 * c['ci_low']:+.1f}, "
                  f"{100 * c['ci_high']:+.1f}], win/tie/loss {c['wins']}/{c['ties']}/{c['losses']}, "
                  f"McNemar p={c['mcnemar_p']:.3g}, outputs changed on {c['changed']}/{c['n']}")
    if "oracle" in s:
        o = s["oracle"]
        print(f"  ORACLE UPPER BOUND (per-item best config, not a result): "
              f"{100 * o['accuracy']['accuracy']:.1f}%")
    print(f"results: {out / 'results.json'}, {out / 'summary.md'}, plots in {out}")


register_command('bench', help='long-context benchmark: stock vs transition on the same prompts',
                 add_arguments=add_arguments, run=run, epilog=EPILOG,
                 flags={name: "--" + name.replace("_", "-") for name in (
                     "tasks", "lengths", "depths", "per_cell", "max_new_tokens", "batch_size", "n_boot",
                     "prompt_format", "dev_fraction")} | {"configs": "--config"})

"""``attn-transition bench``: stock model vs attention transition on the same long prompts.

Thin layer: parses the options (:mod:`.options`) into :class:`~.runner.BenchSettings`, picks
the output folder, loads the model and calls :func:`~.runner.run_bench`; ``--suite ruler`` goes
to :mod:`.ruler_cli`.
"""

from __future__ import annotations

import argparse
import datetime
import sys
import time
from pathlib import Path

from attn_transition.commands import register_command
from attn_transition.errors import UsageError

from ..models import MODEL_FLAGS
from ..runtime.dist import Shard, detect_shard, gather
from ..runtime.files import check_outputs
from ..runtime.requirements import require_embedded, require_plots
from . import store
from .options import EPILOG, add_arguments, depths, ints, slug
from .runner import DEFAULT_CONFIGS, TUNE_GRID, BenchSettings, refuse_results, run_bench
from .tasks import parse_tasks

def settings_from_args(args: argparse.Namespace) -> BenchSettings:
    configs = tuple(args.config) if args.config else (TUNE_GRID if args.tune else DEFAULT_CONFIGS)
    return BenchSettings(tasks=parse_tasks(args.tasks), lengths=tuple(dict.fromkeys(ints(args.lengths, "--lengths"))),
                         depths=depths(args.depths), per_cell=args.per_cell, seed=args.seed, configs=configs,
                         max_new_tokens=args.max_new_tokens, batch_size=args.batch_size,
                         prompt_format=args.prompt_format, tune=args.tune, dev_fraction=args.dev_fraction,
                         oracle=args.oracle, n_boot=args.n_boot)


def output_dir(args: argparse.Namespace, shard: Shard) -> Path:
    """The run's folder: ``--output-dir``, the newest matching run on ``--resume``, or a new one."""
    if args.output_dir:
        out = Path(args.output_dir).expanduser()
        if args.resume:
            store.require_logs(out)
        return out
    name = slug(args.model)
    if args.resume:
        runs = sorted((p for p in Path("runs").glob(f"bench-{name}-*") if store.log_paths(p)),
                      key=lambda p: p.stat().st_mtime)
        if not runs:
            raise UsageError(f"--resume: no earlier run of {args.model} under runs/; pass its --output-dir")
        return runs[-1]
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path(gather(shard, str(Path("runs") / f"bench-{name}-{stamp}"))[0])   # rank 0's name


def run(args: argparse.Namespace) -> int:
    check_outputs(folders={"--output-dir": args.output_dir})   # both suites, before anything else
    if args.suite == "ruler":
        from .ruler_cli import run as run_ruler

        return run_ruler(args)
    from attn_transition.evaluation.models import load_model

    settings = settings_from_args(args)                   # bad tasks / configs fail before loading
    require_plots("attn-transition bench (its plots)")
    require_embedded([args.model], args.cache_dir)
    shard = detect_shard()
    out = output_dir(args, shard)
    check_outputs(folders={"--output-dir": out})             # the default folder under runs/ too
    refuse_results(out, resume=args.resume, shard=shard)     # before loading; run_bench checks again
    previous = store.read_logs(out) if args.resume else None   # read once; a corrupted log fails before loading
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
                     "prompt_format", "dev_fraction")} | {"configs": "--config"} | MODEL_FLAGS)

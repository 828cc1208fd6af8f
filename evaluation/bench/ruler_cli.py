"""``attn-transition bench --suite ruler``: the command's options into a run of :mod:`.ruler`.

Thin layer, as :mod:`.cli` is for the default suite: checks the options (before anything
loads), picks the output folder, loads the model once as lm_eval's ``attn-transition``
model, runs the cells, writes the results and prints the summary.

The bench options mean the same here; where the bench default makes no sense for RULER
the suite has its own: ``--tasks`` defaults to the offline RULER tasks and ``--lengths`` to
1024,2048,4096. Options of the bench's own prompts (``--depths``, ``--max-new-tokens``,
``--tune``, ``--dev-fraction``, ``--oracle``) are refused when changed: RULER places its
needles and sets each task's generation budget itself.
"""

from __future__ import annotations

import argparse
import datetime
import sys
import time
from pathlib import Path
from typing import Any

from attn_transition.errors import UsageError

from . import ruler, store
from .options import add_arguments, ints, slug
from .analysis import STOCK

__all__ = ["settings_from_args", "output_dir", "run"]

_PROMPT_OPTIONS = ("depths", "max_new_tokens", "tune", "dev_fraction", "oracle")


def _bench_defaults() -> argparse.Namespace:
    parser = argparse.ArgumentParser(add_help=False)
    add_arguments(parser)
    return parser.parse_args([])


def settings_from_args(args: argparse.Namespace) -> ruler.RulerSettings:
    """The run's settings; prints one line per task that cannot run offline."""
    bench = _bench_defaults()
    for dest in _PROMPT_OPTIONS:
        if getattr(args, dest) != getattr(bench, dest):
            raise UsageError(f"--{dest.replace('_', '-')} is not an option of --suite ruler: RULER places its "
                             f"needles and sets each task's generation budget itself")
    names = (ruler.DEFAULT_TASKS if args.tasks == bench.tasks
             else tuple(p.strip() for p in args.tasks.split(",") if p.strip()))
    tasks, skipped = ruler.resolve_tasks(names)
    for line in skipped:
        print(line, file=sys.stderr, flush=True)
    lengths = ruler.DEFAULT_LENGTHS if args.lengths == bench.lengths else ints(args.lengths, "--lengths")
    configs = tuple(args.config) if args.config else ruler.RulerSettings.configs
    return ruler.RulerSettings(tasks=tasks, lengths=lengths, per_cell=args.per_cell, configs=configs,
                               seed=args.seed, batch_size=args.batch_size, prompt_format=args.prompt_format,
                               n_boot=args.n_boot)


def output_dir(args: argparse.Namespace) -> Path:
    """``--output-dir``; on ``--resume`` without it the newest ``runs/ruler-<model>-*``; else a new one."""
    if args.output_dir:
        out = Path(args.output_dir).expanduser()
        if args.resume:
            store.require_logs(out)
        return out
    prefix = f"ruler-{slug(args.model)}-"
    if args.resume:
        runs = sorted((p for p in Path("runs").glob(prefix + "*") if store.log_paths(p)),
                      key=lambda p: p.stat().st_mtime)
        if not runs:
            raise UsageError(f"--resume: no earlier --suite ruler run of {args.model} under runs/; pass its "
                             f"--output-dir")
        return runs[-1]
    return Path("runs") / (prefix + datetime.datetime.now().strftime("%Y%m%d-%H%M%S"))


def _load(args: argparse.Namespace) -> tuple[Any, str]:
    """lm_eval's ``attn-transition`` model (stock until a config is enabled) and its folder."""
    from attn_transition.evaluation.harness import AttnTransitionLM
    from attn_transition.evaluation.models import resolve_model

    folder = resolve_model(args.model, args.cache_dir)
    lm = AttnTransitionLM(pretrained=folder, transition="none", dtype=args.dtype, device=args.device,
                          batch_size=args.batch_size)
    return lm, folder


def _check_lengths(model: Any, lengths: tuple[int, ...]) -> None:
    config = getattr(model, "config", None)
    limit = getattr(config, "max_position_embeddings", None) or \
        getattr(getattr(config, "text_config", None), "max_position_embeddings", None)
    too_long = [n for n in lengths if limit is not None and n > limit]
    if too_long:
        raise UsageError(f"--lengths {','.join(map(str, too_long))} exceed the model's context of {limit} "
                         f"tokens (config.max_position_embeddings)")


def run(args: argparse.Namespace) -> int:
    from ..runtime.dist import detect_shard
    from ..runtime.versions import PACKAGES, library_versions
    from .prompts import resolve_format
    from .ruler_report import build_results, write_outputs

    from ..harness import import_ruler_quietly, require_lm_eval
    from ..runtime.files import check_outputs
    from ..runtime.requirements import require_embedded, require_plots

    check_outputs(folders={"--output-dir": args.output_dir})   # also when called without the bench command

    settings = settings_from_args(args)                   # bad tasks / configs fail before loading
    require_lm_eval("attn-transition bench --suite ruler")
    require_plots("attn-transition bench --suite ruler (its plot)")
    require_embedded([args.model], args.cache_dir)
    if detect_shard().world > 1:
        raise UsageError("--suite ruler runs in one process; drop accelerate launch / torchrun (lm_eval's own "
                         "data parallelism: attn-transition lm-eval)")
    if args.device_map:
        raise UsageError("--device-map is not an option of --suite ruler")
    out = output_dir(args)
    check_outputs(folders={"--output-dir": out})          # the default folder under runs/ too
    store.refuse_results(out, resume=args.resume)          # before loading; run_cells checks again
    if args.resume:
        store.read_logs(out)                               # a corrupted log fails before loading
    if args.no_progress:                                   # transformers' bars; lm_eval's own stay
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    if args.threads is not None:
        if args.threads < 1:
            raise UsageError(f"--threads must be an int >= 1, got {args.threads}")
        import torch

        torch.set_num_threads(args.threads)
    import_ruler_quietly()                                 # nltk's punkt_tab download noise
    t0 = time.perf_counter()
    lm, folder = _load(args)
    load_seconds = time.perf_counter() - t0
    _check_lengths(lm.model, settings.lengths)
    chat = resolve_format(settings.prompt_format, lm.tokenizer)
    param = next(lm.model.parameters())
    versions = library_versions((*PACKAGES, "lm_eval"))
    identity = {"suite": "ruler", "model": args.model, "seed": settings.seed, "chat": chat,
                "lm_eval": versions["lm_eval"], "dtype": str(param.dtype).replace("torch.", ""),
                "device_type": param.device.type}
    print(f"bench --suite ruler: {args.model} loaded in {load_seconds:.1f} s; tasks {','.join(settings.tasks)} at "
          f"{','.join(map(str, settings.lengths))} tokens, {settings.per_cell} document(s) each; writing to {out}",
          file=sys.stderr, flush=True)
    cells = ruler.LmEvalCells(lm, folder, seed=settings.seed, chat=chat)
    try:
        done = ruler.run_cells(cells, settings, out, identity=identity, resume=args.resume)
    except KeyboardInterrupt:
        print(f"bench --suite ruler: interrupted; answered documents are in {out}; continue with the same "
              f"command plus --resume --output-dir {out}", file=sys.stderr)
        raise
    meta = {**identity, "model_type": getattr(lm.model.config, "model_type", None),
            "device": str(param.device), "versions": versions,
            "load_seconds": round(load_seconds, 2), "seconds_this_run": round(done["seconds"], 2),
            "finished_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    results = build_results(done["records"], list(settings.labelled()), settings.as_dict(), meta, done["skipped"])
    write_outputs(results, out)
    _print_summary(results, out)
    return 0


def _print_summary(results: dict[str, Any], out: Path) -> None:
    from .report import config_lines
    from .ruler_report import PLOT

    s = results["summary"]
    scores = {(r["task"], r["length"], r["config"]): r for r in s["score_by_task_length"]}
    cmp = {(r["task"], r["length"], r["treatment"]): r for r in s["comparison_by_task_length"]}
    legend = config_lines(results)                       # what each label below ran, every field
    if legend:
        print("\n".join(legend))
    print("RULER score (%), per task and length:")
    for task, length in dict.fromkeys((r["task"], r["length"]) for r in s["score_by_task_length"]):
        stock = scores[(task, length, STOCK)]
        parts = [f"stock {100 * stock['score']:.1f}"]
        for config in s["configs"][1:]:
            c = cmp.get((task, length, config))
            if c and c.get("n"):
                parts.append(f"{config} {100 * c['mean_treatment']:.1f} ({100 * c['diff']:+.1f} pts, 95% CI "
                             f"[{100 * c['ci_low']:+.1f}, {100 * c['ci_high']:+.1f}], w/t/l {c['wins']}/{c['ties']}/"
                             f"{c['losses']}, McNemar p={c['mcnemar_p']:.3g})")
        print(f"  {task} {length} (n={stock['n']}): " + "; ".join(parts))
    print(f"results: {out / 'results.json'}, {out / 'results.md'}, {out / PLOT}")

"""The options of ``attn-transition bench`` (both suites) and their parsing helpers.

Kept apart from the command so that :mod:`.cli` (the default suite) and :mod:`.ruler_cli`
(``--suite ruler``) both read them without importing each other.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from attn_transition.errors import UsageError

from . import ruler
from .tasks import DEFAULT_TASKS, TASKS

__all__ = ["EPILOG", "add_arguments", "ints", "depths", "slug"]

EPILOG = """examples:
  attn-transition bench                                  # SmolLM2, stock vs classic vs sra, 27 items, 3.5-9 min on 2 CPU cores
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


def ints(text: str, option: str) -> tuple[int, ...]:
    try:
        values = tuple(int(p) for p in text.split(",") if p.strip())
    except ValueError:
        raise UsageError(f"{option} takes a comma list of integers like 512,1024,2048, got {text!r}") from None
    if not values:
        raise UsageError(f"{option} needs at least one value, got {text!r}")
    return values


def depths(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(p) for p in text.split(",") if p.strip())
    except ValueError:
        raise UsageError(f"--depths takes a comma list of percentages like 0,25,50,75,100, got {text!r}") from None
    if not values or any(not 0 <= v <= 100 for v in values):
        raise UsageError(f"--depths must be percentages in [0, 100], got {text!r}")
    return tuple(dict.fromkeys(round(v / 100, 4) for v in values))


def slug(model: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", Path(model.rstrip("/")).name or model).strip("-") or "model"

"""Running the benchmark on a loaded model: the only part that does model I/O.

:func:`run_bench` takes an already-loaded ``(model, tokenizer)``, builds the prompts,
runs the stock model first (transition not enabled), then ``enable(model, cfg)`` for
each config, and finally ``disable(model)``. Generation is batched with left padding
and greedy. Every finished batch is appended to the log (see :mod:`.store`) before
the next starts, so an interruption loses nothing already finished and ``resume=True``
skips what is done.

Data parallel: under ``accelerate launch`` or ``torchrun`` (``WORLD_SIZE`` > 1 in the
environment) each process takes every ``WORLD_SIZE``-th item, writes its own log, and
rank 0 gathers the records (:mod:`..runtime.dist`) and writes the results.
"""

from __future__ import annotations

import dataclasses
import datetime
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from attn_transition.config import TransitionConfig, config_dict, format_config, parse_configs
from attn_transition.errors import ConfigError, UsageError

from ..runtime.dist import Shard, close, detect_shard, gather
from ..runtime.files import write_json_atomic
from ..runtime.versions import library_versions
from . import analysis, store
from .prompts import FORMATS, Prompt, build_prompt, resolve_format
from .scoring import score
from .tasks import DEFAULT_TASKS, Sample, get_task, make_samples, task_data

__all__ = ["SuiteSettings", "BenchSettings", "Shard", "detect_shard", "DEFAULT_CONFIGS",
           "TUNE_GRID", "run_bench", "edits_anything", "generate_batch", "check_lengths"]

DEFAULT_CONFIGS: tuple[str, ...] = ("classic", "sra")
TUNE_GRID: tuple[str, ...] = (
    "classic", "classic:alpha=1.0", "classic:beta=0.5", "classic:alpha=1.0,beta=0.5",
    "sra", "sra:strengthen_factor_inter=2.0,strengthen_factor_outer=2.0",
)


def parsed_configs(items: Sequence[str | TransitionConfig]) -> tuple[TransitionConfig, ...]:
    """The configs of ``items`` (specs or configs), each given once; a bad spec is a ConfigError
    naming it and the field ``configs`` (the command line's ``--config``)."""
    for item in items:
        try:
            parse_configs([item])
        except ConfigError as exc:
            raise ConfigError(f"configs {item!r}: {exc}", field="configs") from None
    return tuple(parse_configs(items).values())


class SuiteSettings:
    """What both suites' settings share: int fields with lower bounds, the prompt format, and the
    configs, given as configs or specs and held parsed (:func:`~attn_transition.config.parse_configs`)."""

    per_cell: int
    batch_size: int
    n_boot: int
    prompt_format: str
    configs: tuple[TransitionConfig, ...]

    def _check_common(self, **more_int_fields: int) -> None:
        for name, low in {"per_cell": 1, "batch_size": 1, "n_boot": 100, **more_int_fields}.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise UsageError(f"{name} must be an int >= {low}, got {value!r}", field=name)
        if self.prompt_format not in FORMATS:
            raise UsageError(f"prompt_format must be one of {', '.join(FORMATS)}, got {self.prompt_format!r}",
                             field="prompt_format")
        if not self.configs:
            raise UsageError("configs must hold at least one config", field="configs")
        object.__setattr__(self, "configs", parsed_configs(self.configs))   # parsed once

    def labelled(self) -> dict[str, TransitionConfig]:
        """``label -> config``, in order (the label is the config's canonical spec)."""
        return {format_config(c): c for c in self.configs}

    def as_dict(self) -> dict[str, Any]:
        """The settings as results files store them (configs by label)."""
        return {**dataclasses.asdict(self), "configs": list(self.labelled())}


@dataclass(frozen=True)
class BenchSettings(SuiteSettings):
    """What to run. Validated on construction (UsageError naming the field).

    Args:
        configs: the transition configs, as :class:`~attn_transition.config.TransitionConfig`
            objects or specs (``"classic:alpha=1"``, parsed here, once); held as configs, a
            config given twice kept once. Each is known by its label,
            :func:`~attn_transition.config.format_config`.
        The other fields are the task grid, the generation and the statistics; ``attn-transition
        bench --help`` says what each flag means.
    """

    tasks: tuple[str, ...] = DEFAULT_TASKS
    lengths: tuple[int, ...] = (512, 1024, 2048)
    depths: tuple[float, ...] = (0.0, 0.5, 1.0)
    per_cell: int = 1
    seed: int = 0
    configs: tuple[TransitionConfig, ...] = DEFAULT_CONFIGS
    max_new_tokens: int = 8
    batch_size: int = 1
    prompt_format: str = "auto"
    tune: bool = False
    dev_fraction: float = 0.5
    oracle: bool = False
    n_boot: int = 10000

    def __post_init__(self) -> None:
        if not self.tasks:
            raise UsageError("tasks must name at least one task", field="tasks")
        for t in self.tasks:
            get_task(t)
        if not self.lengths or any(not isinstance(n, int) or n < 16 for n in self.lengths):
            raise UsageError(f"lengths must be ints >= 16 (prompt tokens), got {list(self.lengths)}", field="lengths")
        if not self.depths or any(not 0.0 <= d <= 1.0 for d in self.depths):
            raise UsageError(f"depths must be numbers in [0, 1] (fraction of the context), got {list(self.depths)}", field="depths")
        # Item ids carry the task, the length and the depth in whole percent: they must not collide.
        for name, keys, shown in (("tasks", list(self.tasks), list(self.tasks)),
                                  ("lengths", list(self.lengths), list(self.lengths)),
                                  ("depths", [round(d * 100) for d in self.depths], [f"{d * 100:g}" for d in self.depths])):
            if len(set(keys)) != len(keys):
                extra = " (depths are told apart in whole percents)" if name == "depths" else ""
                raise UsageError(f"{name} has repeated values{extra}: {','.join(map(str, shown))}; "
                                 f"give each value once", field=name)
        if not 0.0 < self.dev_fraction < 1.0:
            raise UsageError(f"dev_fraction must be in (0, 1), got {self.dev_fraction}", field="dev_fraction")
        self._check_common(max_new_tokens=1)


def edits_anything(config: TransitionConfig, num_layers: int, n: int) -> bool:
    """Whether ``config`` edits any layer of a ``num_layers`` model on an ``n``-token prompt."""
    from attn_transition.schedules import layer_plan

    return any(layer_plan(config, layer, num_layers, n) for layer in range(num_layers))


def generate_batch(model: Any, tokenizer: Any, texts: Sequence[str], *, chat: bool,
                   max_new_tokens: int) -> list[str]:
    """Greedy continuations of ``texts`` (left padded); chat prompts already hold their special tokens."""
    from ..models import generate_greedy

    return generate_greedy(model, tokenizer, texts, max_new_tokens=max_new_tokens, add_special_tokens=not chat)


@dataclass
class _Work:
    """Records known so far (from earlier runs and this one), keyed by (item, config)."""

    done: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)


def _run_config(model: Any, tokenizer: Any, label: str, config: Optional[TransitionConfig],
                prompts: Sequence[Prompt], samples: dict[str, Sample], settings: BenchSettings, chat: bool,
                log: store.RecordLog, work: _Work, shard: Shard, progress: bool,
                on_records: Optional[Callable[[list[dict[str, Any]]], None]]) -> None:
    import attn_transition as at

    pending = [p for p in prompts if (p.item_id, label) not in work.done]
    if not pending:
        return
    if config is None:
        if at.is_enabled(model):
            at.disable(model)
    else:
        at.enable(model, config)
    from tqdm.auto import tqdm

    pending.sort(key=lambda p: -p.n_tokens)                  # similar lengths share a batch
    desc = label if shard.world == 1 else f"[rank {shard.rank}] {label}"
    bar = tqdm(total=len(pending), desc=desc, unit="prompt", disable=not progress, position=shard.rank,
               leave=True, dynamic_ncols=True)
    try:
        for start in range(0, len(pending), settings.batch_size):
            batch = pending[start:start + settings.batch_size]
            t0 = time.perf_counter()
            outputs = generate_batch(model, tokenizer, [p.text for p in batch], chat=chat,
                                     max_new_tokens=settings.max_new_tokens)
            dt = time.perf_counter() - t0
            records = []
            for p, output in zip(batch, outputs):
                line, correct = score(output, samples[p.item_id].answer)
                records.append({"item": p.item_id, "config": label, "output": output, "line": line,
                                "correct": correct, "seconds": round(dt / len(batch), 4),
                                "n_tokens": p.n_tokens, "rank": shard.rank})
            log.append(records)                              # on disk before anything else happens
            for r in records:
                work.done[(r["item"], label)] = r
            bar.update(len(batch))
            if on_records is not None:
                on_records(records)
    finally:
        bar.close()


def check_lengths(model: Any, settings: BenchSettings) -> None:
    limit = getattr(model.config, "max_position_embeddings", None)
    if limit is None:
        limit = getattr(getattr(model.config, "text_config", None), "max_position_embeddings", None)
    if limit is not None:
        too_long = [n for n in settings.lengths if n + settings.max_new_tokens > limit]
        if too_long:
            raise UsageError(f"--lengths {','.join(map(str, too_long))} plus --max-new-tokens "
                             f"{settings.max_new_tokens} exceed the model's context of {limit} tokens "
                             f"(config.max_position_embeddings); use lengths up to "
                             f"{limit - settings.max_new_tokens}")


def refuse_results(out: Path, *, resume: bool, shard: Shard) -> None:
    """:func:`.store.refuse_results` on every rank's view of ``out`` together: each rank lists the
    results it sees and all of them refuse alike (a collective call: every rank calls it, before
    any rank writes its log, or one rank's new log would stop the others)."""
    if resume:
        return
    found = gather(shard, store.results_in(out))
    store.refuse_results(out, resume=False, found=[name for names in found for name in names])


def run_bench(model: Any, tokenizer: Any, settings: BenchSettings, out_dir: str | Path, *, model_name: str,
              resume: bool = False, shard: Optional[Shard] = None, progress: bool = True,
              on_records: Optional[Callable[[list[dict[str, Any]]], None]] = None,
              extra_meta: Optional[dict[str, Any]] = None, write_report: bool = True,
              previous: Optional[list[tuple[Path, dict[str, Any], list[dict[str, Any]]]]] = None
              ) -> Optional[dict[str, Any]]:
    """Run (or continue) a benchmark; returns the results dict on rank 0, None elsewhere.

    With ``resume`` the logs in ``out_dir`` are read (:func:`.store.read_logs`) unless the caller
    read them already and passes them as ``previous`` (the CLI does, before loading the model).
    ``on_records`` is called after each batch is saved (tests use it to interrupt a run).
    With ``write_report`` rank 0 also writes ``summary.md`` and the plots and prints every field of
    each config (:func:`.report.config_lines`), the legend of the summary the CLI prints next.
    """
    import attn_transition as at
    from attn_transition.families import schedule_layout

    started = time.perf_counter()
    shard = shard or Shard()
    out = Path(out_dir)
    refuse_results(out, resume=resume, shard=shard)      # before anything runs or is written
    check_lengths(model, settings)
    if shard.rank == 0 and extra_meta and "load_seconds" in extra_meta:
        print(f"bench: {model_name} loaded in {extra_meta['load_seconds']:.1f} s; writing to {out}", file=sys.stderr)
    chat = resolve_format(settings.prompt_format, tokenizer)
    configs = settings.labelled()
    num_layers = schedule_layout(model.config)[0]   # hybrids: attention layers only

    samples = make_samples(settings.tasks, settings.lengths, settings.depths, settings.per_cell, settings.seed)
    by_id = {s.item_id: s for s in samples}
    prompts = [build_prompt(s, tokenizer, chat) for s in samples]
    inactive = [{"config": label, "length": n} for label, cfg in configs.items() for n in settings.lengths
                if not edits_anything(cfg, num_layers, min(p.n_tokens for p in prompts
                                                          if by_id[p.item_id].length == n))]
    for row in inactive:
        print(f"note: config {row['config']} edits nothing at length {row['length']} (below its thresholds); "
              f"its outputs there equal the stock model's", file=sys.stderr)

    split: dict[str, str] = {}
    if settings.tune:
        rng = random.Random(f"attn-transition-bench-split|{settings.seed}")
        split = analysis.split_items([s.as_dict() for s in samples], settings.dev_fraction, rng.shuffle)

    log_path = out / store.log_name(shard.rank, shard.world)
    param = next(model.parameters())
    identity = {"model": model_name, "seed": settings.seed, "task_data_version": task_data()["version"],
                "chat": chat, "max_new_tokens": settings.max_new_tokens,
                "dtype": str(param.dtype).replace("torch.", ""), "device_type": param.device.type}
    out.mkdir(parents=True, exist_ok=True)
    work = _Work()
    existing = (store.read_logs(out) if previous is None else previous) if resume else []
    for path, header, records in existing:
        store.check_identity(path, header, identity)
        for r in records:
            work.done.setdefault((r["item"], r["config"]), r)
    log = store.RecordLog(log_path, identity)
    mine = shard.take(prompts)

    tune_info: dict[str, Any] = {}
    if settings.tune:
        dev = [p for p in mine if split[p.item_id] == "dev"]
        test = [p for p in mine if split[p.item_id] == "test"]
        for label, cfg in [(analysis.STOCK, None), *configs.items()]:
            _run_config(model, tokenizer, label, cfg, dev, by_id, settings, chat, log, work, shard, progress,
                        on_records)
        merged = {}
        for part in gather(shard, {k: v for k, v in work.done.items() if split.get(k[0]) == "dev"}):
            merged.update(part)
        dev_items = [s.as_dict() for s in samples if split[s.item_id] == "dev"]
        chosen, dev_rows = analysis.choose_config(dev_items, merged, list(configs))
        tune_info = {"grid": list(configs), "chosen": chosen, "dev_accuracy": dev_rows,
                     "dev_items": len(dev_items), "test_items": len(samples) - len(dev_items)}
        print(f"tune: chose {chosen} on {len(dev_items)} dev items; reporting it on the "
              f"{tune_info['test_items']} test items only", file=sys.stderr)
        for label, cfg in [(analysis.STOCK, None), (chosen, configs[chosen])]:
            _run_config(model, tokenizer, label, cfg, test, by_id, settings, chat, log, work, shard, progress,
                        on_records)
    else:
        for label, cfg in [(analysis.STOCK, None), *configs.items()]:
            _run_config(model, tokenizer, label, cfg, mine, by_id, settings, chat, log, work, shard, progress,
                         on_records)
    if at.is_enabled(model):
        at.disable(model)

    mine_ids = {p.item_id for p in mine}
    parts = gather(shard, {k: v for k, v in work.done.items() if k[0] in mine_ids})
    if shard.rank != 0:
        close(shard)
        return None
    outcomes: dict[tuple[str, str], dict[str, Any]] = {}
    for recs in parts:
        outcomes.update(recs)
    seconds: dict[str, float] = {}                 # generation time, earlier (resumed) runs included
    for (_, label), r in outcomes.items():
        seconds[label] = seconds.get(label, 0.0) + float(r.get("seconds", 0.0))
    results = _results(settings, samples, prompts, split, configs, outcomes, tune_info, inactive, identity,
                       model, model_name, seconds, time.perf_counter() - started, shard, extra_meta or {})
    write_json_atomic(out / "results.json", results)
    if write_report:
        from . import report

        report.write_markdown(results, out / "summary.md")
        report.write_plots(results, out)
        print("\n".join(report.config_lines(results)))      # what each label of the summary ran
    close(shard)
    return results


def _results(settings: BenchSettings, samples: Sequence[Sample], prompts: Sequence[Prompt],
             split: dict[str, str], configs: dict[str, TransitionConfig],
             outcomes: dict[tuple[str, str], dict[str, Any]], tune_info: dict[str, Any],
             inactive: list[dict[str, Any]], identity: dict[str, Any], model: Any, model_name: str,
             seconds: dict[str, float], wall: float, shard: Shard, extra_meta: dict[str, Any]) -> dict[str, Any]:
    items = []
    for s, p in zip(samples, prompts):
        items.append({**s.as_dict(), "split": split.get(s.item_id, "all"), "chance": s.chance,
                      "prompt": p.as_dict()})
    order = [analysis.STOCK, *configs]
    records = [{**outcomes[(it["item_id"], c)], "item": it["item_id"], "config": c}
               for it in items for c in order if (it["item_id"], c) in outcomes]
    if settings.tune:
        test = [it for it in items if it["split"] == "test"]
        summary = analysis.summarise(test, outcomes, [analysis.STOCK, tune_info["chosen"]],
                                     show_oracle=False, n_boot=settings.n_boot, seed=settings.seed)
        summary["scope"] = "test split only; the config was chosen on the dev split"
    else:
        summary = analysis.summarise(items, outcomes, order, show_oracle=settings.oracle, n_boot=settings.n_boot,
                                     seed=settings.seed)
        summary["scope"] = "all items"
    if settings.tune:
        expected = sum(len(order) if it["split"] == "dev" else 2 for it in items)
    else:
        expected = len(items) * len(order)
    return {
        "format": "attn-transition-bench-results/1",
        "meta": {
            **identity,
            "model_type": getattr(model.config, "model_type", None),
            "num_layers": getattr(model.config, "num_hidden_layers", None),
            "dtype": str(next(model.parameters()).dtype).replace("torch.", ""),
            "device": str(next(model.parameters()).device),
            "settings": settings.as_dict(),
            "configs": {label: config_dict(cfg) for label, cfg in configs.items()},
            "inactive": inactive,
            "tune": tune_info or None,
            "versions": library_versions(),
            "world_size": shard.world,
            "seconds_per_config": {k: round(v, 2) for k, v in seconds.items()},
            "seconds_this_run": round(wall, 2),
            "finished_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "complete": len(records) == expected,
            **extra_meta,
        },
        "items": items,
        "records": records,
        "summary": summary,
    }


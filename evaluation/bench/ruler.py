"""``attn-transition bench --suite ruler``: lm-evaluation-harness's RULER tasks, stock vs configs.

RULER builds its documents when a task loads, from the model's tokenizer and the target
lengths (lm_eval's ``metadata={"max_seq_lengths": [n]}``). This module loads each
(task, length) once, then answers its first ``per_cell`` documents with the stock model
and with every config on that one task object, so all of them see the same documents;
every outcome is checked against the document's hash (lm_eval's ``doc_hash``) before it
is kept, and results pair outcomes by document id.

Layers:

* :data:`TASKS`: the RULER tasks, which ones build their data offline and why the others
  cannot (:func:`resolve_tasks` gives the one-line reasons);
* :class:`LmEvalCells`: the only part that touches lm_eval or the model: builds a task at
  one length (seeded) and runs documents through ``lm_eval.simple_evaluate`` with
  ``log_samples=True``, the model enabled with a config or stock;
* :func:`run_cells`: the loop over (task, length, config) cells, with the resume log:
  every answered chunk of documents goes to ``records.jsonl`` (:class:`.store.RecordLog`)
  before the next starts, and a resumed run asks the model only for what is missing.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Protocol, Sequence

from attn_transition.config import TransitionConfig
from attn_transition.errors import UsageError, did_you_mean

from . import store
from .analysis import STOCK
from .runner import DEFAULT_CONFIGS, SuiteSettings

__all__ = ["RulerTask", "TASKS", "DEFAULT_TASKS", "DEFAULT_LENGTHS", "RulerSettings", "resolve_tasks",
           "item_id", "Cells", "LmEvalCells", "run_cells"]


@dataclass(frozen=True)
class RulerTask:
    name: str                      # our name (lm_eval's without the ``ruler_`` prefix)
    lm_eval_name: str
    offline: bool                  # builds its documents without a download
    about: str                     # what it is, or why it cannot run offline


_ESSAY = ("its haystack is Paul Graham's essays, the hub dataset baber/paul_graham_essays, which lm_eval "
          "downloads when the task loads")
_QA = "its documents are {} JSON, which lm_eval downloads from the web when the task loads"

TASKS: dict[str, RulerTask] = {t.name: t for t in (
    RulerTask("niah_single_1", "niah_single_1", True, "one number hidden in a repeated filler sentence"),
    RulerTask("niah_multikey_2", "niah_multikey_2", True, "one number among many needle-like distractors"),
    RulerTask("niah_multikey_3", "niah_multikey_3", True, "one UUID under a UUID key among UUID distractors"),
    RulerTask("vt", "ruler_vt", True, "variable tracking: every name bound to a value through a chain"),
    RulerTask("cwe", "ruler_cwe", True, "the 10 most common words of a numbered word list"),
    RulerTask("fwe", "ruler_fwe", True, "the 3 most frequent coded words of a Zipf-distributed text"),
    RulerTask("niah_single_2", "niah_single_2", False, _ESSAY),
    RulerTask("niah_single_3", "niah_single_3", False, _ESSAY),
    RulerTask("niah_multikey_1", "niah_multikey_1", False, _ESSAY),
    RulerTask("niah_multivalue", "niah_multivalue", False, _ESSAY),
    RulerTask("niah_multiquery", "niah_multiquery", False, _ESSAY),
    RulerTask("qa_squad", "ruler_qa_squad", False, _QA.format("SQuAD")),
    RulerTask("qa_hotpot", "ruler_qa_hotpot", False, _QA.format("HotpotQA")),
)}
DEFAULT_TASKS: tuple[str, ...] = tuple(t.name for t in TASKS.values() if t.offline)
DEFAULT_LENGTHS: tuple[int, ...] = (1024, 2048, 4096)
_ALIASES = {t.lm_eval_name: t.name for t in TASKS.values()}


def item_id(task: str, length: int, doc_id: int) -> str:
    """The record key of one document: ``niah_single_1@1024#0``."""
    return f"{task}@{length}#{doc_id}"


def resolve_tasks(names: Sequence[str]) -> tuple[tuple[str, ...], list[str]]:
    """``(runnable task names, one line per skipped task)``; UsageError on an unknown name.

    lm_eval's names (``ruler_vt``) are accepted for ours (``vt``).
    """
    runnable: list[str] = []
    skipped: list[str] = []
    for raw in names:
        name = _ALIASES.get(raw, raw)
        if name not in TASKS:
            raise UsageError(f"unknown RULER task {raw!r}{did_you_mean(raw, TASKS)}; --tasks takes a comma list "
                             f"of {', '.join(DEFAULT_TASKS)} (the ones that run offline)")
        task = TASKS[name]
        if not task.offline:
            skipped.append(f"ruler: skipping {name}: {task.about}; this suite runs offline "
                           f"(offline tasks: {', '.join(DEFAULT_TASKS)})")
        elif name not in runnable:
            runnable.append(name)
    return tuple(runnable), skipped


@dataclass(frozen=True)
class RulerSettings(SuiteSettings):
    """What to run. Validated on construction (UsageError naming the option)."""

    tasks: tuple[str, ...] = DEFAULT_TASKS
    lengths: tuple[int, ...] = DEFAULT_LENGTHS
    per_cell: int = 1
    configs: tuple[TransitionConfig, ...] = DEFAULT_CONFIGS      # specs are parsed here, once
    seed: int = 0
    batch_size: int = 1
    prompt_format: str = "auto"
    n_boot: int = 10000

    def __post_init__(self) -> None:
        if not self.tasks:
            raise UsageError(f"tasks names no RULER task that builds its data offline ({', '.join(DEFAULT_TASKS)}); "
                             f"nothing to run", field="tasks")
        bad = [t for t in self.tasks if t not in TASKS or not TASKS[t].offline]
        if bad:
            raise UsageError(f"tasks must be offline RULER tasks, got {', '.join(bad)}", field="tasks")
        if not self.lengths or any(not isinstance(n, int) or n < 256 for n in self.lengths):
            raise UsageError(f"lengths must be ints >= 256 (RULER's max_seq_lengths), got {list(self.lengths)}",
                             field="lengths")
        for name in ("tasks", "lengths"):
            values = getattr(self, name)
            if len(set(values)) != len(values):
                raise UsageError(f"{name} has repeated values: {','.join(map(str, values))}; give each value once",
                                 field=name)
        self._check_common()


class Cells(Protocol):
    """What :func:`run_cells` needs from the evaluation side (lm_eval, or a fake in the tests)."""

    def prepare(self, task: str, length: int) -> list[str]:
        """Build ``task`` at ``length``; the hashes of its documents, by document id."""

    def run(self, task: str, length: int, config: Optional[TransitionConfig],
            doc_ids: Sequence[int]) -> list[dict[str, Any]]:
        """Answer those documents of the prepared task: per document ``doc_id``, ``doc_hash``,
        ``output``, ``score`` (RULER's, in [0, 1]), ``target`` and ``ruler_length`` (RULER's count:
        prompt tokens plus the task's generation budget)."""

    def finish(self) -> None:
        """Put the model back to stock."""


class LmEvalCells:
    """RULER through ``lm_eval.simple_evaluate`` on one loaded ``attn-transition`` model.

    ``lm`` is an :class:`~attn_transition.evaluation.harness.AttnTransitionLM` (any HFLM
    works); configs are switched on its model with :func:`attn_transition.enable`. The
    tokenizer RULER sizes its documents with is ``tokenizer`` (the model's folder).

    Seeds: before building a task, Python's ``random`` gets ``seed`` and numpy and torch 1234
    (the seeds ``simple_evaluate`` sets by default before it loads tasks), so with the same
    settings, built in the same order, every run gets the same documents.
    """

    def __init__(self, lm: Any, tokenizer: str, *, seed: int = 0, chat: bool = False):
        import lm_eval.tasks

        self.lm = lm
        self.tokenizer = tokenizer
        self.seed = seed
        self.chat = chat
        self._ruler_dir = Path(lm_eval.tasks.__file__).parent / "ruler"
        self._loaded: Optional[tuple[str, int, Any, Any]] = None     # (task, length, task manager, Task)
        self._config: Any = "unset"

    def prepare(self, task: str, length: int) -> list[str]:
        import random

        import numpy as np
        import torch
        from lm_eval.tasks import TaskManager
        from lm_eval.utils import handle_non_serializable, hash_string

        name = TASKS[task].lm_eval_name
        random.seed(self.seed)
        np.random.seed(1234)
        torch.manual_seed(1234)
        manager = TaskManager(include_defaults=False, include_path=str(self._ruler_dir),
                              metadata={"tokenizer": self.tokenizer, "max_seq_lengths": [length]})
        with _quiet_lm_eval():
            built = manager.load([name])["tasks"][name]
        self._loaded = (task, length, manager, built)
        return [hash_string(json.dumps(doc, indent=2, default=handle_non_serializable, ensure_ascii=False))
                for doc in built.test_docs()]

    def _switch(self, config: Optional[TransitionConfig]) -> None:
        import attn_transition as at

        if config == self._config:
            return
        if config is None:
            if at.is_enabled(self.lm.model):
                at.disable(self.lm.model)
        else:
            at.enable(self.lm.model, config)
        self.lm.transition_config = config
        self._config = config

    def run(self, task: str, length: int, config: Optional[TransitionConfig],
            doc_ids: Sequence[int]) -> list[dict[str, Any]]:
        import lm_eval

        assert self._loaded is not None and self._loaded[:2] == (task, length), "prepare() the cell first"
        _, _, manager, built = self._loaded
        self._switch(config)
        with _quiet_lm_eval():
            res = lm_eval.simple_evaluate(model=self.lm, tasks=[built], task_manager=manager,
                                          samples={built.task_name: list(doc_ids)}, log_samples=True,
                                          apply_chat_template=self.chat, bootstrap_iters=0,
                                          random_seed=self.seed)
        return [{"doc_id": int(s["doc_id"]), "doc_hash": s["doc_hash"], "output": s["filtered_resps"][0],
                 "score": float(s[str(length)]), "target": s["target"], "ruler_length": s["doc"].get("length")}
                for s in res["samples"][built.task_name]]

    def finish(self) -> None:
        self._switch(None)


@contextlib.contextmanager
def _quiet_lm_eval() -> Iterator[None]:
    """lm_eval's loggers at ERROR while a call runs (its per-call warnings would bury the progress)."""
    logger = logging.getLogger("lm_eval")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _logged_state(out: Path, identity: dict[str, Any], resume: bool) -> dict[tuple[str, str], dict[str, Any]]:
    """Records of earlier runs in ``out`` by ``(item, config)`` (only with ``resume``)."""
    store.refuse_results(out, resume=resume)
    if not resume:
        return {}
    done: dict[tuple[str, str], dict[str, Any]] = {}
    for path, header, records in store.read_logs(out):
        store.check_identity(path, header, identity)
        for r in records:
            done.setdefault((r["item"], r["config"]), {k: v for k, v in r.items() if k != "type"})
    return done


def _check_hashes(task: str, length: int, hashes: Sequence[str], done: dict[tuple[str, str], dict[str, Any]],
                  n: int) -> None:
    for (_, config), r in done.items():
        if r.get("task") == task and r.get("length") == length and r["doc_id"] < n \
                and r["doc_hash"] != hashes[r["doc_id"]]:
            raise UsageError(f"--resume: document {r['doc_id']} of {task} at {length} tokens is not the one "
                             f"{config} answered earlier (another lm_eval, tokenizer or --seed?); rerun with "
                             f"the same setup or use another --output-dir")


def run_cells(cells: Cells, settings: RulerSettings, out_dir: str | Path, *, identity: dict[str, Any],
              resume: bool = False,
              on_records: Optional[Callable[[list[dict[str, Any]]], None]] = None) -> dict[str, Any]:
    """Run (or continue) every (task, length, config) cell; the records of this run's cells.

    Returns ``{"records": [...], "skipped": [...], "seconds": s}``: one record per
    (document, config) of the plan, earlier runs' included, in plan order. ``on_records``
    is called after each chunk is saved (tests use it to interrupt a run).
    """
    started = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    done = _logged_state(out, identity, resume)
    log = store.RecordLog(out / store.log_name(0, 1), identity)
    plan: list[tuple[str, Optional[TransitionConfig]]] = [(STOCK, None), *settings.labelled().items()]
    total = len(settings.tasks) * len(settings.lengths) * len(plan)
    cell = 0
    kept: list[dict[str, Any]] = []
    skipped: list[str] = []
    try:
        for task in settings.tasks:
            for length in settings.lengths:
                # Every (task, length) is built, finished or not: lm_eval's generators share random
                # state, so a resumed run must build the same sequence to get the same documents.
                try:
                    hashes = cells.prepare(task, length)
                except Exception as exc:                   # lm_eval could not build the data here
                    first = (str(exc).strip().splitlines() or [""])[0][:200]
                    skipped.append(f"ruler: skipping {task} at {length} tokens: lm_eval could not build its "
                                   f"documents ({type(exc).__name__}: {first})")
                    _say(skipped[-1])
                    cell += len(plan)
                    continue
                n = min(settings.per_cell, len(hashes))
                if n < settings.per_cell:
                    _say(f"ruler: {task} at {length} tokens has only {n} documents; using all of them")
                _check_hashes(task, length, hashes, done, n)
                for label, config in plan:
                    cell += 1
                    where = f"ruler [{cell}/{total}] {label} {task} {length}"
                    pending = [i for i in range(n) if (item_id(task, length, i), label) not in done]
                    if not pending:
                        _say(f"{where}: {n}/{n} documents done earlier, skipped")
                    for start in range(0, len(pending), settings.batch_size):
                        chunk = pending[start:start + settings.batch_size]
                        t0 = time.perf_counter()
                        samples = cells.run(task, length, config, chunk)
                        seconds = time.perf_counter() - t0
                        records = _records(task, length, label, chunk, samples, hashes, seconds)
                        log.append(records)                  # on disk before anything else happens
                        for r in records:
                            done[(r["item"], label)] = r
                        have = n - len(pending) + start + len(chunk)
                        mean = sum(r["score"] for r in records) / len(records)
                        _say(f"{where}: {have}/{n} documents, score {100 * mean:.0f}% on these "
                             f"{len(records)}, {seconds / len(records):.1f} s/document")
                        if on_records is not None:
                            on_records(records)
                    kept += [done[(item_id(task, length, i), label)] for i in range(n)]
    finally:
        cells.finish()
    return {"records": kept, "skipped": skipped, "seconds": time.perf_counter() - started}


def _records(task: str, length: int, label: str, chunk: Sequence[int], samples: Sequence[dict[str, Any]],
             hashes: Sequence[str], seconds: float) -> list[dict[str, Any]]:
    """Our records of one answered chunk, after checking lm_eval answered exactly those documents."""
    by_id = {s["doc_id"]: s for s in samples}
    if sorted(by_id) != sorted(chunk) or len(samples) != len(chunk):
        raise RuntimeError(f"lm_eval answered documents {sorted(by_id)} of {task} at {length} tokens, "
                           f"asked for {sorted(chunk)}")
    records = []
    for doc_id in chunk:
        s = by_id[doc_id]
        if s["doc_hash"] != hashes[doc_id]:
            raise RuntimeError(f"lm_eval answered another document {doc_id} of {task} at {length} tokens "
                               f"than the one it built")
        score = float(s["score"])
        records.append({"item": item_id(task, length, doc_id), "config": label, "task": task, "length": length,
                        "doc_id": doc_id, "doc_hash": s["doc_hash"], "output": s["output"], "score": score,
                        "correct": score >= 1.0, "target": s.get("target"), "ruler_length": s.get("ruler_length"),
                        "seconds": round(seconds / len(chunk), 4)})
    return records

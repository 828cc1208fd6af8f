"""Aggregation and statistics of finished records (pure: dicts in, dicts out).

``items`` are dicts with at least ``item_id``, ``task``, ``length``, ``depth`` (and
``split`` under ``--tune``); ``outcomes`` maps ``(item_id, config)`` to a record dict
with ``correct`` and ``output``. Every comparison is paired: a config is compared with
the stock model on exactly the items both have, with
:func:`attn_transition.evaluation.stats.compare_paired` (percentile bootstrap of the
mean difference, win/tie/loss, exact McNemar).

The per-item best config is only ever computed by :func:`oracle`, whose output is
labelled as an upper bound; it is never the result.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Callable, Iterable, Mapping, Sequence

from attn_transition.evaluation.stats import compare_paired, wilson_interval

__all__ = ["STOCK", "ORACLE", "accuracy", "accuracy_table", "compare", "comparison_table", "oracle",
           "choose_config", "split_items", "summarise"]

STOCK = "stock"
ORACLE = "oracle (upper bound)"

Outcomes = Mapping[tuple[str, str], Mapping[str, Any]]


def accuracy(items: Sequence[Mapping[str, Any]], outcomes: Outcomes, config: str) -> dict[str, Any]:
    """Accuracy of ``config`` over the items it has an outcome for, with a Wilson interval."""
    got = [bool(outcomes[(it["item_id"], config)]["correct"]) for it in items
           if (it["item_id"], config) in outcomes]
    n, k = len(got), sum(got)
    lo, hi = wilson_interval(k, n)
    return {"n": n, "correct": k, "accuracy": k / n if n else float("nan"), "ci_low": lo, "ci_high": hi}


def _groups(items: Iterable[Mapping[str, Any]], by: Sequence[str]) -> dict[tuple, list[Mapping[str, Any]]]:
    groups: dict[tuple, list[Mapping[str, Any]]] = defaultdict(list)
    for it in items:
        groups[tuple(it[k] for k in by)].append(it)
    return dict(sorted(groups.items(), key=lambda kv: tuple(str(x) if isinstance(x, str) else x for x in kv[0])))


def accuracy_table(items: Sequence[Mapping[str, Any]], outcomes: Outcomes, configs: Sequence[str],
                   by: Sequence[str] = ()) -> list[dict[str, Any]]:
    """One row per group of ``by`` (one row in all if empty) and config."""
    rows = []
    for key, group in _groups(items, by).items():
        for config in configs:
            rows.append({**dict(zip(by, key)), "config": config, **accuracy(group, outcomes, config)})
    return rows


def compare(items: Sequence[Mapping[str, Any]], outcomes: Outcomes, baseline: str, treatment: str, *,
            n_boot: int = 10000, seed: int = 0) -> dict[str, Any]:
    """Paired comparison of ``treatment`` with ``baseline`` on the items both have.

    Adds ``changed``: on how many items the generated text differs at all.
    """
    both = [it["item_id"] for it in items
            if (it["item_id"], baseline) in outcomes and (it["item_id"], treatment) in outcomes]
    a = [float(outcomes[(i, baseline)]["correct"]) for i in both]
    b = [float(outcomes[(i, treatment)]["correct"]) for i in both]
    changed = sum(outcomes[(i, baseline)]["output"] != outcomes[(i, treatment)]["output"] for i in both)
    if not both:
        return {"baseline": baseline, "treatment": treatment, "n": 0, "changed": 0}
    result = compare_paired(a, b, n_boot=n_boot, seed=seed).as_dict()
    return {"baseline": baseline, "treatment": treatment, **result, "changed": changed}


def comparison_table(items: Sequence[Mapping[str, Any]], outcomes: Outcomes, baseline: str,
                     treatments: Sequence[str], by: Sequence[str] = (), *, n_boot: int = 10000,
                     seed: int = 0) -> list[dict[str, Any]]:
    rows = []
    for key, group in _groups(items, by).items():
        for t in treatments:
            rows.append({**dict(zip(by, key)), **compare(group, outcomes, baseline, t, n_boot=n_boot, seed=seed)})
    return rows


def oracle(items: Sequence[Mapping[str, Any]], outcomes: Outcomes, configs: Sequence[str]) -> dict[tuple[str, str], dict]:
    """Per item, correct if *any* of ``configs`` is: an upper bound, not a method.

    Returned as extra outcomes under the config name :data:`ORACLE`.
    """
    out: dict[tuple[str, str], dict] = {}
    for it in items:
        have = [outcomes[(it["item_id"], c)] for c in configs if (it["item_id"], c) in outcomes]
        if len(have) == len(configs) and have:
            out[(it["item_id"], ORACLE)] = {"correct": any(bool(r["correct"]) for r in have),
                                            "output": "\x00oracle"}
    return out


def choose_config(items: Sequence[Mapping[str, Any]], outcomes: Outcomes,
                  grid: Sequence[str]) -> tuple[str, list[dict[str, Any]]]:
    """The grid config with the highest accuracy on ``items`` (the dev split).

    Ties go to the config listed first. Returns ``(label, rows of dev accuracies)``.
    """
    assert grid, "the tuning grid is empty"
    rows = [{"config": c, **accuracy(items, outcomes, c)} for c in grid]
    best = max(range(len(grid)), key=lambda i: (rows[i]["correct"], -i))
    return grid[best], rows


def split_items(items: Sequence[Mapping[str, Any]], dev_fraction: float,
                shuffle: Callable[[list], None]) -> dict[str, str]:
    """``item_id -> "dev" | "test"``, stratified by (task, length).

    In each stratum the items are shuffled with ``shuffle`` (a seeded ``random.shuffle``)
    and the first ``round(dev_fraction * n)`` go to dev; at least one item of a stratum
    of two or more goes to each side.
    """
    assert 0.0 < dev_fraction < 1.0, f"dev_fraction must be in (0, 1), got {dev_fraction}"
    split: dict[str, str] = {}
    for _, group in _groups(items, ("task", "length")).items():
        ids = [it["item_id"] for it in group]
        shuffle(ids)
        k = round(dev_fraction * len(ids))
        if len(ids) >= 2:
            k = min(max(k, 1), len(ids) - 1)
        for i, item_id in enumerate(ids):
            split[item_id] = "dev" if i < k else "test"
    return split


def summarise(items: Sequence[Mapping[str, Any]], outcomes: Outcomes, configs: Sequence[str], *,
              show_oracle: bool = False, n_boot: int = 10000, seed: int = 0) -> dict[str, Any]:
    """Accuracy tables and paired comparisons of every config against the stock model."""
    treatments = [c for c in configs if c != STOCK]
    table_configs = [STOCK, *treatments]
    all_outcomes: dict[tuple[str, str], Mapping[str, Any]] = dict(outcomes)
    summary: dict[str, Any] = {
        "configs": table_configs,
        "accuracy": accuracy_table(items, all_outcomes, table_configs),
        "accuracy_by_task": accuracy_table(items, all_outcomes, table_configs, ("task",)),
        "accuracy_by_length": accuracy_table(items, all_outcomes, table_configs, ("length",)),
        "accuracy_by_task_length": accuracy_table(items, all_outcomes, table_configs, ("task", "length")),
        "accuracy_by_depth": accuracy_table(items, all_outcomes, table_configs, ("depth",)),
        "accuracy_by_depth_length": accuracy_table(items, all_outcomes, table_configs, ("depth", "length")),
        "comparison": comparison_table(items, all_outcomes, STOCK, treatments, n_boot=n_boot, seed=seed),
        "comparison_by_task": comparison_table(items, all_outcomes, STOCK, treatments, ("task",),
                                               n_boot=n_boot, seed=seed),
        "comparison_by_length": comparison_table(items, all_outcomes, STOCK, treatments, ("length",),
                                                 n_boot=n_boot, seed=seed),
    }
    if show_oracle and len(treatments) >= 1:
        extra = oracle(items, all_outcomes, treatments)
        all_outcomes.update(extra)
        summary["oracle"] = {
            "label": f"ORACLE UPPER BOUND: an item counts as correct if any of {len(treatments)} configs "
                     f"answers it; the config is picked per item with the answer known, so this is not "
                     f"an achievable result",
            "accuracy": accuracy(items, all_outcomes, ORACLE),
            "comparison": compare(items, all_outcomes, STOCK, ORACLE, n_boot=n_boot, seed=seed),
        }
    return summary

"""Results of ``bench --suite ruler``: pairing, statistics, ``results.json``, ``results.md`` and the plot.

Pure (records in, dicts and files out; no lm_eval). A record is one (document, config)
outcome of :mod:`.ruler`: ``item`` (task, length and document id), ``config``, ``task``,
``length``, ``doc_id``, ``doc_hash``, ``output`` and ``score`` (RULER's string match, the
share of the expected strings found: 0/1 for one needle, fractions for ``vt``, ``cwe``
and ``fwe``).

Pairing: a config's outcome on a document is compared with the stock model's on the same
document id, and only where both saw the same document (equal ``doc_hash``); anything
else is counted as unpaired and left out. The comparison is
:func:`.analysis.compare` on the scores (paired bootstrap interval of the mean difference,
win/tie/loss), with the exact McNemar test on the binary outcome "every expected string
found" where the scores are not already 0/1.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

from attn_transition.evaluation.stats import mcnemar_exact, mean_ci, win_tie_loss

from ..runtime.files import write_json_atomic, write_text_atomic
from . import analysis
from .analysis import STOCK
from .report import _CMP_HEAD, _comparison_rows, _pivot, _table, config_values

__all__ = ["RESULTS_FORMAT", "PLOT", "pair", "score_table", "comparison_rows", "summarise", "build_results",
           "markdown", "write_plot", "write_outputs"]

RESULTS_FORMAT = "attn-transition-ruler-results/1"
PLOT = "score_vs_length.png"

Outcomes = dict[tuple[str, str], dict[str, Any]]


def pair(records: Sequence[Mapping[str, Any]]) -> tuple[list[dict[str, Any]], Outcomes, dict[str, int]]:
    """``(items, outcomes, unpaired)`` of the records.

    ``items``: one per document (``item_id``, ``task``, ``length``, ``doc_id``); ``outcomes``:
    ``(item_id, config) -> {"correct": score, "exact": 0/1, "output": ...}`` for the stock
    records and every config record on the same document as stock's; ``unpaired``: per config,
    how many of its records were left out (no stock record, or another document).
    """
    stock = {r["item"]: r["doc_hash"] for r in records if r["config"] == STOCK}
    items: dict[str, dict[str, Any]] = {}
    outcomes: Outcomes = {}
    unpaired: dict[str, int] = {}
    for r in records:
        if stock.get(r["item"]) != r["doc_hash"]:
            unpaired[r["config"]] = unpaired.get(r["config"], 0) + 1
            continue
        items.setdefault(r["item"], {"item_id": r["item"], "task": r["task"], "length": r["length"],
                                     "doc_id": r["doc_id"]})
        score = float(r["score"])
        outcomes[(r["item"], r["config"])] = {"correct": score, "exact": float(score >= 1.0), "output": r["output"]}
    return list(items.values()), outcomes, unpaired


def _score_row(group: Sequence[Mapping[str, Any]], outcomes: Outcomes, config: str, *, n_boot: int,
               seed: int) -> dict[str, Any]:
    got = [outcomes[(it["item_id"], config)] for it in group if (it["item_id"], config) in outcomes]
    if not got:
        return {"config": config, "n": 0, "score": None, "ci_low": None, "ci_high": None, "all_found": 0}
    mean, lo, hi = mean_ci([o["correct"] for o in got], n_boot=n_boot, seed=seed)
    return {"config": config, "n": len(got), "score": mean, "ci_low": lo, "ci_high": hi,
            "all_found": int(sum(o["exact"] for o in got))}


def score_table(items: Sequence[Mapping[str, Any]], outcomes: Outcomes, configs: Sequence[str],
                by: Sequence[str] = (), *, n_boot: int = 10000, seed: int = 0) -> list[dict[str, Any]]:
    """Mean RULER score with a 95% bootstrap interval, per group of ``by`` and config."""
    return [{**dict(zip(by, key)), **_score_row(group, outcomes, c, n_boot=n_boot, seed=seed)}
            for key, group in analysis._groups(items, by).items() for c in configs]


def comparison_rows(items: Sequence[Mapping[str, Any]], outcomes: Outcomes, treatments: Sequence[str],
                    by: Sequence[str] = (), *, n_boot: int = 10000, seed: int = 0) -> list[dict[str, Any]]:
    """Every config against stock on the paired documents, per group of ``by``.

    ``mcnemar_on`` says what the McNemar p-value tests: ``score`` where every score is 0 or 1,
    else ``all found`` (the share of documents with every expected string found).
    """
    rows = analysis.comparison_table(items, outcomes, STOCK, treatments, by, n_boot=n_boot, seed=seed)
    groups = analysis._groups(items, by)
    for row in rows:
        if not row.get("n"):
            continue
        row["mcnemar_on"] = "score"
        if row["mcnemar_p"] is None:
            group = groups[tuple(row[k] for k in by)]
            both = [it["item_id"] for it in group
                    if (it["item_id"], STOCK) in outcomes and (it["item_id"], row["treatment"]) in outcomes]
            wins, _, losses = win_tie_loss([outcomes[(i, STOCK)]["exact"] for i in both],
                                           [outcomes[(i, row["treatment"])]["exact"] for i in both])
            row["mcnemar_p"] = mcnemar_exact(losses, wins)
            row["mcnemar_on"] = "all found"
    return rows


def summarise(records: Sequence[Mapping[str, Any]], configs: Sequence[str], *, n_boot: int = 10000,
              seed: int = 0) -> dict[str, Any]:
    """Score tables and paired comparisons with stock, per task and length, per task, and overall."""
    items, outcomes, unpaired = pair(records)
    treatments = [c for c in configs if c != STOCK]
    order = [STOCK, *treatments]
    kw = {"n_boot": n_boot, "seed": seed}
    return {
        "configs": order,
        "documents": len(items),
        "unpaired": unpaired,
        "score_by_task_length": score_table(items, outcomes, order, ("task", "length"), **kw),
        "score_by_task": score_table(items, outcomes, order, ("task",), **kw),
        "score": score_table(items, outcomes, order, **kw),
        "comparison_by_task_length": comparison_rows(items, outcomes, treatments, ("task", "length"), **kw),
        "comparison_by_task": comparison_rows(items, outcomes, treatments, ("task",), **kw),
        "comparison": comparison_rows(items, outcomes, treatments, **kw),
    }


def build_results(records: Sequence[Mapping[str, Any]], configs: Sequence[str], settings: Mapping[str, Any],
                  meta: Mapping[str, Any], skipped: Sequence[str] = ()) -> dict[str, Any]:
    """The ``results.json`` dict: ``meta`` (with the settings, every field of each config by its
    label, skipped cells and timings), every record, and :func:`summarise`'s tables.

    ``configs`` are labels, each a config's canonical spec (:func:`attn_transition.format_config`),
    so each is parsed back to its fields."""
    from attn_transition.config import config_dict, parse_config

    seconds: dict[str, float] = {}
    for r in records:
        seconds[r["config"]] = seconds.get(r["config"], 0.0) + float(r.get("seconds", 0.0))
    summary = summarise(records, [STOCK, *configs], n_boot=settings["n_boot"], seed=settings["seed"])
    return {
        "format": RESULTS_FORMAT,
        "meta": {"configs": {label: config_dict(parse_config(label)) for label in configs}, **meta,
                 "settings": dict(settings), "skipped": list(skipped), "complete": not skipped,
                 "seconds_per_config": {k: round(v, 2) for k, v in seconds.items()}},
        "records": list(records),
        "summary": summary,
    }


# -- results.md ---------------------------------------------------------------------------------

def markdown(results: Mapping[str, Any]) -> str:
    meta, summary = results["meta"], results["summary"]
    s, configs = meta["settings"], summary["configs"]
    lines = [f"# attn-transition bench --suite ruler: {meta['model']}", "",
             f"- model: `{meta['model']}` ({meta.get('model_type')}, {meta.get('dtype')} on {meta.get('device')}), "
             f"prompts: {'chat template' if meta['chat'] else 'plain'}; lm_eval {meta.get('lm_eval')}",
             f"- tasks: {', '.join(s['tasks'])}; lengths (RULER max_seq_lengths): "
             f"{', '.join(map(str, s['lengths']))}; the first {s['per_cell']} document(s) per task and length "
             f"(lm_eval --limit {s['per_cell']}); data seed {s['seed']}; greedy, each task's own generation budget",
             f"- {summary['documents']} documents; score: RULER's string match (share of the expected strings "
             f"found in the output), in %",
             f"- time: {meta['seconds_this_run']:.0f} s this run; answering, per config: "
             + ", ".join(f"{k} {v:.0f} s" for k, v in meta["seconds_per_config"].items()),
             "- versions: " + ", ".join(f"{k} {v}" for k, v in meta["versions"].items() if k != "platform")]
    values = config_values(results)
    if values:
        lines += ["- configs (every field; stock = the model without the transition):",
                  *(f"  - `{label}`: {text}" for label, text in values.items())]
    for line in meta.get("skipped", []):
        lines.append(f"- {line}")
    if summary["unpaired"]:
        lines.append("- left out of every comparison (no stock answer on the same document): "
                     + ", ".join(f"{k} {v}" for k, v in summary["unpaired"].items()))
    if not meta.get("complete", True):
        lines += ["", "**Incomplete run: some (document, config) pairs are missing; rerun with --resume.**"]
    lines += ["", "## Score (%) by task and length", "",
              f"Mean RULER score; the 95% bootstrap intervals are in results.json and `{PLOT}`.", ""]
    scores = [{**r, "accuracy": r["score"]} for r in summary["score_by_task_length"]]   # _pivot's column
    lines += _table(["task", "length", "n", *configs], _pivot(scores, ["task", "length"], configs))
    lines += ["", "## Paired difference to the stock model (same documents)", "",
              "diff = config score - stock score in percentage points, 95% paired bootstrap interval of the "
              "per-document difference; win = the config scores higher on a document; McNemar p on the "
              "scores where they are 0/1, else on 'every expected string found'.", ""]
    lines += ["### By task and length", ""]
    lines += _table(["task", "length", *_CMP_HEAD], _comparison_rows(summary["comparison_by_task_length"],
                                                                     ["task", "length"]))
    lines += ["", "### By task (all lengths)", ""]
    lines += _table(["task", *_CMP_HEAD], _comparison_rows(summary["comparison_by_task"], ["task"]))
    lines += ["", "### All tasks and lengths", ""]
    lines += _table(_CMP_HEAD, _comparison_rows(summary["comparison"]))
    lines += ["", f"Plot: `{PLOT}` (score vs length per config, one panel per task).", ""]
    return "\n".join(lines)


# -- the plot -----------------------------------------------------------------------------------

def write_plot(results: Mapping[str, Any], path: Path) -> Path:
    """Mean score vs length (log scale) per config with its bootstrap interval, a panel per task."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..plotting import LEGEND_FONT, offsets, series_style

    summary = results["summary"]
    configs = summary["configs"]
    rows = summary["score_by_task_length"]
    tasks = list(dict.fromkeys(r["task"] for r in rows)) or ["(no documents)"]
    lengths = sorted({r["length"] for r in rows})
    ncols = min(3, len(tasks))
    nrows = -(-len(tasks) // ncols)
    fig, axes = plt.subplots(nrows, ncols, squeeze=False, layout="constrained",
                             figsize=(max(4.8, 3.4 * ncols), (3.0 + 0.25 * len(configs)) * nrows))
    panels = [ax for row in axes for ax in row]
    for ax in panels[len(tasks):]:
        ax.set_visible(False)
    for ax, task in zip(panels, tasks):
        for k, config in enumerate(configs):
            pts = sorted((r["length"], r) for r in rows if r["task"] == task and r["config"] == config and r["n"])
            if not pts:
                continue
            shift = 1 + offsets(len(configs), 0.04)[k]                      # configs side by side at a length
            ys = [r["score"] for _, r in pts]
            err = [[y - r["ci_low"] for y, (_, r) in zip(ys, pts)], [r["ci_high"] - y for y, (_, r) in zip(ys, pts)]]
            ax.errorbar([x * shift for x, _ in pts], ys, yerr=err, capsize=3, label=config, **series_style(k))
        if lengths:
            ax.set_xscale("log", base=2)
            ax.set_xlim(min(lengths) / 1.25, max(lengths) * 1.25)
            ax.set_xticks(lengths, [str(x) for x in lengths])
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel("RULER length (tokens)")
        ax.set_title(task, fontsize=9)
    for row in axes:
        row[0].set_ylabel("score (95% bootstrap CI)")
    handles, labels = axes[0][0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="outside lower center", ncols=min(3, len(labels)), fontsize=LEGEND_FONT)
    fig.suptitle(f"{results['meta']['model']}: RULER through lm-evaluation-harness", fontsize=9)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def write_outputs(results: Mapping[str, Any], out_dir: Path) -> list[Path]:
    """``results.json``, ``results.md`` and the plot in ``out_dir``."""
    out = Path(out_dir)
    write_json_atomic(out / "results.json", results)
    write_text_atomic(out / "results.md", markdown(results))
    return [out / "results.json", out / "results.md", write_plot(results, out / PLOT)]

"""The Markdown summary and the PNG plots of a results dict (matplotlib, Agg backend)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence


__all__ = ["markdown", "write_markdown", "write_plots", "figures", "heatmap_figure", "accuracy_figure", "HEATMAP_CMAP",
           "config_values", "config_lines"]


def _pct(x: Any) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}"


def _signed(x: Any) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:+.1f}"


def _table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines


def _pivot(rows: Sequence[Mapping[str, Any]], keys: Sequence[str], configs: Sequence[str]) -> list[list[str]]:
    """Rows ``keys..., acc(config1), acc(config2), ...`` from an accuracy table."""
    by_key: dict[tuple, dict[str, Mapping[str, Any]]] = {}
    for r in rows:
        by_key.setdefault(tuple(r[k] for k in keys), {})[r["config"]] = r
    out = []
    for key, per in by_key.items():
        n = next(iter(per.values()))["n"]
        out.append([*(_fmt_key(k, v) for k, v in zip(keys, key)), n,
                    *(_pct(per[c]["accuracy"]) if c in per else "-" for c in configs)])
    return out


def _fmt_key(name: str, value: Any) -> str:
    return f"{round(100 * value)}%" if name == "depth" else str(value)


def _comparison_rows(rows: Sequence[Mapping[str, Any]], keys: Sequence[str] = ()) -> list[list[Any]]:
    out = []
    for r in rows:
        if not r.get("n"):
            continue
        p = r.get("mcnemar_p")
        out.append([*(_fmt_key(k, r[k]) for k in keys), r["treatment"], r["n"], _pct(r["mean_baseline"]),
                    _pct(r["mean_treatment"]), _signed(r["diff"]),
                    f"[{_signed(r['ci_low'])}, {_signed(r['ci_high'])}]",
                    f"{r['wins']}/{r['ties']}/{r['losses']}", "-" if p is None else f"{p:.3g}",
                    r.get("changed", "-")])
    return out


def config_values(results: Mapping[str, Any]) -> dict[str, str]:
    """``label -> every field of that config`` (``"classic" -> "classic schedule: alpha=0.5, beta=0.1,
    ..."``), from the configs the run stored (``meta["configs"]``, each
    :func:`attn_transition.config.config_dict`): a label such as ``classic`` names only the fields
    that differ from the defaults, so a summary spells out what was run."""
    out: dict[str, str] = {}
    for label, fields in (results["meta"].get("configs") or {}).items():
        values = ", ".join(f"{k}={v}" for k, v in fields.items() if k != "schedule")
        out[label] = f"{fields.get('schedule', '?')} schedule: {values}"
    return out


def config_lines(results: Mapping[str, Any]) -> list[str]:
    """The terminal summary's legend: one line per config, its label and every field."""
    values = config_values(results)
    if not values:
        return []
    width = max(len(label) for label in values)
    return ["configs (every field; stock = the model without the transition):",
            *(f"  {label:<{width}}  {text}" for label, text in values.items())]


_CMP_HEAD = ["config", "n", "stock %", "config %", "diff (pts)", "95% CI (paired bootstrap)", "win/tie/loss",
             "McNemar p", "outputs changed"]


def markdown(results: Mapping[str, Any]) -> str:
    meta, summary = results["meta"], results["summary"]
    configs = summary["configs"]
    items = results["items"]
    s = meta["settings"]
    chance = {}
    for it in items:
        chance.setdefault(it["task"], it.get("chance", 0.0))
    lines = [f"# attn-transition bench: {meta['model']}", ""]
    lines += [
        f"- model: `{meta['model']}` ({meta.get('model_type')}, {meta.get('num_layers')} layers, "
        f"{meta.get('dtype')} on {meta.get('device')}), prompt format: {'chat' if meta['chat'] else 'plain'}",
        f"- tasks: {', '.join(s['tasks'])} (task data v{meta['task_data_version']}); lengths: "
        f"{', '.join(map(str, s['lengths']))} tokens; depths: {', '.join(f'{round(100 * d)}%' for d in s['depths'])}; "
        f"{s['per_cell']} item(s) per cell; seed {meta['seed']}; greedy, {meta['max_new_tokens']} new tokens",
        f"- scope: {summary['scope']}; {len(items)} items; scoring: normalised exact match on the first "
        f"generated line; chance level: " + ", ".join(f"{t} {_pct(c)}%" for t, c in chance.items()),
        f"- time: {meta['seconds_this_run']:.0f} s this run"
        + (f" (model load {meta['load_seconds']:.1f} s)" if "load_seconds" in meta else "")
        + "; per config: " + ", ".join(f"{k} {v:.0f} s" for k, v in meta["seconds_per_config"].items()),
        "- versions: " + ", ".join(f"{k} {v}" for k, v in meta["versions"].items() if k != "platform"),
    ]
    values = config_values(results)
    if values:
        lines += ["- configs (every field; stock = the model without the transition):",
                  *(f"  - `{label}`: {text}" for label, text in values.items())]
    if not meta.get("complete", True):
        lines += ["", "**Incomplete run: some (item, config) pairs are missing; rerun with --resume.**"]
    lines += ["", "## Accuracy", ""]
    lines += _table(["config", "n", "accuracy %", "95% CI (Wilson)"],
                    [[r["config"], r["n"], _pct(r["accuracy"]), f"[{_pct(r['ci_low'])}, {_pct(r['ci_high'])}]"]
                     for r in summary["accuracy"]])
    lines += ["", "## Paired difference to the stock model (same prompts)", ""]
    lines += ["diff = config accuracy - stock accuracy in percentage points; win = the config is right where "
              "stock is wrong; 'outputs changed' counts items whose generated text differs at all.", ""]
    lines += _table(_CMP_HEAD, _comparison_rows(summary["comparison"]))
    lines += ["", "### By task", ""]
    lines += _table(["task", *_CMP_HEAD], _comparison_rows(summary["comparison_by_task"], ["task"]))
    lines += ["", "### By length", ""]
    lines += _table(["length", *_CMP_HEAD], _comparison_rows(summary["comparison_by_length"], ["length"]))
    lines += ["", "## Accuracy (%) by length", ""]
    lines += _table(["length", "n", *configs], _pivot(summary["accuracy_by_length"], ["length"], configs))
    lines += ["", "## Accuracy (%) by task and length", ""]
    lines += _table(["task", "length", "n", *configs],
                    _pivot(summary["accuracy_by_task_length"], ["task", "length"], configs))
    lines += ["", "## Accuracy (%) by depth of the (first) needle", ""]
    lines += _table(["depth", "n", *configs], _pivot(summary["accuracy_by_depth"], ["depth"], configs))
    if meta.get("inactive"):
        lines += ["", "## Configs that edit nothing at some lengths", ""]
        lines += [f"- {r['config']} at {r['length']} tokens (below its length thresholds: outputs equal stock)"
                  for r in meta["inactive"]]
    if meta.get("tune"):
        t = meta["tune"]
        lines += ["", "## Tuning (dev split, selection only)", "",
                  f"Chosen on {t['dev_items']} dev items: **{t['chosen']}**. The tables above are on the "
                  f"{t['test_items']} test items only.", ""]
        lines += _table(["config", "dev n", "dev accuracy %"],
                        [[r["config"], r["n"], _pct(r["accuracy"])] for r in t["dev_accuracy"]])
    if "oracle" in summary:
        o = summary["oracle"]
        lines += ["", "## ORACLE UPPER BOUND (not a result)", "", o["label"] + ".", ""]
        c = o["comparison"]
        lines += _table(["", "n", "stock %", "oracle %", "diff (pts)"],
                        [["oracle upper bound", c.get("n"), _pct(c.get("mean_baseline")),
                          _pct(c.get("mean_treatment")), _signed(c.get("diff"))]])
    lines += ["", "Plots: `heatmap.png` (accuracy by depth x length per config and task), "
              "`accuracy_vs_length.png`.", ""]
    return "\n".join(lines)


def write_markdown(results: Mapping[str, Any], path: Path) -> None:
    from ..runtime.files import write_text_atomic

    write_text_atomic(path, markdown(results))


def _grid(items: Sequence[Mapping[str, Any]], records: Sequence[Mapping[str, Any]], config: str,
          task: str | None, depths: Sequence[float], lengths: Sequence[int]):
    import numpy as np

    kind = {it["item_id"]: it for it in items}
    total = np.zeros((len(depths), len(lengths)))
    right = np.zeros_like(total)
    for r in records:
        if r["config"] != config:
            continue
        it = kind[r["item"]]
        if task is not None and it["task"] != task:
            continue
        if it["depth"] in depths and it["length"] in lengths:
            i, j = depths.index(it["depth"]), lengths.index(it["length"])
            total[i, j] += 1
            right[i, j] += bool(r["correct"])
    with np.errstate(invalid="ignore", divide="ignore"):
        return right / total, total


HEATMAP_CMAP = "viridis"      # colour-blind safe and readable in grey; not red/green


def _used(results: Mapping[str, Any]) -> tuple[list, list, list[str], list[str | None], list[float], list[int]]:
    """The items and records a plot shows (the test split after --tune), its configs, panels
    (each task, then all tasks), depths and lengths."""
    summary = results["summary"]
    used = {it["item_id"] for it in results["items"] if summary["scope"] == "all items" or it["split"] == "test"}
    items = [it for it in results["items"] if it["item_id"] in used]
    records = [r for r in results["records"] if r["item"] in used]
    tasks = list(dict.fromkeys(it["task"] for it in items))
    panels: list[str | None] = [*tasks, None] if len(tasks) > 1 else list(tasks)
    return (items, records, list(summary["configs"]), panels, sorted({it["depth"] for it in items}),
            sorted({it["length"] for it in items}))


def _scope(results: Mapping[str, Any]) -> str:
    return "" if results["summary"]["scope"] == "all items" else f" ({results['summary']['scope']})"


def heatmap_figure(plt: Any, results: Mapping[str, Any]) -> Any:
    """Accuracy by needle depth x prompt length, one panel per config (rows) and task (columns)."""
    import textwrap

    items, records, configs, panels, depths, lengths = _used(results)
    fig, axes = plt.subplots(len(configs), len(panels), squeeze=False, layout="constrained",
                             figsize=(1.6 + 1.0 * max(2, len(lengths)) * len(panels),
                                      1.0 + 0.45 * max(3, len(depths)) * len(configs)))
    im = None
    for r, config in enumerate(configs):
        for c, task in enumerate(panels):
            ax = axes[r][c]
            acc, n = _grid(items, records, config, task, depths, lengths)
            im = ax.imshow(acc, vmin=0, vmax=1, cmap=HEATMAP_CMAP, aspect="auto")
            for i in range(len(depths)):
                for j in range(len(lengths)):
                    if n[i, j]:
                        # viridis is dark below about 0.55: white text there, black above
                        ax.text(j, i, f"{acc[i, j]:.2f}", ha="center", va="center", fontsize=7,
                                color="white" if acc[i, j] < 0.55 else "black")
            ax.set_xticks(range(len(lengths)), [str(x) for x in lengths] if r == len(configs) - 1 else [],
                          fontsize=7)
            ax.set_yticks(range(len(depths)), [f"{round(100 * d)}%" for d in depths] if c == 0 else [],
                          fontsize=7)
            if r == 0:
                ax.set_title(task or "all tasks", fontsize=9)
            if c == 0:
                ax.set_ylabel(textwrap.fill(config, 24) + "\nneedle depth", fontsize=7)
            if r == len(configs) - 1:
                ax.set_xlabel("prompt tokens", fontsize=7)
    if im is not None:
        fig.colorbar(im, ax=axes, shrink=0.6, label="accuracy")
    fig.suptitle(f"{results['meta']['model']}: accuracy by needle depth x prompt length{_scope(results)}",
                 fontsize=9)
    return fig


def accuracy_figure(plt: Any, results: Mapping[str, Any]) -> Any:
    """Accuracy vs prompt length per config with 95% Wilson intervals, one panel per task.

    No config hides under another: each has its own marker and line style
    (:func:`..plotting.series_style`) and a small x offset, and a panel where two configs have the
    same accuracy at every length says so ("lines coincide: stock = classic")."""
    import textwrap

    from attn_transition.evaluation.stats import wilson_interval

    from ..plotting import LEGEND_FONT, NOTE_FONT, coincidence_note, coinciding, offsets, series_style

    items, records, configs, panels, depths, lengths = _used(results)
    fig, axes = plt.subplots(1, len(panels), squeeze=False, figsize=(3.8 * len(panels), 3.8 + 0.3 * len(configs)),
                             layout="constrained")
    dodge = offsets(len(configs), 0.05)            # multiplicative: the x axis is logarithmic
    for c, task in enumerate(panels):
        ax = axes[0][c]
        plotted: list[tuple[str, list[float]]] = []
        for k, config in enumerate(configs):
            acc, n = _grid(items, records, config, task, depths, lengths)
            right = (acc * n)
            ys, lo, hi = [], [], []
            for j in range(len(lengths)):
                tot, ok = int(n[:, j].sum()), int(round(float(right[:, j][n[:, j] > 0].sum())))
                p = ok / tot if tot else float("nan")
                w = wilson_interval(ok, tot) if tot else (float("nan"), float("nan"))
                ys.append(p), lo.append(p - w[0]), hi.append(w[1] - p)
            xs = [x * (1 + dodge[k]) for x in lengths]
            ax.errorbar(xs, ys, yerr=[lo, hi], capsize=3, label=config, **series_style(k))
            plotted.append((config, ys))
        note = coincidence_note(coinciding(plotted))
        if note:
            ax.text(0.02, 0.02, textwrap.fill(note, 44, break_on_hyphens=False), transform=ax.transAxes,
                    fontsize=NOTE_FONT, va="bottom", ha="left", color="dimgrey",
                    bbox={"facecolor": "white", "alpha": 0.8, "edgecolor": "none", "pad": 1.5})
        ax.set_xscale("log", base=2)
        ax.set_xticks(lengths, [str(x) for x in lengths])
        ax.minorticks_off()
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel("prompt tokens")
        ax.set_title(task or "all tasks", fontsize=10)
        if c == 0:
            ax.set_ylabel("accuracy (95% Wilson CI)")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=min(3, len(labels)), fontsize=LEGEND_FONT)
    fig.suptitle(f"{results['meta']['model']}: accuracy vs prompt length{_scope(results)}", fontsize=11)
    return fig


PLOTS = {"heatmap.png": heatmap_figure, "accuracy_vs_length.png": accuracy_figure}


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def figures(results: Mapping[str, Any]) -> dict[str, Any]:
    """``file name -> Figure`` of every plot (the caller closes them)."""
    plt = _pyplot()
    return {name: build(plt, results) for name, build in PLOTS.items()}


def write_plots(results: Mapping[str, Any], out_dir: Path) -> list[Path]:
    """``heatmap.png`` and ``accuracy_vs_length.png`` in ``out_dir``; returns their paths."""
    plt = _pyplot()
    paths = []
    for name, fig in figures(results).items():
        paths.append(Path(out_dir) / name)
        fig.savefig(paths[-1], dpi=110)
        plt.close(fig)
    return paths

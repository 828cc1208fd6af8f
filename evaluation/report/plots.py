"""PNG plots of the report (matplotlib, Agg backend): paired differences, length buckets and
position bias; a plot without data is not written.

Each plot is built by a function that returns the matplotlib Figure (``figures`` gives all of
them, by file name), so its title, labels and legend can be checked without reading a PNG;
``write_plots`` saves them."""

from __future__ import annotations

import math
import os
import textwrap
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from attn_transition.config import ClassicConfig, SRAConfig, format_config
from attn_transition.errors import ConfigError

from ..judge.client import import_optional
from ..seedformat import parse_config_key

__all__ = ["PLOTS_HINT", "write_plots", "figures", "config_label", "bucket_label"]

PLOTS_HINT = "or leave out --plots"
TICK_FONT = 9
TITLE_FONT = 10


def config_label(key: str) -> str:
    """A readable name for a seed-format output key: ``decode_al_05_be_01_lay_2`` ->
    ``alpha 0.5, beta 0.1, 2 intervals``; ``decode_sra`` -> ``SRA (defaults)``; a key that is
    not in the seed's scheme is shown without its ``decode_`` prefix."""
    try:
        config = parse_config_key(key)
    except ConfigError:
        config = None
    if isinstance(config, ClassicConfig):
        k = config.intervals_per_layer
        parts = [f"alpha {config.alpha:g}", f"beta {config.beta:g}", f"{k} interval{'s' if k != 1 else ''}"]
        if config.strategy != ClassicConfig.strategy:
            parts.append(f"strategy {config.strategy}")
        if config.min_length != ClassicConfig.min_length:
            parts.append(f"min_length {config.min_length}")
        return ", ".join(parts)
    if isinstance(config, SRAConfig):
        spec = format_config(config)
        return "SRA (defaults)" if spec == "sra" else "SRA " + spec.partition(":")[2].replace(",", ", ")
    return key[len("decode_"):] if key.startswith("decode_") else key


def bucket_label(bucket: dict, variable: str) -> str:
    """A length bucket's tick label in whole numbers. Lengths (tokens, words) are integers, so
    the bucket ``[low, high)`` holds ``ceil(low) .. ceil(high) - 1``: quantile edges such as
    564.333 are shown as the integers they separate."""
    low, high = bucket.get("low"), bucket.get("high")
    if variable == "selection_bucket" and low is not None:
        return f"{round(low)}"
    if low is None and high is None:
        return "all"
    if low is None:
        return f"≤ {math.ceil(high) - 1}"
    if high is None:
        return f"≥ {math.ceil(low)}"
    return f"{math.ceil(low)}–{math.ceil(high) - 1}"


def _subject(report: dict) -> str:
    """``<file>, judge <model>, <n> documents`` for the titles."""
    source = report.get("source") or {}
    name = Path(str(source.get("path", ""))).name
    judge = (source.get("judge") or {}).get("model")
    n = (report.get("documents") or {}).get("complete")
    parts = [p for p in (name, f"judge {judge}" if judge else "", f"{n} documents" if n is not None else "") if p]
    return ", ".join(parts)


STAND_IN_TITLE = "judge stand-in, not a judgement"


def _title(ax: Any, what: str, report: dict) -> None:
    """``what`` over the subject line; scores of the offline stand-in say so in the title's first
    line (``"...: judge stand-in, not a judgement"``), not only in the subject."""
    subject = _subject(report)
    if (report.get("source") or {}).get("stand_in"):
        what = f"{what}: {STAND_IN_TITLE}"
    ax.set_title(what + (f"\n{subject}" if subject else ""), fontsize=TITLE_FONT)


def paired_differences_figure(plt: Any, report: dict) -> Any:
    """Every config's paired difference to plain with its interval, then the summaries."""
    pk = report["plain_key"]
    summ = report["summary"]
    items = [(config_label(r["key"]), r["diff"], r["diff_ci"], "tab:blue") for r in report["configs"]]
    items.append(("mean over configs", summ["mean_over_configs"]["diff"], summ["mean_over_configs"]["diff_ci"], "black"))
    if summ.get("best_fixed_crossfit"):
        bc = summ["best_fixed_crossfit"]
        items.append(("best fixed config (cross-fitted)", bc["diff"], bc["diff_ci"], "tab:green"))
    orc = summ["oracle_best_of_n"]
    items.append(("ORACLE best-of-N (upper bound)", orc["diff"], orc["diff_ci"], "tab:red"))
    fig, ax = plt.subplots(figsize=(8, 0.3 * len(items) + 1.8))
    for y, (name, d, ci, colour) in enumerate(items):
        ax.errorbar(d, y, xerr=[[d - ci[0]], [ci[1] - d]], fmt="o", color=colour, capsize=2)
    ax.axvline(0, color="grey", lw=0.8)
    ax.set_yticks(range(len(items)), [i[0] for i in items], fontsize=TICK_FONT)
    ax.tick_params(axis="x", labelsize=TICK_FONT)
    ax.invert_yaxis()
    conf = int(round(100 * report["settings"]["confidence"]))
    ax.set_xlabel(f"judge score difference vs {pk} (paired, {conf}% bootstrap CI)")
    _title(ax, f"Judge score difference to plain ({pk}), per config", report)
    fig.tight_layout()
    return fig


_LENGTH_AXIS = {"selection_bucket": "selection bucket (generate --buckets)", "prompt_tokens": "prompt tokens"}


def length_buckets_figure(plt: Any, report: dict) -> Optional[Any]:
    """Mean score per length bucket: plain, mean over configs, best fixed and the oracle; a
    series with no value in any bucket (best fixed when every bucket is smaller than the
    number of folds) is left out, legend included.

    No series hides under another: each has its own marker and line style and a small x offset
    (:mod:`..plotting`), and series equal in every bucket are named in a note ("lines coincide:
    mean over configs = ORACLE best-of-N (upper bound)") heading the legend."""
    from ..plotting import LEGEND_FONT, NOTE_FONT, coincidence_note, coinciding, offsets, series_style

    lb = report.get("length_buckets")
    if not lb or not any(b["n"] for b in lb["buckets"]):
        return None
    buckets = [b for b in lb["buckets"] if b["n"]]
    fig, ax = plt.subplots(figsize=(6.5, 4))
    x = np.arange(len(buckets))
    series = [("plain", [b["plain"]["mean"] for b in buckets], "black"),
              ("mean over configs", [b["mean_over_configs"]["mean"] for b in buckets], "tab:blue"),
              ("best fixed config (cross-fitted)", [b["best_fixed_crossfit"]["mean"] if b["best_fixed_crossfit"]
                                                    else np.nan for b in buckets], "tab:green"),
              ("ORACLE best-of-N (upper bound)", [b["oracle_best_of_n"]["mean"] for b in buckets], "tab:red")]
    shown = [(name, ys, colour) for name, ys, colour in series
             if not all(y is None or (isinstance(y, float) and math.isnan(y)) for y in ys)]
    dodge = offsets(len(shown), 0.05)                                  # in buckets
    for k, (name, ys, colour) in enumerate(shown):
        ax.plot(x + dodge[k], [np.nan if y is None else y for y in ys], label=name, color=colour,
                **series_style(k))
    note = coincidence_note(coinciding([(name, ys) for name, ys, _ in shown]))
    ax.set_xticks(x, [f"{bucket_label(b, lb['variable'])}\n(n={b['n']})" for b in buckets], fontsize=TICK_FONT)
    ax.tick_params(axis="y", labelsize=TICK_FONT)
    ax.set_xlabel(_LENGTH_AXIS.get(lb["variable"], "document words"))
    ax.set_ylabel("mean judge score")
    legend = ax.legend(fontsize=LEGEND_FONT, title=textwrap.fill(note, 48, break_on_hyphens=False) or None,
                       title_fontsize=NOTE_FONT)
    legend.get_title().set_color("dimgrey")             # the note heads the legend, so nothing covers it
    _title(ax, "Mean judge score by length", report)
    fig.tight_layout()
    return fig


def position_bias_figure(plt: Any, report: dict) -> Optional[Any]:
    """Score residual by presented position (judge runs with repeats only)."""
    jn = report.get("judge_noise")
    if not jn or not jn.get("position"):
        return None
    res = jn["position"]["residual_by_position"]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    positions = np.arange(1, len(res) + 1)
    ax.bar(positions, [np.nan if r is None else r for r in res], color="tab:purple")
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_xticks(positions, [str(p) for p in positions], fontsize=TICK_FONT)
    ax.tick_params(axis="y", labelsize=TICK_FONT)
    ax.set_xlabel("presented position")
    ax.set_ylabel("score residual")
    _title(ax, "Judge position bias: score residual by presented position", report)
    fig.tight_layout()
    return fig


PLOTS: dict[str, Callable[[Any, dict], Optional[Any]]] = {
    "paired_differences.png": paired_differences_figure,
    "length_buckets.png": length_buckets_figure,
    "position_bias.png": position_bias_figure,
}


def _pyplot() -> Any:
    matplotlib = import_optional("matplotlib", "--plots", alternative=PLOTS_HINT)
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def figures(report: dict) -> dict[str, Any]:
    """``file name -> Figure`` for every plot that has data (the caller closes them)."""
    plt = _pyplot()
    built = {name: build(plt, report) for name, build in PLOTS.items()}
    return {name: fig for name, fig in built.items() if fig is not None}


def write_plots(report: dict, directory: str | os.PathLike) -> list[Path]:
    """PNG plots (matplotlib, Agg): paired differences, length buckets, position bias."""
    plt = _pyplot()
    out_dir = Path(directory)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, fig in figures(report).items():
        fig.savefig(out_dir / name, dpi=120)
        plt.close(fig)
        written.append(out_dir / name)
    return written

"""PNG plots of the report (matplotlib, Agg backend): paired differences, length buckets and
position bias; a plot without data is not written."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional

import numpy as np

from ..judge.client import import_optional

__all__ = ["PLOTS_HINT", "write_plots"]

PLOTS_HINT = "or leave out --plots"


def _save(plt: Any, fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _paired_differences(plt: Any, report: dict, out_dir: Path) -> Path:
    """Every config's paired difference to plain with its interval, then the summaries."""
    pk = report["plain_key"]
    summ = report["summary"]
    items = [(r["key"].replace("decode_", ""), r["diff"], r["diff_ci"], "tab:blue") for r in report["configs"]]
    items.append(("mean over configs", summ["mean_over_configs"]["diff"], summ["mean_over_configs"]["diff_ci"], "black"))
    if summ.get("best_fixed_crossfit"):
        bc = summ["best_fixed_crossfit"]
        items.append(("best fixed (cross-fitted)", bc["diff"], bc["diff_ci"], "tab:green"))
    orc = summ["oracle_best_of_n"]
    items.append(("ORACLE best-of-N (upper bound)", orc["diff"], orc["diff_ci"], "tab:red"))
    fig, ax = plt.subplots(figsize=(7, 0.28 * len(items) + 1.5))
    for y, (name, d, ci, colour) in enumerate(items):
        ax.errorbar(d, y, xerr=[[d - ci[0]], [ci[1] - d]], fmt="o", color=colour, capsize=2)
    ax.axvline(0, color="grey", lw=0.8)
    ax.set_yticks(range(len(items)), [i[0] for i in items], fontsize=7)
    ax.invert_yaxis()
    conf = int(round(100 * report["settings"]["confidence"]))
    ax.set_xlabel(f"judge score difference vs {pk} (paired, {conf}% bootstrap CI)")
    return _save(plt, fig, out_dir / "paired_differences.png")


def _length_buckets(plt: Any, report: dict, out_dir: Path) -> Optional[Path]:
    """Mean score per length bucket: plain, mean over configs, best fixed and the oracle."""
    lb = report.get("length_buckets")
    if not lb or not any(b["n"] for b in lb["buckets"]):
        return None
    buckets = [b for b in lb["buckets"] if b["n"]]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    x = np.arange(len(buckets))
    series = [("plain", [b["plain"]["mean"] for b in buckets], "black"),
              ("mean over configs", [b["mean_over_configs"]["mean"] for b in buckets], "tab:blue"),
              ("best fixed (cross-fitted)", [b["best_fixed_crossfit"]["mean"] if b["best_fixed_crossfit"] else np.nan
                                             for b in buckets], "tab:green"),
              ("ORACLE best-of-N", [b["oracle_best_of_n"]["mean"] for b in buckets], "tab:red")]
    for name, ys, colour in series:
        ax.plot(x, ys, marker="o", label=name, color=colour)
    ax.set_xticks(x, [f"{b['label']}\n(n={b['n']})" for b in buckets], fontsize=7)
    ax.set_xlabel({"selection_bucket": "selection bucket (generate --buckets)", "prompt_tokens": "prompt tokens"}
                  .get(lb["variable"], "document words"))
    ax.set_ylabel("mean judge score")
    ax.legend(fontsize=7)
    return _save(plt, fig, out_dir / "length_buckets.png")


def _position_bias(plt: Any, report: dict, out_dir: Path) -> Optional[Path]:
    """Score residual by presented position (judge runs with repeats only)."""
    jn = report.get("judge_noise")
    if not jn or not jn.get("position"):
        return None
    res = jn["position"]["residual_by_position"]
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.bar(np.arange(1, len(res) + 1), [np.nan if r is None else r for r in res], color="tab:purple")
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_xlabel("presented position")
    ax.set_ylabel("score residual")
    return _save(plt, fig, out_dir / "position_bias.png")


def write_plots(report: dict, directory: str | os.PathLike) -> list[Path]:
    """PNG plots (matplotlib, Agg): paired differences, length buckets, position bias."""
    matplotlib = import_optional("matplotlib", "--plots", alternative=PLOTS_HINT)
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(directory)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = [plot(plt, report, out_dir) for plot in (_paired_differences, _length_buckets, _position_bias)]
    return [path for path in written if path is not None]

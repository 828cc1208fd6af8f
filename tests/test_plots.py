"""The PNGs a reader sees: the report's plots and the bench's, checked on the Figure objects
(titles, tick labels, legend entries that have data, the colour map) built from small
fixtures, then written as PNG files."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from skips import need

need("matplotlib", "make setup")

from attn_transition.evaluation.bench import report as bench_report            # noqa: E402
from attn_transition.evaluation.judge.scores import load_scores                   # noqa: E402
from attn_transition.evaluation.report import ReportOptions, build_report         # noqa: E402
from attn_transition.evaluation.report import plots as report_plots               # noqa: E402

KEYS = ["decode_or", "decode_al_05_be_01_lay_2", "decode_al_1_be_05_lay_1", "decode_sra"]
PNG = b"\x89PNG\r\n\x1a\n"


# --------------------------------------------------------------------------- fixtures

def _seed_file(tmp_path: Path, n_docs: int) -> Path:
    """A judged file in the seed's format: documents of different word counts (so quantile
    edges fall between integers), every candidate scored in the judge's text."""
    rng = np.random.default_rng(0)
    records = []
    for i in range(n_docs):
        scores = [int(s) for s in rng.integers(0, 101, len(KEYS))]
        records.append({"document": "word " * (40 + 7 * i), "summary": f"Summary {i}.", "id": str(i),
                        **{k: f"Candidate {k} of {i}." for k in KEYS},
                        "gpt4_eva": "\n".join(f"'{k}': {s}" for k, s in zip(KEYS, scores)),
                        "eval_scores": [scores[0], max(scores[1:])]})
    path = tmp_path / "token_1200_evaluation.json"
    path.write_text(json.dumps(records))
    return path


def _report(tmp_path: Path, n_docs: int, folds: int = 5) -> dict:
    return build_report(load_scores(_seed_file(tmp_path, n_docs)), ReportOptions(n_boot=200, rouge=False, folds=folds))


def _bench_results(scope: str = "all items") -> dict:
    """A bench results dict: 2 tasks x 3 lengths x 3 depths x 2 items, three configs."""
    rng = np.random.default_rng(1)
    items, records = [], []
    for task in ("fact", "kv"):
        for length in (512, 1024, 2048):
            for depth in (0.0, 0.5, 1.0):
                for k in range(2):
                    item_id = f"{task}-{length}-{depth}-{k}"
                    items.append({"item_id": item_id, "task": task, "length": length, "depth": depth,
                                  "split": "test" if k else "dev"})
                    for config in ("stock", "classic", "classic:alpha=1,beta=0.5"):
                        records.append({"item": item_id, "config": config, "correct": bool(rng.random() < 0.6)})
    return {"summary": {"configs": ["stock", "classic", "classic:alpha=1,beta=0.5"], "scope": scope},
            "items": items, "records": records, "meta": {"model": "smollm2-135m"}}


def _series_y(axes, label: str) -> list[np.ndarray]:
    """The y data of every plotted line or error-bar series named ``label``."""
    found = [ln.get_ydata() for ax in axes for ln in ax.get_lines() if ln.get_label() == label]
    found += [c.lines[0].get_ydata() for ax in axes for c in ax.containers
              if c.get_label() == label and getattr(c, "lines", None)]
    return [np.asarray(y, dtype=float) for y in found]


def _legend_entries_have_data(ax_or_fig, axes) -> None:
    """Every legend entry names a series that has at least one finite point."""
    legend = ax_or_fig.get_legend() if hasattr(ax_or_fig, "get_legend") else ax_or_fig.legends[0]
    labels = [t.get_text() for t in legend.get_texts()]
    assert labels
    for label in labels:
        series = _series_y(axes, label)
        assert series and any(np.isfinite(y).any() for y in series), label


# --------------------------------------------------------------------------- report

@pytest.mark.parametrize("key, label", [
    ("decode_al_05_be_01_lay_2", "alpha 0.5, beta 0.1, 2 intervals"),
    ("decode_al_15_be_1_lay_1", "alpha 1.5, beta 1, 1 interval"),
    ("decode_al_1_be_05_lay_3_multi_min200", "alpha 1, beta 0.5, 3 intervals, strategy multi, min_length 200"),
    ("decode_sra", "SRA (defaults)"),
    ("decode_sra_beg_5_thr_50", "SRA begin_length=5, threshold_len=50"),
    ("decode_something_else", "something_else"),
])
def test_config_labels_are_readable(key, label):
    assert report_plots.config_label(key) == label


@pytest.mark.parametrize("bucket, variable, label", [
    ({"low": None, "high": 564.333}, "prompt_tokens", "≤ 564"),
    ({"low": 564.333, "high": 812.667}, "prompt_tokens", "565–812"),
    ({"low": 812.667, "high": None}, "document_words", "≥ 813"),
    ({"low": None, "high": 775.0}, "document_words", "≤ 774"),
    ({"low": 775.0, "high": None}, "document_words", "≥ 775"),
    ({"low": 1200.0, "high": 1200.0}, "selection_bucket", "1200"),
])
def test_bucket_labels_are_whole_numbers(bucket, variable, label):
    assert report_plots.bucket_label(bucket, variable) == label


def test_report_figures_titles_labels_and_legend(tmp_path):
    import matplotlib.pyplot as plt

    report = _report(tmp_path, n_docs=6)             # 2 per bucket < 5 folds: no best fixed in any bucket
    assert all(b["best_fixed_crossfit"] is None for b in report["length_buckets"]["buckets"])
    edges = report["length_buckets"]["edges"]
    assert any(e != int(e) for e in edges), edges    # the fixture really has fractional edges
    figs = report_plots.figures(report)
    assert sorted(figs) == ["length_buckets.png", "paired_differences.png"]   # no repeats: no position plot

    ax = figs["paired_differences.png"].axes[0]
    assert ax.get_title().startswith("Judge score difference to plain (decode_or), per config")
    assert "token_1200_evaluation.json" in ax.get_title() and "6 documents" in ax.get_title()
    ticks = [t.get_text() for t in ax.get_yticklabels()]
    assert ticks[:3] == ["alpha 0.5, beta 0.1, 2 intervals", "alpha 1, beta 0.5, 1 interval", "SRA (defaults)"]
    assert not any("al_" in t or "decode_" in t for t in ticks)
    assert min(t.get_fontsize() for t in ax.get_yticklabels()) >= 9

    ax = figs["length_buckets.png"].axes[0]
    assert ax.get_title().startswith("Mean judge score by length")
    first_lines = [t.get_text().split("\n")[0] for t in ax.get_xticklabels()]
    assert len(first_lines) == 3
    for text in first_lines:
        assert re.fullmatch(r"(≤ \d+|≥ \d+|\d+–\d+)", text), text
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "best fixed config (cross-fitted)" not in legend
    assert legend == ["plain", "mean over configs", "ORACLE best-of-N (upper bound)"]
    _legend_entries_have_data(ax, [ax])
    for fig in figs.values():
        plt.close(fig)


def test_length_buckets_shows_best_fixed_when_buckets_have_it(tmp_path):
    import matplotlib.pyplot as plt

    report = _report(tmp_path, n_docs=12, folds=2)
    figs = report_plots.figures(report)
    ax = figs["length_buckets.png"].axes[0]
    assert "best fixed config (cross-fitted)" in [t.get_text() for t in ax.get_legend().get_texts()]
    _legend_entries_have_data(ax, [ax])
    for fig in figs.values():
        plt.close(fig)


def test_position_bias_figure_has_title_and_integer_positions():
    import matplotlib.pyplot as plt

    report = {"judge_noise": {"position": {"residual_by_position": [1.5, -0.5, None, -1.0]}},
              "source": {"path": "x.scores.json", "judge": {"model": "gpt-4o"}}, "documents": {"complete": 10}}
    fig = report_plots.position_bias_figure(plt, report)
    ax = fig.axes[0]
    assert ax.get_title().startswith("Judge position bias") and "judge gpt-4o" in ax.get_title()
    assert [t.get_text() for t in ax.get_xticklabels()] == ["1", "2", "3", "4"]
    plt.close(fig)


def test_report_write_plots_writes_pngs(tmp_path):
    written = report_plots.write_plots(_report(tmp_path, n_docs=6), tmp_path / "plots")
    assert sorted(p.name for p in written) == ["length_buckets.png", "paired_differences.png"]
    assert all(p.read_bytes()[:8] == PNG for p in written)


# --------------------------------------------------------------------------- bench

def test_bench_heatmap_is_colour_blind_safe_and_titled():
    import matplotlib.pyplot as plt

    fig = bench_report.heatmap_figure(plt, _bench_results())
    images = [im for ax in fig.axes for im in ax.get_images()]
    assert len(images) == 3 * 3                              # 3 configs x (2 tasks + all tasks)
    assert {im.get_cmap().name for im in images} == {"viridis"}
    assert "smollm2-135m" in fig.get_suptitle() and "needle depth" in fig.get_suptitle()
    plt.close(fig)


def test_bench_accuracy_vs_length_names_the_model_and_every_config():
    import matplotlib.pyplot as plt

    results = _bench_results()
    fig = bench_report.accuracy_figure(plt, results)
    assert fig.get_suptitle() == "smollm2-135m: accuracy vs prompt length"
    assert [ax.get_title() for ax in fig.axes] == ["fact", "kv", "all tasks"]
    assert [t.get_text() for t in fig.legends[0].get_texts()] == results["summary"]["configs"]
    _legend_entries_have_data(fig, fig.axes)
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["512", "1024", "2048"]
    plt.close(fig)


def test_bench_plots_after_tune_say_test_split(tmp_path):
    import matplotlib.pyplot as plt

    results = _bench_results(scope="test split")
    figs = bench_report.figures(results)
    assert all("(test split)" in fig.get_suptitle() for fig in figs.values())
    for fig in figs.values():
        plt.close(fig)
    paths = bench_report.write_plots(results, tmp_path)
    assert [p.name for p in paths] == ["heatmap.png", "accuracy_vs_length.png"]
    assert all(p.read_bytes()[:8] == PNG for p in paths)


# --------------------------------------------------------------------------- no line hides under another

def _data_lines(ax):
    """The data line of every plotted series of ``ax`` (error-bar series included), by label."""
    lines = {c.get_label(): c.lines[0] for c in ax.containers if getattr(c, "lines", None)}
    lines.update({ln.get_label(): ln for ln in ax.get_lines() if not ln.get_label().startswith("_")})
    return lines


def _notes(ax) -> list[str]:
    """The "lines coincide" notes of ``ax``: its texts and its legend's title."""
    texts = [*ax.texts, *([ax.get_legend().get_title()] if ax.get_legend() else [])]
    return [t.get_text().replace("\n", " ") for t in texts if t.get_text().startswith("lines coincide")]


def test_bench_accuracy_vs_length_lines_are_distinct_and_coincidences_are_named():
    import matplotlib.pyplot as plt

    results = _bench_results()
    stock = {r["item"]: r["correct"] for r in results["records"] if r["config"] == "stock"}
    for r in results["records"]:                       # classic answers exactly as stock: the lines coincide
        if r["config"] == "classic":
            r["correct"] = stock[r["item"]]
    fig = bench_report.accuracy_figure(plt, results)
    assert min(t.get_fontsize() for t in fig.legends[0].get_texts()) >= 9
    for ax in fig.axes:
        lines = _data_lines(ax)
        assert list(lines) == results["summary"]["configs"]
        assert len({ln.get_marker() for ln in lines.values()}) == 3
        assert len({ln.get_linestyle() for ln in lines.values()}) == 3
        xs = [tuple(ln.get_xdata()) for ln in lines.values()]
        assert len(set(xs)) == 3                         # offset: no two series at the same x
        np.testing.assert_array_equal(lines["stock"].get_ydata(), lines["classic"].get_ydata())
        assert _notes(ax) == ["lines coincide: stock = classic"], ax.get_title()
    plt.close(fig)


def test_bench_accuracy_vs_length_has_no_note_where_lines_differ():
    import matplotlib.pyplot as plt

    results = _bench_results()
    results["records"] = [r for r in results["records"] if r["config"] != "classic:alpha=1,beta=0.5"]
    results["summary"]["configs"] = ["stock", "classic"]
    for r in results["records"]:                       # classic always right, stock not
        if r["config"] == "classic":
            r["correct"] = True
    assert not all(r["correct"] for r in results["records"] if r["config"] == "stock")
    fig = bench_report.accuracy_figure(plt, results)
    assert all(_notes(ax) == [] for ax in fig.axes)
    plt.close(fig)


def test_length_buckets_lines_are_distinct_and_coincidences_are_named(tmp_path):
    import matplotlib.pyplot as plt

    report = _report(tmp_path, n_docs=12, folds=2)
    for b in report["length_buckets"]["buckets"]:      # one config: its mean is the oracle's
        b["mean_over_configs"] = dict(b["oracle_best_of_n"])
    ax = report_plots.figures(report)["length_buckets.png"].axes[0]
    assert min(t.get_fontsize() for t in ax.get_legend().get_texts()) >= 9
    lines = _data_lines(ax)
    assert len(lines) == 4
    assert len({ln.get_marker() for ln in lines.values()}) == 4
    assert len({ln.get_linestyle() for ln in lines.values()}) == 4
    assert len({tuple(ln.get_xdata()) for ln in lines.values()}) == 4
    assert _notes(ax) == ["lines coincide: mean over configs = ORACLE best-of-N (upper bound)"]
    plt.close("all")


def test_stand_in_plots_say_so_in_the_title(tmp_path):
    import matplotlib.pyplot as plt

    report = _report(tmp_path, n_docs=6)
    assert all("stand-in" not in f.axes[0].get_title() for f in report_plots.figures(report).values())
    report["source"]["stand_in"] = True
    report["judge_noise"] = {"position": {"residual_by_position": [1.0, -1.0]}}
    figs = report_plots.figures(report)
    assert sorted(figs) == ["length_buckets.png", "paired_differences.png", "position_bias.png"]
    for name, fig in figs.items():
        first = fig.axes[0].get_title().split("\n")[0]
        assert first.endswith(": judge stand-in, not a judgement"), (name, first)
    plt.close("all")

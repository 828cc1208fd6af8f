"""The bench summary says what each config label ran: every field of every config, in the terminal
summary and in summary.md (a label such as ``classic`` names only the fields that differ from the
defaults, so by itself it says nothing of alpha and beta)."""

from __future__ import annotations

import dataclasses

import pytest

import attn_transition as at
from attn_transition.cli import main
from attn_transition.config import config_dict
from attn_transition.evaluation.bench import report

SPECS = ("classic", "sra", "classic:alpha=1.5,beta=1")


def _every_field(spec: str) -> list[str]:
    """``name=value`` for every field of the parsed config (from its dataclass, not a list here)."""
    config = at.parse_config(spec)
    return [f"{f.name}={getattr(config, f.name)}" for f in dataclasses.fields(config)]


def _results_with(specs) -> dict:
    configs = {at.format_config(at.parse_config(s)): config_dict(at.parse_config(s)) for s in specs}
    return {"meta": {"configs": configs}}


def test_config_values_name_every_field_of_every_config():
    values = report.config_values(_results_with(SPECS))
    assert list(values) == ["classic", "sra", "classic:alpha=1.5,beta=1"]
    for spec, label in zip(SPECS, values):
        text = values[label]
        assert text.startswith(at.parse_config(spec).schedule + " schedule: ")
        for field in _every_field(spec):
            assert field in text.split(": ", 1)[1].split(", "), (label, field)
    assert "alpha=0.5" in values["classic"] and "beta=0.1" in values["classic"]   # the reference defaults


def test_config_lines_are_a_legend_with_one_line_per_config():
    lines = report.config_lines(_results_with(SPECS))
    assert lines[0].startswith("configs (every field")
    assert len(lines) == 1 + len(SPECS)
    for label, line in zip(report.config_values(_results_with(SPECS)), lines[1:]):
        assert line.split()[0] == label
    assert report.config_lines({"meta": {}}) == []                  # results without configs: no legend


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    from test_bench_pure import char_tokenizer
    from test_bench_run import tiny_lm

    folder = tmp_path_factory.mktemp("tiny-llama")
    tiny_lm().save_pretrained(folder)
    char_tokenizer().save_pretrained(folder)
    return folder


@pytest.mark.usefixtures("one_thread")
def test_terminal_summary_and_summary_md_spell_out_each_config(capsys, model_dir, tmp_path):
    out_dir = tmp_path / "run"
    code = main(["bench", "--model", str(model_dir), "--tasks", "kv", "--lengths", "400", "--depths", "0",
                 "--max-new-tokens", "2", "--n-boot", "100", "--no-progress", "--output-dir", str(out_dir),
                 *[a for s in SPECS for a in ("--config", s)]])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    lines = captured.out.splitlines()
    start = lines.index(next(l for l in lines if l.startswith("configs (every field")))
    assert lines.index(next(l for l in lines if l.startswith("accuracy ("))) > start   # the legend comes first
    md = (out_dir / "summary.md").read_text()
    for spec in SPECS:
        label = at.format_config(at.parse_config(spec))
        line = next(l for l in lines[start + 1:] if l.split()[0] == label)
        md_line = next(l for l in md.splitlines() if l.startswith(f"  - `{label}`: "))
        for field in _every_field(spec):
            assert field in line and field in md_line, (label, field)


def test_ruler_results_store_and_show_every_field_of_each_config(tmp_path):
    from test_ruler import _synthetic

    from attn_transition.evaluation.bench import ruler, ruler_report

    settings = ruler.RulerSettings(tasks=("niah_single_1", "cwe"), lengths=(1024, 2048), per_cell=8,
                                   configs=("classic",), n_boot=200)
    meta = {"model": "fake", "chat": True, "lm_eval": "x", "versions": {"lm_eval": "x"}, "seconds_this_run": 1.0}
    res = ruler_report.build_results(_synthetic(), ["classic"], settings.as_dict(), meta)
    assert res["meta"]["configs"] == {"classic": config_dict(at.parse_config("classic"))}
    md = ruler_report.markdown(res)
    md_line = next(l for l in md.splitlines() if l.startswith("  - `classic`: "))
    for field in _every_field("classic"):
        assert field in md_line, field

"""``attn-transition demo``: inputs checked before the model loads, both answers timed after
an untimed warm-up, and (slow) its default setting visibly changes SmolLM2's answer."""

from __future__ import annotations

import time
from contextlib import contextmanager
from pathlib import Path

import pytest

import attn_transition
from attn_transition.cli import main
from attn_transition.evaluation import demo
from attn_transition.evaluation import models as models_module


@pytest.fixture
def no_model_load(monkeypatch):
    """Fail the test if the command gets as far as loading a model."""
    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the inputs were checked")

    monkeypatch.setattr(models_module, "load_model", refuse)


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    return err


@pytest.mark.parametrize("argv, words", [
    (["--prompt-file", "nope.txt"], "nope.txt does not exist"),
    (["--document", "syn-9999"], "--document 'syn-9999' is not in the sample"),
    (["--config", "classic:alpha=-1"], "alpha"),
    (["--max-new-tokens", "0"], "--max-new-tokens"),
])
def test_bad_inputs_exit_2_before_the_model_loads(argv, words, capsys, no_model_load, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["demo", *argv]) == 2
    assert words in _one_line_error(capsys)


def test_an_empty_prompt_file_is_refused_before_the_model_loads(tmp_path, capsys, no_model_load):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    assert main(["demo", "--prompt-file", str(empty)]) == 2
    assert "empty.txt" in _one_line_error(capsys)


def test_the_default_setting_is_the_one_the_readme_shows():
    import argparse

    parser = argparse.ArgumentParser()
    demo.add_arguments(parser)
    assert parser.parse_args([]).config == demo.DEFAULT_CONFIG == "classic:alpha=1,beta=0.5"
    assert "attn-transition bench --model NAME --tune" in demo.EPILOG
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    assert f"| `{demo.DEFAULT_CONFIG}` (the demo's default) |" in readme


class _Recorder:
    """A stand-in for generation: records each call, and makes the process's first call slow,
    as a real first call is (one-off set-up costs)."""

    ONE_OFF = 0.3

    def __init__(self):
        self.calls: list[tuple[int, bool]] = []
        self.enabled = False

    def generate(self, model, tokenizer, prompts, *, max_new_tokens, add_special_tokens, plain_switch=False):
        if not self.calls:
            time.sleep(self.ONE_OFF)
        self.calls.append((max_new_tokens, self.enabled))
        return ["edited" if self.enabled else "stock"]

    @contextmanager
    def enabled_ctx(self, model, config):
        self.enabled = True
        try:
            yield model
        finally:
            self.enabled = False


def test_both_answers_are_timed_after_an_untimed_warm_up(monkeypatch):
    rec = _Recorder()
    monkeypatch.setattr(demo, "generate_batch", rec.generate)
    monkeypatch.setattr(demo, "prompt_lengths", lambda tokenizer, prompts, special: [500])
    monkeypatch.setattr(attn_transition, "enabled", rec.enabled_ctx, raising=False)
    monkeypatch.setattr(attn_transition, "is_enabled", lambda model: False, raising=False)
    monkeypatch.setattr(demo, "edits_anything", lambda model, config, n: True)   # the stand-in model has no config
    config = attn_transition.parse_config(demo.DEFAULT_CONFIG)

    result = demo.answer_both(object(), object(), "prompt", config, add_special_tokens=True, max_new_tokens=32)
    # warm-up: a prefill and one decoding step, stock then edited; then the timed answers
    assert rec.calls == [(2, False), (2, True), (32, False), (32, True)]
    assert (result.plain, result.transition) == ("stock", "edited")
    assert result.seconds_plain < rec.ONE_OFF            # the one-off cost was not charged to stock

    rec.calls.clear()
    demo.answer_both(object(), object(), "prompt", config, add_special_tokens=True, max_new_tokens=32, warm=False)
    assert rec.calls == [(32, False), (32, True)]


@pytest.mark.slow
def test_the_default_setting_changes_smollm2s_answer_to_the_default_prompt(capsys):
    assert main(["demo", "--width", "60"]) == 0
    out = capsys.readouterr().out
    assert "classic:alpha=1,beta=0.5" in out or "alpha=1.0, beta=0.5" in out
    assert "The answers differ" in out
    assert "untimed warm-up" in out


def test_the_timing_note_says_what_the_two_times_include():
    config = attn_transition.parse_config(demo.DEFAULT_CONFIG)
    result = demo.DemoResult("prompt", 470, config, "a", "b", 11.6, 22.5)
    note = " ".join(demo.timing_note(result, 3.2, 32).split())
    assert "one greedy answer, the prefill of the 470-token prompt plus up to 32 new tokens" in note
    assert "after an untimed warm-up of both" in note
    assert "the model load (3.2 s) is not in them" in note
    assert "compute their prompt's attention rows explicitly" in note and demo.PERFORMANCE_DOC in note
    assert "do not measure it" in note

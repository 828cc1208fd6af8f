"""Model resolution and the one-time conversion of the embedded models (no weights loaded here;
attn_transition.models, re-exported by attn_transition.evaluation.models)."""

from __future__ import annotations

import threading
import time

import pytest

from attn_transition.errors import UsageError
from attn_transition import models


def test_concurrent_converts_of_one_model_convert_once(tmp_path, monkeypatch):
    """The processes of one data-parallel launch all ask for the model at start-up."""
    calls: list[str] = []

    def fake_convert(name, target):
        calls.append(name)
        time.sleep(0.2)                           # long enough for every other caller to arrive
        target.mkdir(parents=True)
        (target / "config.json").write_text("{}")
        return target

    monkeypatch.setattr(models, "_convert", fake_convert)
    got: list[object] = []
    threads = [threading.Thread(target=lambda: got.append(models.convert("smollm2-135m", tmp_path)))
               for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert calls == ["smollm2-135m"]
    assert got == [tmp_path / "smollm2-135m"] * 4


def test_cached_model_is_not_converted_again(tmp_path, monkeypatch):
    (tmp_path / "gemma3-270m").mkdir()
    (tmp_path / "gemma3-270m" / "config.json").write_text("{}")
    monkeypatch.setattr(models, "_convert", lambda name, target: pytest.fail("converted again"))
    assert models.convert("gemma3-270m", tmp_path) == tmp_path / "gemma3-270m"
    assert models.resolve_model("gemma3-270m", tmp_path) == str(tmp_path / "gemma3-270m")


@pytest.mark.parametrize("name, message", [
    ("smollm3-135m", "unknown model 'smollm3-135m' (did you mean 'smollm2-135m'?)"),
    ("/no/such/folder", "model folder /no/such/folder does not exist"),
])
def test_bad_model_names_are_usage_errors(tmp_path, name, message):
    with pytest.raises(UsageError, match=message.replace("(", r"\(").replace(")", r"\)").replace("?", r"\?")):
        models.resolve_model(name, tmp_path)


def test_folder_without_config_is_refused(tmp_path):
    with pytest.raises(UsageError, match="has no config.json"):
        models.resolve_model(str(tmp_path), tmp_path / "cache")

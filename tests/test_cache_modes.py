"""The converted-model cache gets the modes the user's umask gives any new folder (0o777 & ~umask)
and file (0o666 & ~umask), so a cache shared between users (a lab machine, a container run as
another user) is readable by them; the conversion stays atomic (a temporary folder, then a rename).

Before, the folder came from ``tempfile.mkdtemp`` (0o700) and safetensors wrote
``model.safetensors`` 0o600, whatever the umask."""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

import pytest

from attn_transition import models

UMASKS = [0o022, 0o077, 0o002]


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def _private_writer(folder: Path) -> None:
    """A writer that creates its files and folders private, as safetensors and ``tempfile`` do."""
    fd, name = tempfile.mkstemp(dir=folder)                       # 0o600
    os.write(fd, b"weights")
    os.close(fd)
    os.rename(name, folder / "model.safetensors")
    sub = Path(tempfile.mkdtemp(dir=folder))                       # 0o700
    (sub / "tokenizer.json").write_text("{}")
    os.chmod(sub / "tokenizer.json", 0o600)
    sub.rename(folder / "extra")


@pytest.mark.parametrize("umask", UMASKS)
def test_written_folder_gets_the_umask_modes(tmp_path, umask):
    target = tmp_path / "cache" / "model"
    before = os.umask(umask)
    try:
        models.write_folder_atomic(target, _private_writer)
    finally:
        os.umask(before)
    assert _mode(target) == 0o777 & ~umask
    assert _mode(target / "extra") == 0o777 & ~umask
    assert _mode(target / "model.safetensors") == 0o666 & ~umask
    assert _mode(target / "extra" / "tokenizer.json") == 0o666 & ~umask
    assert (target / "model.safetensors").read_bytes() == b"weights"
    assert sorted(p.name for p in target.parent.iterdir()) == ["model"]          # no temporary folder left


def test_a_failed_write_leaves_no_folder(tmp_path):
    target = tmp_path / "model"

    def fail(folder: Path) -> None:
        (folder / "config.json").write_text("{}")
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        models.write_folder_atomic(target, fail)
    assert list(tmp_path.iterdir()) == []


def _tiny_model_and_tokenizer():
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer(WordLevel({"<unk>": 0, "a": 1}, unk_token="<unk>")), unk_token="<unk>")
    config = LlamaConfig(vocab_size=2, hidden_size=8, intermediate_size=16, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1)
    return LlamaForCausalLM(config), tokenizer


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_converted_model_folder_is_readable_under_the_umask(tmp_path, monkeypatch, umask):
    """``convert`` end to end, with the GGUF reading replaced by a tiny model: the real
    ``save_pretrained`` (safetensors) writes the cache."""
    import transformers

    model, tokenizer = _tiny_model_and_tokenizer()
    gguf = tmp_path / "fake.gguf"
    gguf.write_bytes(b"")
    monkeypatch.setitem(models.EMBEDDED, "smollm2-135m",
                        models.EmbeddedModel("smollm2-135m", lambda: gguf, True, "tiny stand-in"))
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", lambda *a, **k: model)
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", lambda *a, **k: tokenizer)
    cache = tmp_path / "cache"
    before = os.umask(umask)
    try:
        target = models.convert("smollm2-135m", cache)
    finally:
        os.umask(before)
    assert target == cache / "smollm2-135m"
    assert (target / "model.safetensors").exists() and (target / "config.json").exists()
    for folder in (cache, target):
        assert _mode(folder) == 0o777 & ~umask, folder
    files = [p for p in target.iterdir()] + [cache / ".smollm2-135m.lock"]
    for file in files:
        assert _mode(file) == 0o666 & ~umask, file.name
    assert sorted(p.name for p in cache.iterdir()) == [".smollm2-135m.lock", "smollm2-135m"]

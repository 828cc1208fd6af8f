"""LoRA fine-tuning + QA on tiny models (CPU, a few steps): the loss decreases, epoch checkpoints and
the adapter appear, the adapter reloads; the whole pipeline runs end to end and resumes."""

from __future__ import annotations

import json

import pytest
import torch

from attn_transition.cli import main
from attn_transition.errors import UsageError
from attn_transition.evaluation.clues.biographies import generate
from attn_transition.evaluation.clues.finetune import FinetuneConfig, finetune, load_adapter, lora_targets
from attn_transition.evaluation.clues.qa import build_items, generate_answers, score
from test_clues_support import char_tokenizer, save_tiny, tiny_llama, word_tokenizer


def test_finetune_decreases_loss_writes_checkpoints_and_adapter(tmp_path):
    tok = char_tokenizer()
    bios = generate(6, seed=0)
    model = tiny_llama(len(tok), seed=0, layers=2, attn_implementation="sdpa")
    assert lora_targets(model) == ["down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj"]
    config = FinetuneConfig(epochs=3, batch_size=3, learning_rate=1e-2, logging_steps=1, save_total_limit=None)
    tuned, summary = finetune(model, tok, [b.text for b in bios], tmp_path, config, progress=False)
    assert summary["steps"] == 6
    assert summary["last_loss"] < summary["first_loss"] - 0.1, (summary["first_loss"], summary["last_loss"])
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["checkpoint-2", "checkpoint-4",
                                                                            "checkpoint-6"]
    assert (tmp_path / "adapter" / "adapter_config.json").is_file()
    log = json.loads((tmp_path / "train_log.json").read_text())
    assert log["steps"] == 6 and len([e for e in log["log_history"] if "loss" in e]) == 6

    # The saved adapter on a fresh copy of the base model gives the tuned model's logits.
    ids = torch.tensor([tok(bios[0].text)["input_ids"]])
    with torch.no_grad():
        expected = tuned(input_ids=ids).logits
        fresh = load_adapter(tiny_llama(len(tok), seed=0, layers=2, attn_implementation="sdpa"), tmp_path / "adapter")
        got = fresh(input_ids=ids).logits
    assert torch.allclose(expected, got, atol=1e-5)

    items = build_items(bios, shots=1)[:7]
    answers = generate_answers(tuned, tok, [i.prompt for i in items], batch_size=3, max_new_tokens=5,
                               progress=False)
    assert len(answers) == 7 and all(isinstance(a, str) and "\n" not in a for a in answers)
    result = score(items, answers)
    assert result["overall"]["n"] == 7 and 0 <= result["overall"]["f1"] <= 100
    with pytest.raises(UsageError, match="not a LoRA adapter folder"):
        load_adapter(tiny_llama(len(tok)), tmp_path)


def test_finetune_config_validation():
    with pytest.raises(UsageError, match="learning_rate"):
        FinetuneConfig(learning_rate=5.0)
    with pytest.raises(UsageError, match="epochs"):
        FinetuneConfig(epochs=0)


def test_pipeline_end_to_end_on_tiny_models_and_resume(tmp_path, capsys):
    bios = generate(4, seed=0)
    words = sorted({w for b in bios for w in b.text.replace(".", " . ").replace(",", " , ").replace("'", " ' ").split()})
    small = save_tiny(tmp_path / "small", char_tokenizer(), seed=0, layers=2)
    large = save_tiny(tmp_path / "large", word_tokenizer(words), seed=1, layers=3)
    out = tmp_path / "out"
    argv = ["clues", "--out", str(out), "--small-model", str(small), "--large-model", str(large),
            "--biographies", "4", "--copies", "1", "--shots", "1", "--epochs", "1", "--batch-size", "4",
            "--max-new-tokens", "3", "--lr", "1e-2"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "| contrast dropout |" in printed and "spread n/a" in printed
    table = json.loads((out / "table.json").read_text())
    assert [r["condition"] for r in table["rows"]] == ["none", "plain", "random", "attention", "contrast"]
    for name in ("biographies.jsonl", "qa_items.jsonl", "profile_small.jsonl", "profile_large.jsonl",
                 "contrast.jsonl", "table.md", "run.json"):
        assert (out / name).is_file(), name
    for condition in ("plain", "random", "attention", "contrast"):
        folder = out / "runs" / f"{condition}-seed0"
        assert (folder / "scores.json").is_file() and (folder / "predictions.jsonl").is_file()
        assert (folder / "adapter" / "adapter_config.json").is_file()
        assert list((folder / "checkpoints").glob("checkpoint-*")), condition
        rows = [json.loads(x) for x in (folder / "train.jsonl").read_text().splitlines()]
        assert len(rows) == 8                                   # 4 texts x (original + 1 copy); plain repeats
    contrast = [json.loads(x) for x in (out / "contrast.jsonl").read_text().splitlines()]
    assert contrast[0]["tokens"][0] == bios[0].text[0]          # units = the small (char) model's tokens
    # Resume: everything is skipped and the table comes back the same.
    before = (out / "table.md").read_text()
    assert main(argv + ["--resume"]) == 0
    assert capsys.readouterr().out.count("done earlier, skipped") == 4
    assert (out / "table.md").read_text() == before
    # Without --resume an existing run is refused (nothing overwritten); other settings are refused too.
    assert main(argv) == 2
    assert "--resume" in capsys.readouterr().err
    assert main(argv + ["--resume", "--alpha", "0.5"]) == 2
    assert "other settings (alpha" in capsys.readouterr().err
    assert (out / "table.md").read_text() == before


def test_pipeline_bad_settings_write_nothing_and_the_corrected_run_works(tmp_path, capsys):
    bios = generate(4, seed=0)
    words = sorted({w for b in bios
                    for w in b.text.replace(".", " . ").replace(",", " , ").replace("'", " ' ").split()})
    small = save_tiny(tmp_path / "small", char_tokenizer(), seed=0, layers=2)
    large = save_tiny(tmp_path / "large", word_tokenizer(words), seed=1, layers=3)
    out = tmp_path / "out"
    argv = ["clues", "--out", str(out), "--small-model", str(small), "--large-model", str(large),
            "--biographies", "4", "--copies", "1", "--shots", "1", "--epochs", "1", "--batch-size", "4",
            "--max-new-tokens", "2", "--conditions", "contrast", "--no-baseline"]
    for extra, message in ((["--heads", "0,4"], "--heads 4 out of range"),      # tiny models have 4 heads
                           (["--layers", "2:"], "selects no layer"),            # the small one has 2 layers
                           (["--layers", "one"], "--layers must look like"),
                           (["--large-model", "no-such-model"], "unknown model 'no-such-model'"),
                           (["--train-model", str(tmp_path / "missing")], "does not exist")):
        assert main(argv + extra) == 2, extra
        errors = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
        assert len(errors) == 1 and message in errors[0], (extra, errors)
        assert not (out / "run.json").exists(), extra
    # a run.json left with nothing computed after it (e.g. by an older version) does not block a new run
    out.mkdir()
    (out / "run.json").write_text(json.dumps({"alpha": 0.1}))
    assert main(argv + ["--heads", "0,3"]) == 0
    assert json.loads((out / "run.json").read_text())["profile"]["heads"] == [0, 3]
    assert (out / "runs" / "contrast-seed0" / "scores.json").is_file()


def test_cli_steps_one_by_one_on_tiny_models(tmp_path, capsys):
    """biographies -> profile (x2) -> contrast -> augment -> finetune -> qa through the CLI."""
    bios_file = tmp_path / "bios.jsonl"
    assert main(["clues", "biographies", "-n", "3", "--seed", "2", "-o", str(bios_file)]) == 0
    bios = [json.loads(x) for x in bios_file.read_text().splitlines()]
    words = sorted({w for b in bios for w in b["text"].replace(".", " . ").replace(",", " , ").replace("'", " ' ")
                    .split()})
    small = save_tiny(tmp_path / "small", char_tokenizer(), seed=0, layers=2)
    large = save_tiny(tmp_path / "large", word_tokenizer(words), seed=1, layers=2)
    ps, pl = tmp_path / "ps.jsonl", tmp_path / "pl.jsonl"
    assert main(["clues", "profile", str(bios_file), "-o", str(ps), "--model", str(small)]) == 0
    large_argv = ["clues", "profile", str(bios_file), "-o", str(pl), "--model", str(large)]
    assert main(large_argv + ["--layers", "1:"]) == 0
    assert main(large_argv + ["--layers", "1:"]) == 2                  # exists
    assert "--resume" in capsys.readouterr().err
    # an interrupted file (1 of 3 records) resumes only with the settings it was made with
    first_line = pl.read_text().splitlines()[0] + "\n"
    pl.write_text(first_line)
    assert main(large_argv + ["--resume"]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(errors) == 1 and "other settings (layers='1:' in record 0)" in errors[0], errors
    assert pl.read_text() == first_line                                # nothing lost, nothing mixed in
    assert main(large_argv + ["--resume", "--layers", "1:"]) == 0
    profiles = [json.loads(x) for x in pl.read_text().splitlines()]
    assert len(profiles) == 3 and pl.read_text().startswith(first_line)
    assert {r["config"]["layers"] for r in profiles} == {"1:"}
    # a kill while appending the last profile: the torn line is skipped and redone, the file ends in order
    whole = pl.read_bytes()
    pl.write_bytes(whole[:-40])
    assert main(large_argv + ["--resume", "--layers", "1:"]) == 0
    assert "skipped 1 unreadable line(s)" in capsys.readouterr().err
    assert [json.loads(x) for x in pl.read_text().splitlines()] == profiles
    # layers / heads the model does not have: one-line error before anything is written
    for flag, value, message in (("--heads", "0,4", "--heads 4 out of range"), ("--layers", "2", "selects no layer"),
                                 ("--layers", "x", "--layers must look like")):
        bad = tmp_path / "bad_profile.jsonl"
        assert main(["clues", "profile", str(bios_file), "-o", str(bad), "--model", str(small), flag, value]) == 2
        errors = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
        assert len(errors) == 1 and message in errors[0], errors
        assert not bad.exists()
    contrast = tmp_path / "contrast.jsonl"
    assert main(["clues", "contrast", str(ps), str(pl), "-o", str(contrast)]) == 0
    first = json.loads(contrast.read_text().splitlines()[0])
    assert len(first["tokens"]) == len(first["diff"]) == len(first["rank"]) and first["units"] == "small"
    # a profile file about other texts is refused
    po = tmp_path / "po.jsonl"
    records = [json.loads(x) for x in pl.read_text().splitlines()]
    records[1]["text"] = records[1]["text"].replace(".", "!")
    po.write_text("".join(json.dumps(r) + "\n" for r in records))
    assert main(["clues", "contrast", str(ps), str(po), "-o", str(tmp_path / "bad.jsonl")]) == 2
    err = capsys.readouterr().err
    # A progress bar of an earlier call can be flushed late into the same stream; the error is the
    # one line that says "error:", and it carries both the problem and the fix.
    errors = [line for line in err.splitlines() if "error:" in line]
    assert len(errors) == 1 and "Traceback" not in err, err
    assert "mismatched profile files" in errors[0] and "profile the same input file" in errors[0], errors
    assert not (tmp_path / "bad.jsonl").exists()
    train = tmp_path / "train.csv"
    assert main(["clues", "augment", str(bios_file), "-o", str(train), "--scores", str(contrast),
                 "--copies", "2"]) == 0
    ft = tmp_path / "ft"
    assert main(["clues", "finetune", str(train), "-o", str(ft), "--model", str(small), "--epochs", "2",
                 "--batch-size", "3", "--lr", "1e-2", "--save-total-limit", "0"]) == 0
    assert len(list((ft / "checkpoints").glob("checkpoint-*"))) == 2
    assert main(["clues", "finetune", str(train), "-o", str(ft), "--model", str(small)]) == 2
    assert main(["clues", "qa", str(bios_file), "-o", str(tmp_path / "qa"), "--model", str(small),
                 "--adapter", str(ft / "adapter"), "--shots", "1", "--max-new-tokens", "3"]) == 0
    scores = json.loads((tmp_path / "qa" / "scores.json").read_text())
    assert scores["overall"]["n"] == 15
    assert "overall" in capsys.readouterr().out

"""benchmarks/prefill.py (the length sweep) and benchmarks/gpu_check.sh, run for real on tiny
random models: outputs, their structure, the refusal paths and the script's exit status."""

from __future__ import annotations

import datetime
import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
PREFILL = ROOT / "benchmarks" / "prefill.py"
GPU_CHECK = ROOT / "benchmarks" / "gpu_check.sh"
TINY_CONFIGS = ["--config", "classic:min_length=0", "--config", "sra:begin_length=8,threshold_len=16"]
VARIANTS = ["stock", "classic", "sra"]


def load_prefill():
    spec = importlib.util.spec_from_file_location("prefill_benchmark", PREFILL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


bench = load_prefill()


def run(cmd, timeout=600, **env):
    full_env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_VERBOSITY="error", **env)
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout,
                          cwd=ROOT, env=full_env)


def positive_finite(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


def is_png(path: Path) -> bool:
    return path.is_file() and path.stat().st_size > 5000 and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ----------------------------------------------------------------------------- the sweep, for real

@pytest.fixture
def torch_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_sweep_on_a_tiny_model_writes_table_json_and_plot(tmp_path, capsys, torch_threads):
    out = tmp_path / "sweep"
    # In this process (its imports are done); the memory measurements still run in fresh processes.
    status = bench.main(["--model", "random:tiny", "--tokens", "256,512", "--repeats", "1", "--decode-tokens", "all",
                         "--decode-rounds", "2", "--decode-steps", "3", "--threads", "1", "--memory-jobs", "3", "--out", str(out),
                         *TINY_CONFIGS])
    stdout = capsys.readouterr().out
    assert status == 0, stdout[-3000:]
    data = json.loads((out / "prefill-sweep.json").read_text())
    meta, rows = data["meta"], data["rows"]

    for key in ("machine", "cpu_count", "threads", "torch", "transformers", "date", "model_shape", "cuda"):
        assert key in meta, key
    assert meta["threads"] == 1 and meta["cuda"] is False and meta["cpu_count"] == os.cpu_count()
    assert meta["torch"] == torch.__version__
    datetime.datetime.fromisoformat(meta["date"])
    assert meta["model"] == "random:tiny" and meta["model_shape"]["num_hidden_layers"] == 6
    assert meta["model_shape"]["parameters"] > 0
    assert "min_length=0" in meta["configs"]["classic"] and "threshold_len=16" in meta["configs"]["sra"]
    assert meta["required_tokens"] == [256, 512] and meta["decode_tokens"] == [256, 512]
    assert meta["max_chunk_mib_from"] in ("enable() default", "enable() has no such keyword")

    assert [(r["tokens"], r["variant"]) for r in rows] == [(n, v) for n in (256, 512) for v in VARIANTS]
    for r in rows:
        assert r["error"] is None, r
        assert len(r["seconds"]) == 1 and positive_finite(r["median_s"])
        assert isinstance(r["peak_bytes"], int) and r["peak_bytes"] > 0, r
        for key in ("time_ratio", "memory_ratio", "decode_ms_per_token", "decode_ratio",
                    "time_ratio_paired", "decode_ratio_paired"):
            assert positive_finite(r[key]), (key, r)
        assert r["time_ratio_paired"] == pytest.approx(r["time_ratio"])    # one round: the same figure
        if r["variant"] == "stock":
            assert r["time_ratio"] == r["memory_ratio"] == r["decode_ratio"] == 1.0
            assert r["time_ratio_paired"] == r["decode_ratio_paired"] == 1.0
            assert r["edited_row_fraction"] == 0.0
        else:
            assert 0.0 < r["edited_row_fraction"] < 0.5          # the configs above edit something
        stock = next(s for s in rows if s["tokens"] == r["tokens"] and s["variant"] == "stock")
        assert r["time_ratio"] == pytest.approx(r["median_s"] / stock["median_s"])

    table = (out / "prefill-sweep.md").read_text()
    assert "| tokens | variant | prefill s | time vs stock | paired | peak MiB | memory vs stock " in table
    assert sum(line.startswith(("| 256 |", "| 512 |")) for line in table.splitlines()) == 6
    assert "| 512 | classic |" in stdout                       # the same table on stdout
    assert meta["command"].startswith("prefill.py --model random:tiny --tokens 256,512")
    assert is_png(out / "prefill-sweep.png")


def test_a_real_models_context_is_not_exceeded(tmp_path, capsys):
    from transformers import AutoModelForCausalLM

    folder = tmp_path / "short-context"
    config = bench.random_config("tiny", 0)
    config.max_position_embeddings = 256
    AutoModelForCausalLM.from_config(config).save_pretrained(folder)
    capsys.readouterr()                                              # the saving's progress bars
    with pytest.raises(SystemExit) as info:
        bench.load_pretrained_model(str(folder), device="cpu", dtype="float32", positions=257)
    assert info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "context is 256 tokens" in lines[0] and "random:" in lines[0], lines
    model = bench.load_pretrained_model(str(folder), device="cpu", dtype="float32", positions=256)
    assert model.config.max_position_embeddings == 256 and not model.training
    with pytest.raises(SystemExit):                                  # a folder that is not there
        bench.load_pretrained_model(str(tmp_path / "missing"), device="cpu", dtype="float32", positions=8)


def test_padded_batch_sweep(tmp_path, capsys, torch_threads):
    ids = torch.arange(10, 18)[None]                                  # (1, 8)
    batch, mask = bench.padded_batch(ids, 3)
    assert batch.tolist() == [list(range(10, 18)), [0, 0, 0] + list(range(13, 18))]
    assert mask.tolist() == [[1] * 8, [0, 0, 0] + [1] * 5]
    assert bench.padded_batch(ids, 0) == (ids, None)

    out = tmp_path / "padded"
    status = bench.main(["--model", "random:tiny", "--tokens", "256", "--pad", "40", "--repeats", "1",
                         "--decode-tokens", "none", "--threads", "1", "--out", str(out), *TINY_CONFIGS])
    stdout = capsys.readouterr().out
    assert status == 0, stdout[-3000:]
    data = json.loads((out / "prefill-sweep.json").read_text())
    assert data["meta"]["batch"] == 2 and data["meta"]["pad"] == 40
    for r in data["rows"]:
        assert r["error"] is None and positive_finite(r["time_ratio"]) and r["peak_bytes"] > 0, r
    header = (out / "prefill-sweep.md").read_text().splitlines()[0]
    assert "no decode; a padded batch of 2 rows, the second left-padded by 40 tokens." in header, header
    for argv, words in ((["--pad", "-1"], "--pad must be >= 0"), (["--pad", "8"], "add --decode-tokens none"),
                        (["--pad", "256", "--tokens", "256", "--decode-tokens", "none"], "below every --tokens")):
        with pytest.raises(SystemExit) as info:
            bench.main(["--model", "random:tiny", "--out", str(tmp_path / "bad"), *argv])
        assert info.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and words in err[0], err


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_sweep_on_cuda_measures_memory_in_process(tmp_path):
    proc = run([sys.executable, PREFILL, "--model", "random:tiny", "--device", "cuda", "--tokens", "256,512",
                "--repeats", "1", "--decode-rounds", "2", "--decode-steps", "3", "--out", tmp_path, *TINY_CONFIGS])
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads((tmp_path / "prefill-sweep.json").read_text())
    assert data["meta"]["cuda"] is True and data["meta"]["dtype"] == "bfloat16" and data["meta"]["gpu"]
    for r in data["rows"]:
        assert r["error"] is None and positive_finite(r["time_ratio"]) and r["peak_bytes"] > 0, r


# ----------------------------------------------------------------------------- its parts

def test_lengths_variants_and_decode_choices():
    assert bench.parse_lengths("4096, 2k,2048") == [2048, 4096]
    assert bench.parse_variants("sra,classic") == ["stock", "sra", "classic"]
    assert bench.decode_lengths("max", [2048, 4096], [2048, 4096, 8192]) == [4096]
    assert bench.decode_lengths("all", [2048], [2048, 8192]) == [2048, 8192]
    assert bench.decode_lengths("none", [2048], [2048]) == []
    assert bench.positions_needed([128, 512], [128], rounds=2, steps=10) == 512
    assert bench.positions_needed([128, 512], [512], rounds=2, steps=10) == 512 + 1 + 20
    for bad in (lambda: bench.parse_lengths("2048,abc"), lambda: bench.parse_lengths("0"),
                lambda: bench.parse_variants("stock,fast"), lambda: bench.decode_lengths("999", [128], [128]),
                lambda: bench.random_config("llama9", 10), lambda: bench.variant_configs(["classic:alpah=1"])):
        with pytest.raises(SystemExit) as info:
            bad()
        assert info.value.code == 2


def test_random_shapes_match_the_models_they_stand_for():
    from transformers import AutoModelForCausalLM

    def parameters(name: str) -> int:
        with torch.device("meta"):
            return sum(p.numel() for p in AutoModelForCausalLM.from_config(bench.random_config(name, 0)).parameters())

    assert parameters("llama3-8b") == 8_030_261_248                  # Meta-Llama-3-8B
    assert parameters("smollm2-135m") == 134_515_008                 # SmolLM2-135M
    llama = bench.random_config("llama3-8b", 131072)
    assert (llama.num_attention_heads, llama.num_key_value_heads, llama.num_hidden_layers) == (32, 8, 32)
    assert llama.max_position_embeddings == 131072                   # raised to fit the prompt
    assert bench.random_config("llama3-8b", 100).max_position_embeddings == 8192


def test_max_chunk_mib_is_passed_only_when_given(monkeypatch):
    import attn_transition as at

    calls = []
    monkeypatch.setattr(at, "enable", lambda model, config, **kw: calls.append((config, kw)), raising=False)
    monkeypatch.setattr(at, "is_enabled", lambda model: False, raising=False)
    configs = bench.variant_configs(["classic:min_length=0"])
    for given in (None, "64", "none"):
        extra = bench.parse_args(["--out", "x"] + ([] if given is None else ["--max-chunk-mib", given])).enable_kwargs
        bench.make_configure(object(), configs, extra)("classic")
        bench.make_configure(object(), configs, extra)("full-matrix")
    assert calls == [(configs["classic"], {"full_matrix": False}), (configs["classic"], {"full_matrix": True}),
                     (configs["classic"], {"full_matrix": False, "max_chunk_mib": 64.0}),
                     (configs["classic"], {"full_matrix": True, "max_chunk_mib": 64.0}),
                     (configs["classic"], {"full_matrix": False, "max_chunk_mib": None}),
                     (configs["classic"], {"full_matrix": True, "max_chunk_mib": None})]
    assert configs["classic"].min_length == 0
    for bad in ("0", "-1", "lots"):
        with pytest.raises(SystemExit):
            bench.parse_args(["--max-chunk-mib", bad])

    def old_enable(model, config, *, full_matrix=False):
        return model

    monkeypatch.setattr(at, "enable", old_enable, raising=False)
    with pytest.raises(SystemExit) as info:                          # an enable() without the keyword
        bench.make_configure(object(), configs, {"max_chunk_mib": 64.0})("classic")
    assert info.value.code == 2
    assert bench.chunk_setting({}) == {"max_chunk_mib": None, "max_chunk_mib_from": "enable() has no such keyword"}
    assert bench.chunk_setting({"max_chunk_mib": 8.0})["max_chunk_mib"] == 8.0

    def new_enable(model, config, *, full_matrix=False, max_chunk_mib=48):
        return model

    monkeypatch.setattr(at, "enable", new_enable, raising=False)
    assert bench.chunk_setting({}) == {"max_chunk_mib": 48, "max_chunk_mib_from": "enable() default"}


def _row(n, variant, seconds, peak, decode=None, error=None, optional=False):
    row = bench.new_row(n, variant, None, 4, optional=optional)
    row.update(seconds=[seconds], median_s=seconds, peak_bytes=peak, decode_ms_per_token=decode, error=error)
    return row


def test_ratios_exit_status_and_merge(tmp_path):
    rows = [_row(1024, "stock", 2.0, 100, decode=10.0), _row(1024, "classic", 2.2, 150, decode=10.1),
            _row(2048, "stock", 4.0, None), _row(2048, "classic", 5.0, 200)]
    bench.add_ratios(rows)
    assert rows[1]["time_ratio"] == pytest.approx(1.1) and rows[1]["memory_ratio"] == pytest.approx(1.5)
    assert rows[1]["decode_ratio"] == pytest.approx(1.01)
    assert rows[3]["time_ratio"] == pytest.approx(1.25) and rows[3]["memory_ratio"] is None
    assert rows[1]["time_ratio_paired"] == pytest.approx(1.1) and rows[1]["decode_ratio_paired"] is None
    assert bench.exit_status(rows) == 0
    assert bench.exit_status(rows + [_row(4096, "classic", None, None, error="OOM", optional=True)]) == 0
    assert bench.exit_status(rows + [_row(4096, "classic", None, None, error="OOM")]) == 1

    meta = {"model": "random:tiny", "device": "cpu", "dtype": "float32", "date": "today", "variants": ["stock", "classic"]}
    first, second = tmp_path / "a.json", tmp_path / "b.json"
    bench.write_results(first, meta, rows)
    later = [_row(2048, "stock", 3.0, 90), _row(2048, "classic", 3.3, 99), _row(8192, "stock", 9.0, 300)]
    bench.add_ratios(later)
    bench.write_results(second, dict(meta, date="tomorrow"), later)
    merged = tmp_path / "merged" / "all.json"
    assert bench.main(["--merge", str(first), str(second), "--json", str(merged)]) == 0
    data = json.loads(merged.read_text())
    assert [(r["tokens"], r["variant"], r["median_s"]) for r in data["rows"]] == [
        (1024, "stock", 2.0), (1024, "classic", 2.2), (2048, "stock", 3.0), (2048, "classic", 3.3),
        (8192, "stock", 9.0)]                                       # each length from the last file holding it
    assert data["meta"]["merged_from"] == [str(first), str(second)] and len(data["meta"]["sources"]) == 2
    assert is_png(merged.with_suffix(".png")) and "| 8192 | stock |" in merged.with_suffix(".md").read_text()


def test_paired_ratio_is_the_median_of_per_round_ratios():
    stock = bench.new_row(1024, "stock", None, 4)
    slow_round = bench.new_row(1024, "classic", None, 4)
    # stock drifts 2 -> 4 -> 2 s; the variant is 5% slower in every round
    stock.update(seconds=[2.0, 4.0, 2.0], median_s=2.0, decode_ms_per_token=10.0, decode_rounds_ms=[10.0, 20.0])
    slow_round.update(seconds=[2.1, 4.2, 2.1], median_s=2.1, decode_ms_per_token=15.0,
                      decode_rounds_ms=[10.5, 21.0])
    rows = [stock, slow_round]
    bench.add_ratios(rows)
    assert slow_round["time_ratio_paired"] == pytest.approx(1.05)
    assert slow_round["decode_ratio_paired"] == pytest.approx(1.05)
    assert slow_round["decode_ratio"] == pytest.approx(1.5)             # the ratio of medians sees the drift
    assert bench.paired_ratio([1.0, 2.0], [1.0]) is None                # rounds must pair up
    assert bench.paired_ratio([1.0, 0.0], [1.0, 1.0]) is None
    table = bench.markdown_table(rows, {"repeats": 3})
    assert "| 1.05x |" in table and "| 1.050x |" in table, table


# ----------------------------------------------------------------------------- gpu_check.sh

def test_gpu_check_tiny_mode_writes_everything(tmp_path):
    out = tmp_path / "check"
    proc = run(["bash", GPU_CHECK, out, "--tiny"], GPU_CHECK_PYTHON=sys.executable)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    for name in ("env.txt", "pytest.log", "sweep.log", "sweep.json", "sweep.md", "steps.tsv", "summary.md"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert is_png(out / "sweep.png")
    steps = [line.split("\t") for line in (out / "steps.tsv").read_text().splitlines()]
    assert [(s[0], s[1]) for s in steps] == [("environment", "0"), ("gpu tests", "0"), ("sweep", "0")]
    assert "cuda False" in (out / "env.txt").read_text()
    assert " skipped" in (out / "pytest.log").read_text() or " passed" in (out / "pytest.log").read_text()

    data = json.loads((out / "sweep.json").read_text())
    assert data["meta"]["model"] == "random:tiny" and data["meta"]["cuda"] is False
    assert data["meta"]["required_tokens"] == [128, 256] and data["meta"]["optional_tokens"] == [512]
    assert sorted({r["tokens"] for r in data["rows"]}) == [128, 256, 512]
    assert all(r["error"] is None and positive_finite(r["time_ratio"]) for r in data["rows"])
    assert all(r["optional"] == (r["tokens"] == 512) for r in data["rows"])

    summary = (out / "summary.md").read_text()
    assert "- passed:" in summary and "FAILED" not in summary
    assert "512 tokens (optional): measured" in summary
    assert "| 256 | sra |" in summary and "sweep.png" in summary


def test_gpu_check_exits_nonzero_when_a_step_fails_and_keeps_the_rest(tmp_path):
    out = tmp_path / "check"
    proc = run(["bash", GPU_CHECK, out], GPU_CHECK_PYTHON=sys.executable, GPU_CHECK_TINY="1",
               GPU_CHECK_SWEEP_ARGS="--variants stock,turbo")
    assert proc.returncode == 1, proc.stdout[-3000:]
    steps = {s.split("\t")[0]: s.split("\t")[1] for s in (out / "steps.tsv").read_text().splitlines()}
    assert steps == {"environment": "0", "gpu tests": "0", "sweep": "2"}
    assert (out / "pytest.log").stat().st_size > 0 and "turbo" in (out / "sweep.log").read_text()
    summary = (out / "summary.md").read_text()
    assert "FAILED: sweep wrote no results" in summary and "- passed:" not in summary


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal where there is no CUDA device")
def test_gpu_check_without_cuda_says_so(tmp_path):
    out = tmp_path / "check"
    proc = run(["bash", GPU_CHECK, out], GPU_CHECK_PYTHON=sys.executable, GPU_CHECK_TINY="0")
    assert proc.returncode == 2
    assert "no CUDA device" in (out / "env.txt").read_text()
    assert "FAILED: environment: no CUDA device" in (out / "summary.md").read_text()
    assert not (out / "pytest.log").exists() and not (out / "sweep.json").exists()

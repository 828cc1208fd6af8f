"""attn-transition bench on the real embedded SmolLM2 (slow: run with -m slow)."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.slow


def test_small_bench_on_smollm2(tmp_path):
    import torch

    import attn_transition as at
    from attn_transition.evaluation.bench.runner import BenchSettings, generate_batch, run_bench
    from attn_transition.evaluation.models import load_model

    model, tok = load_model("smollm2-135m")
    settings = BenchSettings(tasks=("fact", "kv"), lengths=(512,), depths=(0.0, 1.0), configs=("classic", "sra"),
                             max_new_tokens=4, n_boot=500)
    res = run_bench(model, tok, settings, tmp_path, model_name="smollm2-135m", progress=False)
    meta = res["meta"]
    assert meta["complete"] and meta["chat"] is True and meta["inactive"] == []
    assert res["summary"]["configs"] == ["stock", "classic", "sra"]
    for it in res["items"]:
        n = len(tok(it["prompt"]["text"], add_special_tokens=False)["input_ids"])
        assert n == it["prompt"]["n_tokens"] and 0.97 * 512 <= n <= 512, (it["item_id"], n)
    # Both default configs really edit SmolLM2 at 512 tokens: the next-token logits move.
    enc = tok([res["items"][0]["prompt"]["text"]], return_tensors="pt", add_special_tokens=False)
    with torch.inference_mode():
        stock = model(**enc).logits[0, -1]
        for config in (at.ClassicConfig(), at.SRAConfig()):
            at.enable(model, config)
            edited = model(**enc).logits[0, -1]
            assert (edited - stock).abs().max() > 1e-3, config
        at.disable(model)
        assert torch.equal(model(**enc).logits[0, -1], stock)
    # The stock records are what plain greedy generation gives.
    first = res["items"][0]
    got = generate_batch(model, tok, [first["prompt"]["text"]], chat=True, max_new_tokens=4)[0]
    assert got == next(r["output"] for r in res["records"] if r["item"] == first["item_id"] and r["config"] == "stock")
    assert (tmp_path / "summary.md").exists() and (tmp_path / "heatmap.png").exists()

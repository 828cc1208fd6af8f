"""The lm-evaluation-harness model ``attn-transition`` and ``attn-transition lm-eval``.

A tiny random Llama (tests/tiny_models.py) with a word-level tokenizer built here, saved to a
folder, goes through lm_eval's own API: the registry, ``create_from_arg_string``,
``loglikelihood`` and ``generate_until``. The schedule's thresholds are lowered so that
prompts of 40-90 tokens are edited.

Every model runs in float64 (TOL): a padded batch and a row alone go through kernels that
round differently; in float32 that can flip an entry across a threshold of the schedule and
move a log-likelihood by 1e-3, in float64 a flip needs a 1e-16 coincidence.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from skips import need

lm_eval = need("lm_eval", "pip install -e '.[lm-eval]'", provided_by=("setup",))

import attn_transition as at  # noqa: E402
from tiny_models import VOCAB, tiny_model  # noqa: E402

CONFIG = "classic:min_length=0;alpha=1.5;beta=1"    # a strong edit, on prompts of a few dozen tokens
CONFIG_OBJ = at.ClassicConfig(min_length=0, alpha=1.5, beta=1.0)
SRA = "sra:begin_length=4;threshold_len=24"          # its outer step edits the last 24 prompt rows
SRA_OBJ = at.SRAConfig(begin_length=4, threshold_len=24)
WORDS = [f"w{i}" for i in range(4, VOCAB)]
DTYPE = "float64"
TOL = 1e-9


@pytest.fixture(scope="module")
def harness():
    return pytest.importorskip("attn_transition.evaluation.harness")


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    path = tmp_path_factory.mktemp("tiny-llama")
    vocab = {w: i for i, w in enumerate(["[PAD]", "<s>", "</s>", "[UNK]"] + WORDS)}
    assert len(vocab) == VOCAB
    core = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, pad_token="[PAD]", unk_token="[UNK]",
                                        bos_token="<s>", eos_token="</s>")
    tiny_model("llama").save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def _text(n: int, seed: int) -> str:
    g = torch.Generator().manual_seed(seed)
    return " ".join(WORDS[i] for i in torch.randint(0, len(WORDS), (n,), generator=g).tolist())


# (context, continuation) pairs of different lengths, so a batch of them is right padded.
PAIRS = [(_text(n, seed), " " + _text(k, seed + 100)) for seed, (n, k) in
         enumerate([(88, 4), (61, 3), (47, 5), (75, 1), (40, 2)])]


def _instances(kind: str, arguments: list) -> list:
    from lm_eval.api.instance import Instance

    return [Instance(request_type=kind, doc={}, arguments=args, idx=i) for i, args in enumerate(arguments)]


def _ours(folder: Path, transition: str, batch_size: int):
    import attn_transition.evaluation.harness  # noqa: F401  (registers attn-transition)
    from lm_eval.api.registry import get_model

    return get_model("attn-transition").create_from_arg_string(
        f"pretrained={folder},transition={transition},dtype={DTYPE},device=cpu,batch_size={batch_size}")


def _plain(folder: Path, batch_size: int, config=None):
    """lm_eval's own HFLM; with ``config``, on a model enabled by hand."""
    from lm_eval.models.huggingface import HFLM
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if config is None:
        return HFLM(pretrained=str(folder), dtype=DTYPE, device="cpu", batch_size=batch_size)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=getattr(torch, DTYPE))
    at.enable(model, config)
    return HFLM(pretrained=model, tokenizer=AutoTokenizer.from_pretrained(folder), batch_size=batch_size)


def _loglik(lm) -> list[tuple[float, bool]]:
    return lm.loglikelihood(_instances("loglikelihood", PAIRS), disable_tqdm=True)


def test_registry_name_resolves_to_an_hflm_subclass(harness):
    from lm_eval.api.registry import get_model
    from lm_eval.models.huggingface import HFLM

    cls = get_model("attn-transition")
    assert cls is harness.AttnTransitionLM and issubclass(cls, HFLM)


def _by_hand(folder: Path, config, pairs=PAIRS) -> list[tuple[float, bool]]:
    """Each request scored without lm_eval's batching: the model enabled with ``config`` is called
    on ``context + continuation[:-1]`` alone with ``attn_transition_prompt_length=len(context)``
    (the context is the edited prompt, the continuation's rows are not edited), and the
    continuation's log-probabilities are summed as HFLM sums them. The tokens are lm_eval's own
    (``_encode_pair``)."""
    from transformers import AutoModelForCausalLM

    tokens = _plain(folder, 1)
    model = at.enable(AutoModelForCausalLM.from_pretrained(folder, dtype=getattr(torch, DTYPE)), config)
    result = []
    for context, continuation in pairs:
        ctx, cont = tokens._encode_pair(context, continuation)
        with torch.no_grad():
            logits = model(torch.tensor([ctx + cont[:-1]]), attn_transition_prompt_length=len(ctx)).logits
        logp = torch.nn.functional.log_softmax(logits, dim=-1)[0, -len(cont):]       # (cont, vocab)
        want = torch.tensor(cont)
        picked = torch.gather(logp, 1, want[:, None]).squeeze(-1)
        result.append((float(picked.sum()), bool((logp.argmax(-1) == want).all())))
    return result


@pytest.mark.parametrize("config, config_obj", [(CONFIG, CONFIG_OBJ), (SRA, SRA_OBJ)])
def test_enabled_edits_the_context_as_the_prompt(folder, config, config_obj):
    """A loglikelihood request is edited with its context as the prompt (``n = len(context)``),
    its continuation's rows not edited: alone bitwise, in a right-padded batch within TOL."""
    reference = _by_hand(folder, config_obj)
    stock = _loglik(_plain(folder, 1))
    alone = _ours(folder, config, 1)
    assert at.is_enabled(alone.model) and alone.model._attn_transition.config == config_obj
    assert _loglik(alone) == reference                              # same path, bitwise
    batched = _loglik(_ours(folder, config, 5))                     # one right-padded batch of 5
    for (got, greedy), (want, want_greedy) in zip(batched, reference):
        assert got == pytest.approx(want, abs=TOL) and greedy == want_greedy
    # ... and the edit happened: the enabled numbers are not the stock ones.
    assert max(abs(a - b) for (a, _), (b, _) in zip(reference, stock)) > 1e-2


def test_the_continuation_is_not_part_of_the_edited_prompt(folder):
    """SRA's outer step edits a prompt's last rows: lm_eval's forward edited as one prompt (a
    plain HFLM on an enabled model) scores otherwise than the context edited as the prompt."""
    whole = _loglik(_plain(folder, 1, SRA_OBJ))
    ours = _loglik(_ours(folder, SRA, 1))
    assert max(abs(a - b) for (a, _), (b, _) in zip(ours, whole)) > 1e-2


def test_enabled_by_hand_after_loading_edits_the_context_too(folder):
    """``transition=none`` and then ``at.enable`` on its model (how the RULER bench switches
    configs on one loaded model): the same meaning as ``transition=<config>``."""
    ours = _ours(folder, "none", 5)
    at.enable(ours.model, SRA_OBJ)
    for (got, greedy), (want, want_greedy) in zip(_loglik(ours), _by_hand(folder, SRA_OBJ)):
        assert got == pytest.approx(want, abs=TOL) and greedy == want_greedy


def test_each_row_gets_its_context_width(folder):
    """What reaches the model for a right-padded batch: each row's width is its context's length."""
    from attn_transition.keywords import LENGTH_KWARG

    ours = _ours(folder, CONFIG, 5)
    calls: list[tuple[list[int], list[int]]] = []

    def record(module, args, kwargs):
        ids = args[0] if args else kwargs["input_ids"]                 # (batch, padded width)
        mask = kwargs.get("attention_mask")
        lengths = mask.sum(-1).tolist() if mask is not None else [ids.shape[1]] * ids.shape[0]
        calls.append((list(kwargs[LENGTH_KWARG]), lengths))

    handle = ours.model.register_forward_pre_hook(record, with_kwargs=True)
    try:
        _loglik(ours)
    finally:
        handle.remove()
    assert len(calls) == 1                                          # one batch of 5
    widths, lengths = calls[0]
    # PAIRS' contexts have 88, 61, 47, 75, 40 words and their continuations 4, 3, 5, 1, 2: HFLM
    # forwards context + continuation[:-1]; the batch is sorted longest first.
    sizes = sorted(((n, k) for n, k in [(88, 4), (61, 3), (47, 5), (75, 1), (40, 2)]),
                   key=lambda nk: -(nk[0] + nk[1]))
    assert widths == [n for n, _ in sizes] and lengths == [n + k - 1 for n, k in sizes]


def test_one_forward_for_two_contexts_is_not_shared(folder):
    """HFLM answers requests whose ``context + continuation[:-1]`` agree with one forward; when
    their contexts differ in length their edited prompts differ, and each is forwarded."""
    context, continuation = PAIRS[0]
    *head, last = context.split()
    answer = continuation.split()[0]
    pairs = [(context, f" {answer}"), (" ".join(head), f" {last} {answer}")]   # one key: context
    got = _ours(folder, CONFIG, 2).loglikelihood(_instances("loglikelihood", pairs), disable_tqdm=True)
    for (value, greedy), (want, want_greedy) in zip(got, _by_hand(folder, CONFIG_OBJ, pairs)):
        assert value == pytest.approx(want, abs=TOL) and greedy == want_greedy


def test_rolling_loglikelihood_warns_that_it_scores_as_stock(folder):
    texts = [(ctx,) for ctx, _ in PAIRS[:2]]
    stock = _plain(folder, 1).loglikelihood_rolling(_instances("loglikelihood_rolling", texts), disable_tqdm=True)
    with pytest.warns(UserWarning, match="loglikelihood_rolling.*stock model's"):
        ours = _ours(folder, CONFIG, 1).loglikelihood_rolling(_instances("loglikelihood_rolling", texts),
                                                              disable_tqdm=True)
    assert ours == pytest.approx(stock, abs=TOL)


def test_plain_hflm_batches_would_edit_padded_rows_differently(folder):
    """Why the mask is passed: lm_eval's own batching of an enabled model gives other numbers."""
    reference = _loglik(_plain(folder, 1, CONFIG_OBJ))
    unmasked = _loglik(_plain(folder, 5, CONFIG_OBJ))
    assert max(abs(a - b) for (a, _), (b, _) in zip(reference, unmasked)) > 1e-3


def test_transition_none_is_stock_exactly(folder):
    for batch_size in (1, 5):
        ours = _ours(folder, "none", batch_size)
        assert not at.is_enabled(ours.model)
        assert _loglik(ours) == _loglik(_plain(folder, batch_size))


def test_right_padded_row_equals_the_row_alone():
    model = at.enable(tiny_model("llama", dtype=torch.float64), CONFIG_OBJ)
    g = torch.Generator().manual_seed(1)
    long_row = torch.randint(3, VOCAB, (1, 90), generator=g)
    short_row = torch.randint(3, VOCAB, (1, 55), generator=g)
    batch = torch.cat([long_row, torch.cat([short_row, torch.zeros(1, 35, dtype=torch.long)], 1)])
    mask = torch.ones_like(batch)
    mask[1, 55:] = 0
    with torch.no_grad():
        padded = model(batch, attention_mask=mask).logits
        alone = model(short_row).logits
        first_alone = model(long_row).logits
        at.disable(model)
        stock = model(short_row).logits
    torch.testing.assert_close(padded[1, :55], alone[0], atol=TOL, rtol=0)
    torch.testing.assert_close(padded[0], first_alone[0], atol=TOL, rtol=0)
    assert (alone - stock).abs().max() > 1e-2                    # the row was edited


def test_generate_until_batched_equals_one_at_a_time(folder):
    gen = {"until": ["</s>"], "max_gen_toks": 6, "do_sample": False}
    requests = [(ctx, dict(gen)) for ctx, _ in PAIRS]
    reference = _plain(folder, 1, CONFIG_OBJ).generate_until(_instances("generate_until", requests),
                                                               disable_tqdm=True)
    batched = _ours(folder, CONFIG, 5).generate_until(_instances("generate_until", requests),
                                                       disable_tqdm=True)
    assert batched == reference and all(isinstance(s, str) and s for s in batched)


def test_bad_transition_is_a_one_line_error_naming_transition(folder):
    with pytest.raises(at.ConfigError) as err:
        _ours(folder, "clasic:alpha=1", 1)
    assert "transition" in str(err.value) and "did you mean 'classic'" in str(err.value)
    assert "\n" not in str(err.value)
    with pytest.raises(at.ConfigError, match="transition"):   # a comma-split value is caught too
        _ours(folder, "classic:alpha=1,beta=0.5", 1)


def test_transition_values(harness):
    assert harness.parse_transition("none") is None and harness.parse_transition(None) is None
    assert harness.parse_transition("classic:alpha=1;beta=0.5") == at.ClassicConfig(alpha=1.0, beta=0.5)
    assert harness.parse_transition("classic:alpha=1,beta=0.5") == at.ClassicConfig(alpha=1.0, beta=0.5)
    assert harness.parse_transition("sra") == at.SRAConfig()
    with pytest.raises(at.ConfigError, match="transition"):
        harness.parse_transition(3)


def test_cli_help_points_at_lm_eval(capsys):
    from attn_transition.cli import main

    assert main(["lm-eval", "--help"]) == 0
    out = capsys.readouterr().out
    assert "transition=" in out and "--model_args" in out and "--tasks" in out


@pytest.fixture
def local_task(tmp_path) -> Path:
    """A loglikelihood task on a local JSON file, for lm_eval's --include_path."""
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps({"context": c, "answer": a.strip()}) + "\n" for c, a in PAIRS))
    (tmp_path / "tiny_task.yaml").write_text(
        "task: tiny_local\n"
        "dataset_path: json\n"
        f"dataset_kwargs:\n  data_files:\n    test: {data}\n"
        "test_split: test\n"
        "output_type: loglikelihood\n"
        "doc_to_text: '{{context}}'\n"
        "doc_to_target: ' {{answer}}'\n"
        "metric_list:\n  - metric: perplexity\n    aggregation: perplexity\n    higher_is_better: false\n"
        "  - metric: acc\n    aggregation: mean\n    higher_is_better: true\n")
    return tmp_path


def test_cli_runs_a_local_task_end_to_end(folder, local_task):
    """lm_eval's flags go through unchanged: a task from --include_path, a batch, logged samples."""
    from attn_transition.cli import main

    out_dir = local_task / "out"
    code = main(["lm-eval", "--model", "attn-transition",
                 "--model_args", f"pretrained={folder},transition='classic:min_length=0,alpha=1.5,beta=1',dtype={DTYPE}",
                 "--device", "cpu", "--batch_size", "5", "--include_path", str(local_task),
                 "--tasks", "tiny_local", "--output_path", str(out_dir), "--log_samples"])
    assert code == 0
    results = json.loads(next(out_dir.rglob("results_*.json")).read_text())
    assert results["config"]["model"] == "attn-transition"
    samples = [json.loads(line) for line in next(out_dir.rglob("samples_tiny_local_*.jsonl")).open()]
    assert len(samples) == len(PAIRS)
    reference = dict(zip((c for c, _ in PAIRS), _by_hand(folder, CONFIG_OBJ)))
    for sample in samples:
        got = float(sample["resps"][0][0][0])
        assert got == pytest.approx(reference[sample["doc"]["context"]][0], abs=TOL)


def test_cli_bad_transition_exits_2_with_one_line(folder, local_task, capsys):
    from attn_transition.cli import main

    code = main(["lm-eval", "--model", "attn-transition", "--model_args",
                 f"pretrained={folder},transition=clasic", "--device", "cpu",
                 "--include_path", str(local_task), "--tasks", "tiny_local"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1].startswith("attn-transition lm-eval: error: transition='clasic'"), err[-3:]


@pytest.mark.slow
def test_cli_ruler_niah_on_smollm2(tmp_path):
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "attn_transition.cli", "lm-eval", "--model", "attn-transition",
         "--model_args", "pretrained=smollm2-135m,transition=classic,dtype=float32", "--device", "cpu",
         "--tasks", "niah_single_1", "--limit", "2", "--metadata", '{"max_seq_lengths":[1024]}',
         "--output_path", str(tmp_path)], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(next(tmp_path.rglob("results_*.json")).read_text())
    scores = results["results"]["niah_single_1"]
    assert "1024,none" in scores and 0.0 <= scores["1024,none"] <= 1.0
    print(f"niah_single_1, 2 samples at 1024 tokens: {time.perf_counter() - started:.0f} s")

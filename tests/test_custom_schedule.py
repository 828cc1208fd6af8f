"""A schedule written outside the package (tests/custom_schedule.py), registered with the public
API, runs everywhere a built-in one does, with no line of the package changed and nothing of it
monkeypatched: under ``enable``, per call (a config and a spec string), in ``generate`` (equal to a
cached prefill and decoding steps by hand), in ``bench --config`` and in the kernel against the
dense reference; its spec round-trips; the registry refuses a taken name, says "did you mean",
checks a class before taking it and every plan before the kernel sees it; an installed package's
entry point is found in another process. Paths are compared in float64, on an edit without
thresholds (nothing for rounding to decide)."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from typing import ClassVar

import pytest
import torch

import attn_transition as at
from attn_transition.kernel import transition_rows
from attn_transition.schedules import layer_plan
from custom_schedule import ShiftConfig, ShiftToStart, WholeShiftConfig
from hf_compat import cache_kwarg, cache_of
from tiny_models import N, greedy, ids, tiny_model

F64 = torch.float64
SHIFT = ShiftConfig(fraction=0.4, first=3, rows=40)
TOL = 1e-10                    # float64 paths that differ only in the order of operations

patch = pytest.mark.patch      # the tests the floor suite runs (make test-floor)


# ----------------------------------------------------------------------------- the spec and the registry

@patch
def test_the_spec_reads_and_writes_the_outside_schedule():
    assert "shift" in at.schedule_names() and at.schedule_class("shift") is ShiftConfig
    assert at.parse_config("shift") == ShiftConfig()
    assert at.parse_config("Shift : fraction=0.4, first=3,rows=40") == SHIFT
    assert at.format_config(SHIFT) == "shift:fraction=0.4,first=3,rows=40"
    assert at.format_config(ShiftConfig()) == "shift" and SHIFT.describe() == at.format_config(SHIFT)
    for config in (SHIFT, ShiftConfig(fraction=1 / 3), WholeShiftConfig(rows=7)):
        assert at.parse_config(at.format_config(config)) == config
    with pytest.raises(at.ConfigError, match=r"ShiftConfig has no field 'fractoin' \(did you mean 'fraction'\?\)"):
        at.parse_config("shift:fractoin=0.5")
    with pytest.raises(at.ConfigError, match=r"ShiftConfig.fraction must be a number in \[0, 1\], got 1.5"):
        at.parse_config("shift:fraction=1.5")
    with pytest.raises(at.ConfigError, match=r"unknown schedule 'shfit'.*\(did you mean 'shift'\?\)"):
        at.parse_config("shfit:fraction=0.5")
    assert at.config.parse_grid("shift:fraction=0.1,0.2;rows=5") == [ShiftConfig(fraction=0.1, rows=5),
                                                                    ShiftConfig(fraction=0.2, rows=5)]


@patch
def test_a_text_field_is_written_only_where_the_spec_reads_it_back():
    @at.register_schedule(replace=True)
    @dataclass(frozen=True)
    class Tagged(ShiftConfig):
        tag: str = "plain"
        schedule: ClassVar[str] = "tagged"

    assert at.parse_config("tagged:tag=bold,rows=3") == Tagged(tag="bold", rows=3)
    assert at.parse_config(at.format_config(Tagged(tag="bold"))) == Tagged(tag="bold")
    for tag in ("a,b", "k=v", "x:y", " pad", ""):
        with pytest.raises(at.ConfigError, match=r"Tagged.tag=.* cannot be written in a spec"):
            at.format_config(Tagged(tag=tag))


@patch
def test_a_taken_name_is_refused_naming_both_classes_unless_replace():
    @dataclass(frozen=True)
    class Impostor(at.TransitionConfig):
        schedule: ClassVar[str] = "shift"

        def plan(self, layer, num_layers, n):
            return ()

    with pytest.raises(at.ConfigError, match=r"'shift' is taken by custom_schedule\.ShiftConfig; .*Impostor needs "
                                             r"another name \(or replace=True\)"):
        at.register_schedule(Impostor)
    assert at.schedule_class("shift") is ShiftConfig
    assert at.register_schedule(ShiftConfig) is ShiftConfig             # the same class again: no change
    try:
        assert at.register_schedule(Impostor, replace=True) is Impostor
        assert type(at.parse_config("shift")) is Impostor
    finally:
        at.register_schedule(ShiftConfig, replace=True)
    assert type(at.parse_config("shift")) is ShiftConfig


def _plan_nothing(self, layer, num_layers, n):
    return ()


def _bad_classes():
    ns = {"plan": _plan_nothing}

    def config(name, bases=(at.TransitionConfig,), frozen=True, fields=(), **attrs):
        cls = type(name, bases, {"__annotations__": dict(fields), **ns, **attrs})
        return dataclass(frozen=frozen)(cls)

    @dataclass(frozen=True)
    class NotAConfig:
        schedule: ClassVar[str] = "plain"

    class Abstract(at.TransitionConfig):
        schedule: ClassVar[str] = "abstract"

    return [
        (NotAConfig, "is not a subclass of attn_transition.TransitionConfig"),
        (config("Thawed", frozen=False, schedule="thawed"), "must be a frozen dataclass"),
        (dataclass(frozen=True)(Abstract), "does not implement plan"),
        (config("Dashed", schedule="my-shift"), "must be a lower-case identifier"),
        (config("Upper", schedule="Shift2"), "must be a lower-case identifier"),
        (config("Reserved", schedule="none"), "must be a lower-case identifier other than"),
        (config("Nameless"), "must be a lower-case identifier"),
        (config("NoDefault", schedule="nodefault", fields={"k": int}), r"\.k needs a default of type bool"),
        (config("Listy", schedule="listy", fields={"k": list}, k=dataclasses.field(default_factory=list)),
         r"\.k needs a default of type bool, int, float or str"),
        (config("Nones", schedule="nones", fields={"k": object}, k=None), r"\.k needs a default"),
        (config("Loose", schedule="loose", continuous="yes"), "continuous must be True or False"),
        (config("Invalid", bases=(ShiftConfig,), schedule="invalid", fields={"fraction": float}, fraction=2.0),
         r"defaults are not a valid config: ShiftConfig.fraction must be"),
    ]


@patch
@pytest.mark.parametrize("cls, message", _bad_classes(), ids=lambda x: getattr(x, "__name__", ""))
def test_registration_checks_the_class(cls, message):
    before = dict(at.config.SCHEDULES)
    with pytest.raises(at.ConfigError, match=message):
        at.register_schedule(cls)
    assert dict(at.config.SCHEDULES) == before


@patch
def test_the_registry_is_read_only_outside_register_schedule():
    with pytest.raises(TypeError):
        at.config.SCHEDULES["shift"] = ShiftConfig                    # type: ignore[index]


@patch
@pytest.mark.parametrize("edits, message", [
    ([ShiftToStart(10, 20, 0.1, 2), ShiftToStart(15, 30, 0.1, 2)], r"starts before the previous edit ends \(20\)"),
    ([ShiftToStart(30, 40, 0.1, 2), ShiftToStart(10, 20, 0.1, 2)], "must be sorted"),
    ([ShiftToStart(10, 50, 0.1, 2)], r"covers rows \[10, 50\), which must be ints with 0 <= start < end <= n"),
    ([ShiftToStart(-1, 5, 0.1, 2)], r"covers rows \[-1, 5\)"),
    ([ShiftToStart(5, 5, 0.1, 2)], r"covers rows \[5, 5\)"),
    ([(10, 20)], r"returned \(10, 20\), not an attn_transition.Edit"),
    (iter(()), "returned tuple_iterator; it must return a tuple or list"),
])
def test_a_bad_plan_is_refused_naming_the_schedule(edits, message):
    @at.register_schedule(replace=True)
    @dataclass(frozen=True)
    class BadPlan(at.TransitionConfig):
        schedule: ClassVar[str] = "badplan"

        def plan(self, layer, num_layers, n):
            return edits

    with pytest.raises(at.ConfigError, match=r"schedule 'badplan' \(.*BadPlan.plan\(layer=1, num_layers=4, n=40\)\)"
                                             r".*" + message):
        layer_plan(BadPlan(), 1, 4, 40)
    model = tiny_model("llama")
    at.enable(model, BadPlan())
    try:
        with pytest.raises(at.ConfigError, match="schedule 'badplan'"), torch.no_grad():
            model(ids(1, 40))
    finally:
        at.disable(model)


@patch
def test_layer_plan_asks_the_config_and_carries_n_and_continuous():
    plan = layer_plan(SHIFT, 2, 6, N)
    assert tuple(plan) == (ShiftToStart(N - 40, N, 0.4, 3),) and plan.n == N and plan.continuous
    assert layer_plan(SHIFT, 0, 6, N) == () and layer_plan(SHIFT, 1, 6, 3) == ()
    assert not layer_plan(WholeShiftConfig(), 2, 6, N).continuous
    with pytest.raises(at.ConfigError, match="must be a schedule config"):
        layer_plan(object(), 1, 6, N)
    with pytest.raises(at.InputError, match="n must be an int >= 0"):
        layer_plan(SHIFT, 1, 6, -1)


# ----------------------------------------------------------------------------- the kernel

def _dense(q, k, v, config, layer, layers):
    """The dense reference: every row's causal float64 weights, ``at.reweight`` on them, times values."""
    n = q.shape[1]
    groups = q.shape[0] // k.shape[0]
    scores = q @ k.repeat_interleave(groups, 0).transpose(-1, -2) * 0.4           # (heads, n, n)
    scores = scores.masked_fill(~torch.ones(n, n, dtype=torch.bool).tril(), float("-inf"))
    w = at.reweight(scores.softmax(-1)[None], layer, layers, config)[0]          # (heads, n, n)
    return (w @ v.repeat_interleave(groups, 0)).transpose(0, 1)                 # (n, heads, d)


def _qkv(n: int, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(4, n, 8, generator=g, dtype=F64) * 2.5, torch.randn(2, n, 8, generator=g, dtype=F64),
            torch.randn(2, n, 8, generator=g, dtype=F64))


@patch
@pytest.mark.parametrize("chunks", [1, 3])
def test_transition_rows_equal_reweight_for_the_outside_schedule(chunks):
    q, k, v = _qkv(N)
    want = _dense(q, k, v, SHIFT, 2, 6)
    stock = _dense(q, k, v, ShiftConfig(fraction=0.0), 2, 6)
    assert (want - stock).abs().max() > 1e-2, "the edit changes the rows it edits"
    edits = layer_plan(SHIFT, 2, 6, N)
    got = torch.full((N, 4, 8), float("nan"), dtype=F64)
    bounds = [round(i * N / chunks) for i in range(chunks + 1)]
    for a, c in zip(bounds, bounds[1:]):           # a prefill in pieces, each seeing the keys before it
        transition_rows(q[:, a:c], k[:, :c], v[:, :c], edits, row_start=a, scaling=0.4, out=got[a:c],
                        budget=at.kernel.Budget(0.002), prompt_length=N)   # a few rows per chunk
    rows = slice(N - 40, N)
    assert (got[rows] - want[rows]).abs().max() < TOL
    assert torch.isnan(got[:N - 40]).all(), "rows outside the plan are left to the engine"


@patch
def test_a_plan_that_is_not_continuous_is_edited_whole_and_refused_in_pieces():
    q, k, v = _qkv(N)
    whole = layer_plan(WholeShiftConfig(fraction=0.4, first=3, rows=40), 2, 6, N)
    got = torch.zeros(N, 4, 8, dtype=F64)
    transition_rows(q, k, v, whole, row_start=0, scaling=0.4, out=got, budget=at.kernel.Budget(0.002))
    assert (got[N - 40:] - _dense(q, k, v, SHIFT, 2, 6)[N - 40:]).abs().max() < TOL
    with pytest.raises(at.InputError, match=r"not continuous .* holds rows \[0, 130\) of the edit on \[110, 150\)"):
        transition_rows(q[:, :130], k[:, :130], v[:, :130], whole, row_start=0, scaling=0.4, out=got[:130],
                        prompt_length=N)


# ----------------------------------------------------------------------------- transformers

def _reference_attention(config, num_layers):
    """A transformers attention function: dense float64 weights, ``at.reweight`` on a prefill's
    (queries = keys), times values. Registered through transformers' public interfaces."""

    def attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, **kwargs):
        b, h, q, d = query.shape
        c, groups = key.shape[2], h // key.shape[1]
        scores = query @ key.repeat_interleave(groups, 1).transpose(-1, -2) * scaling   # (b, h, q, c)
        if attention_mask is None:
            allowed = torch.ones(q, c, dtype=torch.bool).tril(c - q)[None, None]
        else:
            allowed = attention_mask[:, :, :, :c]
            allowed = allowed if allowed.dtype == torch.bool else allowed > torch.finfo(allowed.dtype).min / 2
        w = scores.masked_fill(~allowed, float("-inf")).softmax(-1)
        if q == c:
            w = at.reweight(w, module.layer_idx, num_layers, config)
        return (w @ value.repeat_interleave(groups, 1)).transpose(1, 2), w

    return attention


@pytest.fixture(scope="module")
def reference_model():
    """The tiny float64 Llama with the dense reference of SHIFT as its attention."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    name = "custom_schedule_reference"
    AttentionInterface.register(name, _reference_attention(SHIFT, 6))
    AttentionMaskInterface.register(name, sdpa_mask)
    return tiny_model("llama", dtype=F64, attn_implementation=name)


@pytest.fixture(scope="module")
def model():
    return tiny_model("llama", dtype=F64)


def _logits(model, x, **kw):
    with torch.no_grad():
        return model(x, **kw).logits


@patch
def test_enable_equals_the_dense_reference(model, reference_model):
    x = ids(1, N, seed=3)
    stock = _logits(model, x)
    want = _logits(reference_model, x)
    assert (want - stock).abs().max() > 1e-3, "the edit changes the model's output"
    with at.enabled(model, SHIFT):
        assert (_logits(model, x) - want).abs().max() < TOL
    with at.enabled(model, SHIFT, max_chunk_mib=0.001):          # the kernel's rows in many chunks
        assert (_logits(model, x) - want).abs().max() < TOL
    with at.enabled(model, SHIFT, full_matrix=True):
        assert (_logits(model, x) - want).abs().max() < TOL
    assert not at.is_enabled(model) and (_logits(model, x) - stock).abs().max() == 0


@patch
def test_per_call_config_and_spec(model, reference_model):
    x = ids(1, N, seed=4)
    want = _logits(reference_model, x)
    at.enable(model, active=False)
    try:
        assert (_logits(model, x, attn_transition=SHIFT) - want).abs().max() < TOL
        assert (_logits(model, x, attn_transition=at.format_config(SHIFT)) - want).abs().max() < TOL
        assert (_logits(model, x, attn_transition="shift") - want).abs().max() > 1e-6   # other settings
        with pytest.raises(at.ConfigError, match=r"unknown schedule 'shfit'.*did you mean 'shift'"):
            _logits(model, x, attn_transition="shfit")
    finally:
        at.disable(model)


@patch
def test_generate_equals_a_cached_prefill_then_decoding_steps(model):
    x = ids(1, N, seed=5)
    steps = 4
    at.enable(model, SHIFT)
    try:
        with torch.no_grad():
            gen = model.generate(x, **greedy(torch.ones_like(x), steps))
            out = model(x, use_cache=True)            # the prefill, edited
            cache, logits, tokens = cache_of(out), [out.logits[:, -1]], []
            for _ in range(steps - 1):
                tokens.append(logits[-1].argmax(-1, keepdim=True))
                out = model(tokens[-1], use_cache=True, **{cache_kwarg(model): cache})   # a decoding step: stock
                cache = cache_of(out)
                logits.append(out.logits[:, -1])
            tokens.append(logits[-1].argmax(-1, keepdim=True))
    finally:
        at.disable(model)
    assert torch.equal(gen.sequences[:, N:], torch.cat(tokens, 1))
    # generate hands out its logits in float32: equal up to that rounding.
    assert max((a.double() - b).abs().max() for a, b in zip(gen.logits, logits)) < 1e-5
    with torch.no_grad():
        stock = model.generate(x, **greedy(torch.ones_like(x), 1))
    assert (stock.logits[0] - gen.logits[0]).abs().max() > 1e-3, "generate's prefill was edited"


@patch
def test_a_prompt_in_chunks_is_edited_as_a_whole_or_refused_when_not_continuous(model, reference_model):
    x = ids(1, N, seed=6)
    want = _logits(reference_model, x)[:, -1]
    for config in (SHIFT, WholeShiftConfig(fraction=0.4, first=3, rows=40)):
        at.enable(model, config)
        try:
            with torch.no_grad():
                whole = model(x).logits[:, -1]
                assert (whole - want).abs().max() < TOL
                if config.continuous:
                    first = model(x[:, :100], attn_transition_prompt_length=N, use_cache=True)
                    last = model(x[:, 100:], attn_transition_prompt_length=N,
                                 **{cache_kwarg(model): cache_of(first)}).logits[:, -1]
                    assert (last - want).abs().max() < TOL
                else:
                    with pytest.raises(at.ConfigError, match=r"schedule 'wholeshift' .* is not continuous"):
                        model(x[:, :100], attn_transition_prompt_length=N, use_cache=True)
        finally:
            at.disable(model)


# ----------------------------------------------------------------------------- bench --config

def test_bench_config_runs_the_outside_schedule(capsys, tmp_path):
    import json

    from attn_transition.cli import main
    from test_bench_pure import char_tokenizer
    from test_bench_run import tiny_lm

    folder = tmp_path / "tiny-llama"
    tiny_lm().save_pretrained(folder)
    char_tokenizer().save_pretrained(folder)
    spec = "shift:fraction=1,first=1,rows=400"
    code = main(["bench", "--model", str(folder), "--tasks", "kv", "--lengths", "400", "--depths", "0",
                 "--max-new-tokens", "2", "--n-boot", "100", "--no-progress", "--config", spec,
                 "--output-dir", str(tmp_path / "run")])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert spec in captured.out
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["meta"]["configs"] == {spec: {"schedule": "shift", "fraction": 1.0, "first": 1, "rows": 400}}
    assert results["meta"]["inactive"] == [], "the bench found that the schedule edits these prompts"
    counts = {row["config"]: row["n"] for row in results["summary"]["accuracy"]}
    assert counts == {"stock": 1, spec: 1}


# ----------------------------------------------------------------------------- an installed package

_PACKAGE = '''
from dataclasses import dataclass
from typing import ClassVar

import attn_transition as at


@dataclass(frozen=True)
class Halve(at.Edit):
    start: int
    end: int

    def apply_(self, rows, *, first_row, total=None):
        return rows.mul_(0.5)


@dataclass(frozen=True)                 # not registered here: the entry point is enough
class HalveConfig(at.TransitionConfig):
    last: int = 2
    schedule: ClassVar[str] = "halvetail"

    def plan(self, layer, num_layers, n):
        return (Halve(max(n - self.last, 0), n),) if n else ()
'''

_CHECK = '''
import sys
import attn_transition as at
assert "halvetail_pkg" not in sys.modules
print("names", at.schedule_names())
config = at.parse_config("halvetail:last=3")
print("class", type(config).__module__, type(config).__name__, at.format_config(config))
print("plan", list(at.layer_plan(config, 0, 2, 10)))
try:
    at.parse_config("halvetial")
except at.ConfigError as err:
    print("error", err)
'''


@patch
def test_an_entry_point_names_a_schedule_for_another_process(tmp_path):
    env = _entry_point_package(tmp_path)
    done = subprocess.run([sys.executable, "-c", _CHECK], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    lines = dict(line.split(" ", 1) for line in done.stdout.splitlines())
    assert "'halvetail'" in lines["names"] and "'classic'" in lines["names"]
    assert lines["class"] == "halvetail_pkg HalveConfig halvetail:last=3"
    assert lines["plan"] == "[Halve(start=7, end=10)]"
    assert "unknown schedule 'halvetial'" in lines["error"] and "did you mean 'halvetail'" in lines["error"]


_HARNESS_CHECK = '''
import sys
import attn_transition as at
from attn_transition.evaluation.harness_model import AttnTransitionLM
assert "halvetail_pkg" not in sys.modules
try:   # lm_eval cut "transition=halvetail:last=3,..." at a comma? here a stray "last" of a schedule no import named
    AttnTransitionLM(pretrained="/nonexistent-model-folder", transition="halvetail", last="3")
except at.ConfigError as err:
    print("error", err.field, err)
'''


def _entry_point_package(tmp_path) -> dict:
    """A tmp folder holding the halvetail package and its entry point; the environment that finds it."""
    (tmp_path / "halvetail_pkg.py").write_text(textwrap.dedent(_PACKAGE))
    info = tmp_path / "halvetail_pkg-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: halvetail-pkg\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[attn_transition.schedules]\nhalvetail = halvetail_pkg:HalveConfig\n")
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}


def test_the_lm_eval_model_refuses_a_stray_field_of_an_entry_point_schedule_before_loading(tmp_path):
    from skips import need

    need("lm_eval", "make setup; not in the floor environment")
    env = _entry_point_package(tmp_path)
    done = subprocess.run([sys.executable, "-c", _HARNESS_CHECK], env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("error transition "), done.stdout
    assert "model_args last look like items of transition cut off at a comma" in done.stdout


# ----------------------------------------------------------------------------- evaluation and the sweep

def test_the_harness_arguments_know_the_outside_schedule():
    from attn_transition.evaluation.harness_args import parse_transition, stray_config_items

    assert parse_transition(SHIFT) is SHIFT
    assert parse_transition("shift:fraction=0.4;first=3;rows=40") == SHIFT
    # lm_eval cut "transition=shift:fraction=0.4,rows=40" at its comma: rows is a stray item.
    assert stray_config_items({"transition": "shift:fraction=0.4", "rows": "40", "batch_size": 2}) == ["rows"]


def test_the_prefill_sweep_offers_every_registered_schedule():
    from test_benchmarks import load_prefill

    sweep = load_prefill()
    assert sweep.variant_names()[:3] == ["stock", "classic", "sra"] and sweep.variant_names()[-1] == "full-matrix"
    assert "shift" in sweep.variant_names()
    assert sweep.parse_variants("shift") == ["stock", "shift"]
    configs = sweep.variant_configs([], ["stock", "shift"])
    assert configs["shift"] == ShiftConfig() and configs["full-matrix"] == at.ClassicConfig()
    assert sweep.variant_configs([at.format_config(SHIFT)], ["shift"])["shift"] == SHIFT
    assert sweep.edited_row_fraction(SHIFT, 6, N) == pytest.approx(5 * 40 / (6 * N))

"""The kernel's public interface (``at.kernel.transition_rows``, for other engines) refuses every
wrong argument with an ``InputError`` naming it, before writing anything; plans carry the prompt
length they were planned for, and a plan for another sequence is refused."""

import pickle

import pytest
import torch

import attn_transition as at
from attn_transition import kernel
from attn_transition.kernel import Budget, transition_rows
from attn_transition.schedules import Plan, layer_plan

HEADS, KV_HEADS, D, N = 4, 2, 8, 160
CONFIG = at.SRAConfig(begin_length=4, threshold_len=24)
LAYER, LAYERS = 1, 6


def _args(n: int = N, dtype=torch.float64) -> dict:
    """A valid call: one sequence of ``n`` rows and keys, its plan, an output of NaN."""
    g = torch.Generator().manual_seed(0)
    return dict(query=torch.randn(HEADS, n, D, generator=g, dtype=dtype) * 2.5,     # (heads, n, d)
                key=torch.randn(KV_HEADS, n, D, generator=g, dtype=dtype),          # (kv_heads, n, d)
                value=torch.randn(KV_HEADS, n, D, generator=g, dtype=dtype),
                edits=layer_plan(CONFIG, LAYER, LAYERS, n), row_start=0, scaling=0.4,
                out=torch.full((n, HEADS, D), float("nan"), dtype=dtype))           # (R, heads, dv)


def _call(**changes):
    args = _args()
    args.update(changes)
    query, key, value, edits = (args.pop(name) for name in ("query", "key", "value", "edits"))
    return transition_rows(query, key, value, edits, **args)


def _causal(rows: int, keys: int) -> torch.Tensor:
    return torch.ones(rows, keys, dtype=torch.bool).tril_()                 # (R, C)


def _nan(*shape: int) -> torch.Tensor:
    return torch.full(shape, float("nan"), dtype=torch.float64)


A = _args()
BAD = {
    "2D query": ("query", dict(query=A["query"][0])),
    "integer query": ("query", dict(query=A["query"].long())),
    "query not a tensor": ("query", dict(query=A["query"].tolist())),
    "head dim mismatch": ("key", dict(key=A["key"][..., :6])),
    "heads not a multiple": ("key", dict(key=torch.zeros(3, N, D, dtype=torch.float64),
                                         value=torch.zeros(3, N, D, dtype=torch.float64))),
    "keys short of the rows": ("key", dict(key=A["key"][:, :100], value=A["value"][:, :100])),
    "float64 query, float32 key": ("key", dict(key=A["key"].float())),
    "value keys mismatch": ("value", dict(value=A["value"][:, :150])),
    "out with another dv": ("out", dict(out=_nan(N, HEADS, 6))),
    "out with other rows": ("out", dict(out=_nan(N - 1, HEADS, D))),
    "out heads first": ("out", dict(out=_nan(HEADS, N, D))),
    "mask of the wrong shape": ("mask", dict(mask=_causal(N, N - 10))),
    "mask of 3 heads": ("mask", dict(mask=_causal(N, N).expand(3, N, N))),
    "integer mask": ("mask", dict(mask=_causal(N, N).long())),
    "mask and window": ("mask", dict(mask=_causal(N, N), window=50)),
    "sinks of the wrong length": ("sinks", dict(sinks=torch.zeros(HEADS - 1, dtype=torch.float64))),
    "sinks as a list": ("sinks", dict(sinks=[0.0] * HEADS)),
    "non-finite sinks": ("sinks", dict(sinks=torch.tensor([0.0, float("nan"), 0.0, 0.0], dtype=torch.float64))),
    "edits as ints": ("edits", dict(edits=[1, 2])),
    "edits as None": ("edits", dict(edits=None)),
    "edits planned for a shorter prompt": ("edits", dict(edits=layer_plan(CONFIG, LAYER, LAYERS, 120))),
    "edits planned for a longer prompt": ("edits", dict(edits=layer_plan(CONFIG, LAYER, LAYERS, 200),
                                                        prompt_length=N)),
    "hand-made edits past the prompt": ("edits", dict(edits=tuple(layer_plan(CONFIG, LAYER, LAYERS, 200)),
                                                      prompt_length=N)),
    "negative prompt_length": ("prompt_length", dict(prompt_length=-1)),
    "window 0": ("window", dict(window=0)),
    "window -5": ("window", dict(window=-5)),
    "window 2.5": ("window", dict(window=2.5)),
    "window True": ("window", dict(window=True)),
    "scaling nan": ("scaling", dict(scaling=float("nan"))),
    "scaling inf": ("scaling", dict(scaling=float("inf"))),
    "scaling 0": ("scaling", dict(scaling=0.0)),
    "scaling None": ("scaling", dict(scaling=None)),
    "scaling as text": ("scaling", dict(scaling="0.4")),
    "softcap 0": ("softcap", dict(softcap=0.0)),
    "softcap nan": ("softcap", dict(softcap=float("nan"))),
    "row_start float": ("row_start", dict(row_start=0.0)),
    "key_start None": ("key_start", dict(key_start=None)),
    "keys dropped without a mask": ("key_start", dict(key=A["key"][:, 10:], value=A["value"][:, 10:], key_start=10)),
    "real_end text": ("real_end", dict(real_end="160")),
    "budget in MiB": ("budget", dict(budget=16)),
    "scratch": ("scratch", dict(scratch=torch.empty(10))),
    "dropout 1": ("dropout", dict(dropout=1.0)),
    "weights_out of the wrong shape": ("weights_out", dict(weights_out=torch.zeros(HEADS, N, N - 1))),
}


@pytest.mark.parametrize("case", list(BAD))
def test_a_wrong_argument_is_refused_by_name_before_anything_is_written(case):
    field, changes = BAD[case]
    out = changes.get("out", _nan(N, HEADS, D))
    with pytest.raises(at.InputError, match=f"^transition_rows: .*{field}") as err:
        _call(**{**changes, "out": out})
    assert err.value.field == field, (case, str(err.value))
    assert isinstance(err.value, at.AttnTransitionError)
    assert out.isnan().all(), f"{case}: rows were written before the refusal"


def test_a_plan_carries_its_prompt_length_and_stays_a_tuple():
    plan = layer_plan(CONFIG, LAYER, LAYERS, N)
    assert isinstance(plan, Plan) and plan.n == N and plan == tuple(plan) and hash(plan) == hash(tuple(plan))
    assert layer_plan(CONFIG, LAYERS - 1, LAYERS, N) == () and layer_plan(CONFIG, LAYERS - 1, LAYERS, N).n == N
    again = pickle.loads(pickle.dumps(plan))
    assert again == plan and again.n == N


def test_rows_past_the_prompt_are_accepted_with_its_length():
    """A sequence run again with generated rows (no cache): rows past the prompt are not edited, and
    the prompt's rows come out as in the prompt-only call."""
    longer = _args(N + 12)
    prompt = _args(N)
    transition_rows(prompt["query"], prompt["key"], prompt["value"], prompt["edits"], row_start=0, scaling=0.4,
                    out=prompt["out"])
    transition_rows(longer["query"][:, :N].contiguous(), longer["key"][:, :N].contiguous(),
                    longer["value"][:, :N].contiguous(), prompt["edits"], row_start=0, scaling=0.4,
                    out=longer["out"][:N])
    q, k, v = (torch.cat([t, torch.randn(t.shape[0], 12, D, dtype=t.dtype)], 1)
               for t in (prompt["query"], prompt["key"], prompt["value"]))
    out = torch.full((N + 12, HEADS, D), float("nan"), dtype=torch.float64)
    with pytest.raises(at.InputError, match="planned for a prompt of n=160"):
        transition_rows(q, k, v, prompt["edits"], row_start=0, scaling=0.4, out=out, every_row=True)
    spans = transition_rows(q, k, v, prompt["edits"], row_start=0, scaling=0.4, out=out, prompt_length=N)
    assert spans and spans[-1][1] <= N
    written = ~prompt["out"].isnan().all(-1).all(-1)                       # (n,) rows the prompt call wrote
    assert torch.equal(out[:N][written], prompt["out"][written]) and out[N:].isnan().all()


def test_the_arguments_are_checked_once_per_call_not_per_chunk(monkeypatch):
    calls = []
    check = kernel._check_inputs
    monkeypatch.setattr(kernel, "_check_inputs", lambda *a, **kw: (calls.append(1), check(*a, **kw))[1])
    args = _args()
    spans = transition_rows(args["query"], args["key"], args["value"], args["edits"], row_start=0, scaling=0.4,
                            out=args["out"], budget=Budget(mib=BYTES_ONE_ROW / 2**20))
    rows = sum(c - a for a, c in spans)
    assert rows > 4 and calls == [1]


BYTES_ONE_ROW = kernel.BYTES_PER_ENTRY * HEADS * N                          # chunks of one row

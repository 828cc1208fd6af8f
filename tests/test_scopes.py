"""The scoped form, ``at.enabled``: per thread and per asyncio task, nested, restored in
``finally``, and invisible to every other thread's and task's calls; the model's own
``enable`` / ``disable`` setting is the same after a block as before it.

Every comparison runs the tiny model in float64 against the same call made alone, one after
the other (its sequential result): two runs of the same computation agree to 1e-12 whatever
the threads do, while another config's edit moves the logits by 1e-3 and more (each edited
config is checked to differ from stock, so a block that got another block's config, or none,
fails).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import threading
import warnings

import pytest
import torch

import attn_transition as at
from attn_transition.errors import UsageError
from tiny_models import N, edit_configs, ids, tiny_model

pytestmark = [pytest.mark.patch,        # part of the floor suite (make test-floor)
              pytest.mark.usefixtures("one_thread")]   # tiny models, several threads: one torch thread each

CLASSIC, SRA = edit_configs()
BOTH = "classic:alpha=1,beta=0.5,min_length=0"
OWN = at.ClassicConfig(alpha=0.75, beta=0.25, min_length=0)   # the model's own config, where enabled
TOL = 1e-12
STOCK_SCOPE = "stock scope"            # at.enabled(model, active=False): stock unless a call asks
OUTSIDE = "outside"                    # never inside a block
KINDS = [CLASSIC, SRA, BOTH, STOCK_SCOPE, OUTSIDE]


def _model():
    return tiny_model("llama", seed=0).double()


def _logits(model, x, **kw) -> torch.Tensor:
    with torch.no_grad():
        return model(x, **kw).logits


def _scope(model, kind) -> contextlib.AbstractContextManager:
    """The block a job runs in: a config's, the stock block, or none."""
    if kind is OUTSIDE:
        return contextlib.nullcontext()
    if kind is STOCK_SCOPE:
        return at.enabled(model, active=False)
    return at.enabled(model, kind)


def _close(a: torch.Tensor, b: torch.Tensor) -> bool:
    return (a - b).abs().max().item() <= TOL


def _snapshot(model) -> tuple:
    """What the model's own enable / disable setting is: implementation, state, own options."""
    state = at.get_state(model)
    return (model.config._attn_implementation, at.is_enabled(model),
            None if state is None else (state.options, state.model_enabled))


def _references(model, jobs) -> tuple[list, torch.Tensor]:
    """Each job's sequential result in its block, and what a call outside every block gives."""
    want = []
    for x, kind in jobs:
        with _scope(model, kind):
            want.append(_logits(model, x))
    outside = [_logits(model, x) for x, _ in jobs]
    for (x, kind), edited, plain in zip(jobs, want, outside):
        stock = _logits(model, x, attn_transition=False) if at.is_enabled(model) else plain
        if kind in (STOCK_SCOPE, OUTSIDE) and not at.is_enabled(model):
            continue
        if kind is not STOCK_SCOPE:                  # every edited result differs from stock
            assert (edited - stock).abs().max() > 1e-3, kind
    return want, outside


def _start(model, own):
    if own is not None:
        at.enable(model, own)
    return _snapshot(model)


# -- threads ---------------------------------------------------------------------------------

@pytest.mark.parametrize("own", [None, OWN], ids=["not-enabled", "enabled"])
def test_threads_each_in_its_own_block_get_their_sequential_results(own):
    """4 threads in 4 blocks (three configs, a stock block) and one thread outside every block,
    on one model. Every round all call at once; thread i leaves its block before round i + 1
    (while the others' calls of the round before may still run), and from then on gets what the
    code outside every block gets: the stock model, or the model's own config."""
    model = _model()
    before = _start(model, own)
    jobs = [(ids(1, N, seed=i), kind) for i, kind in enumerate(KINDS)]
    want, outside = _references(model, jobs)
    assert _snapshot(model) == before
    rounds = len(jobs)
    step = threading.Barrier(len(jobs))
    got: dict[int, list] = {}
    errors: list = []

    def work(i: int) -> None:
        x, kind = jobs[i]
        runs = []
        try:
            with contextlib.ExitStack() as block:
                block.enter_context(_scope(model, kind))
                for r in range(rounds):
                    if r == i + 1:
                        block.close()                    # this thread's block exits
                    step.wait()
                    runs.append((r <= i and kind is not OUTSIDE, _logits(model, x)))
        except BaseException as error:                    # reported by the main thread
            errors.append(error)
            step.abort()
        got[i] = runs

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for i, runs in got.items():
        assert len(runs) == rounds
        for r, (inside, run) in enumerate(runs):
            expected = want[i] if inside else outside[i]
            assert _close(run, expected), (KINDS[i], r, inside, (run - expected).abs().max().item())
    assert _snapshot(model) == before
    if own is None:
        assert at.get_state(model) is None and model.config._attn_implementation == "sdpa"
    else:
        at.disable(model)


# -- asyncio tasks -----------------------------------------------------------------------------

@pytest.mark.parametrize("own", [None, OWN], ids=["not-enabled", "enabled"])
def test_asyncio_tasks_each_in_its_own_block_get_their_sequential_results(own):
    """4 tasks in 4 blocks and one outside every block, on one thread: their calls interleave
    between the rounds (the tasks take turns at every await), so a block that were model-wide
    or per thread would be seen by the others' calls."""
    model = _model()
    before = _start(model, own)
    jobs = [(ids(1, N, seed=10 + i), kind) for i, kind in enumerate(KINDS)]
    want, outside = _references(model, jobs)
    rounds = 3

    async def work(i: int, step: asyncio.Barrier) -> list:
        x, kind = jobs[i]
        runs = []
        with _scope(model, kind):
            for _ in range(rounds):
                await step.wait()
                runs.append(_logits(model, x))
                await asyncio.sleep(0)                   # let the others in between two calls
        await step.wait()                               # every block has exited
        runs.append(_logits(model, x))
        return runs

    async def main() -> list:
        step = asyncio.Barrier(len(jobs))
        return await asyncio.gather(*(work(i, step) for i in range(len(jobs))))

    for i, runs in enumerate(asyncio.run(main())):
        for r, run in enumerate(runs):
            expected = want[i] if r < rounds and KINDS[i] is not OUTSIDE else outside[i]
            assert _close(run, expected), (KINDS[i], r, (run - expected).abs().max().item())
    assert _snapshot(model) == before
    if own is not None:
        at.disable(model)


def test_a_task_created_inside_a_block_has_it_until_the_block_exits():
    """asyncio copies the context into a task when it is created: the task's calls run in the
    block; once the block has exited, the task's later calls are the code around it's."""
    model = _model()
    x = ids(1, N, seed=3)
    stock = _logits(model, x)
    with at.enabled(model, SRA):
        edited = _logits(model, x)
    assert (edited - stock).abs().max() > 1e-3

    async def child(inside: asyncio.Event, exited: asyncio.Event) -> tuple:
        first = _logits(model, x)
        inside.set()
        await exited.wait()
        return first, _logits(model, x), at.is_enabled(model)

    async def main() -> tuple:
        inside, exited = asyncio.Event(), asyncio.Event()
        with at.enabled(model, SRA):
            task = asyncio.create_task(child(inside, exited))
            await inside.wait()
        exited.set()
        return await task

    first, later, enabled_later = asyncio.run(main())
    assert _close(first, edited) and _close(later, stock) and not enabled_later
    assert at.get_state(model) is None


def test_a_thread_started_inside_a_block_does_not_inherit_it():
    """threading.Thread copies no context: its calls are the code outside the block's;
    contextvars.copy_context().run carries the block into a thread."""
    model = _model()
    x = ids(1, N, seed=4)
    stock = _logits(model, x)
    seen: dict = {}
    with at.enabled(model, CLASSIC):
        edited = _logits(model, x)
        plain = threading.Thread(target=lambda: seen.update(plain=_logits(model, x)))
        context = contextvars.copy_context()
        carried = threading.Thread(target=lambda: seen.update(carried=context.run(_logits, model, x)))
        for t in (plain, carried):
            t.start()
            t.join()
    assert (edited - stock).abs().max() > 1e-3
    assert _close(seen["plain"], stock) and _close(seen["carried"], edited)
    assert at.get_state(model) is None


# -- nesting, exceptions, enable / disable meanwhile --------------------------------------------

@pytest.mark.parametrize("own", [None, OWN], ids=["not-enabled", "enabled"])
def test_blocks_nest_and_restore_also_when_they_raise(own):
    model = _model()
    x = ids(1, N, seed=5)
    before = _start(model, own)
    (outer_ref, inner_ref), _ = _references(model, [(x, CLASSIC), (x, SRA)])
    plain = _logits(model, x)
    assert (outer_ref - inner_ref).abs().max() > 1e-3
    with at.enabled(model, CLASSIC):
        assert _close(_logits(model, x), outer_ref)
        with at.enabled(model, SRA):
            assert _close(_logits(model, x), inner_ref) and at.get_state(model).config == SRA
        assert _close(_logits(model, x), outer_ref) and at.get_state(model).config == CLASSIC
        with pytest.raises(RuntimeError, match="boom"):
            with at.enabled(model, SRA):
                raise RuntimeError("boom")
        assert _close(_logits(model, x), outer_ref)
        with pytest.raises(at.ConfigError):
            with at.enabled(model, SRA):
                _logits(model, x, attn_transition="classic:alpha=-1")   # a call that raises, in a block
        assert _close(_logits(model, x), outer_ref)
    assert _snapshot(model) == before and _close(_logits(model, x), plain)
    with pytest.raises(RuntimeError, match="boom"):
        with at.enabled(model, SRA):
            raise RuntimeError("boom")
    assert _snapshot(model) == before and _close(_logits(model, x), plain)
    if own is not None:
        at.disable(model)


def test_disable_inside_a_block_is_refused_and_from_elsewhere_waits_for_the_blocks():
    model = _model()
    x = ids(1, N, seed=6)
    stock = _logits(model, x)
    at.enable(model, OWN)
    own = _logits(model, x)
    with at.enabled(model, SRA):
        sra = _logits(model, x)
        with pytest.raises(UsageError, match="inside an open `with at.enabled"):
            at.disable(model)
        assert _close(_logits(model, x), sra)
        seen: dict = {}

        def elsewhere() -> None:
            at.disable(model)                            # another thread: the model's own setting off
            seen["after"] = _logits(model, x)
            seen["enabled"] = at.is_enabled(model)

        t = threading.Thread(target=elsewhere)
        t.start()
        t.join()
        assert _close(seen["after"], stock) and not seen["enabled"]
        assert _close(_logits(model, x), sra) and at.is_enabled(model)      # this block keeps its own
    assert at.get_state(model) is None and model.config._attn_implementation == "sdpa"
    assert (own - stock).abs().max() > 1e-3 and _close(_logits(model, x), stock)


def test_enable_beside_a_block_sets_the_models_own_setting():
    """A block installed the patch; enable from another thread makes the model enabled for
    real: it stays enabled, with enable's config, after the block exits."""
    model = _model()
    x = ids(1, N, seed=7)
    with at.enabled(model, SRA):
        t = threading.Thread(target=at.enable, args=(model, OWN))
        t.start()
        t.join()
        assert at.get_state(model).config == SRA and at.get_state(model).options.config == OWN
    assert at.is_enabled(model) and at.get_state(model).config == OWN
    with at.enabled(model, OWN):
        own = _logits(model, x)
    assert _close(_logits(model, x), own)
    at.disable(model)
    assert at.get_state(model) is None


def test_a_call_keeps_the_settings_it_began_with():
    """Every layer of one call reads the settings the call began with, even when the model's own
    are replaced (by another thread) while the call runs."""
    model = _model()
    at.enable(model, CLASSIC)
    state = at.get_state(model)
    seen: list = []

    def meanwhile(module, args):
        if not seen:
            t = threading.Thread(target=at.enable, args=(model, SRA), kwargs=dict(full_matrix=True,
                                                                                     max_chunk_mib=1))
            t.start()
            t.join()
        seen.append((state.config, state.full_matrix, state.max_chunk_mib))

    layers = model.model.layers
    handles = [layer.register_forward_pre_hook(meanwhile) for layer in layers]
    try:
        _logits(model, ids(1, N, seed=8))
    finally:
        for h in handles:
            h.remove()
    assert seen == [(CLASSIC, False, "auto")] * len(layers)
    assert state.config == SRA and state.full_matrix                    # the next call's
    at.disable(model)


def test_outside_every_block_a_model_not_enabled_ignores_per_call_switches():
    """On a model that was not enabled, a call outside every block with attn_transition=...
    is the stock model's, as before any block opened (a model never enabled ignores it)."""
    model = _model()
    x = ids(1, N, seed=9)
    stock = _logits(model, x)
    seen: dict = {}
    with at.enabled(model, CLASSIC):
        t = threading.Thread(target=lambda: seen.update(out=_logits(model, x, attn_transition=SRA)))
        t.start()
        t.join()
    assert _close(seen["out"], stock)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _close(_logits(model, x, attn_transition=SRA), stock)   # no block: as before


def test_a_copy_taken_inside_a_block_is_not_in_it():
    """copy.deepcopy inside a block on a model that was not enabled: the copy is the stock model
    (no block is open on it) and disable removes its patch without a word."""
    import copy

    model = _model()
    x = ids(1, N, seed=11)
    stock = _logits(model, x)
    with at.enabled(model, CLASSIC):
        twin = copy.deepcopy(model)
        assert not at.is_enabled(twin) and _close(_logits(twin, x), stock)
    assert at.get_state(model) is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        at.disable(twin)
    assert at.get_state(twin) is None and twin.config._attn_implementation == "sdpa"
    assert _close(_logits(twin, x), stock)

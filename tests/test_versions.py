"""Version floors and transformers' renamed cache argument.

The floors setup.cfg declares, the transformers release the floor suite installs (Makefile)
and the README's sentence agree; the installed versions meet them; and no path of the patch
(prefill, decode steps, generate, the per-call switch) goes through transformers' deprecated
``past_key_values`` name where the installed release has the new ``cache`` name.
"""

from __future__ import annotations

import configparser
import contextlib
import logging
import os
import re
import warnings
from pathlib import Path

import pytest
import torch
from packaging.version import Version

import attn_transition as at
from hf_compat import NEW, OLD, cache_kwarg, cache_of
from tiny_models import greedy, ids, left_padded, tiny_model

pytestmark = pytest.mark.patch          # part of the floor suite (make test-floor)

ROOT = Path(__file__).resolve().parent.parent
CLASSIC = at.ClassicConfig(min_length=0, beta=0.5)
N = 150


def _declared_floors() -> dict[str, str]:
    cfg = configparser.ConfigParser(interpolation=None)
    cfg.read(ROOT / "setup.cfg")
    floors = {}
    for line in cfg["options"]["install_requires"].splitlines():
        match = re.fullmatch(r"\s*([A-Za-z0-9_.-]+)\s*>=\s*([0-9][0-9.]*)\s*", line)
        if match:
            floors[match[1].lower()] = match[2]
    return floors


def _makefile_floor() -> str:
    match = re.search(r"^FLOOR_TRANSFORMERS\s*\?=\s*(\S+)\s*$", (ROOT / "Makefile").read_text(), re.M)
    assert match, "the Makefile must set FLOOR_TRANSFORMERS"
    return match[1]


def _makefile_floor_tests() -> set[str]:
    match = re.search(r"^FLOOR_TESTS\s*:?=((?:.*\\\n)*.*)$", (ROOT / "Makefile").read_text(), re.M)
    assert match, "the Makefile must list FLOOR_TESTS"
    return set(match[1].replace("\\", " ").split())


def _release(version: str) -> Version:
    return Version(Version(version).base_version)          # 2.13.0+cpu -> 2.13.0


def test_the_floor_suite_installs_the_declared_transformers_floor():
    assert _makefile_floor() == _declared_floors()["transformers"]


def test_every_file_with_patch_tests_is_in_the_floor_suite():
    marked = {f"tests/{p.name}" for p in (ROOT / "tests").glob("test_*.py")
              if re.search(r"pytest\.mark\.patch\b", p.read_text())}
    assert {"tests/test_patch.py", "tests/test_schedule_conformance.py", "tests/test_config.py"} <= marked
    assert _makefile_floor_tests() == marked


def test_readme_states_the_declared_floors():
    floors = _declared_floors()
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Supported models and versions"):]
    section = section[:section.index("\n## ", 4)]
    assert f"torch >= {floors['torch']}" in section
    assert f"transformers >= {floors['transformers']}" in section


def test_installed_versions_meet_the_declared_floors():
    import transformers

    floors = _declared_floors()
    assert _release(torch.__version__) >= Version(floors["torch"]), torch.__version__
    assert _release(transformers.__version__) >= Version(floors["transformers"]), transformers.__version__


@pytest.mark.skipif("ATTN_TRANSITION_EXPECT_TRANSFORMERS" not in os.environ,
                    reason="only in the floor suite (make test-floor sets ATTN_TRANSITION_EXPECT_TRANSFORMERS)")
def test_the_floor_suite_runs_on_the_floor_release():
    import transformers

    assert transformers.__version__ == os.environ["ATTN_TRANSITION_EXPECT_TRANSFORMERS"]


@contextlib.contextmanager
def _notices_about(word: str):
    """Collect every warning and every transformers log message (WARNING and up) that mentions
    ``word``, for the duration of the block. transformers logs some deprecations once per process,
    so its once-cache is cleared first."""
    from transformers.utils import logging as hf_logging

    found: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record):
            message = record.getMessage()
            if word in message:
                found.append(message)

    clear_once = getattr(getattr(hf_logging, "warning_once", None), "cache_clear", None)
    if clear_once is not None:
        clear_once()
    library_logger = hf_logging.get_logger()
    handler = Collect(level=logging.WARNING)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_warning()
    library_logger.addHandler(handler)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield found
    finally:
        library_logger.removeHandler(handler)
        hf_logging.set_verbosity(verbosity)
    found.extend(str(w.message) for w in caught if word in str(w.message))


def _decode_by_hand(model, x, steps):
    with torch.no_grad():
        out = model(x, use_cache=True)
        cache, token = cache_of(out), out.logits[:, -1:].argmax(-1)
        tokens = [token]
        for _ in range(steps - 1):
            out = model(token, use_cache=True, **{cache_kwarg(model): cache})
            cache, token = cache_of(out), out.logits[:, -1:].argmax(-1)
            tokens.append(token)
    return torch.cat(tokens, 1)


def test_patch_paths_do_not_use_the_deprecated_cache_name():
    model = tiny_model("llama")
    x, mask = left_padded(2, N, row=1, pad=20, seed=7)
    gen = greedy(mask, 4)
    with _notices_about(OLD) as found:
        at.enable(model, CLASSIC)
        edited = model.generate(x, **gen)
        plain = model.generate(x, attn_transition=False, **gen)
        by_hand = _decode_by_hand(model, x[:1], 4)
        at.disable(model)
        stock = model.generate(x, **gen)
    assert found == [], found
    assert cache_of(edited) is not None
    assert torch.equal(by_hand, edited.sequences[:1, N:])           # the hand loop followed the cache
    assert torch.equal(plain.sequences, stock.sequences)


def test_the_notice_check_sees_the_deprecated_name():
    """The check above is not vacuous: on a release that renamed the argument, using the old
    name by hand is reported, both as an input and as an output attribute."""
    model = tiny_model("llama")
    if cache_kwarg(model) == OLD:
        pytest.skip(f"this transformers has no {NEW!r} argument: {OLD!r} is not deprecated here")
    x = ids(1, 40)
    with torch.no_grad():
        cache = cache_of(model(x, use_cache=True))
        with _notices_about(OLD) as as_input:
            model(x[:, -1:], use_cache=True, **{OLD: cache})
        out = model(x, use_cache=True)
        with _notices_about(OLD) as as_attribute:
            getattr(out, OLD)
    assert as_input and as_attribute

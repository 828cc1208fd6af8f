"""The optional extras of the ``attn-transition`` package, and the one check a command makes
before any work: :func:`require`.

The core install (torch, transformers, ...) runs the patch; the evaluation commands need more,
installed as pip extras (``setup.cfg``'s ``extras_require``). :data:`EXTRAS` names the Python
packages each extra brings, by the name they are imported under. A command that needs one calls
:func:`require` first, so a missing package is one line naming the extra to install (a
:class:`MissingExtraError`, exit code 2 at the command line), never a traceback after the work
has started.
"""

from __future__ import annotations

import importlib
import re
from typing import Optional, Sequence

from .errors import UsageError

__all__ = ["EXTRAS", "MissingExtraError", "install_hint", "extra_of", "missing_modules", "require",
           "dependency_error", "missing_extra_message"]

# extra -> the import names of its packages (setup.cfg's extras_require; tests/test_extras.py checks both agree)
EXTRAS: dict[str, tuple[str, ...]] = {
    "models": ("gguf", "accelerate"),
    "eval": ("datasets", "openai", "evaluate", "rouge_score", "matplotlib", "accelerate", "gguf"),
    "contrast": ("peft", "accelerate", "gguf"),
    "lm-eval": ("lm_eval", "matplotlib", "gguf"),
    "notebooks": ("nbclient", "nbformat", "ipykernel", "datasets", "openai", "evaluate", "rouge_score",
                  "matplotlib", "accelerate", "gguf"),
}


# pip's names of the packages whose import name differs
_PIP_NAMES = {"rouge_score": "rouge-score", "lm_eval": "lm_eval[hf,ruler]"}


class MissingExtraError(UsageError):
    """A package of an optional extra is not installed (or cannot be imported)."""


def install_hint(extra: str) -> str:
    """``pip install "attn-transition[extra]"``."""
    return f'pip install "attn-transition[{extra}]"'


def extra_of(module: str) -> Optional[str]:
    """The smallest extra that brings ``module`` (its top-level package), or None."""
    top = module.split(".")[0]
    holding = [name for name, modules in EXTRAS.items() if top in modules]
    return min(holding, key=lambda name: len(EXTRAS[name])) if holding else None


def missing_modules(modules: Sequence[str]) -> list[tuple[str, ImportError]]:
    """``(module, the ImportError)`` for each of ``modules`` that cannot be imported."""
    out = []
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            out.append((module, exc))
    return out


def _why(module: str, exc: ImportError, plural: bool = False) -> str:
    if isinstance(exc, ModuleNotFoundError) and exc.name == module.split(".")[0]:
        return "are not installed" if plural else "is not installed"
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
    return f"cannot be imported ({first})"


def _missing_dependency(module: str, exc: ImportError) -> Optional[str]:
    """The top-level package that ``module`` itself imports and that is not installed (the real
    cause when ``module`` is installed but one of its own dependencies is not), or None."""
    name = exc.name if isinstance(exc, ModuleNotFoundError) else None
    top = name.split(".")[0] if name else None
    return top if top and top != module.split(".")[0] else None


def dependency_error(purpose: str, module: str, exc: ImportError, extra: Optional[str],
                     alternative: str = "") -> MissingExtraError:
    """The one-line error for ``module`` failing to import with ``exc``. When a package that
    ``module`` imports is not installed, it names that package (``"needs accelerate (imported by
    lm_eval), which is not installed"``), not ``module``; either way, the extra to install."""
    dep = _missing_dependency(module, exc)
    if dep is None:
        text = (f"{purpose} needs {module}, which {_why(module, exc)}: "
                + (install_hint(extra) if extra else f"pip install {module.split('.')[0]}"))
    else:
        text = (f"{purpose} needs {dep} (imported by {module.split('.')[0]}), which is not installed: "
                + (install_hint(extra) if extra else f"pip install {dep}"))
    return MissingExtraError(text + (f"; {alternative}" if alternative else ""))


def require(purpose: str, *modules: str, extra: Optional[str] = None, alternative: str = "") -> None:
    """MissingExtraError (one line) unless every one of ``modules`` imports.

    ``purpose`` says what needs them (``"attn-transition judge"``); ``extra`` is the extra to
    install (default: the smallest that brings the first missing module); ``alternative`` is
    another way out, appended after a ``;`` (``"or pass --no-rouge"``). A module that is
    installed but fails on a package it imports itself is worded by :func:`dependency_error`.
    """
    missing = missing_modules(modules)
    if not missing:
        return
    module, exc = missing[0]
    extra = extra or extra_of(module)
    if _missing_dependency(module, exc) is not None:        # installed, but not what it imports
        raise dependency_error(purpose, module, exc, extra, alternative)
    names = ", ".join(m for m, _ in missing)
    packages = " ".join(_PIP_NAMES.get(m.split(".")[0], m.split(".")[0]) for m, _ in missing)
    if extra is None:
        fix = f"pip install {packages}"
    elif len(EXTRAS[extra]) > 1:
        fix = f"{install_hint(extra)} (or only pip install {packages})"
    else:
        fix = install_hint(extra)
    raise MissingExtraError(f"{purpose} needs {names}, which {_why(module, exc, len(missing) > 1)}: {fix}"
                            + (f"; {alternative}" if alternative else ""))


def _named_module(exc: ImportError) -> Optional[str]:
    """The package an ImportError is about: its ``name``, else the first package of an extra
    its message names (libraries word it ``"... requires GGUF>=0.10 ..."``)."""
    name = getattr(exc, "name", None)
    if name:
        return name
    words = set(re.findall(r"[a-z_][a-z0-9_]*", str(exc).lower().replace("-", "_")))
    return next((m for modules in EXTRAS.values() for m in modules if m in words), None)


def missing_extra_message(exc: ImportError) -> Optional[str]:
    """One line for an ImportError of a package that an extra brings (None for any other):
    the CLI's last resort when a command did not check with :func:`require` first."""
    name = _named_module(exc)
    extra = extra_of(name) if name else None
    if extra is None:
        return None
    why = _why(name, exc) if getattr(exc, "name", None) else "is not installed (or too old)"
    return f"{name.split('.')[0]} {why}: {install_hint(extra)}"

"""Run Python in a subprocess where some packages cannot be imported, as if not installed.

Every finder on ``sys.meta_path`` is wrapped so that it finds nothing for a blocked top-level
package: ``import x`` raises ``ModuleNotFoundError`` and ``importlib.util.find_spec("x")`` is
None, which is what a library probing for an optional package sees when it is not installed.
:func:`blocked_for` says which packages a given set of extras leaves out: every package of
every other extra, except those the installed extras (or the core install) pull in themselves.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Iterable, Optional

from packaging.requirements import Requirement

from attn_transition.extras import EXTRAS

ROOT = Path(__file__).resolve().parents[1]
DIST = "attn-transition"
# distribution names of the import names in EXTRAS that differ from them
_DIST_OF = {"rouge_score": "rouge-score", "lm_eval": "lm-eval"}

BOOTSTRAP = r"""
import os, sys
BLOCKED = frozenset(filter(None, os.environ.get("BLOCKED_PACKAGES", "").split(",")))

class _Hidden:
    def __init__(self, finder):
        self._finder = finder
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            return None
        return self._finder.find_spec(name, path, target)
    def __getattr__(self, attr):
        return getattr(self._finder, attr)

sys.meta_path[:] = [_Hidden(f) for f in sys.meta_path]
"""


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _closure(dist: str, extras: Iterable[str] = ()) -> set[str]:
    """The normalised names of ``dist`` and every installed distribution it requires (with ``extras``)."""
    seen: set[str] = set()
    todo: list[tuple[str, tuple[str, ...]]] = [(dist, tuple(extras))]
    while todo:
        name, wanted = todo.pop()
        key = _norm(name)
        if (key, wanted) in seen:
            continue
        seen.add((key, wanted))  # type: ignore[arg-type]
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        for text in requires:
            req = Requirement(text)
            envs = [{"extra": e} for e in wanted] or [{"extra": ""}]
            if req.marker is None or any(req.marker.evaluate(env) for env in envs):
                todo.append((req.name, tuple(sorted(req.extras))))
    return {name for name, _ in seen}  # type: ignore[misc]


def blocked_for(extras: Iterable[str]) -> list[str]:
    """Import names of the extras' packages that an install with only ``extras`` would lack."""
    installed = _closure(DIST, extras)
    every = {m for modules in EXTRAS.values() for m in modules}
    return sorted(m for m in every if _norm(_DIST_OF.get(m, m)) not in installed)


def run_blocked(code: str, blocked: Iterable[str], *, cwd: Optional[Path] = None,
                env: Optional[dict] = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """``python -c BOOTSTRAP + code`` with ``blocked`` packages unimportable."""
    full_env = {**os.environ, **(env or {}), "BLOCKED_PACKAGES": ",".join(blocked),
                "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "tests"), os.environ.get("PYTHONPATH")]))}
    return subprocess.run([sys.executable, "-c", BOOTSTRAP + "\n" + code], cwd=cwd or ROOT, env=full_env,
                          capture_output=True, text=True, timeout=timeout)


def cli_calls(calls: list[list[str]], blocked: Iterable[str], **kwargs) -> list[dict]:
    """Run ``attn_transition.cli.main(argv)`` for each argv in one blocked subprocess; for each,
    ``{"code", "out", "err"}``."""
    code = f"""
import contextlib, io, json, sys
from attn_transition.cli import main
results = []
for argv in {json.dumps(calls)}:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        except BaseException as exc:
            import traceback
            traceback.print_exc()
            code = "raised " + type(exc).__name__
    results.append({{"code": code, "out": out.getvalue(), "err": err.getvalue()}})
sys.__stdout__.write("\\n@@RESULTS@@" + json.dumps(results))
"""
    proc = run_blocked(code, blocked, **kwargs)
    assert "@@RESULTS@@" in proc.stdout, proc.stderr[-3000:]
    return json.loads(proc.stdout.split("@@RESULTS@@", 1)[1])

"""Run ``lint-imports`` (import-linter) on the installed package's tree.

setup.cfg maps three folders into one package (``attn_transition/``, ``patches/`` as
``attn_transition.patches``, ``evaluation/`` as ``attn_transition.evaluation``); import-linter
(grimp) reads a package from one folder. This copies the Python files into that installed shape
in a temporary folder, runs from there (lint-imports puts its working folder first on the path) and runs the ``lint-imports`` next to this
interpreter with setup.cfg's ``[importlinter]`` contracts. Exits with lint-imports' status.

    .venv/bin/python .ci/lint_imports.py [lint-imports options, e.g. --verbose]
"""

from __future__ import annotations

import configparser
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def package_dirs(setup_cfg: Path) -> dict[str, Path]:
    """setup.cfg's ``package_dir``: package name -> folder."""
    parser = configparser.ConfigParser()
    parser.read(setup_cfg)
    lines = [line.strip() for line in parser["options"]["package_dir"].splitlines() if line.strip()]
    return {name.strip(): ROOT / folder.strip() for name, folder in (line.split("=") for line in lines)}


def mirror(target: Path, setup_cfg: Path = ROOT / "setup.cfg") -> Path:
    """Copy each mapped folder's ``.py`` files to where the package puts them, under ``target``."""
    # Parents first, so a subpackage's folder is copied into its parent's copy.
    for name, folder in sorted(package_dirs(setup_cfg).items()):
        dest = target.joinpath(*name.split("."))
        shutil.copytree(folder, dest, dirs_exist_ok=True,
                        ignore=lambda where, names: [n for n in names if not (n.endswith(".py") or
                                                                             Path(where, n).is_dir())
                                                     or n == "__pycache__"])
    return target


def main(argv: list[str]) -> int:
    lint = Path(sys.executable).with_name("lint-imports")
    with tempfile.TemporaryDirectory(prefix="attn-transition-layout-") as tmp:
        mirror(Path(tmp))
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [tmp, os.environ.get("PYTHONPATH")])))
        return subprocess.run([str(lint), "--no-cache", "--config", str(ROOT / "setup.cfg"), *argv],
                              cwd=tmp, env=env).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""The layering (docs/design.md, "How it is built"): the import contracts in setup.cfg hold, and
importing the core or the vLLM plugin's package loads no integration and nothing of transformers."""

from __future__ import annotations

import configparser
import subprocess
import sys
from pathlib import Path

from skips import need

ROOT = Path(__file__).resolve().parent.parent


def _python(code: str) -> str:
    """Run ``code`` in a fresh interpreter (this one's environment); its stdout."""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_import_contracts_hold():
    """``lint-imports`` over setup.cfg's contracts (the same run as ``make test``'s)."""
    need("importlinter", "pip install import-linter (the dev extra)")
    done = subprocess.run([sys.executable, str(ROOT / ".ci" / "lint_imports.py"), "--no-logo"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout, done.stdout


def test_the_core_contract_names_every_core_module():
    """A core module missing from the contract's list would be free to import anything."""
    parser = configparser.ConfigParser()
    parser.read(ROOT / "setup.cfg")
    listed = set(parser["importlinter:contract:core"]["source_modules"].split())
    modules = {f"attn_transition.{p.stem}" for p in (ROOT / "attn_transition").glob("*.py") if p.stem != "__init__"}
    packages = {f"attn_transition.{p.name}" for p in (ROOT / "attn_transition").iterdir()
                if (p / "__init__.py").exists()}
    assert listed == modules | packages


def test_importing_the_core_loads_no_integration_and_no_transformers():
    out = _python("import sys, attn_transition as at; at.ClassicConfig(); "
                  "print(sorted(m for m in sys.modules if m.startswith(('attn_transition.patches', "
                  "'attn_transition.evaluation', 'transformers'))))")
    assert out.strip() == "[]"


def test_the_vllm_plugin_package_loads_nothing_of_the_transformers_integration():
    """vLLM imports ``attn_transition.patches.vllm`` in every process it starts; the package above
    it must not pull in the transformers integration (and with it transformers' modeling code)."""
    out = _python("import sys, attn_transition.patches.vllm as v; v.ADDITIONAL_CONFIG_KEY; "
                  "print(sorted(m for m in sys.modules if m.startswith(('attn_transition.patches.transformers', "
                  "'transformers'))))")
    assert out.strip() == "[]"


def test_the_lazy_names_are_the_integrations_own():
    import attn_transition as at
    import attn_transition.patches as patches
    from attn_transition import budget, families
    from attn_transition.patches import transformers as integration

    for name in ("enable", "disable", "enabled", "is_enabled", "get_state"):
        assert getattr(at, name) is getattr(integration, name) is getattr(patches, name)
    assert at.FAMILIES is patches.FAMILIES is families.FAMILIES
    assert patches.DEFAULT_MAX_CHUNK_MIB == budget.DEFAULT_MAX_CHUNK_MIB
    assert set(patches.__all__) <= set(dir(patches))


def test_the_keyword_names_agree_across_engines():
    """The vLLM plugin spells its keys itself; they must be the core's (one name per engine)."""
    from attn_transition import keywords
    from attn_transition.patches import vllm

    assert vllm.ADDITIONAL_CONFIG_KEY == keywords.ADDITIONAL_CONFIG_KEY == keywords.SWITCH_KWARG


def test_the_vllm_platform_table_picks_the_current_platforms_row():
    """One table for registration and the engine-start check (patches/vllm/platforms.py); a
    platform without a row gets none (the engine check then refuses it)."""
    from types import SimpleNamespace

    from attn_transition.patches.vllm.platforms import PLATFORMS, current_platform_backend

    def platform(name):
        return SimpleNamespace(**{f"is_{kind}": (lambda kind=kind: kind == name) for kind in PLATFORMS})

    for name, row in PLATFORMS.items():
        assert current_platform_backend(platform(name)) == (name, row)
    assert current_platform_backend(platform("tpu")) is None


def test_the_acyclic_contract_covers_both_integrations():
    """The no-circle contract walks the core and both integrations (imports inside functions
    count, so a circle cannot hide in a function-level import); none of them is skipped."""
    parser = configparser.ConfigParser()
    parser.read(ROOT / "setup.cfg")
    contract = parser["importlinter:contract:acyclic"]
    assert contract["type"] == "acyclic_siblings"
    ancestors = set(contract["ancestors"].split())
    assert {"attn_transition", "attn_transition.patches.transformers", "attn_transition.patches.vllm"} <= ancestors
    skipped = set(contract.get("skip_descendants", "").split())
    assert not skipped & {"attn_transition.patches", "attn_transition.patches.transformers",
                          "attn_transition.patches.vllm"}, skipped

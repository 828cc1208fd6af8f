"""The README runs as written, and every local link of the documentation leads somewhere.

* Each ```python block of README.md runs, in a fresh interpreter, in an empty folder. A block
  that loads a real model is marked by the comment ``<!-- test: slow (why) -->`` on the line
  before it and runs in the slow stage (``-m slow``); a block that cannot run here (a GPU,
  the hub) is marked ``<!-- not-run: why -->`` and must be listed in ``NOT_RUN`` below, so none
  is skipped silently.
* Each ``attn-transition`` command line in the README's ```bash blocks parses with that
  command's own parser (flags and values as written; nothing is run).
* Each relative link in README.md and docs/*.md points to a file that exists, and a link with
  ``#anchor`` to a heading of that file.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import pytest

from attn_transition.errors import UsageError

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))

# Blocks that are deliberately not run, by their first code line -> the reason in the README.
NOT_RUN: dict[str, str] = {}

_FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```", re.S | re.M)
_MARKER = re.compile(r"<!--\s*(test:\s*slow|not-run:)\s*(.*?)\s*-->")


@dataclass(frozen=True)
class Block:
    lang: str
    code: str
    line: int                 # 1-based line of the opening fence
    marker: Optional[str]     # "slow", "not-run" or None
    reason: str

    @property
    def first_line(self) -> str:
        return next((ln for ln in self.code.splitlines() if ln.strip()), "")

    @property
    def id(self) -> str:
        return f"README.md:{self.line}"


def blocks(text: str) -> list[Block]:
    """Fenced code blocks with the marker comment on the last non-empty line before each."""
    out = []
    for m in _FENCE.finditer(text):
        before = [ln for ln in text[:m.start()].splitlines() if ln.strip()]
        found = _MARKER.search(before[-1]) if before else None
        marker = None if found is None else ("slow" if found.group(1).startswith("test") else "not-run")
        reason = "" if found is None else found.group(2).strip("() ")
        out.append(Block(m.group(1), m.group(2), text.count("\n", 0, m.start()) + 1, marker, reason))
    return out


README_BLOCKS = blocks(README.read_text(encoding="utf-8"))
PYTHON = [b for b in README_BLOCKS if b.lang == "python"]
FAST = [b for b in PYTHON if b.marker is None]
SLOW = [b for b in PYTHON if b.marker == "slow"]


def test_every_python_block_is_run_or_listed_as_not_run():
    assert len(PYTHON) == len(FAST) + len(SLOW) + sum(b.marker == "not-run" for b in PYTHON)
    not_run = {b.first_line: b.reason for b in PYTHON if b.marker == "not-run"}
    assert not_run == NOT_RUN, "a README block marked not-run must be listed in NOT_RUN (and vice versa)"
    assert all(b.reason for b in PYTHON if b.marker), "every marker says why"
    assert FAST and SLOW, "the README has a block without a model and one with the embedded model"


def test_markers_only_precede_python_blocks():
    text = README.read_text(encoding="utf-8")
    assert len(_MARKER.findall(text)) == sum(b.marker is not None for b in PYTHON)


def _run(block: Block, tmp_path: Path, timeout: int) -> subprocess.CompletedProcess:
    script = tmp_path / "block.py"
    script.write_text(block.code, encoding="utf-8")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"}
    return subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.parametrize("block", FAST, ids=[b.id for b in FAST])
def test_python_block_runs(block, tmp_path):
    done = _run(block, tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip(), "the example prints what it shows"


@pytest.mark.slow
@pytest.mark.parametrize("block", SLOW, ids=[b.id for b in SLOW])
def test_python_block_with_a_real_model_runs(block, tmp_path):
    done = _run(block, tmp_path, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip(), "the example prints what it shows"


# --------------------------------------------------------------------------- command lines

def _command_lines(block: Block) -> list[list[str]]:
    """``attn-transition ...`` invocations of a shell block, continuations joined, comments and
    leading ``NAME=value`` assignments dropped."""
    joined = re.sub(r"\\\n\s*", " ", block.code)
    lines = []
    for raw in joined.splitlines():
        words = shlex.split(raw, comments=True)
        while words and re.fullmatch(r"[A-Z_]+=\S*", words[0]):
            words = words[1:]
        if words and words[0] == "attn-transition":
            lines.append(words[1:])
    return lines


COMMAND_LINES = [(b.id, argv) for b in README_BLOCKS if b.lang == "bash" for argv in _command_lines(b)]


def test_the_readme_shows_every_workflow():
    shown = {argv[0] for _, argv in COMMAND_LINES}
    assert {"bench", "lm-eval", "generate", "judge", "report", "clues"} <= shown


@pytest.mark.parametrize("where, argv", COMMAND_LINES, ids=[f"{w}:{a[0]}" for w, a in COMMAND_LINES])
def test_command_line_parses(where, argv):
    from attn_transition.cli import command_parser
    from attn_transition.commands import get_command

    command = get_command(argv[0])
    if command.passthrough:                 # lm-eval hands its arguments to lm_eval's own parser
        return
    parser = command_parser(command)
    try:
        parser.parse_args(argv[1:])
    except SystemExit as exc:              # pragma: no cover - the failure message is the point
        pytest.fail(f"{where}: attn-transition {' '.join(argv)} does not parse (exit {exc.code})")


# --------------------------------------------------------------------------- links

_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def _slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation other than '-' and '_' dropped,
    spaces to '-'."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower().replace("`", ""))
    return text.replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    text = re.sub(r"^```.*?^```", "", path.read_text(encoding="utf-8"), flags=re.S | re.M)
    return {_slug(m.group(1)) for m in re.finditer(r"^#{1,6}\s+(.*)$", text, re.M)}


def _links(path: Path) -> list[str]:
    text = re.sub(r"^```.*?^```", "", path.read_text(encoding="utf-8"), flags=re.S | re.M)
    return [t for t in _LINK.findall(text) if not re.match(r"[a-z]+:", t)]


DOC_FILES = [README, *DOCS]


@pytest.mark.parametrize("doc", DOC_FILES, ids=[str(p.relative_to(ROOT)) for p in DOC_FILES])
def test_local_links_lead_to_files_and_headings(doc):
    broken = []
    for target in _links(doc):
        file_part, _, anchor = target.partition("#")
        dest = (doc.parent / file_part).resolve() if file_part else doc
        if not dest.exists():
            broken.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
            broken.append(f"{target}: no heading #{anchor} in {dest.name}")
    assert not broken, broken


def test_slugs_follow_github():
    assert _slug("XSum generation in the seed's format: `attn-transition generate`") == \
        "xsum-generation-in-the-seeds-format-attn-transition-generate"
    assert _slug("Differences from the reference (deliberate)") == "differences-from-the-reference-deliberate"


def test_the_readme_links_the_design_notes_and_names_the_sample_data():
    text = README.read_text(encoding="utf-8")
    assert "docs/design.md#how-it-is-built" in text
    assert "how-it-is-built" in _anchors(ROOT / "docs" / "design.md")
    assert "evaluation/data/xsum_sample.jsonl" in text and (ROOT / "evaluation/data/xsum_sample.jsonl").exists()


# --------------------------------------------------------------------------- attn_transition.models

def test_the_public_models_module_loads_a_folder_and_finds_converted_models(tmp_path):
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig, PreTrainedTokenizerFast
    from tokenizers import Tokenizer, models as tok_models

    from attn_transition import models

    assert models.names() == ["smollm2-135m", "gemma3-270m"] and models.DEFAULT_MODEL == "smollm2-135m"
    # a converted model already in the cache is returned as is (no package, no conversion needed)
    cache = tmp_path / "cache"
    (cache / "gemma3-270m").mkdir(parents=True)
    (cache / "gemma3-270m" / "config.json").write_text("{}")
    assert models.path("gemma3-270m", cache=cache) == cache / "gemma3-270m"
    with pytest.raises(UsageError, match="unknown embedded model"):
        models.path("smollm3", cache=cache)

    folder = tmp_path / "tiny"
    config = LlamaConfig(vocab_size=16, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, eos_token_id=2)
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(folder)
    vocab = {"[UNK]": 0, "<s>": 1, "</s>": 2, **{w: i + 3 for i, w in enumerate("abcdefghijklm")}}
    PreTrainedTokenizerFast(tokenizer_object=Tokenizer(tok_models.WordLevel(vocab, unk_token="[UNK]")),
                            unk_token="[UNK]", eos_token="</s>").save_pretrained(folder)
    model, tokenizer = models.load(str(folder))
    assert not model.training and tokenizer.padding_side == "left" and tokenizer.pad_token == "</s>"
    assert model.config.num_hidden_layers == 2

"""``attn-transition``: the command-line entry. Thin: each subcommand lives in its own
module (``attn_transition.evaluation.*``) exposing ``add_arguments(parser)`` and
``run(args) -> int``; modules are imported only when their subcommand runs.

Errors that are the user's to fix (:class:`~attn_transition.errors.AttnTransitionError`)
print one line and exit with code 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Optional, Sequence

from .errors import AttnTransitionError, did_you_mean

# name -> (module, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("attn_transition.evaluation.demo", "answer one long prompt with and without the transition"),
    "bench": ("attn_transition.evaluation.bench.cli", "long-context benchmark: stock vs transition on the same prompts"),
    "generate": ("attn_transition.evaluation.generate", "XSum-style generation into the seed's JSON format"),
    "judge": ("attn_transition.evaluation.judge", "score generations with an LLM judge (OpenAI-compatible API)"),
    "report": ("attn_transition.evaluation.report", "honest report over judged scores (CIs, oracle labelled)"),
    "clues": ("attn_transition.evaluation.clues.cli", "elusive clues: attention contrast, token dropout, LoRA, QA"),
    "convert": ("attn_transition.evaluation.models", "convert an embedded GGUF model once into the local cache"),
    "lm-eval": ("attn_transition.evaluation.harness", "lm-evaluation-harness's CLI with the model 'attn-transition' registered"),
}

EPILOG = """quick start:
  attn-transition demo                              # SmolLM2 answers one long prompt, stock vs transition
  attn-transition bench                             # default benchmark (SmolLM2, CPU, < 10 min)
  attn-transition bench --model gemma3-270m --config classic --config sra
  attn-transition generate data.jsonl -o out.json --buckets 800,1200 --per-bucket 20
  attn-transition judge out.json --judge-model gpt-4o --dry-run
  attn-transition report out.scores.json --markdown report.md
  attn-transition clues                             # elusive-clues pipeline end to end
"""


class OneLineParser(argparse.ArgumentParser):
    """argparse's own errors (a bad number, an unknown option) as one line, exit code 2, like the
    library's errors; ``--help`` still prints the whole usage."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="attn-transition", description="Attention Transition for Hugging Face transformers.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in SUBCOMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def _load(name: str):
    module = importlib.import_module(SUBCOMMANDS[name][0])
    return module


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if not argv or argv[0] in ("-h", "--help"):
        parser.print_help()
        return 0
    name = argv[0]
    if name not in SUBCOMMANDS:
        extra = did_you_mean(name, SUBCOMMANDS)
        print(f"attn-transition: error: unknown command {name!r}{extra}; commands: {', '.join(SUBCOMMANDS)}",
              file=sys.stderr)
        return 2
    module = _load(name)
    sub = OneLineParser(prog=f"attn-transition {name}", description=SUBCOMMANDS[name][1],
                        epilog=getattr(module, "EPILOG", None), formatter_class=argparse.RawDescriptionHelpFormatter)
    module.add_arguments(sub)
    try:
        if getattr(module, "PASSTHROUGH", False):   # hands its arguments, --help included, to another CLI
            args = argparse.Namespace(passthrough=argv[1:])
        else:
            args = sub.parse_args(argv[1:])  # exits 2 (one line) on its own errors, 0 after --help
    except SystemExit as exc:
        return int(exc.code or 0)
    try:
        return int(module.run(args) or 0)
    except AttnTransitionError as exc:
        print(f"attn-transition {name}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"attn-transition {name}: interrupted; finished work was saved", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

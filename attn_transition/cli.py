"""``attn-transition``: the command-line entry. Thin: the subcommands are the registered
:class:`~attn_transition.commands.Command` objects (see :mod:`attn_transition.commands`);
a command's module is imported only when it runs.

Errors that are the user's to fix (:class:`~attn_transition.errors.AttnTransitionError`)
print one line, worded with the command's flags, and exit with code 2; so does a package of an
optional extra that a command finds missing (naming the extra to install); Ctrl-C exits 130
(a command that keeps finished work says itself what it kept; this module only says "interrupted").
Every option's help shows its default.
"""

from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from .commands import Command, all_commands, get_command
from .errors import AttnTransitionError
from .extras import missing_extra_message

EPILOG = """quick start:
  attn-transition demo                              # SmolLM2 answers one long prompt, stock vs transition
  attn-transition bench                             # default benchmark (SmolLM2, CPU, < 10 min)
  attn-transition bench --model gemma3-270m --config classic --config sra
  attn-transition generate data.jsonl -o out.json --buckets 800,1200 --per-bucket 20
  attn-transition judge out.json --judge-model gpt-4o --dry-run
  attn-transition report out.scores.json --markdown report.md
  attn-transition clues                             # elusive-clues pipeline end to end
"""


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions and epilogs as written; every option's help ends with its default, unless
    the help already speaks of it or there is none to show (a switch, no default)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        positional = not action.option_strings and action.nargs not in (argparse.OPTIONAL, argparse.ZERO_OR_MORE)
        nothing_to_show = default is None or default is argparse.SUPPRESS or isinstance(default, bool) \
            or default in ([], ())
        if "default" in text.lower() or positional or nothing_to_show:
            return text
        if isinstance(default, (list, tuple)):
            shown = ",".join(map(str, default)).replace("%", "%%")
        else:
            shown = "%(default)s"
        return f"{text} (default {shown})".lstrip()


class OneLineParser(argparse.ArgumentParser):
    """argparse's own errors (a bad number, an unknown option) as one line, exit code 2, like the
    library's errors; ``--help`` still prints the whole usage, every default shown
    (:class:`HelpFormatter`, also for the sub-parsers a command adds)."""

    def __init__(self, *args, formatter_class: type = HelpFormatter, **kwargs) -> None:
        super().__init__(*args, formatter_class=formatter_class, **kwargs)

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser(commands: Sequence[Command]) -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="attn-transition", description="Attention Transition for Hugging Face transformers.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command in commands:
        sub.add_parser(command.name, help=command.help, add_help=False)
    return parser


def command_parser(command: Command) -> argparse.ArgumentParser:
    """The parser of one command (``attn-transition NAME``), its options added."""
    parser = OneLineParser(prog=f"attn-transition {command.name}", description=command.help,
                           epilog=command.epilog)
    command.add_arguments(parser)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        build_parser(all_commands()).print_help()
        return 0
    try:
        command = get_command(argv[0])
    except AttnTransitionError as exc:
        print(f"attn-transition: error: {exc}", file=sys.stderr)
        return 2
    prog = f"attn-transition {command.name}"
    parser = command_parser(command)
    try:
        if command.passthrough:           # hands its arguments, --help included, to another CLI
            args = argparse.Namespace(passthrough=argv[1:])
        else:
            args = parser.parse_args(argv[1:])  # exits 2 (one line) on its own errors, 0 after --help
    except SystemExit as exc:
        return int(exc.code or 0)
    try:
        return int(command.run(args) or 0)
    except AttnTransitionError as exc:
        print(f"{prog}: error: {_unprefixed(command.word(exc), prog)}", file=sys.stderr)
        return 2
    except ImportError as exc:            # a package of an extra the command did not check for first
        message = missing_extra_message(exc)
        if message is None:
            raise
        print(f"{prog}: error: {_unprefixed(message, prog)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130


def _unprefixed(message: str, prog: str) -> str:
    """``message`` without a leading ``prog`` that the line's own ``prog: error:`` already says (a
    missing extra is worded "attn-transition judge needs openai ..." for every caller)."""
    return message[len(prog) + 1:] if message.startswith(prog + " ") else message


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

"""Every flag of every command has help text, and its help shows the default."""

from __future__ import annotations

import argparse

import pytest

from attn_transition.cli import HelpFormatter, command_parser, main
from attn_transition.commands import all_commands


def _actions(parser: argparse.ArgumentParser, where: str):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _actions(sub, f"{where} {name}")
        elif not isinstance(action, argparse._HelpAction):
            yield where, action


def _shows_a_default(action: argparse.Action) -> bool:
    default = action.default
    return not (default is None or default is argparse.SUPPRESS or isinstance(default, bool) or default in ([], ()))


COMMANDS = [c for c in all_commands() if not c.passthrough]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c.name)
def test_every_flag_has_help_and_shows_its_default(command):
    missing, no_default = [], []
    for where, action in _actions(command_parser(command), command.name):
        flag = f"{where} {'/'.join(action.option_strings) or action.dest}"
        if not (action.help or "").strip():
            missing.append(flag)
        elif _shows_a_default(action):
            text = HelpFormatter("x")._get_help_string(action) % {"default": action.default}
            if "default" not in text.lower():
                no_default.append(flag)
    assert not missing, f"flags without help: {missing}"
    assert not no_default, f"flags whose help hides the default: {no_default}"


def test_defaults_appear_in_the_printed_help(capsys):
    assert main(["clues", "finetune", "--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    for text in ("--grad-accum GRAD_ACCUM gradient accumulation", "(default 1)", "--lora-alpha", "(default 32)",
                 "(default linear)", "(default 256)", "(default 5)"):
        assert text in out, text
    assert main(["judge", "--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    for text in ("seconds per request (default 120.0)", "(default 6)", "requests in flight at once (default 4)",
                 "(default 2)", "in [0, 2] (default 0.0)"):
        assert text in out, text
    assert main(["convert", "--help"]) == 0
    assert "--cache-dir" in capsys.readouterr().out



def test_report_json_help_wording(capsys):
    assert main(["report", "--help"]) == 0
    out = capsys.readouterr().out
    assert "see --help above" not in out
    assert "schema is printed at the end of this help" in " ".join(out.split())

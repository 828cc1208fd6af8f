"""The ``attn-transition`` entry point itself: command table, help, one-line errors."""

from __future__ import annotations

import pytest

from attn_transition.cli import main
from attn_transition.commands import command_names


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_help_lists_every_command_with_quick_start_examples(capsys):
    code, out, _ = _run(capsys, "--help")
    assert code == 0
    for name in command_names():
        assert name in out
    assert "quick start:" in out and "attn-transition bench" in out


def test_unknown_command_suggests_the_nearest(capsys):
    code, _, err = _run(capsys, "bnech")
    assert code == 2 and err.count("\n") == 1 and "did you mean 'bench'?" in err


@pytest.mark.parametrize("argv, message", [
    (["bench", "--per-cell", "x"], "argument --per-cell: invalid"),
    (["bench", "--no-such-option"], "unrecognized arguments: --no-such-option"),
    (["clues", "augment", "in.csv", "-o", "out.csv", "--alpha", "high"], "argument --alpha"),
    (["report"], "the following arguments are required"),
])
def test_argument_errors_are_one_line_with_exit_2(capsys, argv, message):
    code, out, err = _run(capsys, *argv)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and message in err and "--help" in err, err
    assert err.startswith(f"attn-transition {argv[0]}"), err


def test_subcommand_help_exits_0(capsys):
    code, out, _ = _run(capsys, "bench", "--help")
    assert code == 0 and "--per-cell" in out


def test_registry_refuses_a_second_module_for_one_name_and_words_errors_with_flags():
    from attn_transition import commands

    def run(args):
        return 0

    run.__module__ = "somewhere.else"
    with pytest.raises(ValueError, match="'bench' is already registered by"):
        commands.register_command("bench", help="x", add_arguments=lambda p: None, run=run)
    cmd = commands.Command("probe", help="probe", add_arguments=lambda p: None, run=run,
                           flags={"lengths": "--lengths", "max_new_tokens": "--max-new-tokens"})
    from attn_transition.errors import UsageError

    assert cmd.word(UsageError("lengths_x and lengths must be positive", field="lengths")) == \
        "lengths_x and --lengths must be positive"
    assert cmd.word(UsageError("lengths must be positive")) == "lengths must be positive"   # no field: as is
    with pytest.raises(ValueError, match="one non-empty line"):
        commands.Command("bad", help="two\nlines", add_arguments=lambda p: None, run=run)


def test_a_command_registered_in_process_runs_and_its_library_errors_name_flags(capsys):
    from attn_transition import commands
    from attn_transition.errors import UsageError

    def add(parser):
        parser.add_argument("--lengths")

    def run(args):
        raise UsageError(f"lengths {args.lengths!r} must be a list of integers", field="lengths")

    commands.register_command("probe-cmd", help="a test command", add_arguments=add, run=run,
                              flags={"lengths": "--lengths"})
    try:
        code, _, err = _run(capsys, "probe-cmd", "--lengths", "x")
        assert code == 2 and err == "attn-transition probe-cmd: error: --lengths 'x' must be a list of integers\n"
    finally:
        commands._COMMANDS.pop("probe-cmd")

"""The ``attn-transition`` entry point itself: command table, help, one-line errors."""

from __future__ import annotations

import pytest

from attn_transition.cli import SUBCOMMANDS, main


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_help_lists_every_command_with_quick_start_examples(capsys):
    code, out, _ = _run(capsys, "--help")
    assert code == 0
    for name in SUBCOMMANDS:
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

"""The registry of ``attn-transition`` subcommands.

A command module registers itself when it is imported::

    register_command("bench", help="long-context benchmark", add_arguments=add_arguments, run=run,
                     epilog=EPILOG)

and is found through the entry-point group ``attn_transition.commands`` (``name = module``
in the package metadata), so this package never names the modules above it, a module is
imported only when its command runs (or when ``--help`` lists them all), and another
installed package can add a command the same way.

``run(args)`` returns an exit code. A library error (:class:`~attn_transition.errors.AttnTransitionError`)
names the field that is wrong; a command maps field names to its flags with ``flags=``
(``{"lengths": "--lengths"}``), and the CLI prints the message with the flag in place of the
error's ``field``.
"""

from __future__ import annotations

import argparse
import importlib
import re
from dataclasses import dataclass, field
from importlib import metadata
from typing import Callable, Mapping, Optional

from .errors import UsageError, did_you_mean

GROUP = "attn_transition.commands"

__all__ = ["Command", "GROUP", "register_command", "get_command", "command_names", "all_commands"]


@dataclass(frozen=True)
class Command:
    """One subcommand.

    Args:
        name: what follows ``attn-transition`` on the command line.
        help: one line for the command list.
        add_arguments: adds the command's options to its parser.
        run: runs the command on the parsed arguments; returns the exit code.
        epilog: examples printed under ``--help``.
        passthrough: hand the raw arguments (``--help`` included) to ``run`` as
            ``args.passthrough`` instead of parsing them (a command that wraps another CLI).
        flags: library field name -> command-line flag, used to word library errors.
    """

    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], Optional[int]]
    epilog: Optional[str] = None
    passthrough: bool = False
    flags: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[a-z][a-z0-9-]*", self.name):
            raise ValueError(f"command name {self.name!r}: use lower-case letters, digits and '-'")
        if not self.help or "\n" in self.help:
            raise ValueError(f"command {self.name!r}: help must be one non-empty line")

    def word(self, error: Exception) -> str:
        """The message of a library error, its field (``error.field``, see
        :class:`~attn_transition.errors.AttnTransitionError`) worded as this command's flag:
        ``lengths must be ...`` -> ``--lengths must be ...``."""
        message, named = str(error), getattr(error, "field", None)
        for name in (named,) if isinstance(named, str) else named or ():
            if name in self.flags:
                message = re.sub(rf"(?<![\w-]){re.escape(name)}(?![\w-])", self.flags[name], message, count=1)
        return message


_COMMANDS: dict[str, Command] = {}


def register_command(name: str, **kwargs) -> Command:
    """Register (and return) the command ``name``. A second registration of the same name
    from another module is an error; re-importing the same module is not."""
    command = Command(name=name, **kwargs)
    old = _COMMANDS.get(name)
    if old is not None and getattr(old.run, "__module__", None) != getattr(command.run, "__module__", None):
        raise ValueError(f"command {name!r} is already registered by {old.run.__module__}")
    _COMMANDS[name] = command
    return command


def _entry_points() -> dict[str, str]:
    """name -> module, from the installed packages' metadata."""
    return {ep.name: ep.value for ep in metadata.entry_points(group=GROUP)}


def command_names() -> list[str]:
    """Every command's name: the installed ones and any registered in this process."""
    return sorted(set(_entry_points()) | set(_COMMANDS))


def get_command(name: str) -> Command:
    """The command ``name``, importing its module on first use. UsageError (with the nearest
    name) when there is none."""
    if name not in _COMMANDS:
        module = _entry_points().get(name)
        if module is None:
            raise UsageError(f"unknown command {name!r}{did_you_mean(name, command_names())}; "
                             f"commands: {', '.join(command_names())}")
        importlib.import_module(module)
        if name not in _COMMANDS:
            raise UsageError(f"the entry point {name} = {module} registers no command {name!r}; "
                             f"reinstall the package that provides it")
    return _COMMANDS[name]


def all_commands() -> list[Command]:
    """Every command, each module imported (for the command list under ``--help``)."""
    return [get_command(name) for name in command_names()]

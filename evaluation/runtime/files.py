"""Input files read one way, output files written one way.

Reading: every input file of every command goes through :func:`read_text` (and
:func:`read_json` / :func:`read_jsonl` on top of it), which turn a missing file, a directory,
a binary or non-UTF-8 file (a UTF-16 export, say), an empty file and malformed JSON into one
:class:`~attn_transition.errors.UsageError` line naming the file, the line and what to do. A
UTF-8 byte-order mark and Windows line ends are accepted. JSON's ``NaN`` / ``Infinity``, which
Python reads but JSON does not allow, are refused with their line.

Writing: :func:`atomic_write` writes a temporary file next to the target, flushes it to disk
and renames it into place (atomic on POSIX and Windows), so an interruption never leaves half
a file; the file gets the permissions the user's umask gives any new file (0o666 & ~umask).
:func:`check_paths` is the rule for every command's paths: no output may be one of the
command's inputs, its cache or another of its outputs (compared after resolving links and
``..``), so a mistyped ``-o`` cannot destroy data. :func:`check_outputs` is the other rule, run
by every command right after parsing, before any work: each output path can be written as
what it is meant to be (a file or a folder), so a path that cannot be created fails in one
line naming the flag, not in a traceback after minutes of loading.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import tempfile
from pathlib import Path
from typing import IO, Any, Callable, Mapping, Optional

from attn_transition.errors import UsageError

__all__ = ["read_text", "read_json", "read_jsonl", "atomic_write", "write_text_atomic", "write_json_atomic",
           "check_paths", "check_outputs"]


def _check_input(path: Path) -> None:
    if not path.exists():
        raise UsageError(f"{path} does not exist; check the path")
    if path.is_dir():
        raise UsageError(f"{path} is a directory; give the path of a file in it")


def read_text(path: str | os.PathLike, *, allow_empty: bool = False) -> str:
    """The text of a UTF-8 file (a byte-order mark dropped, CRLF read as LF); UsageError otherwise."""
    path = Path(path)
    _check_input(path)
    data = path.read_bytes()
    if not data.strip() and not allow_empty:
        raise UsageError(f"{path} is empty; give a file with data in it")
    if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        raise UsageError(f"{path} is UTF-16 text; save it as UTF-8 (e.g. iconv -f UTF-16 -t UTF-8)")
    if b"\x00" in data:
        raise UsageError(f"{path} holds NUL bytes: a binary file, not text; give a JSON/JSONL/CSV text file")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise UsageError(f"{path} is not UTF-8 text (byte 0x{data[exc.start]:02x} on line {line}); "
                         f"save it as UTF-8") from None
    return text.replace("\r\n", "\n")


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


_CONSTANT = re.compile(r'(?<![\w".])(NaN|-?Infinity)(?![\w"])')


def _loads(text: str, path: Path, line: Optional[int] = None) -> Any:
    """``line``: the line of a JSON-lines file that ``text`` is (None: a whole JSON file)."""
    line_offset = 0 if line is None else line - 1
    try:
        return json.loads(text, parse_constant=_no_constants)
    except json.JSONDecodeError as exc:
        if line is not None:
            raise UsageError(f"{path}: line {line} is not valid JSON ({exc.msg}); a .jsonl file holds one JSON "
                             f"object per line") from None
        raise UsageError(f"{path} is not valid JSON (line {exc.lineno}: {exc.msg})") from None
    except ValueError as exc:                          # NaN / Infinity
        found = _CONSTANT.search(text)
        line = line_offset + (text[:found.start()].count("\n") + 1 if found else 1)
        raise UsageError(f"{path} line {line}: {exc}; write null or a number") from None


def read_json(path: str | os.PathLike, *, expect: Optional[type] = None) -> Any:
    """Parse a JSON file; with ``expect`` (``list``, ``dict``) its top level must be of that type."""
    path = Path(path)
    data = _loads(read_text(path), path)
    if expect is not None and not isinstance(data, expect):
        want = {list: "a JSON list", dict: "a JSON object"}.get(expect, expect.__name__)
        raise UsageError(f"{path} holds {type(data).__name__ if data is not None else 'null'} at the top "
                         f"level; expected {want}")
    return data


def read_jsonl(path: str | os.PathLike) -> list[tuple[int, Any]]:
    """``(line number, value)`` for every non-blank line of a JSON-lines file."""
    path = Path(path)
    out = []
    for number, line in enumerate(read_text(path).split("\n"), 1):
        if line.strip():
            out.append((number, _loads(line, path, number)))
    return out


def _new_temp_file(path: Path) -> tuple[int, str]:
    """A new, empty, hidden file next to ``path``, opened for writing: ``(descriptor, name)``.

    Created with mode 0o666, so the user's umask decides its permissions exactly as for any new
    file (``tempfile.mkstemp`` would create it 0o600, and the rename would keep that)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0) | getattr(os, "O_NOFOLLOW", 0)
    for _ in range(100):
        tmp = os.path.join(path.parent, f".{path.name}.{secrets.token_hex(4)}")
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:
            continue
    raise UsageError(f"could not create a temporary file next to {path}; check the folder")


def atomic_write(path: str | os.PathLike, write: Callable[[IO[str]], Any]) -> None:
    """Call ``write(handle)`` on a temporary text file and move it onto ``path``."""
    path = Path(path)
    if path.is_dir():
        raise UsageError(f"{path} is a directory; give a file path to write")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _new_temp_file(path)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):                   # only when something failed before the rename
            os.unlink(tmp)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    atomic_write(path, lambda fh: fh.write(text))


def write_json_atomic(path: str | os.PathLike, data: Any, *, indent: int = 1) -> None:
    atomic_write(path, lambda fh: json.dump(data, fh, ensure_ascii=False, indent=indent))


def check_paths(*, inputs: Mapping[str, Optional[str | os.PathLike]] = {},
                outputs: Mapping[str, Optional[str | os.PathLike]]) -> None:
    """UsageError when an output is an input or the same file as another output.

    ``inputs`` and ``outputs`` map a role (the field name, e.g. ``"outputs"``, ``"cache"``) to a
    path or None; the error names both roles and the path (the error's ``field`` is the output's role).
    """
    seen: dict[Path, str] = {}
    for role, path in inputs.items():
        if path is not None:
            seen.setdefault(Path(path).resolve(), role)
    for role, path in outputs.items():
        if path is None:
            continue
        resolved = Path(path).resolve()
        if resolved in seen:
            raise UsageError(f"{role} {path} is the same file as the {seen[resolved]}; writing it would destroy "
                             f"that; choose another path", field=role)
        seen[resolved] = role


def _absolute(path: str | os.PathLike) -> Path:
    """``path`` with ``~`` expanded, made absolute without resolving ``..`` or links (so a ``..``
    after a file still fails as the operating system would fail it)."""
    path = Path(path).expanduser()
    return path if path.is_absolute() else Path.cwd() / path


def _nearest_existing(path: Path) -> Path:
    """The longest prefix of ``path`` (itself included) that exists."""
    for candidate in (path, *path.parents):
        if os.path.exists(candidate):
            return candidate
    return Path(path.anchor)


def _probe(folder: Path) -> Optional[str]:
    """Why a new entry cannot be made in the existing ``folder`` (None: it can). Tries for real:
    creates an empty hidden folder there and removes it at once, so permissions, read-only
    mounts and pseudo file systems (``/proc``) all answer as they would for the write itself,
    also for root, whom :func:`os.access` does not refuse."""
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".attn-transition-check-", dir=folder))
    except OSError as exc:
        return exc.strerror or type(exc).__name__
    return None


def _output_problem(flag: str, given: str, folder: bool) -> Optional[str]:
    """What is wrong with writing the path ``given`` to ``flag`` as a file or (``folder``) a
    folder, worded after the flag; None when nothing is."""
    path, shown = _absolute(given), f"{flag} {given}"
    if not folder and given.endswith(("/", os.sep)):
        return f"{shown} ends in '/', which names a folder; give the path of a file"
    if path.exists():
        if folder and not path.is_dir():
            return f"{shown} is a file; give the path of a folder (a missing one is created)"
        if not folder and path.is_dir():
            return f"{shown} is a folder; give the path of a file (in it, or elsewhere)"
        if not folder and not os.access(path, os.W_OK):
            return f"{shown} is not writable; choose another path or change its permissions"
        why = _probe(path if folder else path.parent)
        if why is not None:
            where = path if folder else path.parent
            return (f"{shown} cannot be written: {where} does not accept new files or folders ({why}); choose a "
                    f"path in a folder you can write to")
        return None
    base = _nearest_existing(path)
    if not base.is_dir():
        return (f"{shown} is under {base}, which is a file, not a folder; choose a path outside it "
                f"(e.g. next to it)")
    why = _probe(base)
    if why is not None:
        return (f"{shown} cannot be created: {base} does not accept new files or folders ({why}); choose a "
                f"path in a folder you can write to")
    return None


def check_outputs(*, files: Mapping[str, Optional[str | os.PathLike]] = {},
                  folders: Mapping[str, Optional[str | os.PathLike]] = {}) -> None:
    """UsageError (one line naming the flag, with the error's ``field`` the flag) unless every
    output can be written: ``files`` and ``folders`` map a flag (``"-o"``, ``"--plots"``) to the
    path it was given, or None when it was not.

    A path is writable when it exists as the right kind (a file for ``files``, a folder for
    ``folders``) in a folder where entries can be created, or when it does not exist and its
    nearest existing ancestor is a folder where entries can be created (the missing folders in
    between are then creatable). Refused: a folder where a file is wanted and the reverse, a
    path under a file (``existing.json/out.json``), a folder that does not allow new entries
    (permissions, a read-only mount, ``/proc``). Nothing is left behind: the check creates and
    at once removes one hidden empty folder in the folder it tests.
    """
    for kind_is_folder, paths in ((False, files), (True, folders)):
        for flag, given in paths.items():
            if given is None:
                continue
            if not str(given).strip():
                raise UsageError(f"{flag} is empty; give a path", field=flag)
            problem = _output_problem(flag, str(given), kind_is_folder)
            if problem is not None:
                raise UsageError(problem, field=flag)

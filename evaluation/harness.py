"""Attention transition as an lm-evaluation-harness model, and ``attn-transition lm-eval``.

Importing this module registers the model ``attn-transition`` in lm_eval's model registry:
a thin subclass of lm_eval's ``HFLM``. Every ``HFLM`` model argument works (``pretrained``,
``dtype``, ``device``, ``batch_size``, ``parallelize``, ``peft``, ...), plus:

- ``transition=<config>``: the schedule, in the CLI's syntax (``classic``, ``sra``,
  ``classic:alpha=1,beta=0.5``) or ``none`` for the stock model (exactly lm_eval's ``hf``).
  Default ``classic``. On lm_eval's command line a value with commas must be quoted,
  ``transition='classic:alpha=1,beta=0.5'``, or its items separated with ``;``;
- ``max_chunk_mib=<MiB>``: the memory budget of the edited rows (``at.enable``'s);
- ``pretrained=smollm2-135m`` / ``gemma3-270m``: the embedded models, converted once into
  the offline cache (:mod:`attn_transition.evaluation.models`).

Loglikelihood. A request ``(context, continuation)`` is edited with its context as the prompt
(``n = len(context)``, what ``generate_until`` of the same task is given); the continuation's
rows are not edited, as on ``attn-transition-vllm`` (:mod:`.harness_args`). lm_eval forwards
both in one call, right-pads the batch and passes no attention mask; the stock causal model
does not care, but the schedule's geometry depends on each row's prompt. For an enabled model
this class passes each row's context width and the batch's padding mask, so every row is
edited exactly as its context alone would be. ``generate_until`` batches are left padded with
a mask, which the patch reads.

``attn-transition lm-eval ARGS...`` registers the model and hands ``ARGS`` to lm_eval's own
command line unchanged (``--help`` included), so every lm_eval flag works. Before that, nothing
loaded yet, :func:`check_run_arguments` reads ``ARGS`` with lm_eval's own parser and refuses a
``transition=`` of the attn-transition models that is not a config, and an ``--output_path``
that cannot be written, each in one line.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

from attn_transition.commands import register_command
from attn_transition.extras import MissingExtraError, dependency_error, require

from .harness_args import MODEL_NAME, check_model_args, parse_transition, stray_config_items
from .models import EMBEDDED, resolve_model
from .runtime.files import check_outputs

try:                       # registers the model with lm_eval; without lm_eval the command still lists and helps
    from .harness_model import AttnTransitionLM
except ImportError as exc:                                  # pragma: no cover - depends on the install
    _MISSING: Optional[ImportError] = exc
else:
    _MISSING = None

__all__ = ["MODEL_NAME", "AttnTransitionLM", "parse_transition", "stray_config_items", "require_lm_eval",
           "check_run_arguments", "uses_ruler", "import_ruler_quietly", "without_unasked_lengths",
           "add_arguments", "run", "main", "EPILOG"]

EPILOG = """attn-transition lm-eval hands every argument to lm-evaluation-harness's command line, after
registering the model 'attn-transition' (HFLM plus transition=...). Examples:

  attn-transition lm-eval --model attn-transition \\
      --model_args pretrained=smollm2-135m,transition=classic \\
      --tasks niah_single_1 --metadata '{"max_seq_lengths":[1024]}' --limit 8
  attn-transition lm-eval --model attn-transition \\
      --model_args "pretrained=gemma3-270m,transition='classic:alpha=1,beta=0.5'" --tasks niah_single_1 ...
  attn-transition lm-eval --model attn-transition --model_args pretrained=smollm2-135m,transition=none ...
  attn-transition lm-eval ls tasks

model_args of attn-transition, besides HFLM's:
  transition=classic | sra | classic:alpha=1;beta=0.5 | none   (default classic; quote a value with
                       commas: transition='classic:alpha=1,beta=0.5'; none = lm_eval's hf model exactly)
  max_chunk_mib=N      memory budget of the edited rows per layer (at.enable's max_chunk_mib)
  pretrained=smollm2-135m | gemma3-270m | a folder | a hub id
"""


# Task names (or their prefixes) of lm_eval's RULER group, whose data module tries to download
# nltk's punkt_tab when it is imported.
_RULER_TASKS = ("ruler", "niah", "vt", "cwe", "fwe", "qa_squad", "qa_hotpot")


def uses_ruler(argv: Sequence[str]) -> bool:
    """Whether lm_eval's ``--tasks`` in ``argv`` name a RULER task."""
    names: list[str] = []
    for i, token in enumerate(argv):
        if token in ("--tasks", "-t") and i + 1 < len(argv):
            names += argv[i + 1].split(",")
        elif token.startswith("--tasks="):
            names += token.split("=", 1)[1].split(",")
    return any(name.strip().startswith(_RULER_TASKS) for name in names)


def import_ruler_quietly() -> None:
    """Import lm_eval's RULER data module without its noise: on import it tries to download nltk's
    ``punkt_tab`` (an error block offline) and prints ``Downloaded punkt_tab on rank 0`` either
    way. The download is asked for quietly and the print is swallowed; lm_eval's own errors
    (a missing ``wonderwords``, say) come when lm_eval imports it itself."""
    import io

    try:
        import nltk
    except ImportError:
        return
    download, swallowed = nltk.download, io.StringIO()
    nltk.download = lambda *args, **kwargs: download(*args, **{**kwargs, "quiet": True,
                                                             "print_error_to": swallowed})
    try:
        with contextlib.redirect_stdout(swallowed), contextlib.redirect_stderr(swallowed):
            import lm_eval.tasks.ruler.prepare_niah  # noqa: F401
    except Exception:                                      # reported by lm_eval when it needs the module
        pass
    finally:
        nltk.download = download


def without_unasked_lengths(result_dict: dict, column: str = "results") -> dict:
    """``result_dict`` without the RULER rows of lengths that were not asked for: RULER reports
    every default length and gives -1 (stderr N/A) to those that saw no document."""
    rows = result_dict.get(column)
    if not isinstance(rows, dict):
        return result_dict
    kept = {}
    for task, metrics in rows.items():
        if not isinstance(metrics, dict):
            kept[task] = metrics
            continue
        unasked = {key.split(",")[0] for key, value in metrics.items()
                   if key.split(",")[0].isdigit() and value == -1}
        kept[task] = {key: value for key, value in metrics.items()
                      if key.split(",")[0].removesuffix("_stderr") not in unasked}
    return {**result_dict, column: kept}


@contextlib.contextmanager
def _asked_lengths_only() -> Iterator[None]:
    """lm_eval's printed results table without the rows of :func:`without_unasked_lengths`."""
    import lm_eval.utils

    original = lm_eval.utils.make_table

    def make_table(result_dict: dict, column: str = "results", *args: Any, **kwargs: Any) -> str:
        return original(without_unasked_lengths(result_dict, column), column, *args, **kwargs)

    lm_eval.utils.make_table = make_table
    try:
        yield
    finally:
        lm_eval.utils.make_table = original


def require_lm_eval(purpose: str = "attn-transition lm-eval") -> None:
    """MissingExtraError (one line, naming the extra) unless lm_eval and the model import."""
    require(purpose, "lm_eval", extra="lm-eval")
    if _MISSING is not None:             # lm_eval imports, its HF model (or ours) does not: name what is missing
        raise dependency_error(purpose, "lm_eval", _MISSING, "lm-eval")


def __getattr__(name: str) -> Any:
    """``AttnTransitionLM`` without lm_eval: the one-line error that names the extra."""
    if name == "AttnTransitionLM":
        require_lm_eval("the attn-transition lm_eval model")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# -- attn-transition lm-eval ------------------------------------------------------------------

def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Nothing of its own: every argument goes to lm_eval (a passthrough command)."""


def _split_items(text: str) -> list[str]:
    """Split ``key=value,key=value`` on commas outside quotes and brackets (as lm_eval does)."""
    items, buf, depth, quote = [], [], 0, None
    for char in text:
        if quote is not None:
            quote = None if char == quote else quote
        elif char in "\"'":
            quote = char
        elif char in "[({":
            depth += 1
        elif char in "])}":
            depth = max(depth - 1, 0)
        elif char == "," and depth == 0:
            items.append("".join(buf))
            buf = []
            continue
        buf.append(char)
    items.append("".join(buf))
    return items


def _resolve_value(value: str) -> str:
    """One ``--model_args`` value with embedded model names replaced by their cached folders."""
    import json

    try:
        parsed = json.loads(value)
    except ValueError:
        parsed = None
    if isinstance(parsed, dict):
        for key in _MODEL_KEYS:
            if isinstance(parsed.get(key), str) and parsed[key] in EMBEDDED:
                parsed[key] = resolve_model(parsed[key])
        return json.dumps(parsed)
    items = []
    for item in _split_items(value):
        key, eq, text = item.partition("=")
        name = text.strip().strip("'\"")
        if eq and key.strip() in _MODEL_KEYS and name in EMBEDDED:
            item = f"{key}={resolve_model(name)}"
        items.append(item)
    return ",".join(items)


_MODEL_KEYS = ("pretrained", "tokenizer")


def resolve_embedded_args(argv: Sequence[str]) -> list[str]:
    """``argv`` with ``pretrained=`` / ``tokenizer=`` embedded names in ``--model_args`` given as
    their cached folders, so the tasks that load a tokenizer by that name (RULER sizes its
    prompts with the model's tokenizer) find it offline too."""
    out: list[str] = []
    in_model_args = False
    for token in argv:
        if token in ("--model_args", "-a"):
            in_model_args = True
            out.append(token)
            continue
        if token.startswith("--model_args="):
            out.append("--model_args=" + _resolve_value(token.split("=", 1)[1]))
            in_model_args = False
            continue
        if in_model_args and not token.startswith("-"):
            out.append(_resolve_value(token))
            continue
        in_model_args = False
        out.append(token)
    return out


# The models whose model_args carry ``transition=`` (harness_vllm.MODEL_NAME is the second; named
# here so that checking them does not import vLLM).
_TRANSITION_MODELS = (MODEL_NAME, "attn-transition-vllm")


def _lm_eval_reading(argv: Sequence[str]) -> Optional[argparse.Namespace]:
    """``argv`` as lm_eval's own command line parses it (its parser only: nothing is loaded), or
    None where it does not parse (lm_eval then says why itself) or this lm_eval's parser cannot
    be read. As ``HarnessCLI.parse_args`` (lm_eval/_cli/harness.py) does, a command line of more
    than one argument without a subcommand is a ``run``."""
    try:
        from lm_eval._cli import HarnessCLI

        cli = HarnessCLI()
        parser, commands = cli._parser, cli._subparsers.choices
    except Exception:                                  # another lm_eval layout: no early check
        return None
    argv = list(argv)
    if len(argv) > 1 and argv[0] not in commands:
        argv.insert(0, "run")
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            return parser.parse_args(argv)
    except (SystemExit, Exception):
        return None


def check_run_arguments(argv: Sequence[str]) -> None:
    """Before anything loads: ConfigError for a ``transition=`` model argument of the
    attn-transition models that names no config (or a config item cut off at a comma), and
    UsageError for an ``--output_path`` that cannot be written (a ``.json`` path is a file to
    lm_eval, anything else a folder: ``EvaluationTracker.save_results_aggregated`` in
    lm_eval/loggers/evaluation_tracker.py). Arguments lm_eval cannot parse are left to it."""
    reading = _lm_eval_reading(argv)
    if reading is None or getattr(reading, "command", None) != "run":
        return
    output = getattr(reading, "output_path", None)
    if output:
        is_file = Path(output).suffix == ".json"
        check_outputs(files={"--output_path": output} if is_file else {},
                      folders={} if is_file else {"--output_path": output})
    model_args = getattr(reading, "model_args", None)
    if getattr(reading, "model", None) in _TRANSITION_MODELS and isinstance(model_args, dict):
        check_model_args(model_args)
        if "transition" in model_args:
            parse_transition(model_args["transition"])


def main(argv: Sequence[str]) -> int:
    """Run lm_eval's command line on ``argv`` with the ``attn-transition`` model registered."""
    argv = list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(EPILOG)
        try:
            require_lm_eval()
        except MissingExtraError as exc:
            print(f"lm-eval's own options are listed here once it can run; now: {exc}")
            return 0
        print("lm-eval's options (lm-eval run --help):\n", flush=True)
        argv = ["run", "--help"]
    require_lm_eval()                          # before anything is converted or loaded
    check_run_arguments(argv)
    from lm_eval.__main__ import cli_evaluate

    register_vllm_model()

    argv = resolve_embedded_args(argv)
    if uses_ruler(argv):
        import_ruler_quietly()
    saved = sys.argv
    sys.argv = ["attn-transition lm-eval", *argv]
    try:
        with _asked_lengths_only():
            cli_evaluate()
    except SystemExit as exc:                  # argparse's --help and errors, lm_eval's own exits
        code = exc.code
        if code is None or isinstance(code, int):
            return int(code or 0)
        print(code, file=sys.stderr)
        return 1
    finally:
        sys.argv = saved
    return 0


def register_vllm_model() -> bool:
    """Register ``attn-transition-vllm`` (lm_eval's vLLM model with ``transition=``) where vLLM is
    installed (its own environment, usually); returns whether it was."""
    import importlib.util

    if importlib.util.find_spec("vllm") is None:
        return False
    importlib.import_module("attn_transition.evaluation.harness_vllm")
    return True


def run(args: argparse.Namespace) -> int:
    return main(getattr(args, "passthrough", []))

register_command('lm-eval', help="lm-evaluation-harness's CLI with the models 'attn-transition' (and 'attn-transition-vllm' where vLLM is installed) registered",
                 add_arguments=add_arguments, run=run, epilog=EPILOG, passthrough=True)

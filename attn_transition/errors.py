"""Exception types raised by attn_transition.

Every error the library raises on purpose derives from :class:`AttnTransitionError`,
so callers can catch the library's own failures without swallowing unrelated ones.
The subclasses also derive from the matching built-in type (``ValueError``,
``TypeError``) so code written against plain Python exceptions keeps working.
"""

from typing import Iterable, Union


class AttnTransitionError(Exception):
    """Base class of every error raised on purpose by attn_transition.

    ``field`` (optional) is the name of the setting that is wrong, as the message writes it
    (``"lengths"``), or a tuple of names: a command line rewords each as its flag (``--lengths``).
    """

    def __init__(self, *args: object, field: Union[str, tuple[str, ...], None] = None) -> None:
        super().__init__(*args)
        self.field = field


class ConfigError(AttnTransitionError, ValueError):
    """A configuration field has a wrong type or a value outside its range."""


class InputError(AttnTransitionError, ValueError):
    """A tensor or argument given to a library function has a wrong shape, type or range."""


class UnsupportedModelError(AttnTransitionError, ValueError):
    """The model's architecture (``config.model_type``) is not supported by the patch."""


class NotACausalLMError(AttnTransitionError, TypeError):
    """The object given is not a transformers causal language model."""


class UsageError(AttnTransitionError, ValueError):
    """Bad input at the command line or in a data file; the CLI turns it into exit code 2."""


def did_you_mean(word: object, choices: Iterable[str]) -> str:
    """``" (did you mean 'x'?)"`` for the closest of ``choices`` to ``word``, or ``""``."""
    import difflib

    hint = difflib.get_close_matches(str(word), list(choices), n=1)
    return f" (did you mean {hint[0]!r}?)" if hint else ""

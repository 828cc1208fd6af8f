"""Prompt templates: versioned JSON files that turn a document into the model's prompt.

Two built-ins live in ``evaluation/prompts/``: ``base`` (the seed's ``<document> Please
summarize context above:``, tokenized with the tokenizer's special tokens) and ``chat`` (a
system instruction and the document in one user turn, rendered by the tokenizer's chat
template); a JSON file of the same fields is a template too. A template's name, version and
text are recorded in the output's metadata, so a resume can refuse to mix prompts.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

from attn_transition.errors import UsageError, did_you_mean

from ..runtime import files

__all__ = ["PROMPTS_DIR", "TEMPLATE_KINDS", "PromptTemplate", "load_template", "render_prompts", "prompt_lengths",
           "lazy_prompt_lengths"]

PROMPTS_DIR = Path(__file__).parent.parent / "prompts"
BUILTIN_TEMPLATES = {"base": "summarize_base.json", "chat": "summarize_chat.json"}
PLACEHOLDER = "{document}"
TEMPLATE_KINDS = ("base", "chat")
_TEMPLATE_FIELDS = ("name", "version", "kind", "description", "template", "system", "user")


def _has_chat_template(tokenizer: Any) -> bool:
    return getattr(tokenizer, "chat_template", None) is not None


@dataclass(frozen=True)
class PromptTemplate:
    """A versioned prompt. ``base``: ``template`` with ``{document}``, tokenized with the
    tokenizer's special tokens; ``chat``: an optional ``system`` message and a ``user``
    message with ``{document}``, rendered by the tokenizer's chat template."""

    name: str
    version: int
    kind: str
    template: str = ""
    system: Optional[str] = None
    user: str = ""
    description: str = ""
    source: str = "builtin"

    def __post_init__(self) -> None:
        where = f"prompt template {self.source}"
        if not isinstance(self.name, str) or not self.name.strip():
            raise UsageError(f"{where}: 'name' must be a non-empty string, got {self.name!r}")
        if isinstance(self.version, bool) or not isinstance(self.version, int) or self.version < 1:
            raise UsageError(f"{where}: 'version' must be an int >= 1, got {self.version!r}")
        if self.kind not in TEMPLATE_KINDS:
            raise UsageError(f"{where}: 'kind' must be one of {list(TEMPLATE_KINDS)}, got {self.kind!r}")
        text_field = "template" if self.kind == "base" else "user"
        text = getattr(self, text_field)
        if not isinstance(text, str) or PLACEHOLDER not in text:
            raise UsageError(f"{where}: a {self.kind} template needs a {text_field!r} string containing "
                             f"{PLACEHOLDER}, got {text!r}")
        if self.system is not None and not isinstance(self.system, str):
            raise UsageError(f"{where}: 'system' must be a string, got {type(self.system).__name__}")

    @property
    def add_special_tokens(self) -> bool:
        """Base prompts get the tokenizer's BOS; a chat template writes its own special tokens."""
        return self.kind == "base"

    def render(self, document: str, tokenizer: Any = None) -> str:
        if self.kind == "base":
            return self.template.replace(PLACEHOLDER, document)
        if not _has_chat_template(tokenizer):
            raise self._no_chat_template()
        user = self.user.replace(PLACEHOLDER, document)
        messages = ([{"role": "system", "content": self.system}] if self.system else []) + \
                   [{"role": "user", "content": user}]
        try:
            return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        except Exception:
            if not self.system:
                raise
            # Some chat templates refuse a system turn: put the instruction in the user turn.
            merged = [{"role": "user", "content": f"{self.system}\n\n{user}"}]
            return tokenizer.apply_chat_template(merged, tokenize=False, add_generation_prompt=True)

    def _no_chat_template(self) -> UsageError:
        return UsageError(f"prompt template {self.name!r} is a chat template but the tokenizer has no "
                          f"chat template; use --template base")

    def as_dict(self) -> dict:
        text = {"template": self.template} if self.kind == "base" else {"system": self.system, "user": self.user}
        return {"name": self.name, "version": self.version, "kind": self.kind, "source": self.source,
                "text": text, "description": self.description}

    def same_prompt(self, other: dict) -> bool:
        """Whether a template recorded by :meth:`as_dict` renders the same prompts."""
        mine = self.as_dict()
        return all(mine[k] == other.get(k) for k in ("name", "version", "kind", "text"))


def _template_from_file(path: Path, source: str) -> PromptTemplate:
    try:
        data = files.read_json(path)
    except UsageError as exc:
        raise UsageError(f"prompt template: {exc}") from None
    if not isinstance(data, dict):
        raise UsageError(f"prompt template {path} must be a JSON object with fields "
                         f"{', '.join(_TEMPLATE_FIELDS)}")
    for key in data:
        if key not in _TEMPLATE_FIELDS:
            extra = did_you_mean(key, _TEMPLATE_FIELDS)
            raise UsageError(f"prompt template {path}: unknown field {key!r}{extra}; "
                             f"fields: {', '.join(_TEMPLATE_FIELDS)}")
    for key in ("name", "version", "kind"):
        if key not in data:
            raise UsageError(f"prompt template {path}: missing field {key!r} (needs name, version, kind and "
                             f"'template' for kind base or 'user' for kind chat)")
    return PromptTemplate(**data, source=source)


def load_template(spec: str, tokenizer: Any = None) -> PromptTemplate:
    """``auto`` (chat if the tokenizer has a chat template, else base), ``base``, ``chat``,
    or the path of a JSON file with ``name``, ``version``, ``kind`` and the text fields."""
    if spec == "auto":
        spec = "chat" if _has_chat_template(tokenizer) else "base"
    if spec in BUILTIN_TEMPLATES:
        template = _template_from_file(PROMPTS_DIR / BUILTIN_TEMPLATES[spec], "builtin")
    else:
        path = Path(spec).expanduser()
        if path.is_file():
            template = _template_from_file(path, str(path))
        elif spec.endswith(".json") or os.sep in spec:
            raise UsageError(f"prompt template file {spec} does not exist")
        else:
            choices = ["auto", *BUILTIN_TEMPLATES]
            extra = did_you_mean(spec, choices)
            raise UsageError(f"unknown template {spec!r}{extra}; use one of {', '.join(choices)} "
                             f"or the path of a JSON template file", field="template")
    if template.kind == "chat" and tokenizer is not None and not _has_chat_template(tokenizer):
        raise template._no_chat_template()
    return template


def render_prompts(template: PromptTemplate, tokenizer: Any, docs: Sequence[dict]) -> list[str]:
    return [template.render(d["document"], tokenizer) for d in docs]


def prompt_lengths(tokenizer: Any, prompts: Sequence[str], add_special_tokens: bool) -> list[int]:
    """Token count of each prompt as the model will see it."""
    if not prompts:
        return []
    ids = tokenizer(list(prompts), add_special_tokens=add_special_tokens)["input_ids"]
    return [len(x) for x in ids]


def _chunked(seq: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(seq), size):
        yield seq[start:start + size]


def lazy_prompt_lengths(tokenizer: Any, template: PromptTemplate, docs: Sequence[dict],
                        chunk: int = 256) -> Iterator[int]:
    """Prompt lengths computed chunk by chunk, so bucketing a large set can stop early."""
    for part in _chunked(docs, chunk):
        yield from prompt_lengths(tokenizer, render_prompts(template, tokenizer, part),
                                  template.add_special_tokens)

"""The generation loop: fills the missing ``decode_or`` / ``decode_<config>`` of records in place.

Loop order: one pass per output key (plain first, then each config), every document of that
pass batched with left padding (longest prompts first), so the model is re-configured once
per config (``at.enabled``, so the model's transition state is put back afterwards). Keys already
present are never regenerated. :func:`generate_batch` is the greedy batch generation of
:mod:`~attn_transition.evaluation.models`; the loop looks it up here (tests replace it).
"""

from __future__ import annotations

import contextlib
import time
from typing import Any, Callable, Optional, Sequence

from attn_transition.config import ClassicConfig, TransitionConfig, parse_config, parse_grid
from attn_transition.errors import ConfigError, UsageError

from ..models import generate_greedy as generate_batch
from ..seedformat import PLAIN_KEY, config_key
from .templates import prompt_lengths

__all__ = ["generate_batch", "generate_records", "check_generation", "keyed_configs", "collect_configs"]


def keyed_configs(configs: Sequence[TransitionConfig]) -> dict[str, TransitionConfig]:
    """Output key (the seed's scheme) -> config, duplicates dropped, in order; ConfigError for a
    config the scheme cannot name."""
    out: dict[str, TransitionConfig] = {}
    for config in configs:
        out.setdefault(config_key(config, strict=True), config)
    return out


def collect_configs(grid: Optional[str], specs: Sequence[str] = ()) -> dict[str, TransitionConfig]:
    """Output key -> config for a grid spec then every config spec (``--grid``, ``--config``),
    duplicates dropped, in order. With neither, the default classic config (the seed's
    ``attn_transition=True``)."""
    try:
        configs = parse_grid(grid) if grid else []
    except ConfigError as exc:
        raise ConfigError(str(exc) if str(exc).startswith("grid ") else f"grid {grid!r}: {exc}",
                          field="grid") from None
    for spec in specs:
        try:
            configs.append(parse_config(spec))
        except ConfigError as exc:
            raise ConfigError(f"configs {spec!r}: {exc}", field="configs") from None
    return keyed_configs(configs if grid is not None or specs else [ClassicConfig()])


def _tqdm(**kwargs: Any):
    from tqdm import tqdm          # plain text bars: also in notebooks without ipywidgets

    return tqdm(**kwargs)


def check_generation(max_new_tokens: int, batch_size: int) -> None:
    """UsageError (naming the field) unless both are ints >= 1."""
    for name, value in (("max_new_tokens", max_new_tokens), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise UsageError(f"{name} must be an int >= 1, got {value!r}", field=name)


def _todo(records: Sequence[dict], keys: Sequence[str], lengths: Sequence[int]) -> dict[str, list[int]]:
    """Per key, the positions of the records that lack it, longest prompt first."""
    return {key: sorted((i for i, r in enumerate(records) if key not in r), key=lambda i: -lengths[i])
            for key in keys}


def plan_passes(tokenizer: Any, records: list[dict], prompts: Sequence[str],
                configs: dict[str, TransitionConfig] | Sequence[TransitionConfig], *, add_special_tokens: bool,
                max_new_tokens: int, batch_size: int, include_plain: bool,
                lengths: Optional[Sequence[int]]):
    """The passes a generation still owes, for any engine: ``(passes, lengths, todo)``, with
    ``passes`` ``[(key, config or None for the plain pass)]`` (plain first, finished keys left
    out), each prompt's token length, and ``todo`` ``{key: record indices still missing it}``."""
    if len(prompts) != len(records):
        raise ValueError(f"{len(prompts)} prompts for {len(records)} records")
    check_generation(max_new_tokens, batch_size)
    if not isinstance(configs, dict):
        configs = keyed_configs(configs)
    passes: list[tuple[str, Optional[TransitionConfig]]] = [(PLAIN_KEY, None)] if include_plain else []
    passes += list(configs.items())
    if lengths is None:
        lengths = prompt_lengths(tokenizer, prompts, add_special_tokens)
    todo = _todo(records, [key for key, _ in passes], lengths)
    return [(key, cfg) for key, cfg in passes if todo[key]], lengths, todo


def generate_records(model: Any, tokenizer: Any, records: list[dict], prompts: Sequence[str],
                     configs: dict[str, TransitionConfig] | Sequence[TransitionConfig], *,
                     add_special_tokens: bool, max_new_tokens: int = 50, batch_size: int = 4,
                     include_plain: bool = True, lengths: Optional[Sequence[int]] = None,
                     on_batch: Optional[Callable[[], None]] = None, progress: bool = True,
                     timings: Optional[dict[str, dict]] = None) -> dict[str, dict]:
    """Fill every missing ``decode_or`` / ``decode_<config>`` of ``records`` in place.

    One pass per key (plain first), documents batched longest first; ``on_batch`` runs
    after each batch (the CLI saves there). Keys already present are never regenerated.
    The model's transition state is restored afterwards. Returns ``{key: {"seconds",
    "documents"}}`` for the keys generated now; a ``timings`` dict given is filled the same
    way as each pass finishes (so an interrupted run still reports its finished passes).
    """
    import attn_transition as at

    passes, lengths, todo = plan_passes(tokenizer, records, prompts, configs, add_special_tokens=add_special_tokens,
                                        max_new_tokens=max_new_tokens, batch_size=batch_size,
                                        include_plain=include_plain, lengths=lengths)
    timings = {} if timings is None else timings
    outer = _tqdm(total=len(passes), desc="configs", unit="config", disable=not progress or not passes,
                  position=0)
    try:
        for key, cfg in passes:
            outer.set_postfix_str(key)
            with contextlib.nullcontext() if cfg is None else at.enabled(model, cfg):
                _generate_pass(model, tokenizer, records, prompts, key, todo[key], cfg is None and at.is_enabled(model),
                               add_special_tokens=add_special_tokens, max_new_tokens=max_new_tokens,
                               batch_size=batch_size, on_batch=on_batch, progress=progress, timings=timings)
            outer.update(1)
    finally:
        outer.close()
    return timings


def _generate_pass(model: Any, tokenizer: Any, records: list[dict], prompts: Sequence[str], key: str,
                   indices: Sequence[int], plain_switch: bool, *, add_special_tokens: bool, max_new_tokens: int,
                   batch_size: int, on_batch: Optional[Callable[[], None]], progress: bool,
                   timings: dict[str, dict]) -> None:
    """One key for the given records, in batches; ``plain_switch``: stock attention per call on an
    enabled model (the plain pass)."""
    started = time.perf_counter()
    inner = _tqdm(total=len(indices), desc=key, unit="doc", leave=False, disable=not progress, position=1)
    for start in range(0, len(indices), batch_size):
        batch = indices[start:start + batch_size]
        texts = generate_batch(model, tokenizer, [prompts[i] for i in batch], max_new_tokens=max_new_tokens,
                               add_special_tokens=add_special_tokens, plain_switch=plain_switch)
        for i, text in zip(batch, texts):
            records[i][key] = text
        if on_batch is not None:
            on_batch()
        inner.update(len(batch))
    inner.close()
    timings[key] = {"seconds": round(time.perf_counter() - started, 3), "documents": len(indices)}

"""Per-token attention profile: how much attention each token receives from the tokens after it.

Definition. For a sequence of n tokens, layers L (a range of decoder layers) and heads H,

    profile[j] = mean over l in L, h in H and queries i with j < i < n of A[l, h, i, j]

where A[l, h] is the post-softmax attention matrix of layer l, head h (rows = queries).
The last token (j = n - 1) has no later query: its profile is NaN. With ``reduce="max"``
the mean over queries is kept and the maximum over (layer, head) pairs replaces the mean
over them. Every query i > j counts, also those that cannot see j (outside a sliding
window): their A[i, j] is 0, so the profile is exactly the mean of the matrix column
below the diagonal.

Why columns and not rows: a row of a causal attention matrix sums to 1, so summing a
token's *row* gives the same number for every token of every model; all information
about which tokens matter is in the columns.

How. A small attention function is registered in transformers' ``AttentionInterface``
under :data:`IMPLEMENTATION` (with ``sdpa_mask`` as its mask function) and switched on
with ``model.set_attn_implementation`` for one forward pass; the previous implementation
comes back in a ``finally``. For each selected layer it computes the weights for blocks
of ``query_chunk`` query rows at a time in float32 (with the same helpers as the
transition patch: GQA, scaling, softcap and sliding-window masks honoured), adds them
into a (heads, n) column-sum buffer, and returns the ordinary attention output built
from the same weights. Memory beyond the model's own is O(heads x query_chunk x n) for
one layer at a time; no n x n matrix of any layer is ever kept.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import warnings
from dataclasses import asdict, dataclass
from typing import Any, Iterator, Optional, Sequence

from attn_transition.errors import UsageError

__all__ = ["IMPLEMENTATION", "ProfileConfig", "TokenProfile", "parse_layers", "parse_heads", "check_model_config",
           "register", "profiling", "profile_ids", "attention_profile", "text_sha", "profile_record",
           "check_profile_record"]

IMPLEMENTATION = "attn_transition_clues_profile"
REDUCTIONS = ("mean", "max")
RECORD_VERSION = 1


def _layer_slice(spec: Optional[str]) -> slice:
    """The syntax of ``--layers`` alone (no model needed): a slice over the decoder layers."""
    if spec is None or spec in ("", "all", ":"):
        return slice(None)
    try:
        if ":" in spec:
            start_text, stop_text = spec.split(":", 1)
            return slice(int(start_text) if start_text.strip() else None,
                         int(stop_text) if stop_text.strip() else None)
        index = int(spec)
        return slice(index, index + 1) if index != -1 else slice(-1, None)
    except ValueError:
        raise UsageError(f"--layers must look like 'start:stop' (e.g. '4:12', ':-2') or one index, "
                         f"got {spec!r}") from None


def parse_layers(spec: Optional[str], num_layers: int) -> range:
    """``"a:b"`` (Python slice over decoder layers, negatives allowed), ``"k"`` (one layer) or None (all)."""
    chosen = range(num_layers)[_layer_slice(spec)]
    if len(chosen) == 0:
        raise UsageError(f"--layers {spec!r} selects no layer of a model with {num_layers} layers "
                         f"(valid indices 0..{num_layers - 1})")
    return chosen


def parse_heads(spec: Optional[str]) -> Optional[tuple[int, ...]]:
    """``"0,3,5"`` -> (0, 3, 5); None or "all" -> None (every head)."""
    if spec is None or spec in ("", "all"):
        return None
    try:
        heads = tuple(int(h) for h in spec.split(","))
    except ValueError:
        raise UsageError(f"--heads must be comma-separated head indices like '0,3', got {spec!r}") from None
    return heads


@dataclass(frozen=True)
class ProfileConfig:
    """What to average. ``layers``: slice spec (see :func:`parse_layers`); ``heads``: query-head
    indices or None for all; ``reduce``: ``mean`` or ``max`` over (layer, head) pairs;
    ``max_length``: longest input in tokens (None: the model's context), longer texts are
    truncated with a warning; ``query_chunk``: query rows computed at once."""

    layers: Optional[str] = None
    heads: Optional[tuple[int, ...]] = None
    reduce: str = "mean"
    max_length: Optional[int] = None
    query_chunk: int = 256

    def __post_init__(self) -> None:
        _layer_slice(self.layers)                  # syntax now; the range once the model's config is known
        if self.reduce not in REDUCTIONS:
            raise UsageError(f"ProfileConfig.reduce must be one of {', '.join(REDUCTIONS)}, got {self.reduce!r}")
        if self.heads is not None:
            if not self.heads or any((not isinstance(h, int)) or h < 0 for h in self.heads):
                raise UsageError(f"ProfileConfig.heads must be non-negative head indices, got {self.heads!r}")
            if len(set(self.heads)) != len(self.heads):
                raise UsageError(f"ProfileConfig.heads has repeated indices: {self.heads!r}")
        if self.max_length is not None and self.max_length < 2:
            raise UsageError(f"ProfileConfig.max_length must be >= 2 tokens, got {self.max_length}")
        if self.query_chunk < 1:
            raise UsageError(f"ProfileConfig.query_chunk must be >= 1, got {self.query_chunk}")

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["heads"] = list(self.heads) if self.heads is not None else None
        return data


class _Collector:
    """Accumulates per-(layer, head) column means into one length-n buffer."""

    def __init__(self, n: int, layers: range, heads: Optional[Sequence[int]], reduce: str) -> None:
        import torch

        self.n, self.layers, self.heads, self.reduce = n, set(layers), heads, reduce
        self.total = torch.zeros(n, dtype=torch.float64)
        self.best = torch.full((n,), -math.inf, dtype=torch.float64)
        self.pairs = 0
        self.done: set[int] = set()

    def add(self, layer: int, column_means) -> None:       # column_means: (heads, n) float
        assert layer not in self.done, f"layer {layer} reported twice in one forward pass"
        self.done.add(layer)
        heads = column_means.shape[0]
        if self.heads is not None:
            bad = [h for h in self.heads if h >= heads]
            if bad:
                raise UsageError(f"--heads {','.join(map(str, bad))} out of range: layer {layer} has {heads} "
                                 f"query heads (0..{heads - 1})")
            column_means = column_means[list(self.heads)]
        values = column_means.double().cpu()
        self.total += values.sum(0)
        self.best = self.best.maximum(values.max(0).values)
        self.pairs += values.shape[0]

    def result(self) -> list[float]:
        assert self.done == self.layers, f"layers seen {sorted(self.done)} != selected {sorted(self.layers)}"
        values = self.total / self.pairs if self.reduce == "mean" else self.best
        out = [float(v) for v in values]
        out[-1] = math.nan                  # the last token has no later query
        return out


_ACTIVE: Optional[_Collector] = None
_CHUNK = 256


def _profile_attention(module, query, key, value, attention_mask, dropout: float = 0.0,
                       scaling: Optional[float] = None, **kwargs):
    """Registered attention: plain sdpa for unselected layers, explicit + column sums for selected ones."""
    import torch
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    from attn_transition.kernel import attention_weights, weighted_values

    collector = _ACTIVE
    layer = getattr(module, "layer_idx", None)
    if collector is None or layer not in collector.layers:
        return ALL_ATTENTION_FUNCTIONS["sdpa"](module, query, key, value, attention_mask, dropout=dropout,
                                               scaling=scaling, **kwargs)
    batch, heads, n, head_dim = query.shape                        # (1, heads, n, d)
    assert batch == 1 and key.shape[2] == n, f"profile runs one full sequence: query {tuple(query.shape)}, " \
                                             f"key {tuple(key.shape)}"
    scaling = head_dim ** -0.5 if scaling is None else scaling
    softcap = kwargs.get("softcap")
    out = query.new_empty(1, n, heads, value.shape[-1])            # (1, n, heads, d)
    column_sums = torch.zeros(heads, n, dtype=torch.float32, device=query.device)
    for start in range(0, n, _CHUNK):
        end = min(n, start + _CHUNK)                               # rows [start, end) see keys [0, end)
        mask_rows = None if attention_mask is None else attention_mask[0, 0, start:end, :end]   # (r, end)
        w, _ = attention_weights(query[0, :, start:end], key[0, :, :end], start, mask_rows, scaling, softcap)  # (heads, r, end)
        out[0, start:end] = weighted_values(w, value[0, :, :end]).transpose(0, 1).to(out.dtype)  # (r, heads, d)
        column_sums[:, :end] += w.sum(dim=1)
        column_sums[:, start:end] -= w[:, :, start:].diagonal(dim1=-2, dim2=-1)    # only queries i > j count
    later = (n - 1 - torch.arange(n, device=query.device)).clamp(min=1).float()          # (n,)
    collector.add(layer, column_sums / later)
    return out, None


_REGISTERED = False


def register() -> None:
    """Register :data:`IMPLEMENTATION` with transformers (idempotent)."""
    global _REGISTERED
    if _REGISTERED:
        return
    from attn_transition.patches.transformers import register_attention

    register_attention(IMPLEMENTATION, _profile_attention, mask="sdpa")
    _REGISTERED = True


def _num_layers(model: Any) -> int:
    config = getattr(model.config, "text_config", None) or model.config
    return int(config.num_hidden_layers)


def check_model_config(model_config: Any, config: ProfileConfig, model_name: str) -> None:
    """UsageError unless ``config``'s layers and heads exist in a model with ``model_config``
    (a transformers config: checked before anything is profiled or written)."""
    text_config = getattr(model_config, "text_config", None) or model_config
    layers = int(text_config.num_hidden_layers)
    try:
        parse_layers(config.layers, layers)
    except UsageError as exc:
        raise UsageError(f"{model_name}: {exc}") from None
    heads = int(text_config.num_attention_heads)
    bad = [h for h in config.heads or () if h >= heads]
    if bad:
        raise UsageError(f"--heads {','.join(map(str, bad))} out of range: {model_name} has {heads} query heads "
                         f"(0..{heads - 1})")


@contextlib.contextmanager
def profiling(model: Any) -> Iterator[Any]:
    """The model with the profile attention switched on; its previous implementation and
    train/eval mode come back afterwards, also after an error."""
    register()
    previous = model.config._attn_implementation or "eager"
    was_training = model.training
    model.set_attn_implementation(IMPLEMENTATION)
    model.eval()
    try:
        yield model
    finally:
        model.set_attn_implementation(previous)
        model.train(was_training)


def profile_ids(model: Any, input_ids: Sequence[int], config: ProfileConfig = ProfileConfig()) -> list[float]:
    """The profile (see the module doc) of one token sequence; NaN for the last token."""
    import torch

    global _ACTIVE, _CHUNK
    ids = torch.as_tensor(list(input_ids), dtype=torch.long).reshape(1, -1)   # (1, n)
    n = ids.shape[1]
    if n < 2:
        raise UsageError(f"a text of {n} token(s) has no token that attends to an earlier one; "
                         f"profiles need at least 2 tokens")
    layers = parse_layers(config.layers, _num_layers(model))
    device = next(model.parameters()).device
    collector = _Collector(n, layers, config.heads, config.reduce)
    with profiling(model), torch.no_grad():
        _ACTIVE, _CHUNK = collector, config.query_chunk
        try:
            model(input_ids=ids.to(device), use_cache=False, logits_to_keep=1)
        finally:
            _ACTIVE = None
    return collector.result()


@dataclass(frozen=True)
class TokenProfile:
    text: str
    input_ids: list[int]
    tokens: list[str]
    offsets: list[tuple[int, int]]
    special: list[bool]
    profile: list[float]
    truncated: bool          # the text had more tokens than max_length; later ones are not profiled


def _context_length(model: Any) -> Optional[int]:
    config = getattr(model.config, "text_config", None) or model.config
    value = getattr(config, "max_position_embeddings", None)
    return int(value) if value else None


def tokenize_with_offsets(tokenizer: Any, text: str) -> tuple[list[int], list[tuple[int, int]], list[bool]]:
    """Token ids, character spans and special-token flags (needs a fast tokenizer)."""
    if not getattr(tokenizer, "is_fast", False):
        raise UsageError(f"{type(tokenizer).__name__} is not a fast tokenizer; character offsets are needed "
                         f"to align tokens (load the tokenizer with use_fast=True)")
    encoded = tokenizer(text, return_offsets_mapping=True, add_special_tokens=True)
    ids = list(encoded["input_ids"])
    offsets = [(int(a), int(b)) for a, b in encoded["offset_mapping"]]
    special_ids = set(tokenizer.all_special_ids)
    return ids, offsets, [i in special_ids for i in ids]


def attention_profile(model: Any, tokenizer: Any, text: str, config: ProfileConfig = ProfileConfig()) -> TokenProfile:
    """Tokenise ``text`` (with the tokenizer's special tokens) and profile it."""
    if not text.strip():
        raise UsageError("cannot profile an empty text; remove empty texts from the input")
    ids, offsets, special = tokenize_with_offsets(tokenizer, text)
    limit = config.max_length or _context_length(model)
    truncated = limit is not None and len(ids) > limit
    if truncated:
        warnings.warn(f"a text of {len(ids)} tokens is longer than {limit}; only its first {limit} tokens are "
                      f"profiled (later ones get no score)", stacklevel=2)
        ids, offsets, special = ids[:limit], offsets[:limit], special[:limit]
    scores = profile_ids(model, ids, config)
    return TokenProfile(text, ids, tokenizer.convert_ids_to_tokens(ids), offsets, special, scores, truncated)


def text_sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def profile_record(index: int, model_name: str, profile: TokenProfile, config: ProfileConfig) -> dict[str, Any]:
    return {"kind": "profile", "version": RECORD_VERSION, "index": index, "model": model_name,
            "text_sha": text_sha(profile.text), "text": profile.text, "input_ids": profile.input_ids,
            "tokens": profile.tokens, "offsets": [list(o) for o in profile.offsets], "special": profile.special,
            "profile": profile.profile, "truncated": profile.truncated, "config": config.as_dict()}


def check_profile_record(record: dict[str, Any], where: str) -> None:
    """UsageError if a record read back from a file is not a profile record of this version."""
    if record.get("kind") != "profile" or record.get("version") != RECORD_VERSION:
        raise UsageError(f"{where} is not a profile file of version {RECORD_VERSION} (kind={record.get('kind')!r}, "
                         f"version={record.get('version')!r}); make it with 'attn-transition clues profile'")
    lengths = {k: len(record.get(k) or []) for k in ("input_ids", "tokens", "offsets", "special", "profile")}
    if len(set(lengths.values())) != 1:
        raise UsageError(f"{where}: record {record.get('index')} has lists of different lengths {lengths}; "
                         f"the file is damaged, recompute it")

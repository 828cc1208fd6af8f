"""The elusive-clues experiment end to end, with resumable steps and the Table-2-style summary.

Layout of the output folder::

    run.json                       settings (a resumed run must use the same ones)
    biographies.jsonl              the generated biographies (text, tagged, fields)
    qa_items.jsonl                 the questions with their few-shot prompts
    profile_small.jsonl            per-token attention profile of the small model
    profile_large.jsonl            ... of the large model
    contrast.jsonl                 both profiles on the training model's tokens, diff, rank
    baseline/                      QA of the training model before fine-tuning (optional)
    runs/<condition>-seed<k>/      train.jsonl, checkpoints/, adapter/, train_log.json,
                                   predictions.jsonl, scores.json (written last: "done")
    table.md, table.json           the summary

Conditions: ``plain`` (the original texts only), ``random``, ``attention``, ``contrast``
(originals plus ``copies`` augmented copies each). With ``equal_steps`` (the default)
``plain`` repeats each original ``copies + 1`` times, so every condition trains for the
same number of steps with the same schedule and only the content differs.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from attn_transition.errors import UsageError

from . import augment as aug
from .biographies import FIELDS, Biography, generate, to_record
from .contrast import contrast_records
from .finetune import FinetuneConfig, finetune
from .profile import ProfileConfig, attention_profile, profile_record
from .qa import PROMPT_VERSION, QAItem, build_items, generate_answers, score
from .textio import read_json, read_jsonl, write_json, write_jsonl, write_text

__all__ = ["CONDITIONS", "DEFAULT_FINETUNE", "PipelineConfig", "run_pipeline", "summarise", "markdown_table", "units_for"]

CONDITIONS = ("plain", "random", "attention", "contrast")
# Sized for the default run to finish in under 15 minutes on 2 CPU cores (see docs/clues.md).
DEFAULT_FINETUNE = FinetuneConfig(epochs=4.0, learning_rate=2e-3, batch_size=4)


@dataclass(frozen=True)
class PipelineConfig:
    biographies: int = 20
    data_seed: int = 0
    small_model: str = "smollm2-135m"
    large_model: str = "gemma3-270m"
    train_model: str = "smollm2-135m"
    conditions: tuple[str, ...] = CONDITIONS
    seeds: tuple[int, ...] = (0,)
    copies: int = 4
    alpha: float = 0.7
    beta: float = 0.1
    random_rate: str = "matched"          # "matched" (same expected drops as the ranked modes) or "flat" (alpha)
    attention_of: str = "large"
    normalise: str = "rank"
    equal_steps: bool = True
    finetune: FinetuneConfig = DEFAULT_FINETUNE
    profile: ProfileConfig = field(default_factory=ProfileConfig)
    shots: int = 3
    qa_batch_size: int = 50
    max_new_tokens: int = 12
    baseline: bool = True
    device: str = "cpu"
    cache_dir: Optional[str] = None

    def __post_init__(self) -> None:
        bad = [c for c in self.conditions if c not in CONDITIONS]
        if bad or not self.conditions:
            raise UsageError(f"--conditions must be a comma list of {', '.join(CONDITIONS)}, got "
                             f"{','.join(self.conditions) or 'nothing'}")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise UsageError(f"--seeds must be distinct integers, got {self.seeds}")
        if self.random_rate not in ("matched", "flat"):
            raise UsageError(f"--random-rate must be 'matched' or 'flat', got {self.random_rate!r}")
        if self.copies < 1 and any(c != "plain" for c in self.conditions):
            raise UsageError(f"--copies must be >= 1 for augmented conditions, got {self.copies}")
        if self.shots >= self.biographies:
            raise UsageError(f"--shots {self.shots} needs more than {self.shots} biographies, got {self.biographies}")
        # Validate the augmentation numbers now, before any model is loaded.
        aug.AugmentConfig(mode="contrast", alpha=self.alpha, beta=self.beta, copies=self.copies,
                          attention_of=self.attention_of)

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["finetune"] = self.finetune.as_dict()
        data["profile"] = self.profile.as_dict()
        data["qa_prompt"] = PROMPT_VERSION            # other prompts, other scores: a resume must match
        return data


def units_for(config: PipelineConfig) -> str:
    """Contrast units: the training model's tokens when it is one of the two, else words."""
    if config.train_model == config.small_model:
        return "small"
    if config.train_model == config.large_model:
        return "large"
    return "words"


def augment_config(config: PipelineConfig, condition: str, seed: int) -> aug.AugmentConfig:
    mode = "random" if condition == "plain" else condition
    return aug.AugmentConfig(mode=mode, alpha=config.alpha, beta=config.beta, copies=config.copies, seed=seed,
                             attention_of=config.attention_of, match_rate=config.random_rate == "matched")


def training_rows(config: PipelineConfig, condition: str, seed: int, bios: Sequence[Biography],
                  contrast: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = [{"text": b.text, "person_id": b.person_id} for b in bios]
    if condition == "plain":
        repeats = config.copies + 1 if config.equal_steps else 1
        return [{**row, "source": i, "copy": k, "mode": "plain", "dropped": 0}
                for i, row in enumerate(rows) for k in range(repeats)]
    acfg = augment_config(config, condition, seed)
    items = aug.scored_texts_from_records([r["text"] for r in rows], contrast, acfg, where="contrast.jsonl")
    return aug.augment_rows(rows, items, acfg)


_COMPUTED = ("profile_small.jsonl", "profile_large.jsonl", "baseline", "runs")


def _check_settings(out: Path, config: PipelineConfig, resume: bool) -> None:
    """UsageError if ``out`` holds a run with other settings (or any run, without ``resume``). A
    run.json with nothing computed after it (see :data:`_COMPUTED`) is replaced."""
    settings = out / "run.json"
    wanted = config.as_dict()
    if settings.exists() and any((out / name).exists() for name in _COMPUTED):
        if not resume:
            raise UsageError(f"{out} already holds a run; pass --resume to continue it (finished conditions are "
                             f"skipped) or choose another --out")
        before = read_json(settings)
        keep = ("conditions", "seeds", "baseline", "qa_batch_size", "device", "cache_dir")
        changed = sorted(k for k in wanted if k not in keep and before.get(k) != wanted[k])
        if changed:
            raise UsageError(f"{out} was made with other settings ({', '.join(changed)} differ); resume with the "
                             f"same settings or choose another --out")


def _check_models(config: PipelineConfig) -> None:
    """Resolve the model names and check --layers/--heads against the two profiled models'
    configs (no weights are loaded), so that a bad value fails before run.json is written."""
    from transformers import AutoConfig

    from attn_transition.evaluation.models import resolve_model

    from .profile import check_model_config

    where = {name: resolve_model(name, config.cache_dir)           # unknown name, missing folder: UsageError
             for name in (config.small_model, config.large_model, config.train_model)}
    for name in dict.fromkeys((config.small_model, config.large_model)):
        try:
            model_config = AutoConfig.from_pretrained(where[name])
        except (OSError, ValueError) as exc:
            raise UsageError(f"could not read the config of model {name!r}: {str(exc).splitlines()[0]}") from None
        check_model_config(model_config, config.profile, name)


def _load(name: str, config: PipelineConfig):
    from attn_transition.evaluation.models import load_model

    return load_model(name, device=config.device, cache=config.cache_dir)


def _profiles(path: Path, model_name: str, texts: Sequence[str], config: PipelineConfig, resume: bool,
              log: Callable[[str], None]) -> list[dict[str, Any]]:
    if resume and path.exists():
        records = read_jsonl(path)
        if [r.get("text") for r in records] == list(texts):
            return records
    from tqdm.auto import tqdm

    model, tokenizer = _load(model_name, config)
    started = time.perf_counter()
    records = [profile_record(i, model_name, attention_profile(model, tokenizer, t, config.profile), config.profile)
               for i, t in enumerate(tqdm(texts, desc=f"profile {model_name}", leave=False))]
    write_jsonl(path, records)
    log(f"profiled {len(texts)} texts with {model_name} in {time.perf_counter() - started:.0f} s -> {path.name}")
    del model
    return records


def _qa(model: Any, tokenizer: Any, items: Sequence[QAItem], config: PipelineConfig, folder: Path,
        extra: dict[str, Any], desc: str) -> dict[str, Any]:
    started = time.perf_counter()
    answers = generate_answers(model, tokenizer, [i.prompt for i in items], batch_size=config.qa_batch_size,
                               max_new_tokens=config.max_new_tokens, desc=desc)
    write_jsonl(folder / "predictions.jsonl",
                [{"person_id": i.person_id, "field": i.field, "question": i.question, "answer": i.answer,
                  "prediction": a} for i, a in zip(items, answers)])
    result = {**score(items, answers), **extra, "qa_seconds": time.perf_counter() - started}
    write_json(folder / "scores.json", result)          # last: marks the folder as done
    return result


def run_pipeline(out: str | Path, config: PipelineConfig = PipelineConfig(), *, resume: bool = False,
                 log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run every step; returns the summary (also written to table.json / table.md)."""
    out = Path(out)
    _check_settings(out, config, resume)
    _check_models(config)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "run.json", config.as_dict())        # only once the inputs are known good
    started = time.perf_counter()

    bios = generate(config.biographies, config.data_seed)
    write_jsonl(out / "biographies.jsonl", [to_record(b) for b in bios])
    items = build_items(bios, shots=config.shots, seed=config.data_seed)
    write_jsonl(out / "qa_items.jsonl", [i.as_dict() for i in items])
    texts = [b.text for b in bios]

    small = _profiles(out / "profile_small.jsonl", config.small_model, texts, config, resume, log)
    large = _profiles(out / "profile_large.jsonl", config.large_model, texts, config, resume, log)
    contrast = contrast_records(small, large, units=units_for(config), method=config.normalise,
                                where=("profile_small.jsonl", "profile_large.jsonl"))
    write_jsonl(out / "contrast.jsonl", contrast)

    results: dict[str, list[dict[str, Any]]] = {}
    if config.baseline:
        folder = out / "baseline"
        if resume and (folder / "scores.json").exists():
            results["none"] = [read_json(folder / "scores.json")]
        else:
            model, tokenizer = _load(config.train_model, config)
            results["none"] = [_qa(model, tokenizer, items, config, folder, {"condition": "none"}, "qa none")]
            log(f"baseline (no fine-tuning): EM {results['none'][0]['overall']['em']:.1f} "
                f"F1 {results['none'][0]['overall']['f1']:.1f}")
    for seed in config.seeds:
        for condition in config.conditions:
            folder = out / "runs" / f"{condition}-seed{seed}"
            if resume and (folder / "scores.json").exists():
                results.setdefault(condition, []).append(read_json(folder / "scores.json"))
                log(f"{condition} seed {seed}: done earlier, skipped")
                continue
            rows = training_rows(config, condition, seed, bios, contrast)
            write_jsonl(folder / "train.jsonl", rows)
            model, tokenizer = _load(config.train_model, config)
            tokenizer.padding_side = "right"
            t0 = time.perf_counter()
            tuned, summary = finetune(model, tokenizer, [r["text"] for r in rows], folder,
                                      replace(config.finetune, seed=seed), resume=resume)
            train_s = time.perf_counter() - t0
            dropped = [r["dropped"] for r in rows if r["copy"] > 0]
            extra = {"condition": condition, "seed": seed, "train_texts": len(rows), "steps": summary["steps"],
                     "train_seconds": train_s, "first_loss": summary["first_loss"],
                     "last_loss": summary["last_loss"],
                     "mean_dropped": sum(dropped) / len(dropped) if dropped else 0.0}
            result = _qa(tuned, tokenizer, items, config, folder, extra, f"qa {condition}")
            results.setdefault(condition, []).append(result)
            log(f"{condition} seed {seed}: {summary['steps']} steps in {train_s:.0f} s, loss "
                f"{summary['first_loss']:.2f} -> {summary['last_loss']:.2f}; EM {result['overall']['em']:.1f} "
                f"F1 {result['overall']['f1']:.1f}")
            del tuned, model

    summary = summarise(results, config)
    summary["wall_seconds"] = time.perf_counter() - started
    write_json(out / "table.json", summary)
    write_text(out / "table.md", markdown_table(summary))
    return summary


def _mean_spread(values: Sequence[float]) -> tuple[float, Optional[float]]:
    mean = sum(values) / len(values)
    return mean, (statistics.stdev(values) if len(values) > 1 else None)


def summarise(results: dict[str, list[dict[str, Any]]], config: PipelineConfig) -> dict[str, Any]:
    """Mean over runs (seeds) of EM/F1 per field and overall, with the sample std as spread."""
    rows = []
    order = (["none"] if "none" in results else []) + [c for c in CONDITIONS if c in results]
    for condition in order:
        runs = results[condition]
        row: dict[str, Any] = {"condition": condition, "runs": len(runs), "fields": {}}
        for f in FIELDS:
            if all(f in r["fields"] for r in runs):
                em, em_sd = _mean_spread([r["fields"][f]["em"] for r in runs])
                f1, f1_sd = _mean_spread([r["fields"][f]["f1"] for r in runs])
                row["fields"][f] = {"em": em, "f1": f1, "em_sd": em_sd, "f1_sd": f1_sd}
        em, em_sd = _mean_spread([r["overall"]["em"] for r in runs])
        f1, f1_sd = _mean_spread([r["overall"]["f1"] for r in runs])
        row["overall"] = {"em": em, "f1": f1, "em_sd": em_sd, "f1_sd": f1_sd, "n": runs[0]["overall"]["n"]}
        for key in ("steps", "train_seconds", "first_loss", "last_loss", "mean_dropped"):
            if all(key in r for r in runs):
                row[key] = sum(r[key] for r in runs) / len(runs)
        rows.append(row)
    return {"settings": config.as_dict(), "rows": rows}


_LABELS = {"none": "none (no fine-tuning)", "plain": "plain", "random": "random dropout",
           "attention": "attention dropout", "contrast": "contrast dropout"}


def _cell(mean: float, sd: Optional[float]) -> str:
    return f"{mean:.1f}" if sd is None else f"{mean:.1f} ± {sd:.1f}"


def markdown_table(summary: dict[str, Any]) -> str:
    """EM / F1 (%) per field and overall, one row per condition; spread = sample std over runs."""
    s = summary["settings"]
    fields = [f for f in FIELDS if any(f in r["fields"] for r in summary["rows"])]
    head = ["condition"] + [f"{f} EM / F1" for f in fields] + ["overall EM", "overall F1", "runs", "steps",
                                                               "dropped/copy"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in summary["rows"]:
        cells = [_LABELS.get(row["condition"], row["condition"])]
        for f in fields:
            v = row["fields"].get(f)
            cells.append("-" if v is None else f"{_cell(v['em'], v['em_sd'])} / {_cell(v['f1'], v['f1_sd'])}")
        o = row["overall"]
        cells += [_cell(o["em"], o["em_sd"]), _cell(o["f1"], o["f1_sd"]),
                  f"{row['runs']}" + ("" if row["runs"] > 1 else " (spread n/a)"),
                  f"{row['steps']:.0f}" if "steps" in row else "-",
                  f"{row['mean_dropped']:.1f}" if row.get("mean_dropped") else "-"]
        lines.append("| " + " | ".join(cells) + " |")
    ft = s["finetune"]
    lines += ["", f"{s['biographies']} biographies (data seed {s['data_seed']}), {len(FIELDS)} questions each, "
                  f"{s['shots']}-shot greedy QA; trained model {s['train_model']}; contrast {s['large_model']} - "
                  f"{s['small_model']} ({s['normalise']} normalisation); {s['copies']} augmented copies per text, "
                  f"alpha {s['alpha']}, beta {s['beta']}, random rate {s['random_rate']}; LoRA r{ft['lora_rank']}, "
                  f"lr {ft['learning_rate']}, {ft['epochs']} epochs, batch {ft['batch_size']}"
                  + ("; plain repeats originals to equal steps" if s["equal_steps"] else "") + ".",
              "EM / F1 in %; with several runs, mean ± sample std over seeds."]
    return "\n".join(lines) + "\n"

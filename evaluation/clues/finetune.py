"""LoRA continual pretraining on (original + augmented) texts through the transformers ``Trainer``.

The seed's setting: LoRA rank 16 on every linear layer except the embeddings and the
output layer, i.e. the attention and MLP projections (q/k/v/o, gate/up/down for Llama
and Gemma). Loss: the causal LM loss on every token of the text (an end-of-sequence
token is appended; padding is masked out). Because the ``Trainer`` does the loop,
multi-GPU, DeepSpeed and FSDP work the usual way (``accelerate launch`` /
``torchrun`` with the same command). A checkpoint is written at the end of every epoch
(``save_strategy="epoch"``; ``save_total_limit`` of them are kept) and the final adapter
goes to ``<out>/adapter``.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

from attn_transition.errors import UsageError

from .textio import write_json

__all__ = ["FinetuneConfig", "lora_targets", "tokenize_texts", "Collator", "finetune", "load_adapter",
           "latest_checkpoint"]

SCHEDULERS = ("linear", "constant", "cosine")


@dataclass(frozen=True)
class FinetuneConfig:
    epochs: float = 3.0
    learning_rate: float = 1e-3
    batch_size: int = 8
    grad_accum: int = 1
    lora_rank: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.0
    max_length: int = 256
    seed: int = 0
    save_total_limit: Optional[int] = 1
    logging_steps: int = 5
    scheduler: str = "linear"
    warmup: float = 0.0          # fraction of the steps (< 1) or a number of steps (>= 1)
    weight_decay: float = 0.0

    def __post_init__(self) -> None:
        checks = [("epochs", self.epochs > 0, "> 0"), ("learning_rate", 0 < self.learning_rate < 1, "in (0, 1)"),
                  ("batch_size", self.batch_size >= 1, ">= 1"), ("grad_accum", self.grad_accum >= 1, ">= 1"),
                  ("lora_rank", self.lora_rank >= 1, ">= 1"), ("lora_alpha", self.lora_alpha > 0, "> 0"),
                  ("lora_dropout", 0 <= self.lora_dropout < 1, "in [0, 1)"),
                  ("max_length", self.max_length >= 2, ">= 2"), ("logging_steps", self.logging_steps >= 1, ">= 1"),
                  ("warmup", self.warmup >= 0, ">= 0"), ("weight_decay", self.weight_decay >= 0, ">= 0")]
        for name, ok, allowed in checks:
            if not ok:
                raise UsageError(f"FinetuneConfig.{name} must be {allowed}, got {getattr(self, name)!r}")
        if self.save_total_limit is not None and self.save_total_limit < 1:
            raise UsageError(f"FinetuneConfig.save_total_limit must be >= 1 or None (keep all), "
                             f"got {self.save_total_limit}")
        if self.scheduler not in SCHEDULERS:
            raise UsageError(f"FinetuneConfig.scheduler must be one of {', '.join(SCHEDULERS)}, got {self.scheduler!r}")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def lora_targets(model: Any) -> list[str]:
    """Names (last path component) of the linear layers LoRA goes on: all but the output layer."""
    import torch

    output = model.get_output_embeddings()
    names = set()
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and module is not output:
            names.add(name.rsplit(".", 1)[-1])
    if not names:
        raise UsageError(f"{type(model).__name__} has no linear layer besides its output layer; LoRA needs some")
    return sorted(names)


def tokenize_texts(tokenizer: Any, texts: Sequence[str], max_length: int) -> list[list[int]]:
    """Token ids of each text (the tokenizer's special tokens, then EOS), cut to ``max_length``."""
    eos = tokenizer.eos_token_id
    out, cut = [], 0
    for text in texts:
        ids = list(tokenizer(text, add_special_tokens=True)["input_ids"])
        if eos is not None and (not ids or ids[-1] != eos):
            ids.append(eos)
        if len(ids) > max_length:
            cut += 1
            ids = ids[:max_length]
        out.append(ids)
    if cut:
        warnings.warn(f"{cut} of {len(texts)} training texts are longer than {max_length} tokens and were cut; "
                      f"raise --max-length to keep them whole", stacklevel=2)
    return out


class Collator:
    """Right-pads a batch; labels are the ids with padding masked (-100)."""

    def __init__(self, pad_id: int) -> None:
        self.pad_id = pad_id

    def __call__(self, features: Sequence[dict[str, Any]]) -> dict[str, Any]:
        import torch

        longest = max(len(f["input_ids"]) for f in features)
        ids = torch.full((len(features), longest), self.pad_id, dtype=torch.long)      # (batch, longest)
        mask = torch.zeros((len(features), longest), dtype=torch.long)
        for row, f in enumerate(features):
            n = len(f["input_ids"])
            ids[row, :n] = torch.tensor(f["input_ids"], dtype=torch.long)
            mask[row, :n] = 1
        labels = ids.masked_fill(mask == 0, -100)
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def latest_checkpoint(folder: Path) -> Optional[Path]:
    if not folder.is_dir():
        return None
    found = [p for p in folder.glob("checkpoint-*") if p.is_dir() and p.name.split("-")[-1].isdigit()]
    return max(found, key=lambda p: int(p.name.split("-")[-1])) if found else None


def finetune(model: Any, tokenizer: Any, texts: Sequence[str], out_dir: str | Path, config: FinetuneConfig,
             *, resume: bool = False, progress: bool = True) -> tuple[Any, dict[str, Any]]:
    """Train LoRA adapters on ``texts``; returns ``(peft_model, summary)``.

    ``<out_dir>/checkpoints/checkpoint-<step>`` after each epoch, ``<out_dir>/adapter`` at the
    end, ``<out_dir>/train_log.json`` with the Trainer's log history. With ``resume`` the
    newest checkpoint (if any) is continued.
    """
    from peft import LoraConfig, get_peft_model
    from transformers import Trainer, TrainingArguments

    if not texts:
        raise UsageError("no training texts; the input file must have at least one non-empty 'text'")
    out_dir = Path(out_dir)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if pad_id is None:
        raise UsageError("the tokenizer has neither a pad nor an EOS token; set tokenizer.pad_token first")
    data = [{"input_ids": ids} for ids in tokenize_texts(tokenizer, texts, config.max_length)]
    lora = LoraConfig(r=config.lora_rank, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                      target_modules=lora_targets(model), task_type="CAUSAL_LM")
    model.train()
    peft_model = get_peft_model(model, lora)
    args = TrainingArguments(
        output_dir=str(out_dir / "checkpoints"), num_train_epochs=config.epochs,
        per_device_train_batch_size=config.batch_size, gradient_accumulation_steps=config.grad_accum,
        learning_rate=config.learning_rate, lr_scheduler_type=config.scheduler, warmup_steps=config.warmup,
        weight_decay=config.weight_decay, logging_strategy="steps", logging_steps=config.logging_steps,
        logging_first_step=True, save_strategy="epoch", save_total_limit=config.save_total_limit,
        report_to="none", seed=config.seed, data_seed=config.seed, dataloader_num_workers=0,
        remove_unused_columns=False, disable_tqdm=not progress,
        dataloader_pin_memory=next(model.parameters()).device.type == "cuda")   # pinning helps only a GPU
    trainer = Trainer(model=peft_model, args=args, train_dataset=data, data_collator=Collator(pad_id))
    checkpoint = latest_checkpoint(out_dir / "checkpoints") if resume else None
    result = trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    peft_model.save_pretrained(str(out_dir / "adapter"))
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    summary = {"config": config.as_dict(), "texts": len(texts), "steps": trainer.state.global_step,
               "train_loss": result.training_loss, "first_loss": losses[0] if losses else math.nan,
               "last_loss": losses[-1] if losses else math.nan, "runtime_s": result.metrics.get("train_runtime"),
               "resumed_from": str(checkpoint) if checkpoint else None, "lora_targets": lora.target_modules,
               "log_history": trainer.state.log_history}
    summary["lora_targets"] = sorted(summary["lora_targets"])
    write_json(out_dir / "train_log.json", summary)
    peft_model.eval()
    return peft_model, summary


def load_adapter(model: Any, adapter: str | Path) -> Any:
    """The base ``model`` with the LoRA adapter saved in ``adapter`` (a folder) on top."""
    from peft import PeftModel

    folder = Path(adapter)
    if not (folder / "adapter_config.json").is_file():
        raise UsageError(f"{folder} is not a LoRA adapter folder (no adapter_config.json); pass the 'adapter' "
                         f"folder written by 'attn-transition clues finetune' or one of its checkpoint-* folders")
    return PeftModel.from_pretrained(model, str(folder)).eval()

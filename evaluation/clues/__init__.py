"""Elusive clues: contrast the attention of a large and a small model, drop tokens by that contrast
while fine-tuning, and measure fact memorisation with biography QA.

Steps (each a module, each a sub-subcommand of ``attn-transition clues``):

* :mod:`.biographies` - seeded synthetic biographies with tagged answer spans and questions;
* :mod:`.profile` - per-token attention received from later tokens, one layer at a time;
* :mod:`.align` / :mod:`.contrast` - map two models' profiles onto one set of units, normalise, subtract;
* :mod:`.augment` - token-dropout augmentation (``random`` / ``attention`` / ``contrast``);
* :mod:`.finetune` - LoRA continual pretraining through the transformers ``Trainer``;
* :mod:`.qa` - few-shot greedy QA, exact match and token F1 per field;
* :mod:`.pipeline` - all of it end to end, with the Table-2-style summary.

Modules that need torch/transformers import them inside functions, so the pure parts
(generator, alignment, dropout law, scorer) import fast.
"""

__all__ = ["biographies", "profile", "align", "contrast", "augment", "finetune", "qa", "pipeline", "textio"]

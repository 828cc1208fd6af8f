"""``attn-transition generate``: XSum-style summaries, plain and with attention transition,
written in the seed's JSON format.

The seed paper generated XSum summaries with LLaMA-7b for documents of about 800, 1200,
1600 and 1900 prompt tokens, once plainly (``decode_or``) and once per attention-transition
setting (``decode_al_05_be_01_lay_2`` ...), and stored them as a JSON list for a judge.
This package is that workflow as a Python API (used by the notebook) and a command:

    from attn_transition.evaluation.xsum import (generate_records, load_documents, load_template, new_record,
                                                 parse_grid, render_prompts)

    docs = load_documents("data.jsonl")                    # or "EdinburghNLP/xsum"
    template = load_template("auto", tokenizer)             # base / chat / a JSON file
    prompts = render_prompts(template, tokenizer, docs)
    records = [new_record(d) for d in docs]
    generate_records(model, tokenizer, records, prompts, parse_grid("alpha=0.5,1;beta=0.1"),
                     add_special_tokens=template.add_special_tokens, max_new_tokens=50)

Layers, each usable on its own:

* :mod:`.data`: the documents (JSON / JSONL / CSV files, the hub), checked row by row;
* :mod:`.templates`: versioned prompt templates (``evaluation/prompts/``) and prompt lengths;
* :mod:`.selection`: documents by prompt-length bucket (the seed's) or the first N;
* :mod:`.runner`: the configs keyed by output name (the grid syntax itself is
  :func:`attn_transition.config.parse_grid`) and the generation loop (one pass per output key,
  batches left padded);
* :mod:`.store`: the output, its ``.meta.json`` sidecar, rank shards and their merging (the
  processes themselves: :mod:`..runtime.dist`);
* :mod:`.cli`: the command, one run in named steps (resume, shards, saving after every batch).

The command's names (``add_arguments``, ``run``, ``EPILOG``) stay in :mod:`.cli`: importing
it registers the command.
"""

from attn_transition.config import SEED_GRID, parse_grid, seed_grid

from .data import HUB_DATASET, SAMPLE_PATH, load_documents, new_record
from .runner import collect_configs, generate_batch, generate_records
from .selection import Selection, bucket_of, select_by_buckets, select_first
from .store import merge_outputs, meta_path, shard_indices
from .templates import PromptTemplate, load_template, prompt_lengths, render_prompts

__all__ = [
    "SAMPLE_PATH", "HUB_DATASET", "SEED_GRID", "PromptTemplate", "Selection", "load_documents",
    "load_template", "render_prompts", "prompt_lengths", "bucket_of", "select_by_buckets", "select_first",
    "seed_grid", "parse_grid", "collect_configs", "new_record", "merge_outputs", "shard_indices",
    "generate_batch", "generate_records", "meta_path",
]

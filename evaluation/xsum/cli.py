"""``attn-transition generate``: the command.

:func:`run` goes through the steps of one :class:`GenerateRun`, each a method: check the paths
and settings (nothing is loaded before they are known to be good), start the processes, read
what ``--resume`` keeps, load the documents and the model, select, merge the shards an
interrupted multi-process run left, generate (output and sidecar saved after every batch), and
finish (rank 0 merges the ranks' shards). A resumed file is rewritten only once something in
it changes, so a file written by the seed's own code keeps its bytes.

About 400 lines: the command's every flag and the run's steps read best side by side; the
steps' work is in the sibling modules.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import Any, Optional

from attn_transition.commands import register_command
from attn_transition.config import TransitionConfig, config_dict
from attn_transition.errors import UsageError

from ..models import DEFAULT_MODEL, MODEL_FLAGS
from ..runtime.dist import Shard, barrier, close, detect_shard
from ..runtime.files import check_outputs, check_paths
from ..runtime.requirements import require_embedded
from ..runtime.versions import library_versions
from ..seedformat import PLAIN_KEY, read_records, write_json_atomic, write_records
from . import store
from .data import HUB_DATASET, SAMPLE_NAME, data_path, load_documents, new_record
from .runner import check_generation, collect_configs, generate_records
from .selection import bucket_of, check_buckets, check_limit, select_documents
from .store import (META_FORMAT, add_timings, combine_timings, drop_merged_shards, existing_shards, meta_path,
                    missing_outputs, read_meta, shard_indices, shard_path)
from .templates import PromptTemplate, load_template, prompt_lengths, render_prompts

__all__ = ["GenerateRun", "add_arguments", "run", "EPILOG"]

EPILOG = """examples:
  # the seed's experiment: LLaMA-7b, four length buckets, the full grid, 50 new tokens
  attn-transition generate --model huggyllama/llama-7b --dtype float16 --device cuda \\
      --buckets 800,1200,1600,1900 --per-bucket 200 --grid seed --max-new-tokens 50 -o xsum_llama7b.json
  # the packaged sample of news articles, two explicit configs, SmolLM2 on CPU
  attn-transition generate sample --limit 3 --config classic --config sra -o out.json
  # a compact grid; then fill what is missing after an interruption
  attn-transition generate data.jsonl --grid 'alpha=0.5,1;beta=0.1,0.5;intervals_per_layer=2' -o out.json
  attn-transition generate data.jsonl -o out.json --resume      # the grid and settings: out.json.meta.json's
  # several GPUs (documents sharded by rank; rank 0 merges)
  accelerate launch -m attn_transition.cli generate --model huggyllama/llama-7b --dtype float16 --grid seed ...

Output: a JSON list of {document, summary, id, decode_or, decode_<config>...} plus
<output>.meta.json (model, prompt template, grid, settings, versions, timings, buckets).
"""


def _int_list(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated ints like 800,1200, got {text!r}") from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..models import add_model_arguments

    parser.add_argument("data", nargs="?", default=None,
                        help=f"a local .json / .jsonl / .csv file with fields document, summary, id; "
                             f"'{SAMPLE_NAME}' for the packaged sample of news articles; or a hub dataset id "
                             f"(default {HUB_DATASET}; with --resume and no data: the output's own documents)")
    parser.add_argument("-o", "--output", required=True, help="output JSON file (the seed's format)")
    parser.add_argument("--split", default="test", help="dataset split for a hub dataset (default test; a local "
                                                        "file has none, and the metadata records null)")
    sel = parser.add_argument_group("document selection")
    sel.add_argument("--buckets", type=_int_list, default=None,
                     help="prompt-token lengths to select around, e.g. 800,1200,1600,1900 (the seed's)")
    sel.add_argument("--per-bucket", type=int, default=200, help="documents per bucket (default 200)")
    sel.add_argument("--bucket-tolerance", type=float, default=0.1,
                     help="accepted relative distance from a bucket (default 0.1 = +-10%%)")
    sel.add_argument("--limit", type=int, default=None,
                     help="at most this many documents (the first ones, after bucketing if --buckets)")
    sel.add_argument("--shuffle", action="store_true", help="shuffle the documents (with --seed) before selecting")
    sel.add_argument("--seed", type=int, default=0, help="seed of --shuffle (generation is greedy; default 0)")
    gen = parser.add_argument_group("generation")
    gen.add_argument("--template", default=None,
                     help="prompt: base (the seed's '<document> Please summarize context above:'), chat (a "
                          "system instruction + chat template), auto (chat if the tokenizer has a chat "
                          "template; default) or a JSON template file")
    gen.add_argument("--grid", default=None,
                     help="'seed' (alpha 0.5,1,1.5 x beta 0.1..1.5 x intervals 1,2,3 = 63 configs), 'none', or "
                          "a spec like 'alpha=0.5,1;beta=0.1,0.5;intervals_per_layer=2' (prefix 'sra:' for SRA)")
    gen.add_argument("--config", action="append", default=None, metavar="SPEC",
                     help="an explicit config, repeatable: classic, sra, classic:alpha=1,beta=0.5 "
                          "(default without --grid: classic)")
    gen.add_argument("--no-plain", action="store_true", default=None,
                     help="do not generate the plain output decode_or")
    gen.add_argument("--max-new-tokens", type=int, default=None,
                     help=f"new tokens per summary (default {RESUMED['max_new_tokens'][0]}, the seed's)")
    gen.add_argument("--batch-size", type=int, default=4, help="documents per generate call (default 4)")
    gen.add_argument("--engine", choices=("transformers", "vllm"), default="transformers",
                     help="transformers (default) or vllm: each pass on a vLLM engine with the transition plugin "
                          "(run from the vLLM environment, make setup-vllm; see docs/vllm.md)")
    run_group = parser.add_argument_group("run")
    run_group.add_argument("--resume", action="store_true",
                           help="keep the existing output (also one written by the seed's code) and fill only "
                                "missing outputs; --model, --dtype, --template, --max-new-tokens and the configs "
                                "(--grid, --config, --no-plain) not given come from its metadata file")
    run_group.add_argument("--overwrite", action="store_true", help="replace an existing output")
    run_group.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_model_arguments(parser)
    for action in parser._actions:        # the model group's own defaults: see RESUMED
        if action.dest in ("model", "dtype"):
            action.default = None
    for action in parser._actions:
        if action.dest in RESUMED:
            action.help = f"{action.help}; --resume without it: the output's own"


def _template_spec(recorded: Any) -> Optional[str]:
    """The ``--template`` that renders the prompts a sidecar's ``prompt_template`` records: a
    built-in one by its kind, a file by its path (None when the record names neither)."""
    if not isinstance(recorded, dict):
        return None
    if recorded.get("source") == "builtin":
        return recorded.get("kind") if recorded.get("kind") in ("base", "chat") else None
    source = recorded.get("source")
    return source if isinstance(source, str) and source else None


def _recorded(meta: dict, section: str, key: str) -> Any:
    """``meta[section][key]``, None where the sidecar lacks it."""
    part = meta.get(section)
    return part.get(key) if isinstance(part, dict) else None


# The settings a resumed output's sidecar supplies when the command line leaves them out (their
# options default to None): dest -> (the default without a sidecar, the sidecar's value or None).
RESUMED: dict[str, tuple[Any, Any]] = {
    "model": (DEFAULT_MODEL, lambda meta: _recorded(meta, "model", "name")),
    "dtype": ("float32", lambda meta: _recorded(meta, "model", "dtype")),
    "template": ("auto", lambda meta: _template_spec(meta.get("prompt_template"))),
    "max_new_tokens": (50, lambda meta: _recorded(meta, "generation", "max_new_tokens")),
}
# The configs come as one: from the sidecar only when none of --grid, --config, --no-plain is given.
_CONFIG_DESTS = ("grid", "config", "no_plain")


class GenerateRun:
    """The state of one run; :func:`run` calls the steps in order, each setting what the later ones read."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.started_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
        self.t0 = time.perf_counter()
        self.output = Path(args.output).expanduser()
        self.meta_file = meta_path(self.output)
        self.dist = Shard()
        self.device: Optional[str] = args.device  # the model's (each rank's own under a launch)
        self.configs: dict[str, TransitionConfig] = {}
        self.keys: list[str] = []                 # the outputs of every record: decode_or first, then each config's
        self.old_meta: dict = {}                  # the resumed output's sidecar ({} without one)
        self.records: list[dict] = []             # the output's records, in output order
        self.docs: list[dict] = []                # the documents read (none when resuming on the output's own)
        self.data_source = ""
        self.data_split: Optional[str] = None     # the hub dataset's split; None for a local file
        self.model: Any = None
        self.tokenizer: Any = None
        self.template: Optional[PromptTemplate] = None
        self.num_layers: Optional[int] = None
        self.bucket_by_id: dict[str, Optional[int]] = {}
        self.appended = 0                         # records added to the resumed output
        self.merged = 0                           # outputs merged from an interrupted run's shards
        self.prompts: list[str] = []
        self.lengths: list[int] = []              # prompt tokens of each record
        self.mine: list[int] = []                 # positions of the records this rank generates
        self.target = self.output                 # the file this rank writes
        self.timings: dict[str, dict] = {}        # passes this rank finished in this run
        self.rewrite = False                      # the records on disk are out of date
        self.from_meta: list[str] = []            # the flags whose values the resumed sidecar gave
        self.done_before = 0                      # outputs the records held when generation began

    def note(self, text: str) -> None:
        """One line on stderr, from rank 0 only."""
        if self.dist.main:
            print(f"attn-transition generate: {text}", file=sys.stderr, flush=True)

    # ----------------------------------------------------------------------- steps before the model

    def check_paths(self) -> None:
        args, output = self.args, self.output
        if output.is_dir():
            raise UsageError(f"-o {output} is a folder; pass a file name such as {output / 'xsum.json'}")
        check_outputs(files={"-o": args.output})
        if args.resume and args.overwrite:
            raise UsageError("--resume and --overwrite exclude each other: --resume keeps the existing output and "
                             "fills what is missing, --overwrite starts over")
        data = data_path(args.data) if args.data else None
        data = data if data is not None and data.exists() else None                          # else a hub id
        template = args.template if args.template and Path(args.template).suffix == ".json" else None
        check_paths(inputs={"input data": data, "--template": template},
                    outputs={"-o": output, "metadata file": self.meta_file})
        if output.exists() and not (args.resume or args.overwrite):
            raise UsageError(f"{output} already exists; pass --resume to fill its missing outputs or --overwrite "
                             f"to replace it")
        if existing_shards(output) and not (args.resume or args.overwrite):
            names = ", ".join(p.name for p in existing_shards(output))
            raise UsageError(f"{names} hold the outputs of an interrupted multi-process run of {output.name}; pass "
                             f"--resume to keep and complete them or --overwrite to start over")

    def resolve_settings(self) -> None:
        """The settings not given on the command line: on ``--resume``, those the output's sidecar
        records (so a resume repeats the run it continues), else the defaults. A setting given
        explicitly is kept; :meth:`check_resumable` refuses one that would mix outputs."""
        args = self.args
        if args.resume and self.output.exists():
            self.old_meta = read_meta(self.meta_file) or {}
        meta = self.old_meta
        for dest, (default, recorded) in RESUMED.items():
            if getattr(args, dest) is None:
                value = recorded(meta) if meta else None
                setattr(args, dest, default if value is None else value)
                if value is not None:
                    self.from_meta.append(f"--{dest.replace('_', '-')} {value}")
        grid = meta.get("grid") if isinstance(meta.get("grid"), dict) else None
        if grid is not None and all(getattr(args, dest) is None for dest in _CONFIG_DESTS):
            given = grid.get("configs_given")
            args.grid = grid.get("spec") if isinstance(grid.get("spec"), str) else None
            args.config = [str(c) for c in given] if isinstance(given, list) else []
            args.no_plain = grid.get("plain") is False
            self.from_meta.append("the configs")
        args.config = [] if args.config is None else args.config
        args.no_plain = bool(args.no_plain)

    def check_settings(self) -> None:
        args = self.args
        self.configs = collect_configs(args.grid, args.config)
        if not self.configs and args.no_plain:
            raise UsageError("nothing to generate: --no-plain and an empty grid with no --config")
        self.keys = ([PLAIN_KEY] if not args.no_plain else []) + list(self.configs)
        if args.buckets is not None:
            check_buckets(args.buckets, args.per_bucket, args.bucket_tolerance)
        check_limit(args.limit)
        check_generation(args.max_new_tokens, args.batch_size)
        require_embedded([args.model], args.cache_dir)

    def start_processes(self) -> None:
        self.dist = detect_shard()
        if self.dist.world > 1 and self.args.device_map:
            raise UsageError("--device-map spreads one model over several GPUs; under accelerate launch each "
                             "process holds a whole model: drop --device-map or run one process")
        if self.dist.world > 1:
            self.device = self.dist.device()

    def read_previous(self) -> None:
        """With ``--resume``: the existing output's records (its sidecar was read by
        :meth:`resolve_settings`)."""
        if self.args.resume and self.output.exists():
            self.records = read_records(self.output)

    def read_documents(self) -> None:
        """The data argument's documents; without one on a resume, the output's own records."""
        source = self.args.data
        if source is not None or not self.records:
            source = source or HUB_DATASET
            self.docs = load_documents(source, self.args.split)
            if not self.docs:
                raise UsageError(f"{source} holds no documents")
            self.data_split = None if data_path(source).is_file() else self.args.split
        else:
            source = self.old_meta.get("data", {}).get("source") or str(self.output)
            self.data_split = self.old_meta.get("data", {}).get("split")
        self.data_source = source

    # ----------------------------------------------------------------------- model, selection, resume

    def load_model(self) -> None:
        from ..models import load_model

        args = self.args
        self.model, self.tokenizer = load_model(args.model, device=self.device, dtype=args.dtype,
                                                device_map=args.device_map, cache=args.cache_dir)
        self.template = load_template(args.template, self.tokenizer)
        self.check_resumable(self.old_meta, self.output)
        if args.resume:
            for shard in existing_shards(self.output):     # each rank's sidecar records the run it belongs to
                self.check_resumable(read_meta(meta_path(shard)), shard)
        try:
            from attn_transition.families import schedule_layout

            self.num_layers = schedule_layout(self.model.config)[0]   # hybrids: attention layers only
        except Exception:
            pass

    def check_resumable(self, meta: Optional[dict], path: Path) -> None:
        """Refuse to mix generations made with another model, prompt or length in one file."""
        args, template = self.args, self.template
        if not meta:
            return
        old_model = (meta.get("model") or {}).get("name")
        if old_model is not None and old_model != args.model:
            raise UsageError(f"{path} was generated with --model {old_model}; resuming with {args.model} would mix "
                             f"models in one file (use the same --model, or --overwrite / another -o)")
        old_template = meta.get("prompt_template")
        if old_template is not None and not template.same_prompt(old_template):
            raise UsageError(f"{path} was generated with prompt template {old_template.get('name')!r} "
                             f"v{old_template.get('version')}; resuming with {template.name!r} v{template.version} "
                             f"would mix prompts (pass the same --template, or --overwrite / another -o)")
        old_max = (meta.get("generation") or {}).get("max_new_tokens")
        if old_max is not None and old_max != args.max_new_tokens:
            raise UsageError(f"{path} was generated with --max-new-tokens {old_max}; resuming with "
                             f"{args.max_new_tokens} would mix lengths (pass --max-new-tokens {old_max})")

    def select(self) -> None:
        """Append the selected documents the output lacks (on every rank alike: same data, same
        tokenizer, same order) and note the buckets left short."""
        args, docs = self.args, self.docs
        if args.shuffle:
            order = list(range(len(docs)))
            random.Random(args.seed).shuffle(order)
            docs = [docs[i] for i in order]
        self.bucket_by_id = {d.get("id"): d.get("bucket") for d in self.old_meta.get("documents", [])
                             if isinstance(d, dict)}
        if not docs:
            return
        selection = select_documents(docs, self.tokenizer, self.template, buckets=args.buckets,
                                     per_bucket=args.per_bucket, tolerance=args.bucket_tolerance, limit=args.limit)
        for b in args.buckets or ():
            got = selection.buckets.count(b)
            if got < args.per_bucket:
                self.note(f"bucket {b}: {got} of {args.per_bucket} documents within "
                          f"+-{args.bucket_tolerance:.0%} (scanned {selection.scanned})")
        known = {str(r["id"]) for r in self.records}
        for i, b in zip(selection.indices, selection.buckets):
            self.bucket_by_id[docs[i]["id"]] = b
            if str(docs[i]["id"]) not in known:
                self.records.append(new_record(docs[i]))
                self.appended += 1
                known.add(str(docs[i]["id"]))

    def check_context(self) -> None:
        """UsageError before anything is generated when a prompt plus the new tokens exceeds the model's
        context (positions past it are not defined for the model: refused, never truncated silently)."""
        config = getattr(self.model.config, "text_config", None) or self.model.config
        limit = getattr(config, "max_position_embeddings", None)
        over = [(rec["id"], n) for rec, n in zip(self.records, self.lengths)
                if limit and n + self.args.max_new_tokens > limit]
        if over:
            shown = ", ".join(f"{i} ({n} tokens)" for i, n in over[:3]) + (" ..." if len(over) > 3 else "")
            raise UsageError(f"{len(over)} of {len(self.records)} prompts plus max_new_tokens={self.args.max_new_tokens} "
                             f"exceed the model's context of {limit} tokens: {shown}; select shorter documents "
                             f"(--buckets, --limit) or a model with a longer context")

    def measure(self) -> None:
        """Every record's prompt and its length; the bucket of records that have none yet."""
        args, template = self.args, self.template
        self.prompts = render_prompts(template, self.tokenizer, self.records)
        self.lengths = prompt_lengths(self.tokenizer, self.prompts, template.add_special_tokens)
        self.check_context()
        if args.buckets is not None:
            for rec, n in zip(self.records, self.lengths):
                if self.bucket_by_id.get(rec["id"]) is None:
                    self.bucket_by_id[rec["id"]] = bucket_of(n, args.buckets, args.bucket_tolerance)

    def resume_shards(self) -> None:
        """Outputs from an interrupted multi-process run; shards of it are dropped on ``--overwrite``."""
        args, dist = self.args, self.dist
        if args.resume:
            self.merged = store.merge_shards(self.output, self.records)
        self.mine = shard_indices(len(self.records), dist.rank, dist.world)
        self.target = self.output if dist.world == 1 else shard_path(self.output, dist.rank)
        self.rewrite = (dist.world > 1 or not self.output.exists() or args.overwrite or self.appended > 0
                        or self.merged > 0)
        if args.overwrite and dist.main:
            store.remove_shards(self.output)   # an earlier run's shards must not be merged into this one
        barrier(dist)           # every rank has read (or dropped) the old shards before any is rewritten

    # ----------------------------------------------------------------------- generation and files

    def save(self, changed: bool = False) -> None:
        """This rank's records (once they differ from the file) and its sidecar."""
        self.rewrite = self.rewrite or changed
        if self.rewrite:
            write_records(self.target, [self.records[i] for i in self.mine])
        if self.dist.world == 1:
            write_json_atomic(self.meta_file, self.meta(self.timings, finished=False))
        else:
            write_json_atomic(meta_path(self.target), {
                "rank": self.dist.rank, "world_size": self.dist.world, "timings": self.timings,
                "model": {"name": self.args.model}, "prompt_template": self.template.as_dict(),
                "generation": {"max_new_tokens": self.args.max_new_tokens}})

    def generate(self) -> None:
        args, dist = self.args, self.dist
        self.save()
        if self.from_meta:                  # said once the run is known to go ahead
            self.note(f"resuming with the settings of {self.meta_file.name}: {', '.join(self.from_meta)}")
        sharded = f", sharded over {dist.world} processes" if dist.world > 1 else ""
        self.note(f"{len(self.records)} documents (prompts {min(self.lengths)}..{max(self.lengths)} tokens{sharded}), "
                  f"{len(self.keys)} outputs each, {missing_outputs(self.records, self.keys)} to generate; "
                  f"template {self.template.name} v{self.template.version}")
        mine = self.mine
        self.done_before = self.finished_outputs()
        try:
            run_records, model = generate_records, self.model
            if args.engine == "vllm":                        # the same loop on vLLM engines
                if dist.world > 1:
                    raise UsageError("--engine vllm runs in one process (vLLM spreads a model itself); drop "
                                     "accelerate launch", field="engine")
                from .vllm_engine import generate_records as vllm_records

                run_records, model = partial(vllm_records, dtype=args.dtype, cache=args.cache_dir), args.model
            run_records(
                model, self.tokenizer, [self.records[i] for i in mine], [self.prompts[i] for i in mine],
                self.configs, add_special_tokens=self.template.add_special_tokens,
                max_new_tokens=args.max_new_tokens, batch_size=args.batch_size, include_plain=not args.no_plain,
                lengths=[self.lengths[i] for i in mine], on_batch=partial(self.save, changed=True),
                timings=self.timings, progress=not args.no_progress and dist.main)
        finally:
            self.save()

    def finished_outputs(self) -> int:
        """How many of the outputs (``keys`` of every record) the records hold."""
        return len(self.records) * len(self.keys) - missing_outputs(self.records, self.keys)

    def interrupted(self) -> str:
        """What a Ctrl-C during :meth:`generate` leaves, as it is: the outputs finished and saved in
        this run, or that none was (and what the file holds then)."""
        target, now = self.target, self.finished_outputs()
        resume = "continue with the same command plus --resume"
        if now > self.done_before:
            new = now - self.done_before
            return (f"interrupted; finished work was saved: {new} new output{'s' if new != 1 else ''} in {target} "
                    f"({now} of {len(self.records) * len(self.keys)} done); {resume}")
        if self.done_before:
            return f"interrupted before a batch finished: no new output; {target} holds its {now} earlier ones; {resume}"
        return (f"interrupted before the first batch finished: no output was generated; {target} lists the "
                f"{len(self.records)} selected documents without outputs; {resume}")

    def _drop_merged_shards(self) -> None:
        missing = drop_merged_shards(self.output, self.records, self.keys)
        if missing:
            self.note(f"{missing} outputs are still missing; the rank shards stay next to {self.output.name} "
                      f"for a later --resume")

    def finish(self) -> None:
        """The final output and sidecar: rank 0 merges the ranks' shards under a launch."""
        dist = self.dist
        if dist.world > 1:
            barrier(dist)
            if dist.main:
                per_rank = store.merge_rank_shards(self.output, self.records, dist.world)
                write_records(self.output, self.records)
                write_json_atomic(self.meta_file, self.meta(combine_timings(per_rank), finished=True))
                self._drop_merged_shards()
            close(dist)                 # every rank waits for rank 0's merge
        else:
            write_json_atomic(self.meta_file, self.meta(self.timings, finished=True))
            if self.merged:
                self._drop_merged_shards()
        if self.rewrite:
            self.note(f"wrote {len(self.records)} records x {len(self.keys)} outputs to {self.output} (metadata "
                      f"{self.meta_file.name}) in {time.perf_counter() - self.t0:.1f} s")
        else:
            self.note(f"nothing was missing: {self.output} is unchanged (metadata {self.meta_file.name} written)")

    def meta(self, timings: dict[str, dict], finished: bool) -> dict:
        """The sidecar: how the output was made, with the timings of this run added to earlier ones'."""
        args, model, old = self.args, self.model, self.old_meta
        grid_configs = dict(old.get("grid", {}).get("configs", {}))
        grid_configs.update({k: config_dict(c) for k, c in self.configs.items()})
        this_run = {"started": self.started_at, "finished": finished, "world_size": self.dist.world,
                    "seconds": round(time.perf_counter() - self.t0, 3), "generated": timings,
                    "argv_grid": args.grid, "argv_configs": list(args.config)}
        buckets = args.buckets
        return {
            "format": META_FORMAT,
            "output": self.output.name,
            "model": {"name": args.model, "model_type": getattr(model.config, "model_type", None),
                      "num_layers": self.num_layers, "dtype": args.dtype,
                      "device": str(getattr(model, "device", self.device)), "device_map": args.device_map},
            "prompt_template": self.template.as_dict(),
            "data": {"source": str(self.data_source), "split": self.data_split, "shuffle": args.shuffle},
            "selection": {"buckets": buckets, "per_bucket": args.per_bucket if buckets else None,
                          "bucket_tolerance": args.bucket_tolerance if buckets else None,
                          "limit": args.limit,
                          "counts": ({str(b): sum(1 for r in self.records if self.bucket_by_id.get(r["id"]) == b)
                                      for b in buckets} if buckets else None)},
            "grid": {"spec": args.grid, "configs_given": list(args.config), "plain": not args.no_plain,
                     "keys": self.keys, "configs": grid_configs},
            "generation": {"max_new_tokens": args.max_new_tokens, "do_sample": False, "num_beams": 1,
                           "batch_size": args.batch_size, "padding_side": "left",
                           "add_special_tokens": self.template.add_special_tokens},
            "versions": library_versions(),
            "seed": args.seed,
            "timings": add_timings(old.get("timings", {}), timings),
            "runs": list(old.get("runs", [])) + [this_run],
            "documents": [{"id": r["id"], "bucket": self.bucket_by_id.get(r["id"]), "prompt_tokens": n}
                          for r, n in zip(self.records, self.lengths)],
        }


def run(args: argparse.Namespace) -> int:
    job = GenerateRun(args)
    job.check_paths()
    job.resolve_settings()          # a resume's unspecified settings: its sidecar's
    job.check_settings()            # cheap checks first: nothing is loaded before the arguments are good
    job.start_processes()
    job.read_previous()
    job.read_documents()
    job.load_model()
    job.select()
    job.measure()
    job.resume_shards()
    try:
        job.generate()
    except KeyboardInterrupt:
        if job.dist.main:
            print(f"attn-transition generate: {job.interrupted()}", file=sys.stderr, flush=True)
        return 130
    job.finish()
    return 0


register_command('generate', help="XSum-style generation into the seed's JSON format",
                 add_arguments=add_arguments, run=run, epilog=EPILOG,
                 flags={"max_new_tokens": "--max-new-tokens", "batch_size": "--batch-size", "template": "--template",
                        "configs": "--config", "grid": "--grid",
                        **MODEL_FLAGS})

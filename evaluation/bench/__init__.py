"""``attn-transition bench``: a seeded long-context comprehension benchmark that compares the
stock model with attention-transition configs on identical prompts.

Layers, each usable on its own:

* :mod:`.tasks`: task generators (pure, seeded) and the versioned task texts ``tasks/v1.json``;
* :mod:`.prompts`: prompts of a target length in a tokenizer's tokens, needles at a depth;
* :mod:`.scoring`: normalised exact match on the first generated line;
* :mod:`.analysis`: accuracy tables and paired statistics;
* :mod:`.store`: append-only JSONL log and atomic results JSON (resume);
* :mod:`.runner`: model I/O (batched greedy generation, enable/disable, data parallel);
* :mod:`.report`: Markdown summary and plots; :mod:`.cli`: the command.

``--suite ruler`` (lm-evaluation-harness's RULER tasks that build their data offline):

* :mod:`.ruler`: runs the RULER tasks per (task, length, config) through lm_eval on one model,
  the same documents for stock and every config, into the record log (resume);
* :mod:`.ruler_report`: pairing by document, statistics, ``results.json`` / ``results.md`` and the plot;
* :mod:`.ruler_cli`: the suite's options, output folder, model loading and summary.
"""

from .runner import BenchSettings, run_bench
from .tasks import TASKS, make_samples

__all__ = ["BenchSettings", "run_bench", "TASKS", "make_samples"]

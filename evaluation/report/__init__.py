"""``attn-transition report SCORES``: an honest report over judged scores.

SCORES is our scores file (``attn-transition judge`` output) or a seed judged file (a JSON
list of records with ``gpt4_eva`` and ``eval_scores``); the kind is detected. The seed's
free-text scores are parsed strictly: only documents where every candidate gets exactly
one score are used, the others are listed as excluded with the reason.

Layers, each usable on its own:

* :mod:`.paired`: :class:`ReportOptions` and the paired statistics every section shares
  (means, differences to plain with bootstrap intervals, the cross-fitted best config);
* :mod:`.lengths`: the same summary per length bucket;
* :mod:`.rouge`: ROUGE against the reference summary (``rouge_score``);
* :mod:`.noise`: the judge's noise and position bias across repeats;
* :mod:`.analysis`: the whole report as a JSON-able dict (what it holds, and its schema);
* :mod:`.markdown`: the report as Markdown, one function per section;
* :mod:`.plots`: PNG plots (matplotlib); :mod:`.cli`: the command.
"""

from .analysis import ORACLE_LABEL, REPORT_FORMAT, build_report
from .lengths import length_variable
from .markdown import render_markdown
from .paired import ReportOptions, crossfit_best
from .plots import write_plots
from .rouge import rouge_scores

__all__ = ["ReportOptions", "build_report", "render_markdown", "write_plots", "length_variable",
           "crossfit_best", "rouge_scores", "REPORT_FORMAT", "ORACLE_LABEL"]

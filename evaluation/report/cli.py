"""``attn-transition report SCORES``: an honest report over judged scores.

Thin layer: checks the output paths, parses options into :class:`~.paired.ReportOptions`,
loads the scores (a missing or malformed input is named before anything else is said), checks
the optional packages, then builds the report (:func:`~.analysis.build_report`) and prints or
writes it as Markdown, JSON and plots.
"""

from __future__ import annotations

import argparse
from typing import Optional

from attn_transition.commands import register_command
from attn_transition.errors import UsageError

from ..judge.client import import_optional
from ..judge.scores import load_scores
from ..runtime.files import check_outputs, check_paths, write_text_atomic
from ..seedformat import write_json_atomic
from . import analysis
from .analysis import build_report
from .markdown import render_markdown
from .paired import ReportOptions
from .plots import PLOTS_HINT, write_plots
from .rouge import ROUGE_HINT

__all__ = ["EPILOG", "parse_edges", "add_arguments", "run"]

EPILOG = """examples:
  attn-transition report out.scores.json --markdown report.md --json report.json --plots plots/
  attn-transition report token_1200_evaluation.json       # a seed judged file (gpt4_eva parsed strictly)

""" + analysis.__doc__[analysis.__doc__.index("``--json PATH``"):].replace("``", "")


def parse_edges(spec: Optional[str]) -> Optional[tuple[float, ...]]:
    """'800,1200' -> (800.0, 1200.0): inner bucket edges."""
    if spec is None:
        return None
    try:
        edges = tuple(sorted(float(x) for x in spec.split(",") if x.strip()))
    except ValueError:
        edges = ()
    if not edges:
        raise UsageError(f"--length-edges must be comma-separated numbers such as 800,1200, got {spec!r}")
    return edges


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("scores", metavar="SCORES", help="our scores file (OUTPUTS.scores.json) or a seed judged file")
    parser.add_argument("--json", metavar="PATH", help="write the report as JSON (its schema is printed at the end of this help)")
    parser.add_argument("--markdown", metavar="PATH", help="write the report as Markdown")
    parser.add_argument("--plots", metavar="DIR", help="write PNG plots into DIR")
    parser.add_argument("--outputs", metavar="PATH", help="the generation file that was judged (default: the one "
                                                           "named in the scores file)")
    parser.add_argument("--length-buckets", type=int, default=3, metavar="N",
                        help="number of equal-count length buckets (default 3)")
    parser.add_argument("--length-edges", metavar="E1,E2", help="explicit inner bucket edges instead, e.g. 800,1200")
    parser.add_argument("--folds", type=int, default=5, help="folds of the cross-fitted best fixed config")
    parser.add_argument("--n-boot", type=int, default=10000, help="bootstrap resamples")
    parser.add_argument("--confidence", type=float, default=0.95, help="level of the confidence intervals")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap and fold seed")
    parser.add_argument("--no-rouge", action="store_true", help="skip ROUGE")


def run(args: argparse.Namespace) -> int:
    check_outputs(files={"--json": args.json, "--markdown": args.markdown}, folders={"--plots": args.plots})
    check_paths(inputs={"SCORES": args.scores, "--outputs": args.outputs},
                outputs={"--json": args.json, "--markdown": args.markdown})
    options = ReportOptions(n_boot=args.n_boot, confidence=args.confidence, seed=args.seed, folds=args.folds,
                            length_buckets=args.length_buckets, length_edges=parse_edges(args.length_edges),
                            rouge=not args.no_rouge)
    table = load_scores(args.scores, args.outputs)   # the inputs first: a missing file before a missing package
    if options.rouge:           # missing optional packages: say so before any work
        import_optional("rouge_score.rouge_scorer", "ROUGE", "rouge_score", ROUGE_HINT)
    if args.plots:
        import_optional("matplotlib", "--plots", alternative=PLOTS_HINT)
    report = build_report(table, options)
    text = render_markdown(report)
    print(text)
    if args.json:
        write_json_atomic(args.json, report)
        print(f"wrote {args.json}")
    if args.markdown:
        write_text_atomic(args.markdown, text + "\n")
        print(f"wrote {args.markdown}")
    if args.plots:
        for p in write_plots(report, args.plots):
            print(f"wrote {p}")
    return 0


register_command('report', help='honest report over judged scores (CIs, oracle labelled)',
                 add_arguments=add_arguments, run=run, epilog=EPILOG)

"""The report as Markdown: one function per section, each turning its part of the report dict
(:func:`~.analysis.build_report`) into lines. A section whose part is null or empty is left
out; every section shown is followed by a blank line."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from .analysis import ORACLE_LABEL
from .lengths import LENGTH_WHAT

__all__ = ["render_markdown"]

Section = Callable[[Any, str, int], list[str]]      # (its part of the report, plain key, confidence in %) -> lines


def _n(x: Optional[float], digits: int = 2) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def _ci(ci: Sequence[Optional[float]], digits: int = 2) -> str:
    return f"[{_n(ci[0], digits)}, {_n(ci[1], digits)}]"


def _sd(x: Optional[float]) -> str:
    return "n/a" if x is None else f"{x:+.2f}"


def _header(report: dict, pk: str, conf: int) -> list[str]:
    """Title, source, documents used, how the intervals are made, what the judge cost."""
    docs = report["documents"]
    src = report["source"]
    judge = src.get("judge") or {}
    lines = [f"# Judge report: {Path(src['path']).name}", ""]
    if src.get("stand_in"):
        lines = [f"# Judge report: {Path(src['path']).name} -- not a judgement: stand-in scores", "",
                 "**Not a judgement: stand-in scores.** The offline stand-in server scored each candidate by a "
                 "hash of its text; no number below says anything about quality.", ""]
    lines.append(f"Source: {src['kind']} file `{src['path']}`; judge {judge.get('model', '?')}, protocol "
                 f"{judge.get('protocol', '?')}" + (f", {judge.get('repeats')} repeat(s)" if judge.get('repeats') else ""))
    lines.append(f"Documents: {docs['complete']} of {docs['total']} completely scored and used; "
                 f"{len(docs['excluded'])} excluded.")
    lines.append(f"Intervals: {conf}% percentile bootstrap over documents ({report['settings']['n_boot']} "
                 f"resamples, seed {report['settings']['seed']}). diff = config - {pk}, paired by document.")
    if src.get("usage"):
        u = src["usage"]
        cost = "unknown" if u.get("cost_usd") is None else f"${u['cost_usd']:.4f}"
        lines.append(f"Judge usage: {u.get('requests')} answers, {u.get('prompt_tokens')} input + "
                     f"{u.get('completion_tokens')} output tokens, cost {cost}.")
    return lines


def _seed_numbers(seed: dict, pk: str, conf: int) -> list[str]:
    """A seed file's own averages from its stored ``eval_scores``, and the agreement with ours."""
    a = seed["agreement"]
    return ["## The seed's own numbers (stored `eval_scores`, all records that have them)", "",
            f"- plain ({pk}) mean: **{seed['plain_mean_2dp']}** (exact {seed['plain_mean']:.4f}, n={seed['n']})",
            f"- best-of-N mean: **{seed['oracle_mean_2dp']}** (exact {seed['oracle_mean']:.4f}, n={seed['n']}) "
            f"-- an ORACLE (chosen per document after seeing the scores)",
            f"- parsed free text agrees with the stored pair on {a['plain_equal']}/{a['n']} plain and "
            f"{a['oracle_equal']}/{a['n']} best-of-N values"
            + (f" (differs on ids {', '.join(m['id'] for m in a['mismatches'][:5])})" if a["mismatches"] else "")]


def _headline_row(name: str, d: Optional[dict]) -> str:
    if not d:
        return f"| {name} | n/a | | | | |"
    return (f"| {name} | {_n(d['mean'])} | {_ci(d['ci'])} | {_sd(d['diff'])} | {_ci(d['diff_ci'])} | "
            f"{d['wins']}/{d['ties']}/{d['losses']} |")


def _headline(report: dict, pk: str, conf: int) -> list[str]:
    """Plain, mean over configs, best fixed (cross-fitted, in-sample) and the labelled oracle."""
    summ = report["summary"]
    plain = report["plain"]
    lines = ["## Headline (complete documents)", "",
             f"| quantity | mean | {conf}% CI | diff vs {pk} | {conf}% CI | win/tie/loss |", "|---|---|---|---|---|---|",
             f"| plain `{pk}` | {_n(plain['mean'])} | {_ci(plain['ci'])} | | | |"]
    lines.append(_headline_row("mean over configs", summ["mean_over_configs"]))
    bc = summ.get("best_fixed_crossfit")
    if bc:
        lines.append(_headline_row(f"best fixed config, cross-fitted ({len(bc['keys_chosen'])} folds)", bc))
    bi = summ["best_fixed_in_sample"]
    lines.append(_headline_row(f"best fixed config in-sample `{bi['key']}` (optimistic)", bi))
    lines.append(_headline_row(f"**ORACLE** best of {summ['oracle_best_of_n']['n_configs']} per document "
                               f"(upper bound)", summ["oracle_best_of_n"]))
    lines += ["", f"{ORACLE_LABEL}."]
    if bc:
        lines += ["", f"Cross-fitted choices per fold: {', '.join(f'`{k}`' for k in bc['keys_chosen'])}."]
    return lines


def _per_config(report: dict, pk: str, conf: int) -> list[str]:
    lines = ["## Per config", "", f"| config | n | mean | {conf}% CI | diff vs {pk} | {conf}% CI | win/tie/loss |",
             "|---|---|---|---|---|---|---|"]
    for r in report["configs"]:
        lines.append(f"| `{r['key']}` | {r['n']} | {_n(r['mean'])} | {_ci(r['mean_ci'])} | {_sd(r['diff'])} | "
                     f"{_ci(r['diff_ci'])} | {r['wins']}/{r['ties']}/{r['losses']} |")
    return lines


def _diff_cell(d: Optional[dict]) -> str:
    return "n/a" if not d else f"{_sd(d['diff'])} {_ci(d['diff_ci'])}"


def _by_length(lb: dict, pk: str, conf: int) -> list[str]:
    what = LENGTH_WHAT.get(lb["variable"], lb["variable"])
    lines = [f"## By length ({what})", "",
             f"| bucket | n | plain mean | mean over configs: diff {conf}% CI | best fixed (cross-fitted): diff | "
             f"ORACLE: diff |", "|---|---|---|---|---|---|"]
    for b in lb["buckets"]:
        if not b["n"]:
            lines.append(f"| {b['label']} | 0 | | | | |")
            continue
        lines.append(f"| {b['label']} | {b['n']} | {_n(b['plain']['mean'])} | {_diff_cell(b['mean_over_configs'])} | "
                     f"{_diff_cell(b['best_fixed_crossfit'])} | {_diff_cell(b['oracle_best_of_n'])} |")
    return lines


def _rouge(rg: dict, pk: str, conf: int) -> list[str]:
    lines = [f"## ROUGE against the reference summary ({rg['scorer']}; n={rg['n']})", "",
             f"| candidate | ROUGE-1 | ROUGE-2 | ROUGE-L | ROUGE-L diff vs {pk} | {conf}% CI |",
             "|---|---|---|---|---|---|"]
    for r in rg["configs"]:
        lines.append(f"| `{r['key']}` | {_n(r['rouge1'])} | {_n(r['rouge2'])} | {_n(r['rougeL'])} | "
                     f"{_sd(r.get('rougeL_diff'))} | {_ci(r['rougeL_diff_ci']) if 'rougeL_diff_ci' in r else ''} |")
    return lines


def _judge_noise(jn: dict, pk: str, conf: int) -> list[str]:
    equal = 100 * jn["all_equal_fraction"] if jn["all_equal_fraction"] is not None else None
    lines = ["## Judge noise", "",
             f"- {jn['repeats']} repeats; over {jn['pairs']} document x candidate pairs the mean SD of a "
             f"candidate's score across repeats is {_n(jn['mean_sd'])}; all repeats equal for "
             f"{_n(equal, 1)}% of pairs"]
    pos = jn.get("position")
    if pos:
        lines.append(f"- position bias: residual slope first->last position {_sd(pos['slope'])} points "
                     f"{_ci(pos['slope_ci'])}; residual by position: "
                     + ", ".join(_sd(x) for x in pos["residual_by_position"]))
    return lines


def _excluded(documents: dict, pk: str, conf: int) -> list[str]:
    excluded = documents["excluded"]
    if not excluded:
        return []
    return ["## Excluded documents", "", *(f"- #{e['index']} (id {e['id']}): {e['reason']}" for e in excluded)]


def _notes(notes: list[str], pk: str, conf: int) -> list[str]:
    return ["## Notes", "", *(f"- {n}" for n in notes)]


# (the report's key a section shows, or None for the whole report; the section), in order
SECTIONS: tuple[tuple[Optional[str], Section], ...] = (
    (None, _header), ("seed_stored", _seed_numbers), (None, _headline), (None, _per_config),
    ("length_buckets", _by_length), ("rouge", _rouge), ("judge_noise", _judge_noise), ("documents", _excluded),
    ("notes", _notes))


def render_markdown(report: dict) -> str:
    """The report dict as Markdown, section after section (see :data:`SECTIONS`)."""
    pk = report["plain_key"]
    conf = int(round(100 * report["settings"]["confidence"]))
    lines: list[str] = []
    for key, section in SECTIONS:
        part = report if key is None else report.get(key)
        body = section(part, pk, conf) if part else []
        if body:
            lines += body + [""]
    return "\n".join(lines)

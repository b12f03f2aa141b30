"""Renderers of a :class:`~vqdoctor.report.check_result.CheckResult` for the terminal (the compact
table of ``vqdoctor check``) and as the ``vqdoctor.check/1`` JSON text. They compute nothing."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vqdoctor.report.check_result import CheckItem, CheckResult, check_document
from vqdoctor.report.json_out import write_text
from vqdoctor.report.junit import MODEL_WIDE, write_junit
from vqdoctor.report.schema import Report
from vqdoctor.report.text import fmt_value

if TYPE_CHECKING:
    from rich.console import Console

OUTCOME_STYLE = {"pass": "green", "fail": "bold red", "skipped": "yellow", "insufficient": "cyan"}


def _bound(item: CheckItem) -> str:
    if item.threshold is None:
        return "-"
    if item.check == "merged_pairs":
        return f"<= {item.threshold:g}" if item.kind == "threshold" else f"baseline {item.threshold:g}"
    relation = ">=" if item.direction == "min" else "<="
    text = f"{relation} {fmt_value(item.threshold, item.percent)}"
    return text if item.baseline is None else f"{text} (base {fmt_value(item.baseline, item.percent)})"


def render_check(result: CheckResult, console: Console) -> None:
    """The compact table of checks, a summary line, and the remedies of the failed checks."""
    from rich import box
    from rich.table import Table
    from rich.text import Text

    table = Table(box=box.SIMPLE, pad_edge=False, show_edge=False)
    for col, justify in (("codebook", "left"), ("check", "left"), ("value", "right"), ("threshold", "right"), ("result", "left")):
        table.add_column(col, justify=justify, overflow="fold")  # type: ignore[arg-type]
    for item in result.items:
        table.add_row(item.codebook or MODEL_WIDE, item.name, fmt_value(item.value, item.percent), _bound(item),
                      Text(item.outcome, style=OUTCOME_STYLE[item.outcome]))
    console.print(table)
    counts = result.summary()
    console.print(f"thresholds: {result.threshold_source}"
                  + (f"; baseline: {result.baseline} (max regression {result.max_regression:g})" if result.baseline else ""),
                  markup=False, highlight=False)
    for item in result.failed:
        console.print(Text(f"FAIL {item.codebook or MODEL_WIDE} {item.name}: {item.message}", style=OUTCOME_STYLE["fail"]))
    reasons: dict[str, list[CheckItem]] = {}
    for item in result.skipped:
        reasons.setdefault(item.message, []).append(item)
    for reason, items in reasons.items():
        where = sorted({i.codebook or MODEL_WIDE for i in items})
        console.print(Text(f"skipped {len(items)} check(s) on {', '.join(where)}: {reason}", style=OUTCOME_STYLE["skipped"]))
    remedies = list(dict.fromkeys(i.remedy for i in result.failed if i.remedy))
    if remedies:
        console.print("Remedy:", highlight=False)
        for remedy in remedies:
            console.print(f"  {remedy}", markup=False, highlight=False, soft_wrap=True)  # one line: pastes as one command
    verdict = Text("PASSED" if result.passed else "FAILED", style="bold green" if result.passed else "bold red")
    tail = f" - {counts['pass']} passed, {counts['fail']} failed, {counts['skipped']} skipped"
    if counts["insufficient"]:
        tail += f", {counts['insufficient']} not enough data to judge"
    if counts["skipped"] and not result.strict:
        tail += " (--strict fails skipped checks)"
    console.print(Text.assemble(verdict, tail))


def check_json(result: CheckResult, report_dict: Mapping[str, Any]) -> str:
    """The ``vqdoctor.check/1`` document as indented JSON text ending in a newline."""
    return json.dumps(check_document(result, report_dict), indent=2, ensure_ascii=False, allow_nan=False) + "\n"


def write_check_outputs(result: CheckResult, report: Report, *, junit: Path | None = None, json_out: str | None = None,
                        write_baseline: Path | None = None, suite: str = "vqdoctor check") -> None:
    """The files a check run asked for: JUnit XML, the ``vqdoctor.check/1`` document to ``json_out``
    (``"-"`` = stdout) and as the new baseline; every file written atomically."""
    if junit is not None:
        write_junit(result, junit, suite=suite)
    if json_out is None and write_baseline is None:
        return
    text = check_json(result, report.to_dict())
    if write_baseline is not None:
        write_text(text, write_baseline)
    if json_out is not None:
        write_text(text, json_out)

"""`vqdoctor check`: a CI health gate. Thresholds (flags > --config / pyproject.toml > documented
defaults) and an optional baseline report; exit 0 pass, 1 a check failed, 2 usage or input error."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from vqdoctor.cli.common import QuietOpt, VerboseOpt, check_ranges, check_verbosity, shared_options
from vqdoctor.cli.errors import translate_errors
from vqdoctor.options import DEFAULT_MAX_REGRESSION, AnalysisOptions, DataOptions

if TYPE_CHECKING:
    from rich.console import Console

    from vqdoctor.report.check_result import CheckItem, CheckResult

DEFAULTS_SOURCE = "defaults (fail bounds of docs/verdicts.md)"
OUTCOME_STYLE = {"pass": "green", "fail": "bold red", "skipped": "yellow", "insufficient": "cyan"}
_T = "Thresholds"

MinUtilOpt = Annotated[Optional[float], typer.Option("--min-utilization", help="Fail when the share of used codes is below this.", rich_help_panel=_T)]
MaxDeadOpt = Annotated[Optional[float], typer.Option("--max-dead-fraction", help="Fail when the share of dead codes (--min-count) is above this.", rich_help_panel=_T)]
MinPplOpt = Annotated[Optional[float], typer.Option("--min-normalized-perplexity", help="Fail when perplexity / K is below this.", rich_help_panel=_T)]
MaxTvOpt = Annotated[Optional[float], typer.Option("--max-allocation-tv", help="Fail when the code-to-mode allocation distance (tokens collapse) is above this.", rich_help_panel=_T)]
MaxPairsOpt = Annotated[Optional[int], typer.Option("--max-merged-pairs", help="Fail when more pairs of data modes than this merge in the latents (embeddings collapse, model-wide).", rich_help_panel=_T)]
MaxMseOpt = Annotated[Optional[float], typer.Option("--max-relative-mse", help="Fail when quantization MSE / latent variance is above this (per codebook).", rich_help_panel=_T)]
StrictOpt = Annotated[Optional[bool], typer.Option("--strict/--no-strict", help="Fail checks that cannot be measured (e.g. no data) instead of skipping them.", rich_help_panel=_T, show_default=False)]
ConfigOpt = Annotated[Optional[Path], typer.Option("--config", help="TOML file with a \\[check] table. Default: \\[tool.vqdoctor.check] of the nearest pyproject.toml upward from here.", rich_help_panel=_T)]
BaselineOpt = Annotated[Optional[Path], typer.Option("--baseline", help="A JSON report of an accepted run (inspect --json or check --json): fail on regressions.", rich_help_panel="Baseline")]
WriteBaselineOpt = Annotated[Optional[Path], typer.Option("--write-baseline", help="Write this run's vqdoctor.check/1 document to PATH as the baseline of later runs (folders created, atomic). No baseline is compared in this run, even one the config names; the exit code is that of the thresholds.", rich_help_panel="Baseline")]
MaxRegOpt = Annotated[Optional[float], typer.Option("--max-regression", help=f"Tolerated relative worsening against --baseline (default {DEFAULT_MAX_REGRESSION:g} = {DEFAULT_MAX_REGRESSION:.0%}).", rich_help_panel="Baseline")]
JunitOpt = Annotated[Optional[Path], typer.Option("--junit", help="Write JUnit XML: one test case per check per codebook.", rich_help_panel="Output")]
JsonOpt = Annotated[Optional[str], typer.Option("--json", help="Write the vqdoctor.check/1 JSON document (results + full report) to PATH ('-' for stdout).", rich_help_panel="Output")]


def _fmt(x: float | None, percent: bool) -> str:
    if x is None:
        return "-"
    return f"{x:.1%}" if percent else f"{x:.4g}"


def _bound(item: CheckItem) -> str:
    if item.threshold is None:
        return "-"
    if item.check == "merged_pairs":
        return f"<= {item.threshold:g}" if item.kind == "threshold" else f"baseline {item.threshold:g}"
    from vqdoctor.verdicts import CODEBOOK_CHECKS

    direction = {spec.check: spec.direction for spec in CODEBOOK_CHECKS}
    relation = ">=" if direction.get(item.check) == "min" else "<="
    text = f"{relation} {_fmt(item.threshold, item.percent)}"
    return text if item.baseline is None else f"{text} (base {_fmt(item.baseline, item.percent)})"


def render_check(result: CheckResult, console: Console) -> None:
    """The compact table of checks, a summary line, and the remedies of the failed checks."""
    from rich import box
    from rich.table import Table
    from rich.text import Text

    from vqdoctor.report.junit import MODEL_WIDE

    table = Table(box=box.SIMPLE, pad_edge=False, show_edge=False)
    for col, justify in (("codebook", "left"), ("check", "left"), ("value", "right"), ("threshold", "right"), ("result", "left")):
        table.add_column(col, justify=justify, overflow="fold")  # type: ignore[arg-type]
    for item in result.items:
        table.add_row(item.codebook or MODEL_WIDE, item.name, _fmt(item.value, item.percent), _bound(item),
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


@translate_errors(internal_exit=2)
@shared_options(exclude=("projection", "shard"))
def check_command(
    checkpoint: Annotated[Path, typer.Argument(help="Checkpoint file or Hugging Face folder.")],
    *,
    data: DataOptions,
    analysis: AnalysisOptions,
    min_utilization: MinUtilOpt = None,
    max_dead_fraction: MaxDeadOpt = None,
    min_normalized_perplexity: MinPplOpt = None,
    max_allocation_tv: MaxTvOpt = None,
    max_merged_pairs: MaxPairsOpt = None,
    max_relative_mse: MaxMseOpt = None,
    strict: StrictOpt = None,
    config: ConfigOpt = None,
    baseline: BaselineOpt = None,
    write_baseline: WriteBaselineOpt = None,
    max_regression: MaxRegOpt = None,
    junit: JunitOpt = None,
    json_out: JsonOpt = None,
    verbose: VerboseOpt = False,
    quiet: QuietOpt = False,
) -> None:
    r"""Gate a trained tokenizer in CI: per-codebook thresholds and an optional baseline comparison.

    Thresholds apply per codebook (per level for stacks; shares in 0..1) and model-wide for merged
    pairs. They come from the flags, else --config FILE (\[check] table) or \[tool.vqdoctor.check] in
    the nearest pyproject.toml; flags win. With none configured, the fail bounds of docs/verdicts.md
    apply. A check whose number is not measured (e.g. a data-free run) is skipped (fails with --strict).

    Exit codes: 0 all checks passed; 1 a check failed; 2 usage or input error. See docs/ci.md.
    """
    import json

    from rich.console import Console

    from vqdoctor.check import CheckConfig, Thresholds, check_document, config_from_mapping, evaluate, merge_configs
    from vqdoctor.cli.paths import check_outputs
    from vqdoctor.cli.runs import analyse
    from vqdoctor.errors import UsageError
    from vqdoctor.io.config import load_check_config
    from vqdoctor.remedies import RemedyContext, data_args
    from vqdoctor.report.baseline import load_baseline
    from vqdoctor.report.json_out import atomic_write_bytes, report_to_dict
    from vqdoctor.report.junit import write_junit
    from vqdoctor.report.terminal import render_terminal

    check_verbosity(verbose, quiet)
    analysis = dataclasses.replace(analysis, projection="none")
    check_ranges(("--min-utilization", min_utilization), ("--max-dead-fraction", max_dead_fraction),
                 ("--min-normalized-perplexity", min_normalized_perplexity), ("--max-allocation-tv", max_allocation_tv),
                 ("--max-merged-pairs", max_merged_pairs), ("--max-relative-mse", max_relative_mse),
                 ("--max-regression", max_regression))
    limits = Thresholds(
        min_utilization=min_utilization, max_dead_fraction=max_dead_fraction,
        min_normalized_perplexity=min_normalized_perplexity, max_allocation_tv=max_allocation_tv,
        max_merged_pairs=max_merged_pairs, max_relative_mse=max_relative_mse,
    )
    flag_set = not limits.is_empty() or any(v is not None for v in (max_regression, strict, baseline))
    flags = CheckConfig(limits, max_regression, strict, baseline, ("flags",) if flag_set else ())
    table = load_check_config(config, start=Path.cwd())
    from_file = CheckConfig() if table is None else config_from_mapping(table.values, source=table.source, base_dir=table.path.parent)
    settings = merge_configs(from_file, flags)
    thresholds, source = settings.thresholds, ", ".join(settings.sources)
    if thresholds.is_empty():
        thresholds, source = Thresholds.defaults(), DEFAULTS_SOURCE
    if write_baseline is not None and baseline is not None:
        raise UsageError(f"--baseline {baseline} and --write-baseline {write_baseline}: a run either compares with a "
                         "baseline or writes a new one.", "Drop one of the two.")
    compared = None if write_baseline is not None else settings.baseline  # the one being written is not read
    base = None if compared is None else load_baseline(compared)

    check_outputs(("--json", json_out), ("--junit", junit), ("--write-baseline", write_baseline))
    err = Console(stderr=True)
    report = analyse(checkpoint, data=data, analysis=analysis, err=err)  # under torchrun: reduced over ranks
    if report is None:  # a rank other than 0: rank 0 renders and sets the exit code
        return
    result = evaluate(
        report, thresholds=thresholds, threshold_source=source, baseline=base,
        baseline_source=None if compared is None else str(compared),
        max_regression=DEFAULT_MAX_REGRESSION if settings.max_regression is None else settings.max_regression,
        strict=bool(settings.strict),
        remedy=RemedyContext(str(checkpoint), report.checkpoint.format, data_args(data, metric=analysis.metric),
                             has_data=report.data.vectors is not None),
    )

    if junit is not None:
        write_junit(result, junit, suite=f"vqdoctor check {checkpoint}")
    to_stdout = json_out == "-"
    text = json.dumps(check_document(result, report_to_dict(report)), indent=2, ensure_ascii=False, allow_nan=False) + "\n"
    if write_baseline is not None:
        atomic_write_bytes(write_baseline, text.encode("utf-8"))
    if json_out is not None:
        if to_stdout:
            typer.echo(text, nl=False)
        else:
            atomic_write_bytes(json_out, text.encode("utf-8"))
    if verbose and not to_stdout:  # the report the checks judged, in full, before the gate's table
        render_terminal(report, Console(), verbose=True)
    if not quiet:
        render_check(result, err if to_stdout else Console())
    if junit is not None:
        err.print(f"JUnit XML written to {junit}", markup=False, highlight=False)
    if write_baseline is not None:
        err.print(f"Baseline written to {write_baseline}" + (" (the checks above failed: do not accept it as is)"
                  if result.exit_code else ""), markup=False, highlight=False)
    raise typer.Exit(code=result.exit_code)

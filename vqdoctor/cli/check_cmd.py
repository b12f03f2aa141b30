"""`vqdoctor check`: a CI health gate. Thresholds (flags > --config / pyproject.toml > documented
defaults) and an optional baseline report; exit 0 pass, 1 a check failed, 2 usage or input error."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated, Optional

import typer

from vqdoctor.cli.common import QuietOpt, VerboseOpt, check_ranges, check_verbosity, shared_options
from vqdoctor.cli.errors import translate_errors
from vqdoctor.options import DEFAULT_MAX_REGRESSION, AnalysisOptions, DataOptions

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
    from rich.console import Console

    from vqdoctor.check import CheckConfig, Thresholds, config_from_mapping, evaluate, plan_check
    from vqdoctor.cli.paths import check_outputs
    from vqdoctor.cli.runs import analyse
    from vqdoctor.io.config import load_check_config
    from vqdoctor.remedies import RemedyContext, data_args
    from vqdoctor.report.baseline import load_baseline
    from vqdoctor.report.check_out import render_check, write_check_outputs
    from vqdoctor.report.terminal import render_terminal

    check_verbosity(verbose, quiet)
    analysis = dataclasses.replace(analysis, projection="none")
    check_ranges(("--min-utilization", min_utilization), ("--max-dead-fraction", max_dead_fraction),
                 ("--min-normalized-perplexity", min_normalized_perplexity), ("--max-allocation-tv", max_allocation_tv),
                 ("--max-merged-pairs", max_merged_pairs), ("--max-relative-mse", max_relative_mse),
                 ("--max-regression", max_regression))
    limits = Thresholds(min_utilization=min_utilization, max_dead_fraction=max_dead_fraction,
                        min_normalized_perplexity=min_normalized_perplexity, max_allocation_tv=max_allocation_tv,
                        max_merged_pairs=max_merged_pairs, max_relative_mse=max_relative_mse)
    flag_set = not limits.is_empty() or any(v is not None for v in (max_regression, strict, baseline))
    flags = CheckConfig(limits, max_regression, strict, baseline, ("flags",) if flag_set else ())
    table = load_check_config(config, start=Path.cwd())
    from_file = None if table is None else config_from_mapping(table.values, source=table.source, base_dir=table.path.parent)
    plan = plan_check(flags, from_file, write_baseline=write_baseline)
    base = None if plan.baseline is None else load_baseline(plan.baseline)

    check_outputs(("--json", json_out), ("--junit", junit), ("--write-baseline", write_baseline))
    err = Console(stderr=True)
    report = analyse(checkpoint, data=data, analysis=analysis, err=err)  # under torchrun: reduced over ranks
    if report is None:  # a rank other than 0: rank 0 renders and sets the exit code
        return
    result = evaluate(report, thresholds=plan.thresholds, threshold_source=plan.source, baseline=base,
                      baseline_source=None if plan.baseline is None else str(plan.baseline),
                      max_regression=plan.max_regression, strict=plan.strict,
                      remedy=RemedyContext(str(checkpoint), report.checkpoint.format, data_args(data, metric=analysis.metric),
                                           has_data=report.data.vectors is not None))
    to_stdout = json_out == "-"
    write_check_outputs(result, report, junit=junit, json_out=json_out, write_baseline=write_baseline,
                        suite=f"vqdoctor check {checkpoint}")
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

"""`vqdoctor check`: a CI health gate. Thresholds (flags > --config / pyproject.toml > documented
defaults) and an optional baseline report; exit 0 pass, 1 a check failed, 2 usage or input error."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from vqdoctor.check import (
    DEFAULT_MAX_REGRESSION,
    CheckConfig,
    CheckItem,
    CheckResult,
    Thresholds,
    check_document,
    config_from_mapping,
    evaluate,
    merge_configs,
)
from vqdoctor.cli.app import app
from vqdoctor.cli.common import (
    AllowGlobalOpt,
    BatchSizeOpt,
    BudgetOpt,
    ChannelAxisOpt,
    ClipSecondsOpt,
    CodebookOpt,
    DeviceOpt,
    EncodeMethodOpt,
    EncoderOpt,
    ImageSizeOpt,
    InputsOpt,
    LabelsOpt,
    LatentsOpt,
    MaxVectorsOpt,
    MetricOpt,
    MinCountOpt,
    ModelOpt,
    ModesOpt,
    PixelRangeOpt,
    SeedOpt,
    SubsampleOpt,
    analysis_options,
    check_ranges,
    data_options,
)
from vqdoctor.cli.errors import translate_errors
from vqdoctor.cli.paths import check_outputs
from vqdoctor.cli.runs import analyse
from vqdoctor.io.baseline import load_baseline
from vqdoctor.io.config import load_check_config
from vqdoctor.report.json_out import atomic_write_bytes, report_to_dict
from vqdoctor.report.junit import MODEL_WIDE, write_junit
from vqdoctor.verdicts import CODEBOOK_CHECKS

_DIRECTION = {spec.check: spec.direction for spec in CODEBOOK_CHECKS}
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
    relation = ">=" if _DIRECTION.get(item.check) == "min" else "<="
    text = f"{relation} {_fmt(item.threshold, item.percent)}"
    return text if item.baseline is None else f"{text} (base {_fmt(item.baseline, item.percent)})"


def render_check(result: CheckResult, console: Console) -> None:
    """The compact table of checks, a summary line, and the remedies of the failed checks."""
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
            console.print(f"  {remedy}", markup=False, highlight=False)
    verdict = Text("PASSED" if result.passed else "FAILED", style="bold green" if result.passed else "bold red")
    tail = f" - {counts['pass']} passed, {counts['fail']} failed, {counts['skipped']} skipped"
    if counts["insufficient"]:
        tail += f", {counts['insufficient']} not enough data to judge"
    if counts["skipped"] and not result.strict:
        tail += " (--strict fails skipped checks)"
    console.print(Text.assemble(verdict, tail))


@app.command("check")
@translate_errors(internal_exit=2)
def check_command(
    checkpoint: Annotated[Path, typer.Argument(help="Checkpoint file or Hugging Face folder.")],
    latents: LatentsOpt = None,
    channel_axis: ChannelAxisOpt = None,
    inputs: InputsOpt = None,
    labels: LabelsOpt = None,
    image_size: ImageSizeOpt = None,
    clip_seconds: ClipSecondsOpt = None,
    pixel_range: PixelRangeOpt = None,
    model: ModelOpt = None,
    encoder: EncoderOpt = None,
    encode_method: EncodeMethodOpt = None,
    allow_global: AllowGlobalOpt = None,
    codebook: CodebookOpt = None,
    metric: MetricOpt = "auto",
    min_count: MinCountOpt = 1,
    subsample: SubsampleOpt = 4000,
    seed: SeedOpt = 0,
    device: DeviceOpt = "auto",
    batch_size: BatchSizeOpt = 8192,
    max_vectors: MaxVectorsOpt = None,
    memory_budget_mb: BudgetOpt = 256,
    modes: ModesOpt = "auto",
    min_utilization: MinUtilOpt = None,
    max_dead_fraction: MaxDeadOpt = None,
    min_normalized_perplexity: MinPplOpt = None,
    max_allocation_tv: MaxTvOpt = None,
    max_merged_pairs: MaxPairsOpt = None,
    max_relative_mse: MaxMseOpt = None,
    strict: StrictOpt = None,
    config: ConfigOpt = None,
    baseline: BaselineOpt = None,
    max_regression: MaxRegOpt = None,
    junit: JunitOpt = None,
    json_out: JsonOpt = None,
) -> None:
    r"""Gate a trained tokenizer in CI: per-codebook thresholds and an optional baseline comparison.

    Thresholds apply per codebook (per level for stacks; shares in 0..1) and model-wide for merged
    pairs. They come from the flags, else --config FILE (\[check] table) or \[tool.vqdoctor.check] in
    the nearest pyproject.toml; flags win. With none configured, the fail bounds of docs/verdicts.md
    apply. A check whose number is not measured (e.g. a data-free run) is skipped (fails with --strict).

    Exit codes: 0 all checks passed; 1 a check failed; 2 usage or input error. See docs/ci.md.
    """
    data = data_options(
        latents=latents, channel_axis=channel_axis, inputs=inputs, labels=labels, image_size=image_size, clip_seconds=clip_seconds, pixel_range=pixel_range, model=model, encoder=encoder,
        encode_method=encode_method, allow_global=allow_global, batch_size=batch_size, device=device,
        max_vectors=max_vectors,
    )
    analysis = analysis_options(codebook=codebook, min_count=min_count, subsample=subsample,
                                projection="none", seed=seed, memory_budget_mb=memory_budget_mb, metric=metric, modes=modes)
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
    base = None if settings.baseline is None else load_baseline(settings.baseline)

    check_outputs(("--json", json_out), ("--junit", junit))
    err = Console(stderr=True)
    report = analyse(checkpoint, data=data, analysis=analysis, err=err)  # under torchrun: reduced over ranks
    if report is None:  # a rank other than 0: rank 0 renders and sets the exit code
        return
    result = evaluate(
        report, thresholds=thresholds, threshold_source=source, baseline=base,
        baseline_source=None if settings.baseline is None else str(settings.baseline),
        max_regression=DEFAULT_MAX_REGRESSION if settings.max_regression is None else settings.max_regression,
        strict=bool(settings.strict), ckpt=str(checkpoint),
    )

    if junit is not None:
        write_junit(result, junit, suite=f"vqdoctor check {checkpoint}")
    to_stdout = json_out == "-"
    if json_out is not None:
        text = json.dumps(check_document(result, report_to_dict(report)), indent=2, ensure_ascii=False, allow_nan=False) + "\n"
        if to_stdout:
            typer.echo(text, nl=False)
        else:
            atomic_write_bytes(json_out, text.encode("utf-8"))
    render_check(result, err if to_stdout else Console())
    if junit is not None:
        err.print(f"JUnit XML written to {junit}", markup=False, highlight=False)
    raise typer.Exit(code=result.exit_code)

"""The CI gate behind ``vqdoctor check``: a Report (and optionally a baseline report) judged against
thresholds, giving one pass / fail / skipped result per check per codebook.

Pure: no files, no printing. The numbers come from the same extractors as the verdicts
(:data:`vqdoctor.verdicts.CODEBOOK_CHECKS`), compared with :func:`vqdoctor.verdicts.status_of` using
the user's bound as the only (fail) bound. ``docs/ci.md`` documents the thresholds, the defaults, the
baseline rule and the ``vqdoctor.check/1`` JSON document.

Here: the thresholds and config (:class:`Thresholds`, :class:`CheckConfig`, :func:`plan_check`: flags
over the config file over the defaults) and the evaluation (:func:`evaluate`). The results it
returns (:class:`CheckItem`, :class:`CheckResult`) are values of ``report/check_result.py`` and
are rendered by ``report/check_out.py`` and ``report/junit.py``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from vqdoctor.core.results import (
    EmaMetrics,
    EmbeddingsCollapse,
    GeometryMetrics,
    MergedPair,
    ModeShare,
    TokensCollapse,
    UsageMetrics,
    WMetrics,
)
from vqdoctor.errors import InputFileError, UsageError
from vqdoctor.options import DEFAULT_MAX_REGRESSION
from vqdoctor.remedies import RemedyContext, fix_remedy

# the results live beside the Report (report/check_result.py); the names stay importable from here
from vqdoctor.report.check_result import CHECK_SCHEMA as CHECK_SCHEMA
from vqdoctor.report.check_result import CheckItem, CheckResult, Kind, Outcome
from vqdoctor.report.check_result import check_document as check_document
from vqdoctor.report.schema import CodebookReport, Report
from vqdoctor.report.text import fmt_value
from vqdoctor.verdicts import (
    CODEBOOK_CHECKS,
    EMBEDDINGS_REMEDY,
    MERGED_PAIRS_FAIL,
    CheckSpec,
    judge,
    status_of,
    with_bounds,
)

# Relative changes are measured against max(|baseline|, REGRESSION_FLOOR): a metric that was 0 in the
# baseline (no dead codes) may grow by max_regression x 0.1 before it counts as a regression.
REGRESSION_FLOOR = 0.1
MERGED_PAIRS = "merged_pairs"

_SPECS: dict[str, CheckSpec] = {spec.check: spec for spec in CODEBOOK_CHECKS}
# The per-codebook checks `vqdoctor check` gates on (and compares with a baseline), in display order.
GATED_CHECKS: tuple[str, ...] = ("utilization", "dead_fraction", "normalized_perplexity", "allocation_tv", "relative_mse")
_SECTION_OF = {"utilization": "usage", "dead_fraction": "usage", "normalized_perplexity": "usage",
               "relative_mse": "usage", "allocation_tv": "tokens_collapse"}  # fmt: skip
_SECTION_REASON = {
    "usage": "no usage statistics for this codebook (data-free run: pass --latents, or --inputs with an encoder)",
    "tokens_collapse": "no tokens-collapse section (needs data with modes: --labels, or inputs that can be clustered)",
    "embeddings_collapse": "no embeddings-collapse section (needs raw --inputs with modes, encoded by the model)",
}


# ---------------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class Thresholds:
    """One bound per gated check; ``None`` = not checked. ``min_*`` fail below, ``max_*`` fail above.
    Field names are the flag names (``--min-utilization``) and the config keys (``min_utilization``)."""

    min_utilization: float | None = None
    max_dead_fraction: float | None = None
    min_normalized_perplexity: float | None = None
    max_allocation_tv: float | None = None
    max_merged_pairs: int | None = None
    max_relative_mse: float | None = None

    @classmethod
    def defaults(cls) -> Thresholds:
        """The documented fail bounds of ``docs/verdicts.md`` (used when nothing is configured)."""
        values: dict[str, Any] = {f.name: _SPECS[check_of(f.name)].fail for f in fields(cls) if f.name != "max_merged_pairs"}
        return cls(**values, max_merged_pairs=math.floor(MERGED_PAIRS_FAIL))

    def is_empty(self) -> bool:
        return all(getattr(self, f.name) is None for f in fields(self))

    def to_dict(self) -> dict[str, float | int | None]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def verdict_checks(limits: Thresholds) -> tuple[tuple[CheckSpec, ...], float]:
    """The inspect checks with ``limits`` as their fail bounds (the warn bound stays where it is
    stricter), and the merged-pairs fail bound: what ``vqdoctor inspect`` judges with a
    configured ``[tool.vqdoctor.check]`` table, so inspect and check agree on what fails."""
    specs = []
    for spec in CODEBOOK_CHECKS:
        bound = next((getattr(limits, f.name) for f in fields(Thresholds) if check_of(f.name) == spec.check), None)
        if bound is None:
            specs.append(spec)
            continue
        stricter = spec.warn is not None and (spec.warn > bound if spec.direction == "min" else spec.warn < bound)
        specs.append(with_bounds(spec, warn=spec.warn if stricter else None, fail=float(bound)))
    pairs = MERGED_PAIRS_FAIL if limits.max_merged_pairs is None else limits.max_merged_pairs + 0.5
    return tuple(specs), pairs


def check_of(threshold: str) -> str:
    """``min_utilization`` -> ``utilization`` (the CheckSpec / JSON check name)."""
    return threshold.split("_", 1)[1]


@dataclass(frozen=True)
class CheckConfig:
    """Everything a config file or the flags may set; ``None`` = not set here (a lower layer or the
    default applies). ``sources`` says where the set values came from, for the output."""

    thresholds: Thresholds = field(default_factory=Thresholds)
    max_regression: float | None = None
    strict: bool | None = None
    baseline: Path | None = None
    sources: tuple[str, ...] = ()


_SHARES = ("min_utilization", "max_dead_fraction", "min_normalized_perplexity", "max_allocation_tv")
CONFIG_KEYS: tuple[str, ...] = (*(f.name for f in fields(Thresholds)), "max_regression", "strict", "baseline")


def _number(key: str, value: object, source: str, *, integer: bool = False) -> float:
    ok = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok or not math.isfinite(float(value)):  # type: ignore[arg-type]
        kind = "a whole number" if integer else "a number"
        raise UsageError(f"{key} = {value!r} in {source} is not {kind}.", f"Write e.g. {key} = {3 if integer else 0.5}.")
    v = float(value)  # type: ignore[arg-type]
    if v < 0 or (key in _SHARES and v > 1):
        span = "between 0 and 1" if key in _SHARES else "0 or more"
        raise UsageError(f"{key} = {value!r} in {source} is out of range: it must be {span}.")
    return v


def config_from_mapping(values: Mapping[str, object], *, source: str, base_dir: Path | None = None) -> CheckConfig:
    """Validate a ``[check]`` table (keys = flag names with underscores). Unknown keys are one
    UsageError that lists all of them and the valid keys; a wrong type names the key and the value.
    A relative ``baseline`` path is taken relative to ``base_dir`` (the config file's folder)."""
    unknown = sorted(k for k in values if k not in CONFIG_KEYS)
    if unknown:
        raise UsageError(
            f"Unknown key(s) in {source}: {', '.join(unknown)}.",
            f"Valid keys: {', '.join(CONFIG_KEYS)}.",
        )
    limits: dict[str, Any] = {}
    for f in fields(Thresholds):
        if f.name in values:
            v = _number(f.name, values[f.name], source, integer=f.name == "max_merged_pairs")
            limits[f.name] = int(v) if f.name == "max_merged_pairs" else v
    max_regression = None
    if "max_regression" in values:
        max_regression = _number("max_regression", values["max_regression"], source)
    strict = values.get("strict")
    if strict is not None and not isinstance(strict, bool):
        raise UsageError(f"strict = {strict!r} in {source} is not a boolean.", "Write strict = true or strict = false.")
    baseline = values.get("baseline")
    if baseline is not None:
        if not isinstance(baseline, str) or not baseline:
            raise UsageError(f"baseline = {baseline!r} in {source} is not a path.", 'Write e.g. baseline = "ci/baseline.json".')
        path = Path(baseline)
        baseline = path if path.is_absolute() or base_dir is None else base_dir / path
    return CheckConfig(Thresholds(**limits), max_regression, strict, baseline, (source,) if values else ())  # type: ignore[arg-type]


def merge_configs(lower: CheckConfig, upper: CheckConfig) -> CheckConfig:
    """``upper`` (the flags) wins over ``lower`` (a file) value by value."""
    def pick(a: Any, b: Any) -> Any:
        return a if b is None else b

    limits = {f.name: pick(getattr(lower.thresholds, f.name), getattr(upper.thresholds, f.name)) for f in fields(Thresholds)}
    return CheckConfig(
        Thresholds(**limits),
        pick(lower.max_regression, upper.max_regression),
        pick(lower.strict, upper.strict),
        pick(lower.baseline, upper.baseline),
        (*upper.sources, *lower.sources),
    )



DEFAULTS_SOURCE = "defaults (fail bounds of docs/verdicts.md)"


@dataclass(frozen=True)
class CheckPlan:
    """What one ``vqdoctor check`` run applies, every layer resolved: the thresholds and where they
    came from, the baseline to compare with (None: none), the tolerated regression, strictness."""

    thresholds: Thresholds
    source: str
    baseline: Path | None
    max_regression: float
    strict: bool


def plan_check(flags: CheckConfig, from_file: CheckConfig | None = None, *, write_baseline: Path | None = None) -> CheckPlan:
    """The flags over the config file over the documented defaults (the fail bounds, when no
    threshold is set anywhere). A run that writes a baseline compares with none (not even one the
    config names); one that is given both ``--baseline`` and ``--write-baseline`` is refused."""
    if write_baseline is not None and flags.baseline is not None:
        raise UsageError(f"--baseline {flags.baseline} and --write-baseline {write_baseline}: a run either compares "
                         "with a baseline or writes a new one.", "Drop one of the two.")
    settings = merge_configs(from_file or CheckConfig(), flags)
    thresholds, source = settings.thresholds, ", ".join(settings.sources)
    if thresholds.is_empty():
        thresholds, source = Thresholds.defaults(), DEFAULTS_SOURCE
    return CheckPlan(thresholds=thresholds, source=source,
                     baseline=None if write_baseline is not None else settings.baseline,
                     max_regression=DEFAULT_MAX_REGRESSION if settings.max_regression is None else settings.max_regression,
                     strict=bool(settings.strict))

# ---------------------------------------------------------------------------------- evaluation


def _skip_reason(check: str, cb: CodebookReport) -> str:
    section = _SECTION_OF[check]
    if getattr(cb, section) is None:
        reason = _SECTION_REASON[section]
        return f"{reason}; {cb.note}" if cb.note and section == "usage" else reason
    return f"{_SPECS[check].describe} was not computed for this codebook"


def _fix_item(spec: CheckSpec, cb: CodebookReport, outcome: Outcome, value: float, threshold: float | None,
              baseline: float | None, message: str, kind: Kind, ctx: RemedyContext) -> CheckItem:
    """A failed check with its fix command (vqdoctor/remedies.py)."""
    fix = fix_remedy(spec.remedy, cb.name, ctx)
    return CheckItem(spec.check, cb.name, kind, outcome, value, threshold, baseline, message, fix.text, spec.percent, fix.argv)


def _threshold_items(report: Report, limits: Thresholds, ckpt: RemedyContext) -> list[CheckItem]:
    items: list[CheckItem] = []
    for cb in report.codebooks:
        for f in fields(Thresholds):
            bound = getattr(limits, f.name)
            if bound is None or f.name == "max_merged_pairs":
                continue
            spec = with_bounds(_SPECS[check_of(f.name)], warn=None, fail=float(bound))
            value = spec.value(cb)
            if value is None and spec.check == "allocation_tv" and cb.tokens_collapse is not None:
                continue  # measured, but not judged on residual levels (docs/verdicts.md): nothing to gate
            if value is None:
                items.append(CheckItem(spec.check, cb.name, "threshold", "skipped", None, bound, None,
                                       _skip_reason(spec.check, cb), None, spec.percent))
                continue
            default = _SPECS[spec.check].warn  # the warn band is where too little data makes a value unjudgeable
            stricter = default is not None and (default > bound if spec.direction == "min" else default < bound)
            status, raw_bound, clause = judge(spec, cb, value, warn=default if stricter else None, fail=float(bound))
            relation = ">=" if spec.direction == "min" else "<="
            shown = f"{spec.describe} is {fmt_value(value, spec.percent)}"
            if raw_bound is not None and spec.scaled is not None and status == "fail":
                bound_shown = fmt_value(raw_bound, spec.percent)
            else:
                bound_shown = fmt_value(bound, spec.percent) + (" of what a perfect codebook reaches" if spec.scaled is not None and cb.usage is not None else "")
            if status == "insufficient":
                items.append(CheckItem(spec.check, cb.name, "threshold", "insufficient", float(value), bound, None,
                                       f"{shown}{clause}", None, spec.percent))
                continue
            if status == "fail":
                items.append(_fix_item(spec, cb, "fail", float(value), bound, None,
                                       f"{shown}; required {relation} {bound_shown}{clause}", "threshold", ckpt))
            else:
                items.append(CheckItem(spec.check, cb.name, "threshold", "pass", float(value), bound, None,
                                       f"{shown} ({relation} {bound_shown}){clause}", None, spec.percent))
    if limits.max_merged_pairs is not None:
        items.append(_merged_pairs_item(report.embeddings_collapse, limits.max_merged_pairs))
    return items


def _pair_names(pairs: list[MergedPair]) -> list[str]:
    return sorted("+".join(sorted((p.label_a, p.label_b))) for p in pairs)


def _merged_pairs_item(ec: EmbeddingsCollapse | None, bound: int) -> CheckItem:
    if ec is None or ec.input_knn_purity is None:  # no input-side comparison: merged pairs are not judged
        return CheckItem(MERGED_PAIRS, None, "threshold", "skipped", None, bound, None,
                         _SECTION_REASON["embeddings_collapse"], None)
    n = len(ec.merged_pairs)
    status, _ = status_of(float(n), direction="max", warn=None, fail=float(bound))
    pairs = ", ".join(_pair_names(ec.merged_pairs)) or "none"
    message = f"{n} pair(s) of data modes merge in the latent space ({pairs}); allowed <= {bound}"
    if status == "fail":
        return CheckItem(MERGED_PAIRS, None, "threshold", "fail", float(n), bound, None, message, EMBEDDINGS_REMEDY)
    return CheckItem(MERGED_PAIRS, None, "threshold", "pass", float(n), bound, None, message, None)


def _regression_item(spec: CheckSpec, cb: CodebookReport, base: CodebookReport, max_regression: float,
                     ckpt: RemedyContext) -> CheckItem:
    new, old = spec.value(cb), spec.value(base)
    if new is None or old is None:
        side = "this run" if new is None else "the baseline"
        reason = _skip_reason(spec.check, cb if new is None else base)
        return CheckItem(spec.check, cb.name, "baseline", "skipped", new, None, old,
                         f"not measured in {side}: {reason}", None, spec.percent)
    tolerance = max_regression * max(abs(old), REGRESSION_FLOOR)
    worse = old - new if spec.direction == "min" else new - old
    bound = old - tolerance if spec.direction == "min" else old + tolerance
    change = "" if old == 0 else f"{(new - old) / abs(old):+.1%}; "
    verb = ("dropped" if new < old else "rose") if new != old else "stayed"
    message = (f"{spec.check} {verb} from {fmt_value(old, spec.percent)} (baseline) to {fmt_value(new, spec.percent)} "
               f"({change}allowed {'>=' if spec.direction == 'min' else '<='} {fmt_value(bound, spec.percent)})")
    if worse > tolerance:
        return _fix_item(spec, cb, "fail", float(new), bound, float(old), f"regression: {message}", "baseline", ckpt)
    return CheckItem(spec.check, cb.name, "baseline", "pass", float(new), bound, float(old), message, None, spec.percent)


def _baseline_items(report: Report, baseline: Mapping[str, Any], max_regression: float,
                    ckpt: RemedyContext) -> list[CheckItem]:
    base_cbs = {cb.name: cb for cb in (codebook_from_dict(d) for d in baseline.get("codebooks") or [])}
    now = {cb.name: cb for cb in report.codebooks}
    items: list[CheckItem] = []
    for cb in report.codebooks:
        base = base_cbs.get(cb.name)
        if base is None:
            items.append(CheckItem("codebook", cb.name, "baseline", "skipped", None, None, None,
                                   "this codebook is not in the baseline (new or renamed): nothing to compare", None))
            continue
        items.extend(_regression_item(_SPECS[c], cb, base, max_regression, ckpt) for c in GATED_CHECKS)
    for name in base_cbs:
        if name not in now:
            items.append(CheckItem("codebook", name, "baseline", "fail", None, None, None,
                                   "codebook is in the baseline but not found in this checkpoint (removed or renamed)",
                                   "compare with --codebook, or write a new baseline with `vqdoctor check ... --json baseline.json`"))
    items.append(_merged_pairs_regression(report.embeddings_collapse, baseline.get("embeddings_collapse")))
    return items


def _merged_pairs_regression(ec: EmbeddingsCollapse | None, base: Mapping[str, Any] | None) -> CheckItem:
    if ec is not None and ec.input_knn_purity is None:
        ec = None  # latent side only: nothing to compare
    if base is not None and base.get("input_knn_purity", 0.0) is None:
        base = None
    if ec is None or base is None:
        side = "this run" if ec is None else "the baseline"
        return CheckItem(MERGED_PAIRS, None, "baseline", "skipped", None if ec is None else float(len(ec.merged_pairs)),
                         None, None if base is None else float(len(base.get("merged_pairs") or [])),
                         f"no embeddings-collapse section in {side}", None)
    old_pairs = set(_pair_names([_build(MergedPair, p) for p in base.get("merged_pairs") or []]))
    now_pairs = _pair_names(ec.merged_pairs)
    new_pairs = [p for p in now_pairs if p not in old_pairs]
    value, old = float(len(now_pairs)), float(len(old_pairs))
    if new_pairs:
        return CheckItem(MERGED_PAIRS, None, "baseline", "fail", value, old, old,
                         f"regression: new merged pair(s) {', '.join(new_pairs)} "
                         f"(baseline: {', '.join(sorted(old_pairs)) or 'none'})", EMBEDDINGS_REMEDY)
    return CheckItem(MERGED_PAIRS, None, "baseline", "pass", value, old, old,
                     f"no new merged pairs ({len(now_pairs)} now, {len(old_pairs)} in the baseline)", None)


def evaluate(
    report: Report,
    *,
    thresholds: Thresholds,
    threshold_source: str = "flags",
    baseline: Mapping[str, Any] | None = None,
    baseline_source: str | None = None,
    max_regression: float = DEFAULT_MAX_REGRESSION,
    strict: bool = False,
    ckpt: str | None = None,
    remedy: RemedyContext | None = None,
) -> CheckResult:
    """Judge ``report`` against ``thresholds`` (per codebook, per level for stacks; merged pairs
    model-wide) and, when given, against ``baseline`` (a ``vqdoctor.report/1`` dict): one CheckItem
    per check per codebook. A value that does not apply is "skipped" with the reason; one the data
    are too few to judge (docs/verdicts.md, "Sample size") is "insufficient", which does not fail;
    with ``strict`` a skipped or insufficient check fails instead. ``remedy`` fills the fix commands (default: ``ckpt``, else the report's path, without data options)."""
    if max_regression < 0:
        raise UsageError(f"max_regression = {max_regression} is negative.", "Pass a relative tolerance such as 0.05.")
    ctx = remedy or RemedyContext(report.checkpoint.path if ckpt is None else ckpt, report.checkpoint.format,
                                  has_data=report.data.vectors is not None)
    items = _threshold_items(report, thresholds, ctx)
    if baseline is not None:
        items += _baseline_items(report, baseline, max_regression, ctx)
    if strict:
        items = [_strict(i) for i in items]
    items = [replace(i, direction=_SPECS[i.check].direction) if i.check in _SPECS else i for i in items]
    return CheckResult(items, thresholds, threshold_source, strict,
                       None if baseline is None else (baseline_source or "baseline"),
                       None if baseline is None else max_regression)


def _strict(item: CheckItem) -> CheckItem:
    if item.outcome == "insufficient":  # --strict: a check that cannot be judged fails
        return CheckItem(item.check, item.codebook, item.kind, "fail", item.value, item.threshold, item.baseline,
                         f"not enough data to judge (--strict): {item.message}", "pass more data, or drop --strict",
                         item.percent)
    if item.outcome != "skipped":
        return item
    return CheckItem(item.check, item.codebook, item.kind, "fail", item.value, item.threshold, item.baseline,
                     f"not measured (--strict): {item.message}", "pass the data this check needs, or drop --strict",
                     item.percent)


# ---------------------------------------------------------------------------------- baseline dicts


def _build(cls: type, d: Mapping[str, Any], **nested: Any) -> Any:
    return cls(**{f.name: nested.get(f.name, d.get(f.name)) for f in fields(cls)})


def codebook_from_dict(d: Mapping[str, Any]) -> CodebookReport:
    """A ``codebooks[]`` entry of a ``vqdoctor.report/1`` document back to a CodebookReport, so the
    baseline is measured with the same extractors as this run."""
    try:
        tc = d.get("tokens_collapse")
        w = d.get("w")
        sections = {
            "usage": None if d.get("usage") is None else _build(UsageMetrics, d["usage"]),
            "ema": None if d.get("ema") is None else _build(EmaMetrics, d["ema"]),
            "geometry": None if d.get("geometry") is None else _build(GeometryMetrics, d["geometry"]),
            "w": None if w is None else _build(WMetrics, w, shape=tuple(w.get("shape") or ())),
            "tokens_collapse": None if tc is None else _build(
                TokensCollapse, tc, per_mode=[_build(ModeShare, m) for m in tc.get("per_mode") or []]),
        }  # fmt: skip
        return _build(CodebookReport, d, **sections)
    except (TypeError, AttributeError, KeyError) as e:
        raise InputFileError(f"baseline codebook {d.get('name')!r} cannot be read: {e}",
                             "Re-create the baseline with `vqdoctor inspect CKPT --json PATH`.") from None

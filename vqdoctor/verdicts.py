"""Thresholds -> verdicts. Every check reads one number from a CodebookReport (or the model-wide
embeddings-collapse section), compares it with a documented warn and fail bound, and says why in
one line, with the command that repairs it. Defaults are documented in ``docs/verdicts.md``.

``vqdoctor check`` reuses :data:`CODEBOOK_CHECKS` with the user's bounds (see ``vqdoctor/check.py``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Literal

from vqdoctor.core.expect import vectors_needed
from vqdoctor.core.results import EmbeddingsCollapse, TokensCollapse
from vqdoctor.remedies import RemedyContext, fix_remedy
from vqdoctor.report.schema import CodebookReport, Finding, Report, Status, Verdict
from vqdoctor.report.text import fmt_value

Direction = Literal["min", "max"]  # "min": the value must stay above the bounds; "max": below


@dataclass(frozen=True)
class CheckSpec:
    check: str  # the name in JSON and in `vqdoctor check` flags
    describe: str  # what the value is, for messages
    direction: Direction
    warn: float | None
    fail: float | None
    remedy: str  # the fix that repairs it: kmeans | revive | simvq (vqdoctor/remedies.py writes the command)
    value: Callable[[CodebookReport], float | None]
    percent: bool = False  # show the value as a percentage
    count: bool = False  # the value is a whole number: the bound is reported as the equivalent integer
    # sample size (docs/verdicts.md): a bound on the value *relative* to what a perfect codebook
    # reaches with the same N, turned into a bound on the value itself; None: judged as it is
    scaled: Callable[[CodebookReport, float], float] | None = None
    # whether the data suffice to judge (None: always); when not, a non-ok status that is not a
    # fail becomes "insufficient" (with the N needed, from ``needed``)
    needed: Callable[[CodebookReport], int | None] | None = None


def _usage(attr: str) -> Callable[[CodebookReport], float | None]:
    def get(cb: CodebookReport) -> float | None:
        return None if cb.usage is None else getattr(cb.usage, attr)

    return get


def _dead_fraction(cb: CodebookReport) -> float | None:
    return None if cb.usage is None else cb.usage.dead_codes / cb.size


def _ema_dead_fraction(cb: CodebookReport) -> float | None:
    ema = cb.ema
    if ema is None or not ema.is_count or ema.dead_codes_relative is None:
        return None
    return ema.dead_codes_relative / cb.size


def _rank_fraction(cb: CodebookReport) -> float | None:
    if cb.geometry is None:
        return None
    return cb.geometry.numerical_rank / max(1, min(cb.size, cb.dim))


def _duplicate_fraction(cb: CodebookReport) -> float | None:
    if cb.geometry is None:
        return None
    return cb.geometry.redundant_codes / max(1, cb.geometry.duplicate_sample)


def _outside_fraction(cb: CodebookReport) -> float | None:
    g = cb.geometry
    if g is None or g.codes_outside_support is None:
        return None
    return g.codes_outside_support / cb.size


def _expected_utilization(cb: CodebookReport, bound: float) -> float:
    u = cb.usage
    return bound if u is None or u.expected_utilization is None else bound * u.expected_utilization


def _expected_dead(cb: CodebookReport, bound: float) -> float:
    u = cb.usage
    if u is None or u.expected_dead_codes is None:
        return bound
    alive = cb.size - u.expected_dead_codes  # codes a perfect codebook keeps alive at this N
    return (u.expected_dead_codes + bound * alive) / cb.size


def _expected_perplexity(cb: CodebookReport, bound: float) -> float:
    u = cb.usage
    return bound if u is None or u.expected_perplexity is None else bound * u.expected_perplexity / cb.size


def _usage_needed(cb: CodebookReport) -> int | None:
    """N needed to judge usage: a perfect codebook uses 95% of its codes (None: N suffices)."""
    u = cb.usage
    if u is None or u.vectors_for_95 is None or u.vectors >= u.vectors_for_95:
        return None
    return u.vectors_for_95


def _allocation_needed(cb: CodebookReport) -> int | None:
    """N needed to judge the allocation over the live codes: 95% of them filled by a perfect codebook."""
    tc = cb.tokens_collapse
    if tc is None or cb.usage is None or tc.live_codes is None:
        return None
    need = vectors_needed(max(1, tc.live_codes), 0.95)
    return need if cb.usage.vectors < need else None


def _sees_data_modes(cb: CodebookReport) -> bool:
    """Residual levels after the first quantize what earlier levels left over, not the data's
    peaks: their code-to-mode allocation is reported but not judged."""
    return cb.tokens_collapse is not None and cb.level == 0


def _allocation_tv(cb: CodebookReport) -> float | None:
    return cb.tokens_collapse.allocation_tv if _sees_data_modes(cb) else None  # type: ignore[union-attr]


def _starved(cb: CodebookReport) -> float | None:
    """Starved modes among those with enough vectors to judge; None when no mode has."""
    if not _sees_data_modes(cb):
        return None
    tc = cb.tokens_collapse
    assert tc is not None
    judged = [m for m in tc.per_mode if m.ratio is not None and m.mode not in (tc.insufficient_modes or [])]
    return float(len(tc.starved_modes)) if judged else None


# the `vqdoctor fix` command that repairs a failing check (vqdoctor/remedies.py builds it)
KMEANS = "kmeans"
REVIVE = "revive"
SIMVQ = "simvq"

CODEBOOK_CHECKS: tuple[CheckSpec, ...] = (
    CheckSpec("utilization", "share of codes used at least once", "min", 0.8, 0.3, REVIVE, _usage("utilization"), percent=True,
              scaled=_expected_utilization, needed=_usage_needed),
    CheckSpec("dead_fraction", "share of dead codes (below --min-count)", "max", 0.2, 0.5, REVIVE, _dead_fraction, percent=True,
              scaled=_expected_dead, needed=_usage_needed),
    CheckSpec("normalized_perplexity", "perplexity / K", "min", 0.5, 0.2, KMEANS, _usage("normalized_perplexity"),
              scaled=_expected_perplexity, needed=_usage_needed),
    CheckSpec("relative_mse", "quantization MSE / latent variance", "max", 0.5, 0.9, KMEANS, _usage("relative_mse")),
    CheckSpec("ema_dead_fraction", "share of codes the EMA buffer says are dead (usage < 0.1 x uniform)", "max", 0.2, 0.5, REVIVE, _ema_dead_fraction, percent=True),
    CheckSpec("rank_fraction", "numerical rank / min(K, d) of the codebook", "min", 0.5, None, SIMVQ, _rank_fraction),
    CheckSpec("duplicate_fraction", "share of codes that duplicate another code", "max", 0.05, 0.25, REVIVE, _duplicate_fraction, percent=True),
    CheckSpec("outside_support_fraction", "share of codes outside the latents' support", "max", 0.1, 0.3, KMEANS, _outside_fraction, percent=True),
    CheckSpec("allocation_tv", "total variation between live-code shares and data shares over modes", "max", 0.15, 0.3, KMEANS, _allocation_tv,
              needed=_allocation_needed),
    CheckSpec("starved_modes", "data modes with live-code share < 0.5 x data share", "max", 0.5, 1.5, KMEANS, _starved,
              count=True, needed=_allocation_needed),
)

MERGED_PAIRS_WARN = None  # no warn level:
MERGED_PAIRS_FAIL = 0.5  # one merged pair of modes is embeddings collapse
EMBEDDINGS_REMEDY = (
    "the encoder merges these modes before the quantizer sees them: no codebook repair helps; "
    "give the encoder more capacity (hidden size) or pretrain it without VQ, then `vqdoctor fix kmeans`"
)


def status_of(value: float, *, direction: Direction, warn: float | None, fail: float | None) -> tuple[Status, float | None]:
    """Return (status, the bound that decided it; None when ok and no bound applies)."""
    worse = (lambda v, b: v < b) if direction == "min" else (lambda v, b: v > b)
    if fail is not None and worse(value, fail):
        return "fail", fail
    if warn is not None and worse(value, warn):
        return "warn", warn
    return "ok", warn if warn is not None else fail


def integer_bound(bound: float, direction: Direction) -> float:
    """The whole number that a count compares against as it does against ``bound``: a count above
    1.5 is a count above 1 (``max``), a count below 2.5 one below 3 (``min``)."""
    return float(math.floor(bound) if direction == "max" else math.ceil(bound))


def unit_of(spec: CheckSpec) -> str:
    return "share" if spec.percent else "count" if spec.count else "number"


def judge(spec: CheckSpec, cb: CodebookReport, value: float, *, warn: float | None, fail: float | None) -> tuple[Status, float | None, str]:
    """Status of ``value`` against the spec's bounds at this sample size: (status, the bound on the
    value that decided it, the sample-size clause for the message)."""
    scale = spec.scaled if spec.scaled is not None and cb.usage is not None else None
    w = None if warn is None or scale is None else scale(cb, warn)
    f = None if fail is None or scale is None else scale(cb, fail)
    status, bound = status_of(value, direction=spec.direction, warn=warn if scale is None else w, fail=fail if scale is None else f)
    clause = ""
    if scale is not None and cb.usage is not None and cb.usage.expected_utilization is not None:
        u = cb.usage
        reach = scale(cb, 1.0 if spec.direction == "min" else 0.0)
        clause = (f"; with N = {u.vectors:,} ({u.vectors_per_code:.3g} per code) a perfect codebook reaches "
                  f"{fmt_value(reach, spec.percent, digits=3)}")
    need = spec.needed(cb) if spec.needed is not None else None
    if need is not None and status == "warn":
        status = "insufficient"
        clause += f"; not enough data to judge: N >= {need:,} needed"
    return status, bound, clause


def codebook_verdicts(
    cb: CodebookReport, *, remedy: RemedyContext, checks: Sequence[CheckSpec] = CODEBOOK_CHECKS
) -> list[Verdict]:
    """One verdict per check that applies to ``cb``; a non-ok one carries the fix command for
    ``remedy``'s checkpoint and data (:func:`vqdoctor.remedies.fix_remedy`)."""
    out: list[Verdict] = []
    for spec in checks:
        value = spec.value(cb)
        if value is None:
            continue
        status, bound, clause = judge(spec, cb, value, warn=spec.warn, fail=spec.fail)
        if spec.count and bound is not None:
            bound = integer_bound(bound, spec.direction)
        relation = ">=" if spec.direction == "min" else "<="
        if status in ("ok", "insufficient"):
            message = f"{spec.describe} is {fmt_value(value, spec.percent, digits=3)}{clause}"
        else:
            message = (
                f"{spec.describe} is {fmt_value(value, spec.percent, digits=3)}; "
                f"expected {relation} {fmt_value(bound, spec.percent, digits=3)}{clause}"  # type: ignore[arg-type]
            )
            if spec.check == "starved_modes" and cb.tokens_collapse is not None:
                names = [m.label for m in cb.tokens_collapse.per_mode if m.mode in cb.tokens_collapse.starved_modes]
                message += f" (starved: {', '.join(names)})"
        fix = None if status in ("ok", "insufficient") else fix_remedy(spec.remedy, cb.name, remedy)
        out.append(Verdict(spec.check, cb.name, status, float(value), bound, message,
                           None if fix is None else fix.text, None if fix is None or fix.argv is None else list(fix.argv),
                           unit_of(spec)))
    return out


def embeddings_verdicts(ec: EmbeddingsCollapse | None, *, fail: float = MERGED_PAIRS_FAIL) -> list[Verdict]:
    """The merged-pairs verdict, only from a real input-side comparison (no inputs: no verdict)."""
    if ec is None or ec.input_knn_purity is None:
        return []
    n = float(len(ec.merged_pairs))
    status, bound = status_of(n, direction="max", warn=MERGED_PAIRS_WARN, fail=fail)
    bound = None if bound is None else integer_bound(bound, "max")
    if status == "ok":
        message = "no pair of data modes merges in the latent space"
        remedy = None
    else:
        pairs = ", ".join(f"{p.label_a}+{p.label_b}" for p in ec.merged_pairs)
        message = f"{len(ec.merged_pairs)} pair(s) of data modes merge in the latent space: {pairs}"
        remedy = EMBEDDINGS_REMEDY
    return [Verdict("merged_pairs", None, status, n, bound, message, remedy, None, "count")]


def with_bounds(spec: CheckSpec, *, warn: float | None, fail: float | None) -> CheckSpec:
    return replace(spec, warn=warn, fail=fail)


def rejudged(report: Report, *, checks: Sequence[CheckSpec], merged_pairs_fail: float, remedy: RemedyContext,
             source: str) -> Report:
    """``report`` with its verdicts and diagnosis judged again against ``checks`` (e.g. the fail
    bounds a ``[tool.vqdoctor.check]`` table configures, so ``inspect`` and ``check`` agree), and a
    note naming ``source``."""
    verdicts = [v for cb in report.codebooks for v in codebook_verdicts(cb, remedy=remedy, checks=checks)]
    verdicts += embeddings_verdicts(report.embeddings_collapse, fail=merged_pairs_fail)
    return replace(report, verdicts=verdicts, diagnosis=diagnosis(report.codebooks, report.embeddings_collapse, verdicts),
                   notes=[*report.notes, f"Fail bounds from {source} (as `vqdoctor check` applies them)."])


# --- diagnosis: verdicts grouped into the collapse they reveal --------------------------------

FAMILIES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("embeddings collapse", ("merged_pairs",)),
    ("tokens collapse", ("allocation_tv", "starved_modes")),
    ("codebook collapse", ("utilization", "dead_fraction", "normalized_perplexity", "ema_dead_fraction")),
    ("geometry", ("rank_fraction", "duplicate_fraction", "outside_support_fraction")),
    ("quantization error", ("relative_mse",)),
)
_RANK = {"ok": 0, "insufficient": 1, "warn": 2, "fail": 3}


def _tokens_summary(cbs: Sequence[CodebookReport]) -> str:
    worst = max((cb for cb in cbs if cb.tokens_collapse is not None),
                key=lambda cb: cb.tokens_collapse.allocation_tv)  # type: ignore[union-attr]
    tc = worst.tokens_collapse
    assert tc is not None
    top = max(tc.per_mode, key=lambda m: m.code_share)
    live = tc.live_codes if tc.live_codes is not None else worst.size
    text = (
        f"live codes pile onto mode {top.label} ({top.codes} of {live} live codes for {top.data_share:.0%} of the data) "
        f"in {worst.name}; {len(tc.starved_modes)} of {tc.modes} modes starved, allocation TV {tc.allocation_tv:.2f}"
    )
    return text + _parked(tc)


def _parked(tc: TokensCollapse) -> str:
    """'; 240 dead codes parked near mode 8' (the mode holding most dead codes), or ''."""
    if not tc.dead_codes or tc.dead_parked is None or not any(tc.dead_parked):
        return f"; {tc.dead_codes} dead codes left out" if tc.dead_codes else ""
    m = max(range(tc.modes), key=lambda i: tc.dead_parked[i])  # type: ignore[index]
    return f"; {tc.dead_codes} dead codes, {tc.dead_parked[m]} of them parked near mode {tc.per_mode[m].label}"


def _too_few(cbs: Sequence[CodebookReport]) -> str:
    """'not enough data to judge: N = 10,000 (2.44 per code), a perfect codebook would use 91%; N >= 12,270 needed'."""
    u = next((cb.usage for cb in cbs if cb.usage is not None and cb.usage.expected_utilization is not None), None)
    if u is None:
        return "not enough data to judge"
    return (f"not enough data to judge: N = {u.vectors:,} ({u.vectors_per_code:.3g} per code), a perfect codebook would "
            f"use {u.expected_utilization:.0%} of its codes; N >= {u.vectors_for_95:,} needed for 95%")


def _usage_summary(cbs: Sequence[CodebookReport]) -> str:
    parts = []
    for cb in cbs[:3]:
        bits = []
        if cb.usage is not None:
            bits.append(f"{cb.usage.used_codes} of {cb.size} codes used ({cb.usage.utilization:.0%}), "
                        f"perplexity {cb.usage.perplexity:.3g}")
        if cb.ema is not None and cb.ema.dead_codes_relative is not None:
            bits.append(f"EMA usage says {cb.ema.dead_codes_relative} of {cb.size} codes are dead")
        parts.append(f"{cb.name}: " + ", ".join(bits))
    more = f" (+{len(cbs) - 3} more)" if len(cbs) > 3 else ""
    return "; ".join(parts) + more


def _evidence(collapse: str, codebooks: Sequence[CodebookReport], embeddings: EmbeddingsCollapse | None) -> int:
    """How directly a finding is measured (docs/verdicts.md, "Order of the diagnosis"): 3 counted
    on every vector (usage; tokens collapse with labels) or compared one latent vector per item
    with that item's input (embeddings collapse); 2 resting on inferred modes or on flattened
    latent maps; 1 geometry and quantization error."""
    if collapse == "codebook collapse":
        return 3
    if collapse == "tokens collapse":
        labelled = all(cb.tokens_collapse.mode_source == "labels" for cb in codebooks if cb.tokens_collapse is not None)
        return 3 if labelled else 2
    if collapse == "embeddings collapse":
        return 3 if embeddings is not None and (embeddings.comparison or "").startswith("one latent vector") else 2
    return 1


def diagnosis(codebooks: Sequence[CodebookReport], embeddings: EmbeddingsCollapse | None,
              verdicts: Sequence[Verdict]) -> list[Finding]:
    """Group the verdicts into findings, worst first; one "healthy" finding when all are ok."""
    by_name = {cb.name: cb for cb in codebooks}
    findings: list[Finding] = []
    for collapse, checks in FAMILIES:
        bad = [v for v in verdicts if v.check in checks and v.status != "ok"]
        if not bad:
            continue
        status: Status = max((v.status for v in bad), key=_RANK.__getitem__)
        names = list(dict.fromkeys(v.codebook for v in bad if v.codebook is not None))
        cbs = [by_name[n] for n in names if n in by_name]
        if collapse == "embeddings collapse":
            assert embeddings is not None
            pairs = ", ".join(f"{p.label_a}+{p.label_b}" for p in embeddings.merged_pairs)
            purity = embeddings.latent_knn_purity
            before = "" if embeddings.input_knn_purity is None else f" vs {embeddings.input_knn_purity:.0%} in the inputs"
            summary = f"the encoder merges modes {pairs} before the quantizer sees them (latent k-NN purity {purity:.0%}{before})"
        elif collapse == "tokens collapse":
            summary = _tokens_summary(cbs)
        elif collapse == "codebook collapse":
            summary = _usage_summary(cbs)
            if status == "insufficient":
                summary += "; " + _too_few(cbs)
        else:
            summary = "; ".join(f"{v.codebook}: {v.message}" for v in bad[:3]) + (f" (+{len(bad) - 3} more)" if len(bad) > 3 else "")
        first = next((v for v in bad if v.status == status and v.remedy), None)
        findings.append(Finding(collapse, status, names, summary, None if first is None else first.remedy,
                                None if first is None else first.remedy_argv))
    evidence = {f.collapse: _evidence(f.collapse, codebooks, embeddings) for f in findings}
    findings.sort(key=lambda f: (-_RANK[f.status], -evidence[f.collapse]))  # stable: FAMILIES order on ties
    if not findings and verdicts:
        findings.append(Finding("healthy", "ok", [], f"all {len(verdicts)} checks pass", None))
    return findings

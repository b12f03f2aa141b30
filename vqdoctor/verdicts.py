"""Thresholds -> verdicts. Every check reads one number from a CodebookReport (or the model-wide
embeddings-collapse section), compares it with a documented warn and fail bound, and says why in
one line, with the command that repairs it. Defaults are documented in ``docs/verdicts.md``.

``vqdoctor check`` reuses :data:`CODEBOOK_CHECKS` with the user's bounds (see ``vqdoctor/check.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Literal

from vqdoctor.core.results import EmbeddingsCollapse
from vqdoctor.report.schema import CodebookReport, Finding, Status, Verdict

Direction = Literal["min", "max"]  # "min": the value must stay above the bounds; "max": below


@dataclass(frozen=True)
class CheckSpec:
    check: str  # the name in JSON and in `vqdoctor check` flags
    describe: str  # what the value is, for messages
    direction: Direction
    warn: float | None
    fail: float | None
    remedy: str  # command template; {ckpt} and {codebook} are filled in
    value: Callable[[CodebookReport], float | None]
    percent: bool = False  # show the value as a percentage


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


def _sees_data_modes(cb: CodebookReport) -> bool:
    """Residual levels after the first quantize what earlier levels left over, not the data's
    peaks: their code-to-mode allocation is reported but not judged."""
    return cb.tokens_collapse is not None and cb.level == 0


def _allocation_tv(cb: CodebookReport) -> float | None:
    return cb.tokens_collapse.allocation_tv if _sees_data_modes(cb) else None  # type: ignore[union-attr]


def _starved(cb: CodebookReport) -> float | None:
    return float(len(cb.tokens_collapse.starved_modes)) if _sees_data_modes(cb) else None  # type: ignore[union-attr]


KMEANS = "vqdoctor fix kmeans {ckpt} --codebook '{codebook}' --out fixed.safetensors (data options as here; --encoder-from PRETRAINED to initialise from a pretrained encoder)"
REVIVE = "vqdoctor fix revive {ckpt} --codebook '{codebook}' --out fixed.safetensors (data options as here)"
SIMVQ = "vqdoctor fix simvq {ckpt} --codebook '{codebook}' --mode paper --out simvq.safetensors, then retrain with W learned"

CODEBOOK_CHECKS: tuple[CheckSpec, ...] = (
    CheckSpec("utilization", "share of codes used at least once", "min", 0.8, 0.3, REVIVE, _usage("utilization"), percent=True),
    CheckSpec("dead_fraction", "share of dead codes (below --min-count)", "max", 0.2, 0.5, REVIVE, _dead_fraction, percent=True),
    CheckSpec("normalized_perplexity", "perplexity / K", "min", 0.5, 0.2, KMEANS, _usage("normalized_perplexity")),
    CheckSpec("relative_mse", "quantization MSE / latent variance", "max", 0.5, 0.9, KMEANS, _usage("relative_mse")),
    CheckSpec("ema_dead_fraction", "share of codes the EMA buffer says are dead (usage < 0.1 x uniform)", "max", 0.2, 0.5, REVIVE, _ema_dead_fraction, percent=True),
    CheckSpec("rank_fraction", "numerical rank / min(K, d) of the codebook", "min", 0.5, None, SIMVQ, _rank_fraction),
    CheckSpec("duplicate_fraction", "share of codes that duplicate another code", "max", 0.05, 0.25, REVIVE, _duplicate_fraction, percent=True),
    CheckSpec("outside_support_fraction", "share of codes outside the latents' support", "max", 0.1, 0.3, KMEANS, _outside_fraction, percent=True),
    CheckSpec("allocation_tv", "total variation between code shares and data shares over modes", "max", 0.15, 0.3, KMEANS, _allocation_tv),
    CheckSpec("starved_modes", "data modes with code share < 0.5 x data share", "max", 0.5, 1.5, KMEANS, _starved),
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


def _fmt(value: float, percent: bool) -> str:
    return f"{value:.1%}" if percent else f"{value:.3g}"


def codebook_verdicts(
    cb: CodebookReport, *, ckpt: str, checks: Sequence[CheckSpec] = CODEBOOK_CHECKS
) -> list[Verdict]:
    out: list[Verdict] = []
    for spec in checks:
        value = spec.value(cb)
        if value is None:
            continue
        status, bound = status_of(value, direction=spec.direction, warn=spec.warn, fail=spec.fail)
        relation = ">=" if spec.direction == "min" else "<="
        if status == "ok":
            message = f"{spec.describe} is {_fmt(value, spec.percent)}"
        else:
            message = (
                f"{spec.describe} is {_fmt(value, spec.percent)}; "
                f"expected {relation} {_fmt(bound, spec.percent)}"  # type: ignore[arg-type]
            )
            if spec.check == "starved_modes" and cb.tokens_collapse is not None:
                names = [m.label for m in cb.tokens_collapse.per_mode if m.mode in cb.tokens_collapse.starved_modes]
                message += f" (starved: {', '.join(names)})"
        remedy = None if status == "ok" else spec.remedy.format(ckpt=ckpt, codebook=cb.name)
        out.append(Verdict(spec.check, cb.name, status, float(value), bound, message, remedy))
    return out


def embeddings_verdicts(ec: EmbeddingsCollapse | None) -> list[Verdict]:
    if ec is None:
        return []
    n = float(len(ec.merged_pairs))
    status, bound = status_of(n, direction="max", warn=MERGED_PAIRS_WARN, fail=MERGED_PAIRS_FAIL)
    if status == "ok":
        message = "no pair of data modes merges in the latent space"
        remedy = None
    else:
        pairs = ", ".join(f"{p.label_a}+{p.label_b}" for p in ec.merged_pairs)
        message = f"{len(ec.merged_pairs)} pair(s) of data modes merge in the latent space: {pairs}"
        remedy = EMBEDDINGS_REMEDY
    return [Verdict("merged_pairs", None, status, n, bound, message, remedy)]


def with_bounds(spec: CheckSpec, *, warn: float | None, fail: float | None) -> CheckSpec:
    return replace(spec, warn=warn, fail=fail)


# --- diagnosis: verdicts grouped into the collapse they reveal --------------------------------

FAMILIES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("embeddings collapse", ("merged_pairs",)),
    ("tokens collapse", ("allocation_tv", "starved_modes")),
    ("codebook collapse", ("utilization", "dead_fraction", "normalized_perplexity", "ema_dead_fraction")),
    ("geometry", ("rank_fraction", "duplicate_fraction", "outside_support_fraction")),
    ("quantization error", ("relative_mse",)),
)
_RANK = {"ok": 0, "warn": 1, "fail": 2}


def _tokens_summary(cbs: Sequence[CodebookReport]) -> str:
    worst = max((cb for cb in cbs if cb.tokens_collapse is not None),
                key=lambda cb: cb.tokens_collapse.allocation_tv)  # type: ignore[union-attr]
    tc = worst.tokens_collapse
    assert tc is not None
    top = max(tc.per_mode, key=lambda m: m.code_share)
    return (
        f"codes pile onto mode {top.label} ({top.codes} of {worst.size} codes for {top.data_share:.0%} of the data) "
        f"in {worst.name}; {len(tc.starved_modes)} of {tc.modes} modes starved, allocation TV {tc.allocation_tv:.2f}"
    )


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
        else:
            summary = "; ".join(f"{v.codebook}: {v.message}" for v in bad[:3]) + (f" (+{len(bad) - 3} more)" if len(bad) > 3 else "")
        remedy = next((v.remedy for v in bad if v.status == status and v.remedy), None)
        findings.append(Finding(collapse, status, names, summary, remedy))
    findings.sort(key=lambda f: -_RANK[f.status])
    if not findings and verdicts:
        findings.append(Finding("healthy", "ok", [], f"all {len(verdicts)} checks pass", None))
    return findings

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
from vqdoctor.report.schema import CodebookReport, Status, Verdict

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
    return cb.geometry.near_duplicate_pairs / cb.size


def _outside_fraction(cb: CodebookReport) -> float | None:
    g = cb.geometry
    if g is None or g.codes_outside_support is None:
        return None
    return g.codes_outside_support / cb.size


def _allocation_tv(cb: CodebookReport) -> float | None:
    return None if cb.tokens_collapse is None else cb.tokens_collapse.allocation_tv


def _starved(cb: CodebookReport) -> float | None:
    tc = cb.tokens_collapse
    return None if tc is None else float(len(tc.starved_modes))


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
    CheckSpec("duplicate_fraction", "near-duplicate code pairs per code", "max", 0.05, 0.25, REVIVE, _duplicate_fraction, percent=True),
    CheckSpec("outside_support_fraction", "share of codes outside the latents' support", "max", 0.1, 0.3, KMEANS, _outside_fraction, percent=True),
    CheckSpec("allocation_tv", "total variation between code shares and data shares over modes", "max", 0.15, 0.3, KMEANS, _allocation_tv),
    CheckSpec("starved_modes", "data modes with code share < 0.5 x data share", "max", 0.5, 1.5, KMEANS, _starved),
)

MERGED_PAIRS_WARN = 0.5  # any merged pair warns
MERGED_PAIRS_FAIL = 1.5  # two or more fail
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

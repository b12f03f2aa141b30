"""The Report: what ``inspect`` found, as one versioned value. Renderers (json, terminal,
plots, html) take a Report and compute nothing. ``None`` means "does not apply"."""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from vqdoctor.core.results import (
    CheckpointInfo,
    EmaMetrics,
    EmbeddingsCollapse,
    GeometryMetrics,
    TokensCollapse,
    UsageMetrics,
    WMetrics,
)

SCHEMA = "vqdoctor.report/1"
# CodebookReport.mode_counts (the allocation heatmap's data) is kept up to this many code x mode
# cells: 2^20 cells are ~40 MB of Python ints and ~1 s to convert (K = 262,144 x 10 modes: 100 MB, 3.3 s).
MODE_COUNTS_MAX_CELLS = 2**20
Status = Literal["ok", "warn", "fail", "insufficient"]  # insufficient: not enough data to judge (docs/verdicts.md)


@dataclass(frozen=True)
class Verdict:
    check: str  # e.g. "utilization"
    codebook: str | None  # None for model-wide checks
    status: Status
    value: float | None
    threshold: float | None  # the bound that decided the status (warn or fail bound)
    message: str  # one line: why
    remedy: str | None  # the command to run, shell-quoted (shlex.join of remedy_argv), or why there is none
    remedy_argv: list[str] | None = None  # the command as an argv list; None when no command applies
    unit: str = "number"  # how value and threshold read: "share" (a fraction, shown as %), "count" (whole numbers), "number"


@dataclass(frozen=True)
class Finding:
    """One line of the diagnosis: which collapse this model has (or that it has none)."""

    collapse: str  # "codebook collapse" | "tokens collapse" | "embeddings collapse" | "geometry" | "quantization error" | "healthy"
    status: Status  # worst verdict of the checks behind it
    codebooks: list[str]  # codebooks affected ([] for model-wide findings)
    summary: str  # one sentence with the numbers
    remedy: str | None  # as Verdict.remedy
    remedy_argv: list[str] | None = None


@dataclass(frozen=True)
class CodebookReport:
    name: str
    stack: str
    layout: str
    kind: str
    metric: str
    size: int
    dim: int
    level: int
    head: int
    keys: dict[str, str]
    usage: UsageMetrics | None
    ema: EmaMetrics | None
    geometry: GeometryMetrics | None
    w: WMetrics | None
    tokens_collapse: TokensCollapse | None
    counts: list[int] | None = None  # per-code usage counts (plots); omitted from JSON unless asked
    note: str | None = None
    metric_source: str = "layout"  # layout | config | detected | flag
    metric_evidence: str | None = None  # e.g. "all 512 codes unit-norm ±1e-3"
    mode_counts: list[list[int]] | None = None  # (K, M) vectors of mode m on code k (allocation heatmap; None above MODE_COUNTS_MAX_CELLS); not in JSON


@dataclass(frozen=True)
class DataInfo:
    source: str  # "latents: PATH" | "inputs: PATH via encoder ..." | "none (data-free analysis)"
    vectors: int | None
    dim: int | None
    mode_source: str | None


@dataclass(frozen=True)
class Projection2D:
    """Points for the 2-D picture (computed in core, drawn by report/plots)."""

    method: str  # "tsne" | "umap" | "pca"
    latents: list[list[float]]  # (n, 2)
    latent_modes: list[int]
    codes: list[list[float]] | None  # (K', 2) codes placed in the same picture
    inputs: list[list[float]] | None  # (n, 2) the inputs' picture, when given
    seconds: float
    codebook: str | None = None  # the codebook whose codes are drawn (markers sized by its counts)
    code_ids: list[int] | None = None  # row j of ``codes`` is code code_ids[j] of that codebook


@dataclass(frozen=True)
class Report:
    checkpoint: CheckpointInfo
    data: DataInfo
    codebooks: list[CodebookReport]
    embeddings_collapse: EmbeddingsCollapse | None
    verdicts: list[Verdict]
    diagnosis: list[Finding] = field(default_factory=list)
    codebook_free: list[dict[str, str]] = field(default_factory=list)
    projection: Projection2D | None = None
    notes: list[str] = field(default_factory=list)
    schema: str = SCHEMA
    vqdoctor_version: str = ""

    def to_dict(self, *, include_counts: bool = False) -> dict:
        """The ``--json`` document of this report (see :func:`report_to_dict`)."""
        return report_to_dict(self, include_counts=include_counts)


# ------------------------------------------------------------------ the JSON form (vqdoctor.report/1)


# Top-level and per-codebook key order (the rest follow their dataclass field order).
_CODEBOOK_KEYS = (
    "name", "size", "dim", "level", "kind", "metric", "metric_source", "metric_evidence", "layout", "stack", "head", "keys", "note",
    "usage", "ema", "geometry", "w", "tokens_collapse",
)  # fmt: skip


def _plain(value: Any) -> Any:
    """Dataclasses, mappings, sequences and numbers -> JSON types; NaN/Inf -> None."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        f = float(value)
        return f if math.isfinite(f) else None
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "tolist"):  # numpy arrays and scalars, torch tensors
        return _plain(value.tolist())
    raise TypeError(f"cannot write a {type(value).__name__} into the JSON report")


def _codebook_dict(cb: CodebookReport, include_counts: bool) -> dict[str, Any]:
    out = {key: _plain(getattr(cb, key)) for key in _CODEBOOK_KEYS}
    if include_counts:
        out["counts"] = _plain(cb.counts)
    return out


def _projection_dict(p: Projection2D | None, include_counts: bool) -> dict[str, Any] | None:
    if p is None:
        return None
    out: dict[str, Any] = {
        "method": p.method,
        "points": len(p.latents),
        "codes": None if p.codes is None else len(p.codes),
        "with_inputs": p.inputs is not None,
        "seconds": _plain(p.seconds),
    }
    if include_counts:
        out["latents"] = _plain(p.latents)
        out["latent_modes"] = _plain(p.latent_modes)
        out["code_points"] = _plain(p.codes)
        out["input_points"] = _plain(p.inputs)
    return out


def report_to_dict(report: Report, *, include_counts: bool = False) -> dict:
    """The JSON document for ``report`` as plain dicts/lists/numbers (stable key order).

    ``include_counts`` adds each codebook's per-code ``counts`` and the projection's points."""
    return {
        "schema": report.schema,
        "vqdoctor_version": report.vqdoctor_version,
        "checkpoint": _plain(report.checkpoint),
        "data": _plain(report.data),
        "codebooks": [_codebook_dict(cb, include_counts) for cb in report.codebooks],
        "embeddings_collapse": _plain(report.embeddings_collapse),
        "verdicts": [_plain(v) for v in report.verdicts],
        "diagnosis": [_plain(f) for f in report.diagnosis],
        "codebook_free": _plain(report.codebook_free),
        "projection": _projection_dict(report.projection, include_counts),
        "notes": _plain(report.notes),
    }

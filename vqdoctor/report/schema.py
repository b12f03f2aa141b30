"""The Report: what ``inspect`` found, as one versioned value. Renderers (json, terminal,
plots, html) take a Report and compute nothing. ``None`` means "does not apply"."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from vqdoctor.core.results import (
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
class CheckpointInfo:
    path: str
    format: str
    nesting: str
    fingerprint: str


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
        """The ``--json`` document of this report (see :func:`vqdoctor.report.json_out.report_to_dict`)."""
        from vqdoctor.report.json_out import report_to_dict

        return report_to_dict(self, include_counts=include_counts)

"""Frozen result types of the pure core. Field names are the JSON contract
(``vqdoctor/report/report.schema.json``, documented in ``docs/json-schema.md``); a renderer turns them into JSON with ``dataclasses.asdict``.
A value that cannot be computed is ``None`` (JSON ``null``), never a made-up number."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class UsageMetrics:
    vectors: int  # N assigned vectors
    used_codes: int  # #{k : c_k >= 1}
    dead_codes: int  # #{k : c_k < min_count}
    min_count: int
    utilization: float  # used_codes / K  (SimVQ paper's definition)
    perplexity: float  # exp(-sum p ln p)
    normalized_perplexity: float  # perplexity / K
    entropy_bits: float  # -sum p log2 p
    quantization_mse: float | None  # mean squared error per element, in the compared space
    relative_mse: float | None  # quantization_mse / mean per-element variance of the vectors
    top1_mass: float  # share of vectors on the most used code
    top10pct_mass: float  # share of vectors on the top 10% most used codes
    space: str  # what the numbers are measured in, e.g. "project_in output (cosine)"
    # what a perfect codebook (every code equally likely) reaches with the same N (core/expect.py)
    vectors_per_code: float | None = None  # N / K
    expected_used_codes: float | None = None  # K (1 - (1 - 1/K)^N)
    expected_utilization: float | None = None  # expected_used_codes / K
    expected_dead_codes: float | None = None  # K P(Binomial(N, 1/K) < min_count)
    expected_perplexity: float | None = None  # exp(E[plug-in entropy of N uniform draws])
    vectors_for_95: int | None = None  # N at which a perfect codebook uses 95% of its codes
    vectors_for_99: int | None = None  # ... 99%


@dataclass(frozen=True)
class EmaMetrics:
    source: str  # state-dict key of the buffer
    is_count: bool
    total: float | None  # sum of the buffer (≈ batch tokens seen per step for decayed counts)
    dead_codes_relative: int | None  # usage < 0.1 * uniform share (batch-size free; Moshi's rule)
    dead_codes_absolute: int | None  # usage < absolute threshold
    absolute_threshold: float
    perplexity: float | None  # from buffer shares
    normalized_perplexity: float | None
    initted: bool | None
    note: str | None


@dataclass(frozen=True)
class GeometryMetrics:
    singular_values: list[float]  # descending, of the centred effective codebook
    numerical_rank: int  # #{s > s_max * max(K, d) * eps(float32)}
    effective_rank: float  # exp(H(s / sum s))  (Roy & Vetterli)
    near_duplicate_pairs: int  # pairs closer than dup_tolerance * median nearest-neighbour distance
    redundant_codes: int  # codes that near-duplicate a lower-index code (n copies add n - 1)
    duplicate_sample: int  # codes examined for duplicates (K, or a seeded subsample of large K)
    duplicate_tolerance: float
    median_nn_distance: float | None
    codes_outside_support: int | None  # with data: codes farther from every vector than the support radius
    support_radius: float | None


@dataclass(frozen=True)
class WMetrics:
    source: str  # state-dict key of W
    shape: tuple[int, int]
    rank: int  # numerical rank
    effective_rank: float
    frobenius_norm: float
    singular_values: list[float]


@dataclass(frozen=True)
class ModeShare:
    mode: int
    label: str
    data_share: float  # share of vectors from this mode
    code_share: float  # share of codes owned by this mode
    ratio: float | None  # code_share / data_share (None when data_share == 0)
    codes: int
    vectors: int


@dataclass(frozen=True)
class TokensCollapse:
    modes: int
    mode_source: str  # "labels" | "inferred: gmm-bic on inputs" | ...
    per_mode: list[ModeShare]
    starved_modes: list[int]  # ratio < starved_ratio
    starved_ratio: float
    allocation_tv: float  # 1/2 sum |code share - data share|, over the live codes
    live_codes: int | None = None  # codes that received a vector (the allocation is over these)
    dead_codes: int | None = None  # K - live_codes, reported apart
    dead_parked: list[int] | None = None  # per mode: dead codes whose nearest vector is of that mode
    insufficient_modes: list[int] | None = None  # too few vectors to judge starvation (not in starved_modes)


@dataclass(frozen=True)
class MergedPair:
    a: int
    b: int
    label_a: str
    label_b: str
    input_overlap: float | None  # confusion between a and b by k-NN in input space
    latent_overlap: float  # the same in latent space


@dataclass(frozen=True)
class EmbeddingsCollapse:
    mode_source: str
    labels: list[str]
    input_modes: int | None  # modes a clustering rule finds in input space (None without inputs)
    embedding_modes: int  # modes the same rule finds in latent space
    input_knn_purity: float | None
    latent_knn_purity: float
    merged_pairs: list[MergedPair]
    subsample: int  # points used
    comparison: str | None = None  # how latents and inputs were compared, e.g. "one latent vector per item"


@dataclass(frozen=True)
class CheckpointInfo:
    """Which checkpoint a report or a statistics file is of (``vqdoctor.report.schema`` re-exports it)."""

    path: str
    format: str
    nesting: str
    fingerprint: str  # sha256 of the file (or of the folder's files)

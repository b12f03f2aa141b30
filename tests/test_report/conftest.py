"""Hand-built Reports for the renderer tests. Every number is written out, so the renderers are
tested without the analysis engine: a plain codebook with data, a 3-level RVQ stack, a SimVQ
codebook with W, an EMA-only (data-free) codebook, tokens collapse with starved modes, embeddings
collapse with merged pairs, ok/warn/fail verdicts and a 2-D projection; plus a data-free report."""

from __future__ import annotations

import math

import pytest

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
from vqdoctor.remedies import RemedyContext, fix_remedy
from vqdoctor.report.schema import (
    CheckpointInfo,
    CodebookReport,
    DataInfo,
    Projection2D,
    Report,
    Verdict,
)

CKPT = "runs/vqvae/last.ckpt"
LABELS = ["ring", "blob", "spiral"]


def _usage(counts: list[int], *, mse: float | None, rel: float | None, space: str) -> UsageMetrics:
    """Usage metrics written from counts with the DESIGN.md definitions (test data only)."""
    n = sum(counts)
    k = len(counts)
    p = [c / n for c in counts if c > 0]
    h = -sum(q * math.log(q) for q in p)
    ordered = sorted(counts, reverse=True)
    top = max(1, math.ceil(0.1 * k))
    used = sum(1 for c in counts if c >= 1)
    return UsageMetrics(
        vectors=n,
        used_codes=used,
        dead_codes=k - used,
        min_count=1,
        utilization=round(used / k, 6),
        perplexity=round(math.exp(h), 6),
        normalized_perplexity=round(math.exp(h) / k, 6),
        entropy_bits=round(h / math.log(2), 6),
        quantization_mse=mse,
        relative_mse=rel,
        top1_mass=round(ordered[0] / n, 6),
        top10pct_mass=round(sum(ordered[:top]) / n, 6),
        space=space,
    )


def _geometry(sv: list[float], *, size: int, rank: int, erank: float, dups: int, outside: int | None) -> GeometryMetrics:
    return GeometryMetrics(
        singular_values=sv,
        numerical_rank=rank,
        effective_rank=erank,
        near_duplicate_pairs=dups,
        redundant_codes=dups,
        duplicate_sample=size,
        duplicate_tolerance=0.05,
        median_nn_distance=0.42,
        codes_outside_support=outside,
        support_radius=None if outside is None else 1.5,
    )


PLAIN_COUNTS = [400, 310, 250, 120, 90, 60, 40, 25, 15, 10, 5, 3, 0, 0, 0, 0]
RVQ_COUNTS = [
    [150, 140, 130, 120, 110, 100, 90, 80],
    [300, 250, 200, 150, 100, 0, 0, 0],
    [900, 60, 40, 0, 0, 0, 0, 0],
]
SIMVQ_COUNTS = [70, 66, 64, 62, 60, 60, 58, 56]


def make_example_report(*, name: str = "quantize.embedding") -> Report:
    tokens = TokensCollapse(
        modes=3,
        mode_source="labels",
        per_mode=[
            ModeShare(0, "ring", data_share=0.34, code_share=0.75, ratio=2.205882, codes=12, vectors=454),
            ModeShare(1, "blob", data_share=0.33, code_share=0.1875, ratio=0.568182, codes=3, vectors=440),
            ModeShare(2, "spiral", data_share=0.33, code_share=0.0625, ratio=0.189394, codes=1, vectors=434),
        ],
        starved_modes=[2],
        starved_ratio=0.5,
        allocation_tv=0.41,
    )
    plain = CodebookReport(
        name=name,
        stack="quantize",
        layout="taming-vqgan",
        kind="embedding",
        metric="euclidean",
        size=16,
        dim=4,
        level=0,
        head=0,
        keys={"embed": f"{name}.weight"},
        usage=_usage(PLAIN_COUNTS, mse=0.0123, rel=0.087, space="latents (euclidean)"),
        ema=None,
        geometry=_geometry([3.1, 1.2, 0.45, 0.02], size=16, rank=4, erank=2.53, dups=1, outside=2),
        w=None,
        tokens_collapse=tokens,
        counts=PLAIN_COUNTS,
    )
    rvq = [
        CodebookReport(
            name=f"rvq.layers.{lvl}._codebook.embed",
            stack="rvq",
            layout="vector-quantize-pytorch",
            kind="ema",
            metric="euclidean",
            size=8,
            dim=4,
            level=lvl,
            head=0,
            keys={
                "embed": f"rvq.layers.{lvl}._codebook.embed",
                "cluster_size": f"rvq.layers.{lvl}._codebook.cluster_size",
            },
            usage=_usage(counts, mse=[0.2, 0.05, 0.04][lvl], rel=[0.31, 0.24, 0.97][lvl],
                         space=f"residual after level {lvl - 1}" if lvl else "project_in output"),
            ema=EmaMetrics(
                source=f"rvq.layers.{lvl}._codebook.cluster_size",
                is_count=True,
                total=1024.0,
                dead_codes_relative=[0, 3, 5][lvl],
                dead_codes_absolute=[0, 3, 5][lvl],
                absolute_threshold=2.0,
                perplexity=[7.9, 4.6, 1.4][lvl],
                normalized_perplexity=[0.9875, 0.575, 0.175][lvl],
                initted=True,
                note=None,
            ),
            geometry=_geometry([2.0, 1.5, 1.0, 0.5], size=8, rank=4, erank=3.6, dups=0, outside=0),
            w=None,
            tokens_collapse=None,
            counts=counts,
        )
        for lvl, counts in enumerate(RVQ_COUNTS)
    ]
    simvq = CodebookReport(
        name="simvq",
        stack="simvq",
        layout="simvq",
        kind="simvq",
        metric="euclidean",
        size=8,
        dim=4,
        level=0,
        head=0,
        keys={"C": "simvq.embedding.weight", "W": "simvq.embedding_proj.weight"},
        usage=_usage(SIMVQ_COUNTS, mse=0.009, rel=0.05, space="C W^T (euclidean)"),
        ema=None,
        geometry=_geometry([2.2, 2.0, 1.9, 1.7], size=8, rank=4, erank=3.95, dups=0, outside=0),
        w=WMetrics(
            source="simvq.embedding_proj.weight",
            shape=(4, 4),
            rank=2,
            effective_rank=1.87,
            frobenius_norm=2.5,
            singular_values=[2.0, 1.5, 1e-7, 0.0],
        ),
        tokens_collapse=None,
        counts=SIMVQ_COUNTS,
    )
    ema_only = CodebookReport(
        name="ema_vq._codebook.embed",
        stack="ema_vq",
        layout="vector-quantize-pytorch",
        kind="ema",
        metric="cosine",
        size=8,
        dim=4,
        level=0,
        head=0,
        keys={"embed": "ema_vq._codebook.embed", "cluster_size": "ema_vq._codebook.cluster_size"},
        usage=None,
        ema=EmaMetrics(
            source="ema_vq._codebook.cluster_size",
            is_count=True,
            total=512.0,
            dead_codes_relative=4,
            dead_codes_absolute=3,
            absolute_threshold=2.0,
            perplexity=3.2,
            normalized_perplexity=0.4,
            initted=False,
            note="initted is False: the codebook was never k-means initialised",
        ),
        geometry=_geometry([1.0, 0.9, 0.1, 0.05], size=8, rank=4, erank=2.9, dups=2, outside=None),
        w=None,
        tokens_collapse=None,
        counts=None,
        note="no latents reach this codebook: EMA buffers only",
    )
    ec = EmbeddingsCollapse(
        mode_source="labels",
        labels=LABELS,
        input_modes=3,
        embedding_modes=2,
        input_knn_purity=0.98,
        latent_knn_purity=0.71,
        merged_pairs=[MergedPair(1, 2, "blob", "spiral", input_overlap=0.01, latent_overlap=0.44)],
        subsample=1328,
    )
    def fix(name_: str, cb: str) -> tuple[str, list[str]]:
        r = fix_remedy(name_, cb, RemedyContext(CKPT, "pickle"))
        return r.text, list(r.argv)

    verdicts = [
        Verdict(
            "utilization", name, "warn", 0.75, 0.8,
            "share of codes used at least once is 75.0%; expected >= 80.0%", *fix("revive", name), "share",
        ),
        Verdict("relative_mse", name, "ok", 0.087, 0.5, "quantization MSE / latent variance is 0.087", None),
        Verdict(
            "starved_modes", name, "fail", 1.0, 0.0,
            "data modes with code share < 0.5 x data share is 1; expected <= 0 (starved: spiral)",
            *fix("kmeans", name), "count",
        ),
        Verdict("utilization", "rvq.layers.0._codebook.embed", "ok", 1.0, 0.8, "share of codes used at least once is 100.0%",
                None, None, "share"),
        Verdict(
            "utilization", "rvq.layers.2._codebook.embed", "fail", 0.375, 0.3,
            "share of codes used at least once is 37.5%; expected >= 30.0%", *fix("revive", "rvq.layers.2._codebook.embed"),
            "share",
        ),
        Verdict(
            "relative_mse", "rvq.layers.2._codebook.embed", "warn", 0.97, 0.9,
            "quantization MSE / latent variance is 0.97; expected <= 0.9", *fix("kmeans", "rvq.layers.2._codebook.embed"),
        ),
        Verdict("rank_fraction", "simvq", "ok", 1.0, 0.5, "numerical rank / min(K, d) of the codebook is 1", None),
        Verdict(
            "ema_dead_fraction", "ema_vq._codebook.embed", "warn", 0.5, 0.2,
            "share of codes the EMA buffer says are dead is 50.0%; expected <= 20.0%",
            *fix("revive", "ema_vq._codebook.embed"), "share",
        ),
        Verdict(
            "merged_pairs", None, "fail", 1.0, 0.0,
            "1 pair(s) of data modes merge in the latent space: blob+spiral",
            "give the encoder more capacity, then `vqdoctor fix kmeans`", None, "count",
        ),
    ]
    projection = Projection2D(
        method="pca",
        latents=[[0.0, 0.0], [0.1, 0.2], [1.0, 1.1], [1.2, 0.9], [-1.0, 0.5], [-0.9, 0.4]],
        latent_modes=[0, 0, 1, 1, 2, 2],
        codes=[[0.05, 0.1], [1.1, 1.0], [-0.95, 0.45]],
        inputs=[[0.0, 0.0], [0.2, 0.1], [3.0, 3.1], [3.2, 2.9], [-3.0, 1.5], [-2.9, 1.4]],
        seconds=0.25,
    )
    return Report(
        checkpoint=CheckpointInfo(path=CKPT, format="lightning", nesting="state_dict", fingerprint="sha256:0123abcd"),
        data=DataInfo(source="inputs: data/modes.npz via encoder (checkpoint metadata)", vectors=1328, dim=4, mode_source="labels"),
        codebooks=[plain, *rvq, simvq, ema_only],
        embeddings_collapse=ec,
        verdicts=verdicts,
        codebook_free=[{"name": "fsq", "kind": "fsq", "levels": "8,5,5,5"}],
        projection=projection,
        notes=["codebook 'ema_vq._codebook.embed': no latents reach it; EMA buffers only"],
        vqdoctor_version="0.1.0",
    )


def make_data_free_report() -> Report:
    cb = CodebookReport(
        name="quantize.embedding",
        stack="quantize",
        layout="taming-vqgan",
        kind="embedding",
        metric="euclidean",
        size=16,
        dim=4,
        level=0,
        head=0,
        keys={"embed": "quantize.embedding.weight"},
        usage=None,
        ema=None,
        geometry=_geometry([3.0, 1.0, 0.0, 0.0], size=16, rank=2, erank=1.76, dups=0, outside=None),
        w=None,
        tokens_collapse=None,
        counts=None,
    )
    return Report(
        checkpoint=CheckpointInfo(path="model.safetensors", format="safetensors", nesting="", fingerprint="sha256:ffff"),
        data=DataInfo(source="none (data-free analysis)", vectors=None, dim=None, mode_source=None),
        codebooks=[cb],
        embeddings_collapse=None,
        verdicts=[
            Verdict("rank_fraction", "quantize.embedding", "ok", 0.5, 0.5, "numerical rank / min(K, d) of the codebook is 0.5", None)
        ],
        notes=["data-free analysis: no latents given"],
        vqdoctor_version="0.1.0",
    )


@pytest.fixture
def example_report() -> Report:
    return make_example_report()


@pytest.fixture
def data_free_report() -> Report:
    return make_data_free_report()

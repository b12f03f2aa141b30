"""Hand-built Reports for the `vqdoctor check` tests: every number written out, no analysis engine."""

from __future__ import annotations

from vqdoctor.core.results import EmbeddingsCollapse, MergedPair, ModeShare, TokensCollapse, UsageMetrics
from vqdoctor.report.schema import CheckpointInfo, CodebookReport, DataInfo, Report

CKPT = "runs/tok/last.safetensors"


def usage(*, size: int = 16, used: int = 16, nppl: float = 0.9, rel: float | None = 0.1) -> UsageMetrics:
    return UsageMetrics(
        vectors=1000, used_codes=used, dead_codes=size - used, min_count=1, utilization=used / size,
        perplexity=nppl * size, normalized_perplexity=nppl, entropy_bits=1.0, quantization_mse=None if rel is None else 0.01,
        relative_mse=rel, top1_mass=0.1, top10pct_mass=0.2, space="latents (euclidean)",
    )


def tokens(tv: float) -> TokensCollapse:
    return TokensCollapse(
        modes=2, mode_source="labels",
        per_mode=[ModeShare(0, "ring", 0.5, 0.5 + tv, (0.5 + tv) / 0.5, 8, 500),
                  ModeShare(1, "blob", 0.5, 0.5 - tv, (0.5 - tv) / 0.5, 8, 500)],
        starved_modes=[], starved_ratio=0.5, allocation_tv=tv,
    )


def codebook(name: str = "quantize.embedding", *, size: int = 16, used: int = 16, nppl: float = 0.9,
             rel: float | None = 0.1, tv: float | None = 0.05, data: bool = True, level: int = 0,
             note: str | None = None) -> CodebookReport:
    return CodebookReport(
        name=name, stack=name.split(".")[0], layout="taming-vqgan", kind="embedding", metric="euclidean",
        size=size, dim=4, level=level, head=0, keys={"embed": f"{name}.weight"},
        usage=usage(size=size, used=used, nppl=nppl, rel=rel) if data else None,
        ema=None, geometry=None, w=None, tokens_collapse=None if tv is None else tokens(tv), note=note,
    )


def embeddings(*pairs: tuple[str, str]) -> EmbeddingsCollapse:
    return EmbeddingsCollapse(
        mode_source="labels", labels=["ring", "blob", "spiral", "line"], input_modes=4, embedding_modes=4 - len(pairs),
        input_knn_purity=0.99, latent_knn_purity=0.8,
        merged_pairs=[MergedPair(i, i + 1, a, b, 0.01, 0.4) for i, (a, b) in enumerate(pairs)], subsample=1000,
    )


def report(*codebooks: CodebookReport, ec: EmbeddingsCollapse | None = None) -> Report:
    return Report(
        checkpoint=CheckpointInfo(path=CKPT, format="safetensors", nesting="", fingerprint="sha256:00"),
        data=DataInfo(source="latents: z.npy", vectors=1000, dim=4, mode_source="labels"),
        codebooks=list(codebooks) or [codebook()], embeddings_collapse=ec, verdicts=[], vqdoctor_version="0.1.0",
    )


def healthy() -> Report:
    return report(codebook(), ec=embeddings())


def rvq(*, used: tuple[int, ...] = (16, 16, 16)) -> Report:
    return report(*(codebook(f"rvq.layers.{i}._codebook.embed", used=u, level=i, tv=None) for i, u in enumerate(used)),
                  ec=embeddings())

"""Moshi / Mimi codebooks: the table is ``embedding_sum / clamp(cluster_usage, min=epsilon)``.

- kyutai-labs/moshi ``moshi/quantization/core_vq.py`` (EuclideanCodebook, epsilon 1e-5) and
  ``vq.py`` (SplitResidualVectorQuantizer): ``quantizer.rvq_first|rvq_rest.vq.layers.N._codebook.
  {_initialized (1,), cluster_usage (K,), embedding_sum (K, d)}`` (old names ``embed_sum`` still load),
  ``rvq_first.input_proj.weight`` / ``output_proj.weight``: Conv1d kernel 1, no bias.
- Hugging Face Mimi (transformers ``modeling_mimi.py``): ``quantizer.semantic_residual_vector_quantizer
  |acoustic_residual_vector_quantizer.layers.N.codebook.{initialized, cluster_usage, embed_sum}``,
  ``input_proj`` / ``output_proj`` on each residual quantizer.
Both stacks read the same input (not a chain between them); each is a residual chain.
Also found when nested in a larger model (e.g. ``mimi.quantizer...``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from vqdoctor.codebooks.detectors._stacks import Level, collect
from vqdoctor.codebooks.detectors._util import flag, is_zero, join, keys_ending, split_level
from vqdoctor.codebooks.detectors.base import Detection, detector
from vqdoctor.core.codebook import Codebook, EmaState
from vqdoctor.io.store import TensorStore

EPSILON = 1e-5  # EuclideanCodebook's default (moshi and transformers)


def _levels(state: TensorStore, claimed: set[str], *, table: str, sums: tuple[str, ...], flags: tuple[str, ...], layout: str) -> list[Level]:
    levels: list[Level] = []
    for sum_name in sums:
        for module, sum_key in keys_ending(state, f"{table}.{sum_name}", claimed):
            cb = join(module, table)
            usage_key = join(cb, "cluster_usage")
            if usage_key not in state or len(state.shape(sum_key)) != 2:
                continue
            if state.shape(usage_key) != state.shape(sum_key)[:1]:
                continue
            flag_key = next((join(cb, f) for f in flags if join(cb, f) in state), None)
            usage = state.float32(usage_key)  # (K,)
            embed_sum = state.float32(sum_key)  # (K, d)
            codes = embed_sum / usage.clamp(min=EPSILON)[:, None]  # (K, d)
            stack, level = split_level(module)
            ema_keys = {"cluster_size": usage_key, "embed_sum": sum_key} | ({"initted": flag_key} if flag_key else {})
            levels.append(
                Level(
                    stack=stack,
                    level=level,
                    keys={sum_key, usage_key} | ({flag_key} if flag_key else set()),
                    codebook=Codebook(
                        name=module or table,
                        layout=layout,
                        kind="moshi",
                        codes=codes,
                        keys=ema_keys,
                        ema=EmaState(
                            cluster_size=usage,
                            embed_sum=embed_sum,
                            initted=flag(state, flag_key),
                            keys=ema_keys,
                            note="cluster_usage is Moshi's EMA usage (Moshi expires codes under 0.1 x the uniform share).",
                        ),
                        note=(
                            f"Effective codebook embedding_sum / clamp(cluster_usage, min={EPSILON:g})."
                            + (" All zeros: not initialised yet." if is_zero(embed_sum) else "")
                        ),
                    ),
                )
            )
    return levels


def _owners(levels: list[Level]) -> dict[str, str]:
    """Moshi keeps the projections one module up (``rvq_first`` owns ``vq.layers``)."""
    return {lv.stack: lv.stack[: -len(".vq")] if lv.stack.endswith(".vq") else lv.stack for lv in levels}


@detector("moshi")
def moshi(state: TensorStore, claimed: set[str], config: Mapping[str, Any]) -> Detection:
    levels = _levels(state, claimed, table="_codebook", sums=("embedding_sum", "embed_sum"),
                     flags=("_initialized", "inited", "initialized"), layout="moshi")
    return collect(state, claimed, levels, layout="moshi", proj_owner=_owners(levels),
                   proj_names=("input_proj", "output_proj"))


@detector("hf-mimi")
def hf_mimi(state: TensorStore, claimed: set[str], config: Mapping[str, Any]) -> Detection:
    levels = _levels(state, claimed, table="codebook", sums=("embed_sum", "embedding_sum"),
                     flags=("initialized", "_initialized"), layout="hf-mimi")
    return collect(state, claimed, levels, layout="hf-mimi", proj_owner=_owners(levels),
                   proj_names=("input_proj", "output_proj"))

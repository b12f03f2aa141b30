"""EMA codebooks stored as ``embed`` with ``cluster_size`` / ``embed_avg`` / init-flag buffers.

- vector-quantize-pytorch (read: lucidrains/vector-quantize-pytorch 1.32.0
  ``vector_quantize_pytorch.py`` ``Codebook``; tests build the real classes):
  ``[...layers.N|rvqs.G.layers.N.]_codebook.{embed (H, K, d), cluster_size (H, K), embed_avg (H, K, d),
  initted ()}``, ``project_in/out`` on the VectorQuantize (per level) and on ResidualVQ (stack).
  The cosine variant (``use_cosine_sim=True``) has the same buffers and keys: it is told by
  ``use_cosine_sim`` in the config, else by the EMA rule the buffers follow, else by unit-norm codes
  (``_metric.py``); its table is stored l2-normalised and looked up as stored.
- encodec / audiocraft / WavTokenizer (facebookresearch/encodec ``quantization/core_vq.py``
  ``EuclideanCodebook``): ``quantizer.vq.layers.N._codebook.{embed (K, d), cluster_size, embed_avg,
  inited (1,)}``, optional ``vq.layers.N.project_in/out``.
- Hugging Face Encodec / X-Codec / Higgs (transformers ``modeling_encodec.py``
  ``EncodecEuclideanCodebook``): ``quantizer.layers.N.codebook.{inited, cluster_size, embed, embed_avg}``;
  all zeros right after ``from_config`` (noted, never a crash).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch

from vqdoctor.codebooks.detectors._metric import (
    UNIT_BUT_EUCLIDEAN,
    MetricCall,
    from_codes,
    from_config,
    from_vqp_ema,
    with_codes,
)
from vqdoctor.codebooks.detectors._stacks import Level, collect
from vqdoctor.codebooks.detectors._util import (
    flag,
    is_zero,
    join,
    keys_ending,
    linear_keys,
    load_linear,
    split_level,
)
from vqdoctor.codebooks.detectors.base import Detection, detector
from vqdoctor.core.codebook import Codebook, EmaState
from vqdoctor.io.store import TensorStore

_AFFINE = ("codebook_mean", "codebook_variance", "codebook_mean_needs_init",
           "codebook_variance_needs_init", "batch_mean", "batch_variance")


# (codes (K, d), embed_avg (K, d) | None, cluster_size (K,) | None, stored dtype) -> the metric
MetricRule = Callable[[torch.Tensor, "torch.Tensor | None", "torch.Tensor | None", torch.dtype], MetricCall]


def _euclidean_only(library: str) -> MetricRule:
    def rule(codes: torch.Tensor, avg: torch.Tensor | None, cs: torch.Tensor | None, dtype: torch.dtype) -> MetricCall:
        call = with_codes(MetricCall("euclidean", "layout", f"{library} compares by squared L2"), codes, dtype=dtype)
        unit = from_codes(codes, dtype=dtype, warn=False).metric == "cosine"
        return MetricCall(call.metric, call.source, call.evidence, UNIT_BUT_EUCLIDEAN if unit else None)
    return rule


def _vqp_rule(config: Mapping[str, Any]) -> MetricRule:
    def rule(codes: torch.Tensor, avg: torch.Tensor | None, cs: torch.Tensor | None, dtype: torch.dtype) -> MetricCall:
        call = from_config(config, ("use_cosine_sim",)) or from_vqp_ema(codes, avg, cs, dtype=dtype)
        if call is not None:
            return with_codes(call, codes, dtype=dtype)
        return from_codes(codes, dtype=dtype, warn=False)  # a euclidean vqp table is never unit-norm by init or EMA
    return rule


def _notes(*parts: str | None) -> str | None:
    text = " ".join(p for p in parts if p)
    return text or None


def _ema_levels(
    state: TensorStore,
    claimed: set[str],
    *,
    table: str,
    layout: str,
    flags: tuple[str, ...],
    ndim: int,
    need_flag: bool,
    metric_rule: MetricRule,
) -> list[Level]:
    """Every ``<module>.<table>.embed`` of ``ndim`` dims with its buffers, as levels."""
    levels: list[Level] = []
    for module, embed_key in keys_ending(state, f"{table}.embed", claimed):
        shape = state.shape(embed_key)
        if len(shape) != ndim or min(shape) < 1:
            continue
        cb = join(module, table)
        flag_key = next((join(cb, f) for f in flags if join(cb, f) in state), None)
        size_key = join(cb, "cluster_size") if join(cb, "cluster_size") in state else None
        avg_key = join(cb, "embed_avg") if join(cb, "embed_avg") in state else None
        if need_flag and flag_key is None:
            continue
        if ndim == 2 and flag_key is None and size_key is None and avg_key is None:
            continue  # a bare (K, d) ``embed``: leave it to the generic detector
        stack, level = split_level(module)
        # A VectorQuantize's own projection: per level inside a residual stack, else the stack's.
        p_in = load_linear(state, join(module, "project_in"), claimed) if level is not None else None
        p_out = load_linear(state, join(module, "project_out"), claimed) if level is not None else None
        affine = [join(cb, a) for a in _AFFINE if join(cb, a) in state]
        keys = {embed_key, *(k for k in (flag_key, size_key, avg_key) if k), *affine}
        keys |= set(linear_keys(p_in)) | set(linear_keys(p_out))
        initted = flag(state, flag_key)
        table3 = state.float32(embed_key)
        if ndim == 2:
            table3 = table3[None]  # (1, K, d)
        heads = table3.shape[0]
        sizes = state.float32(size_key).reshape(heads, -1) if size_key else None  # (H, K)
        avgs = state.float32(avg_key).reshape(table3.shape) if avg_key else None  # (H, K, d)
        # shared heads are visible only through project_in's width: (heads * d) out of dim
        probe = p_in if level is not None else load_linear(state, join(module, "project_in"), claimed)
        shared = 1
        if heads == 1 and probe is not None and probe.out_dim % table3.shape[2] == 0:
            shared = probe.out_dim // table3.shape[2]
        for h in range(heads):
            codes = table3[h].contiguous()  # (K, d)
            zero = is_zero(codes)
            call = metric_rule(codes, avgs[h] if avgs is not None else None, sizes[h] if sizes is not None else None,
                               state.dtype(embed_key))
            name = module or table
            note = _notes(
                "All codes are zero: the codebook is not initialised yet" + (" (initted=False)." if initted is False else ".")
                if zero else None,
                call.warning,
                "affine_param buffers present: codes shown without the affine re-scaling." if affine else None,
            )
            role_keys = {"codes": embed_key}
            ema_keys = {k: v for k, v in (("cluster_size", size_key), ("embed_avg", avg_key), ("initted", flag_key)) if v}
            levels.append(
                Level(
                    stack=stack,
                    level=level,
                    keys=keys,
                    codebook=Codebook(
                        name=f"{name}/head{h}" if heads > 1 else name,
                        layout=layout,
                        kind="ema",
                        codes=codes,
                        metric=call.metric,
                        metric_source=call.source,
                        metric_evidence=call.evidence,
                        unit_rows=True if layout == "vector-quantize-pytorch" else None,
                        keys=role_keys | ema_keys,
                        head=h if heads > 1 else 0,
                        heads=heads if heads > 1 else shared,
                        shared_heads=heads == 1 and shared > 1,
                        in_proj=p_in,
                        out_proj=p_out,
                        ema=EmaState(
                            cluster_size=sizes[h].contiguous() if sizes is not None else None,
                            embed_sum=avgs[h].contiguous() if avgs is not None else None,
                            initted=initted,
                            keys=ema_keys,
                        ),
                        note=note,
                    ),
                )
            )
    return levels


@detector("vector-quantize-pytorch")
def vector_quantize_pytorch(state: TensorStore, claimed: set[str], config: Mapping[str, Any]) -> Detection:
    layout = "vector-quantize-pytorch"
    levels = _ema_levels(state, claimed, table="_codebook", layout=layout, flags=("initted",), ndim=3, need_flag=False,
                         metric_rule=_vqp_rule(config))
    # versions before 1.0 stored (K, d) tables; their flag is spelled "initted" (encodec's is "inited")
    levels += _ema_levels(state, claimed, table="_codebook", layout=layout, flags=("initted",), ndim=2, need_flag=True,
                          metric_rule=_vqp_rule(config))
    return collect(state, claimed, levels, layout=layout, groups=True)


@detector("encodec")
def encodec(state: TensorStore, claimed: set[str], config: Mapping[str, Any]) -> Detection:
    layout = "encodec"
    levels = _ema_levels(state, claimed, table="_codebook", layout=layout, flags=("inited",), ndim=2, need_flag=False,
                         metric_rule=_euclidean_only("encodec's EuclideanCodebook"))
    return collect(state, claimed, levels, layout=layout)


@detector("hf-encodec")
def hf_encodec(state: TensorStore, claimed: set[str], config: Mapping[str, Any]) -> Detection:
    layout = "hf-encodec"
    levels = _ema_levels(state, claimed, table="codebook", layout=layout, flags=("inited", "initted"), ndim=2, need_flag=False,
                         metric_rule=_euclidean_only("transformers' EncodecEuclideanCodebook"))
    return collect(state, claimed, levels, layout=layout)

"""BEiT-v2 / VQ-KD ``NormEMAVectorQuantizer`` (microsoft/unilm ``beit2/norm_ema_quantizer.py``;
copied into LaBraM, NeuroLM and other tokenizers).

State: ``<q>.embedding.weight`` (K, d) -- an ``EmbeddingEMA`` whose ``weight``, ``cluster_size`` (K,)
and ``embed_avg`` (K, d) are ``nn.Parameter(requires_grad=False)`` and whose ``initted`` (1,) is a
buffer -- plus ``<q>.cluster_size`` (K,), the EMA of per-batch code counts (kept when
``statistic_code_usage``, the default; updated in eval mode too).
Lookup: ``z = l2norm(z)``, nearest ``embedding.weight`` row by squared L2; training moves rows by
``norm_ema_inplace`` (EMA then l2norm), so the rows stay unit-norm and the lookup is cosine.
``embedding.cluster_size`` holds the k-means init counts and ``embedding.embed_avg`` the initial
table: neither is read after init, so neither is taken as usage (the fixes leave them as stored).
An ``initted`` of 0 makes the first forward run k-means and overwrite the table (the fixes set it).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from vqdoctor.codebooks.detectors._metric import MetricCall, norm_evidence, unit_tolerance, with_codes
from vqdoctor.codebooks.detectors._stacks import Level, collect
from vqdoctor.codebooks.detectors._util import flag, is_zero, join, keys_ending, present, split_level
from vqdoctor.codebooks.detectors.base import Detection, detector
from vqdoctor.core.codebook import Codebook, EmaState
from vqdoctor.io.store import TensorStore

LAYOUT = "beitv2-normema"
_RULE = "NormEMAVectorQuantizer l2-normalises the latents and keeps its codes l2-normalised (norm_ema_inplace)"


@detector(LAYOUT)
def norm_ema(state: TensorStore, claimed: set[str], config: Mapping[str, Any]) -> Detection:
    levels = []
    for module, key in keys_ending(state, "embedding.weight", claimed):
        emb = join(module, "embedding")
        init_key, sizes_key, avg_key = (join(emb, n) for n in ("initted", "cluster_size", "embed_avg"))
        shape = state.shape(key)
        if len(shape) != 2 or not present(state, claimed, init_key, sizes_key, avg_key):
            continue
        if state.shape(sizes_key) != (shape[0],) or state.shape(avg_key) != shape:
            continue
        found_usage = join(module, "cluster_size")
        usage_key = found_usage if present(state, claimed, found_usage) and state.shape(found_usage) == (shape[0],) else None
        codes = state.float32(key)
        dtype = state.dtype(key)
        call = with_codes(MetricCall("cosine", "layout", _RULE), codes, dtype=dtype)
        unit, _ = norm_evidence(codes, tol=unit_tolerance(dtype))
        initted = flag(state, init_key)
        notes = [
            "All codes are zero: the codebook is not initialised (initted=0; its first forward runs k-means)."
            if is_zero(codes) else "",
            "" if unit or is_zero(codes) else
            "The stored rows are not unit-norm (a codebook_init_path table?): the library compares the normalised "
            "latents with the stored rows by squared L2, vqdoctor compares directions.",
            "" if usage_key else "No usage buffer (statistic_code_usage=False): EMA usage is not available.",
        ]
        ema_keys = {"cluster_size": usage_key, "initted": init_key} if usage_key else {"initted": init_key}
        stack, level = split_level(module)
        levels.append(Level(stack=stack, level=level, keys={key, init_key, sizes_key, avg_key, *([usage_key] if usage_key else [])},
                            codebook=Codebook(
            name=module or "quantize", layout=LAYOUT, kind="ema", codes=codes,
            metric=call.metric, metric_source=call.source, metric_evidence=call.evidence, unit_rows=True,
            keys={"codes": key} | ema_keys,
            ema=EmaState(cluster_size=state.float32(usage_key) if usage_key else None, initted=initted, keys=ema_keys),
            note=" ".join(n for n in notes if n) or None)))
    return collect(state, claimed, levels, layout=LAYOUT)

"""The VideoGPT ``Codebook`` and its copies: TATS, ESM3's structure tokenizer ``EMACodebook``, the
Infinity / VidTok video VAEs and many research tokenizers.

Read: wilson1yan/VideoGPT ``videogpt/vqvae.py`` class ``Codebook`` (TATS ``tats/tats_vqgan.py``
keeps it; evolutionaryscale/esm ``esm/layers/codebook.py`` ``EMACodebook`` is the same with the
update left out).
State: three buffers, no parameters: ``<q>.embeddings`` (K, d), ``<q>.N`` (K,) and ``<q>.z_avg``
(K, d); some forks add ``<q>.codebook_usage`` (K,).
Lookup: nearest ``embeddings`` row by squared L2 (``|z|^2 - 2 z.E^T + |E|^2``, argmin): Euclidean.
Training: ``N = 0.99 N + 0.01 n`` with n the batch's per-code counts, so ``N`` is the EMA of code
usage; ``z_avg`` the EMA of the summed latents and ``embeddings = z_avg / N`` (smoothed); codes with
``N < 1`` are re-drawn from the batch's latents every step (random restart). The first training
forward initialises ``embeddings = z_avg`` from data and sets ``N`` to ones, so an all-zero ``N``
means the codebook was never trained. The fixes write ``z_avg = codes x N`` to keep the rule.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from vqdoctor.codebooks.detectors._metric import UNIT_BUT_EUCLIDEAN, MetricCall, from_codes, with_codes
from vqdoctor.codebooks.detectors._stacks import Level, collect
from vqdoctor.codebooks.detectors._util import is_zero, join, keys_ending, present, split_level
from vqdoctor.codebooks.detectors.base import Detection, detector
from vqdoctor.core.codebook import Codebook, EmaState
from vqdoctor.io.store import TensorStore

LAYOUT = "videogpt-codebook"
_RULE = "VideoGPT's Codebook compares by squared L2 on embeddings"


@detector(LAYOUT)
def videogpt(state: TensorStore, claimed: set[str], config: Mapping[str, Any]) -> Detection:
    levels = []
    for module, key in keys_ending(state, "embeddings", claimed):
        usage_key, avg_key = join(module, "N"), join(module, "z_avg")
        shape = state.shape(key)
        if len(shape) != 2 or min(shape) < 1 or not present(state, claimed, usage_key, avg_key):
            continue
        if state.shape(usage_key) != (shape[0],) or state.shape(avg_key) != shape:
            continue
        extra = join(module, "codebook_usage")
        extra_keys = {extra} if present(state, claimed, extra) and state.shape(extra) == (shape[0],) else set()
        codes, dtype = state.float32(key), state.dtype(key)
        call = with_codes(MetricCall("euclidean", "layout", _RULE), codes, dtype=dtype)
        unit = from_codes(codes, dtype=dtype, warn=False).metric == "cosine"
        usage = state.float32(usage_key)
        never = is_zero(usage.reshape(-1, 1))
        notes = [
            "N is all zero: the codebook was never trained (its first training forward initialises it from data)."
            if never else "",
            UNIT_BUT_EUCLIDEAN if unit else "",
        ]
        ema_keys = {"cluster_size": usage_key, "embed_avg": avg_key}
        stack, level = split_level(module)
        levels.append(Level(stack=stack, level=level, keys={key, usage_key, avg_key, *extra_keys}, codebook=Codebook(
            name=module or "codebook", layout=LAYOUT, kind="ema", codes=codes,
            metric=call.metric, metric_source=call.source, metric_evidence=call.evidence,
            keys={"codes": key} | ema_keys,
            ema=EmaState(cluster_size=usage, embed_sum=state.float32(avg_key), initted=None, keys=ema_keys),
            note=" ".join(n for n in notes if n) or None)))
    return collect(state, claimed, levels, layout=LAYOUT)

"""Plain embedding tables (K, d), compared by nearest code.

- taming-transformers (CompVis ``taming/modules/vqvae/quantize.py``): ``VectorQuantizer2``
  ``quantize.embedding.weight``; ``EMAVectorQuantizer`` adds ``quantize.embedding.{cluster_size,
  embed_avg}`` (EmbeddingEMA parameters); ``GumbelQuantize`` ``quantize.embed.weight`` picked by the
  logits of ``quantize.proj`` (Conv2d kernel 1) - not a nearest-code lookup.
- LlamaGen (FoundationVision ``tokenizer/tokenizer_image/vq_model.py``): ``quantize.embedding.weight``
  and ``quantize.codebook_used`` (65536,), a ring buffer of recent indices (not counts). The
  lookup l2-normalises both sides when ``codebook_l2_norm`` (default True in its ModelArgs); the
  flag lives in the config, not the weights.
- vqtorch (minyoungg ``vqtorch/nn/vq.py``): ``<layer>.codebook.weight`` with ``data_initialized`` and
  optional ``affine_transform.{scale,bias}``.
- generic: Open-MAGVIT2 IBQ, Hugging Face Chameleon / Janus / Emu3 / GLM-Image
  (``model.vqmodel.quantize.embedding.weight``; GLM-Image l2-normalises the lookup) and any
  ``embedding``/``embed``/``codebook`` table whose key path names a quantizer.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from vqdoctor.codebooks.detectors._metric import MetricCall, from_codes, from_config, with_codes
from vqdoctor.codebooks.detectors._stacks import Level, collect
from vqdoctor.codebooks.detectors._util import (
    QUANTIZERISH,
    config_mentions,
    flag,
    is_zero,
    join,
    keys_ending,
    present,
    split_level,
)
from vqdoctor.codebooks.detectors.base import Detection, detector
from vqdoctor.core.codebook import Codebook, EmaState
from vqdoctor.io.store import TensorStore

_ZERO_NOTE = "All codes are zero: the codebook is not initialised (or was zeroed)."


def _level(module: str, key: str, codebook: Codebook, keys: set[str]) -> Level:
    stack, level = split_level(module)
    return Level(stack=stack, level=level, keys=keys | {key}, codebook=codebook)


@detector("taming-ema")
def taming_ema(state: TensorStore, claimed: set[str], config: Mapping[str, Any]) -> Detection:
    levels = []
    for module, key in keys_ending(state, "embedding.weight", claimed):
        size_key, avg_key = join(module, "embedding.cluster_size"), join(module, "embedding.embed_avg")
        if len(state.shape(key)) != 2 or not present(state, claimed, size_key, avg_key):
            continue
        codes = state.float32(key)
        call = from_codes(codes, dtype=state.dtype(key), warn=True)
        ema_keys = {"cluster_size": size_key, "embed_avg": avg_key}
        levels.append(_level(module, key, Codebook(
            name=module or "embedding", layout="taming-ema", kind="ema", codes=codes, keys={"codes": key} | ema_keys,
            metric=call.metric, metric_source=call.source, metric_evidence=call.evidence,
            ema=EmaState(cluster_size=state.float32(size_key), embed_sum=state.float32(avg_key), keys=ema_keys),
            note=_join(_ZERO_NOTE if is_zero(codes) else None, call.warning)), {size_key, avg_key}))
    return collect(state, claimed, levels, layout="taming-ema")


@detector("taming-gumbel")
def taming_gumbel(state: TensorStore, claimed: set[str], config: Mapping[str, Any]) -> Detection:
    levels = []
    for module, key in keys_ending(state, "embed.weight", claimed):
        proj = join(module, "proj.weight")
        shape = state.shape(key)
        if len(shape) != 2 or not present(state, claimed, proj) or state.shape(proj)[0] != shape[0]:
            continue
        extra = {proj} | ({join(module, "proj.bias")} if join(module, "proj.bias") in state else set())
        levels.append(_level(module, key, Codebook(
            name=module or "embed", layout="taming-gumbel", kind="plain", codes=state.float32(key),
            keys={"codes": key, "logits": proj}, assignable=False,
            note="Gumbel-softmax quantizer: codes are picked by the logits of proj, not by nearest code."), extra))
    return collect(state, claimed, levels, layout="taming-gumbel")


def _join(*parts: str | None) -> str | None:
    return " ".join(p for p in parts if p) or None


def _llamagen_metric(config: Mapping[str, Any], codes: torch.Tensor, dtype: torch.dtype) -> tuple[MetricCall, str | None]:
    """(the call, a note): the config's codebook_l2_norm, else the codes."""
    flagged = from_config(config, ("codebook_l2_norm",))
    if flagged is not None:
        return with_codes(flagged, codes, dtype=dtype), None
    call = from_codes(codes, dtype=dtype, warn=False)
    if call.metric == "cosine":
        return call, "codebook_l2_norm is not in the weights and no config was found: cosine from the unit-norm codes."
    return call, ("LlamaGen l2-normalises the lookup when codebook_l2_norm=True (its default), a config "
                  "flag not stored in the weights and no config was found: compared as euclidean "
                  "(pass --metric cosine if the model was trained with codebook_l2_norm=True).")


@detector("llamagen")
def llamagen(state: TensorStore, claimed: set[str], config: Mapping[str, Any]) -> Detection:
    levels = []
    for module, key in keys_ending(state, "embedding.weight", claimed):
        used = join(module, "codebook_used")
        if len(state.shape(key)) != 2 or not present(state, claimed, used):
            continue
        codes = state.float32(key)
        call, why = _llamagen_metric(config, codes, state.dtype(key))
        note = _join(why, _ZERO_NOTE if is_zero(codes) else None)
        levels.append(_level(module, key, Codebook(
            name=module or "embedding", layout="llamagen", kind="plain", codes=codes, metric=call.metric,
            metric_source=call.source, metric_evidence=call.evidence,
            keys={"codes": key, "codebook_used": used},
            ema=EmaState(cluster_size=state.float32(used), is_count=False, keys={"codebook_used": used},
                         note="codebook_used is a ring buffer of the last assigned indices, not usage counts."),
            note=note), {used}))
    return collect(state, claimed, levels, layout="llamagen")


@detector("vqtorch")
def vqtorch(state: TensorStore, claimed: set[str], config: Mapping[str, Any]) -> Detection:
    levels = []
    for module, key in keys_ending(state, "codebook.weight", claimed):
        flag_key = join(module, "data_initialized")
        affine = [k for k in state if k.startswith(join(module, "affine_transform.")) and k not in claimed]
        if len(state.shape(key)) != 2 or not (flag_key in state or affine):
            continue
        codes = state.float32(key)
        call = from_codes(codes, dtype=state.dtype(key), warn=True)
        notes = [_ZERO_NOTE if is_zero(codes) else "",
                 "affine_transform present: its lr_scale is not stored, codes shown without it." if affine else "",
                 call.warning or ""]
        levels.append(_level(module, key, Codebook(
            name=module or "codebook", layout="vqtorch", kind="plain", codes=codes, keys={"codes": key},
            metric=call.metric, metric_source=call.source, metric_evidence=call.evidence,
            ema=EmaState(cluster_size=None, initted=flag(state, flag_key), keys={"initted": flag_key}) if flag_key in state else None,
            note=" ".join(n for n in notes if n) or None), set(affine) | ({flag_key} if flag_key in state else set())))
    return collect(state, claimed, levels, layout="vqtorch")


_TABLES = ("embedding.weight", "embed.weight", "codebook.weight", "embeddings.weight", "codebook", "embed")
_NOT_CODEBOOKS = ("embed_tokens", "lm_head", "position", "pos_emb", "wpe", "wte", "classifier", "word_embeddings")


@detector("embedding")
def embedding(state: TensorStore, claimed: set[str], config: Mapping[str, Any]) -> Detection:
    cosine_lookup = config_mentions(config, ("glmimage",))
    levels = []
    taken: set[str] = set()
    for suffix in _TABLES:
        for module, key in keys_ending(state, suffix, claimed | taken):
            shape = state.shape(key)
            if len(shape) != 2 or shape[0] < 2 or not state.dtype(key).is_floating_point:
                continue
            if not QUANTIZERISH.search(key) or any(n in key.lower() for n in _NOT_CODEBOOKS):
                continue
            taken.add(key)
            codes = state.float32(key)
            dtype = state.dtype(key)
            call = (with_codes(MetricCall("cosine", "config", "GLM-Image l2-normalises the lookup (model_type in its config)"),
                               codes, dtype=dtype) if cosine_lookup
                    else from_config(config, ("use_cosine_sim", "codebook_l2_norm")) or from_codes(codes, dtype=dtype, warn=True))
            note = _join(call.warning, _ZERO_NOTE if is_zero(codes) else None)
            levels.append(_level(module, key, Codebook(
                name=module or key, layout="embedding", kind="plain", codes=codes,
                metric=call.metric, metric_source=call.source, metric_evidence=call.evidence,
                keys={"codes": key}, note=note), set()))
    return collect(state, claimed, levels, layout="embedding")

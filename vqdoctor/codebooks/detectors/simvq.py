"""Codebooks given as a frozen table C and a learned linear map W: codes = C @ W.T (+ b).

- vector-quantize-pytorch ``SimVQ`` / ``ResidualSimVQ`` (read: ``sim_vq.py``, 1.32.0; tests build the
  real classes): buffer ``frozen_codebook`` (K, d_c) and module ``code_transform``, by default
  ``nn.Linear(d_c, d, bias=False)`` so ``code_transform.weight`` is (d, d_c); any module may be
  passed (an MLP ``code_transform.0.weight``, ``code_transform.2.weight`` ... cannot be evaluated
  from weights alone). Lookup is euclidean (``torch.cdist``) on the transformed table.
- official SimVQ (youngsheen/SimVQ ``taming/modules/vqvae/quantize.py``): frozen
  ``quantize.embedding.weight`` (K, d) and ``quantize.embedding_proj`` = nn.Linear(d, d) with bias.
- VQGAN-LC (zh460045050/VQGAN-LC ``vqgan-gpt-lc/models/models_vq.py``): frozen (CLIP-feature)
  ``tok_embeddings.weight`` (100000, 768) and ``codebook_projection`` = nn.Linear with bias;
  later variants name the table ``embedding.weight``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import torch

from vqdoctor.codebooks.detectors._stacks import Level, collect
from vqdoctor.codebooks.detectors._util import join, keys_ending, present, split_level
from vqdoctor.codebooks.detectors.base import Detection, detector
from vqdoctor.core.codebook import Codebook
from vqdoctor.io.store import TensorStore

_SEQ = re.compile(r"^(\d+)\.(weight|bias)$")


def _simvq_codebook(
    *, name: str, layout: str, frozen: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None,
    keys: dict[str, str], note: str | None = None,
) -> Codebook:
    codes = frozen @ w.T  # (K, d_c) @ (d_c, d) -> (K, d)
    if bias is not None:
        codes = codes + bias
    return Codebook(name=name, layout=layout, kind="simvq", codes=codes.contiguous(), keys=keys,
                    w=w, frozen=frozen, note=note)


def _transform(state: TensorStore, claimed: set[str], prefix: str, d_c: int) -> tuple[torch.Tensor | None, torch.Tensor | None, set[str], str | None]:
    """W as (d_out, d_c), bias, keys, note for a vector-quantize-pytorch ``code_transform``."""
    w_key, b_key = join(prefix, "weight"), join(prefix, "bias")
    if present(state, claimed, w_key) and len(state.shape(w_key)) == 2 and state.shape(w_key)[1] == d_c:
        keys = {w_key}
        bias = None
        if present(state, claimed, b_key):
            bias, keys = state.float32(b_key), keys | {b_key}
        return state.float32(w_key), bias, keys, None
    if present(state, claimed, prefix) and len(state.shape(prefix)) == 2:
        # a plain matrix M used as C @ M (d_c, d_out); W in Linear form is M.T
        m = state.float32(prefix)
        if m.shape[0] == d_c:
            note = "code_transform is a plain matrix, taken as codes = C @ M." if m.shape[0] == m.shape[1] else None
            return m.T.contiguous(), None, {prefix}, note
        return None, None, set(), None
    inner = {k[len(prefix) + 1:]: k for k in state if k.startswith(prefix + ".") and k not in claimed}
    layers = sorted({int(hit.group(1)) for n in inner if (hit := _SEQ.match(n))})
    if layers == [0] and "0.weight" in inner and state.shape(inner["0.weight"])[-1] == d_c:
        w, keys = state.float32(inner["0.weight"]), {inner["0.weight"]}
        bias = state.float32(inner["0.bias"]) if "0.bias" in inner else None
        return w, bias, keys | ({inner["0.bias"]} if "0.bias" in inner else set()), None
    if inner:
        names = ", ".join(sorted(inner))
        return None, None, set(inner.values()), (
            f"code_transform is not a single Linear ({names}): the effective codebook needs the module's "
            "forward and is not computed; codes shown are the frozen C.")
    return None, None, set(), None


@detector("vector-quantize-pytorch-simvq")
def vqp_simvq(state: TensorStore, claimed: set[str], config: Mapping[str, Any]) -> Detection:
    layout = "vector-quantize-pytorch-simvq"
    levels: list[Level] = []
    for module, key in keys_ending(state, "frozen_codebook", claimed):
        if len(state.shape(key)) != 2:
            continue
        frozen = state.float32(key)  # (K, d_c)
        w, bias, t_keys, note = _transform(state, claimed, join(module, "code_transform"), frozen.shape[1])
        if w is None and not t_keys:
            continue
        stack, level = split_level(module)
        keys = {"codes": key, "frozen": key} | ({"w": min(t_keys)} if w is not None else {})
        if w is not None:
            cb = _simvq_codebook(name=module or "simvq", layout=layout, frozen=frozen, w=w, bias=bias, keys=keys, note=note)
        else:
            cb = Codebook(name=module or "simvq", layout=layout, kind="simvq", codes=frozen, keys=keys,
                          frozen=frozen, assignable=False, note=note)
        levels.append(Level(stack=stack, level=level, keys={key} | t_keys, codebook=cb))
    return collect(state, claimed, levels, layout=layout)


def _projected(state: TensorStore, claimed: set[str], *, tables: tuple[str, ...], proj: str, layout: str) -> Detection:
    levels: list[Level] = []
    for module, w_key in keys_ending(state, f"{proj}.weight", claimed):
        w_shape = state.shape(w_key)
        table_key = next((join(module, t) for t in tables
                          if present(state, claimed, join(module, t)) and len(state.shape(join(module, t))) == 2
                          and len(w_shape) == 2 and state.shape(join(module, t))[1] == w_shape[1]), None)
        if table_key is None:
            continue
        b_key = join(module, f"{proj}.bias")
        bias = state.float32(b_key) if present(state, claimed, b_key) else None
        stack, level = split_level(module)
        keys = {"codes": table_key, "frozen": table_key, "w": w_key} | ({"bias": b_key} if bias is not None else {})
        levels.append(Level(
            stack=stack, level=level, keys=set(keys.values()),
            codebook=_simvq_codebook(name=module or layout, layout=layout, frozen=state.float32(table_key),
                                     w=state.float32(w_key), bias=bias, keys=keys)))
    return collect(state, claimed, levels, layout=layout)


@detector("simvq")
def official_simvq(state: TensorStore, claimed: set[str], config: Mapping[str, Any]) -> Detection:
    return _projected(state, claimed, tables=("embedding.weight",), proj="embedding_proj", layout="simvq")


@detector("vqgan-lc")
def vqgan_lc(state: TensorStore, claimed: set[str], config: Mapping[str, Any]) -> Detection:
    return _projected(state, claimed, tables=("tok_embeddings.weight", "embedding.weight"),
                      proj="codebook_projection", layout="vqgan-lc")

"""Codebook-free quantizers: recognised and reported, never turned into a made-up codebook.

- FSQ (vector-quantize-pytorch ``finite_scalar_quantization.py``): buffers ``_levels``, ``_basis``,
  ``implicit_codebook`` (persistent in older releases; since 1.x non-persistent, so an FSQ without
  projections leaves no trace in the state dict), ``project_in/out`` when dim differs.
- LFQ (vector-quantize-pytorch ``lookup_free_quantization.py``; Open-MAGVIT2 ``lookup_free_quantize.py``):
  ``mask`` = 2 ** arange(d - 1, -1, -1) and in older releases ``codebook`` (2**d, d) of +-1 values:
  fixed, not learned. ResidualLFQ: ``layers.N.mask``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from vqdoctor.codebooks.detectors._util import join, keys_ending, linear_keys, load_linear, split_level
from vqdoctor.codebooks.detectors.base import Detection, detector
from vqdoctor.core.codebook import CodebookFree
from vqdoctor.io.store import TensorStore


def _with_projections(state: TensorStore, claimed: set[str], module: str, keys: set[str]) -> set[str]:
    for owner in {module, split_level(module)[0]}:
        for name in ("project_in", "project_out"):
            keys |= set(linear_keys(load_linear(state, join(owner, name), claimed | keys)))
    return keys


@detector("fsq")
def fsq(state: TensorStore, claimed: set[str], config: Mapping[str, Any]) -> Detection:
    det = Detection()
    for module, key in keys_ending(state, "_levels", claimed):
        if len(state.shape(key)) != 1 or state.dtype(key).is_floating_point:
            continue
        levels = [int(x) for x in state[key].tolist()]
        keys = {key} | {join(module, n) for n in ("_basis", "implicit_codebook") if join(module, n) in state}
        keys = _with_projections(state, claimed | det.claimed, module, keys)
        det.codebook_free.append(CodebookFree(
            name=module or "fsq", kind="fsq", keys=tuple(sorted(keys)),
            note=f"Finite scalar quantization, levels {levels} (implicit codebook of {_prod(levels)} codes, not learned)."))
        det.claimed |= keys
    return det


def _prod(xs: list[int]) -> int:
    out = 1
    for x in xs:
        out *= x
    return out


@detector("lfq")
def lfq(state: TensorStore, claimed: set[str], config: Mapping[str, Any]) -> Detection:
    det = Detection()
    for module, key in keys_ending(state, "mask", claimed):
        shape = state.shape(key)
        if len(shape) != 1 or not 1 <= shape[0] <= 64 or state.dtype(key).is_floating_point:
            continue
        d = shape[0]
        if not torch.equal(state[key].long(), 2 ** torch.arange(d - 1, -1, -1)):
            continue
        keys = {key}
        table = join(module, "codebook")
        if table in state and state.shape(table) == (2**d, d):
            keys.add(table)
        keys |= {join(module, "zero")} & set(state)
        keys = _with_projections(state, claimed | det.claimed, module, keys)
        det.codebook_free.append(CodebookFree(
            name=module or "lfq", kind="lfq", keys=tuple(sorted(keys)),
            note=f"Lookup-free quantization: {d} binary dims, 2^{d} implicit codes; the sign table is fixed, not learned."))
        det.claimed |= keys
    return det

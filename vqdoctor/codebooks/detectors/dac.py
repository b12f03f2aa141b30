"""DAC factorized, l2-normalised codebooks (read: descriptinc/descript-audio-codec ``dac/nn/quantize.py``
and transformers ``modeling_dac.py``).

``quantizer.quantizers.N.{in_proj, out_proj, codebook.weight (K, 8)}``: in_proj / out_proj are
weight-normed Conv1d kernel 1 (``weight_g`` (out, 1, 1) / ``weight_v`` (out, in, 1), or
``parametrizations.weight.original0/1`` after torch's parametrize API) with bias. Level l reads the
residual, projects it with in_proj, compares l2-normalised vectors to l2-normalised codes (cosine),
and out_proj maps the chosen code back for the residual."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from vqdoctor.codebooks.detectors._stacks import Level, collect
from vqdoctor.codebooks.detectors._util import is_zero, join, keys_ending, linear_keys, load_linear, split_level
from vqdoctor.codebooks.detectors.base import Detection, detector
from vqdoctor.core.codebook import Codebook
from vqdoctor.io.store import TensorStore


@detector("dac")
def dac(state: TensorStore, claimed: set[str], config: Mapping[str, Any]) -> Detection:
    levels: list[Level] = []
    for module, key in keys_ending(state, "codebook.weight", claimed):
        shape = state.shape(key)
        if len(shape) != 2:
            continue
        p_in = load_linear(state, join(module, "in_proj"), claimed)
        p_out = load_linear(state, join(module, "out_proj"), claimed)
        if p_in is None or p_out is None or p_in.out_dim != shape[1] or p_out.in_dim != shape[1]:
            continue
        codes = state.float32(key)  # (K, d_c)
        stack, level = split_level(module)
        levels.append(
            Level(
                stack=stack,
                level=level,
                keys={key, *linear_keys(p_in), *linear_keys(p_out)},
                codebook=Codebook(
                    name=module or "codebook",
                    layout="dac",
                    kind="factorized",
                    codes=codes,
                    metric="cosine",
                    metric_evidence="DAC compares the l2-normalised in_proj output with l2-normalised codes",
                    unit_rows=False,  # decode_code reads the stored, un-normalised rows
                    keys={"codes": key, "in_proj": p_in.keys[0], "out_proj": p_out.keys[0]},
                    in_proj=p_in,
                    out_proj=p_out,
                    note="All codes are zero." if is_zero(codes) else None,
                ),
            )
        )
    return collect(state, claimed, levels, layout="dac")

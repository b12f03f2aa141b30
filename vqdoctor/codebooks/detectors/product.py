"""wav2vec2-style product quantizers (read: transformers ``modeling_wav2vec2.py``
``Wav2Vec2GumbelVectorQuantizer`` and ``Wav2Vec2ForPreTraining``).

``quantizer.codevectors`` (1, G*V, codevector_dim // G): G groups of V codes each, one per slice of
the quantized vector; ``quantizer.weight_proj`` (G*V, hidden) gives the logits that pick the codes
(Gumbel-softmax), so the codes are not assigned by nearest code. G comes from ``project_q``
(codevector_dim = G * d) or the config's ``num_codevector_groups``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from vqdoctor.codebooks.detectors._stacks import Level, collect
from vqdoctor.codebooks.detectors._util import config_values, join, keys_ending, present
from vqdoctor.codebooks.detectors.base import Detection, detector
from vqdoctor.core.codebook import Codebook
from vqdoctor.io.store import TensorStore

_DEFAULT_GROUPS = 2  # Wav2Vec2Config.num_codevector_groups


def _groups(state: TensorStore, module: str, d: int, total: int, config: Mapping[str, Any]) -> tuple[int, str]:
    outer = module.rsplit(".", 1)[0] if "." in module else ""
    for key in (join(outer, "project_q.weight"), "project_q.weight"):
        if key in state and len(state.shape(key)) == 2 and state.shape(key)[1] % d == 0:
            return state.shape(key)[1] // d, f"G from {key}."
    for g in config_values(config, "num_codevector_groups"):
        if isinstance(g, int) and g > 0 and total % g == 0:
            return g, "G from the config."
    return _DEFAULT_GROUPS, f"G not found in the weights or config; assumed {_DEFAULT_GROUPS} (the library default)."


@detector("wav2vec2")
def wav2vec2(state: TensorStore, claimed: set[str], config: Mapping[str, Any]) -> Detection:
    levels: list[Level] = []
    for module, key in keys_ending(state, "codevectors", claimed):
        shape = state.shape(key)
        proj = join(module, "weight_proj.weight")
        if len(shape) != 3 or shape[0] != 1 or not present(state, claimed, proj) or state.shape(proj)[0] != shape[1]:
            continue
        groups, why = _groups(state, module, shape[2], shape[1], config)
        if shape[1] % groups:
            continue
        per = shape[1] // groups
        table = state.float32(key)[0]  # (G*V, d)
        extra = {proj} | ({join(module, "weight_proj.bias")} if join(module, "weight_proj.bias") in state else set())
        for g in range(groups):
            levels.append(Level(stack=module, level=None, keys={key} | extra, codebook=Codebook(
                name=f"{module or 'codevectors'}/group{g}", layout="wav2vec2", kind="product",
                codes=table[g * per:(g + 1) * per].contiguous(), keys={"codes": key, "logits": proj},
                head=g, heads=groups, assignable=False,
                note=f"Product quantizer group {g} of {groups} ({why}) Codes are picked by the logits of "
                     "weight_proj (Gumbel-softmax), not by nearest code.")))
    return collect(state, claimed, levels, layout="wav2vec2")

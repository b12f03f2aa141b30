"""The detector protocol. One small detector per checkpoint layout; the registry
(``vqdoctor/codebooks/registry.py``) lists them in one tuple, most specific first.

A detector looks at the whole flattened state dict (a TensorStore: use ``state.shape(key)`` to
inspect, ``state.float32(key)`` to load only what it keeps), skips keys
already claimed by an earlier detector, and returns what it recognised plus the keys it claims.
It never raises for "not my layout": it returns an empty :class:`Detection`. It must not be
fooled by encoder/decoder weights, language-model token embeddings or classifier tables.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from vqdoctor.codebooks.model import CodebookFree, Stack
from vqdoctor.io.store import TensorStore


@dataclass
class Detection:
    stacks: list[Stack] = field(default_factory=list)
    codebook_free: list[CodebookFree] = field(default_factory=list)
    claimed: set[str] = field(default_factory=set)
    notes: list[str] = field(default_factory=list)


class Detector(Protocol):
    name: str

    def __call__(self, state: TensorStore, claimed: set[str]) -> Detection: ...

"""The detector protocol. One small detector per checkpoint layout; the registry
(``vqdoctor/codebooks/registry.py``) lists them in one tuple, most specific first.

A detector looks at the whole flattened state dict (a TensorStore: use ``state.shape(key)`` to
inspect, ``state.float32(key)`` to load only what it keeps), skips keys
already claimed by an earlier detector, and returns what it recognised plus the keys it claims.
It never raises for "not my layout": it returns an empty :class:`Detection`. It must not be
fooled by encoder/decoder weights, language-model token embeddings or classifier tables.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from vqdoctor.core.codebook import CodebookFree, Stack
from vqdoctor.io.store import TensorStore


@dataclass
class Detection:
    stacks: list[Stack] = field(default_factory=list)
    codebook_free: list[CodebookFree] = field(default_factory=list)
    claimed: set[str] = field(default_factory=set)
    notes: list[str] = field(default_factory=list)


class Detector(Protocol):
    @property
    def name(self) -> str: ...

    def __call__(
        self, state: TensorStore, claimed: set[str], *, config: Mapping[str, Any] | None = None
    ) -> Detection: ...


DetectFn = Callable[[TensorStore, set[str], Mapping[str, Any]], Detection]


@dataclass(frozen=True)
class NamedDetector:
    """A detector function with its layout name. ``config`` is the checkpoint's parsed model
    config (Hugging Face ``config.json`` or safetensors metadata), ``{}`` when there is none:
    some switches (LlamaGen's l2-normalised lookup) are not visible in the weights."""

    name: str
    fn: DetectFn

    def __call__(
        self, state: TensorStore, claimed: set[str], *, config: Mapping[str, Any] | None = None
    ) -> Detection:
        return self.fn(state, claimed, config or {})


def detector(name: str) -> Callable[[DetectFn], NamedDetector]:
    """Decorator: ``@detector("dac")`` turns ``fn(state, claimed, config)`` into a Detector."""

    def wrap(fn: DetectFn) -> NamedDetector:
        return NamedDetector(name=name, fn=fn)

    return wrap

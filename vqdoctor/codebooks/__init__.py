"""Codebook discovery: the value objects and :func:`find_codebooks` (re-exports, loaded on first
use so that ``import vqdoctor.core.codebook`` or the command line does not load every detector)."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vqdoctor.codebooks.registry import (
        DETECTORS,
        METRICS,
        config_from_metadata,
        find_codebooks,
        no_codebook_error,
        override_metric,
        select,
    )
    from vqdoctor.core.codebook import Codebook, CodebookFree, Discovery, EmaState, Linear, Stack

_EXPORTS = {
    **dict.fromkeys(("Codebook", "CodebookFree", "Discovery", "EmaState", "Linear", "Stack"), "vqdoctor.core.codebook"),
    **dict.fromkeys(("DETECTORS", "METRICS", "config_from_metadata", "find_codebooks", "no_codebook_error",
                     "override_metric", "select"), "vqdoctor.codebooks.registry"),
}

__all__ = [
    "DETECTORS",
    "METRICS",
    "Codebook",
    "CodebookFree",
    "Discovery",
    "EmaState",
    "Linear",
    "Stack",
    "config_from_metadata",
    "find_codebooks",
    "no_codebook_error",
    "override_metric",
    "select",
]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'vqdoctor.codebooks' has no attribute {name!r}")

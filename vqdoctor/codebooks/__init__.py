"""Codebook discovery: the value objects and :func:`find_codebooks` (re-exports only)."""

from vqdoctor.codebooks.model import Codebook, CodebookFree, Discovery, EmaState, Linear, Stack
from vqdoctor.codebooks.registry import (
    DETECTORS,
    METRICS,
    config_from_metadata,
    find_codebooks,
    no_codebook_error,
    override_metric,
    select,
)

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

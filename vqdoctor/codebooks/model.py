"""The codebook value objects, at their old address: they live in :mod:`vqdoctor.core.codebook`
(below ``core``'s functions that consume them); this module re-exports them for existing imports."""

from vqdoctor.core.codebook import Codebook, CodebookFree, Discovery, EmaState, Linear, Metric, MetricSource, Stack

__all__ = ["Codebook", "CodebookFree", "Discovery", "EmaState", "Linear", "Metric", "MetricSource", "Stack"]

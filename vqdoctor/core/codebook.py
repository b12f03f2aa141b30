"""The value objects that describe what a checkpoint quantizes with.

A :class:`Codebook` is one table of K codes of dimension d *as the quantizer compares them*
(the effective codebook: ``C @ W.T + b`` for SimVQ, ``embed_sum / usage`` for Moshi, the
normalised table for cosine lookups is NOT pre-normalised here: ``metric`` says how to compare).
A :class:`Stack` is what one quantizer module does with its input: which channels it reads, an
optional input/output projection, and its codebooks in level order (a residual chain when
``residual`` is true, else independent heads/groups of one level).

These are plain frozen dataclasses holding float32 CPU tensors; the detectors of
:mod:`vqdoctor.codebooks` build them and the rest of ``core`` consumes them (they import nothing
but torch; ``vqdoctor.codebooks.model`` re-exports them).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch

Metric = Literal["euclidean", "cosine"]
# Where a codebook's metric came from: the layout's only lookup rule, the checkpoint's config, the
# stored codes and buffers themselves ("detected"), or the user's --metric ("flag").
MetricSource = Literal["layout", "config", "detected", "flag"]


@dataclass(frozen=True)
class Linear:
    """y = x @ weight.T + bias. weight: (out, in); bias: (out,) or None.
    Weight-normed layers are stored already materialised (g * v / ||v||)."""

    weight: torch.Tensor  # (out, in)
    bias: torch.Tensor | None = None  # (out,)
    keys: tuple[str, ...] = ()

    @property
    def in_dim(self) -> int:
        return int(self.weight.shape[1])

    @property
    def out_dim(self) -> int:
        return int(self.weight.shape[0])

    def __call__(self, x: torch.Tensor) -> torch.Tensor:  # (N, in) -> (N, out)
        w = self.weight.to(device=x.device, dtype=x.dtype)
        y = x @ w.T
        if self.bias is not None:
            y = y + self.bias.to(device=x.device, dtype=x.dtype)
        return y


@dataclass(frozen=True)
class EmaState:
    """EMA bookkeeping buffers of one codebook (any may be None).

    ``cluster_size``: (K,) decayed assignment counts (vector-quantize-pytorch, encodec) or
    Moshi's ``cluster_usage``. ``is_count`` is False where the buffer is not a usage count
    (e.g. a ring buffer of recent indices) and ``note`` says what it is instead."""

    cluster_size: torch.Tensor | None  # (K,)
    embed_sum: torch.Tensor | None = None  # (K, d) embed_avg / embed_sum
    initted: bool | None = None
    keys: dict[str, str] = field(default_factory=dict)  # role -> state-dict key
    is_count: bool = True
    note: str | None = None


@dataclass(frozen=True)
class Codebook:
    name: str  # stable, human readable, e.g. "quantizer.vq.layers.3"
    layout: str  # the detector that found it, e.g. "vector-quantize-pytorch"
    kind: str  # "plain" | "ema" | "simvq" | "factorized" | "product" | "moshi"
    codes: torch.Tensor  # (K, d) float32, effective codebook in the compared space
    metric: Metric = "euclidean"
    keys: dict[str, str] = field(default_factory=dict)  # role -> state-dict key ("codes", ...)
    level: int = 0  # position in its stack's residual chain
    head: int = 0  # which slice of the stack's (projected) input it reads, of `heads`
    heads: int = 1
    shared_heads: bool = False  # one table used by every head: it sees all `heads` slices
    in_proj: Linear | None = None  # per-codebook projection into code space (DAC)
    out_proj: Linear | None = None  # back to the stack space (DAC), used by residual chains
    w: torch.Tensor | None = None  # (d, d_c) linear code transform: SimVQ's W (codes = C @ W.T)
    frozen: torch.Tensor | None = None  # (K, d_c) SimVQ's frozen C
    ema: EmaState | None = None
    assignable: bool = True  # False where codes are picked by logits, not nearest code (wav2vec2)
    note: str | None = None
    metric_source: MetricSource = "layout"
    metric_evidence: str | None = None  # e.g. "all 512 codes unit-norm ±1e-3"
    # Whether a cosine table is stored with unit rows (vector-quantize-pytorch, BEiT-v2: the library
    # looks up the stored rows), False where stored rows are decoded un-normalised (DAC), None:
    # decide from the codes. Fixes write cosine codes accordingly.
    unit_rows: bool | None = None

    @property
    def size(self) -> int:
        return int(self.codes.shape[0])

    @property
    def dim(self) -> int:
        return int(self.codes.shape[1])


@dataclass(frozen=True)
class Stack:
    """One quantizer module: reads ``channels`` of the latents (all when None), applies
    ``project_in``, splits into heads, runs ``codebooks`` (level order), ``project_out`` back."""

    name: str
    layout: str
    codebooks: tuple[Codebook, ...]
    residual: bool = False
    channels: tuple[int, int] | None = None  # [start, stop) of the latent channels (groups)
    group: int = 0
    project_in: Linear | None = None
    project_out: Linear | None = None

    @property
    def input_dim(self) -> int | None:
        """Channels this stack expects from the latents, where known."""
        if self.channels is not None:
            return self.channels[1] - self.channels[0]
        if self.project_in is not None:
            return self.project_in.in_dim
        first = self.codebooks[0]
        if first.in_proj is not None:
            return first.in_proj.in_dim
        return first.dim * (first.heads if first.heads > 1 else 1)


@dataclass(frozen=True)
class CodebookFree:
    """A quantizer with no learned table (FSQ, LFQ, BSQ): recognised, reported, not analysed."""

    name: str
    kind: str  # "fsq" | "lfq" | ...
    keys: tuple[str, ...] = ()
    note: str = ""


@dataclass(frozen=True)
class Discovery:
    """What :func:`vqdoctor.codebooks.find_codebooks` found in one state dict."""

    stacks: tuple[Stack, ...]
    codebook_free: tuple[CodebookFree, ...] = ()
    notes: tuple[str, ...] = ()

    @property
    def codebooks(self) -> tuple[Codebook, ...]:
        return tuple(cb for s in self.stacks for cb in s.codebooks)

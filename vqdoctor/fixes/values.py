"""Fixes as values: what ``vqdoctor fix kmeans|revive|simvq`` runs, with everything it needs.

Each is a frozen dataclass; :func:`vqdoctor.api.fix_checkpoint` takes one and runs it on every
stack of the checkpoint (later stacks see the earlier stacks' updates)::

    from vqdoctor import api
    from vqdoctor.fixes import KMeansFix
    outcome = api.fix_checkpoint("vq.safetensors", fix=KMeansFix(iters=20), out=Path("fixed.safetensors"),
                                 data=DataOptions(latents=Path("z.npy")))

``apply(state, stack, x, progress=...)`` is the fix on one stack: ``state`` the tensors as they
are so far, ``x`` the stack's input vectors (N, D) (None without data), ``progress`` a
per-iteration k-means callback (``vqdoctor.core.kmeans.LloydProgress``) or None.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal, Protocol

import torch

from vqdoctor import distributed
from vqdoctor.core.assign import DEFAULT_BUDGET_BYTES
from vqdoctor.core.codebook import Stack
from vqdoctor.core.kmeans import LloydProgress, kmeans
from vqdoctor.errors import UsageError
from vqdoctor.fixes._state import FixResult
from vqdoctor.fixes.kmeans_reinit import Cluster, kmeans_reinit
from vqdoctor.fixes.revive import revive_stack
from vqdoctor.fixes.simvq import to_simvq

DEFAULT_BUDGET_MB = DEFAULT_BUDGET_BYTES >> 20


class Fix(Protocol):
    """What :func:`vqdoctor.api.fix_checkpoint` reads of a fix value."""

    name: ClassVar[str]
    needs_data: ClassVar[bool]  # refuse to run without the vectors that reach the quantizer
    across_ranks: ClassVar[bool]  # runs under torchrun (reduces its statistics over the ranks)

    @property
    def encoder_from(self) -> Path | None: ...

    def transplant_parts(self) -> tuple[str, ...]: ...

    def apply(self, state: Mapping[str, torch.Tensor], stack: Stack, x: torch.Tensor | None, *,
              progress: LloydProgress | None = None) -> FixResult: ...


def _need(x: torch.Tensor | None, name: str) -> torch.Tensor:
    if x is None:
        raise UsageError(f"fix {name} needs data: the vectors that reach the quantizer.",
                         "Pass --latents FILE, or --inputs with --model/--encoder.")
    return x


@dataclass(frozen=True)
class KMeansFix:
    """Re-initialise codebooks by k-means (k = codebook size) on the encoder's outputs. With
    ``encoder_from`` (a pretrained checkpoint, e.g. the autoencoder trained without VQ) its
    ``encoder_prefixes`` modules (and ``decoder_prefixes`` with ``with_decoder``) are copied into
    the output and the codebook is fitted on the vectors of that encoder."""

    iters: int = 20
    seed: int = 0
    memory_budget_mb: int = DEFAULT_BUDGET_MB
    encoder_from: Path | None = None
    encoder_prefixes: tuple[str, ...] = ("encoder",)
    with_decoder: bool = False
    decoder_prefixes: tuple[str, ...] = ("decoder",)

    name: ClassVar[str] = "kmeans"
    needs_data: ClassVar[bool] = True
    across_ranks: ClassVar[bool] = True

    def __post_init__(self) -> None:
        if self.with_decoder and self.encoder_from is None:
            raise UsageError("--with-decoder copies the decoder of --encoder-from PRETRAINED; pass that too.")

    def transplant_parts(self) -> tuple[str, ...]:
        if self.encoder_from is None:
            return ()
        return self.encoder_prefixes + (self.decoder_prefixes if self.with_decoder else ())

    def apply(self, state: Mapping[str, torch.Tensor], stack: Stack, x: torch.Tensor | None, *,
              progress: LloydProgress | None = None) -> FixResult:
        # under torchrun (or quiet) the Lloyd steps reduce over the ranks (plain k-means alone)
        cluster: Cluster = (distributed.kmeans_across_ranks if distributed.detect() is not None or progress is None
                            else functools.partial(kmeans, progress=progress))
        return kmeans_reinit(state, stack, _need(x, self.name), iters=self.iters, seed=self.seed,
                             budget_bytes=self.memory_budget_mb << 20, cluster=cluster)


@dataclass(frozen=True)
class ReviveFix:
    """Replace only the dead codes (used fewer than ``min_count`` times) with centroids of the
    worst-served regions; live codes stay bit-exact."""

    min_count: int = 1
    iters: int = 20
    seed: int = 0
    memory_budget_mb: int = DEFAULT_BUDGET_MB

    name: ClassVar[str] = "revive"
    needs_data: ClassVar[bool] = True
    across_ranks: ClassVar[bool] = False
    encoder_from: ClassVar[Path | None] = None

    def transplant_parts(self) -> tuple[str, ...]:
        return ()

    def apply(self, state: Mapping[str, torch.Tensor], stack: Stack, x: torch.Tensor | None, *,
              progress: LloydProgress | None = None) -> FixResult:
        return revive_stack(state, stack, _need(x, self.name), min_count=self.min_count, iters=self.iters,
                            seed=self.seed, budget_bytes=self.memory_budget_mb << 20, progress=progress)


@dataclass(frozen=True)
class SimVQFix:
    """Rewrite codebooks as SimVQ (codes = C·Wᵀ, C frozen): ``mode`` exact (C = the old codebook,
    W = I: the same assignments) or paper (Gaussian C frozen, W fitted); ``layout`` vqp
    (vector-quantize-pytorch keys) or official (the SimVQ paper code's keys). Data is optional
    (it gives the before/after table)."""

    mode: Literal["exact", "paper"] = "exact"
    layout: Literal["vqp", "official"] = "vqp"
    seed: int = 0

    name: ClassVar[str] = "simvq"
    needs_data: ClassVar[bool] = False
    across_ranks: ClassVar[bool] = False
    encoder_from: ClassVar[Path | None] = None

    def __post_init__(self) -> None:
        if self.mode not in ("exact", "paper"):
            raise UsageError(f"--mode {self.mode!r} is not one of exact, paper.")
        if self.layout not in ("vqp", "official"):
            raise UsageError(f"--layout {self.layout!r} is not one of vqp, official.")

    def transplant_parts(self) -> tuple[str, ...]:
        return ()

    def apply(self, state: Mapping[str, torch.Tensor], stack: Stack, x: torch.Tensor | None, *,
              progress: LloydProgress | None = None) -> FixResult:
        total = FixResult()
        for cb in stack.codebooks:
            total.merge(to_simvq(state, cb, mode=self.mode, layout=self.layout, seed=self.seed))
        return total

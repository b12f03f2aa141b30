"""The statistics one pass over the data leaves behind, before any report is built.

Everything here is a sum (mergeable by addition, across shards and distributed ranks) or the
bounded subsample, which every shard draws identically (global sample indices, same seed)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import torch

from vqdoctor.core.collapse import DeadCodeParking
from vqdoctor.core.usage import UsageStats
from vqdoctor.errors import UsageError


@dataclass
class Gathered:
    """Everything the report needs from the data: mergeable statistics per codebook (sums) and
    the bounded subsample (identical on every shard: drawn from global sample indices with the
    same seed). Shards and distributed ranks merge by adding ``stats``."""

    description: str
    stats: dict[str, UsageStats]  # codebook name -> statistics
    vectors: int
    sub_latents: torch.Tensor  # (m, D)
    sub_sample: torch.Tensor  # (m,) sample index of each subsample vector
    sub_idx: np.ndarray  # (s,) the samples drawn
    sub_inputs: torch.Tensor | None  # (s, F)
    mode_names: list[str]
    mode_source: str | None  # None: a single mode, no collapse analysis
    sub_modes: torch.Tensor | None  # (m,)
    notes: list[str] = field(default_factory=list)
    # codebook name -> nearest vector of each code with no vector (merges by minimum; None when
    # there are no modes or the statistics came from a file, which does not keep it)
    parking: dict[str, DeadCodeParking] | None = None

    def merge(self, other: "Gathered") -> "Gathered":
        if set(self.stats) != set(other.stats):
            raise UsageError("These statistics cover different codebooks and cannot be merged.",
                             f"One has {sorted(self.stats)}, the other {sorted(other.stats)}.")
        stats = {k: v.merge(other.stats[k]) for k, v in self.stats.items()}
        parking = None
        if self.parking is not None and other.parking is not None:
            parking = {k: v.merge(other.parking[k]) for k, v in self.parking.items()}
        return replace(self, stats=stats, vectors=self.vectors + other.vectors, parking=parking)

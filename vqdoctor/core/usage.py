"""Mergeable usage statistics of one codebook and the usage metrics computed from them.

:class:`UsageStats` holds sums only (counts, number of vectors and elements, sums of squared
error, of the vectors and of their squares), so shards of the data reduce by addition: ``merge``
for statistics kept in files, ``all_reduce`` under torch.distributed. Nothing is averaged in the
state; :meth:`UsageStats.compute` turns the sums into :class:`UsageMetrics` (docs/metrics.md,
"Usage").

Device: the state lives on one device. It starts where :meth:`UsageStats.empty` puts it (CPU by
default) and moves, once, to the device of the first batch given to :meth:`update` from another
device, so a CUDA pipeline adds on the GPU without a host sync per batch; ``compute`` and
``to_dict`` read it back to the host.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from vqdoctor.core.expect import expected_live, expected_perplexity, expected_used, vectors_needed
from vqdoctor.core.results import UsageMetrics
from vqdoctor.errors import DataError, UsageError

FORMAT = "vqdoctor.usage_stats/1"
_METRICS = ("euclidean", "cosine")


@dataclass(eq=False)
class UsageStats:
    """Sufficient statistics of assignments to one codebook of ``size`` codes of ``dim`` dims.

    ``metric="cosine"``: the vectors given to :meth:`update` are l2-normalised before their sums
    are taken, so the relative MSE compares error and variance in the same (normalised) space
    as the squared errors of a cosine search."""

    size: int  # K
    dim: int  # d
    metric: str
    counts: torch.Tensor  # (K,) int64: vectors assigned to each code
    vectors: int  # N
    elements: int  # N * d
    sq_err_sum: torch.Tensor  # () float64: sum of squared distances to the assigned code
    x_sum: torch.Tensor  # (d,) float64: sum of the vectors
    x_sq_sum: torch.Tensor  # (d,) float64: sum of the squared vectors
    mode_counts: torch.Tensor | None = None  # (K, M) int64: vectors of mode m on code k

    @classmethod
    def empty(
        cls,
        size: int,
        dim: int,
        *,
        modes: int | None = None,
        metric: str = "euclidean",
        device: torch.device | str = "cpu",
    ) -> UsageStats:
        if size < 1 or dim < 1:
            raise UsageError(f"usage statistics need size >= 1 and dim >= 1, got {size} and {dim}")
        if modes is not None and modes < 1:
            raise UsageError(f"modes must be >= 1 when given, got {modes}")
        if metric not in _METRICS:
            raise UsageError(f"unknown metric {metric!r}", "use 'euclidean' or 'cosine'")
        dev = torch.device(device)
        return cls(
            size=size,
            dim=dim,
            metric=metric,
            counts=torch.zeros(size, dtype=torch.int64, device=dev),
            vectors=0,
            elements=0,
            sq_err_sum=torch.zeros((), dtype=torch.float64, device=dev),
            x_sum=torch.zeros(dim, dtype=torch.float64, device=dev),
            x_sq_sum=torch.zeros(dim, dtype=torch.float64, device=dev),
            mode_counts=(
                None
                if modes is None
                else torch.zeros(size, modes, dtype=torch.int64, device=dev)
            ),
        )

    @property
    def modes(self) -> int | None:
        return None if self.mode_counts is None else int(self.mode_counts.shape[1])

    @property
    def device(self) -> torch.device:
        return self.counts.device

    def to(self, device: torch.device | str) -> UsageStats:
        """Move the state (in place) and return self."""
        dev = torch.device(device)
        self.counts = self.counts.to(dev)
        self.sq_err_sum = self.sq_err_sum.to(dev)
        self.x_sum = self.x_sum.to(dev)
        self.x_sq_sum = self.x_sq_sum.to(dev)
        if self.mode_counts is not None:
            self.mode_counts = self.mode_counts.to(dev)
        return self

    def update(
        self,
        idx: torch.Tensor,  # (b,) int: assigned code of each vector
        sq_err: torch.Tensor,  # (b,) squared distance to the assigned code
        x: torch.Tensor,  # (b, d) the vectors as compared (before cosine normalisation)
        modes: torch.Tensor | None = None,  # (b,) int in [0, M): data mode of each vector
    ) -> None:
        """Add one batch."""
        b = int(idx.shape[0]) if idx.ndim == 1 else -1
        if b < 0 or sq_err.shape != (b,) or x.shape != (b, self.dim):
            raise DataError(
                f"update expects idx (b,), sq_err (b,), x (b, {self.dim}); got "
                f"{tuple(idx.shape)}, {tuple(sq_err.shape)}, {tuple(x.shape)}"
            )
        if (modes is None) != (self.mode_counts is None):
            raise UsageError(
                "modes must be given on every update exactly when the statistics track modes"
                f" (tracking {self.modes} modes)"
            )
        if b == 0:
            return
        if idx.device != self.device:
            self.to(idx.device)
        k = self.size
        idx = idx.to(torch.int64)
        if idx.device.type == "cpu":  # on an accelerator a host check would sync every batch
            _check_range(idx, k, "code index")
        self.counts.index_add_(0, idx, torch.ones_like(idx))
        self.sq_err_sum += sq_err.to(torch.float64).sum()
        xd = x.to(torch.float64)
        if self.metric == "cosine":
            xd = torch.nn.functional.normalize(xd, dim=1)
        self.x_sum += xd.sum(0)
        self.x_sq_sum += (xd * xd).sum(0)
        if self.mode_counts is not None:
            assert modes is not None
            m = self.mode_counts.shape[1]
            if modes.shape != (b,):
                raise DataError(f"modes must have shape ({b},), got {tuple(modes.shape)}")
            modes = modes.to(device=idx.device, dtype=torch.int64)
            if modes.device.type == "cpu":
                _check_range(modes, m, "mode id")
            self.mode_counts.view(-1).index_add_(0, idx * m + modes, torch.ones_like(idx))
        self.vectors += b
        self.elements += b * self.dim

    def _check_compatible(self, other: UsageStats) -> None:
        mine = (self.size, self.dim, self.modes, self.metric)
        theirs = (other.size, other.dim, other.modes, other.metric)
        if mine != theirs:
            raise DataError(
                "cannot merge usage statistics of different codebooks: "
                f"(K, d, modes, metric) = {mine} vs {theirs}",
                "merge only statistics of the same codebook of the same checkpoint",
            )

    def merge(self, other: UsageStats) -> UsageStats:
        """Return the statistics of both data sets (a new object; neither input changes)."""
        self._check_compatible(other)
        o = other if other.device == self.device else other.copy().to(self.device)
        mc = None
        if self.mode_counts is not None:
            assert o.mode_counts is not None
            mc = self.mode_counts + o.mode_counts
        return UsageStats(
            size=self.size,
            dim=self.dim,
            metric=self.metric,
            counts=self.counts + o.counts,
            vectors=self.vectors + o.vectors,
            elements=self.elements + o.elements,
            sq_err_sum=self.sq_err_sum + o.sq_err_sum,
            x_sum=self.x_sum + o.x_sum,
            x_sq_sum=self.x_sq_sum + o.x_sq_sum,
            mode_counts=mc,
        )

    def copy(self) -> UsageStats:
        return UsageStats(
            size=self.size,
            dim=self.dim,
            metric=self.metric,
            counts=self.counts.clone(),
            vectors=self.vectors,
            elements=self.elements,
            sq_err_sum=self.sq_err_sum.clone(),
            x_sum=self.x_sum.clone(),
            x_sq_sum=self.x_sq_sum.clone(),
            mode_counts=None if self.mode_counts is None else self.mode_counts.clone(),
        )

    def all_reduce(self, group: Any = None) -> UsageStats:
        """Sum the statistics over the processes of ``group`` (in place) when torch.distributed
        is initialised; otherwise do nothing. Returns self. Every process must call it with
        statistics of the same codebook."""
        dist = torch.distributed
        if not (dist.is_available() and dist.is_initialized()):
            return self
        nums = torch.tensor([self.vectors, self.elements], dtype=torch.int64, device=self.device)
        tensors = [self.counts, nums, self.sq_err_sum, self.x_sum, self.x_sq_sum]
        if self.mode_counts is not None:
            tensors.append(self.mode_counts)
        for t in tensors:
            dist.all_reduce(t, op=dist.ReduceOp.SUM, group=group)
        self.vectors, self.elements = (int(v) for v in nums.tolist())
        return self

    def compute(self, *, min_count: int = 1, space: str = "") -> UsageMetrics:
        """Usage metrics of docs/metrics.md. Utilization counts codes used at least once whatever
        ``min_count``; dead codes are those used fewer than ``min_count`` times. The relative
        MSE is None when the vectors have no variance (below 1e-12 of their mean square)."""
        if min_count < 0:
            raise UsageError(f"min_count must be >= 0, got {min_count}")
        n = self.vectors
        if n == 0:
            raise DataError("no vectors were assigned, so usage cannot be measured")
        k = self.size
        c = self.counts.cpu()
        used = int((c >= 1).sum())
        dead = int((c < min_count).sum())
        p = c[c > 0].to(torch.float64) / n
        h = float(-(p * p.log()).sum())  # 0 ln 0 = 0: zero counts are left out
        h = max(h, 0.0)
        perplexity = math.exp(h)
        top = int(math.ceil(0.1 * k))
        sorted_c = torch.sort(c, descending=True).values
        mse = float(self.sq_err_sum) / self.elements
        mean = self.x_sum.cpu() / n
        mean_sq = self.x_sq_sum.cpu() / n
        var = float((mean_sq - mean * mean).clamp_min(0.0).mean())
        scale = float(mean_sq.mean())
        rel = mse / var if var > 1e-12 * scale and var > 0.0 else None
        return UsageMetrics(
            vectors=n,
            used_codes=used,
            dead_codes=dead,
            min_count=min_count,
            utilization=used / k,
            perplexity=perplexity,
            normalized_perplexity=perplexity / k,
            entropy_bits=h / math.log(2.0),
            quantization_mse=mse,
            relative_mse=rel,
            top1_mass=int(sorted_c[0]) / n,
            top10pct_mass=int(sorted_c[:top].sum()) / n,
            space=space,
            vectors_per_code=n / k,
            expected_used_codes=expected_used(k, n),
            expected_utilization=expected_used(k, n) / k,
            expected_dead_codes=k - expected_live(k, n, min_count),
            expected_perplexity=expected_perplexity(k, n),
            vectors_for_95=vectors_needed(k, 0.95),
            vectors_for_99=vectors_needed(k, 0.99),
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form: integers exact, floats as Python floats (round-trip exactly)."""
        return {
            "format": FORMAT,
            "size": self.size,
            "dim": self.dim,
            "metric": self.metric,
            "modes": self.modes,
            "vectors": self.vectors,
            "elements": self.elements,
            "counts": [int(v) for v in self.counts.cpu().tolist()],
            "sq_err_sum": float(self.sq_err_sum),
            "x_sum": [float(v) for v in self.x_sum.cpu().tolist()],
            "x_sq_sum": [float(v) for v in self.x_sq_sum.cpu().tolist()],
            "mode_counts": (
                None if self.mode_counts is None else self.mode_counts.cpu().tolist()
            ),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> UsageStats:
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            got = data.get("format") if isinstance(data, dict) else type(data).__name__
            raise DataError(f"not usage statistics of format {FORMAT!r} (got {got!r})")
        try:
            k, d, m = int(data["size"]), int(data["dim"]), data["modes"]
            stats = cls.empty(k, d, modes=None if m is None else int(m), metric=data["metric"])
            counts = torch.tensor(data["counts"], dtype=torch.int64)
            x_sum = torch.tensor(data["x_sum"], dtype=torch.float64)
            x_sq_sum = torch.tensor(data["x_sq_sum"], dtype=torch.float64)
            mc = data["mode_counts"]
            mode_counts = None if mc is None else torch.tensor(mc, dtype=torch.int64)
            vectors, elements = int(data["vectors"]), int(data["elements"])
            sq = float(data["sq_err_sum"])
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"usage statistics are incomplete or malformed: {exc}") from None
        if counts.shape != (k,) or x_sum.shape != (d,) or x_sq_sum.shape != (d,):
            raise DataError(f"usage statistics have inconsistent shapes for K={k}, d={d}")
        if (m is None) != (mode_counts is None) or (
            mode_counts is not None and mode_counts.shape != (k, int(m))
        ):
            raise DataError(f"usage statistics have inconsistent mode counts for K={k}, M={m}")
        stats.counts = counts
        stats.x_sum = x_sum
        stats.x_sq_sum = x_sq_sum
        stats.mode_counts = mode_counts
        stats.vectors = vectors
        stats.elements = elements
        stats.sq_err_sum = torch.tensor(sq, dtype=torch.float64)
        return stats


def _check_range(t: torch.Tensor, hi: int, what: str) -> None:
    lo_v, hi_v = int(t.min()), int(t.max())
    if lo_v < 0 or hi_v >= hi:
        raise DataError(f"{what} out of range [0, {hi}) in update: saw {lo_v}..{hi_v}")

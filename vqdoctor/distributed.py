"""Running one analysis over several processes with torch.distributed (``torchrun``).

Under ``torchrun --nproc-per-node N -m vqdoctor inspect ...`` every process (rank) reads its
contiguous slice of the data (``DataOptions.shard = (rank, world)``), gathers mergeable
statistics, and the statistics are summed over the ranks with ``all_reduce`` (gloo on CPU,
nccl on CUDA). Every rank then holds the totals; only rank 0 writes the report and files, the
others print nothing to stdout. The bounded subsample is drawn from global sample indices with
the same seed, so it is the same on every rank (checked: :func:`reduce_gathered` refuses ranks
that disagree on it).

k-means (``fix kmeans``) distributes the same way: every Lloyd iteration all-reduces the sums,
counts and inertia of :func:`vqdoctor.core.kmeans.lloyd_step_sums` (:func:`lloyd_step_sums_reduced`,
:func:`kmeans_distributed`).

Without torchrun nothing here does anything: :func:`detect` returns None, :func:`session`
yields None and :func:`is_main` is True.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.distributed as dist

from vqdoctor.core.assign import DEFAULT_BUDGET_BYTES, nearest_codes
from vqdoctor.core.collapse import DeadCodeParking
from vqdoctor.core.gathered import Gathered
from vqdoctor.core.kmeans import KMeansResult, kmeans, lloyd_step_sums, seed_kmeanspp
from vqdoctor.errors import UsageError

if TYPE_CHECKING:
    from torch.distributed import ProcessGroup

ENV_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class DistEnv:
    """Where this process sits in a torchrun job."""

    rank: int
    world_size: int
    local_rank: int

    @property
    def shard(self) -> tuple[int, int]:
        return (self.rank, self.world_size)

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def detect(environ: dict[str, str] | None = None) -> DistEnv | None:
    """The torchrun environment (RANK, WORLD_SIZE, LOCAL_RANK), or None outside one. A
    WORLD_SIZE of 1 counts as a job of one process (nothing to reduce)."""
    env = os.environ if environ is None else environ
    if "WORLD_SIZE" not in env or "RANK" not in env:
        return None
    try:
        rank, world = int(env["RANK"]), int(env["WORLD_SIZE"])
        local = int(env.get("LOCAL_RANK", rank))
    except ValueError:
        raise UsageError(f"torchrun environment is malformed: RANK={env.get('RANK')!r}, "
                         f"WORLD_SIZE={env.get('WORLD_SIZE')!r}, LOCAL_RANK={env.get('LOCAL_RANK')!r}.",
                         "Start vqdoctor with torchrun, or unset these variables.") from None
    if world < 1 or not 0 <= rank < world:
        raise UsageError(f"torchrun environment is inconsistent: RANK={rank}, WORLD_SIZE={world}.",
                         "Start vqdoctor with torchrun, or unset these variables.")
    return DistEnv(rank=rank, world_size=world, local_rank=local)


def backend_for(device: torch.device) -> str:
    """nccl for CUDA, gloo otherwise."""
    return "nccl" if device.type == "cuda" else "gloo"


def device_for(env: DistEnv, device: torch.device) -> torch.device:
    """On CUDA each local rank takes its own GPU (``cuda:LOCAL_RANK``, modulo the GPUs here)."""
    if device.type != "cuda":
        return device
    count = torch.cuda.device_count()
    return torch.device("cuda", env.local_rank % max(1, count))


def is_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def is_main() -> bool:
    """True on rank 0 and outside a process group: the process that writes outputs."""
    return not is_initialized() or dist.get_rank() == 0


def world() -> tuple[int, int]:
    """(rank, world size); (0, 1) outside a process group."""
    if not is_initialized():
        return (0, 1)
    return (dist.get_rank(), dist.get_world_size())


def init(env: DistEnv, *, device: torch.device, timeout_s: float = 1800.0) -> torch.device:
    """Join the process group of ``env`` (env:// rendezvous: MASTER_ADDR, MASTER_PORT) with the
    backend for ``device``; returns the device this rank computes on."""
    dev = device_for(env, device)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if not is_initialized():
        missing = [v for v in ("MASTER_ADDR", "MASTER_PORT") if v not in os.environ]
        if missing:
            raise UsageError(f"RANK/WORLD_SIZE are set but {', '.join(missing)} is not: cannot join the process group.",
                             "Start vqdoctor with torchrun, which sets all of them.")
        kwargs: dict[str, Any] = {"device_id": dev} if dev.type == "cuda" else {}
        dist.init_process_group(backend=backend_for(dev), rank=env.rank, world_size=env.world_size,
                                timeout=timedelta(seconds=timeout_s), **kwargs)
    return dev


def shutdown() -> None:
    if is_initialized():
        dist.destroy_process_group()


@contextmanager
def session(device: torch.device, *, environ: dict[str, str] | None = None) -> Iterator[tuple[DistEnv, torch.device] | None]:
    """Inside torchrun (WORLD_SIZE > 1): join the group, yield (env, this rank's device), leave
    the group at the end. Otherwise yield None and do nothing."""
    env = detect(environ)
    if env is None or env.world_size == 1:
        yield None
        return
    already = is_initialized()
    dev = init(env, device=device)
    try:
        yield env, dev
    finally:
        if not already:
            shutdown()


def _comm_device() -> torch.device:
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _digest(g: Gathered) -> bytes:
    h = hashlib.sha256()
    h.update(repr((sorted(g.stats), g.mode_names, g.mode_source)).encode())
    h.update(np.ascontiguousarray(g.sub_idx, dtype=np.int64).tobytes())
    if g.sub_modes is not None:
        h.update(g.sub_modes.detach().cpu().to(torch.int64).contiguous().numpy().tobytes())
    return h.digest()


def reduce_gathered(g: Gathered, *, group: ProcessGroup | None = None) -> Gathered:
    """Sum the statistics of ``g`` over the ranks (in place on its UsageStats; every rank gets
    the totals). Outside a process group returns ``g`` unchanged. Ranks that disagree on the
    codebooks, the subsample or the modes are refused (they ran on different data or options)."""
    if not is_initialized():
        return g
    dev = _comm_device()
    mine = torch.tensor(list(_digest(g)), dtype=torch.int64, device=dev)
    ref = mine.clone()
    dist.broadcast(ref, src=0, group=group)
    same = torch.tensor([int(torch.equal(mine, ref))], dtype=torch.int64, device=dev)
    dist.all_reduce(same, op=dist.ReduceOp.MIN, group=group)
    if int(same) != 1:
        raise UsageError(
            "The ranks of this torchrun job gathered different things (codebooks, subsample or modes differ "
            "from rank 0's).", "Give every rank the same checkpoint, data, labels and analysis options.")
    for name in sorted(g.stats):  # same order on every rank
        st = g.stats[name]
        st.to(dev)
        st.all_reduce(group)
    total = torch.tensor([g.vectors], dtype=torch.int64, device=dev)
    dist.all_reduce(total, op=dist.ReduceOp.SUM, group=group)
    parking = None
    if g.parking is not None:  # nearest vector of each code over all ranks: minimum distance, its mode
        parking = {}
        for name in sorted(g.parking):
            p = g.parking[name]
            best, mode = p.best.to(dev).clone(), p.mode.to(dev)
            dist.all_reduce(best, op=dist.ReduceOp.MIN, group=group)
            mine = torch.where(p.best.to(dev) == best, mode, torch.full_like(mode, -1))
            dist.all_reduce(mine, op=dist.ReduceOp.MAX, group=group)  # a tie across ranks: the larger mode id
            parking[name] = DeadCodeParking(best, mine)
    return replace(g, vectors=int(total), parking=parking)


# --------------------------------------------------------------------------------------------
# k-means


def all_reduce_sums(
    sums: torch.Tensor,  # (k, d) float64
    counts: torch.Tensor,  # (k,) int64
    inertia: float,
    *,
    group: ProcessGroup | None = None,
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Sum one Lloyd step's statistics over the ranks (identity outside a process group)."""
    if not is_initialized():
        return sums, counts, inertia
    dev = _comm_device()
    s, c = sums.to(dev), counts.to(dev)
    i = torch.tensor([inertia], dtype=torch.float64, device=dev)
    for t in (s, c, i):
        dist.all_reduce(t, op=dist.ReduceOp.SUM, group=group)
    return s.to(sums.device), c.to(counts.device), float(i)


def lloyd_step_sums_reduced(
    x: torch.Tensor,  # (n_local, d) this rank's rows (l2-normalised for cosine)
    centroids: torch.Tensor,  # (k, d), the same on every rank
    *,
    metric: str = "euclidean",
    budget_bytes: int = DEFAULT_BUDGET_BYTES,
    group: ProcessGroup | None = None,
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """:func:`lloyd_step_sums` over the rows of every rank: (sums (k, d) float64, counts (k,)
    int64, inertia)."""
    sums, counts, inertia = lloyd_step_sums(x, centroids, metric=metric, budget_bytes=budget_bytes)
    return all_reduce_sums(sums, counts, inertia, group=group)


def broadcast_tensor(t: torch.Tensor, *, src: int = 0, group: ProcessGroup | None = None) -> torch.Tensor:
    """Rank ``src``'s tensor on every rank (same shape and dtype everywhere); identity outside a group."""
    if not is_initialized():
        return t
    buf = t.to(_comm_device()).contiguous()
    dist.broadcast(buf, src=src, group=group)
    return buf.to(t.device)


def kmeans_distributed(
    x: torch.Tensor,  # (n_local, d) float32: this rank's rows
    init: torch.Tensor,  # (k, d) initial centroids (rank 0's are used)
    *,
    iters: int = 20,
    metric: str = "euclidean",
    tol: float = 1e-4,
    budget_bytes: int = DEFAULT_BUDGET_BYTES,
    group: ProcessGroup | None = None,
) -> KMeansResult:
    """Lloyd's k-means over the rows of every rank. Every iteration all-reduces the sums,
    counts and inertia; empty clusters take the globally worst-served rows (each rank offers its
    own worst, an all-gather picks the worst overall). Every rank returns the same centroids.
    Seed ``init`` with :func:`vqdoctor.core.kmeans.seed_kmeanspp` on rank 0's rows (or on a
    subsample every rank shares); outside a process group this is plain Lloyd from ``init``."""
    x = x.detach().to(torch.float32).contiguous()
    if metric == "cosine":
        x = torch.nn.functional.normalize(x, dim=1)
    centroids = broadcast_tensor(init.detach().to(device=x.device, dtype=torch.float32).contiguous(), group=group)
    if metric == "cosine":
        centroids = torch.nn.functional.normalize(centroids, dim=1)
    sums, counts, inertia = lloyd_step_sums_reduced(x, centroids, metric=metric, budget_bytes=budget_bytes, group=group)
    seeding_inertia = inertia
    done = 0
    for _ in range(iters):
        centroids = _update_reduced(sums, counts, centroids, x, metric=metric, budget_bytes=budget_bytes, group=group)
        sums, counts, new_inertia = lloyd_step_sums_reduced(x, centroids, metric=metric, budget_bytes=budget_bytes, group=group)
        done += 1
        converged = inertia > 0 and (inertia - new_inertia) <= tol * inertia
        inertia = new_inertia
        if converged or inertia == 0.0:
            break
    return KMeansResult(centroids=centroids, inertia=float(inertia), counts=counts, iters=done,
                        seeding_inertia=seeding_inertia)


def _update_reduced(sums: torch.Tensor, counts: torch.Tensor, old: torch.Tensor, x: torch.Tensor, *, metric: str,
                    budget_bytes: int, group: ProcessGroup | None) -> torch.Tensor:
    live = counts > 0
    centroids = old.clone()
    centroids[live] = (sums[live] / counts[live].unsqueeze(1).to(torch.float64)).to(old.dtype)
    if metric == "cosine":
        centroids = torch.nn.functional.normalize(centroids, dim=1)
    empty = (~live).nonzero().flatten()
    e = int(empty.numel())  # the same on every rank: counts are reduced
    if e == 0:
        return centroids
    _, dist_now = nearest_codes(x, old, metric=metric, budget_bytes=budget_bytes)
    take = min(e, x.shape[0])
    worst_d, worst_i = torch.topk(dist_now, take)
    cand = torch.zeros(e, x.shape[1], dtype=torch.float32, device=x.device)
    cand_d = torch.full((e,), -1.0, dtype=torch.float32, device=x.device)  # -1: no candidate
    cand[:take], cand_d[:take] = x[worst_i], worst_d.to(torch.float32)
    if is_initialized():
        dev = _comm_device()
        n = dist.get_world_size(group)
        all_c = [torch.empty_like(cand, device=dev) for _ in range(n)]
        all_d = [torch.empty_like(cand_d, device=dev) for _ in range(n)]
        dist.all_gather(all_c, cand.to(dev), group=group)
        dist.all_gather(all_d, cand_d.to(dev), group=group)
        cand, cand_d = torch.cat(all_c).to(x.device), torch.cat(all_d).to(x.device)
    order = torch.argsort(cand_d, descending=True, stable=True)[:e]
    ok = cand_d[order] >= 0
    centroids[empty[ok]] = cand[order[ok]]
    return centroids


__all__ = [
    "DistEnv", "all_reduce_sums", "backend_for", "broadcast_tensor", "detect", "device_for", "init", "is_initialized",
    "is_main", "kmeans_distributed", "lloyd_step_sums_reduced", "reduce_gathered", "session", "shutdown", "world",
]


def kmeans_across_ranks(
    x: torch.Tensor,  # (n_local, d): this rank's rows
    k: int,
    *,
    iters: int = 20,
    seed: int = 0,
    metric: str = "euclidean",
    budget_bytes: int = DEFAULT_BUDGET_BYTES,
) -> KMeansResult:
    """:func:`vqdoctor.core.kmeans.kmeans` over the rows of every rank: k-means++ seeding on rank
    0's rows (broadcast), then Lloyd steps whose sums, counts and inertia are all-reduced. Outside
    a process group it is plain :func:`~vqdoctor.core.kmeans.kmeans`."""
    if not is_initialized():
        return kmeans(x, k, iters=iters, seed=seed, metric=metric, budget_bytes=budget_bytes)
    rows = x.detach().to(torch.float32)
    if metric == "cosine":
        rows = torch.nn.functional.normalize(rows, dim=1)
    enough = torch.tensor([int(rows.shape[0] >= k)], dtype=torch.int64, device=_comm_device())
    dist.all_reduce(enough, op=dist.ReduceOp.MIN)
    if int(enough) != 1:
        raise UsageError(f"k-means with k={k} needs at least {k} vectors on every rank; rank {dist.get_rank()} "
                         f"has {rows.shape[0]}.", "Use fewer ranks or more data.")
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    init = seed_kmeanspp(rows, k, generator=gen, budget_bytes=budget_bytes) if is_main() else rows.new_zeros(k, rows.shape[1])
    return kmeans_distributed(rows, init, iters=iters, metric=metric, budget_bytes=budget_bytes)

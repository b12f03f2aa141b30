"""Run by test_distributed.py as one rank of a 2-process gloo job (env RANK, WORLD_SIZE, ...).

    python dist_worker.py kmeans OUT_DIR    # distributed Lloyd steps and k-means on this rank's rows
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from vqdoctor import distributed
from vqdoctor.core.kmeans import lloyd_step_sums


def rows() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.randn(1000, 8, generator=g) + 4.0 * torch.randint(0, 5, (1000, 1), generator=g)


def init_centroids(x: torch.Tensor) -> torch.Tensor:
    return x[:16].clone()


def kmeans(out: Path) -> None:
    with distributed.session(torch.device("cpu")) as job:
        assert job is not None
        env, _ = job
        x = rows()
        lo, hi = env.rank * len(x) // env.world_size, (env.rank + 1) * len(x) // env.world_size
        mine = x[lo:hi]
        c = init_centroids(x)
        sums, counts, inertia = distributed.lloyd_step_sums_reduced(mine, c)
        res = distributed.kmeans_distributed(mine, c if env.rank == 0 else torch.zeros_like(c), iters=10)
        torch.save({"sums": sums, "counts": counts, "inertia": inertia, "centroids": res.centroids,
                    "kcounts": res.counts, "kinertia": res.inertia, "iters": res.iters},
                   out / f"kmeans{env.rank}.pt")


def single(out: Path) -> None:
    x = rows()
    c = init_centroids(x)
    sums, counts, inertia = lloyd_step_sums(x, c)
    res = distributed.kmeans_distributed(x, c, iters=10)
    torch.save({"sums": sums, "counts": counts, "inertia": inertia, "centroids": res.centroids,
                "kcounts": res.counts, "kinertia": res.inertia, "iters": res.iters}, out / "kmeans_single.pt")


if __name__ == "__main__":
    {"kmeans": kmeans, "single": single}[sys.argv[1]](Path(sys.argv[2]))

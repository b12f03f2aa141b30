"""vqdoctor's k-means against faiss ``Kmeans`` and sklearn ``KMeans`` on the same data, same run.

N = 100k, d = 64, k in {256, 4096}, the same number of Lloyd iterations for all (tolerance off),
all points used for training (faiss' subsampling off). Time = wall-clock of the fit (seeding
included). Inertia = recomputed for each result's centroids with one exact assignment
(``vqdoctor.core.assign.nearest_codes``), so all three are measured the same way. Then the time of
vqdoctor's k-means++ seeding alone at k = 65,536.

    OPENBLAS_CORETYPE=SkylakeX python benchmarks/kmeans.py [--quick]
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OPENBLAS_CORETYPE", "SkylakeX")  # before faiss loads its BLAS

import numpy as np  # noqa: E402
import torch  # noqa: E402

from vqdoctor.core.assign import nearest_codes  # noqa: E402
from vqdoctor.core.kmeans import kmeans, seed_kmeanspp  # noqa: E402


def inertia(x: torch.Tensor, c: np.ndarray | torch.Tensor) -> float:
    c = torch.as_tensor(np.asarray(c, dtype=np.float32)) if not isinstance(c, torch.Tensor) else c
    return float(nearest_codes(x, c)[1].double().sum())


def data(n: int, d: int, seed: int = 0) -> torch.Tensor:
    """A Gaussian mixture (1,000 components of varying spread) - clustered like encoder outputs."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(1000, d, generator=g) * 2
    lab = torch.randint(1000, (n,), generator=g)
    scale = 0.5 + torch.rand(1000, generator=g)
    return (centres[lab] + torch.randn(n, d, generator=g) * scale[lab, None]).contiguous()


def run(n: int, d: int, ks: list[int], iters: int, seed_k: int | None) -> list[tuple[str, ...]]:
    x = data(n, d)
    xn = x.numpy()
    rows: list[tuple[str, ...]] = []
    threads = torch.get_num_threads()
    for k in ks:
        t = time.perf_counter()
        r = kmeans(x, k, iters=iters, tol=0.0, seed=0)
        t_ours = time.perf_counter() - t
        rows.append((f"{k}", "vqdoctor", f"{t_ours:.2f}", f"{inertia(x, r.centroids):.6g}"))
        try:
            import faiss

            faiss.omp_set_num_threads(threads)
            km = faiss.Kmeans(d, k, niter=iters, seed=1234, max_points_per_centroid=n, verbose=False)
            t = time.perf_counter()
            km.train(xn)
            t_f = time.perf_counter() - t
            rows.append((f"{k}", "faiss", f"{t_f:.2f}", f"{inertia(x, km.centroids):.6g}"))
        except ImportError:
            rows.append((f"{k}", "faiss", "n/a", "not installed"))
        from sklearn.cluster import KMeans

        t = time.perf_counter()
        sk = KMeans(k, n_init=1, max_iter=iters, tol=0.0, algorithm="lloyd", random_state=0).fit(xn)
        t_s = time.perf_counter() - t
        rows.append((f"{k}", "sklearn", f"{t_s:.2f}", f"{inertia(x, sk.cluster_centers_):.6g}"))
    if seed_k is not None:
        t = time.perf_counter()
        seed_kmeanspp(x, seed_k, generator=torch.Generator().manual_seed(0))
        rows.append((f"{seed_k}", "vqdoctor seeding only", f"{time.perf_counter() - t:.2f}", "-"))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="N=20k, k in {64, 512}, 5 iterations, seeding k=8192")
    ap.add_argument("--iters", type=int, default=None)
    args = ap.parse_args()
    if args.quick:
        n, ks, iters, seed_k = 20_000, [64, 512], 5, 8192
    else:
        n, ks, iters, seed_k = 100_000, [256, 4096], 20, 65_536
    iters = args.iters or iters
    print(f"N={n} d=64 iters={iters} threads={torch.get_num_threads()} torch={torch.__version__}")
    print(f"{'k':>6} | {'method':<22} | {'time s':>8} | {'inertia':>12}")
    for row in run(n, 64, ks, iters, seed_k):
        print(f"{row[0]:>6} | {row[1]:<22} | {row[2]:>8} | {row[3]:>12}")


if __name__ == "__main__":
    main()

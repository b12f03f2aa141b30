"""vqdoctor's Lloyd k-means against faiss ``Kmeans``: same data, same start, interleaved.

N = 100k, d = 64, k in {256, 4096, 65536}. Both start from the same centroids (vqdoctor's
k-means++ seeding, given to faiss as ``init_centroids``), run the same number of Lloyd iterations
with the tolerance off and all points used (faiss' subsampling off). The two are run back to back,
``--reps`` rounds (vqdoctor, faiss, vqdoctor, faiss, ...), and the best time of each is kept: the
machine is shared, so interleaving keeps both under the same load. Time = the Lloyd iterations
(seeding excluded for both: it is the shared start). Inertia = recomputed for each result's
centroids with one exact assignment (``vqdoctor.core.assign.nearest_codes``), so both are
measured the same way; "ratio" = faiss time / vqdoctor time (> 1: vqdoctor faster).

faiss is a benchmark-only dependency: ``pip install -c constraints.txt faiss-cpu``.

    OPENBLAS_CORETYPE=SkylakeX PYTHONPATH=. python benchmarks/kmeans.py [--quick | --per-core] [--ks 256,4096]
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OPENBLAS_CORETYPE", "SkylakeX")  # before faiss loads its BLAS

import numpy as np  # noqa: E402
import torch  # noqa: E402

from vqdoctor.core.assign import nearest_codes  # noqa: E402
from vqdoctor.core.kmeans import _lloyd, seed_kmeanspp  # noqa: E402


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


def run(n: int, d: int, ks: list[int], iters: dict[int, int], reps: int, per_core: bool = False) -> list[tuple[str, ...]]:
    import faiss

    x = data(n, d)
    xn = x.numpy()
    if per_core:
        torch.set_num_threads(1)
    threads = torch.get_num_threads()
    faiss.omp_set_num_threads(threads)
    clock = time.thread_time if per_core else time.perf_counter  # per core: this thread's CPU time
    rows = []
    for k in ks:
        init = seed_kmeanspp(x, k, generator=torch.Generator().manual_seed(0))
        it = iters[k]
        ours, theirs = [], []
        c_ours = c_faiss = None
        for _ in range(reps):
            t = clock()
            res = _lloyd(x, init.clone(), iters=it, tol=0.0, metric="euclidean", budget_bytes=256 << 20)
            ours.append(clock() - t)
            c_ours = res.centroids
            km = faiss.Kmeans(d, k, niter=it, seed=1234, max_points_per_centroid=n, verbose=False)
            t = clock()
            km.train(xn, init_centroids=init.numpy())
            theirs.append(clock() - t)
            c_faiss = km.centroids
        i_ours, i_faiss = inertia(x, c_ours), inertia(x, c_faiss)
        rows.append((f"{k:,}", str(it), f"{min(ours):.2f}", f"{min(theirs):.2f}", f"{min(theirs) / min(ours):.2f}",
                     f"{i_ours:.6g}", f"{i_faiss:.6g}", f"{(i_ours / i_faiss - 1) * 100:+.2f}%",
                     " ".join(f"{t:.2f}" for t in ours), " ".join(f"{t:.2f}" for t in theirs)))
        print(" | ".join(rows[-1]), flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="N=20k, k in {64, 512}, 5 iterations")
    ap.add_argument("--ks", default=None, help="comma-separated k values (default 256,4096,65536)")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--per-core", action="store_true",
                    help="one thread each, timed by the thread's CPU time (robust to a busy machine); N=50k, k in {256, 4096}, 10 iterations")
    args = ap.parse_args()
    if args.per_core:
        n, ks, iters = 50_000, [256, 4096], {256: 10, 4096: 10}
        torch.set_num_threads(1)
    elif args.quick:
        n, ks, iters = 20_000, [64, 512], {64: 5, 512: 5}
    else:
        n = 100_000
        ks = [256, 4096, 65_536]
        iters = {256: 20, 4096: 20, 65_536: 5}  # 5 at k = 65,536: one fit is minutes on 2 cores
    if args.ks:
        ks = [int(k) for k in args.ks.split(",")]
        iters = {k: iters.get(k, 20) for k in ks}
    print(f"N={n} d=64 threads={torch.get_num_threads()} torch={torch.__version__} reps={args.reps} "
          f"load={os.getloadavg()[0]:.1f}")
    print("k | iters | vqdoctor s (best) | faiss s (best) | faiss/vqdoctor | inertia vqdoctor | inertia faiss | "
          "difference | vqdoctor runs | faiss runs")
    run(n, 64, ks, iters, args.reps, per_core=args.per_core)
    print(f"load after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()

"""Where the time of one search block goes, and which block size suits a codebook size (CPU).

    python benchmarks/assign_blocks.py

1. Per 512 x 1024 block at d = 64, one thread: the oneDNN GEMM (bias fused), vqdoctor's
   hierarchical arg-min, torch's ``min(dim=1)`` with indices and a vertical ``min(dim=0)`` on the
   transposed block: why the arg-min, not the GEMM, limits the search at d = 64.
2. ``nearest_codes`` GFLOP/s for K = 256 ... 16,384 (d = 64, both threads) with
   the CPU block capped at 1, 2 and 4 MiB, three runs each (best shown): the measurement behind
   ``CPU_SMALL_K_BLOCK_BYTES`` in ``vqdoctor/core/assign.py``.
"""

from __future__ import annotations

import time

import torch

import vqdoctor.core.assign as assign


def per_call_us(fn, n: int = 200) -> float:
    fn()
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - start) / n * 1e6


def block_parts() -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        r, k, d = 512, 1024, 64
        x, c = torch.randn(r, d), torch.randn(k, d)
        prep = assign.prepare_codes(c)
        w, b = prep.weight, prep.bias
        linear = assign._linear
        blk = linear(x, w, b, "none", [], "") if linear is not None else torch.addmm(b, x, w.T)
        blk_t = blk.T.contiguous()
        rows = [
            ("GEMM (oneDNN, bias fused)", per_call_us(lambda: linear(x, w, b, "none", [], "")) if linear else float("nan")),
            ("hierarchical arg-min (vqdoctor)", per_call_us(lambda: assign._block_argmin(blk, prep.group))),
            ("torch min(dim=1) with indices", per_call_us(lambda: blk.min(1))),
            ("torch min(dim=0) on the transposed block", per_call_us(lambda: blk_t.min(0))),
            ("torch amin(dim=1), values only", per_call_us(lambda: blk.amin(1))),
        ]
        print(f"One {r} x {k} block, d = {d}, one thread (microseconds):\n")
        print("| step | µs |\n|---|---:|")
        for name, us in rows:
            print(f"| {name} | {us:.0f} |")
    finally:
        torch.set_num_threads(threads)


def block_sizes() -> None:
    d = 64
    print("\nnearest_codes GFLOP/s by CPU block cap (both threads, best of 3):\n")
    print("| K | N | 1 MiB | 2 MiB | 4 MiB |\n|---:|---:|---:|---:|---:|")
    saved_small, saved_large = assign.CPU_SMALL_K_BLOCK_BYTES, assign.CPU_BLOCK_BYTES
    try:
        for k in (256, 1024, 2048, 4096, 16384):
            n = 400_000 if k <= 256 else 200_000
            x, c = torch.randn(n, d), torch.randn(k, d)
            prep = assign.prepare_codes(c)
            best = {}
            for _ in range(3):
                for cap in (1 << 20, 2 << 20, 4 << 20):
                    assign.CPU_SMALL_K_BLOCK_BYTES = assign.CPU_BLOCK_BYTES = cap
                    start = time.perf_counter()
                    assign.nearest_codes(x, prep)
                    gflops = 2 * n * k * d / (time.perf_counter() - start) / 1e9
                    best[cap] = max(best.get(cap, 0.0), gflops)
            print(f"| {k:,} | {n:,} | " + " | ".join(f"{best[c]:.0f}" for c in (1 << 20, 2 << 20, 4 << 20)) + " |")
    finally:
        assign.CPU_SMALL_K_BLOCK_BYTES, assign.CPU_BLOCK_BYTES = saved_small, saved_large


if __name__ == "__main__":
    torch.manual_seed(0)
    block_parts()
    block_sizes()

"""Nearest-code search: vqdoctor vs faiss IndexFlatL2 vs torch.cdist().argmin() vs sklearn.

    python benchmarks/assign.py            # the three shapes of the engine issue
    python benchmarks/assign.py --quick    # small shapes, a few seconds

Every (shape, method) runs in its own subprocess on the same seeded data, so its peak RSS is
its own. Reported per method: seconds (best of --repeat), GFLOP/s counting 2*N*K*d flops, that
speed as a fraction of this machine's fp32 GEMM speed measured in the same run (a square
2048^3 torch.mm: the peak; and the bare (rows, d) x (d, K) torch.mm the search is made of,
without any reduction), the subprocess's peak RSS and its growth over the input data, and the
agreement of the chosen indices with faiss (disagreements are re-checked in float64: "vq
closer" counts rows where vqdoctor's pick is at least as close as faiss's).

faiss-cpu is a benchmark-only dependency (``pip install -c constraints.txt faiss-cpu``); its
OpenBLAS is told ``OPENBLAS_CORETYPE=SkylakeX`` so it uses its AVX-512 kernels on this CPU.
Peak memory is /proc's VmHWM of the subprocess; psutil (if installed) gives the RSS after
the data is made, to show the growth.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# faiss's OpenBLAS reads this when it loads: set it before anything imports numpy or faiss
os.environ.setdefault("OPENBLAS_CORETYPE", "SkylakeX")

FULL_SHAPES = [(200_000, 1024, 64), (200_000, 16384, 64), (100_000, 65536, 128)]
QUICK_SHAPES = [(50_000, 1024, 64), (20_000, 16384, 64), (10_000, 65536, 128)]
METHODS = ("vqdoctor", "faiss", "cdist", "sklearn")
ROOT = Path(__file__).resolve().parents[1]


def _rss_bytes() -> int:
    try:
        import psutil

        return int(psutil.Process().memory_info().rss)
    except ImportError:
        return 0


def _peak_rss_bytes() -> int:
    """This process's peak resident memory. /proc's VmHWM starts afresh at exec; getrusage's
    ru_maxrss does not (it keeps the parent's size at fork), so it is only the fall-back."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024  # KiB on Linux


def _data(n: int, k: int, d: int):
    import numpy as np

    rng = np.random.default_rng(n * 31 + k * 7 + d)
    x = rng.standard_normal((n, d), dtype=np.float32)
    codes = rng.standard_normal((k, d), dtype=np.float32)
    return x, codes


def _best(fn, repeat: int) -> tuple[float, float, object]:
    """(best wall seconds, CPU seconds of that run, last output)."""
    best, cpu, out = float("inf"), float("inf"), None
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        wall, used = time.perf_counter() - t0, time.process_time() - c0
        if wall < best:
            best, cpu = wall, used
    return best, cpu, out


def run_one(method: str, n: int, k: int, d: int, repeat: int, out_path: str) -> dict:
    """Runs in a subprocess: one method on one shape."""
    import numpy as np

    x, codes = _data(n, k, d)
    result: dict = {"method": method}
    if method == "vqdoctor":
        import torch

        sys.path.insert(0, str(ROOT))
        from vqdoctor.core.assign import nearest_codes, prepare_codes

        xt, ct = torch.from_numpy(x), torch.from_numpy(codes)

        def fn():
            return nearest_codes(xt, prepare_codes(ct))[0].numpy()

    elif method == "faiss":
        import faiss

        def fn():
            index = faiss.IndexFlatL2(d)
            index.add(codes)
            return index.search(x, 1)[1][:, 0].astype(np.int64)

        result["threads"] = faiss.omp_get_max_threads()
    elif method == "cdist":
        import torch

        xt, ct = torch.from_numpy(x), torch.from_numpy(codes)

        def fn():
            return torch.cdist(xt, ct).argmin(1).numpy()

    elif method == "sklearn":
        from sklearn.metrics import pairwise_distances_argmin

        def fn():
            return pairwise_distances_argmin(x, codes).astype(np.int64)

    else:
        raise SystemExit(f"unknown method {method}")
    base_rss = _rss_bytes()  # data made and libraries imported: growth is the method's own
    seconds, cpu, idx = _best(fn, repeat)
    np.save(out_path, idx)
    result.update(
        seconds=seconds,
        cpu_seconds=cpu,
        peak_rss=_peak_rss_bytes(),
        extra_rss=max(0, _peak_rss_bytes() - base_rss) if base_rss else None,
    )
    return result


def gemm_speeds(d: int, k: int) -> dict:
    """This machine's fp32 GEMM GFLOP/s now, the better of torch.mm (MKL) and oneDNN's linear
    (what torch ships; on AMD CPUs MKL takes its AVX2 path and oneDNN its AVX-512 one):
    "peak" for a square 2048^3 product, "shape" for the search's own (8192, d) x (d, K')."""
    import torch

    lin = getattr(getattr(torch.ops, "mkldnn", None), "_linear_pointwise", None)

    def rate(m: int, kk: int, nn: int) -> tuple[float, str]:
        a, b = torch.randn(m, kk), torch.randn(nn, kk)
        out = torch.empty(m, nn)
        cands = {"torch.mm": lambda: torch.mm(a, b.T, out=out)}
        if lin is not None:
            cands["oneDNN"] = lambda: lin(a, b, None, "none", [], "")
        best = {}
        for name, fn in cands.items():
            fn()
            best[name] = 2 * m * kk * nn / min(_timed(fn) for _ in range(5)) / 1e9
        name = max(best, key=best.get)
        return best[name], name

    peak, peak_by = rate(2048, 2048, 2048)
    shape, shape_by = rate(8192, d, min(k, 4096))
    return {"peak": peak, "peak_by": peak_by, "shape": shape, "shape_by": shape_by}


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _available_bytes() -> int:
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))


def _agreement(n: int, k: int, d: int, idx, ref) -> tuple[float, int, int, float]:
    import numpy as np

    diff = np.nonzero(idx != ref)[0]
    if diff.size == 0:
        return 1.0, 0, 0, 0.0
    x, codes = _data(n, k, d)
    xd = x[diff].astype(np.float64)
    da = ((xd - codes[idx[diff]].astype(np.float64)) ** 2).sum(1)
    db = ((xd - codes[ref[diff]].astype(np.float64)) ** 2).sum(1)
    gap = float(np.max(np.abs(da - db) / np.maximum(np.minimum(da, db), 1e-30)))
    return 1.0 - diff.size / n, int(diff.size), int((da <= db).sum()), gap


def per_core(shapes: list[tuple[int, int, int]], rows: int) -> list[dict]:
    """One core, timed by this thread's CPU time (time.thread_time), which a busy neighbour on
    a shared machine barely disturbs: vqdoctor and faiss each single-threaded on the first
    ``rows`` rows of each shape, against single-threaded square GEMMs (torch.mm and oneDNN)."""
    import faiss
    import torch
    from threadpoolctl import threadpool_limits

    sys.path.insert(0, str(ROOT))
    from vqdoctor.core.assign import nearest_codes, prepare_codes

    torch.set_num_threads(1)
    faiss.omp_set_num_threads(1)
    lin = getattr(getattr(torch.ops, "mkldnn", None), "_linear_pointwise", None)

    def cpu_best(fn, repeat: int = 3) -> float:
        fn()
        best = float("inf")
        for _ in range(repeat):
            t0 = time.thread_time()
            fn()
            best = min(best, time.thread_time() - t0)
        return best

    a = torch.randn(1024, 1024)
    out = []
    with threadpool_limits(1):
        for n, k, d in shapes:
            n = min(n, rows)
            x, codes = _data(n, k, d)
            xt, ct = torch.from_numpy(x), torch.from_numpy(codes)
            mm = 2 * 1024**3 / cpu_best(lambda: torch.mm(a, a)) / 1e9
            dnn = 2 * 1024**3 / cpu_best(lambda: lin(a, a, None, "none", [], "")) / 1e9 if lin else 0.0
            flops = 2.0 * n * k * d
            vq = flops / cpu_best(lambda: nearest_codes(xt, prepare_codes(ct))) / 1e9

            def fa():
                index = faiss.IndexFlatL2(d)
                index.add(codes)
                return index.search(x, 1)

            fs = flops / cpu_best(fa) / 1e9
            row = {"N": n, "K": k, "d": d, "mm": mm, "onednn": dnn, "vq": vq, "faiss": fs}
            print(
                f"per core N={n} K={k} d={d}: vqdoctor {vq:.0f}, faiss {fs:.0f}, torch.mm {mm:.0f}, "
                f"oneDNN {dnn:.0f} GFLOP/s",
                flush=True,
            )
            out.append(row)
    return out


def per_core_table(rows: list[dict]) -> str:
    out = [
        "| N | K | d | vqdoctor GFLOP/s | faiss GFLOP/s | vq ÷ faiss | square torch.mm (MKL) | square oneDNN | vq ÷ torch.mm | vq ÷ oneDNN |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        out.append(
            f"| {r['N']:,} | {r['K']:,} | {r['d']} | {r['vq']:.0f} | {r['faiss']:.0f} | "
            f"{r['vq'] / r['faiss']:.2f} | {r['mm']:.0f} | {r['onednn']:.0f} | "
            f"{r['vq'] / r['mm']:.2f} | {r['vq'] / r['onednn']:.2f} |"
        )
    return "\n".join(out)


def interleaved(n: int, k: int, d: int, rounds: int = 4) -> None:
    """Both cores, wall clock, in one process: oneDNN square GEMM, vqdoctor and faiss run back
    to back, ``rounds`` times, so each round's three numbers share the machine's load."""
    import faiss
    import torch

    sys.path.insert(0, str(ROOT))
    from vqdoctor.core.assign import nearest_codes, prepare_codes

    x, codes = _data(n, k, d)
    xt, ct = torch.from_numpy(x), torch.from_numpy(codes)
    lin = getattr(getattr(torch.ops, "mkldnn", None), "_linear_pointwise", None)
    a = torch.randn(2048, 2048)

    def gemm():
        return lin(a, a, None, "none", [], "") if lin else torch.mm(a, a)

    def vq():
        return nearest_codes(xt, prepare_codes(ct))

    def fa():
        index = faiss.IndexFlatL2(d)
        index.add(codes)
        return index.search(x, 1)

    flops = 2.0 * n * k * d
    for _ in range(rounds):
        cols = []
        for name, fn, fl in (("GEMM", gemm, 2.0 * 2048**3), ("vqdoctor", vq, flops), ("faiss", fa, flops)):
            fn()
            cols.append(f"{name} {fl / _timed(fn) / 1e9:.0f}")
        print(f"N={n} K={k} d={d} GFLOP/s: " + " | ".join(cols), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small shapes")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--repeat", type=int, default=0, help="runs per method (default: by size)")
    ap.add_argument("--json", type=Path, help="also write the results here")
    ap.add_argument(
        "--per-core",
        type=int,
        metavar="ROWS",
        help="instead: one core, CPU-time based, on the first ROWS rows of each shape",
    )
    ap.add_argument(
        "--interleaved",
        nargs=3,
        type=int,
        metavar=("N", "K", "D"),
        help="instead: GEMM, vqdoctor and faiss back to back, 4 rounds, on one shape",
    )
    ap.add_argument("--one", nargs=6, help=argparse.SUPPRESS)  # method n k d repeat out.npy
    args = ap.parse_args()
    if args.one:
        m, n, k, d, r, out = args.one
        print(json.dumps(run_one(m, int(n), int(k), int(d), int(r), out)))
        return

    if args.interleaved:
        interleaved(*args.interleaved)
        return

    import numpy as np

    shapes = QUICK_SHAPES if args.quick else FULL_SHAPES
    if args.per_core:
        rows = per_core(shapes, args.per_core)
        if args.json:
            args.json.write_text(json.dumps(rows, indent=2))
        print()
        print(per_core_table(rows))
        return
    methods = [m for m in args.methods.split(",") if m]
    env = dict(os.environ)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n, k, d in shapes:
            flops = 2.0 * n * k * d
            repeat = args.repeat or (5 if flops < 2e10 else 3 if flops < 2e11 else 1)
            gemm = gemm_speeds(d, k)
            indices = {}
            for method in methods:
                row = {"N": n, "K": k, "d": d, "method": method}
                if method == "cdist" and 3 * n * k * 4 > _available_bytes() // 2:
                    row["skipped"] = f"N x K matrix of {n * k * 4 / 2**30:.1f} GiB would not fit"
                    rows.append(row)
                    print(_line(row), flush=True)
                    continue
                out = os.path.join(tmp, f"{method}.npy")
                cmd = [sys.executable, __file__, "--one", method, str(n), str(k), str(d), str(repeat), out]
                proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
                if proc.returncode != 0:
                    row["skipped"] = (proc.stderr.strip().splitlines() or ["failed"])[-1][:120]
                    rows.append(row)
                    print(_line(row), flush=True)
                    continue
                res = json.loads(proc.stdout.strip().splitlines()[-1])
                indices[method] = np.load(out)
                gf = flops / res["seconds"] / 1e9
                row.update(
                    seconds=res["seconds"],
                    cpu_seconds=res["cpu_seconds"],
                    load=os.getloadavg()[0],
                    gflops=gf,
                    frac_peak=gf / gemm["peak"],
                    frac_mm=gf / gemm["shape"],
                    gemm_peak=gemm["peak"],
                    gemm_shape=gemm["shape"],
                    gemm_by=f"{gemm['peak_by']}/{gemm['shape_by']}",
                    peak_rss_mib=res["peak_rss"] / 2**20,
                    extra_rss_mib=None if res["extra_rss"] is None else res["extra_rss"] / 2**20,
                    repeat=repeat,
                )
                rows.append(row)
            ref = indices.get("faiss")
            for row in rows:
                if (row["N"], row["K"], row["d"]) != (n, k, d) or "skipped" in row:
                    continue
                if ref is not None and row["method"] in indices:
                    agree, ndiff, closer, gap = _agreement(n, k, d, indices[row["method"]], ref)
                    row.update(agree=agree, disagree=ndiff, vq_closer=closer, rel_gap=gap)
                print(_line(row), flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    print()
    print(markdown_table(rows))


def _line(row: dict) -> str:
    head = f"N={row['N']:>7} K={row['K']:>6} d={row['d']:>4} {row['method']:>9}"
    if "skipped" in row:
        return f"{head}  skipped: {row['skipped']}"
    agree = f" agree={row['agree']:.5f} ({row['disagree']} differ)" if "agree" in row else ""
    return (
        f"{head}  {row['seconds']:8.3f}s (cpu {row['cpu_seconds']:.2f}s, load {row['load']:.1f}) "
        f"{row['gflops']:7.1f} GFLOP/s "
        f"{row['frac_peak']:.2f} of peak GEMM {row['gemm_peak']:.0f}, {row['frac_mm']:.2f} of bare mm "
        f"{row['gemm_shape']:.0f}; peak RSS {row['peak_rss_mib']:.0f} MiB{agree}"
    )


def markdown_table(rows: list[dict]) -> str:
    out = [
        "| N | K | d | method | seconds (CPU s) | GFLOP/s | ÷ peak GEMM (GFLOP/s) | ÷ bare mm (GFLOP/s) | peak RSS MiB (+ growth) | agreement with faiss | load |",
        "|---:|---:|---:|---|---:|---:|---:|---:|---:|---|---:|",
    ]
    for r in rows:
        if "skipped" in r:
            out.append(f"| {r['N']:,} | {r['K']:,} | {r['d']} | {r['method']} | skipped: {r['skipped']} | | | | | | |")
            continue
        extra = "" if r.get("extra_rss_mib") is None else f" (+{r['extra_rss_mib']:.0f})"
        agree = ""
        if "agree" in r:
            agree = f"{r['agree'] * 100:.4f}%"
            if r["disagree"]:
                agree += (
                    f" ({r['disagree']} rows differ, float32 near-ties: relative distance gap "
                    f"≤ {r['rel_gap']:.1e}; at least as close as faiss on {r['vq_closer']})"
                )
        out.append(
            f"| {r['N']:,} | {r['K']:,} | {r['d']} | {r['method']} | {r['seconds']:.3f} ({r['cpu_seconds']:.2f}) | "
            f"{r['gflops']:.0f} | {r['frac_peak']:.2f} ({r['gemm_peak']:.0f}) | "
            f"{r['frac_mm']:.2f} ({r['gemm_shape']:.0f}) | {r['peak_rss_mib']:.0f}{extra} | {agree} | {r['load']:.1f} |"
        )
    return "\n".join(out)


if __name__ == "__main__":
    main()

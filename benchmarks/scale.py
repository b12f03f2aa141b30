"""How `vqdoctor inspect` scales: time against N (latents) and K (codes), and peak memory.

    python benchmarks/scale.py                 # N = 1e4 .. 1e7 at K = 1024; K = 2^10 .. 2^18 at N = 1e5 (d = 64)
    python benchmarks/scale.py --quick         # N up to 1e6, K up to 2^16: a minute or so
    python benchmarks/scale.py --write-readme  # also rewrite the "Scale" section of benchmarks/README.md
                                               # and benchmarks/scale.png

Every point is one full ``vqdoctor.api.inspect`` (default analysis: mode inference on the
subsample, geometry, tokens / embeddings collapse, PCA picture) in its own subprocess, on latents
generated on the fly into a memory-mapped ``.npy`` in a temporary folder (Gaussian blobs, float32)
and a checkpoint with a plain ``quantize.embedding.weight`` (K, d) codebook. Reported per point:

- ``seconds``: wall time of ``inspect`` (the checkpoint loaded, the data streamed, the report
  built); ``assign GFLOP/s``: 2*N*K*d over that whole time (a lower bound on the search's speed)
  and its ratio to this machine's fp32 GEMM speed (a square 2048^3 ``torch.mm`` measured in the
  same run);
- ``read s``: one pass over the same file doing nothing but read the batches: what a prefetch
  thread could hide at most;
- ``peak anon MB``: the high-water mark of the subprocess's anonymous resident memory (RssAnon of
  /proc/self/status sampled every 5 ms): heap and tensors, without the file pages of the
  memory-mapped data, which the kernel can drop at will. This is what the chunk budget
  (``--memory-budget-mb``, 256 MiB per distance block) bounds, whatever N; ``VmHWM MB`` is
  the kernel's peak RSS including those file pages, shown for completeness.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
D = 64
K_FOR_N = 1024
N_FOR_K = 100_000
FULL_N = [10_000, 100_000, 1_000_000, 10_000_000]
FULL_K = [1 << 10, 1 << 12, 1 << 14, 1 << 16, 1 << 18]
QUICK_N = [10_000, 100_000, 1_000_000]
QUICK_K = [1 << 10, 1 << 12, 1 << 14, 1 << 16]
SECTION = "## Scale"


# --------------------------------------------------------------------------------------------
# data


def make_latents(path: Path, n: int, d: int, *, seed: int = 0, blobs: int = 16) -> Path:
    """(n, d) float32 Gaussian blobs, written in chunks into a memory-mapped .npy, and the blob
    of each row (n,) int64 beside it (``<stem>_labels.npy``)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=2.0, size=(blobs, d)).astype(np.float32)
    arr = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, d))
    labels = np.lib.format.open_memmap(labels_of(path), mode="w+", dtype=np.int64, shape=(n,))
    step = 1 << 18
    for s in range(0, n, step):
        e = min(n, s + step)
        y = rng.integers(0, blobs, size=e - s)
        arr[s:e] = centres[y] + rng.standard_normal((e - s, d), dtype=np.float32)
        labels[s:e] = y
    arr.flush()
    labels.flush()
    del arr, labels
    return path


def labels_of(latents: Path) -> Path:
    return latents.with_name(latents.stem + "_labels.npy")


def make_checkpoint(path: Path, k: int, d: int, *, seed: int = 1) -> Path:
    import torch
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(seed)
    save_file({"quantize.embedding.weight": 1.5 * torch.randn(k, d, generator=g)}, str(path))
    return path


# --------------------------------------------------------------------------------------------
# one point, in a subprocess


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def child(ckpt: Path, latents: Path) -> dict:
    import torch

    sys.path.insert(0, str(ROOT))
    from vqdoctor import api
    from vqdoctor.io.data import open_latents
    from vqdoctor.options import AnalysisOptions, DataOptions

    peak = {"anon": _status_kb("RssAnon")}
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak["anon"] = max(peak["anon"], _status_kb("RssAnon"))
            time.sleep(0.005)

    base = _status_kb("RssAnon")
    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    t0 = time.perf_counter()
    data = DataOptions(latents=latents, labels=labels_of(latents), device="cpu")
    report = api.inspect(ckpt, data=data, analysis=AnalysisOptions())
    seconds = time.perf_counter() - t0
    stop.set()
    thread.join()
    t0 = time.perf_counter()
    for _ in open_latents(latents).batches(8192):
        pass
    read = time.perf_counter() - t0
    usage = report.codebooks[0].usage
    return {"seconds": seconds, "read_seconds": read, "peak_anon_mb": peak["anon"] / 1024,
            "base_anon_mb": base / 1024, "vmhwm_mb": _status_kb("VmHWM") / 1024,
            "utilization": usage.utilization if usage else None, "threads": torch.get_num_threads()}


def run_point(tmp: Path, latents: Path, n: int, k: int, d: int, timeout: float) -> dict:
    ckpt = tmp / f"ckpt_k{k}.safetensors"
    if not ckpt.exists():
        make_checkpoint(ckpt, k, d)
    cmd = [sys.executable, __file__, "--child", str(ckpt), str(latents)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    if out.returncode != 0:
        raise SystemExit(f"point N={n} K={k} failed:\n{out.stderr[-3000:]}")
    res = json.loads(out.stdout.strip().splitlines()[-1])
    res.update(n=n, k=k, d=d)
    return res


def gemm_gflops() -> float:
    import torch

    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t0)
    return 2 * 2048**3 / best / 1e9


# --------------------------------------------------------------------------------------------
# output


def table(rows: list[dict], gemm: float) -> str:
    lines = ["| sweep | N | K | d | inspect s | vectors/s | assign GFLOP/s | / GEMM | read s | peak anon MB | VmHWM MB |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        gf = 2 * r["n"] * r["k"] * r["d"] / r["seconds"] / 1e9
        lines.append(
            f"| {r['sweep']} | {r['n']:,} | {r['k']:,} | {r['d']} | {r['seconds']:.2f} | {r['n'] / r['seconds']:,.0f} | "
            f"{gf:.1f} | {gf / gemm:.2f} | {r['read_seconds']:.2f} | {r['peak_anon_mb']:.0f} | {r['vmhwm_mb']:.0f} |")
    return "\n".join(lines)


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    by_n = [r for r in rows if r["sweep"] == "N"]
    by_k = [r for r in rows if r["sweep"] == "K"]
    ax = axes[0]
    ax.loglog([r["n"] for r in by_n], [r["seconds"] for r in by_n], "o-", label="inspect")
    ax.loglog([r["n"] for r in by_n], [r["read_seconds"] for r in by_n], "s--", label="read only")
    ax.set(xlabel="N latents", ylabel="seconds", title=f"time vs N (K={K_FOR_N}, d={D})")
    ax.legend()
    ax = axes[1]
    ax.loglog([r["k"] for r in by_k], [r["seconds"] for r in by_k], "o-", base=2)
    ax.set(xlabel="K codes", ylabel="seconds", title=f"time vs K (N={N_FOR_K:,}, d={D})")
    ax = axes[2]
    ax.semilogx([r["n"] for r in by_n], [r["peak_anon_mb"] for r in by_n], "o-", label="peak anon RSS")
    ax.semilogx([r["n"] for r in by_n], [r["n"] * D * 4 / 2**20 for r in by_n], ":", label="size of the latents")
    ax.set(xlabel="N latents", ylabel="MB", title="peak memory vs N", ylim=(0, None))
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_section(readme: Path, body: str) -> None:
    """Replace the "## Scale" section of the README (or append it); other sections stay."""
    text = readme.read_text() if readme.exists() else "# Benchmarks\n"
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if line.strip() == SECTION), None)
    if start is None:
        new = text.rstrip("\n") + "\n\n" + body.rstrip("\n") + "\n"
    else:
        end = next((j for j in range(start + 1, len(lines)) if lines[j].startswith("## ")), len(lines))
        new = "\n".join(lines[:start] + body.rstrip("\n").splitlines() + ([""] + lines[end:] if end < len(lines) else [])) + "\n"
    readme.write_text(new)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="N up to 1e6 and K up to 2^16")
    ap.add_argument("--write-readme", action="store_true", help="rewrite the Scale section of benchmarks/README.md and scale.png")
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds per point")
    ap.add_argument("--rows-out", type=Path, help="also save the measured rows as JSON")
    ap.add_argument("--rows-in", type=Path, help="render rows saved by --rows-out instead of measuring")
    ap.add_argument("--child", nargs=2, metavar=("CKPT", "LATENTS"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(Path(args.child[0]), Path(args.child[1]))))
        return
    if args.rows_in is not None:
        saved = json.loads(args.rows_in.read_text())
        report(saved["rows"], saved["gemm"], saved["total"], quick=saved["quick"], write=args.write_readme)
        return
    ns, ks = (QUICK_N, QUICK_K) if args.quick else (FULL_N, FULL_K)
    gemm = gemm_gflops()
    print(f"fp32 GEMM (2048^3 torch.mm): {gemm:.1f} GFLOP/s", file=sys.stderr)
    rows: list[dict] = []
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="vqdoctor-scale-") as tmp_name:
        tmp = Path(tmp_name)
        files: dict[int, Path] = {}
        for n in sorted(set(ns) | {N_FOR_K}):
            files[n] = make_latents(tmp / f"z{n}.npy", n, D)
        for n in ns:
            r = run_point(tmp, files[n], n, K_FOR_N, D, args.timeout)
            r["sweep"] = "N"
            rows.append(r)
            print(f"N={n:>10,} K={K_FOR_N:>7,}: {r['seconds']:7.2f} s, peak anon {r['peak_anon_mb']:.0f} MB", file=sys.stderr)
        for k in ks:
            r = run_point(tmp, files[N_FOR_K], N_FOR_K, k, D, args.timeout)
            r["sweep"] = "K"
            rows.append(r)
            print(f"N={N_FOR_K:>10,} K={k:>7,}: {r['seconds']:7.2f} s, peak anon {r['peak_anon_mb']:.0f} MB", file=sys.stderr)
    total = time.perf_counter() - start
    if args.rows_out is not None:
        args.rows_out.write_text(json.dumps({"rows": rows, "gemm": gemm, "total": total, "quick": args.quick}, indent=1))
    report(rows, gemm, total, quick=args.quick, write=args.write_readme)


def report(rows: list[dict], gemm: float, total: float, *, quick: bool, write: bool) -> None:
    tab = table(rows, gemm)
    print(tab)
    print(f"\nfp32 GEMM {gemm:.1f} GFLOP/s; total {total:.0f} s", file=sys.stderr)
    if write:
        png = ROOT / "benchmarks" / "scale.png"
        plot(rows, png)
        threads = rows[0]["threads"] if rows else "?"
        cmd = "python benchmarks/scale.py" + (" --quick" if quick else "") + " --write-readme"
        body = SCALE_TEXT.format(cmd=cmd, table=tab, gemm=gemm, threads=threads, total=total, k_for_n=K_FOR_N,
                                 n_for_k=N_FOR_K, d=D)
        write_section(ROOT / "benchmarks" / "README.md", body)
        print(f"wrote {png} and the Scale section of benchmarks/README.md", file=sys.stderr)


SCALE_TEXT = """## Scale

`{cmd}` (benchmarks/scale.py; {total:.0f} s in all). Each row is one full `vqdoctor.api.inspect`
in its own subprocess (modes from labels, geometry, tokens and embeddings collapse, PCA picture
on the 4,000-point subsample) on float32 Gaussian-blob latents written to a memory-mapped `.npy`,
CPU, {threads} torch threads, 2-core machine with nothing else running. fp32 GEMM (2048^3
`torch.mm`, MKL) ran at {gemm:.1f} GFLOP/s when measured at the start. "N" rows: K = {k_for_n};
"K" rows: N = {n_for_k:,}; d = {d}.

{table}

![inspect time against N and K, peak memory against N](scale.png)

- **N**: a fixed cost of about 1.5 s (imports, loading, geometry, modes and the picture on the
  bounded subsample), then linear in N. At K = 1024 the search is cheap (2*N*K*d = 1.3 TFLOP at
  N = 10^7), so "assign GFLOP/s" (those flops over the *whole* `inspect` time, a lower bound) stays
  below the search's own speed: reading, finiteness checks and the statistics updates share the
  time.
- **K**: from 2^16 codes on the search dominates and the whole `inspect` runs at 0.7-1.0 of the
  MKL `torch.mm` speed (the search itself uses oneDNN, faster than MKL on this CPU; see the
  "Assign" section). K = 262,144 works: 100,000 vectors in about 17 s.
- **Memory is bounded by the chunk budget, not by N**: the anonymous resident memory (heap and
  tensors) stays within about 260-390 MB from N = 10^4 to 10^7 while the latents grow to
  2.4 GiB (the growth is mostly the labels array, 8 bytes per sample, read whole). It grows with
  K (the codes, their prepared copy, the near-duplicate search on up to 16,384 codes) to under
  1 GB at K = 2^18. VmHWM also counts the file pages of the memory-mapped latents that the kernel
  keeps cached (reclaimable).
- **Prefetch**: "read s" is one pass that only reads the batches of the same file: about 1 s of
  the 18 s at N = 10^7 while the file sits in the page cache. A background reader
  (`vqdoctor/io/prefetch.py`, two batches ahead) now overlaps reading and decoding with the work on
  the batch before. `python benchmarks/prefetch.py` (2,400 64x64 PNGs through a conv encoder, on
  the CPU): 0.58 -> 0.45 s (23%) with a light encoder, 3.84 -> 3.70 s (4%) with a heavy one, where
  torch's encoder already keeps both cores busy. On a GPU the decoding can overlap fully (not
  measured here: no GPU was available).
- Not in the grid: N = 10^8 (the same linear law; or shard it, docs/scaling.md) and inferred
  modes (every row here uses labels; without them a mixture is fitted on the 4,000-point
  subsample and predicts each batch's modes with a few batched matrix products).
"""


if __name__ == "__main__":
    main()

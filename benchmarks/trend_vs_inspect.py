"""`vqdoctor trend` over a run's checkpoints vs one `vqdoctor inspect` process per checkpoint.

Makes a run of 7 SimVQ-style checkpoints (vector-quantize-pytorch layout, K=1024, d=64, W losing
rank) and 50,000 latents in a temporary folder, then times, as separate processes (what a user
runs): `vqdoctor trend RUN --latents z.npy --json` once, and `vqdoctor inspect CKPT --latents z.npy
--json` per checkpoint, with the default projection (pca) and with `--projection none` (trend
draws no projection). Prints wall-clock seconds and the ratios.

    PYTHONPATH=. python benchmarks/trend_vs_inspect.py [--checkpoints 7] [--vectors 50000]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

K, D = 1024, 64


def make_run(folder: Path, n_ckpt: int, n_vectors: int) -> Path:
    g = torch.Generator().manual_seed(0)
    frozen = torch.randn(K, D, generator=g)
    u, _, v = torch.linalg.svd(torch.randn(D, D, generator=g))
    for i in range(n_ckpt):
        step = 1000 * 2 ** i
        rank = max(2, D >> i)
        s = torch.zeros(D)
        s[:rank] = torch.linspace(1.0, 0.5, rank)
        w = (u @ torch.diag(s) @ v).contiguous()
        torch.save({"state_dict": {"quantizer.frozen_codebook": frozen, "quantizer.code_transform.weight": w},
                    "global_step": step}, folder / f"step_{step}.ckpt")
    z = folder.parent / "z.npy"
    np.save(z, np.random.default_rng(0).standard_normal((n_vectors, D)).astype(np.float32))
    return z


def timed(argv: list[str]) -> float:
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    start = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--checkpoints", type=int, default=7)
    ap.add_argument("--vectors", type=int, default=50_000)
    args = ap.parse_args()
    exe = [sys.executable, "-m", "vqdoctor"]
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        run.mkdir()
        z = make_run(run, args.checkpoints, args.vectors)
        ckpts = sorted(run.iterdir())
        t_trend = timed([*exe, "trend", str(run), "--latents", str(z), "--json", str(Path(tmp) / "t.json")])
        t_sep = sum(timed([*exe, "inspect", str(c), "--latents", str(z), "--json", str(Path(tmp) / "i.json")]) for c in ckpts)
        t_sep_none = sum(timed([*exe, "inspect", str(c), "--latents", str(z), "--projection", "none",
                                "--json", str(Path(tmp) / "i.json")]) for c in ckpts)
    n = len(ckpts)
    print(f"{n} checkpoints (K={K}, d={D}), {args.vectors:,} latents; torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"vqdoctor trend (one process):                 {t_trend:6.1f} s")
    print(f"{n} x vqdoctor inspect (default projection):   {t_sep:6.1f} s  ({t_sep / t_trend:.1f}x trend)")
    print(f"{n} x vqdoctor inspect --projection none:      {t_sep_none:6.1f} s  ({t_sep_none / t_trend:.1f}x trend)")


if __name__ == "__main__":
    main()

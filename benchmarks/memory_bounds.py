"""Peak memory of `vqdoctor inspect` on two hostile inputs from issue 11 (see docs/security.md).

1. a compressed `.npz` of zeros that inflates to ROWS x 8 float32 (800 MB by default, under 1 MB on
   disk), read with --max-vectors 10000;
2. labels {0, 10^9} for 2000 latents.
Each run is its own subprocess (under `ulimit -v` of 8 GB so a run that would allocate 10^9 slots
fails instead of swapping) that prints its own peak RSS (ru_maxrss) at exit. Run from the checkout
to measure:
    python benchmarks/memory_bounds.py [ROWS]
"""

from __future__ import annotations

import io
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np
from safetensors.numpy import (
    save_file,  # no torch here: a forked child starts with the parent's RSS
)

CHILD = ("import atexit, resource, sys; atexit.register(lambda: print('PEAK_KB', "
         "resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)); "
         "from vqdoctor.cli.app import main; main()")


def _run(args: list[str]) -> tuple[int, float, float]:
    """(exit code, peak RSS in MB, wall seconds) of one vqdoctor run in a fresh process."""
    t0 = time.perf_counter()
    res = subprocess.run(["bash", "-c", 'ulimit -v 8000000; exec "$0" -c "$1" "${@:2}"', sys.executable, CHILD, *args],
                         capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t0
    peak = [int(line.split()[1]) for line in res.stderr.splitlines() if line.startswith("PEAK_KB")]
    return res.returncode, (peak[-1] / 1024 if peak else float("nan")), wall


def main() -> None:
    rows = int(sys.argv[1]) if len(sys.argv) > 1 else 25_000_000
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        rng = np.random.default_rng(0)
        save_file({"quantizer.embedding.weight": rng.standard_normal((16, 8)).astype(np.float32)}, str(d / "m.safetensors"))
        header = io.BytesIO()
        np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": (rows, 8)})
        with zipfile.ZipFile(d / "bomb.npz", "w", zipfile.ZIP_DEFLATED) as zf, \
                zf.open("latents.npy", "w", force_zip64=True) as fh:  # streamed: never 800 MB in this process
            fh.write(header.getvalue())
            block = bytes(32 << 20)
            for start in range(0, rows * 32, len(block)):
                fh.write(block[: min(len(block), rows * 32 - start)])
        y = np.zeros(2000, np.int64)
        y[::2] = 10**9
        np.save(d / "y.npy", y)
        np.save(d / "z.npy", rng.standard_normal((2000, 8)).astype(np.float32))
        common = ["inspect", str(d / "m.safetensors"), "--projection", "none", "--json", str(d / "o.json")]
        cases = {
            f"npz bomb ({(d / 'bomb.npz').stat().st_size / 1e6:.2f} MB -> {rows * 32 / 1e6:.0f} MB)":
                ["--latents", str(d / "bomb.npz"), "--max-vectors", "10000"],
            "labels {0, 10^9}": ["--latents", str(d / "z.npy"), "--labels", str(d / "y.npy")],
            "baseline (same latents, no labels)": ["--latents", str(d / "z.npy")],
        }
        for name, extra in cases.items():
            code, peak, wall = _run(common + extra)
            print(f"{name:40s} exit {code}  peak RSS <= {peak:7.0f} MB  {wall:5.1f} s")


if __name__ == "__main__":
    main()

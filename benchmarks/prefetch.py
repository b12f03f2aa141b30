"""Reading ahead (vqdoctor.io.prefetch) against plain reading, same run: 2,400 random 64x64 PNGs
in 4 class folders (written to a temp folder) read in batches of 64 and encoded by a light and a
heavy conv encoder, each way twice (best kept).

    python benchmarks/prefetch.py
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from matplotlib.image import imsave

from vqdoctor.io.data import open_inputs
from vqdoctor.io.prefetch import prefetch


def make_images(root: Path) -> None:
    g = np.random.default_rng(0)
    for c in range(4):
        (root / f"c{c}").mkdir(parents=True)
        for i in range(600):
            imsave(root / f"c{c}" / f"{i}.png", g.random((64, 64, 3)))


def run(src, encoder: torch.nn.Module, *, ahead: bool) -> float:
    start = time.perf_counter()
    batches = src.batches(64)
    with torch.inference_mode():
        for xb, _ in prefetch(batches) if ahead else batches:
            encoder(xb)
    return time.perf_counter() - start


def main() -> None:
    encoders = {
        "light": torch.nn.Sequential(torch.nn.Conv2d(3, 64, 4, 4), torch.nn.ReLU(), torch.nn.Conv2d(64, 64, 1)),
        "heavy": torch.nn.Sequential(torch.nn.Conv2d(3, 64, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(64, 64, 4, 4),
                                     torch.nn.ReLU(), torch.nn.Conv2d(64, 64, 1)),
    }
    with tempfile.TemporaryDirectory() as tmp:
        make_images(Path(tmp))
        src = open_inputs(tmp)
        print("| encoder | plain s | prefetch s | saved |\n|---|---:|---:|---:|")
        for name, enc in encoders.items():
            plain = min(run(src, enc, ahead=False) for _ in range(2))
            ahead = min(run(src, enc, ahead=True) for _ in range(2))
            print(f"| {name} | {plain:.2f} | {ahead:.2f} | {1 - ahead / plain:.0%} |")


if __name__ == "__main__":
    main()

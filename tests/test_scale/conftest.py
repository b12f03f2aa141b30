"""Small synthetic VQ checkpoints (vector-quantize-pytorch layout) and latents for the scale tests."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

K, D, N, MODES = 64, 8, 3000, 4


def write_vq_checkpoint(path: Path, *, seed: int, k: int = K, d: int = D) -> Path:
    """A vector-quantize-pytorch-style state dict: ``quantizer._codebook.embed`` (1, K, d) with EMA buffers."""
    g = torch.Generator().manual_seed(seed)
    p = "quantizer._codebook"
    embed = torch.randn(1, k, d, generator=g)
    save_file({
        f"{p}.embed": embed,
        f"{p}.embed_avg": embed.clone(),
        f"{p}.cluster_size": torch.rand(1, k, generator=g),
        f"{p}.initted": torch.tensor([True]),
        "encoder.weight": torch.randn(d, 3, generator=g),
    }, str(path))
    return path


def write_latents(folder: Path, *, n: int = N, d: int = D, modes: int = MODES, seed: int = 0) -> tuple[Path, Path]:
    """(n, d) float32 latents from ``modes`` Gaussian blobs, and their labels (n,) int64."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=3.0, size=(modes, d))
    y = rng.integers(0, modes, size=n)
    x = (centres[y] + rng.normal(size=(n, d))).astype(np.float32)
    np.save(folder / "z.npy", x)
    np.save(folder / "y.npy", y.astype(np.int64))
    return folder / "z.npy", folder / "y.npy"


@dataclass(frozen=True)
class Setup:
    ckpt: Path
    other_ckpt: Path  # same layout, different codes
    latents: Path
    labels: Path
    folder: Path


@pytest.fixture
def setup(tmp_path: Path) -> Setup:
    ckpt = write_vq_checkpoint(tmp_path / "vq.safetensors", seed=1)
    other = write_vq_checkpoint(tmp_path / "vq_other.safetensors", seed=2)
    z, y = write_latents(tmp_path)
    return Setup(ckpt=ckpt, other_ckpt=other, latents=z, labels=y, folder=tmp_path)


def strip_timing(report_json: dict) -> dict:
    """The report JSON without its timing fields (they differ from run to run)."""
    out = dict(report_json)
    if out.get("projection") is not None:
        out["projection"] = {k: v for k, v in out["projection"].items() if k != "seconds"}
    return out


def assert_json_close(a, b, path: str = "$", rel: float = 1e-9) -> None:
    """Equal JSON values: structure, strings and integers exactly, floats to ``rel``."""
    if isinstance(a, dict) and isinstance(b, dict):
        assert a.keys() == b.keys(), f"{path}: keys {sorted(a)} != {sorted(b)}"
        for k in a:
            assert_json_close(a[k], b[k], f"{path}.{k}", rel)
    elif isinstance(a, list) and isinstance(b, list):
        assert len(a) == len(b), f"{path}: lengths {len(a)} != {len(b)}"
        for i, (x, y) in enumerate(zip(a, b)):
            assert_json_close(x, y, f"{path}[{i}]", rel)
    elif isinstance(a, float) or isinstance(b, float):
        assert isinstance(a, (int, float)) and isinstance(b, (int, float)), f"{path}: {a!r} != {b!r}"
        assert abs(a - b) <= rel * max(abs(a), abs(b), 1e-300), f"{path}: {a!r} != {b!r}"
    else:
        assert a == b, f"{path}: {a!r} != {b!r}"

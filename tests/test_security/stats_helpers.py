"""A small VQ checkpoint, latents with labels, their statistics files, and a way to tamper
with a statistics file (rewrite its metadata or tensors) as an attacker would."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from vqdoctor import api
from vqdoctor.io.stats_file import META_KEY, save_stats
from vqdoctor.options import DataOptions

K, D, N = 32, 4, 800


def make_setup(folder: Path) -> tuple[Path, Path, Path]:
    """(checkpoint, latents, labels) in ``folder``: a vector-quantize-pytorch-style codebook."""
    g = torch.Generator().manual_seed(0)
    embed = torch.randn(1, K, D, generator=g)
    ckpt = folder / "vq.safetensors"
    save_file({"quantizer._codebook.embed": embed, "quantizer._codebook.embed_avg": embed.clone(),
               "quantizer._codebook.cluster_size": torch.rand(1, K, generator=g),
               "quantizer._codebook.initted": torch.tensor([True])}, str(ckpt))
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, size=N)
    x = (rng.normal(scale=3.0, size=(3, D))[y] + rng.normal(size=(N, D))).astype(np.float32)
    np.save(folder / "z.npy", x)
    np.save(folder / "y.npy", y.astype(np.int64))
    return ckpt, folder / "z.npy", folder / "y.npy"


def shard_files(folder: Path, ckpt: Path, z: Path, y: Path, n: int = 2) -> list[Path]:
    paths = []
    for i in range(n):
        st = api.gather_statistics(ckpt, data=DataOptions(latents=z, labels=y, shard=(i, n), batch_size=256))
        paths.append(save_stats(st, folder / f"s{i}.stats"))
    return paths


def tamper(path: Path, *, meta: Callable[[dict[str, Any]], None] | None = None,
           tensors: Callable[[dict[str, torch.Tensor]], None] | None = None, out: Path | None = None) -> Path:
    """Rewrite the statistics file at ``path`` (into ``out``, default in place) after ``meta`` and
    ``tensors`` edited its JSON metadata and its tensors."""
    with safe_open(str(path), framework="pt") as fh:
        doc = json.loads(fh.metadata()[META_KEY])
        ts = {k: fh.get_tensor(k) for k in fh.keys()}
    if meta is not None:
        meta(doc)
    if tensors is not None:
        tensors(ts)
    out = out or path
    save_file(ts, str(out), metadata={META_KEY: json.dumps(doc)})
    return out

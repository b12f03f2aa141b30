"""Shared fixtures: small real conv tokenizers (a conv encoder + vector-quantize-pytorch's
VectorQuantize) trained for a few seconds on scikit-learn's 8x8 digits, seeded."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch


@dataclass(frozen=True)
class ConvTokenizer:
    checkpoint: Path  # the VectorQuantize state dict (safetensors)
    latents: Path  # (B, d, 2, 2) encoder outputs, .npy
    labels: Path  # (B,) digit classes, .npy
    inputs: Path  # .npz: x (B, 1, 8, 8) images, y labels
    encoder: Path  # TorchScript encoder
    used_codes: int
    size: int


def _train_conv_tokenizer(root: Path, *, collapsed: bool) -> ConvTokenizer:
    from safetensors.torch import save_file
    from sklearn.datasets import load_digits
    from vector_quantize_pytorch import VectorQuantize

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small convs: threads only contend on a shared machine
    try:
        return _train(root, collapsed=collapsed, save_file=save_file, load_digits=load_digits, VectorQuantize=VectorQuantize)
    finally:
        torch.set_num_threads(threads)


def _train(root: Path, *, collapsed: bool, save_file, load_digits, VectorQuantize) -> ConvTokenizer:  # noqa: N803
    torch.manual_seed(0)
    x_np, y = load_digits(return_X_y=True)
    x = torch.tensor(x_np / 16.0, dtype=torch.float32).reshape(-1, 1, 8, 8)
    nn = torch.nn
    enc = nn.Sequential(nn.Conv2d(1, 32, 3, 2, 1), nn.ReLU(), nn.Conv2d(32, 8, 3, 2, 1))  # (B, 8, 2, 2)
    dec = nn.Sequential(nn.ConvTranspose2d(8, 32, 4, 2, 1), nn.ReLU(), nn.ConvTranspose2d(32, 1, 4, 2, 1))
    size = 256 if collapsed else 64
    # collapsed: the classic failure, a large codebook initialised away from the encoder's outputs
    # and never re-seeded (no k-means init, no dead-code expiry); healthy: k-means init + expiry
    vq = VectorQuantize(dim=8, codebook_size=size, decay=0.8, kmeans_init=not collapsed,
                        threshold_ema_dead_code=0 if collapsed else 2, accept_image_fmap=True)
    if collapsed:
        with torch.no_grad():
            vq._codebook.embed.mul_(3.0).add_(2.0)
    opt = torch.optim.Adam([*enc.parameters(), *dec.parameters()], lr=3e-3)
    gen = torch.Generator().manual_seed(0)
    for _ in range(200):
        idx = torch.randint(0, x.shape[0], (256,), generator=gen)
        q, _, commit = vq(enc(x[idx]))
        loss = ((dec(q) - x[idx]) ** 2).mean() + commit
        opt.zero_grad()
        loss.backward()
        opt.step()
    vq.eval()
    enc.eval()
    with torch.no_grad():
        z = enc(x)
        _, ind, _ = vq(z)
    root.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().contiguous() for k, v in vq.state_dict().items()}, str(root / "vq.safetensors"))
    np.save(root / "z.npy", z.numpy())
    np.save(root / "y.npy", y)
    np.savez(root / "digits.npz", x=x.numpy(), y=y)
    torch.jit.trace(enc, x[:4]).save(str(root / "enc.pt"))
    return ConvTokenizer(root / "vq.safetensors", root / "z.npy", root / "y.npy", root / "digits.npz",
                         root / "enc.pt", int(ind.unique().numel()), size)


@pytest.fixture(scope="session")
def conv_tokenizer(tmp_path_factory: pytest.TempPathFactory) -> ConvTokenizer:
    """A healthy conv tokenizer: 64 codes, all in use."""
    return _train_conv_tokenizer(tmp_path_factory.mktemp("conv_healthy"), collapsed=False)


@pytest.fixture(scope="session")
def collapsed_conv_tokenizer(tmp_path_factory: pytest.TempPathFactory) -> ConvTokenizer:
    """A collapsed conv tokenizer: most of its 256 codes never used."""
    return _train_conv_tokenizer(tmp_path_factory.mktemp("conv_collapsed"), collapsed=True)

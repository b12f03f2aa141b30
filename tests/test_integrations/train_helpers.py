"""A tiny vector-quantize-pytorch VQ-VAE on scikit-learn's digits, as a LightningModule (when
Lightning is installed) and as plain pieces, for the integration tests."""

from __future__ import annotations

import torch
from torch import nn

K, D, TOKENS = 32, 8, 4  # codebook size, code dim, tokens per image


def digits(n: int | None = None) -> torch.Tensor:
    from sklearn.datasets import load_digits

    x = torch.tensor(load_digits().data, dtype=torch.float32) / 16.0
    return x if n is None else x[:n]


class VQVAE(nn.Module):
    """8x8 digit -> TOKENS latents of D dims -> VectorQuantize(K codes, EMA) -> reconstruction.
    From ``drift_after`` (a training step) on the latents move 50 away from the codebook: every
    vector lands on one code and the EMA keeps it so, a collapse mid-run. ``vq``: more
    VectorQuantize options (``kmeans_init=True``: healthy for the first ~10 steps; with
    ``threshold_ema_dead_code=2`` it stays healthy)."""

    def __init__(self, drift_after: int | None = None, **vq: object) -> None:
        super().__init__()
        from vector_quantize_pytorch import VectorQuantize

        self.encoder = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, TOKENS * D))
        self.quantizer = VectorQuantize(dim=D, codebook_size=K, decay=0.8, **vq)
        self.decoder = nn.Sequential(nn.Linear(TOKENS * D, 64), nn.ReLU(), nn.Linear(64, 64))
        self.drift_after = drift_after
        self.indices: list[torch.Tensor] = []  # vqp's own indices of every training call

    def forward(self, x: torch.Tensor, step: int = 0) -> torch.Tensor:
        z = self.encoder(x).view(-1, TOKENS, D)
        if self.drift_after is not None and step >= self.drift_after:
            z = z + 50.0
        q, idx, commit = self.quantizer(z)
        if self.training:
            self.indices.append(idx.detach().reshape(-1))
        return nn.functional.mse_loss(self.decoder(q.reshape(-1, TOKENS * D)), x) + commit.sum()


def lightning_module(drift_after: int | None = None, *, package: str = "lightning.pytorch", **vq: object):
    """A LightningModule of :class:`VQVAE` (training and validation steps, Adam)."""
    import importlib

    pl = importlib.import_module(package)

    class DigitsVQVAE(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = VQVAE(drift_after, **vq)

        def training_step(self, batch, batch_idx):
            return self.net(batch[0], self.global_step)

        def validation_step(self, batch, batch_idx):
            self.log("val_loss", self.net(batch[0], self.global_step))

        def configure_optimizers(self):
            return torch.optim.Adam(self.parameters(), lr=1e-3)

    return DigitsVQVAE()


def loader(n: int = 640, batch: int = 64, shuffle: bool = False) -> torch.utils.data.DataLoader:
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(digits(n)), batch_size=batch, shuffle=shuffle)

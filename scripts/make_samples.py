#!/usr/bin/env python
"""Train the sample checkpoints shipped in ``vqdoctor/samples/`` (and copied to ``sample_checkpoints/``).

One command, seeded, deterministic on CPU (single thread, deterministic algorithms):

    python scripts/make_samples.py                       # all samples into vqdoctor/samples/ + copies
    python scripts/make_samples.py --only pretrained_healthy --out /tmp/s   # one sample, elsewhere

The set-up follows the representation-collapse paper (Zhao et al., section 5.2): ten Gaussian
clusters of 1,000 points, standardised; an MLP encoder/decoder of three linear layers with ReLU;
AdamW lr 1e-3, batch 256, beta 0.25, EMA decay 0.9, k-means initialisation of the codebook. The
quantizers are written in vector-quantize-pytorch's state-dict layout (VectorQuantize with an EMA
``EuclideanCodebook``, ``ResidualVQ``, ``SimVQ``) and their EMA buffers are updated the way that
library updates them, so ``cluster_size`` / ``embed_avg`` are real usage statistics.

After training, each sample is measured here with small, independent code (nearest-code usage,
perplexity, quantization MSE, code-to-mode allocation, k-NN mode purity of the latents) and the
numbers are written into the checkpoint's ``vqdoctor.measured`` metadata and printed; the script
fails if a sample does not show what it is meant to show.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from vqdoctor.samples.arch import MlpArch, build_decoder, build_encoder  # noqa: E402

PACKAGE_DIR = ROOT / "vqdoctor" / "samples"
COPY_DIR = ROOT / "sample_checkpoints"
SEED = 0

# paper settings (section 5.2)
N_MODES, PER_MODE = 10, 1000
LR, BATCH, BETA, DECAY = 1e-3, 256, 0.25, 0.9
EPS = 1e-5  # vector-quantize-pytorch's laplace smoothing epsilon


# ----------------------------------------------------------------------------------------- data


def make_blobs(dim: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Ten isotropic unit Gaussians whose centres lie at least 4 sd apart in a box, standardised."""
    rng = np.random.default_rng(seed)
    centres: list[np.ndarray] = []
    while len(centres) < N_MODES:
        c = rng.uniform(-10.0, 10.0, size=dim)
        if all(np.linalg.norm(c - o) >= 4.0 for o in centres):
            centres.append(c)
    x = np.concatenate([c + rng.normal(size=(PER_MODE, dim)) for c in centres])
    y = np.repeat(np.arange(N_MODES), PER_MODE)
    x = (x - x.mean(0)) / x.std(0)  # StandardScaler
    return x.astype(np.float32), y.astype(np.int64)


DATASETS = {"blobs2d": 2, "blobs3d": 3, "blobs8d": 8}


# --------------------------------------------------------------------------------------- k-means


def kmeans(z: torch.Tensor, k: int, gen: torch.Generator, iters: int = 20) -> tuple[torch.Tensor, torch.Tensor]:
    """k-means++ seeding then Lloyd; (N, d) -> centroids (k, d), counts (k,). Empty clusters keep
    their seed."""
    n = z.shape[0]
    first = int(torch.randint(n, (1,), generator=gen))
    cent = [z[first]]
    d2 = ((z - z[first]) ** 2).sum(1)
    for _ in range(1, k):
        total = float(d2.sum())
        if total <= 0:
            i = int(torch.randint(n, (1,), generator=gen))
        else:
            i = int(torch.multinomial(d2 / total, 1, generator=gen))
        cent.append(z[i])
        d2 = torch.minimum(d2, ((z - z[i]) ** 2).sum(1))
    c = torch.stack(cent)
    for _ in range(iters):
        idx = nearest(z, c)
        counts = torch.bincount(idx, minlength=k).to(z.dtype)
        sums = torch.zeros_like(c).index_add_(0, idx, z)
        c = torch.where(counts[:, None] > 0, sums / counts.clamp(min=1)[:, None], c)
    counts = torch.bincount(nearest(z, c), minlength=k).to(z.dtype)
    return c, counts


def nearest(z: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
    """(N, d), (K, d) -> (N,) index of the nearest code by squared L2."""
    d = (z * z).sum(1, keepdim=True) - 2 * z @ codes.T + (codes * codes).sum(1)[None]
    return d.argmin(1)


# ------------------------------------------------------------------------------------ quantizers


class EmaCodebook(nn.Module):
    """vector-quantize-pytorch's EuclideanCodebook (one codebook): buffers embed (1, K, d),
    cluster_size (1, K), embed_avg (1, K, d), initted (1,). Updated as the library does:
    cluster_size <- decay*cluster_size + (1-decay)*bins; embed_avg likewise with per-code sums;
    embed = embed_avg / laplace-smoothed cluster_size."""

    def __init__(self, k: int, d: int) -> None:
        super().__init__()
        self.register_buffer("initted", torch.Tensor([False]))
        self.register_buffer("cluster_size", torch.zeros(1, k))
        self.register_buffer("embed_avg", torch.zeros(1, k, d))
        self.register_buffer("embed", torch.zeros(1, k, d))

    @torch.no_grad()
    def kmeans_init(self, z: torch.Tensor, gen: torch.Generator) -> None:
        k = self.embed.shape[1]
        c, counts = kmeans(z, k, gen)
        counts = counts * (BATCH / z.shape[0])  # as if measured on one batch, like the library
        self.embed.copy_(c[None])
        self.cluster_size.copy_(counts[None])
        self.embed_avg.copy_((c * counts[:, None])[None])  # consistent: embed = embed_avg / count
        self.initted.fill_(1.0)

    def codes(self) -> torch.Tensor:
        return self.embed[0]

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        idx = nearest(z.detach(), self.embed[0])
        q = self.embed[0][idx]
        if self.training:
            self._ema(z.detach(), idx)
        return q, idx

    @torch.no_grad()
    def _ema(self, z: torch.Tensor, idx: torch.Tensor) -> None:
        k = self.embed.shape[1]
        bins = torch.bincount(idx, minlength=k).to(z.dtype)  # (K,)
        sums = torch.zeros(k, z.shape[1], dtype=z.dtype).index_add_(0, idx, z)  # (K, d)
        self.cluster_size.mul_(DECAY).add_(bins[None], alpha=1 - DECAY)
        self.embed_avg.mul_(DECAY).add_(sums[None], alpha=1 - DECAY)
        cs = self.cluster_size
        smoothed = (cs + EPS) / (cs.sum(-1, keepdim=True) + k * EPS) * cs.sum(-1, keepdim=True)
        self.embed.copy_(self.embed_avg / smoothed[..., None])


class VectorQuantize(nn.Module):
    """Keys: quantizer._codebook.{embed, cluster_size, embed_avg, initted}."""

    def __init__(self, k: int, d: int) -> None:
        super().__init__()
        self._codebook = EmaCodebook(k, d)

    def codebooks(self) -> list[torch.Tensor]:
        return [self._codebook.codes()]

    def kmeans_init(self, z: torch.Tensor, gen: torch.Generator) -> None:
        self._codebook.kmeans_init(z, gen)

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        q, idx = self._codebook(z)
        commit = BETA * F.mse_loss(z, q.detach())
        return q, idx[:, None], commit


class ResidualVQ(nn.Module):
    """Keys: quantizer.layers.{i}._codebook.*; level i quantizes the residual left by levels < i."""

    def __init__(self, k: int, d: int, levels: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(VectorQuantize(k, d) for _ in range(levels))

    def codebooks(self) -> list[torch.Tensor]:
        return [layer._codebook.codes() for layer in self.layers]

    @torch.no_grad()
    def kmeans_init(self, z: torch.Tensor, gen: torch.Generator) -> None:
        r = z
        for layer in self.layers:
            layer.kmeans_init(r, gen)
            r = r - layer._codebook.codes()[nearest(r, layer._codebook.codes())]

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        r, total, ids, commit = z, torch.zeros_like(z), [], z.new_zeros(())
        for layer in self.layers:
            q, idx, c = layer(r)
            total = total + q
            r = r - q.detach()
            ids.append(idx)
            commit = commit + c
        return total, torch.cat(ids, 1), commit


class SimVQ(nn.Module):
    """vector-quantize-pytorch's SimVQ keys: quantizer.frozen_codebook (K, d), a buffer, and
    quantizer.code_transform.weight (d, d); codebook = frozen_codebook @ W.T. Trained as in the
    SimVQ paper's Algorithm 1: C frozen Gaussian, loss ||sg(z) - qW||^2 + beta ||z - sg(qW)||^2.
    With ``learn_codes`` (the vanilla baseline) W stays the identity and C itself is learned."""

    def __init__(self, k: int, d: int, gen: torch.Generator) -> None:
        super().__init__()
        self.register_buffer("frozen_codebook", torch.randn(k, d, generator=gen))
        self.code_transform = nn.Linear(d, d, bias=False)
        with torch.no_grad():
            self.code_transform.weight.copy_(torch.eye(d) + 0.01 * torch.randn(d, d, generator=gen))

    def codebooks(self) -> list[torch.Tensor]:
        return [self.code_transform(self.frozen_codebook).detach()]

    def kmeans_init(self, z: torch.Tensor, gen: torch.Generator) -> None:  # Gaussian C, no k-means
        pass

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        codes = self.code_transform(self.frozen_codebook)
        idx = nearest(z.detach(), codes.detach())
        q = codes[idx]
        commit = F.mse_loss(z.detach(), q) + BETA * F.mse_loss(z, q.detach())
        return q, idx[:, None], commit


# ------------------------------------------------------------------------------------ the model


class VQVAE(nn.Module):
    def __init__(self, arch: MlpArch, quantizer: nn.Module) -> None:
        super().__init__()
        self.encoder = build_encoder(arch)
        self.quantizer = quantizer
        self.decoder = build_decoder(arch)

    def forward(self, x: torch.Tensor, *, vq: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.encoder(x)
        if not vq:
            return self.decoder(z), z.new_zeros(())
        q, _, commit = self.quantizer(z)
        zq = z + (q - z).detach()  # straight-through
        return self.decoder(zq), commit


@dataclass(frozen=True)
class Spec:
    name: str
    description: str
    data: str
    latent_dim: int
    hidden: int = 32
    codebook_size: int = 128
    quantizer: str = "vq"  # vq | rvq | simvq
    levels: int = 1
    pretrain_epochs: int = 0
    epochs: int = 200
    kmeans_from: str = "untrained"  # untrained | pretrained | none
    expect: tuple[str, ...] = ()  # what measure() must find


SPECS: dict[str, Spec] = {
    s.name: s
    for s in (
        Spec(
            "vanilla_tokens_collapse",
            "tokens collapse: vanilla EMA VQ-VAE whose codebook was k-means-initialised from the "
            "untrained encoder; codes pile onto central modes and starve others",
            "blobs8d",
            latent_dim=4,
            expect=("starved",),
        ),
        Spec(
            "pretrained_healthy",
            "the paper's fix: autoencoder pretrained without VQ, codebook k-means-initialised from the "
            "pretrained encoder, then fine-tuned with VQ; codes spread over all modes",
            "blobs8d",
            latent_dim=4,
            pretrain_epochs=100,
            epochs=100,
            kmeans_from="pretrained",
            expect=("no_starved",),
        ),
        Spec(
            "small_encoder_embeddings_collapse",
            "embeddings collapse: encoder hidden size 4 (decoder 32) merges distinct input modes in "
            "latent space",
            "blobs8d",
            latent_dim=4,
            hidden=4,
            expect=("merged",),
        ),
        Spec(
            "large_codebook_vanilla",
            "vanilla EMA VQ with 4,096 codes, k-means-initialised from the untrained encoder: a few "
            "hundred codes stay in use, the rest are dead",
            "blobs2d",
            latent_dim=2,
            codebook_size=4096,
            epochs=50,
            expect=("low_util",),
        ),
        Spec(
            "large_codebook_simvq",
            "SimVQ with 4,096 codes: frozen Gaussian C, learned linear W (codebook = C W^T); the whole "
            "codebook follows the latents and many times more codes are used than with vanilla VQ",
            "blobs2d",
            latent_dim=2,
            codebook_size=4096,
            quantizer="simvq",
            epochs=50,
            kmeans_from="none",
            expect=("high_util",),
        ),
        Spec(
            "residual_vq",
            "residual VQ: four EMA codebooks of 64 codes, each quantizing the residual of the levels "
            "before it",
            "blobs3d",
            latent_dim=3,
            codebook_size=64,
            quantizer="rvq",
            levels=4,
            kmeans_from="untrained",
        ),
    )
}


def _make_quantizer(spec: Spec, gen: torch.Generator) -> nn.Module:
    if spec.quantizer == "vq":
        return VectorQuantize(spec.codebook_size, spec.latent_dim)
    if spec.quantizer == "rvq":
        return ResidualVQ(spec.codebook_size, spec.latent_dim, spec.levels)
    if spec.quantizer == "simvq":
        return SimVQ(spec.codebook_size, spec.latent_dim, gen)
    raise ValueError(spec.quantizer)


def _quantizer_json(spec: Spec) -> dict:
    common = {"prefix": "quantizer.", "codebook_size": spec.codebook_size, "dim": spec.latent_dim}
    if spec.quantizer == "vq":
        return {"type": "vector-quantize", "ema": True, "decay": DECAY, "kmeans_init": spec.kmeans_from, **common}
    if spec.quantizer == "rvq":
        return {"type": "residual-vq", "levels": spec.levels, "ema": True, "decay": DECAY,
                "kmeans_init": spec.kmeans_from, **common}
    return {"type": "simvq", "frozen_init": "gaussian", "codebook": "frozen_codebook @ code_transform.weight.T",
            **common}


def _batches(n: int, gen: torch.Generator):
    perm = torch.randperm(n, generator=gen)
    for i in range(0, n, BATCH):
        yield perm[i : i + BATCH]


def train(spec: Spec, x: np.ndarray, seed: int) -> VQVAE:
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    arch = MlpArch(in_dim=x.shape[1], hidden=spec.hidden, latent_dim=spec.latent_dim, decoder_hidden=32,
                   quantizer=_quantizer_json(spec))
    model = VQVAE(arch, _make_quantizer(spec, gen))
    xt = torch.from_numpy(x)
    if spec.pretrain_epochs:
        opt = torch.optim.AdamW(model.parameters(), lr=LR)
        for _ in range(spec.pretrain_epochs):
            for b in _batches(len(xt), gen):
                xhat, _ = model(xt[b], vq=False)
                loss = F.mse_loss(xhat, xt[b])
                opt.zero_grad()
                loss.backward()
                opt.step()
    if spec.kmeans_from != "none":
        with torch.no_grad():
            model.quantizer.kmeans_init(model.encoder(xt), gen)
    opt = torch.optim.AdamW(model.parameters(), lr=LR)
    model.train()
    for _ in range(spec.epochs):
        for b in _batches(len(xt), gen):
            xhat, commit = model(xt[b])
            loss = F.mse_loss(xhat, xt[b]) + commit
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    return model


# ------------------------------------------------------------------------------------ measuring


def usage(z: torch.Tensor, codes: torch.Tensor) -> dict:
    idx = nearest(z, codes)
    counts = torch.bincount(idx, minlength=codes.shape[0]).double()
    p = counts / counts.sum()
    nz = p[p > 0]
    return {
        "idx": idx,
        "utilization": float((counts > 0).double().mean()),
        "perplexity": float(torch.exp(-(nz * nz.log()).sum())),
        "quantization_mse": float(((z - codes[idx]) ** 2).mean()),
    }


def allocation(z: torch.Tensor, codes: torch.Tensor, idx: torch.Tensor, y: np.ndarray) -> dict:
    """Code-to-mode allocation as DESIGN.md defines it."""
    k, m = codes.shape[0], int(y.max()) + 1
    yt = torch.from_numpy(y)
    table = torch.zeros(k, m).index_put_((idx, yt), torch.ones(len(idx)), accumulate=True)
    owner = table.argmax(1)
    dead = table.sum(1) == 0
    if dead.any():
        owner[dead] = yt[nearest(codes[dead], z)]
    code_share = torch.bincount(owner, minlength=m).double() / k
    data_share = torch.bincount(yt, minlength=m).double() / len(yt)
    ratio = code_share / data_share
    return {
        "code_share": [round(float(v), 4) for v in code_share],
        "starved_modes": [int(i) for i in torch.nonzero(ratio < 0.5).flatten()],
        "allocation_tv": float(0.5 * (code_share - data_share).abs().sum()),
    }


def knn(v: np.ndarray, k: int = 10) -> torch.Tensor:
    """(N, d) -> (N, k) indices of each point's k nearest neighbours, itself excluded."""
    t = torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32))
    out = []
    for i in range(0, len(t), 2000):
        d = torch.cdist(t[i : i + 2000], t)
        d[torch.arange(d.shape[0]), torch.arange(i, i + d.shape[0])] = float("inf")
        out.append(d.topk(k, largest=False).indices)
    return torch.cat(out)


def knn_purity(v: np.ndarray, y: np.ndarray, k: int = 10) -> float:
    """Mean share of each point's k nearest neighbours that share its mode."""
    yt = torch.from_numpy(y)
    return float((yt[knn(v, k)] == yt[:, None]).double().mean())


def merged_pairs(v: np.ndarray, y: np.ndarray, k: int = 10, threshold: float = 0.1) -> list[list[int]]:
    """Pairs (a, b) where more than `threshold` of a's neighbours belong to b (or b's to a)."""
    yt = torch.from_numpy(y)
    m = int(y.max()) + 1
    nb = yt[knn(v, k)]  # (N, k)
    conf = torch.zeros(m, m).index_put_((yt[:, None].expand_as(nb).reshape(-1), nb.reshape(-1)),
                                        torch.ones(nb.numel()), accumulate=True)
    conf = conf / conf.sum(1, keepdim=True)
    return [[a, b] for a in range(m) for b in range(a + 1, m) if max(conf[a, b], conf[b, a]) > threshold]


def effective_rank(w: torch.Tensor) -> tuple[int, float]:
    s = torch.linalg.svdvals(w.double())
    num = int((s > s.max() * max(w.shape) * torch.finfo(torch.float32).eps).sum())
    p = s / s.sum()
    p = p[p > 0]
    return num, float(torch.exp(-(p * p.log()).sum()))


def measure(model: VQVAE, spec: Spec, x: np.ndarray, y: np.ndarray) -> dict:
    with torch.no_grad():
        z = model.encoder(torch.from_numpy(x))
        out: dict = {
            "latent_mean": [round(float(v), 6) for v in z.mean(0)],
            "latent_std": [round(float(v), 6) for v in z.std(0)],
            "latent_head": [[round(float(v), 6) for v in row] for row in z[:3]],
            "knn_purity_inputs": round(knn_purity(x, y), 4),
            "knn_purity_latents": round(knn_purity(z.numpy(), y), 4),
            "merged_pairs": merged_pairs(z.numpy(), y),
        }
        levels = []
        r = z
        for codes in model.quantizer.codebooks():
            u = usage(r, codes)
            a = allocation(r, codes, u.pop("idx"), y)
            if spec.quantizer == "rvq":
                r = r - codes[nearest(r, codes)]
            levels.append({k: round(v, 6) if isinstance(v, float) else v for k, v in {**u, **a}.items()})
        out["codebooks"] = levels
        if spec.quantizer == "simvq":
            w = model.quantizer.code_transform.weight
            num, eff = effective_rank(w)
            out["w_rank"], out["w_effective_rank"] = num, round(eff, 4)
            out["w_frobenius"] = round(float(w.norm()), 4)
        xhat, _ = model(torch.from_numpy(x))
        out["reconstruction_mse"] = round(float(F.mse_loss(xhat, torch.from_numpy(x))), 6)
    return out


# ------------------------------------------------------------------------------------- writing


def write_sample(model: VQVAE, spec: Spec, measured: dict, out: Path, seed: int) -> Path:
    arch = MlpArch(in_dim=model.encoder[0].in_features, hidden=spec.hidden, latent_dim=spec.latent_dim,
                   decoder_hidden=32, quantizer=_quantizer_json(spec))
    tensors = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    meta = {
        "vqdoctor.arch": arch.to_json(),
        "vqdoctor.data": f"{spec.data}.npz",
        "vqdoctor.sample": spec.description,
        "vqdoctor.seed": str(seed),
        "vqdoctor.measured": json.dumps(measured, sort_keys=True),
        "vqdoctor.made_by": "scripts/make_samples.py",
    }
    path = out / f"{spec.name}.safetensors"
    save_file(tensors, str(path), metadata=meta)
    path.chmod(0o644)
    return path


def check(spec: Spec, m: dict) -> list[str]:
    cb = m["codebooks"][0]
    problems = []
    for e in spec.expect:
        if e == "starved" and not cb["starved_modes"]:
            problems.append("no starved mode")
        if e == "no_starved" and cb["starved_modes"]:
            problems.append(f"starved modes {cb['starved_modes']}")
        if e == "merged" and not m["merged_pairs"]:
            problems.append("no merged pair")
        if e == "low_util" and cb["utilization"] > 0.2:
            problems.append(f"utilization {cb['utilization']}")
        if e == "high_util" and cb["utilization"] < 0.3:
            problems.append(f"utilization {cb['utilization']}")
    return problems


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", action="append", choices=sorted(SPECS), help="make only this sample (repeatable)")
    ap.add_argument("--out", type=Path, default=PACKAGE_DIR, help="output folder (default: vqdoctor/samples)")
    ap.add_argument("--seed", type=int, default=SEED)
    ap.add_argument("--no-copy", action="store_true", help="do not copy into sample_checkpoints/")
    ap.add_argument("--epochs-scale", type=float, default=1.0, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    np.random.seed(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    names = args.only or list(SPECS)
    failed = []
    written: list[Path] = []
    for name in names:
        spec = SPECS[name]
        if args.epochs_scale != 1.0:
            spec = replace(spec, epochs=max(1, int(spec.epochs * args.epochs_scale)),
                           pretrain_epochs=int(spec.pretrain_epochs * args.epochs_scale))
        dim = DATASETS[spec.data]
        x, y = make_blobs(dim, args.seed + dim)
        data_path = args.out / f"{spec.data}.npz"
        if data_path not in written:
            np.savez(data_path, x=x, y=y)
            written.append(data_path)
        t0 = time.perf_counter()
        model = train(spec, x, args.seed)
        measured = measure(model, spec, x, y)
        secs = time.perf_counter() - t0
        written.append(write_sample(model, spec, measured, args.out, args.seed))
        problems = check(spec, measured)
        if problems:
            failed.append(f"{name}: {', '.join(problems)}")
        summary = "; ".join(
            f"L{i}: util {c['utilization']:.3f} ppl {c['perplexity']:.1f} mse {c['quantization_mse']:.2e} "
            f"tv {c['allocation_tv']:.3f} starved {c['starved_modes']}"
            for i, c in enumerate(measured["codebooks"])
        )
        extra = f" W rank {measured['w_rank']} eff {measured['w_effective_rank']}" if "w_rank" in measured else ""
        print(f"{name} ({secs:.1f}s): {summary}; kNN purity in {measured['knn_purity_inputs']:.3f} "
              f"lat {measured['knn_purity_latents']:.3f} merged {measured['merged_pairs']}{extra}", flush=True)
    if not args.no_copy and args.out.resolve() == PACKAGE_DIR.resolve():
        COPY_DIR.mkdir(exist_ok=True)
        for p in written:
            shutil.copyfile(p, COPY_DIR / p.name)
    if failed:
        print("samples that do not show their claim:\n  " + "\n  ".join(failed), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    raise SystemExit(main())

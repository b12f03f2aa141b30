"""Cosine codebooks are measured in the space the quantizer uses: the assignments and the
quantization MSE equal what vector-quantize-pytorch's own cosine codebook computes (eval mode, the
real classes), and what BEiT-v2's NormEMAVectorQuantizer lookup computes (its rule, from
microsoft/unilm beit2/norm_ema_quantizer.py, written out below)."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F

from vqdoctor.codebooks import find_codebooks, override_metric
from vqdoctor.core.chain import run_stack
from vqdoctor.core.usage import UsageStats
from vqdoctor.io.store import TensorStore

vqp = pytest.importorskip("vector_quantize_pytorch")
warnings.filterwarnings("ignore", module="vector_quantize_pytorch")
BUDGET = 1 << 24


def _latents(n: int = 3000, d: int = 16, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g) * 3 + 1  # far from unit norm: the two metrics' MSEs differ


def _measure(state: dict[str, torch.Tensor], x: torch.Tensor, *, metric: str = "auto"):
    disc = override_metric(find_codebooks(TensorStore.from_dict(state)), metric)
    (stack,) = disc.stacks
    outs = run_stack(stack, x, budget_bytes=BUDGET)
    usage = []
    for out in outs:
        stats = UsageStats.empty(out.codebook.size, out.codebook.dim, metric=out.codebook.metric)
        stats.update(out.idx, out.sq_err, out.vectors)
        usage.append(stats.compute())
    return outs, usage


def _trained_vq(x: torch.Tensor, **kw) -> torch.nn.Module:
    torch.manual_seed(0)
    vq = vqp.VectorQuantize(dim=x.shape[1], codebook_size=64, use_cosine_sim=True, decay=0.8, **kw)
    vq.train()
    for _ in range(5):
        vq(x[None])
    return vq.eval()


def test_vqp_cosine_indices_and_mse_equal_the_library():
    x = _latents()
    vq = _trained_vq(x)
    with torch.no_grad():
        quantize, indices, _ = vq(x[None])
    (out,), (usage,) = _measure(vq.state_dict(), x)
    assert out.codebook.metric == "cosine"
    assert torch.equal(out.idx, indices[0])
    assert usage.used_codes == int(torch.unique(indices).numel())
    library_mse = float(F.mse_loss(quantize[0], F.normalize(x, dim=-1)))  # its commitment loss, unit latents
    assert usage.quantization_mse == pytest.approx(library_mse, rel=1e-4)
    # the same codebook measured as euclidean: raw latents against unit codes, orders of magnitude off
    (_,), (eu,) = _measure(vq.state_dict(), x, metric="euclidean")
    assert eu.quantization_mse > 100 * library_mse
    assert eu.quantization_mse == pytest.approx(float(F.mse_loss(quantize[0], x)), rel=1e-4)


def test_vqp_cosine_residual_chain_equals_the_library():
    x = _latents(d=8)
    torch.manual_seed(0)
    rvq = vqp.ResidualVQ(dim=8, codebook_size=32, num_quantizers=3, use_cosine_sim=True, decay=0.8)
    rvq.train()
    for _ in range(3):
        rvq(x[None])
    rvq.eval()
    with torch.no_grad():
        _, indices, _ = rvq(x[None])  # (1, N, levels)
    outs, _ = _measure(rvq.state_dict(), x)
    assert [o.codebook.metric for o in outs] == ["cosine"] * 3
    for level, out in enumerate(outs):
        assert torch.equal(out.idx, indices[0, :, level]), level


def _norm_ema_lookup(z: torch.Tensor, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """NormEMAVectorQuantizer.forward in eval: l2norm(z), argmin of the squared L2 expansion,
    loss = mse(z_q, z) (beta = 1)."""
    z = F.normalize(z, p=2, dim=-1)
    d = z.pow(2).sum(dim=1, keepdim=True) + weight.pow(2).sum(dim=1) - 2 * torch.einsum("bd,nd->bn", z, weight)
    idx = torch.argmin(d, dim=1)
    return idx, F.mse_loss(weight[idx], z)


def test_beitv2_norm_ema_lookup_and_mse():
    g = torch.Generator().manual_seed(3)
    k, dim = 256, 32
    weight = F.normalize(torch.randn(k, dim, generator=g), dim=1)
    state = {"quantize.embedding.weight": weight, "quantize.embedding.cluster_size": torch.zeros(k),
             "quantize.embedding.embed_avg": weight.clone(), "quantize.embedding.initted": torch.Tensor([True]),
             "quantize.cluster_size": torch.ones(k)}
    z = torch.randn(4000, dim, generator=g) * 5
    idx, loss = _norm_ema_lookup(z, weight)
    (out,), (usage,) = _measure(state, z)
    assert out.codebook.layout == "beitv2-normema" and out.codebook.metric == "cosine"
    assert torch.equal(out.idx, idx)
    assert usage.quantization_mse == pytest.approx(float(loss), rel=1e-4)

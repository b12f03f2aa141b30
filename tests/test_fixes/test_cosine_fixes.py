"""Cosine codebooks repaired in their own space: spherical k-means / revival, unit rows written,
EMA buffers the library's next step keeps; checked by loading the output strictly into
vector-quantize-pytorch's ``VectorQuantize(use_cosine_sim=True)`` and letting its own lookup count
the codes (issue 13: the Euclidean refit wrote rows of norm 0.59-0.71 and the library used 3/512)."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F

from vqdoctor.codebooks import find_codebooks
from vqdoctor.fixes import kmeans_reinit, revive_stack
from vqdoctor.io.store import TensorStore

vqp = pytest.importorskip("vector_quantize_pytorch")
warnings.filterwarnings("ignore", module="vector_quantize_pytorch")
K, D = 512, 16


def _data(n: int = 20000) -> torch.Tensor:
    return torch.randn(n, D, generator=torch.Generator().manual_seed(0)) * 2 + 0.5


def _collapsed(dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """A trained-looking cosine codebook whose 512 rows are copies of 3 directions."""
    torch.manual_seed(0)
    state = dict(vqp.VectorQuantize(dim=D, codebook_size=K, use_cosine_sim=True).state_dict())
    dirs = F.normalize(torch.randn(3, D, generator=torch.Generator().manual_seed(1)), dim=1)
    table = dirs[torch.arange(K) % 3]
    state["_codebook.embed"] = table[None].clone()
    state["_codebook.embed_avg"] = table[None].clone()
    return {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}


def _library_used(state: dict[str, torch.Tensor], x: torch.Tensor) -> tuple[int, torch.nn.Module]:
    vq = vqp.VectorQuantize(dim=D, codebook_size=K, use_cosine_sim=True)
    vq.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()}, strict=True)
    vq.eval()
    with torch.no_grad():
        _, indices, _ = vq(x[None])
    return int(torch.unique(indices).numel()), vq


def _apply(state, res):
    out = {k: v for k, v in state.items() if k not in res.remove}
    out.update(res.updates)
    return out


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("fix", [kmeans_reinit, revive_stack], ids=["kmeans", "revive"])
def test_collapsed_vqp_cosine_codebook_is_repaired_for_the_library(fix, dtype) -> None:
    x = _data()
    state = _collapsed(dtype)
    before, _ = _library_used(state, x)
    assert before == 3
    (stack,) = find_codebooks(TensorStore.from_dict(state)).stacks
    assert stack.codebooks[0].metric == "cosine"  # bf16 included: its rows are unit-norm within 2^-8
    new = _apply(state, fix(state, stack, x))
    assert new["_codebook.embed"].dtype == dtype
    used, vq = _library_used(new, x)
    assert used >= 0.95 * K
    norms = vq._codebook.embed[0].norm(dim=1)
    assert float((norms - 1).abs().max()) < 1e-2  # unit rows, as the cosine codebook stores them
    # EMA state the library keeps: one training step leaves the table where the fix put it
    fixed = vq._codebook.embed[0].clone()
    vq.train()
    vq(x[None, :4096])
    moved = (vq._codebook.embed[0] - fixed).norm(dim=1)
    assert float(moved.median()) < 0.2


def test_norm_ema_kmeans_writes_unit_codes_and_marks_initted() -> None:
    x = _data()
    g = torch.Generator().manual_seed(2)
    dirs = F.normalize(torch.randn(3, D, generator=g), dim=1)
    weight = dirs[torch.arange(K) % 3]
    state = {"quantize.embedding.weight": weight.clone(), "quantize.embedding.cluster_size": torch.zeros(K),
             "quantize.embedding.embed_avg": weight.clone(), "quantize.embedding.initted": torch.Tensor([False]),
             "quantize.cluster_size": torch.zeros(K)}
    (stack,) = find_codebooks(TensorStore.from_dict(state)).stacks
    new = _apply(state, kmeans_reinit(state, stack, x))
    w = new["quantize.embedding.weight"]
    assert float((w.norm(dim=1) - 1).abs().max()) < 1e-5
    assert bool(new["quantize.embedding.initted"].item())  # else its first forward re-runs k-means
    assert float(new["quantize.cluster_size"].sum()) > 0
    for untouched in ("quantize.embedding.cluster_size", "quantize.embedding.embed_avg"):
        assert untouched not in new or torch.equal(new[untouched], state[untouched])
    # NormEMAVectorQuantizer's lookup (microsoft/unilm beit2/norm_ema_quantizer.py): l2norm(z), nearest row
    z = F.normalize(x, dim=1)
    idx = torch.argmin(z.pow(2).sum(1, keepdim=True) + w.pow(2).sum(1) - 2 * z @ w.T, dim=1)
    assert torch.unique(idx).numel() >= 0.95 * K

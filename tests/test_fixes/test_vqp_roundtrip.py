"""Fixed state dicts load strictly into vector-quantize-pytorch's own classes, and its next EMA
training step does not undo the fix."""

from __future__ import annotations

import pytest
import torch

from tests.test_fixes.conftest import planted
from vqdoctor.codebooks import find_codebooks
from vqdoctor.core.assign import nearest_codes
from vqdoctor.fixes import kmeans_reinit, revive_stack, to_simvq
from vqdoctor.io.store import TensorStore

vqp = pytest.importorskip("vector_quantize_pytorch")


def _apply(state, res):
    out = {k: v for k, v in state.items() if k not in res.remove}
    out.update(res.updates)
    return out


def _stack(state):
    disc = find_codebooks(TensorStore.from_dict(state))
    assert len(disc.stacks) == 1
    return disc.stacks[0]


def test_vector_quantize_kmeans_then_train_step() -> None:
    pl = planted(n=3000, k=32)
    torch.manual_seed(0)
    vq = vqp.VectorQuantize(dim=8, codebook_size=32, decay=0.9, kmeans_init=True)
    state = {f"quantizer.{k}": v for k, v in vq.state_dict().items()}
    state["quantizer._codebook.embed"] = pl.collapsed[None].clone()
    res = kmeans_reinit(state, _stack(state), pl.x)
    new = _apply(state, res)
    vq2 = vqp.VectorQuantize(dim=8, codebook_size=32, decay=0.9, kmeans_init=True)
    vq2.load_state_dict({k[len("quantizer."):]: v for k, v in new.items()}, strict=True)
    assert bool(vq2._codebook.initted)
    fixed = vq2._codebook.embed[0].clone()
    cs, avg = vq2._codebook.cluster_size[0], vq2._codebook.embed_avg[0]
    assert torch.allclose(avg / cs[:, None], fixed, atol=1e-5)
    vq2.train()
    vq2(pl.x[None, :512])  # one EMA step: no k-means re-init, codes stay near the fix
    after = vq2._codebook.embed[0]
    assert float((after - fixed).norm(dim=1).max()) < 2.0
    idx, _ = nearest_codes(pl.x, after)
    assert float((torch.bincount(idx, minlength=32) > 0).float().mean()) >= 0.9


def test_residual_vq_revive_loads_strictly() -> None:
    pl = planted(n=3000, k=16)
    torch.manual_seed(0)
    rvq = vqp.ResidualVQ(dim=8, codebook_size=16, num_quantizers=2, kmeans_init=True)
    state = {f"rvq.{k}": v for k, v in rvq.state_dict().items()}
    state["rvq.layers.0._codebook.embed"] = torch.cat([pl.means, torch.full((12, 8), 500.0)])[None]
    state["rvq.layers.0._codebook.initted"] = torch.tensor(True)
    state["rvq.layers.1._codebook.embed"] = torch.randn(1, 16, 8) * 0.5
    state["rvq.layers.1._codebook.initted"] = torch.tensor(True)
    res = revive_stack(state, _stack(state), pl.x)
    new = _apply(state, res)
    assert torch.equal(new["rvq.layers.0._codebook.embed"][0, :4], pl.means)
    rvq2 = vqp.ResidualVQ(dim=8, codebook_size=16, num_quantizers=2, kmeans_init=True)
    rvq2.load_state_dict({k[4:]: v for k, v in new.items()}, strict=True)
    _, indices, _ = rvq2.eval()(pl.x[None])
    used0 = torch.unique(indices[0, :, 0]).numel()
    assert used0 >= 15


@pytest.mark.parametrize("mode", ["exact", "paper"])
def test_simvq_vqp_layout_loads_into_simvq(mode: str) -> None:
    pl = planted(n=2000, k=32)
    vq = vqp.VectorQuantize(dim=8, codebook_size=32)
    state = {f"q.{k}": v for k, v in vq.state_dict().items()}
    state["q._codebook.embed"] = pl.x[:32][None].clone()
    cb = _stack(state).codebooks[0]
    res = to_simvq(state, cb, mode=mode, layout="vqp")  # type: ignore[arg-type]
    new = _apply(state, res)
    sim = vqp.SimVQ(dim=8, codebook_size=32)
    sim.load_state_dict({k[2:]: v for k, v in new.items()}, strict=True)
    if mode == "exact":
        _, indices, _ = sim.eval()(pl.x[None])
        assert torch.equal(indices[0], nearest_codes(pl.x, pl.x[:32])[0])


def test_residual_simvq_layout() -> None:
    rvq = vqp.ResidualVQ(dim=8, codebook_size=16, num_quantizers=2)
    state = {k: v for k, v in rvq.state_dict().items()}
    for i in range(2):
        state[f"layers.{i}._codebook.embed"] = torch.randn(1, 16, 8)
    res = None
    for cb in _stack(state).codebooks:
        r = to_simvq(state, cb, mode="exact", layout="vqp")
        res = r if res is None else res.merge(r)
    new = _apply(state, res)
    sim = vqp.ResidualSimVQ(dim=8, codebook_size=16, num_quantizers=2)
    sim.load_state_dict(new, strict=True)

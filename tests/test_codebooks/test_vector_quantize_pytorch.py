"""vector-quantize-pytorch's real classes (pure Python, installed by the `test` extra)."""

from __future__ import annotations

import warnings

import pytest
import torch
from cb_helpers import discover

vqp = pytest.importorskip("vector_quantize_pytorch")
warnings.filterwarnings("ignore", module="vector_quantize_pytorch")


def _state(module: torch.nn.Module, prefix: str = "") -> dict[str, torch.Tensor]:
    return {prefix + k: v for k, v in module.state_dict().items()}


def test_single_vq_ema_buffers():
    torch.manual_seed(0)
    vq = vqp.VectorQuantize(dim=16, codebook_size=32)
    found = discover(_state(vq))
    (st,) = found.stacks
    (cb,) = st.codebooks
    assert (cb.layout, cb.kind, cb.size, cb.dim, cb.metric) == ("vector-quantize-pytorch", "ema", 32, 16, "euclidean")
    assert torch.equal(cb.codes, vq._codebook.embed[0])
    assert cb.ema.initted is True and cb.ema.cluster_size.shape == (32,) and cb.ema.embed_sum.shape == (32, 16)
    assert not st.residual and st.project_in is None


def test_cosine_variant_is_told_by_unit_norm_codes():
    torch.manual_seed(0)
    cb = discover(_state(vqp.VectorQuantize(dim=16, codebook_size=32, use_cosine_sim=True))).codebooks[0]
    assert (cb.metric, cb.metric_source, cb.metric_evidence) == ("cosine", "detected", "all 32 codes unit-norm ±1e-3")
    assert cb.note is None and cb.unit_rows is True  # the layout gives no reason to doubt unit-norm codes


def test_separate_heads_are_separate_codebooks_with_project_in():
    torch.manual_seed(0)
    vq = vqp.VectorQuantize(dim=16, codebook_size=32, heads=4, separate_codebook_per_head=True,
                            use_cosine_sim=True, kmeans_init=True)
    (st,) = discover(_state(vq, "model.quantizer.")).stacks
    assert [cb.head for cb in st.codebooks] == [0, 1, 2, 3]
    assert all(cb.heads == 4 and not cb.shared_heads and cb.codes.shape == (32, 16) for cb in st.codebooks)
    assert st.project_in.weight.shape == (64, 16) and st.project_out.weight.shape == (16, 64)
    assert torch.equal(st.project_in.weight, vq.project_in.weight)
    # kmeans_init: all zeros until the first batch; reported, no crash
    assert all(cb.ema.initted is False and "not initialised" in cb.note for cb in st.codebooks)
    assert st.codebooks[2].name == "model.quantizer/head2"


def test_shared_heads_from_project_in_width():
    torch.manual_seed(0)
    (cb,) = discover(_state(vqp.VectorQuantize(dim=16, codebook_size=32, heads=2, codebook_dim=4))).codebooks
    assert cb.heads == 2 and cb.shared_heads and cb.dim == 4


def test_residual_vq_levels_and_stack_projection():
    torch.manual_seed(0)
    rvq = vqp.ResidualVQ(dim=16, codebook_size=32, num_quantizers=12, codebook_dim=8)
    (st,) = discover(_state(rvq, "quantizer.")).stacks
    assert st.residual and st.name == "quantizer"
    assert [cb.level for cb in st.codebooks] == list(range(12))  # numeric order: 10, 11 last
    assert st.codebooks[11].name == "quantizer.layers.11"
    assert st.project_in.in_dim == 16 and st.project_in.out_dim == 8
    for i, cb in enumerate(st.codebooks):
        assert torch.equal(cb.codes, rvq.layers[i]._codebook.embed[0])


def test_shared_codebook_rvq():
    torch.manual_seed(0)
    rvq = vqp.ResidualVQ(dim=16, codebook_size=32, num_quantizers=3, shared_codebook=True)
    (st,) = discover(_state(rvq)).stacks
    assert len(st.codebooks) == 3 and st.residual
    assert torch.equal(st.codebooks[0].codes, st.codebooks[2].codes)


def test_grouped_residual_vq_splits_channels():
    torch.manual_seed(0)
    grvq = vqp.GroupedResidualVQ(dim=16, codebook_size=32, num_quantizers=2, groups=2)
    stacks = discover(_state(grvq, "vq.")).stacks
    assert [(s.name, s.group, s.channels) for s in stacks] == [("vq.rvqs.0", 0, (0, 8)), ("vq.rvqs.1", 1, (8, 16))]
    assert all(s.residual and len(s.codebooks) == 2 for s in stacks)


def test_simvq_codes_are_frozen_times_w_transpose():
    torch.manual_seed(0)
    sim = vqp.SimVQ(dim=16, codebook_size=32, frozen_codebook_dim=8)
    (cb,) = discover(_state(sim, "quantizer.")).codebooks
    assert cb.kind == "simvq" and cb.codes.shape == (32, 16)
    assert cb.w.shape == (16, 8) and cb.frozen.shape == (32, 8)
    assert torch.allclose(cb.codes, sim.codebook.detach(), atol=1e-6)


def test_simvq_with_mlp_transform_is_noted_not_computed():
    torch.manual_seed(0)
    mlp = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.SiLU(), torch.nn.Linear(32, 16))
    sim = vqp.SimVQ(dim=16, codebook_size=32, codebook_transform=mlp)
    (cb,) = discover(_state(sim)).codebooks
    assert not cb.assignable and cb.w is None and "not a single Linear" in cb.note
    assert torch.equal(cb.codes, sim.frozen_codebook)


def test_residual_simvq():
    torch.manual_seed(0)
    rsim = vqp.ResidualSimVQ(dim=16, codebook_size=32, num_quantizers=3)
    (st,) = discover(_state(rsim)).stacks
    assert st.residual and [cb.level for cb in st.codebooks] == [0, 1, 2]
    for i, cb in enumerate(st.codebooks):
        assert torch.allclose(cb.codes, rsim.layers[i].codebook.detach(), atol=1e-6)


def test_fsq_and_lfq_are_codebook_free():
    torch.manual_seed(0)
    found = discover(_state(vqp.LFQ(codebook_size=64, dim=16), "lfq."))
    assert not found.stacks
    (free,) = found.codebook_free
    assert free.kind == "lfq" and "lfq.project_in.weight" in free.keys
    found = discover(_state(vqp.ResidualLFQ(dim=16, codebook_size=64, num_quantizers=2)))
    assert [f.name for f in found.codebook_free] == ["layers.0", "layers.1"] and not found.stacks


def test_vqp_codebook_matches_what_the_module_assigns():
    torch.manual_seed(0)
    vq = vqp.VectorQuantize(dim=8, codebook_size=16).eval()
    x = torch.randn(1, 50, 8)
    _, idx, _ = vq(x)
    (cb,) = discover(_state(vq)).codebooks
    assert torch.equal(torch.cdist(x[0], cb.codes).argmin(1), idx[0])

"""run_stack feeds each codebook what its quantizer compares: checked against hand-written
reference loops that follow the libraries' own code."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vqdoctor.codebooks.model import Codebook, Linear, Stack
from vqdoctor.core.chain import prepare_stack, run_stack, stack_input_dim
from vqdoctor.errors import DataError

BUDGET = 1 << 20


def _cb(codes: torch.Tensor, level: int = 0, **kw) -> Codebook:
    return Codebook(name=f"q.layers.{level}", layout="test", kind="plain", codes=codes, level=level, **kw)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_rvq_chain_matches_naive_reference() -> None:
    g = _gen(0)
    d, k, n = 8, 32, 400
    tables = [torch.randn(k, d, generator=g) * s for s in (2.0, 1.0, 0.5)]
    proj = Linear(torch.randn(d, 12, generator=g), torch.randn(d, generator=g))
    stack = Stack("q", "test", tuple(_cb(t, i) for i, t in enumerate(tables)), residual=True, project_in=proj)
    x = torch.randn(n, 12, generator=g)
    outs = run_stack(stack, x, budget_bytes=BUDGET)
    assert [o.codebook.level for o in outs] == [0, 1, 2]

    residual = x @ proj.weight.T + proj.bias
    for t, out in zip(tables, outs):
        dist = torch.cdist(residual.double(), t.double())
        ref = dist.argmin(1)
        assert torch.equal(out.idx, ref)
        torch.testing.assert_close(out.vectors, residual)
        torch.testing.assert_close(out.sq_err.double(), dist.min(1).values ** 2, rtol=1e-4, atol=1e-5)
        assert torch.equal(out.rows, torch.arange(n))
        residual = residual - t[ref]


def test_cosine_and_euclidean_differ_correctly() -> None:
    codes = torch.tensor([[10.0, 0.0], [0.0, 1.0], [0.7, 0.7]])
    x = torch.tensor([[1.0, 0.1], [0.05, 0.6], [5.0, 5.2]])
    eu = run_stack(Stack("q", "t", (_cb(codes),)), x, budget_bytes=BUDGET)[0]
    co = run_stack(Stack("q", "t", (_cb(codes, metric="cosine"),)), x, budget_bytes=BUDGET)[0]
    assert eu.idx.tolist() == [2, 1, 2]  # nearest points
    assert co.idx.tolist() == [0, 1, 2]  # nearest directions
    xn, cn = F.normalize(x, dim=1), F.normalize(codes, dim=1)
    torch.testing.assert_close(co.sq_err, 2 - 2 * (xn * cn[co.idx]).sum(1))
    torch.testing.assert_close(co.vectors, x)  # before normalisation


def test_heads_and_channel_groups() -> None:
    g = _gen(1)
    d, heads, n = 4, 3, 50
    tables = [torch.randn(16, d, generator=g) for _ in range(heads)]
    cbs = tuple(_cb(t, 0, head=h, heads=heads) for h, t in enumerate(tables))
    # the stack reads channels [5, 17) of 20-channel latents
    stack = Stack("q.group1", "t", cbs, channels=(5, 5 + heads * d), group=1)
    x = torch.randn(n, 20, generator=g)
    outs = run_stack(stack, x, budget_bytes=BUDGET)
    assert stack_input_dim(stack) == heads * d
    for h, (t, out) in enumerate(zip(tables, outs)):
        part = x[:, 5 + h * d : 5 + (h + 1) * d]
        assert torch.equal(out.idx, torch.cdist(part, t).argmin(1))
        torch.testing.assert_close(out.vectors, part)


def test_shared_heads_repeat_rows() -> None:
    g = _gen(2)
    d, heads, n = 4, 2, 30
    table = torch.randn(8, d, generator=g)
    stack = Stack("q", "t", (_cb(table, heads=heads, shared_heads=True),))
    x = torch.randn(n, heads * d, generator=g)
    (out,) = run_stack(stack, x, budget_bytes=BUDGET)
    assert out.vectors.shape == (n * heads, d)
    assert out.rows.tolist() == [r for r in range(n) for _ in range(heads)]
    ref = torch.cdist(x.view(n, heads, d), table.expand(n, -1, -1)).argmin(-1).reshape(-1)
    assert torch.equal(out.idx, ref)


def test_residual_heads_subtract_assembled_codes() -> None:
    g = _gen(3)
    d, heads, n = 3, 2, 40
    l0 = [torch.randn(8, d, generator=g) for _ in range(heads)]
    l1 = torch.randn(8, d, generator=g) * 0.3
    cbs = (
        _cb(l0[0], 0, head=0, heads=heads),
        _cb(l0[1], 0, head=1, heads=heads),
        _cb(l1, 1, heads=heads, shared_heads=True),
    )
    stack = Stack("q", "t", cbs, residual=True)
    x = torch.randn(n, heads * d, generator=g)
    outs = run_stack(stack, x, budget_bytes=BUDGET)
    i0 = torch.cdist(x[:, :d], l0[0]).argmin(1)
    i1 = torch.cdist(x[:, d:], l0[1]).argmin(1)
    res = x - torch.cat([l0[0][i0], l0[1][i1]], 1)
    ref = torch.cdist(res.view(n, heads, d), l1.expand(n, -1, -1)).argmin(-1).reshape(-1)
    assert torch.equal(outs[2].idx, ref)
    torch.testing.assert_close(outs[2].vectors, res.view(n * heads, d))


def _dac_reference(z: torch.Tensor, levels: list[tuple[Linear, torch.Tensor, Linear]]) -> list[torch.Tensor]:
    """descript-audio-codec's ResidualVectorQuantize.forward, eval mode, z as (b, D)."""
    residual, indices = z, []
    for in_proj, codebook, out_proj in levels:
        z_e = in_proj(residual)
        enc, cb = F.normalize(z_e), F.normalize(codebook)
        dist = enc.pow(2).sum(1, keepdim=True) - 2 * enc @ cb.t() + cb.pow(2).sum(1, keepdim=True).t()
        idx = (-dist).max(1)[1]
        z_q = out_proj(codebook[idx])  # the stored (un-normalised) entry goes back out
        residual = residual - z_q
        indices.append(idx)
    return indices


def test_dac_projection_chain_matches_reference() -> None:
    g = _gen(4)
    big, small, k, n = 24, 8, 64, 300
    levels = []
    for _ in range(4):
        levels.append(
            (
                Linear(torch.randn(small, big, generator=g) / 4, torch.randn(small, generator=g)),
                torch.randn(k, small, generator=g) * 3,
                Linear(torch.randn(big, small, generator=g) / 3, torch.randn(big, generator=g)),
            )
        )
    cbs = tuple(
        _cb(c, i, metric="cosine", in_proj=ip, out_proj=op) for i, (ip, c, op) in enumerate(levels)
    )
    stack = Stack("quantizer", "dac", cbs, residual=True)
    z = torch.randn(n, big, generator=g)
    outs = run_stack(stack, z, budget_bytes=BUDGET)
    ref = _dac_reference(z, levels)
    for level, (out, r) in enumerate(zip(outs, ref)):
        agree = (out.idx == r).float().mean().item()
        assert agree == 1.0, f"level {level}: {agree}"
    assert stack_input_dim(stack) == big
    # prepared layouts give the same answer
    again = run_stack(stack, z, budget_bytes=BUDGET, prepared=prepare_stack(stack, "cpu"))
    assert all(torch.equal(a.idx, b.idx) for a, b in zip(outs, again))


def test_unassignable_codebooks_get_no_output() -> None:
    a, b = torch.randn(4, 2), torch.randn(4, 2)
    stack = Stack("q", "t", (_cb(a, 0, heads=2, head=0), _cb(b, 0, heads=2, head=1, assignable=False)))
    outs = run_stack(stack, torch.randn(5, 4), budget_bytes=BUDGET)
    assert len(outs) == 1 and outs[0].codebook.head == 0
    chain = Stack("q", "t", (_cb(a, 0), _cb(b, 1, assignable=False), _cb(a, 2)), residual=True)
    assert len(run_stack(chain, torch.randn(5, 2), budget_bytes=BUDGET)) == 1


def test_dimension_mismatch_is_a_clear_error() -> None:
    stack = Stack("quantizer", "t", (_cb(torch.randn(8, 64)),))
    with pytest.raises(DataError) as err:
        run_stack(stack, torch.randn(3, 96), budget_bytes=BUDGET)
    assert "latents have dim=96 but stack 'quantizer' expects 64" in err.value.message
    assert "--channel-axis" in err.value.hint
    grouped = Stack("g", "t", (_cb(torch.randn(8, 4)),), channels=(4, 8))
    with pytest.raises(DataError, match=r"reads channels \[4, 8\)"):
        run_stack(grouped, torch.randn(3, 6), budget_bytes=BUDGET)

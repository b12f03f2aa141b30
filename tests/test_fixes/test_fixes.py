"""The repairs as pure functions: state tensors in, new tensors out."""

from __future__ import annotations

import pytest
import torch

from tests.test_fixes.conftest import SHARES, Planted, code_shares, planted
from vqdoctor.codebooks import find_codebooks
from vqdoctor.core.assign import nearest_codes
from vqdoctor.errors import UsageError
from vqdoctor.fixes import kmeans_reinit, revive_dead, revive_stack, to_simvq
from vqdoctor.io.store import TensorStore


def _one(state: dict[str, torch.Tensor]):
    disc = find_codebooks(TensorStore.from_dict(state))
    assert len(disc.stacks) == 1, disc
    return disc.stacks[0]


def _util(x: torch.Tensor, codes: torch.Tensor, metric: str = "euclidean") -> float:
    idx, _ = nearest_codes(x, codes, metric=metric)
    return float((torch.bincount(idx, minlength=codes.shape[0]) > 0).float().mean())


def test_kmeans_repairs_planted_tokens_collapse(plant: Planted) -> None:
    state = {"quantize.embedding.weight": plant.collapsed.clone(), "decoder.weight": torch.randn(3, 3)}
    assert code_shares(plant.collapsed, plant.means)[0] == 1.0  # every code on the 40% mode
    res = kmeans_reinit(state, _one(state), plant.x, seed=0)
    assert set(res.updates) == {"quantize.embedding.weight"} and not res.remove
    new = res.updates["quantize.embedding.weight"]
    assert _util(plant.x, new) >= 0.95
    shares = code_shares(new, plant.means)
    assert float((shares - torch.tensor(SHARES)).abs().max()) < 0.1
    assert torch.equal(state["quantize.embedding.weight"], plant.collapsed)  # input untouched


def test_kmeans_keeps_dtype_bf16(plant: Planted) -> None:
    state = {"quantize.embedding.weight": plant.collapsed.to(torch.bfloat16)}
    res = kmeans_reinit(state, _one(state), plant.x, iters=5)
    assert res.updates["quantize.embedding.weight"].dtype == torch.bfloat16


def test_kmeans_needs_enough_vectors(plant: Planted) -> None:
    state = {"quantize.embedding.weight": plant.collapsed}
    with pytest.raises(UsageError, match=r"k=40.*N=10"):
        kmeans_reinit(state, _one(state), plant.x[:10])


def test_revive_keeps_live_codes_bit_exact(plant: Planted) -> None:
    codes = plant.means[torch.tensor([0, 0, 1, 2])] + 0.5 * torch.randn(4, 8)
    dead = torch.randn(36, 8) * 50 + 200  # far away: never used
    table = torch.cat([codes, dead])
    state = {"quantize.embedding.weight": table.clone()}
    before_idx, _ = nearest_codes(plant.x, table)
    live = torch.bincount(before_idx, minlength=40) > 0
    res = revive_stack(state, _one(state), plant.x)
    new = res.updates["quantize.embedding.weight"]
    assert torch.equal(new[live], table[live])
    counts = torch.bincount(nearest_codes(plant.x, new)[0], minlength=40)
    assert int((counts == 0).sum()) <= 1
    assert _util(plant.x, new) > _util(plant.x, table)


def test_revive_single_codebook_with_counts(plant: Planted) -> None:
    table = torch.cat([plant.means, torch.full((6, 8), 99.0)])
    state = {"quantize.embedding.weight": table}
    cb = _one(state).codebooks[0]
    counts = torch.tensor([5, 5, 5, 5, 0, 0, 0, 0, 0, 0])
    res, new_cb = revive_dead(state, cb, plant.x, counts=counts, min_count=1)
    new = res.updates["quantize.embedding.weight"]
    assert torch.equal(new[:4], table[:4]) and not torch.equal(new[4:], table[4:])
    assert torch.equal(new_cb.codes, new)


def test_revive_refuses_all_dead(plant: Planted) -> None:
    state = {"quantize.embedding.weight": torch.full((8, 8), 1e4)}
    cb = _one(state).codebooks[0]
    with pytest.raises(UsageError, match="fix kmeans"):
        revive_dead(state, cb, plant.x, counts=torch.zeros(8, dtype=torch.int64))


def test_simvq_exact_same_assignments(plant: Planted) -> None:
    table = plant.x[torch.randperm(4000)[:40]].clone()
    state = {"model.quantize.embedding.weight": table}
    cb = _one(state).codebooks[0]
    res = to_simvq(state, cb, mode="exact", layout="vqp")
    assert res.remove == {"model.quantize.embedding.weight"}
    c, w = res.updates["model.quantize.frozen_codebook"], res.updates["model.quantize.code_transform.weight"]
    eff = c @ w.T
    assert torch.equal(nearest_codes(plant.x, eff)[0], nearest_codes(plant.x, table)[0])
    new_state = {**{k: v for k, v in state.items() if k not in res.remove}, **res.updates}
    found = _one(new_state).codebooks[0]
    assert found.kind == "simvq" and torch.allclose(found.codes, table)


def test_simvq_official_and_paper(plant: Planted) -> None:
    table = plant.x[:40].clone()
    state = {"quantize.embedding.weight": table}
    cb = _one(state).codebooks[0]
    res = to_simvq(state, cb, mode="paper", layout="official", seed=1)
    assert set(res.updates) == {"quantize.embedding.weight", "quantize.embedding_proj.weight", "quantize.embedding_proj.bias"}
    assert not res.remove  # the table key is reused
    assert any("relative residual" in n for n in res.notes)
    c = res.updates["quantize.embedding.weight"]
    assert abs(float(c.std()) - 8**-0.5) < 0.05


def test_kmeans_on_simvq_rewrites_c(plant: Planted) -> None:
    g = torch.Generator().manual_seed(0)
    c = torch.randn(40, 8, generator=g) * 0.01
    state = {"vq.frozen_codebook": c, "vq.code_transform.weight": torch.eye(8) * 2}
    res = kmeans_reinit(state, _one(state), plant.x)
    new_state = {**state, **res.updates}
    eff = new_state["vq.frozen_codebook"] @ new_state["vq.code_transform.weight"].T
    assert torch.equal(new_state["vq.code_transform.weight"], torch.eye(8) * 2)  # W kept
    assert _util(plant.x, eff) >= 0.95


def test_moshi_sums_reset(plant: Planted) -> None:
    p = "quantizer.rvq_first.vq.layers.0._codebook."
    state = {p + "_initialized": torch.tensor([0.0]), p + "cluster_usage": torch.ones(40) * 3,
             p + "embedding_sum": plant.collapsed * 3}
    res = kmeans_reinit(state, _one(state), plant.x)
    usage, sums = res.updates[p + "cluster_usage"], res.updates[p + "embedding_sum"]
    codes = sums / usage.clamp(min=1e-5)[:, None]
    assert _util(plant.x, codes) >= 0.95
    assert float(res.updates[p + "_initialized"]) == 1.0
    assert float(usage.sum()) == pytest.approx(120, rel=0.05)  # the buffer's scale is kept
    assert float(usage.min()) >= 0.1 * 120 / 40  # above Moshi's expiry threshold


def test_residual_levels_fit_residuals() -> None:
    pl = planted(n=3000, k=16)
    state = {f"rvq.layers.{i}.codebook.weight": torch.zeros(16, 8) + i for i in range(2)}
    state = {k.replace("codebook.weight", "_codebook.embed"): v for k, v in state.items()}
    state |= {f"rvq.layers.{i}._codebook.inited": torch.tensor([1.0]) for i in range(2)}
    state |= {f"rvq.layers.{i}._codebook.cluster_size": torch.ones(16) for i in range(2)}
    state |= {f"rvq.layers.{i}._codebook.embed_avg": torch.zeros(16, 8) for i in range(2)}
    stack = _one(state)
    assert stack.residual and len(stack.codebooks) == 2
    res = kmeans_reinit(state, stack, pl.x)
    c0, c1 = res.updates["rvq.layers.0._codebook.embed"], res.updates["rvq.layers.1._codebook.embed"]
    idx0, _ = nearest_codes(pl.x, c0)
    r = pl.x - c0[idx0]
    assert _util(r, c1) >= 0.95
    assert float(r.norm(dim=1).mean()) > float(c1.norm(dim=1).mean()) * 0.3  # level 1 lives at residual scale
    assert float(c1.norm(dim=1).mean()) < float(c0.norm(dim=1).mean())
    for i in range(2):
        cs, avg = res.updates[f"rvq.layers.{i}._codebook.cluster_size"], res.updates[f"rvq.layers.{i}._codebook.embed_avg"]
        assert torch.allclose(avg / cs[:, None], res.updates[f"rvq.layers.{i}._codebook.embed"], atol=1e-5)


def test_revive_on_simvq_counts_the_codes_as_written(plant: Planted) -> None:
    """A rank-deficient W cannot place the revived rows where k-means wanted them: the note counts
    what C W^T really holds (the issue: "570 revived, all now used" with 345 dead afterwards)."""
    g = torch.Generator().manual_seed(0)
    w = torch.zeros(8, 8)
    w[0, 0] = 1.0  # rank 1: C W^T lives on a line
    c = torch.randn(40, 8, generator=g)
    c[4:] = 1e3  # 36 codes far away: dead
    state = {"vq.frozen_codebook": c, "vq.code_transform.weight": w}
    res = revive_stack(state, _one(state), plant.x, min_count=150)
    new = {**state, **res.updates}
    eff = new["vq.frozen_codebook"] @ new["vq.code_transform.weight"].T
    counts = torch.bincount(nearest_codes(plant.x, eff)[0], minlength=40)
    revived = torch.bincount(nearest_codes(plant.x, c @ w.T)[0], minlength=40) < 150
    dead_after, revived_used = int((counts < 150).sum()), int((counts[revived] >= 150).sum())
    assert 0 < dead_after < 40
    note = next(n for n in res.notes if "revived" in n)
    assert f"{revived_used} of them now used at least 150 times" in note, note
    assert f"{dead_after} of 40 codes dead after the fix" in note, note


def test_simvq_exact_warns_about_duplicate_rows(plant: Planted) -> None:
    table = plant.x[:40].clone()
    table[10:20] = table[0]  # 10 copies of one code: W cannot separate them
    state = {"quantize.embedding.weight": table}
    res = to_simvq(state, _one(state).codebooks[0], mode="exact")
    warn = [n for n in res.notes if "WARNING" in n]
    assert warn and "11 of 40 codes duplicate" in warn[0] and "fix revive" in warn[0]
    clean = {"quantize.embedding.weight": plant.x[:40].clone()}
    assert not [n for n in to_simvq(clean, _one(clean).codebooks[0], mode="exact").notes if "WARNING" in n]


def test_no_two_codes_closer_than_float32_resolution_after_a_fix(plant: Planted) -> None:
    from vqdoctor.fixes._separate import min_separation, separate_codes, too_close

    x = torch.cat([plant.x[:30], plant.x[:30]])  # 30 distinct vectors for 40 codes: k-means must duplicate
    state = {"quantize.embedding.weight": plant.collapsed.clone()}
    res = kmeans_reinit(state, _one(state), x)
    new = res.updates["quantize.embedding.weight"]
    flag, _ = too_close(new, min_separation(new, x))
    assert not bool(flag.any())
    assert any("moved" in n for n in res.notes)
    # codes 1e-4 apart (the case) are moved; the ones that must stay, stay
    table = plant.means.repeat(2, 1)
    table[4:] += 1e-4
    keep = torch.tensor([True] * 4 + [False] * 4)
    out = separate_codes(table, plant.x, movable=~keep, seed=0)
    assert torch.equal(out[keep], table[keep])
    assert not bool(too_close(out, min_separation(out, plant.x))[0].any())
    assert torch.equal(out, separate_codes(table, plant.x, movable=~keep, seed=0))  # deterministic

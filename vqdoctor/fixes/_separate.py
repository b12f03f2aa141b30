"""No two codes closer than the lookup can tell apart, after a fix.

A library looks codes up in float32 (``||c||^2 - 2 x.c`` or ``cdist``); two codes much closer
than that arithmetic's resolution share their vectors by rounding luck, so one of them is dead in
the library's own lookup while an exact search may count both as used (issue: codes 1e-4 apart,
510 vs 512 used). After k-means or a revive we therefore move every code that lies within

    MIN_SEPARATION = sqrt(eps_float32) * s  (about 3.5e-4 * s)

of another code, ``s`` the root-mean-square norm of the vectors (or of the codes, if larger):
the float32 error of a squared distance is about eps * s^2, and a code that far from its twin
changes the squared distance of a vector at distance r by about 2 r * 3.5e-4 s, well above that
error for any vector the codes compete for. The code that moves is the later one of the pair (a
code the fix must keep, e.g. a live code of ``revive``, never moves); it goes to the worst-served
vector not yet taken (largest squared distance to its code, distinct vectors, deterministic), or,
when every vector is served exactly (fewer distinct vectors than codes), to its twin plus a seeded
random offset of 4 x MIN_SEPARATION.
"""

from __future__ import annotations

import math

import torch

from vqdoctor.core.assign import nearest_codes, nearest_other

MIN_SEPARATION_REL = math.sqrt(torch.finfo(torch.float32).eps)  # x RMS norm
_ROUNDS = 3


def min_separation(codes: torch.Tensor, vectors: torch.Tensor) -> float:
    """The separation below which two codes count as one for a float32 lookup (module docstring)."""
    s = max(float(vectors.double().pow(2).sum(1).mean().sqrt()), float(codes.double().pow(2).sum(1).mean().sqrt()))
    return MIN_SEPARATION_REL * max(s, 1e-30)


def too_close(codes: torch.Tensor, delta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``(flag (K,) bool, partner (K,) int64)``: codes whose nearest other code is within ``delta``."""
    if codes.shape[0] < 2:
        return torch.zeros(codes.shape[0], dtype=torch.bool), torch.zeros(codes.shape[0], dtype=torch.int64)
    partner, _ = nearest_other(codes)
    exact = (codes - codes[partner]).double().pow(2).sum(1)  # recomputed without cancellation
    return (exact < delta * delta).cpu(), partner.cpu()


def separate_codes(
    table: torch.Tensor,  # (K, d) float32, the codes as compared
    vectors: torch.Tensor,  # (N, d) the vectors the codes serve
    *,
    movable: torch.Tensor | None = None,  # (K,) bool: codes the fix may move (None: all)
    seed: int = 0,
    notes: list[str] | None = None,
    name: str = "",
    metric: str = "euclidean",
) -> torch.Tensor:
    """``table`` with every movable code that lies within :func:`min_separation` of another code
    moved (module docstring). Returns a new tensor; notes say how many moved. ``metric="cosine"``
    compares directions (unit rows, unit vectors); a moved row keeps its stored length."""
    table = table.detach().to("cpu", torch.float32).clone()
    vectors = vectors.detach().to("cpu", torch.float32)
    if metric == "cosine":
        lengths = table.norm(dim=1, keepdim=True)
        units = separate_codes(torch.nn.functional.normalize(table, dim=1), torch.nn.functional.normalize(vectors, dim=1),
                               movable=movable, seed=seed, notes=notes, name=name)
        changed = (units != torch.nn.functional.normalize(table, dim=1)).any(1)
        table[changed] = units[changed] * lengths[changed]
        return table
    k = table.shape[0]
    can = torch.ones(k, dtype=torch.bool) if movable is None else movable.to("cpu").clone()
    delta = min_separation(table, vectors)
    gen = torch.Generator().manual_seed(int(seed) + 7919)
    moved = 0
    for _ in range(_ROUNDS):
        flag, partner = too_close(table, delta)
        # of each close pair, move the later code (or the only movable one)
        idx = torch.arange(k)
        move = flag & can & ((partner < idx) | ~can[partner] | ~flag[partner])
        if not bool(move.any()):
            break
        targets = move.nonzero().flatten()
        _, d2 = nearest_codes(vectors, table)
        order = torch.argsort(d2, descending=True, stable=True)
        taken = 0
        for j in targets.tolist():
            placed = False
            while taken < order.numel() and float(d2[order[taken]]) > delta * delta:
                cand = vectors[order[taken]]
                taken += 1
                if float((table - cand).pow(2).sum(1).min()) >= (2 * delta) ** 2:
                    table[j] = cand
                    placed = True
                    break
            if not placed:
                u = torch.randn(table.shape[1], generator=gen)
                table[j] = table[int(partner[j])] + 4 * delta * u / u.norm().clamp_min(1e-30)
            moved += 1
    if moved and notes is not None:
        notes.append(f"{name}: moved {moved} code(s) that lay within {delta:.3g} of another code (closer than a "
                     "float32 lookup can separate) to the worst-served vectors.")
    return table

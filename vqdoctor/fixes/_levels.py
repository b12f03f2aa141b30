"""Walk a stack level by level, feeding each level the vectors its codebooks compare *given the
levels already repaired* (residual chains: the residuals of the new codes of earlier levels)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import replace

import torch

from vqdoctor.core.assign import DEFAULT_BUDGET_BYTES
from vqdoctor.core.chain import LevelOutput, run_stack
from vqdoctor.core.codebook import Codebook, Stack
from vqdoctor.core.finite import require_finite
from vqdoctor.errors import DataError

# fit(codebook, its level output) -> the codebook with its new codes (or the same one)
Fit = Callable[[Codebook, LevelOutput], Codebook]


def gather_latents(latents: torch.Tensor | Iterable[torch.Tensor], *, max_vectors: int | None = None) -> torch.Tensor:
    """One (N, D) float32 tensor from a tensor or an iterable of (b, D) batches."""
    if isinstance(latents, torch.Tensor):
        x = latents
    else:
        parts, n = [], 0
        for batch in latents:
            parts.append(batch.detach().to(torch.float32))
            n += int(batch.shape[0])
            if max_vectors is not None and n >= max_vectors:
                break
        if not parts:
            raise DataError("no latents were given (the data source is empty)")
        x = torch.cat(parts)
    if x.ndim != 2:
        raise DataError(f"latents must be a (N, d) matrix here, got shape {tuple(x.shape)}")
    if max_vectors is not None:
        x = x[:max_vectors]
    if x.shape[0] == 0:
        raise DataError("no latents were given (N=0)")
    x = x.detach().to(torch.float32)
    require_finite(x, "the latents")
    return x


def level_groups(stack: Stack) -> list[list[int]]:
    """Indices of the stack's codebooks by level (residual chains), else all in one group."""
    if not stack.residual:
        return [list(range(len(stack.codebooks)))]
    groups: dict[int, list[int]] = {}
    for i, cb in enumerate(stack.codebooks):
        groups.setdefault(cb.level, []).append(i)
    return list(groups.values())


def refit_stack(stack: Stack, x: torch.Tensor, fit: Fit, *, budget_bytes: int = DEFAULT_BUDGET_BYTES) -> Stack:
    """Apply ``fit`` to every assignable codebook, level by level; return the repaired stack."""
    books = list(stack.codebooks)
    for group in level_groups(stack):
        upto = max(group) + 1
        outs = run_stack(replace(stack, codebooks=tuple(books[:upto])), x, budget_bytes=budget_bytes)
        by_name = {o.codebook.name: o for o in outs}
        for i in group:
            out = by_name.get(books[i].name)
            if out is not None:
                books[i] = fit(books[i], out)
    return replace(stack, codebooks=tuple(books))

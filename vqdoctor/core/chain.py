"""Feed each codebook of a :class:`Stack` exactly what its quantizer compares.

Per batch of latents ``x`` (b, D):
1. take ``stack.channels`` of x (channel groups), apply ``stack.project_in``;
2. for each level (codebooks sharing ``level``, in order): its input is the running residual
   for residual stacks, else the projected input; apply the codebook's ``in_proj`` (DAC);
   split heads (``heads > 1``: the projected input has ``heads * d`` channels and head h reads
   slice h; ``shared_heads``: one table sees every head's slice, rows repeated); search the
   nearest code with the codebook's metric;
3. residual stacks then subtract the level's quantized value, in stack space: the chosen
   *stored* codes (un-normalised, also for cosine lookups, as DAC's ``decode_code`` does),
   assembled over heads, passed through ``out_proj`` where the codebook has one (DAC).

Codebooks with ``assignable=False`` get no output. In a residual stack the chain stops there,
since the input of later levels would depend on codes we cannot compute.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from vqdoctor.core.assign import PreparedCodes, nearest_codes, prepare_codes
from vqdoctor.core.codebook import Codebook, Stack
from vqdoctor.errors import DataError


@dataclass(frozen=True)
class LevelOutput:
    codebook: Codebook
    vectors: torch.Tensor  # (m, d) compared space, before cosine normalisation
    idx: torch.Tensor  # (m,) int64 nearest code
    sq_err: torch.Tensor  # (m,) squared distance in the compared space (normalised for cosine)
    rows: torch.Tensor  # (m,) int64 input row each vector came from (shared heads repeat rows)


def stack_input_dim(stack: Stack) -> int | None:
    """Width of the vectors the stack reads from the latents (after channel selection):
    ``project_in``'s input, else the first codebook's ``in_proj`` input, else ``heads * d``.
    None for a stack without codebooks."""
    if stack.project_in is not None:
        return stack.project_in.in_dim
    if not stack.codebooks:
        return None
    first = stack.codebooks[0]
    if first.in_proj is not None:
        return first.in_proj.in_dim
    return first.dim * max(1, first.heads)


def prepare_stack(stack: Stack, device: torch.device | str) -> tuple[PreparedCodes | None, ...]:
    """Search layouts of the stack's codebooks on ``device`` (None where not assignable), to
    pass to :func:`run_stack` when many batches go through the same stack."""
    return tuple(
        prepare_codes(cb.codes, metric=cb.metric, device=device) if cb.assignable else None
        for cb in stack.codebooks
    )


def run_stack(
    stack: Stack,
    x: torch.Tensor,  # (b, D) latents
    *,
    budget_bytes: int,
    prepared: Sequence[PreparedCodes | None] | None = None,  # from prepare_stack
) -> list[LevelOutput]:
    """One :class:`LevelOutput` per assignable codebook, in the stack's order."""
    if x.ndim != 2:
        raise DataError(f"latents must be a (N, d) matrix here, got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise DataError(f"latents must be floating point, got {x.dtype}")
    expected = stack_input_dim(stack)
    if stack.channels is not None:
        lo, hi = stack.channels
        if x.shape[1] < hi:
            raise DataError(
                f"latents have dim={x.shape[1]} but stack {stack.name!r} reads channels "
                f"[{lo}, {hi})",
                "pass --channel-axis or --codebook",
            )
        x = x[:, lo:hi]
    if expected is not None and x.shape[1] != expected:
        raise DataError(
            f"latents have dim={x.shape[1]} but stack {stack.name!r} expects {expected}",
            "pass --channel-axis or --codebook",
        )
    if prepared is not None and len(prepared) != len(stack.codebooks):
        raise DataError(
            f"prepared holds {len(prepared)} codebooks but stack {stack.name!r} has "
            f"{len(stack.codebooks)}"
        )
    h = x.to(torch.float32)
    if stack.project_in is not None:
        h = stack.project_in(h)
    b = h.shape[0]
    rows = torch.arange(b, device=h.device)
    residual = h
    outputs: list[LevelOutput] = []
    for level in _levels(stack):
        inp = residual if stack.residual else h
        first = stack.codebooks[level[0]]
        v = first.in_proj(inp) if first.in_proj is not None else inp
        code_space = torch.zeros_like(v) if stack.residual else None
        for i in level:
            cb = stack.codebooks[i]
            if not cb.assignable:
                if stack.residual:
                    return outputs
                continue
            vecs, vrows, sl = _head_vectors(cb, v, rows)
            ready = prepared[i] if prepared is not None else None
            codes = ready if ready is not None else cb.codes
            idx, sq = nearest_codes(vecs, codes, metric=cb.metric, budget_bytes=budget_bytes)
            outputs.append(LevelOutput(cb, vecs, idx, sq, vrows))
            if code_space is not None:
                q = cb.codes.to(device=v.device, dtype=torch.float32)[idx]  # stored codes
                code_space[:, sl] = q.reshape(b, -1)
        if code_space is not None:
            quantized = first.out_proj(code_space) if first.out_proj is not None else code_space
            residual = residual - quantized
    return outputs


def _levels(stack: Stack) -> list[list[int]]:
    """Indices of the stack's codebooks grouped by level, levels in order of appearance
    (non-residual stacks: every codebook reads the same input, one group each)."""
    if not stack.residual:
        return [[i] for i in range(len(stack.codebooks))]
    groups: dict[int, list[int]] = {}
    for i, cb in enumerate(stack.codebooks):
        groups.setdefault(cb.level, []).append(i)
    return list(groups.values())


def _head_vectors(
    cb: Codebook, v: torch.Tensor, rows: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, slice]:
    """(vectors (m, d), rows (m,), channel slice of v they came from) for one codebook."""
    b, width = v.shape
    d, heads = cb.dim, max(1, cb.heads)
    if heads == 1:
        if width != d:
            raise DataError(
                f"codebook {cb.name!r} has dim={d} but its input has {width} channels",
                "pass --channel-axis or --codebook",
            )
        return v, rows, slice(0, d)
    if width != heads * d:
        raise DataError(
            f"codebook {cb.name!r} has {heads} heads of dim={d} but its input has {width} "
            f"channels (expected {heads * d})",
            "pass --channel-axis or --codebook",
        )
    if cb.shared_heads:  # (b, heads*d) -> (b*heads, d), row r's head h at r*heads + h
        return v.reshape(b * heads, d), rows.repeat_interleave(heads), slice(0, heads * d)
    sl = slice(cb.head * d, (cb.head + 1) * d)
    return v[:, sl], rows, sl

"""k-means re-initialisation of a stack's codebooks (the paper's "pretrain without VQ, then
initialise the tokens from the pretrained encoder's outputs").

For each codebook, k = its size, clustered in the space its codes live in (after the stack's
``project_in`` and the codebook's ``in_proj``: :func:`vqdoctor.core.chain.run_stack` gives exactly
the vectors it compares). Residual stacks are refitted level by level, each level on the residuals
left by the *new* codes of the levels before it. Cosine codebooks get spherical k-means; the stored
rows are unit vectors when the old table was stored normalised (vector-quantize-pytorch's cosine
codebook), else the unit direction scaled by the members' mean projection on it (the
least-squares length along that direction: DAC decodes with the stored, un-normalised rows).

SimVQ codebooks (codes = C W^T + b): ``simvq="rewrite-c"`` (default) keeps the trained W and solves
C = (M - b) W^-T when W is square and well conditioned, else writes W = I and C = M - b (needs
d_c = d), so the effective codebook equals the centroids M; ``simvq="refit-w"`` keeps the frozen C
and fits W (and b where stored) by least squares C W^T + b ~ M -- a rank-d_c linear image of C
cannot hit K arbitrary centroids, so the fit residual is reported and usually large.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from typing import Literal, Protocol

import torch

from vqdoctor.core.assign import DEFAULT_BUDGET_BYTES, nearest_codes
from vqdoctor.core.chain import LevelOutput
from vqdoctor.core.codebook import Codebook, Stack
from vqdoctor.core.kmeans import KMeansResult, kmeans
from vqdoctor.errors import UsageError
from vqdoctor.fixes._levels import gather_latents, refit_stack
from vqdoctor.fixes._separate import separate_codes
from vqdoctor.fixes._state import FixResult, StateEdit, write_codes

SimvqTarget = Literal["rewrite-c", "refit-w"]


class Cluster(Protocol):
    """k-means with :func:`vqdoctor.core.kmeans.kmeans`'s signature (e.g. one that reduces its
    Lloyd statistics over torchrun ranks: ``vqdoctor.distributed.kmeans_across_ranks``)."""

    def __call__(self, x: torch.Tensor, k: int, *, iters: int, seed: int, metric: str,
                 budget_bytes: int) -> KMeansResult: ...
_COND_MAX = 1e4


def kmeans_reinit(
    state: dict[str, torch.Tensor] | object,  # Mapping[str, Tensor] (e.g. a TensorStore)
    stack: Stack,
    latents: torch.Tensor | Iterable[torch.Tensor],  # (N, D) stack input, or batches of it
    *,
    iters: int = 20,
    seed: int = 0,
    simvq: SimvqTarget = "rewrite-c",
    max_vectors: int | None = None,
    budget_bytes: int = DEFAULT_BUDGET_BYTES,
    cluster: Cluster = kmeans,
) -> FixResult:
    """Re-initialise every assignable codebook of ``stack`` by k-means (``cluster``) on ``latents``.
    Returns the new tensors (codes, EMA buffers, SimVQ C/W) by state key."""
    if simvq not in ("rewrite-c", "refit-w"):
        raise UsageError(f"unknown SimVQ target {simvq!r}; expected 'rewrite-c' or 'refit-w'")
    x = gather_latents(latents, max_vectors=max_vectors)
    edit = StateEdit(state)  # type: ignore[arg-type]
    result = FixResult()

    def fit(cb: Codebook, out: LevelOutput) -> Codebook:
        vecs = out.vectors
        try:
            km = cluster(vecs, cb.size, iters=iters, seed=seed, metric=cb.metric, budget_bytes=budget_bytes)
        except UsageError as err:
            raise UsageError(f"codebook {cb.name!r}: {err.message}", err.hint) from None
        codes = separate_codes(km.centroids.cpu(), vecs.cpu(), seed=seed, notes=result.notes, name=cb.name,
                               metric=cb.metric)
        if cb.metric == "cosine":
            codes = _stored_cosine(cb, codes, vecs.cpu(), out.idx.cpu())
        counts = km.counts.cpu()
        if not torch.equal(codes, km.centroids.cpu()):  # codes were moved apart: count again
            idx, _ = nearest_codes(vecs, codes.to(vecs.device), metric=cb.metric, budget_bytes=budget_bytes)
            counts = torch.bincount(idx, minlength=cb.size).cpu()
        used = int((counts > 0).sum())
        result.notes.append(
            f"{cb.name}: k-means k={cb.size} on {vecs.shape[0]} vectors ({cb.metric}), {km.iters} iterations, "
            f"inertia {km.inertia / max(1, vecs.numel()):.4g} per element, {used}/{cb.size} codes used."
        )
        if cb.kind == "simvq":
            codes = _write_simvq(edit, cb, codes, simvq, result.notes)
        else:
            result.notes.extend(write_codes(edit, cb, codes, counts))
        return replace(cb, codes=codes.to(torch.float32).contiguous())

    refit_stack(stack, x, fit, budget_bytes=budget_bytes)
    result.updates = edit.updates
    return result


def _stored_cosine(cb: Codebook, units: torch.Tensor, vecs: torch.Tensor, _idx: torch.Tensor) -> torch.Tensor:
    """Rows to store for a cosine codebook: unit rows where the layout stores them so
    (``cb.unit_rows``: vector-quantize-pytorch and BEiT-v2 look up the stored rows) or, where the
    layout does not say, the old table was unit-norm; else unit direction x mean projection of the
    members (assignments are by direction; DAC decodes the stored rows)."""
    norms = cb.codes.norm(dim=1)
    unit = cb.unit_rows if cb.unit_rows is not None else bool(((norms - 1).abs() < 1e-3).all())
    if unit:
        return units
    from vqdoctor.core.assign import nearest_codes

    idx, _ = nearest_codes(vecs, units, metric="cosine")
    proj = (vecs * units[idx]).sum(1)  # (N,)
    k = units.shape[0]
    total = torch.zeros(k, dtype=torch.float64).index_add_(0, idx, proj.to(torch.float64))
    count = torch.bincount(idx, minlength=k).to(torch.float64)
    scale = torch.where(count > 0, total / count.clamp_min(1), norms.to(torch.float64).mean())
    return units * scale.to(torch.float32).clamp_min(1e-6)[:, None]


def simvq_parts(cb: Codebook) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(C (K, d_c), W (d, d_c), b (d,)) of a SimVQ codebook; b recovered from codes - C W^T."""
    if cb.frozen is None or cb.w is None:
        raise UsageError(
            f"SimVQ codebook {cb.name!r} has no evaluable linear code transform",
            "Only a single Linear (or matrix) W can be refitted.",
        )
    c, w = cb.frozen.to(torch.float32), cb.w.to(torch.float32)
    b = (cb.codes - c @ w.T).mean(0)
    return c, w, b


def _put_w(edit: StateEdit, cb: Codebook, w: torch.Tensor) -> None:
    """W in the stored form: nn.Linear weight (d, d_c), or a plain matrix M = W^T used as C @ M."""
    key = cb.keys["w"]
    linear_form = key.endswith("weight") or tuple(edit.current(key).shape) == tuple(w.shape) and w.shape[0] != w.shape[1]
    edit.put(key, w if linear_form else w.T.contiguous())


def _write_simvq(edit: StateEdit, cb: Codebook, m: torch.Tensor, target: SimvqTarget, notes: list[str]) -> torch.Tensor:
    """Write centroids ``m`` (K, d) into a SimVQ codebook; return the effective codes written."""
    c, w, b = simvq_parts(cb)
    has_bias = "bias" in cb.keys
    if target == "refit-w":
        design = torch.cat([c, torch.ones(c.shape[0], 1)], 1) if has_bias else c
        sol = torch.linalg.lstsq(design.double(), (m if has_bias else m - b).double()).solution.float()
        w_new = sol[: c.shape[1]].T.contiguous()  # (d, d_c)
        b_new = sol[c.shape[1]] if has_bias else b
        _put_w(edit, cb, w_new)
        if has_bias:
            edit.put(cb.keys["bias"], b_new)
        eff = c @ w_new.T + b_new
        rel = float(((eff - m) ** 2).sum() / ((m - m.mean(0)) ** 2).sum().clamp_min(1e-30))
        notes.append(f"{cb.name}: SimVQ W refitted by least squares (C frozen); relative residual {rel:.3g}.")
        return eff
    d, d_c = w.shape
    if d == d_c and float(torch.linalg.cond(w)) < _COND_MAX:
        c_new = torch.linalg.solve(w.double(), (m - b).double().T).T.float()  # C W^T = M - b
        notes.append(f"{cb.name}: SimVQ frozen C rewritten so that C W^T + b equals the centroids (W kept).")
    elif d == d_c:
        c_new = m - b
        _put_w(edit, cb, torch.eye(d))
        notes.append(f"{cb.name}: SimVQ W is ill-conditioned: wrote W = I and C = centroids - b.")
    else:
        c_new = torch.linalg.lstsq(w.double(), (m - b).double().T).solution.T.float()
        eff = c_new @ w.T + b
        rel = float(((eff - m) ** 2).sum() / ((m - m.mean(0)) ** 2).sum().clamp_min(1e-30))
        notes.append(f"{cb.name}: SimVQ W is {d}x{d_c}: C fitted by least squares, relative residual {rel:.3g}.")
    edit.put(cb.keys["frozen"], c_new)
    w_now = torch.eye(d) if (d == d_c and float(torch.linalg.cond(w)) >= _COND_MAX) else w
    return c_new @ w_now.T + b

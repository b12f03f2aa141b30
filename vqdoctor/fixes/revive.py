"""Revive dead codes: replace only the codes used fewer than ``min_count`` times, with centroids of
the worst-served regions of the data; every live code (and its EMA entries) stays bit-exact.

The new codes come from :func:`vqdoctor.core.kmeans.kmeans_extend`: D^2 seeding against the live
codes (new codes start where the quantization error is largest, i.e. inside the most loaded /
highest-error cells, which they split), then Lloyd iterations that move only the new codes while
the live ones stay fixed. Residual stacks are revived level by level, each level on the residuals
of the (revived) levels before it. Cosine codebooks: spherical, stored unit rows where the table
is stored normalised.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace

import torch

from vqdoctor.core.assign import DEFAULT_BUDGET_BYTES, nearest_codes
from vqdoctor.core.chain import LevelOutput
from vqdoctor.core.codebook import Codebook, Stack
from vqdoctor.core.kmeans import LloydProgress, kmeans_extend
from vqdoctor.errors import UsageError
from vqdoctor.fixes._levels import gather_latents, refit_stack
from vqdoctor.fixes._separate import separate_codes
from vqdoctor.fixes._state import FixResult, StateEdit, write_codes
from vqdoctor.fixes.kmeans_reinit import _stored_cosine, simvq_parts


def revive_dead(
    state: Mapping[str, torch.Tensor],
    codebook: Codebook,
    vectors: torch.Tensor,  # (N, d) vectors this codebook compares (a sample of them)
    *,
    counts: torch.Tensor | None = None,  # (K,) usage over the full data; None: counted on `vectors`
    min_count: int = 1,
    iters: int = 20,
    seed: int = 0,
    budget_bytes: int = DEFAULT_BUDGET_BYTES,
) -> tuple[FixResult, Codebook]:
    """Replace the dead codes of one codebook. Returns the changes and the revived codebook."""
    if min_count < 1:
        raise UsageError(f"--min-count must be >= 1, got {min_count}")
    edit = StateEdit(state)
    result = FixResult()
    new_cb = _revive(edit, codebook, vectors, counts, min_count=min_count, iters=iters, seed=seed,
                     budget_bytes=budget_bytes, notes=result.notes)
    result.updates = edit.updates
    return result, new_cb


def revive_stack(
    state: Mapping[str, torch.Tensor],
    stack: Stack,
    latents: torch.Tensor | Iterable[torch.Tensor],  # (N, D) stack input, or batches of it
    *,
    min_count: int = 1,
    iters: int = 20,
    seed: int = 0,
    max_vectors: int | None = None,
    budget_bytes: int = DEFAULT_BUDGET_BYTES,
    progress: LloydProgress | None = None,
) -> FixResult:
    """Revive the dead codes of every assignable codebook of ``stack``, level by level; usage
    is counted on ``latents`` (given the already revived levels). ``progress`` hears about every
    Lloyd iteration."""
    if min_count < 1:
        raise UsageError(f"--min-count must be >= 1, got {min_count}")
    x = gather_latents(latents, max_vectors=max_vectors)
    edit = StateEdit(state)
    result = FixResult()

    def fit(cb: Codebook, out: LevelOutput) -> Codebook:
        return _revive(edit, cb, out.vectors, None, min_count=min_count, iters=iters, seed=seed,
                       budget_bytes=budget_bytes, notes=result.notes, progress=progress)

    refit_stack(stack, x, fit, budget_bytes=budget_bytes)
    result.updates = edit.updates
    return result


def _revive(
    edit: StateEdit,
    cb: Codebook,
    vectors: torch.Tensor,
    counts: torch.Tensor | None,
    *,
    min_count: int,
    iters: int,
    seed: int,
    budget_bytes: int,
    notes: list[str],
    progress: LloydProgress | None = None,
) -> Codebook:
    vectors = vectors.detach().to(torch.float32)
    if vectors.ndim != 2 or vectors.shape[1] != cb.dim:
        raise UsageError(f"codebook {cb.name!r} has dim={cb.dim} but the vectors have shape {tuple(vectors.shape)}")
    codes = cb.codes.to(device=vectors.device, dtype=torch.float32)
    if counts is None:
        idx, _ = nearest_codes(vectors, codes, metric=cb.metric, budget_bytes=budget_bytes)
        counts = torch.bincount(idx, minlength=cb.size)
    counts = counts.to("cpu")
    if counts.shape != (cb.size,):
        raise UsageError(f"counts for {cb.name!r} must have shape ({cb.size},), got {tuple(counts.shape)}")
    dead = counts < min_count
    n_dead = int(dead.sum())
    if n_dead == 0:
        notes.append(f"{cb.name}: no dead codes (min count {min_count}); left unchanged.")
        return cb
    if n_dead == cb.size:
        raise UsageError(
            f"codebook {cb.name!r}: all {cb.size} codes are dead on these {vectors.shape[0]} vectors",
            "Nothing live to keep: use `vqdoctor fix kmeans` to re-initialise the whole codebook.",
        )
    if n_dead > vectors.shape[0]:
        raise UsageError(
            f"codebook {cb.name!r}: {n_dead} dead codes but only N={vectors.shape[0]} vectors to place them",
            "Pass more data (at least one vector per dead code).",
        )
    live = ~dead
    ext = kmeans_extend(vectors, codes[live.to(codes.device)], n_dead, iters=iters, seed=seed,
                        metric=cb.metric, budget_bytes=budget_bytes, progress=progress)
    new_rows = ext.centroids.cpu()
    if cb.metric == "cosine":
        new_rows = _stored_cosine(cb, new_rows, vectors.cpu(), torch.empty(0))
    table = cb.codes.clone().to(torch.float32)
    table[dead] = new_rows
    table = separate_codes(table, vectors.cpu(), movable=dead, seed=seed, notes=notes, name=cb.name, metric=cb.metric)
    if cb.kind == "simvq":
        notes.append(f"{cb.name}: SimVQ codes are C W^T: reviving rewrites rows of the frozen C only.")
        table = _write_simvq_rows(edit, cb, table, dead)  # the codes C W^T + b actually written
    else:
        table = _as_stored(edit, cb, table)
    # count on the codes as written (stored dtype, SimVQ's least-squares rows), not as intended
    idx, _ = nearest_codes(vectors, table.to(vectors.device), metric=cb.metric, budget_bytes=budget_bytes)
    new_counts = torch.bincount(idx, minlength=cb.size).cpu()
    now_used = int((new_counts[dead] >= min_count).sum())
    still_dead = int((new_counts < min_count).sum())
    notes.append(
        f"{cb.name}: revived {n_dead} dead codes (count < {min_count}) on {vectors.shape[0]} vectors: "
        f"{now_used} of them now used at least {min_count} times, {n_dead - now_used} not; "
        f"{still_dead} of {cb.size} codes dead after the fix (counted on the codes as written)."
    )
    if cb.kind != "simvq":
        notes.extend(write_codes(edit, cb, table, new_counts, only=dead))
    return replace(cb, codes=table.contiguous())


def _write_simvq_rows(edit: StateEdit, cb: Codebook, table: torch.Tensor, dead: torch.Tensor) -> torch.Tensor:
    """Solve new rows of C for the dead codes (W kept); live rows of C stay bit-exact. Returns
    the effective codes C W^T + b as written (a rank-deficient W cannot reach every target)."""
    c, w, b = simvq_parts(cb)
    rows = torch.linalg.lstsq(w.double(), (table[dead] - b).double().T).solution.T.float()  # (D, d_c)
    key = cb.keys["frozen"]
    full = edit.current(key)
    with torch.no_grad():
        full[dead.nonzero().flatten()] = rows.to(full.dtype)
    c_new = edit.read(key, head=cb.head, like=c)
    return c_new @ w.T + b


def _as_stored(edit: StateEdit, cb: Codebook, table: torch.Tensor) -> torch.Tensor:
    """The codes as the stored dtype holds them (a bf16 table rounds the new rows)."""
    key = cb.keys.get("codes")
    if key is None or cb.kind == "moshi":
        return table
    return table.to(edit.current(key).dtype).to(torch.float32)

"""Judging a repair on the file as it will run, and the pieces `fix` shares between its tables.

**Verified after-state.** ``vqdoctor fix`` writes its output to a temporary file next to the
destination, re-loads that file, finds its codebooks again, re-encodes the data with the encoder
*in that file* (its own metadata encoder, or the ``--model`` factory loaded with its weights; the
user's ``--latents`` as they are) and re-assigns every vector with the quantizer's own rule (metric,
projections, residual chain: the `inspect` path). That report is the after-state.

**Worse** (per codebook, after vs before, the same data): a fix is *worse* when

- it uses fewer codes: ``used_after < used_before - floor(USED_TOLERANCE * K)`` (0.5% of the
  codebook: a K=1,024 codebook may lose 5 codes to float ties, a K=40 one none), or
- its quantization error grows: ``mse_after > mse_before * (1 + MSE_TOLERANCE)`` (1%), the MSE
  relative to the vectors' variance (so a fix that changes the encoder compares like with like).

A worse fix is reported and ``vqdoctor fix`` exits 1 without leaving the output behind, unless
``--force`` (then the output is written and the table says it is worse).

**Modes once.** The allocation columns need data modes. Without labels they are inferred once per
fix on the before-state's vectors and then used, as per-vector labels, for both tables (the
after-state's vectors are the same inputs, row for row).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from vqdoctor.core.modes import fit_modes
from vqdoctor.report.fix_result import Change
from vqdoctor.report.schema import CodebookReport, Report

USED_TOLERANCE = 0.005  # share of K a fix may lose in used codes (float ties) and still count as not worse
MSE_TOLERANCE = 0.01  # relative growth of the relative quantization MSE that counts as worse


def _mse(cb: CodebookReport) -> float | None:
    if cb.usage is None:
        return None
    return cb.usage.relative_mse if cb.usage.relative_mse is not None else cb.usage.quantization_mse


def pair_codebooks(before: Report, after: Report) -> list[tuple[CodebookReport, CodebookReport | None]]:
    """Each before codebook with its after codebook: by name, else by position."""
    by_name = {cb.name: cb for cb in after.codebooks}
    rows = list(after.codebooks)
    return [(b, by_name.get(b.name) or (rows[i] if i < len(rows) else None)) for i, b in enumerate(before.codebooks)]


def compare(before: Report, after: Report) -> list[Change]:
    """The per-codebook changes and whether each is worse (see the module docstring)."""
    out = []
    for b, a in pair_codebooks(before, after):
        if b.usage is None or a is None or a.usage is None:
            continue
        reasons = []
        slack = math.floor(USED_TOLERANCE * b.size)
        if a.usage.used_codes < b.usage.used_codes - slack:
            reasons.append(f"uses fewer codes ({a.usage.used_codes} vs {b.usage.used_codes} of {b.size})")
        mb, ma = _mse(b), _mse(a)
        if mb is not None and ma is not None and ma > mb * (1 + MSE_TOLERANCE) + 1e-12:
            reasons.append(f"quantization error grew ({ma:.4g} vs {mb:.4g} relative MSE)")
        out.append(Change(name=a.name, size=a.size, used_before=b.usage.used_codes, used_after=a.usage.used_codes,
                          dead_after=a.usage.dead_codes, mse_before=mb, mse_after=ma, worse=tuple(reasons)))
    return out


def summary(changes: list[Change]) -> list[str]:
    """One line per codebook: revived/now used/still dead as verified on the written file."""
    lines = []
    for c in changes:
        gained = c.used_after - c.used_before
        lines.append(
            f"{c.name}: verified on the written file: {c.used_after}/{c.size} codes used "
            f"({'+' if gained >= 0 else ''}{gained} vs before), {c.dead_after} still dead"
            + (f"; WORSE: {'; '.join(c.worse)}" if c.worse else "") + "."
        )
    return lines


def infer_modes_once(x: torch.Tensor, *, subsample: int, seed: int) -> tuple[np.ndarray, list[str], str] | None:
    """Per-vector mode ids of ``x`` (N, D) from one mode model fitted on a seeded subsample:
    ``(modes (N,), names, source)``; None when one mode is found (no allocation to judge)."""
    n = x.shape[0]
    model = fit_modes(x, seed=seed, sample_size=subsample)
    if model.k < 2:
        return None
    parts = [model.predict(x[i : i + 65536].float().cpu()).cpu().numpy() for i in range(0, n, 65536)]
    return (np.concatenate(parts).astype(np.int64), [f"mode {i}" for i in range(model.k)],
            f"inferred once per fix: {model.rule} on the before-state's latents")

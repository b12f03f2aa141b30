"""Tokens collapse (code-to-mode allocation) and embeddings collapse (modes merging in the encoder).

Definitions: docs/metrics.md, after the representation-collapse study (Zhao et al., arXiv:2411.16550): tokens collapse is
codes piling onto a few modes of the latent distribution and leaving other modes with few codes;
embeddings collapse is modes distinct in the input that the encoder maps onto overlapping clouds.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from vqdoctor.core.assign import nearest_codes
from vqdoctor.core.expect import vectors_needed
from vqdoctor.core.finite import require_finite
from vqdoctor.core.modes import count_modes
from vqdoctor.core.results import EmbeddingsCollapse, MergedPair, ModeShare, TokensCollapse
from vqdoctor.core.subsample import stratified_indices
from vqdoctor.errors import DataError, UsageError

# embeddings collapse thresholds (see embeddings_collapse)
MERGE_OVERLAP = 0.5  # latent overlap at which a pair counts as merged (1 = indistinguishable)
MERGE_FACTOR = 2.0  # ... and at least this many times its input overlap
MIN_MODE_POINTS = 5  # a mode with fewer subsampled points takes part in no pair
MIN_MODE_VECTORS = 5  # a mode with fewer vectors is not judged starved (tokens collapse)
DEFAULT_SUBSAMPLE = 4000
_KNN_ROWS = 1024  # query rows per distance block


# ----------------------------------------------------------------------------- tokens collapse


def tokens_collapse(
    mode_counts: torch.Tensor,  # (K, M) int: vectors of mode m assigned to code k
    *,
    dead_code_modes: torch.Tensor | None,  # (K,) int64 mode of each code's nearest vector (-1: unknown)
    labels: Sequence[str],  # (M,) mode names
    mode_source: str,
    starved_ratio: float = 0.5,
) -> TokensCollapse:
    """Code-to-mode allocation over the LIVE codes (docs/metrics.md, "Tokens collapse").

    Each live code (row sum > 0) belongs to the mode that sends it the most vectors (ties: the
    lowest mode id). Dead codes take no part in the allocation: they are reported apart, per mode
    of their nearest vector (``dead_code_modes``, computed over every vector by
    :class:`DeadCodeParking`; ``None``: ``dead_parked`` is ``None``). So the allocation depends on
    the assignments only: the same vectors give the same result whatever the subsample or layout.

    Per mode: data share = its vectors / N, code share = its live codes / live codes, ratio =
    code share / data share (``None`` for a mode with no data). ``allocation_tv`` =
    ½ Σ_m |code share − data share|. ``starved_modes``: ratio < ``starved_ratio``, among the modes
    with enough vectors to fill their fair share f_m = data share × live codes (sample size: at
    least max(5, N95(f_m)) vectors, N95 as in :func:`vqdoctor.core.expect.vectors_needed`);
    the others are listed in ``insufficient_modes``.
    """
    counts = torch.as_tensor(mode_counts)
    if counts.ndim != 2:
        raise DataError(f"mode_counts must be (codes, modes), got shape {tuple(counts.shape)}")
    k_codes, m_modes = counts.shape
    if len(labels) != m_modes:
        raise UsageError(f"{len(labels)} mode labels for {m_modes} modes in mode_counts")
    if counts.is_floating_point() or counts.is_complex():
        raise DataError("mode_counts must be integer counts")
    counts = counts.to("cpu", torch.int64)
    if bool((counts < 0).any()):
        raise DataError("mode_counts has negative entries")
    if not 0.0 < starved_ratio:
        raise UsageError(f"starved_ratio must be > 0, got {starved_ratio}")
    per_code = counts.sum(1)  # (K,)
    per_mode = counts.sum(0)  # (M,)
    n = int(per_mode.sum())
    if n == 0:
        raise DataError("no vectors were assigned: mode_counts is all zero")
    live = per_code > 0
    owner = counts.argmax(1)[live]  # (L,)
    codes_per_mode = torch.bincount(owner, minlength=m_modes)  # (M,)
    n_live = int(live.sum())  # > 0: some code received the n > 0 vectors
    parked: list[int] | None = None
    if dead_code_modes is not None:
        dead_modes = torch.as_tensor(dead_code_modes).to("cpu", torch.int64)
        if dead_modes.shape != (k_codes,):
            raise DataError(
                f"dead_code_modes must have shape ({k_codes},), got {tuple(dead_modes.shape)}"
            )
        d = dead_modes[~live]
        if bool((d >= m_modes).any()) or bool((d < -1).any()):
            raise DataError(f"dead_code_modes has mode ids outside 0..{m_modes - 1}")
        parked = torch.bincount(d[d >= 0], minlength=m_modes).tolist()
    shares: list[ModeShare] = []
    tv = 0.0
    starved: list[int] = []
    thin: list[int] = []
    for m in range(m_modes):
        data_share = int(per_mode[m]) / n
        code_share = int(codes_per_mode[m]) / n_live
        ratio = code_share / data_share if data_share > 0 else None
        tv += abs(code_share - data_share)
        if ratio is not None:
            fair = max(1, math.ceil(data_share * n_live))
            if int(per_mode[m]) < max(MIN_MODE_VECTORS, vectors_needed(fair, 0.95)):
                thin.append(m)
            elif ratio < starved_ratio:
                starved.append(m)
        shares.append(
            ModeShare(
                mode=m,
                label=str(labels[m]),
                data_share=data_share,
                code_share=code_share,
                ratio=ratio,
                codes=int(codes_per_mode[m]),
                vectors=int(per_mode[m]),
            )
        )
    return TokensCollapse(
        modes=m_modes,
        mode_source=mode_source,
        per_mode=shares,
        starved_modes=starved,
        starved_ratio=float(starved_ratio),
        allocation_tv=0.5 * tv,
        live_codes=n_live,
        dead_codes=k_codes - n_live,
        dead_parked=parked,
        insufficient_modes=thin,
    )


@dataclass(eq=False)
class DeadCodeParking:
    """Where the codes that receive no vector sit: each code's nearest vector over ALL the
    vectors streamed (its squared distance and its mode), kept for the codes with no vector so
    far. A code dead at the end had no vector at any batch, so it was tracked on every batch and
    its nearest vector is exact; live codes drop out of the search as soon as they get one (cheap
    on healthy codebooks). State: (K,) running minimum + (K,) mode; merges by minimum."""

    best: torch.Tensor  # (K,) float32 squared distance to the nearest vector seen (inf: none)
    mode: torch.Tensor  # (K,) int64 mode of that vector (-1: none)

    @classmethod
    def empty(cls, size: int, *, device: torch.device | str = "cpu") -> DeadCodeParking:
        return cls(torch.full((size,), math.inf, device=device), torch.full((size,), -1, dtype=torch.int64, device=device))

    def update(
        self,
        codes: torch.Tensor,  # (K, d) as compared with the vectors
        counts: torch.Tensor,  # (K,) counts so far, this batch included
        x: torch.Tensor,  # (b, d) the batch's vectors in the codebook's space
        modes: torch.Tensor,  # (b,) int64 mode of each vector
        *,
        metric: str,
    ) -> None:
        if x.shape[0] == 0:
            return
        dev = x.device
        if self.best.device != dev:
            self.best, self.mode = self.best.to(dev), self.mode.to(dev)
        cand = torch.nonzero(counts.to(dev) == 0).squeeze(1)  # (c,) codes with no vector yet
        if cand.numel() == 0:
            return
        idx, sq = nearest_codes(codes.to(dev, torch.float32)[cand], x.to(torch.float32), metric=metric)  # (c,)
        better = sq < self.best[cand]
        hit = cand[better]
        self.best[hit] = sq[better]
        self.mode[hit] = modes.to(dev, torch.int64)[idx[better]]

    def merge(self, other: DeadCodeParking) -> DeadCodeParking:
        ob, om = other.best.to(self.best.device), other.mode.to(self.best.device)
        take = ob < self.best
        return DeadCodeParking(torch.where(take, ob, self.best), torch.where(take, om, self.mode))


# ------------------------------------------------------------------------- embeddings collapse


def embeddings_collapse(
    latents: torch.Tensor,  # (n, D) encoder outputs
    modes: torch.Tensor,  # (n,) int64 mode ids in 0..M-1
    *,
    inputs: torch.Tensor | None,  # (n, F) or (n, ...) raw inputs, flattened per row; or None
    labels: Sequence[str],  # (M,) mode names
    mode_source: str,
    k: int = 10,
    seed: int = 0,
    max_modes: int = 20,
    subsample: int = DEFAULT_SUBSAMPLE,
    comparison: str | None = None,
) -> EmbeddingsCollapse:
    """Compare how separable the modes are in input space and in latent space.

    All figures are computed on a stratified subsample of at most ``subsample`` rows (every mode
    represented), with each space standardised per feature (z-score):

    - ``*_knn_purity``: mean fraction of a point's ``k`` nearest neighbours (itself excluded,
      exact Euclidean search) that share its mode. 1 = modes perfectly apart.
    - ``*_modes``: the number of modes :func:`count_modes` ("gmm-bic") finds in that space.
    - pair overlap: with N_ab = number of (point of mode a, neighbour of mode b) pairs,
      overlap(a, b) = [(N_ab + N_ba) / (N_aa + N_ab + N_ba + N_bb)] / [2 n_a n_b / (n_a + n_b)²],
      the cross-neighbour rate within the pair divided by its value when a and b are one
      indistinguishable cloud. 0 = apart, ≈1 = indistinguishable, whatever the pair's sizes and
      however many other modes share the cloud.
    - ``merged_pairs``: latent overlap ≥ 0.5 (more than half-way to indistinguishable) and,
      with inputs, input overlap < 0.5 (distinct in the inputs) and latent overlap ≥ 2× input
      overlap (the encoder at least doubled the confusion). Without inputs no pair is listed
      (a latent overlap alone cannot tell modes the encoder merged from modes that were never
      apart) and the input fields are ``None``. Modes with fewer than 5 subsampled points take
      part in no pair. Sorted by latent overlap, highest first.
    - ``comparison``: how the latents were made comparable with the inputs (given by the caller).
    """
    latents = torch.as_tensor(latents)
    modes = torch.as_tensor(modes)
    n = latents.shape[0] if latents.ndim >= 1 else 0
    if latents.ndim != 2 or n < 2:
        raise DataError(
            f"embeddings collapse needs (n >= 2, D) latents, got {tuple(latents.shape)}"
        )
    if modes.shape != (n,):
        raise DataError(f"{modes.shape[0] if modes.ndim else 0} mode ids for {n} latents")
    if modes.is_floating_point():
        raise DataError("mode ids must be integers")
    m_modes = len(labels)
    modes_np = modes.to("cpu", torch.int64).numpy()
    if modes_np.min() < 0 or modes_np.max() >= m_modes:
        raise DataError(f"mode ids must lie in 0..{m_modes - 1} (one label per mode)")
    if inputs is not None:
        inputs = torch.as_tensor(inputs)
        if inputs.shape[0] != n:
            raise DataError(f"{inputs.shape[0]} inputs for {n} latents")
    if k < 1:
        raise UsageError(f"k must be >= 1, got {k}")

    rows = stratified_indices(n, subsample, strata=modes_np, seed=seed)
    sel = torch.from_numpy(rows)
    y = modes_np[rows]  # (m,)
    kk = min(k, rows.size - 1)
    z_lat = _standardise(latents[sel])  # (m, D)
    lat_nbr = _knn_modes(z_lat, y, kk)  # (m, kk)
    lat_purity = float((lat_nbr == y[:, None]).mean())
    lat_overlap = _pair_overlap(y, lat_nbr, m_modes)  # (M, M)
    lat_count = count_modes(z_lat, max_modes=max_modes, seed=seed, sample_size=subsample)

    in_purity: float | None = None
    in_count: int | None = None
    in_overlap: np.ndarray | None = None
    if inputs is not None:
        z_in = _standardise(inputs[sel].reshape(rows.size, -1))  # (m, F)
        in_nbr = _knn_modes(z_in, y, kk)
        in_purity = float((in_nbr == y[:, None]).mean())
        in_overlap = _pair_overlap(y, in_nbr, m_modes)
        in_count = count_modes(z_in, max_modes=max_modes, seed=seed, sample_size=subsample)

    present = np.bincount(y, minlength=m_modes) >= MIN_MODE_POINTS
    pairs: list[MergedPair] = []
    for a in range(m_modes):
        for b in range(a + 1, m_modes):
            if not (present[a] and present[b]):
                continue
            lo = float(lat_overlap[a, b])
            io = None if in_overlap is None else float(in_overlap[a, b])
            if io is None or lo < MERGE_OVERLAP:
                continue
            if io >= MERGE_OVERLAP or lo < MERGE_FACTOR * io:
                continue
            pairs.append(
                MergedPair(
                    a=a,
                    b=b,
                    label_a=str(labels[a]),
                    label_b=str(labels[b]),
                    input_overlap=io,
                    latent_overlap=lo,
                )
            )
    pairs.sort(key=lambda p: (-p.latent_overlap, p.a, p.b))
    return EmbeddingsCollapse(
        mode_source=mode_source,
        labels=[str(s) for s in labels],
        input_modes=in_count,
        embedding_modes=lat_count,
        input_knn_purity=in_purity,
        latent_knn_purity=lat_purity,
        merged_pairs=pairs,
        subsample=int(rows.size),
        comparison=comparison,
    )


def _standardise(x: torch.Tensor) -> torch.Tensor:  # (m, f) -> (m, f) float32, z-scored
    x = x.detach().to("cpu", torch.float32)
    require_finite(x, "the latents or inputs")
    std = x.std(0, unbiased=False)
    std = torch.where(std > 0, std, torch.ones_like(std))
    return (x - x.mean(0)) / std


def _knn_modes(z: torch.Tensor, y: np.ndarray, k: int) -> np.ndarray:
    """Modes of each row's k nearest other rows (exact, chunked): (m, f) -> (m, k)."""
    m = z.shape[0]
    sq = (z * z).sum(1)  # (m,)
    out = np.empty((m, k), dtype=np.int64)
    y_t = torch.from_numpy(y)
    for start in range(0, m, _KNN_ROWS):
        q = z[start : start + _KNN_ROWS]  # (b, f)
        d = torch.addmm(sq.unsqueeze(0), q, z.T, beta=1.0, alpha=-2.0)  # (b, m) minus ||q||^2
        r = torch.arange(q.shape[0])
        d[r, r + start] = float("inf")  # not its own neighbour
        nbr = d.topk(k, dim=1, largest=False).indices  # (b, k)
        out[start : start + q.shape[0]] = y_t[nbr].numpy()
    return out


def _pair_overlap(y: np.ndarray, nbr: np.ndarray, m_modes: int) -> np.ndarray:
    """(M, M) symmetric overlap (see embeddings_collapse); 0 on the diagonal and for empty modes."""
    pairs = np.bincount((y[:, None] * m_modes + nbr).ravel(), minlength=m_modes * m_modes)
    c = pairs.reshape(m_modes, m_modes).astype(np.float64)  # c[a, b] = N_ab
    sizes = np.bincount(y, minlength=m_modes).astype(np.float64)  # (M,)
    cross = c + c.T  # N_ab + N_ba
    within = np.diag(c)[:, None] + np.diag(c)[None, :] + cross  # N_aa + N_bb + N_ab + N_ba
    tot = sizes[:, None] + sizes[None, :]
    chance = 2.0 * sizes[:, None] * sizes[None, :] / np.maximum(tot, 1.0) ** 2
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where((within > 0) & (chance > 0), cross / within / chance, 0.0)
    np.fill_diagonal(out, 0.0)
    return out

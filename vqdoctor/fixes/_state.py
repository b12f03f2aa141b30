"""Shared plumbing of the fixes: the result type, writing a codebook's new values back into its
state tensors (slices of multi-head tables, SimVQ's C and W, Moshi's sums), and resetting the EMA
bookkeeping so that the owning library's next training step does not undo the fix.

Returned tensors are CPU tensors in the *original* dtype of the state tensor they replace (a bf16
table stays bf16; float32 values are cast with ``Tensor.copy_``); a tensor of which only a slice
changes (one head of a ``(H, K, d)`` table) keeps every other element bit-exact.

EMA conventions (read in the libraries' update code):
- vector-quantize-pytorch ``EuclideanCodebook/CosineSimCodebook.update_ema``, encodec / audiocraft
  ``EuclideanCodebook.forward``, taming ``EmbeddingEMA``, transformers ``EncodecEuclideanCodebook``:
  ``embed = embed_avg / laplace(cluster_size)``; the buffers are EMAs of per-batch counts and sums;
  a code whose ``cluster_size`` falls under ``threshold_ema_dead_code`` is replaced; a false
  ``initted``/``inited`` flag makes the first training batch run k-means and overwrite the table.
- Moshi / Mimi ``EuclideanCodebook``: ``embedding = embedding_sum / clamp(cluster_usage, eps)``
  (there is no stored table); codes with usage under 0.1 x the uniform share are replaced.
We therefore write ``cluster_size_k = T * c_k / N`` -- the new assignment shares ``c_k / N`` at the
scale ``T`` of the old buffer (its sum, the library's per-batch token count; the sample's N when
the old buffer is empty) -- floored at ``FLOOR_SHARE * T / K`` so that no new code starts below
the libraries' expiry thresholds; ``embed_avg_k = code_k * cluster_size_k`` exactly (so
``embed_avg / cluster_size`` gives the code back); the init flag True.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import torch

from vqdoctor.core.codebook import Codebook

FLOOR_SHARE = 0.2  # a new code's EMA count is at least this fraction of the uniform share


@dataclass
class FixResult:
    """What a fix changes: ``updates`` (state key -> new tensor, original dtype), keys to
    ``remove``, and ``notes`` for the user (what was done, fits, caveats)."""

    updates: dict[str, torch.Tensor] = field(default_factory=dict)
    remove: set[str] = field(default_factory=set)
    notes: list[str] = field(default_factory=list)

    def merge(self, other: FixResult) -> FixResult:
        self.updates.update(other.updates)
        self.remove |= other.remove
        self.notes += other.notes
        return self


class StateEdit:
    """Accumulates changes to a state dict without touching it."""

    def __init__(self, state: Mapping[str, torch.Tensor]) -> None:
        self._state = state
        self.updates: dict[str, torch.Tensor] = {}

    def current(self, key: str) -> torch.Tensor:
        """The tensor as it will be written (original dtype, CPU)."""
        if key not in self.updates:
            self.updates[key] = self._state[key].detach().to("cpu").clone()
        return self.updates[key]

    def put(self, key: str, value: torch.Tensor, *, head: int = 0) -> None:
        """Write ``value`` into ``key``: the whole tensor when shapes agree (up to size-1 dims),
        slice ``[head]`` of a tensor with one more leading dim (slice 0 when that dim is 1)."""
        full = self.current(key)
        value = value.detach().to("cpu")
        with torch.no_grad():
            if tuple(full.shape) == tuple(value.shape) or full.numel() == value.numel() == 1:
                full.copy_(value.reshape(full.shape))
            elif full.dim() == value.dim() + 1 and tuple(full.shape[1:]) == tuple(value.shape):
                full[head if full.shape[0] > 1 else 0].copy_(value)
            elif full.numel() == value.numel():
                full.copy_(value.reshape(full.shape))
            else:  # a programming error, not a user error
                raise ValueError(f"cannot write {tuple(value.shape)} into {key} {tuple(full.shape)}")

    def put_flag(self, key: str, on: bool = True) -> None:
        full = self.current(key)
        with torch.no_grad():
            full.fill_(bool(on) if full.dtype == torch.bool else float(on))

    def read(self, key: str, *, head: int = 0, like: torch.Tensor | None = None) -> torch.Tensor:
        """float32 view of ``key`` (or its ``[head]`` slice when ``like`` has one dim less)."""
        t = self.current(key).to(torch.float32)
        if like is not None and t.dim() == like.dim() + 1:
            t = t[head if t.shape[0] > 1 else 0]
        return t


def ema_counts(cb: Codebook, counts: torch.Tensor) -> torch.Tensor:
    """(K,) float32 EMA counts for new assignment ``counts`` at the scale of ``cb``'s buffer."""
    k = cb.size
    counts = counts.to(torch.float32).cpu()
    n = float(counts.sum())
    old = cb.ema.cluster_size if cb.ema is not None and cb.ema.is_count else None
    total = float(old.to(torch.float64).sum()) if old is not None else 0.0
    if not (total > 0 and torch.isfinite(torch.tensor(total))):
        total = n if n > 0 else float(k)
    shares = counts / n if n > 0 else torch.full((k,), 1.0 / k)
    return torch.clamp(shares * total, min=FLOOR_SHARE * total / k)


def write_codes(
    edit: StateEdit,
    cb: Codebook,
    codes: torch.Tensor,  # (K, d) float32, the new effective codes (compared space)
    counts: torch.Tensor,  # (K,) new assignment counts of the sample
    *,
    only: torch.Tensor | None = None,  # (K,) bool: change only these codes (revive)
) -> list[str]:
    """Write ``codes`` as ``cb``'s table (where ``only``) and reset its EMA state to match.
    SimVQ codebooks are handled by the caller (they need a choice of C or W). Returns notes."""
    notes: list[str] = []
    mask = only if only is not None else torch.ones(cb.size, dtype=torch.bool)
    if "codes" in cb.keys and cb.kind != "moshi":
        key = cb.keys["codes"]
        table = edit.read(key, head=cb.head, like=codes)
        table = torch.where(mask[:, None], codes.to(torch.float32), table)
        _put_masked(edit, key, table, mask, head=cb.head)
    notes += reset_ema(edit, cb, codes, counts, only=only)
    return notes


def _put_masked(edit: StateEdit, key: str, table: torch.Tensor, mask: torch.Tensor, *, head: int) -> None:
    """Write rows ``mask`` of ``table``; rows outside stay exactly as stored (no cast round trip)."""
    full = edit.current(key)
    target = full[head if full.shape[0] > 1 else 0] if full.dim() == table.dim() + 1 else full
    with torch.no_grad():
        rows = mask.nonzero().flatten()
        target[rows] = table[rows].to(target.dtype)


def reset_ema(
    edit: StateEdit,
    cb: Codebook,
    codes: torch.Tensor,  # (K, d) float32
    counts: torch.Tensor,  # (K,)
    *,
    only: torch.Tensor | None = None,
) -> list[str]:
    """Reset ``cb``'s EMA buffers consistently with ``codes`` (see the module docstring)."""
    ema = cb.ema
    if ema is None:
        return []
    keys = ema.keys
    mask = only if only is not None else torch.ones(cb.size, dtype=torch.bool)
    notes: list[str] = []
    if not ema.is_count:
        for role, key in keys.items():
            notes.append(f"{cb.name}: left {key} as is ({ema.note or role + ' is not a usage count'}).")
        return notes
    size_key = keys.get("cluster_size")
    sum_key = keys.get("embed_avg") or keys.get("embed_sum")
    if size_key is not None:
        cs = ema_counts(cb, counts)
        old_cs = edit.read(size_key, head=cb.head, like=cs)
        new_cs = torch.where(mask, cs, old_cs)
        _put_masked(edit, size_key, new_cs, mask, head=cb.head)
        if sum_key is not None:
            _put_masked(edit, sum_key, codes.to(torch.float32) * new_cs[:, None], mask, head=cb.head)
        notes.append(
            f"{cb.name}: EMA reset: {size_key} = new assignment shares x {float(new_cs.sum()):.4g} "
            f"(the buffer's scale), {sum_key or 'codes'} = codes x {size_key.rsplit('.', 1)[-1]}."
        )
    elif sum_key is not None:  # a sum without counts: take the counts as 1
        _put_masked(edit, sum_key, codes.to(torch.float32), mask, head=cb.head)
    flag_key = keys.get("initted")
    if flag_key is not None and (only is None or ema.initted is False):
        edit.put_flag(flag_key, True)
        notes.append(f"{cb.name}: {flag_key} set to True (the library will not re-run its k-means init).")
    return notes

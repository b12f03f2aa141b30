"""The one check that vectors are finite: every place that takes vectors from a user (latents,
encoder outputs, k-means and mode inputs) refuses NaN/Inf with the same message, naming the
first bad row, instead of computing garbage."""

from __future__ import annotations

import torch

from vqdoctor.errors import DataError

HINT = "Remove or repair those rows (e.g. numpy.nan_to_num), or check the encoder that produced them."


def require_finite(x: torch.Tensor, what: str, *, row: str = "row", first_row: int = 0, hint: str = HINT) -> None:
    """A :class:`DataError` when ``x`` (rows first: (N, ...)) holds a NaN or Inf:
    ``"{what} holds NaN or Inf values; the first is in {row} {i}."`` with ``i`` counted from
    ``first_row`` (where a chunk of a larger array starts)."""
    if not x.numel():
        return
    finite = torch.isfinite(x.reshape(x.shape[0], -1)).all(dim=1)
    if not bool(finite.all()):
        i = first_row + int((~finite).nonzero()[0, 0])
        raise DataError(f"{what} holds NaN or Inf values; the first is in {row} {i}.", hint=hint)

"""TensorBoard: a Monitor report as scalars and code-usage histograms, through any
``torch.utils.tensorboard.SummaryWriter`` (or an object with its ``add_scalar`` /
``add_histogram`` / ``add_histogram_raw``, such as Lightning's ``TensorBoardLogger.experiment``).

::

    writer = SummaryWriter("runs/vq")
    monitor = vqdoctor.Monitor(model)
    ...
    log_to_tensorboard(writer, monitor.report(step=step), step)

Per codebook with usage counts, two histograms: ``{prefix}/{codebook}/code_usage``, one bucket per
code index holding its count (TensorBoard draws the usage over the code indices; ``num`` is the
vectors recorded), and ``{prefix}/{codebook}/log_counts``, the distribution over the codes of
``log10(1 + count)`` (dead codes pile up at 0).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from vqdoctor.integrations.scalars import PREFIX, report_scalars
from vqdoctor.report.schema import Report


def log_to_tensorboard(writer: Any, report: Report, step: int, *, prefix: str = PREFIX,
                       histograms: bool = True) -> dict[str, float]:
    """Write ``report``'s scalars (see :mod:`vqdoctor.integrations.scalars`) and, with
    ``histograms``, each codebook's usage histograms at ``step``; returns the scalars written."""
    scalars = report_scalars(report, prefix=prefix)
    for tag, value in scalars.items():
        writer.add_scalar(tag, value, global_step=step)
    if histograms:
        for cb in report.codebooks:
            if cb.counts:
                _histograms(writer, f"{prefix}/{cb.name}", np.asarray(cb.counts, dtype=np.float64), step)
    return scalars


def _histograms(writer: Any, tag: str, counts: np.ndarray, step: int) -> None:
    k = counts.size
    idx = np.arange(k, dtype=np.float64)
    writer.add_histogram_raw(
        f"{tag}/code_usage", min=0.0, max=float(k - 1), num=float(counts.sum()), sum=float(counts @ idx),
        sum_squares=float(counts @ (idx * idx)), bucket_limits=(idx + 0.5).tolist(), bucket_counts=counts.tolist(),
        global_step=step,
    )
    writer.add_histogram(f"{tag}/log_counts", np.log10(1.0 + counts), global_step=step)

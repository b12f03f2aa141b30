"""The report of merged statistics *alone*, without re-loading any checkpoint.

``vqdoctor merge FILE...`` without ``--checkpoint`` trusts nothing a statistics file names (no
path is opened, no global allowed): it reports what the sums themselves hold. Per codebook:
usage (counts, utilization, perplexity, quantization error) and the code-to-mode allocation over
live codes; model-wide: embeddings collapse from the saved subsample. What needs the codes
themselves (geometry, EMA buffers, W rank, the 2-D picture, the modes of dead codes) is ``null``,
and a note says to pass ``--checkpoint PATH`` (verified by its sha256) for the full report.
"""

from __future__ import annotations

from vqdoctor import __version__
from vqdoctor.core.collapse import tokens_collapse
from vqdoctor.core.gathered import Statistics
from vqdoctor.diagnose import _embeddings
from vqdoctor.errors import DataError
from vqdoctor.remedies import RemedyContext
from vqdoctor.report.schema import MODE_COUNTS_MAX_CELLS, CodebookReport, DataInfo, Report
from vqdoctor.verdicts import codebook_verdicts, diagnosis, embeddings_verdicts

STATS_ONLY_NOTE = ("Report from the statistics alone (no checkpoint re-loaded): codebook geometry, EMA buffers, "
                   "W rank, the 2-D picture and the modes of dead codes need the codebooks. Pass --checkpoint PATH "
                   "(its sha256 must be {fingerprint}) for the full report.")


def stats_remedy(fmt: str, checkpoint: str | None = None) -> RemedyContext:
    """How the fix commands of a merged report are written: for the user's ``--checkpoint`` (else a
    CHECKPOINT placeholder: the recorded path is not trusted), without data options, which the
    user adds (those the statistics record are not trusted either)."""
    if checkpoint is None:
        return RemedyContext("CHECKPOINT", fmt, data_known=False, checkpoint_known=False)
    return RemedyContext(checkpoint, fmt, data_known=False)


def report_from_stats_alone(stats: Statistics, *, notes: list[str] | None = None) -> Report:
    g = stats.gathered
    if g.vectors == 0:
        raise DataError(f"The statistics ({g.description}) hold no vectors.", "Merge files written from non-empty data.")
    options = stats.options
    reports: list[CodebookReport] = []
    verdicts = []
    for ident in stats.codebooks:
        st = g.stats.get(ident.name)
        usage = st.compute(min_count=options.min_count, space="as recorded in the statistics") if st is not None else None
        tokens = None
        if st is not None and st.mode_counts is not None and g.mode_source is not None:
            park = g.parking.get(ident.name) if g.parking is not None else None  # kept in the stats: no codes needed
            tokens = tokens_collapse(st.mode_counts.cpu(), dead_code_modes=park.mode.cpu() if park is not None else None,
                                     labels=g.mode_names, mode_source=g.mode_source)
        counts = st.counts.cpu().tolist() if (st is not None and options.keep_counts) else None
        mode_counts = None  # the allocation heatmap's cells, kept up to MODE_COUNTS_MAX_CELLS
        if tokens is not None and options.keep_counts and st is not None and st.mode_counts is not None:
            if st.mode_counts.numel() <= MODE_COUNTS_MAX_CELLS:
                mode_counts = st.mode_counts.cpu().tolist()
        rep = CodebookReport(
            name=ident.name, stack=ident.name, layout=ident.layout, kind=ident.kind, metric=ident.metric,
            metric_source="flag" if options.metric != "auto" else "detected",
            metric_evidence="as recorded in the statistics",
            size=ident.size, dim=ident.dim, level=ident.level, head=0, keys={}, usage=usage, ema=None,
            geometry=None, w=None, tokens_collapse=tokens, counts=counts, mode_counts=mode_counts,
        )
        reports.append(rep)
        verdicts.extend(codebook_verdicts(rep, remedy=stats_remedy(stats.checkpoint.format)))
    embeddings, embeddings_note = None, None
    if g.sub_modes is not None and g.mode_source is not None:
        embeddings, embeddings_note = _embeddings(g, options)  # the same like-for-like comparison as inspect
    verdicts.extend(embeddings_verdicts(embeddings))
    data = DataInfo(source=g.description, vectors=g.vectors, dim=int(g.sub_latents.shape[1]), mode_source=g.mode_source)
    all_notes = [*g.notes, *(notes or []), *([embeddings_note] if embeddings_note else []), STATS_ONLY_NOTE.format(fingerprint=stats.checkpoint.fingerprint[:12] + "...")]
    return Report(
        checkpoint=stats.checkpoint, data=data, codebooks=reports, embeddings_collapse=embeddings,
        verdicts=verdicts, diagnosis=diagnosis(reports, embeddings, verdicts), codebook_free=[], projection=None,
        notes=all_notes, vqdoctor_version=__version__,
    )


__all__ = ["STATS_ONLY_NOTE", "report_from_stats_alone", "stats_remedy"]

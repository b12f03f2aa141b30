"""Orchestration: codebooks + streamed vectors -> Report. No file I/O here.

The caller (``vqdoctor.api``) opens the checkpoint and the data and hands over a
:class:`vqdoctor.io.stream.VectorStream`; this module runs every stack over every batch, accumulates mergeable
statistics, draws one bounded stratified subsample for the things that need points (modes,
embeddings collapse, geometry against the data, the 2-D picture) and assembles the Report.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from vqdoctor import __version__, stages
from vqdoctor.core.chain import LevelOutput, prepare_stack, run_stack, stack_input_dim
from vqdoctor.core.codebook import Codebook, Discovery, Stack
from vqdoctor.core.collapse import DeadCodeParking, embeddings_collapse, tokens_collapse
from vqdoctor.core.ema import ema_metrics
from vqdoctor.core.gathered import Gathered
from vqdoctor.core.geometry import geometry_metrics, w_metrics
from vqdoctor.core.modes import ModeModel, fit_modes
from vqdoctor.core.projection import project_2d
from vqdoctor.core.results import EmbeddingsCollapse
from vqdoctor.core.sketch import SKETCH_DIM, random_projection
from vqdoctor.core.subsample import stratified_indices
from vqdoctor.core.usage import UsageStats
from vqdoctor.errors import DataError
from vqdoctor.io.stream import VectorStream
from vqdoctor.options import AnalysisOptions
from vqdoctor.remedies import RemedyContext
from vqdoctor.report.schema import (
    MODE_COUNTS_MAX_CELLS,
    CheckpointInfo,
    CodebookReport,
    DataInfo,
    Projection2D,
    Report,
)
from vqdoctor.verdicts import codebook_verdicts, diagnosis, embeddings_verdicts

NONLINEAR_POINTS = 2000  # t-SNE / UMAP points: ~5-7 s on 2 cores (docs/performance in README)

@dataclass
class _Modes:
    source: str
    names: list[str]
    per_sample: np.ndarray | None  # (n_samples,) when modes come from labels
    model: ModeModel | None  # fitted when inferred
    on_inputs: bool  # the model reads inputs (else latents)

    @property
    def count(self) -> int:
        return len(self.names)

    def of_batch(self, x: torch.Tensor, sample: torch.Tensor, inputs: torch.Tensor | None) -> torch.Tensor:
        """Mode id of each vector of the batch, (b,) int64 on x's device. ``inputs`` holds the
        batch's samples in increasing sample order (one row per distinct ``sample``)."""
        if self.per_sample is not None:  # index on the host: never ship all N labels per batch
            return torch.from_numpy(self.per_sample[sample.cpu().numpy()]).to(x.device)
        assert self.model is not None  # modes are labels (per_sample) or a fitted model
        if self.on_inputs:
            assert inputs is not None
            _, local = torch.unique(sample, return_inverse=True)
            return self.model.predict(inputs.to(x.device)).to(x.device)[local]
        return self.model.predict(x).to(x.device)


def _codebook_space(stack: Stack, cb: Codebook) -> str:
    parts = []
    if stack.channels is not None:
        parts.append(f"channels {stack.channels[0]}:{stack.channels[1]}")
    if stack.project_in is not None:
        parts.append("after project_in")
    if stack.residual and cb.level > 0:
        parts.append(f"residual after level {cb.level - 1}")
    if cb.in_proj is not None:
        parts.append("after in_proj")
    if cb.heads > 1:
        parts.append(f"head {cb.head} of {cb.heads}" if not cb.shared_heads else f"all {cb.heads} heads")
    space = ", ".join(parts) if parts else "latent space"
    return f"{space} ({cb.metric})"


def _decide_modes(stream: VectorStream, sub_latents: torch.Tensor, sub_inputs: torch.Tensor | None, options: AnalysisOptions) -> _Modes:
    if options.modes == "none" or (options.modes == "labels" and stream.labels is None):
        return _Modes("none", [], None, None, False)  # no modes: no tokens or embeddings collapse
    if stream.labels is not None:
        k = int(stream.labels.max()) + 1 if stream.labels.size else 0
        names = stream.label_names or [str(i) for i in range(k)]
        return _Modes(stream.mode_source or "labels", list(names), stream.labels.astype(np.int64), None, False)
    on_inputs = sub_inputs is not None
    basis = sub_inputs if sub_inputs is not None else sub_latents
    where = "inputs" if on_inputs else "latents"
    model = stream.mode_cache.get(where) if stream.mode_cache is not None else None
    if model is None:
        model = fit_modes(basis.float().cpu(), seed=options.seed)
        if stream.mode_cache is not None:
            stream.mode_cache[where] = model
    names = [f"mode {i}" for i in range(model.k)]
    return _Modes(f"inferred: {model.rule} on {where}", names, None, model, on_inputs)


def _check_stacks_fit(discovery: Discovery, dim: int, description: str) -> None:
    """Latents of dim ``dim`` must fit every stack; the error names every stack and what it reads."""
    wants = []
    bad = False
    for stack in discovery.stacks:
        expected = stack_input_dim(stack)
        if stack.channels is not None:
            lo, hi = stack.channels
            wants.append(f"{stack.name!r} reads channels [{lo}, {hi})")
            bad |= dim < hi
        else:
            wants.append(f"{stack.name!r} expects dim={expected}")
            bad |= expected is not None and dim != expected
    if bad:
        raise DataError(f"The latents ({description}) have dim={dim}, which does not fit every stack: {'; '.join(wants)}.",
                        "Pass --channel-axis for B×d×H×W / B×T×d latents, or --codebook to pick the stacks these latents feed.")


def _item_latents(x: torch.Tensor, sample: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int] | None:
    """Each item's latents as one row, like its input: (m, D), (m,) -> (s, P*D) with the item's P
    positions concatenated in order (P = 1: the vectors themselves), the items in sample order,
    and P. None when items have different numbers of positions (no like-for-like row)."""
    uniq, inverse, counts = torch.unique(sample, return_inverse=True, return_counts=True)
    positions = int(counts[0]) if counts.numel() else 1
    if bool((counts != positions).any()):
        return None
    if positions == 1:
        return x[torch.argsort(inverse)], uniq, 1
    order = torch.argsort(inverse, stable=True)  # items in sample order, positions in stream order
    rows = x[order].reshape(len(uniq), positions * x.shape[1])
    if rows.shape[1] > SKETCH_DIM:  # distances kept (Johnson-Lindenstrauss), as for wide inputs
        rows = rows.float().cpu() @ random_projection(rows.shape[1], seed=0)
    return rows, uniq, positions


def _embeddings(g: Gathered, options: AnalysisOptions) -> tuple[EmbeddingsCollapse | None, str | None]:
    """The embeddings-collapse section, compared like for like (docs/verdicts.md): one row per
    item in both spaces, per-item modes. Returns (section or None, a note for the report)."""
    if g.mode_source is not None and g.mode_source.endswith("on latents"):
        return None, ("Embeddings collapse not measured: the modes were inferred on the latents themselves, so "
                      "there is nothing independent to compare them with; pass --labels or --inputs.")
    items = _item_latents(g.sub_latents, g.sub_sample)
    if items is None:
        return None, "Embeddings collapse not measured: items have different numbers of latent positions."
    rows, samples, positions = items
    dim = int(g.sub_latents.shape[1])
    how = ("one latent vector per item" if positions == 1
           else f"each item's latent map ({positions} positions x {dim} channels) flattened into one row, like its input"
           + (f" (seeded {SKETCH_DIM}-d random projection)" if positions * dim > SKETCH_DIM else ""))
    assert g.sub_modes is not None  # the report asks for this section only with modes
    modes = _modes_of_samples(samples, g.sub_sample, g.sub_modes)
    inputs_for = None
    if g.sub_inputs is not None:
        inputs_for = g.sub_inputs[torch.from_numpy(_rows_of(g.sub_idx, samples))].float().cpu()
        comparison = f"{how}, against the item's input"
    else:
        comparison = f"{how}; latent side only: merged pairs need the raw inputs (--inputs)"
    ec = embeddings_collapse(rows.float().cpu(), modes.cpu(), inputs=inputs_for, labels=g.mode_names,
                             mode_source=g.mode_source or "", seed=options.seed, comparison=comparison)
    return ec, f"Embeddings collapse compares {comparison}."


def gather(
    *,
    discovery: Discovery,
    stream: VectorStream,
    options: AnalysisOptions,
    device: torch.device,
    progress: Callable[[int], None] | None = None,
) -> Gathered:
    """Stream every batch through every stack and accumulate the statistics."""
    budget = options.memory_budget_mb << 20
    sub_idx = stratified_indices(stream.n_samples, options.subsample, strata=stream.labels, seed=options.seed)
    stages.stage("encode subsample" if stream.encodes else "subsample")
    sub_latents, sub_sample = stream.take(sub_idx)
    sub_latents, sub_sample = sub_latents.to(device), sub_sample.to(device)
    _check_stacks_fit(discovery, int(sub_latents.shape[1]), stream.description)
    sub_inputs = stream.take_inputs(sub_idx) if stream.take_inputs is not None else None
    stages.stage("modes")
    modes = _decide_modes(stream, sub_latents, sub_inputs, options)
    n_modes = modes.count if modes.count > 1 else None
    notes = list(stream.notes)
    if options.modes != "auto" and modes.count == 0:
        notes.append(f"--modes {options.modes}: " + ("no labels given, so " if options.modes == "labels" else "")
                     + "no data modes; tokens and embeddings collapse are not measured.")
    sub_modes = modes.of_batch(sub_latents, sub_sample, sub_inputs) if n_modes else None
    stats = {
        cb.name: UsageStats.empty(cb.size, cb.dim, modes=n_modes, metric=cb.metric, device=device)
        for s in discovery.stacks for cb in s.codebooks if cb.assignable
    }
    # where the dead codes sit, over every vector (not the subsample): only with modes
    parking = {name: DeadCodeParking.empty(st.size, device=device) for name, st in stats.items()} if n_modes else None
    codes_of = {cb.name: cb.codes.float().to(device) for s in discovery.stacks for cb in s.codebooks if cb.assignable}
    prepared = [prepare_stack(stack, device) for stack in discovery.stacks]
    n_vectors = 0
    label = "encode + assign" if stream.encodes else "assign"
    stages.stage(label)
    for x, sample, inputs in stream.batches():
        x = x.to(device, non_blocking=True)
        batch_modes = modes.of_batch(x, sample.to(device), inputs) if n_modes else None
        for stack, ready in zip(discovery.stacks, prepared):
            for lo in run_stack(stack, x, budget_bytes=budget, prepared=ready):
                m = batch_modes[lo.rows] if batch_modes is not None else None
                stats[lo.codebook.name].update(lo.idx, lo.sq_err, lo.vectors, m)
                if parking is not None and m is not None:  # parking is kept only with modes
                    name = lo.codebook.name
                    parking[name].update(codes_of[name], stats[name].counts, lo.vectors, m, metric=lo.codebook.metric)
        if n_vectors == 0 and x.shape[0]:  # the total, in vectors: items x vectors per item of the first batch
            per_item = x.shape[0] / max(1, int(torch.unique(sample).numel()))
            stages.stage(label, total=max(x.shape[0], round(stream.n_samples * per_item)))
        n_vectors += x.shape[0]
        stages.advance(x.shape[0])
        if progress is not None:
            progress(x.shape[0])
    return Gathered(
        description=stream.description, stats=stats, vectors=n_vectors, sub_latents=sub_latents,
        sub_sample=sub_sample, sub_idx=sub_idx, sub_inputs=sub_inputs, mode_names=modes.names,
        mode_source=modes.source if n_modes else None, sub_modes=sub_modes, notes=notes,
        parking=parking,
    )


def build_report(
    *,
    checkpoint: CheckpointInfo,
    discovery: Discovery,
    gathered: Gathered | None,
    options: AnalysisOptions,
    remedy_args: tuple[str, ...] = (),
    remedy: RemedyContext | None = None,
) -> Report:
    """Turn statistics (None: data-free analysis) into the Report with verdicts. ``remedy_args``:
    the user's data options as flags, repeated in the fix commands (vqdoctor/remedies.py);
    ``remedy``: how the fix commands are written instead (merge: stats_report.stats_remedy)."""
    notes: list[str] = list(discovery.notes)
    budget = options.memory_budget_mb << 20
    codebooks = [cb for s in discovery.stacks for cb in s.codebooks]
    sub_out: dict[str, LevelOutput] = {}
    embeddings = None
    projection = None
    stats: dict[str, UsageStats] = {}
    g = gathered
    if g is None:
        data_info = DataInfo(source="none (data-free analysis: EMA buffers and geometry only)", vectors=None, dim=None, mode_source=None)
        notes.append("No data given: usage, tokens collapse and embeddings collapse need vectors "
                     "(--latents, or --inputs with an encoder). Showing data-free numbers only.")
    else:
        if g.vectors == 0:
            raise DataError(f"The data ({g.description}) yielded no vectors.", "Pass a non-empty file.")
        notes.extend(g.notes)
        stats = g.stats
        stages.stage("report")
        for stack in discovery.stacks:
            for lo in run_stack(stack, g.sub_latents, budget_bytes=budget):
                sub_out[lo.codebook.name] = lo
        data_info = DataInfo(source=g.description, vectors=g.vectors, dim=int(g.sub_latents.shape[1]),
                             mode_source=g.mode_source)
        if g.sub_modes is not None and g.mode_source is not None:
            stages.stage("embeddings collapse")
            embeddings, note = _embeddings(g, options)
            if note:
                notes.append(note)
        projection = _projection(codebooks, sub_out, g.sub_modes, g.sub_inputs, options)

    reports: list[CodebookReport] = []
    verdicts = []
    remedy = remedy or RemedyContext(checkpoint.path, checkpoint.format, remedy_args, has_data=g is not None)
    for stack in discovery.stacks:
        for cb in stack.codebooks:
            rep = _codebook_report(stack, cb, stats.get(cb.name), sub_out.get(cb.name), g, options)
            reports.append(rep)
            verdicts.extend(codebook_verdicts(rep, remedy=remedy))
    verdicts.extend(embeddings_verdicts(embeddings))
    findings = diagnosis(reports, embeddings, verdicts)
    free = [{"name": f.name, "kind": f.kind, "note": f.note} for f in discovery.codebook_free]
    return Report(
        checkpoint=checkpoint, data=data_info, codebooks=reports, embeddings_collapse=embeddings,
        verdicts=verdicts, diagnosis=findings, codebook_free=free, projection=projection, notes=notes,
        vqdoctor_version=__version__,
    )


def diagnose(
    *,
    checkpoint: CheckpointInfo,
    discovery: Discovery,
    stream: VectorStream | None,
    options: AnalysisOptions,
    device: torch.device,
    progress: Callable[[int], None] | None = None,
    remedy_args: tuple[str, ...] = (),
) -> Report:
    """Analyse every codebook of ``discovery`` over ``stream`` (None: data-free analysis)."""
    gathered = None
    if stream is not None:
        gathered = gather(discovery=discovery, stream=stream, options=options, device=device, progress=progress)
    return build_report(checkpoint=checkpoint, discovery=discovery, gathered=gathered, options=options,
                        remedy_args=remedy_args)


def _modes_of_samples(samples: torch.Tensor, sub_sample: torch.Tensor, sub_modes: torch.Tensor) -> torch.Tensor:
    """One mode per item: the mode of its first vector (labels and input-inferred modes are per item)."""
    first: dict[int, int] = {}
    for i, s in enumerate(sub_sample.cpu().tolist()):
        first.setdefault(s, i)
    return sub_modes[[first[int(s)] for s in samples.cpu().tolist()]]


def _rows_of(sub_idx: np.ndarray, samples: torch.Tensor) -> np.ndarray:
    """Row of each drawn sample in ``sub_idx`` (sorted, as stratified_indices returns it)."""
    return np.searchsorted(sub_idx, samples.cpu().numpy())


def _projection(codebooks: list[Codebook], sub_out: dict[str, LevelOutput], sub_modes: torch.Tensor | None,
                sub_inputs: torch.Tensor | None, options: AnalysisOptions) -> Projection2D | None:
    if options.projection == "none":
        return None
    first = next((cb for cb in codebooks if cb.name in sub_out), None)
    if first is None:
        return None
    lo = sub_out[first.name]
    start = time.perf_counter()
    pts = lo.vectors.float().cpu()
    modes = sub_modes[lo.rows].cpu() if sub_modes is not None else torch.zeros(pts.shape[0], dtype=torch.int64)
    one_per_sample = sub_inputs is not None and sub_inputs.shape[0] == pts.shape[0]
    keep = None
    if options.projection in ("tsne", "umap") and pts.shape[0] > NONLINEAR_POINTS:
        keep = torch.as_tensor(stratified_indices(pts.shape[0], NONLINEAR_POINTS, strata=modes.numpy(), seed=options.seed))
        pts, modes = pts[keep], modes[keep]
    codes = first.codes.float().cpu()
    if first.metric == "cosine":
        pts = torch.nn.functional.normalize(pts, dim=1)
        codes = torch.nn.functional.normalize(codes, dim=1)
    stages.stage(f"projection ({options.projection}, {pts.shape[0]:,} points)")
    proj = project_2d(pts, codes=codes, method=options.projection, seed=options.seed)
    assert proj is not None  # only projection "none" gives none, returned above
    inputs_xy = None
    if one_per_sample and sub_inputs is not None:  # the inputs' picture, point for point (same colours)
        inputs = sub_inputs.float().cpu()
        inputs = inputs if keep is None else inputs[keep]
        stages.stage(f"projection of the inputs ({options.projection}, {inputs.shape[0]:,} points)")
        proj_in = project_2d(inputs, method=options.projection, seed=options.seed)
        assert proj_in is not None
        inputs_xy = proj_in.points_xy.tolist()
    mode_ids = modes.tolist()
    return Projection2D(
        method=proj.method, latents=proj.points_xy.tolist(), latent_modes=mode_ids,
        codes=None if proj.codes_xy is None else proj.codes_xy.tolist(), inputs=inputs_xy,
        seconds=time.perf_counter() - start, codebook=first.name,
        code_ids=None if proj.code_indices is None else proj.code_indices.tolist(),
    )


def _codebook_report(stack: Stack, cb: Codebook, st: UsageStats | None, sub: LevelOutput | None,
                     g: Gathered | None, options: AnalysisOptions) -> CodebookReport:
    codes = cb.codes.float()
    usage = st.compute(min_count=options.min_count, space=_codebook_space(stack, cb)) if st is not None else None
    ema = ema_metrics(cb.ema, cb.size) if cb.ema is not None and cb.ema.cluster_size is not None else None
    sample = sub.vectors.float().cpu() if sub is not None else None
    geometry = geometry_metrics(codes, metric=cb.metric, sample=sample, seed=options.seed)
    w = w_metrics(cb.w.float(), source=cb.keys.get("w", "W")) if cb.w is not None else None
    tokens = None
    if st is not None and st.mode_counts is not None and g is not None and g.mode_source is not None:
        park = g.parking.get(cb.name) if g.parking is not None else None
        dead = park.mode.cpu() if park is not None else None
        tokens = tokens_collapse(st.mode_counts.cpu(), dead_code_modes=dead, labels=g.mode_names,
                                 mode_source=g.mode_source or "")
    counts = st.counts.cpu().tolist() if (st is not None and options.keep_counts) else None
    mode_counts = None  # the allocation heatmap's cells, kept up to MODE_COUNTS_MAX_CELLS
    if tokens is not None and options.keep_counts and st is not None and st.mode_counts is not None:
        if st.mode_counts.numel() <= MODE_COUNTS_MAX_CELLS:
            mode_counts = st.mode_counts.cpu().tolist()
    return CodebookReport(
        name=cb.name, stack=stack.name, layout=cb.layout, kind=cb.kind, metric=cb.metric, size=cb.size,
        dim=cb.dim, level=cb.level, head=cb.head, keys=dict(cb.keys), usage=usage, ema=ema, geometry=geometry,
        w=w, tokens_collapse=tokens, counts=counts, mode_counts=mode_counts, note=cb.note,
        metric_source=cb.metric_source, metric_evidence=cb.metric_evidence,
    )

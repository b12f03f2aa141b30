"""`vqdoctor trend`: the same analysis over every checkpoint of a run, in step order, and verdicts
on how the numbers move (the SimVQ paper's Fig. 4: utilization and W's rank over training).

One process does it all: the data is opened once (a latents file is memory-mapped once and its
labels parsed once; raw inputs are opened once and encoded by each checkpoint's own encoder),
data modes inferred without labels are fitted once (the same data and subsample give the same
fit), and each checkpoint is loaded, its codebooks found and the data streamed through them: every
row is what ``vqdoctor inspect`` reports for that checkpoint.

Step of a checkpoint, first found of:
1. a pickle's top-level ``global_step`` (Lightning) or ``step`` integer; a safetensors metadata
   entry ``global_step`` or ``step``;
2. the number after ``step`` in the file name (``step_100.pt``, ``epoch=3-step=2000.ckpt``), else
   the last number in it (``ckpt-000200.safetensors``).
Checkpoints are ordered by step (numeric), ties by name. A checkpoint without a step is an error
naming it.
"""

from __future__ import annotations

import glob as globlib
import re
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

from vqdoctor import api
from vqdoctor.codebooks.detectors._util import natural_key
from vqdoctor.core.device import pick_device
from vqdoctor.diagnose import diagnose
from vqdoctor.errors import InputFileError, UsageError
from vqdoctor.io.checkpoints import PICKLE_SUFFIXES
from vqdoctor.io.data import InputSource, LatentSource, open_inputs, open_latents
from vqdoctor.io.safe_pickle import safe_torch_load
from vqdoctor.options import AnalysisOptions, DataOptions
from vqdoctor.report.schema import Report
from vqdoctor.report.trend_result import Trend, TrendPoint, TrendRow, TrendVerdict

CHECKPOINT_SUFFIXES = (".safetensors", *PICKLE_SUFFIXES)
STEP_KEYS = ("global_step", "step")
_STEP_IN_NAME = re.compile(r"step[=_\-]?(\d+)", re.IGNORECASE)
_NUMBER = re.compile(r"(\d+)")

# metric -> (direction, relative warn, relative fail): "up" is good for utilization, perplexity,
# ranks (a fall from the peak is reported); "down" is good for dead codes and allocation TV (a rise
# from the lowest value, as a share of K or in TV units).
TREND_CHECKS: dict[str, tuple[str, float, float]] = {
    "utilization": ("up", 0.2, 0.5),
    "perplexity": ("up", 0.2, 0.5),
    "ema_perplexity": ("up", 0.2, 0.5),
    "w_rank": ("up", 0.2, 0.5),
    "w_effective_rank": ("up", 0.2, 0.5),
    "effective_rank": ("up", 0.2, 0.5),
    "dead_fraction": ("down", 0.1, 0.3),
    "allocation_tv": ("down", 0.1, 0.3),
}
LABELS = {
    "utilization": "utilization", "perplexity": "perplexity", "ema_perplexity": "EMA perplexity",
    "w_rank": "W rank", "w_effective_rank": "W effective rank", "effective_rank": "codebook effective rank",
    "dead_fraction": "share of dead codes", "allocation_tv": "allocation TV",
}


# ------------------------------------------------------------------------------ the run's files


def run_checkpoints(target: str | Path) -> list[Path]:
    """The checkpoint files of ``target``: a folder (its checkpoint files, not recursive) or a
    glob pattern (``'runs/a/step_*.pt'``)."""
    text = str(target)
    path = Path(text)
    if path.is_dir():
        files = [p for p in path.iterdir() if p.is_file() and p.suffix.lower() in CHECKPOINT_SUFFIXES]
        where = f"folder {path}"
    elif path.is_file():
        files = [path]
        where = str(path)
    else:
        files = [Path(p) for p in globlib.glob(text) if Path(p).is_file()]
        files = [p for p in files if p.suffix.lower() in CHECKPOINT_SUFFIXES]
        where = f"pattern {text!r}"
    if not files:
        raise InputFileError(f"No checkpoints ({', '.join(CHECKPOINT_SUFFIXES)}) in {where}.",
                             "Pass the run's folder or a glob such as 'run/step_*.pt' (quoted).")
    return sorted(files, key=lambda p: natural_key(p.name))


def step_of(path: Path, *, allow_globals: Sequence[str] = ()) -> tuple[int, str]:
    """The training step of a checkpoint file and where it was read (see the module docstring)."""
    found = _step_in_file(path, allow_globals)
    if found is not None:
        return found
    name = path.name
    m = _STEP_IN_NAME.search(name)
    if m is None:
        numbers = _NUMBER.findall(path.stem)
        if not numbers:
            raise InputFileError(f"{path} says nothing of its training step: no global_step/step entry and no number in its name.",
                                 "Name the checkpoints by step (step_100.pt) or store a 'step' entry.")
        return int(numbers[-1]), "file name"
    return int(m.group(1)), "file name"


def _step_in_file(path: Path, allow_globals: Sequence[str]) -> tuple[int, str] | None:
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        from vqdoctor.io.checkpoints import safetensors_header

        header, _ = safetensors_header(path)
        meta = header.get("__metadata__") or {}
        for key in STEP_KEYS:
            value = meta.get(key)
            if isinstance(value, str) and value.strip().isdigit():
                return int(value), f"metadata: {key}"
        return None
    if suffix in PICKLE_SUFFIXES:
        obj = safe_torch_load(path, allow_globals=allow_globals)  # memory-mapped: tensors are not read
        if isinstance(obj, dict):
            for key in STEP_KEYS:
                value = obj.get(key)
                if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
                    return value, f"metadata: {key}"
                if value is not None and hasattr(value, "item") and getattr(value, "numel", lambda: 0)() == 1:
                    v = value.item()
                    if isinstance(v, int) and v >= 0:
                        return v, f"metadata: {key}"
    return None


# ------------------------------------------------------------------------------ the analysis


def _rows(step: int, report: Report) -> list[TrendRow]:
    out = []
    for cb in report.codebooks:
        u, e, g, w, t = cb.usage, cb.ema, cb.geometry, cb.w, cb.tokens_collapse
        assert g is not None  # diagnose measures every codebook's geometry (only merged statistics lack it)
        out.append(TrendRow(
            step=step, checkpoint=report.checkpoint.path, codebook=cb.name, size=cb.size,
            vectors=None if u is None else u.vectors,
            utilization=None if u is None else u.utilization,
            perplexity=None if u is None else u.perplexity,
            dead_codes=None if u is None else u.dead_codes,
            dead_fraction=None if u is None else u.dead_codes / cb.size,
            quantization_mse=None if u is None else u.quantization_mse,
            ema_dead_codes=None if e is None else e.dead_codes_relative,
            ema_perplexity=None if e is None else e.perplexity,
            numerical_rank=g.numerical_rank, effective_rank=g.effective_rank,
            w_rank=None if w is None else w.rank, w_effective_rank=None if w is None else w.effective_rank,
            allocation_tv=None if t is None else t.allocation_tv,
        ))
    return out


def _shared_sources(data: DataOptions) -> tuple[LatentSource | None, InputSource | None]:
    if data.latents is not None:
        return open_latents(data.latents, channel_axis=data.channel_axis, labels=data.labels), None
    if data.inputs is not None:
        return None, open_inputs(data.inputs, labels=data.labels, image_size=data.image_size,
                                 clip_seconds=data.clip_seconds, sample_rate=data.sample_rate)
    return None, None


def trend(
    target: str | Path | Sequence[str | Path],
    *,
    data: DataOptions = DataOptions(),
    analysis: AnalysisOptions = AnalysisOptions(projection="none"),
    on_checkpoint: Callable[[int, int, TrendPoint], None] | None = None,
) -> Trend:
    """Analyse every checkpoint of a run (a folder, a glob, or a list of files) over the same data
    and judge the trend. ``on_checkpoint(i, n, point)`` is called before each checkpoint."""
    if data.shard is not None:
        raise UsageError("trend reads all the data for every checkpoint; --shard does not apply.")
    files = run_checkpoints(target) if isinstance(target, (str, Path)) else [Path(p) for p in target]
    points = sorted((TrendPoint(*step_of(p, allow_globals=data.allow_globals), str(p)) for p in files),
                    key=lambda pt: (pt.step, natural_key(Path(pt.path).name)))
    device = pick_device(data.device)
    latents, inputs = _shared_sources(data)
    rows: list[TrendRow] = []
    description = "none (data-free: EMA buffers and geometry only)"
    notes: list[str] = []
    steps = [p.step for p in points]
    if len(set(steps)) != len(steps):
        dup = sorted({s for s in steps if steps.count(s) > 1})
        notes.append(f"Several checkpoints share step(s) {', '.join(map(str, dup))}; they are ordered by name.")
    modes: dict = {}  # modes inferred from the data are fitted once: same data, same subsample, same fit
    for i, point in enumerate(points):
        if on_checkpoint is not None:
            on_checkpoint(i, len(points), point)
        session = api.open_session(point.path, data=data, analysis=analysis, device=device)
        stream = session.stream(data, latents=latents, inputs=inputs)
        if stream is not None:
            stream = replace(stream, mode_cache=modes)
            description = stream.description
        report = diagnose(checkpoint=session.info, discovery=session.found, stream=stream,
                          options=replace(analysis, keep_counts=False), device=device)
        rows.extend(_rows(point.step, report))
    result = Trend(checkpoints=points, rows=rows, verdicts=[], data=description, notes=notes)
    return replace(result, verdicts=trend_verdicts(result))


# ------------------------------------------------------------------------------ verdicts


def _fmt(metric: str, v: float) -> str:
    if metric in ("utilization", "dead_fraction"):
        return f"{v:.0%}"
    return f"{v:,.3g}" if abs(v) < 1000 else f"{v:,.0f}"


def _judge(codebook: str, metric: str, series: list[tuple[int, float]]) -> TrendVerdict | None:
    direction, warn, fail = TREND_CHECKS[metric]
    if len(series) < 2:
        return None
    name = LABELS[metric]
    last_step, last = series[-1]
    tail = [v for _, v in series[-3:]]
    falling = all(b < a for a, b in zip(tail, tail[1:]))
    rising = all(b > a for a, b in zip(tail, tail[1:]))
    still = len(tail) == 3 and (falling if direction == "up" else rising)  # moving that way at the end
    if direction == "up":
        peak_step, peak = max(series[:-1], key=lambda sv: (sv[1], sv[0]))  # the last time at the peak
        if peak <= 0 or last >= peak:
            return None
        value = (peak - last) / peak
        verb = "dropping" if still else "fell"
        message = (f"{name} {verb} {value:.0%} after step {peak_step:,}: {_fmt(metric, peak)} at step {peak_step:,}, "
                   f"{_fmt(metric, last)} at step {last_step:,}")
    else:
        low_step, low = min(series[:-1], key=lambda sv: (sv[1], -sv[0]))  # the last time at the lowest
        if last <= low:
            return None
        value = last - low
        peak_step = low_step
        verb = "rising" if still else "rose"
        message = (f"{name} {verb} by {value:.2f} after step {low_step:,}: {_fmt(metric, low)} at step {low_step:,}, "
                   f"{_fmt(metric, last)} at step {last_step:,}")
    if value >= fail:
        status, bound = "fail", fail
    elif value >= warn:
        status, bound = "warn", warn
    else:
        return None
    return TrendVerdict(codebook=codebook, metric=metric, status=status, value=value, threshold=bound,
                        step=peak_step, message=message)


def trend_verdicts(t: Trend) -> list[TrendVerdict]:
    """For every codebook and metric of :data:`TREND_CHECKS`: a fall from the peak (or a rise
    from the lowest point) to the last checkpoint beyond the warn / fail bound."""
    out = []
    for cb in t.codebooks:
        for metric in TREND_CHECKS:
            v = _judge(cb, metric, t.series(cb, metric))
            if v is not None:
                out.append(v)
    return out

"""Options shared by the commands that read data (inspect, check, fix, trend), declared once.

A command takes them through :func:`shared_options`: its ``data: DataOptions`` and ``analysis:
AnalysisOptions`` parameters become the flags below (their names, defaults, help and panels), and
the command receives the two option groups built and checked."""

from __future__ import annotations

import functools
import inspect
import keyword
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Optional, TypeVar

import typer

from vqdoctor.core.device import check_device
from vqdoctor.errors import UsageError
from vqdoctor.options import METRICS, AnalysisOptions, DataOptions

F = TypeVar("F", bound=Callable[..., Any])

LatentsOpt = Annotated[Optional[Path], typer.Option("--latents", help="Vectors that reach the quantizer: .npy .npz .safetensors .pt, (N, d) or (B, d, H, W) / (B, T, d) with --channel-axis.", rich_help_panel="Data")]
ChannelAxisOpt = Annotated[Optional[int], typer.Option("--channel-axis", help="Axis of the channels in the latents or the encoder output (1 for B×d×H×W, -1 for B×T×d).", rich_help_panel="Data")]
InputsOpt = Annotated[Optional[Path], typer.Option("--inputs", help="Raw data the encoder takes: .npy/.npz (labels under y/labels), an image or audio folder (class = first-level sub-folder), a manifest .csv/.jsonl (path,label), .pt/.safetensors.", rich_help_panel="Data")]
LabelsOpt = Annotated[Optional[Path], typer.Option("--labels", help="One mode id per input (.npy). Without labels, modes are inferred by clustering.", rich_help_panel="Data")]
ImageSizeOpt = Annotated[Optional[int], typer.Option("--image-size", help="Resize the images of an --inputs folder to N x N (RGB/grey scaled to [0, 1]); without it all images must share one size.", rich_help_panel="Data")]
ClipSecondsOpt = Annotated[Optional[float], typer.Option("--clip-seconds", help="Cut (or zero-pad) every clip of an --inputs audio folder to this many seconds; without it all clips must share one length.", rich_help_panel="Data")]
SampleRateOpt = Annotated[Optional[int], typer.Option("--sample-rate", help="Resample every clip of an --inputs audio folder to this rate in Hz (polyphase filter); without it all clips must share one rate.", rich_help_panel="Data")]
PixelRangeOpt = Annotated[Optional[str], typer.Option("--pixel-range", metavar="LO,HI", help="Scale the images a Hugging Face model folder is fed to 0,1 or -1,1 (default: the model's own, -1,1 for the VQGAN tokenizers).", rich_help_panel="Data")]
ModelOpt = Annotated[Optional[str], typer.Option("--model", help="Your model factory, 'pkg.module:factory' or 'path/file.py:factory' (your own trusted code).", rich_help_panel="Encoder")]
ModelArgOpt = Annotated[Optional[list[str]], typer.Option("--model-arg", metavar="NAME=VALUE", help="A keyword argument for the --model factory; the value is read as an int, float, true/false, none, or else a string (quote it, '\"8\"', to keep a number a string). Repeatable.", rich_help_panel="Encoder")]
EncoderOpt = Annotated[Optional[Path], typer.Option("--encoder", help="An exported encoder: TorchScript file or torch.export program (.pt2).", rich_help_panel="Encoder")]
EncodeMethodOpt = Annotated[Optional[str], typer.Option("--encode-method", help="Method or submodule of the --model that encodes (default: encode, else encoder).", rich_help_panel="Encoder")]
AllowGlobalOpt = Annotated[Optional[list[str]], typer.Option("--allow-global", help="Let a pickle use this plain-data type; only the allow-list of docs/security.md (e.g. argparse.Namespace, datetime.datetime, numpy.dtype). Repeatable.", rich_help_panel="Checkpoint")]
NestingOpt = Annotated[Optional[str], typer.Option("--nesting", help="Which nested state dict of a pickle to read, e.g. 'ema' or 'a/b' ('' = top level).", rich_help_panel="Checkpoint")]
MetricOpt = Annotated[str, typer.Option("--metric", help="How codes are compared: auto (from the layout, its config and the codes; `vqdoctor ls` shows the evidence), euclidean or cosine (for every codebook).", rich_help_panel="Checkpoint")]
CodebookOpt = Annotated[Optional[str], typer.Option("--codebook", help="Glob over codebook names or keys, overriding the search.", rich_help_panel="Checkpoint")]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto (CUDA when present), cpu, cuda or cuda:N (one GPU of several).", rich_help_panel="Run")]
BatchSizeOpt = Annotated[int, typer.Option("--batch-size", help="Vectors (or inputs) per batch.", rich_help_panel="Run")]
MaxVectorsOpt = Annotated[Optional[int], typer.Option("--max-vectors", help="Stop after this many vectors.", rich_help_panel="Run")]
MinCountOpt = Annotated[int, typer.Option("--min-count", help="A code used fewer times than this is dead.", rich_help_panel="Analysis")]
SubsampleOpt = Annotated[int, typer.Option("--subsample", help="Points kept for modes, projections and support checks.", rich_help_panel="Analysis")]
ProjectionOpt = Annotated[str, typer.Option("--projection", help="2-D picture: tsne, umap, pca or none.", rich_help_panel="Analysis")]
SeedOpt = Annotated[int, typer.Option("--seed", help="Seed for subsampling, clustering and projections.", rich_help_panel="Analysis")]
ShardOpt = Annotated[Optional[str], typer.Option("--shard", metavar="i/n", help="Take only slice i of n (0-based) of the data, e.g. 0/4; save with --save-stats and combine with vqdoctor merge.", rich_help_panel="Run")]
BudgetOpt = Annotated[int, typer.Option("--memory-budget-mb", help="Memory for one distance block (never an N×K matrix).", rich_help_panel="Run")]

ModesOpt = Annotated[str, typer.Option("--modes", help="Data modes for tokens/embeddings collapse: auto (labels, else inferred by GMM-BIC), labels (only given labels; never inferred) or none (skip both).", rich_help_panel="Analysis")]

# How much of the report reaches stdout (inspect, check, merge); one of them at a time.
VerboseOpt = Annotated[bool, typer.Option("--verbose", "-v", help="Show every detail: per-codebook facts, per-mode tables, every verdict with its remedy, the notes.", rich_help_panel="Output")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="Print nothing on stdout (the exit code and the files asked for only; errors still go to stderr).", rich_help_panel="Output")]

# Resolution of the pictures (inspect, merge: --plots and --html); the default is vqdoctor.report.plots.DPI.
DEFAULT_DPI = 110
DpiOpt = Annotated[int, typer.Option("--dpi", help="Resolution of the pictures (--plots, --html, trend --plot) in dots per inch (50 to 600; 200-300 for print).", rich_help_panel="Output")]

PROJECTIONS = ("tsne", "umap", "pca", "none")

# Every numeric flag's range, checked here (one paragraph, exit 2) rather than by Typer (a box).
# Upper bounds keep values inside what numpy/torch/scikit-learn take (a seed is 32-bit, counts are
# int64) and inside memory (an image side such that one image stays under the pixel cap).
FLAG_RANGES: dict[str, tuple[float, float]] = {
    "--seed": (0, 2**32 - 1),
    "--min-count": (1, 2**62),
    "--batch-size": (1, 2**31 - 1),
    "--subsample": (10, 10**8),
    "--max-vectors": (1, 2**62),
    "--image-size": (1, 5792),  # 5792^2 <= vqdoctor.io.media.MAX_IMAGE_PIXELS
    "--clip-seconds": (1e-3, 3600.0),
    "--sample-rate": (1, 1_000_000),
    "--memory-budget-mb": (1, 2**20),
    "--iters": (0, 10**6),
    "--dpi": (50, 600),  # vqdoctor.report.plots.DPI_RANGE
    # vqdoctor check thresholds: shares in 0..1, counts and ratios non-negative
    "--min-utilization": (0.0, 1.0),
    "--max-dead-fraction": (0.0, 1.0),
    "--min-normalized-perplexity": (0.0, 1.0),
    "--max-allocation-tv": (0.0, 1.0),
    "--max-merged-pairs": (0, 10**9),
    "--max-relative-mse": (0.0, 1e12),
    "--max-regression": (0.0, 1e12),
}
MAX_SHARDS = 10**6
MODES = ("auto", "labels", "none")


def check_range(flag: str, value: float | None) -> None:
    """Raise :class:`UsageError` when ``value`` (None: not given) is outside ``FLAG_RANGES[flag]``."""
    if value is None:
        return
    lo, hi = FLAG_RANGES[flag]
    if not (math.isfinite(value) and lo <= value <= hi):
        shown = f"{value:g}" if isinstance(value, float) else (str(value) if len(str(value)) <= 30 else f"{value:.3g}")
        bounds = [f"{b:,}" if isinstance(b, int) else f"{b:g}" for b in (lo, hi)]
        raise UsageError(f"{flag} {shown} is out of range: it must be between {bounds[0]} and {bounds[1]}.",
                         f"Pass {flag} with a value in that range.")


def check_ranges(*pairs: tuple[str, float | None]) -> None:
    """:func:`check_range` over ``(flag, value)`` pairs."""
    for flag, value in pairs:
        check_range(flag, value)


def data_options(
    *, latents: Path | None, channel_axis: int | None, inputs: Path | None, labels: Path | None,
    model: str | None, encoder: Path | None, encode_method: str | None, allow_global: list[str] | None,
    model_arg: list[str] | None = None,
    nesting: str | None = None, image_size: int | None = None, clip_seconds: float | None = None, sample_rate: int | None = None, batch_size: int, device: str, max_vectors: int | None, shard: tuple[int, int] | None = None,
    pixel_range: str | None = None,
) -> DataOptions:
    for flag, value in (("--batch-size", batch_size), ("--max-vectors", max_vectors),
                        ("--image-size", image_size), ("--clip-seconds", clip_seconds),
                        ("--sample-rate", sample_rate)):
        check_range(flag, value)
    check_device(device)
    pixels = parse_pixel_range(pixel_range)
    if latents is not None and (model is not None or encoder is not None):
        raise UsageError("--latents cannot be combined with --model/--encoder: give either the vectors that reach the quantizer or raw inputs with an encoder.",
                         "With --latents, --inputs may name the raw items the latents came from (row for row), for the input-vs-latent comparison.")
    if (model is not None or encoder is not None) and inputs is None:
        raise UsageError("An encoder (--model/--encoder) needs raw data: pass --inputs PATH.")
    if model is not None and encoder is not None:
        raise UsageError("Pass either --model or --encoder, not both.")
    if pixel_range is not None and (model is not None or encoder is not None or latents is not None):
        raise UsageError("--pixel-range sets how a Hugging Face model folder's images are scaled; it does not apply "
                         "with --model, --encoder or --latents.", "Scale the images in your own encoder, or drop --pixel-range.")
    if model_arg and model is None:
        raise UsageError(f"--model-arg {model_arg[0]!r} was given without --model: it is passed to the model factory.",
                         "Add --model pkg.module:factory (or path/file.py:factory), or drop --model-arg.")
    return DataOptions(
        latents=latents, channel_axis=channel_axis, inputs=inputs, labels=labels, model=model,
        model_args=parse_model_args(model_arg),
        encoder=encoder, encode_method=encode_method, allow_globals=tuple(allow_global or ()), nesting=nesting, image_size=image_size, clip_seconds=clip_seconds,
        sample_rate=sample_rate, batch_size=batch_size, device=device, max_vectors=max_vectors, shard=shard, pixel_range=pixels,
    )


PIXEL_RANGES = {"0,1": (0.0, 1.0), "-1,1": (-1.0, 1.0)}


def parse_pixel_range(text: str | None) -> tuple[float, float] | None:
    """``"0,1"`` / ``"-1,1"`` -> (lo, hi); None stays None (the model's own range)."""
    if text is None:
        return None
    key = text.replace(" ", "")
    if key not in PIXEL_RANGES:
        raise UsageError(f"--pixel-range {text[:40]!r} is not one of {', '.join(PIXEL_RANGES)}.",
                         "Pass --pixel-range 0,1 or --pixel-range=-1,1 (or leave it out: the model's own range).")
    return PIXEL_RANGES[key]


def check_verbosity(verbose: bool, quiet: bool) -> None:
    if verbose and quiet:
        raise UsageError("--verbose and --quiet cannot be combined.", "Pass one of them (or neither for the compact report).")


def check_metric(metric: str) -> str:
    if metric not in METRICS:
        raise UsageError(f"--metric {metric!r} is not one of {', '.join(METRICS)}.",
                         "Use --metric auto to take it from the layout, config and codes (see `vqdoctor ls`).")
    return metric


def analysis_options(*, codebook: str | None, min_count: int, subsample: int, projection: str, seed: int,
                     memory_budget_mb: int, metric: str = "auto", modes: str = "auto") -> AnalysisOptions:
    for flag, value in (("--min-count", min_count), ("--subsample", subsample), ("--seed", seed),
                        ("--memory-budget-mb", memory_budget_mb)):
        check_range(flag, value)
    if projection not in PROJECTIONS:
        raise UsageError(f"--projection {projection!r} is not one of {', '.join(PROJECTIONS)}.")
    check_modes(modes)
    return AnalysisOptions(codebook=codebook, min_count=min_count, subsample=subsample, projection=projection,
                           seed=seed, memory_budget_mb=memory_budget_mb, metric=check_metric(metric), modes=modes)


def check_modes(modes: str) -> str:
    if modes not in MODES:
        raise UsageError(f"--modes {modes!r} is not one of {', '.join(MODES)}.",
                         "Use auto (labels, else inferred), labels (never inferred) or none.")
    return modes


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """``"i/n"`` -> (i, n) with 0 <= i < n; None stays None."""
    if text is None:
        return None
    parts = text.strip().split("/")
    hint = "Pass --shard i/n with 0 <= i < n, e.g. --shard 0/4 for the first of four slices."
    if len(parts) != 2 or not all(p.strip().isascii() and p.strip().isdigit() for p in parts):
        raise UsageError(f"--shard {text[:40]!r} is not of the form i/n (two whole numbers).", hint)
    if any(len(p.strip()) > 7 for p in parts) or int(parts[1]) > MAX_SHARDS:
        raise UsageError(f"--shard {text[:40]!r}: at most {MAX_SHARDS:,} shards are supported.", hint)
    i, n = (int(p) for p in parts)
    if n < 1:
        raise UsageError(f"--shard {text!r} has n={n}: there must be at least one shard.", hint)
    if i >= n:
        raise UsageError(f"--shard {text!r} asks for slice {i} of {n}, but slices are numbered 0..{n - 1}.", hint)
    return i, n


# The shared flags in the order `--help` lists them: name -> (annotation, default). Data options
# go to DataOptions, the rest to AnalysisOptions.
SHARED_OPTIONS: dict[str, tuple[Any, Any]] = {
    "latents": (LatentsOpt, None),
    "channel_axis": (ChannelAxisOpt, None),
    "inputs": (InputsOpt, None),
    "labels": (LabelsOpt, None),
    "image_size": (ImageSizeOpt, None),
    "clip_seconds": (ClipSecondsOpt, None),
    "sample_rate": (SampleRateOpt, None),
    "pixel_range": (PixelRangeOpt, None),
    "model": (ModelOpt, None),
    "model_arg": (ModelArgOpt, None),
    "encoder": (EncoderOpt, None),
    "encode_method": (EncodeMethodOpt, None),
    "allow_global": (AllowGlobalOpt, None),
    "nesting": (NestingOpt, None),
    "codebook": (CodebookOpt, None),
    "metric": (MetricOpt, "auto"),
    "min_count": (MinCountOpt, 1),
    "subsample": (SubsampleOpt, 4000),
    "projection": (ProjectionOpt, "pca"),
    "modes": (ModesOpt, "auto"),
    "seed": (SeedOpt, 0),
    "device": (DeviceOpt, "auto"),
    "batch_size": (BatchSizeOpt, 8192),
    "max_vectors": (MaxVectorsOpt, None),
    "memory_budget_mb": (BudgetOpt, 256),
    "shard": (ShardOpt, None),
}
DATA_NAMES = ("latents", "channel_axis", "inputs", "labels", "image_size", "clip_seconds", "sample_rate", "pixel_range", "model", "model_arg", "encoder",
              "encode_method", "allow_global", "nesting", "device", "batch_size", "max_vectors", "shard")


def shared_options(*, exclude: tuple[str, ...] = ()) -> Callable[[F], F]:
    """Give a command the shared flags (all of :data:`SHARED_OPTIONS` but ``exclude``, which take
    their defaults). The command declares ``data: DataOptions`` and ``analysis: AnalysisOptions``;
    in its signature (Typer reads ``__signature__``) the flags up to ``--nesting`` (the Data,
    Encoder and Checkpoint panels) take the place of ``data``, the rest (``--codebook`` on) the place
    of ``analysis``, and the command is called with both groups built by :func:`data_options` /
    :func:`analysis_options`."""
    unknown = set(exclude) - set(SHARED_OPTIONS)
    if unknown:
        raise ValueError(f"shared_options: unknown option(s) {sorted(unknown)}")
    names = [n for n in SHARED_OPTIONS if n not in exclude]
    order = list(SHARED_OPTIONS)
    at_data = [n for n in names if order.index(n) <= order.index("nesting")]
    at_analysis = [n for n in names if n not in at_data]

    def decorate(fn: F) -> F:
        own = inspect.signature(fn, eval_str=True).parameters
        if "data" not in own or "analysis" not in own:
            raise TypeError(f"{fn.__name__} must take data: DataOptions and analysis: AnalysisOptions")
        clash = set(names) & set(own)
        if clash:
            raise TypeError(f"{fn.__name__} declares shared option(s) {sorted(clash)}: exclude them")

        def flags(group: list[str]) -> list[inspect.Parameter]:
            return [inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, default=SHARED_OPTIONS[n][1],
                                      annotation=SHARED_OPTIONS[n][0]) for n in group]

        params: list[inspect.Parameter] = []
        for p in own.values():
            if p.name == "data":
                params.extend(flags(at_data))
            elif p.name == "analysis":
                params.extend(flags(at_analysis))
            else:
                params.append(p.replace(kind=inspect.Parameter.KEYWORD_ONLY))

        @functools.wraps(fn)
        def wrapper(**kwargs: Any) -> Any:
            values = {n: default for n, (_, default) in SHARED_OPTIONS.items()} | {n: kwargs.pop(n) for n in names}
            data = data_options(**{n: values[n] for n in DATA_NAMES if n != "shard"}, shard=parse_shard(values["shard"]))
            analysis = analysis_options(**{n: values[n] for n in SHARED_OPTIONS if n not in DATA_NAMES})
            return fn(data=data, analysis=analysis, **kwargs)

        wrapper.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
        wrapper.__annotations__ = {p.name: p.annotation for p in params}
        return wrapper  # type: ignore[return-value]

    return decorate


_INT_TEXT = re.compile(r"[+-]?[0-9]{1,4000}")
_FLOAT_TEXT = re.compile(r"[+-]?([0-9]+\.[0-9]*|\.[0-9]+|[0-9]+)([eE][+-]?[0-9]+)?")


def parse_model_args(texts: list[str] | None) -> tuple[tuple[str, object], ...]:
    """``--model-arg NAME=VALUE`` options -> ``((name, value), ...)`` in order; see :func:`parse_model_value`."""
    out: dict[str, object] = {}
    for text in texts or ():
        name, sep, raw = text.partition("=")
        name = name.strip()
        if not sep or not name.isidentifier() or keyword.iskeyword(name):
            raise UsageError(f"--model-arg {text[:80]!r} is not NAME=VALUE with NAME a Python identifier.",
                             "Pass e.g. --model-arg channels=64 --model-arg name=vqgan (one option per argument).")
        if name in out:
            raise UsageError(f"--model-arg {name} is given twice ({out[name]!r} and {raw.strip()[:40]!r}).",
                             "Pass each factory argument once.")
        out[name] = parse_model_value(raw)
    return tuple(out.items())


def parse_model_value(raw: str) -> object:
    """An int, a float, true/false (any case) as a bool, none/null as None, a quoted text as that
    text; anything else the text itself (stripped)."""
    text = raw.strip()
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null"):
        return None
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    if _INT_TEXT.fullmatch(text):
        return int(text)
    if _FLOAT_TEXT.fullmatch(text):
        return float(text)
    return text

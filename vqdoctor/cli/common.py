"""Options shared by the commands that read data (inspect, check, fix), declared once."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Optional

import typer

from vqdoctor.codebooks import METRICS
from vqdoctor.errors import UsageError
from vqdoctor.options import AnalysisOptions, DataOptions

LatentsOpt = Annotated[Optional[Path], typer.Option("--latents", help="Vectors that reach the quantizer: .npy .npz .safetensors .pt, (N, d) or (B, d, H, W) / (B, T, d) with --channel-axis.", rich_help_panel="Data")]
ChannelAxisOpt = Annotated[Optional[int], typer.Option("--channel-axis", help="Axis of the channels in the latents or the encoder output (1 for B×d×H×W, -1 for B×T×d).", rich_help_panel="Data")]
InputsOpt = Annotated[Optional[Path], typer.Option("--inputs", help="Raw data the encoder takes: .npy/.npz (labels under y/labels), an image folder (class = sub-folder), .pt/.safetensors.", rich_help_panel="Data")]
LabelsOpt = Annotated[Optional[Path], typer.Option("--labels", help="One mode id per input (.npy). Without labels, modes are inferred by clustering.", rich_help_panel="Data")]
ImageSizeOpt = Annotated[Optional[int], typer.Option("--image-size", help="Resize the images of an --inputs folder to N x N (RGB/grey scaled to [0, 1]); without it all images must share one size.", rich_help_panel="Data")]
ClipSecondsOpt = Annotated[Optional[float], typer.Option("--clip-seconds", help="Cut (or zero-pad) every .wav clip of an --inputs audio folder to this many seconds; without it all clips must share one length.", rich_help_panel="Data")]
PixelRangeOpt = Annotated[Optional[str], typer.Option("--pixel-range", metavar="LO,HI", help="Scale the images a Hugging Face model folder is fed to 0,1 or -1,1 (default: the model's own, -1,1 for the VQGAN tokenizers).", rich_help_panel="Data")]
ModelOpt = Annotated[Optional[str], typer.Option("--model", help="Your model factory, 'pkg.module:factory' or 'path/file.py:factory' (your own trusted code).", rich_help_panel="Encoder")]
EncoderOpt = Annotated[Optional[Path], typer.Option("--encoder", help="An exported encoder: TorchScript file or torch.export program (.pt2).", rich_help_panel="Encoder")]
EncodeMethodOpt = Annotated[Optional[str], typer.Option("--encode-method", help="Method or submodule of the --model that encodes (default: encode, else encoder).", rich_help_panel="Encoder")]
AllowGlobalOpt = Annotated[Optional[list[str]], typer.Option("--allow-global", help="Let a pickle use this plain-data type; only the allow-list of docs/security.md (e.g. argparse.Namespace, datetime.datetime, numpy.dtype). Repeatable.", rich_help_panel="Checkpoint")]
NestingOpt = Annotated[Optional[str], typer.Option("--nesting", help="Which nested state dict of a pickle to read, e.g. 'ema' or 'a/b' ('' = top level).", rich_help_panel="Checkpoint")]
MetricOpt = Annotated[str, typer.Option("--metric", help="How codes are compared: auto (from the layout, its config and the codes; `vqdoctor ls` shows the evidence), euclidean or cosine (for every codebook).", rich_help_panel="Checkpoint")]
CodebookOpt = Annotated[Optional[str], typer.Option("--codebook", help="Glob over codebook names or keys, overriding the search.", rich_help_panel="Checkpoint")]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto (CUDA when present), cpu or cuda.", rich_help_panel="Run")]
BatchSizeOpt = Annotated[int, typer.Option("--batch-size", help="Vectors (or inputs) per batch.", rich_help_panel="Run")]
MaxVectorsOpt = Annotated[Optional[int], typer.Option("--max-vectors", help="Stop after this many vectors.", rich_help_panel="Run")]
MinCountOpt = Annotated[int, typer.Option("--min-count", help="A code used fewer times than this is dead.", rich_help_panel="Analysis")]
SubsampleOpt = Annotated[int, typer.Option("--subsample", help="Points kept for modes, projections and support checks.", rich_help_panel="Analysis")]
ProjectionOpt = Annotated[str, typer.Option("--projection", help="2-D picture: tsne, umap, pca or none.", rich_help_panel="Analysis")]
SeedOpt = Annotated[int, typer.Option("--seed", help="Seed for subsampling, clustering and projections.", rich_help_panel="Analysis")]
ShardOpt = Annotated[Optional[str], typer.Option("--shard", metavar="i/n", help="Take only slice i of n (0-based) of the data, e.g. 0/4; save with --save-stats and combine with vqdoctor merge.", rich_help_panel="Run")]
BudgetOpt = Annotated[int, typer.Option("--memory-budget-mb", help="Memory for one distance block (never an N×K matrix).", rich_help_panel="Run")]

ModesOpt = Annotated[str, typer.Option("--modes", help="Data modes for tokens/embeddings collapse: auto (labels, else inferred by GMM-BIC), labels (only given labels; never inferred) or none (skip both).", rich_help_panel="Analysis")]

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
    "--memory-budget-mb": (1, 2**20),
    "--iters": (0, 10**6),
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
DEVICES = ("auto", "cpu", "cuda")


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
    nesting: str | None = None, image_size: int | None = None, clip_seconds: float | None = None, batch_size: int, device: str, max_vectors: int | None, shard: tuple[int, int] | None = None,
    pixel_range: str | None = None,
) -> DataOptions:
    for flag, value in (("--batch-size", batch_size), ("--max-vectors", max_vectors),
                        ("--image-size", image_size), ("--clip-seconds", clip_seconds)):
        check_range(flag, value)
    pixels = parse_pixel_range(pixel_range)
    if device not in DEVICES:
        raise UsageError(f"--device {device!r} is not one of {', '.join(DEVICES)}.", "Use --device auto to take CUDA when present.")
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
    return DataOptions(
        latents=latents, channel_axis=channel_axis, inputs=inputs, labels=labels, model=model,
        encoder=encoder, encode_method=encode_method, allow_globals=tuple(allow_global or ()), nesting=nesting, image_size=image_size, clip_seconds=clip_seconds,
        batch_size=batch_size, device=device, max_vectors=max_vectors, shard=shard, pixel_range=pixels,
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

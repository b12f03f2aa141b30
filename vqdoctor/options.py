"""Option groups shared by the API and every command (``inspect``, ``check``, ``fix``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_MAX_REGRESSION = 0.05  # check --max-regression: tolerated relative worsening against --baseline
METRICS = ("auto", "euclidean", "cosine")  # --metric: how codes are compared (auto: layout, config, codes)


@dataclass(frozen=True)
class DataOptions:
    """Where the vectors come from. At most one of ``latents`` / encoder sources is used;
    with none, a checkpoint that names its own data and encoder (the samples) uses those, else
    the analysis is data-free."""

    latents: Path | None = None  # .npy .npz .safetensors .pt: (N, d), (B, d, H, W), (B, T, d)
    channel_axis: int | None = None  # axis of the channels in latents / encoder output
    inputs: Path | None = None  # raw data the encoder takes: .npy/.npz, image folder
    labels: Path | None = None  # one mode id per input (.npy), or taken from the npz / folder
    image_size: int | None = None  # resize images of an image folder to image_size x image_size
    clip_seconds: float | None = None  # cut / zero-pad the clips of an audio folder to this length
    sample_rate: int | None = None  # resample audio clips to this rate (Hz); None: the clips' own (one rate)
    pixel_range: tuple[float, float] | None = None  # images scaled to [lo, hi] for a HF model (default: its own)
    model: str | None = None  # "pkg.module:factory" or "path/file.py:factory"
    model_args: tuple[tuple[str, Any], ...] = ()  # keyword arguments for the model factory, in order
    encoder: Path | None = None  # TorchScript or torch.export (.pt2) file
    encode_method: str | None = None  # attribute/method of the model that encodes
    allow_globals: tuple[str, ...] = ()  # extra pickle globals the user trusts
    nesting: str | None = None  # which nested state dict of a pickle to read ("ema", "a/b", "" = top)
    batch_size: int = 8192
    device: str = "auto"  # auto | cpu | cuda
    max_vectors: int | None = None  # stop after this many vectors
    shard: tuple[int, int] | None = None  # (i, n): this process takes slice i of n


@dataclass(frozen=True)
class AnalysisOptions:
    codebook: str | None = None  # glob over codebook names / keys
    metric: str = "auto"  # auto | euclidean | cosine: how codes are compared (auto: layout, config, codes)
    min_count: int = 1  # a code used fewer times is dead
    subsample: int = 4000  # points kept for modes, projections and support checks
    projection: str = "pca"  # tsne | umap | pca | none
    memory_budget_mb: int = 256  # per distance block
    seed: int = 0
    keep_counts: bool = True  # keep per-code counts in the Report (plots)
    modes: str = "auto"  # data modes: auto (labels, else inferred) | labels (never inferred) | none

"""The shipped sample checkpoints (package data), made by ``scripts/make_samples.py``.

Each ``NAME.safetensors`` here is a small MLP VQ-VAE trained on ten Gaussian clusters; its metadata
carries the architecture (``vqdoctor.arch``), the data it was trained on (``vqdoctor.data``, an
``.npz`` beside it with ``x`` (N, dim) float32 and ``y`` (N,) int64 labels), a one-line description
(``vqdoctor.sample``), the seed and what the script measured (``vqdoctor.measured``).
``sample_checkpoints/`` at the repository root holds the same files.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from vqdoctor.errors import UsageError

SAMPLES_DIR: Path = Path(__file__).resolve().parent

# The most instructive sample: the paper's headline failure. Its codebook is 21% used, nine of ten
# modes are starved of codes, yet nothing crashes and reconstruction looks fine: exactly what a
# user must learn to recognise in their own model. `pretrained_healthy` is its repaired twin.
DEFAULT_SAMPLE: str = "vanilla_tokens_collapse"

_ORDER = (
    "vanilla_tokens_collapse",
    "pretrained_healthy",
    "small_encoder_embeddings_collapse",
    "large_codebook_vanilla",
    "large_codebook_simvq",
    "residual_vq",
)


@dataclass(frozen=True)
class SampleInfo:
    name: str
    path: Path  # the .safetensors file
    data: Path  # the .npz it was trained on
    description: str


def _read_metadata(path: Path) -> dict[str, str]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return dict(f.metadata() or {})


def list_samples() -> list[SampleInfo]:
    """The shipped samples, the default first."""
    paths = {p.stem: p for p in SAMPLES_DIR.glob("*.safetensors")}
    names = [n for n in _ORDER if n in paths] + sorted(set(paths) - set(_ORDER))
    out = []
    for name in names:
        meta = _read_metadata(paths[name])
        out.append(
            SampleInfo(
                name=name,
                path=paths[name],
                data=(SAMPLES_DIR / meta.get("vqdoctor.data", "")).resolve(),
                description=meta.get("vqdoctor.sample", ""),
            )
        )
    return out


def sample_path(name: str) -> Path:
    """The .safetensors file of sample ``name`` (with or without the suffix)."""
    stem = name[: -len(".safetensors")] if name.endswith(".safetensors") else name
    path = SAMPLES_DIR / f"{stem}.safetensors"
    if not path.is_file():
        known = ", ".join(s.name for s in list_samples()) or "(none installed)"
        raise UsageError(f"no sample named {name!r}; the samples are: {known}")
    return path


def measured(name: str) -> dict:
    """What scripts/make_samples.py measured on sample ``name`` (``vqdoctor.measured``)."""
    return json.loads(_read_metadata(sample_path(name)).get("vqdoctor.measured", "{}"))


def shipped_sample_for(path: Path) -> Path | None:
    """The packaged sample a missing ``path`` names (``sample_checkpoints/NAME.safetensors`` or a
    bare ``NAME``), so the README's sample commands work after a plain ``pip install`` too."""
    if path.exists() or (len(path.parts) > 1 and path.parent.name != "sample_checkpoints"):
        return None
    if path.suffix not in ("", ".safetensors"):
        return None
    candidate = SAMPLES_DIR / f"{path.stem}.safetensors"
    return candidate if candidate.is_file() else None

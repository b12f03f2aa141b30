"""Hugging Face model folders run end to end: no user code between a tokenizer folder and a report.

When ``vqdoctor inspect FOLDER --inputs DATA`` gets no ``--model`` / ``--encoder`` and the folder's
``config.json`` names a family below (standalone, or nested in a full model), the adapter builds
the model offline from the folder and feeds vqdoctor what reaches the model's quantizer, after the
model's own preprocessing. Needs the ``hf`` extra (``pip install "vqdoctor[hf]"``); docs/hf.md.

Adding a family = one :class:`~vqdoctor.adapters.base.Adapter` subclass listed in :data:`ADAPTERS`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from vqdoctor.adapters.base import Adapter, require_transformers
from vqdoctor.adapters.codecs import DacAdapter, EncodecAdapter, MimiAdapter, XcodecAdapter
from vqdoctor.adapters.glm_image import GlmImageAdapter
from vqdoctor.adapters.preprocess import source_rate
from vqdoctor.adapters.vqgan import ChameleonAdapter, Emu3Adapter, JanusAdapter
from vqdoctor.errors import UsageError
from vqdoctor.io.checkpoint_types import Checkpoint
from vqdoctor.io.encoders import Encoder

ADAPTERS: tuple[Adapter, ...] = (
    ChameleonAdapter(), JanusAdapter(), Emu3Adapter(), GlmImageAdapter(),
    EncodecAdapter(), MimiAdapter(), DacAdapter(), XcodecAdapter(),
)


def find_adapter(config: Mapping[str, Any]) -> Adapter | None:
    """The adapter whose family ``config`` (a ``config.json``) names, or None."""
    return next((a for a in ADAPTERS if a.matches(config)), None)


def encoder_for(ckpt: Checkpoint, *, inputs: Path | None, pixel_range: tuple[float, float] | None,
                device: torch.device) -> Encoder | None:
    """The encoder of a Hugging Face folder whose ``config.json`` names a supported family (None
    for any other checkpoint). ``inputs`` is only read for its clips' sample rate."""
    if not ckpt.path.is_dir():
        return None
    try:
        config = json.loads(ckpt.metadata.get("config") or "{}")
    except ValueError:
        return None
    if not isinstance(config, dict):
        return None
    adapter = find_adapter(config)
    if adapter is None:
        return None
    require_transformers()
    model = adapter.build(config, ckpt.state, ckpt.path).to(device)
    rate = source_rate(inputs) if adapter.modality == "audio" else None
    if pixel_range is not None and adapter.modality != "image":
        raise UsageError(f"--pixel-range applies to image models, but {ckpt.path} holds {adapter.model_class}, "
                           "an audio codec.", "Drop --pixel-range.")

    def fn(x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            prepared = adapter.preprocess(model, x.to(device), source_rate=rate, pixel_range=pixel_range)
            return adapter.encode(model, prepared)

    how = adapter.describe_preprocess(model, pixel_range=pixel_range)
    notes = [f"Encoder: the folder's own {adapter.model_class} (Hugging Face adapter '{adapter.name}', built offline "
             f"from {ckpt.path}); its input: {how}; latents = what reaches its quantizer."]
    if adapter.modality == "audio" and rate is None:
        notes.append(f"The inputs' sample rate is unknown (not a folder of .wav clips): taken to be the model's "
                     f"{adapter.rate(model):,} Hz.")  # type: ignore[attr-defined]
    return Encoder(description=f"{adapter.model_class} ({adapter.name} adapter)", fn=fn,
                   channel_axis=adapter.channel_axis, notes=tuple(notes))


__all__ = ["ADAPTERS", "Adapter", "encoder_for", "find_adapter"]

"""The architecture the shipped samples describe in their ``vqdoctor.arch`` metadata.

One family, ``mlp-vqvae``: the representation-collapse paper's synthetic set-up (an MLP encoder and
decoder of three linear layers with ReLU between them). The JSON names what is needed to rebuild
the encoder and decoder as ``nn.Sequential`` modules whose state-dict keys are the checkpoint's
``encoder.*`` / ``decoder.*`` keys (``0``, ``2``, ``4`` are the linear layers)::

    {"family": "mlp-vqvae", "in_dim": 2, "hidden": 32, "decoder_hidden": 32, "latent_dim": 1,
     "layers": 3, "activation": "relu", "encoder_prefix": "encoder.", "decoder_prefix": "decoder.",
     "quantizer": {"type": "vector-quantize", "prefix": "quantizer.", "codebook_size": 128, ...}}

``quantizer`` is descriptive (vqdoctor finds codebooks from the tensors themselves); only the
encoder/decoder fields are used to build modules.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from vqdoctor.errors import EncoderError

FAMILY = "mlp-vqvae"
_ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU}


@dataclass(frozen=True)
class MlpArch:
    in_dim: int
    hidden: int  # encoder hidden width
    latent_dim: int
    decoder_hidden: int
    layers: int = 3
    activation: str = "relu"
    encoder_prefix: str = "encoder."
    decoder_prefix: str = "decoder."
    quantizer: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(
            {
                "family": FAMILY,
                "in_dim": self.in_dim,
                "hidden": self.hidden,
                "decoder_hidden": self.decoder_hidden,
                "latent_dim": self.latent_dim,
                "layers": self.layers,
                "activation": self.activation,
                "encoder_prefix": self.encoder_prefix,
                "decoder_prefix": self.decoder_prefix,
                "quantizer": self.quantizer,
            },
            sort_keys=True,
        )


def parse_arch(text: str) -> MlpArch:
    """Parse a ``vqdoctor.arch`` metadata value; EncoderError names what is wrong."""
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise EncoderError(f"metadata 'vqdoctor.arch' is not valid JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise EncoderError("metadata 'vqdoctor.arch' must be a JSON object")
    family = raw.get("family")
    if family != FAMILY:
        raise EncoderError(
            f"metadata 'vqdoctor.arch' has family {family!r}; this vqdoctor builds only {FAMILY!r}",
            "pass --model pkg.module:factory or --encoder FILE to encode the data yourself",
        )
    try:
        arch = MlpArch(
            in_dim=int(raw["in_dim"]),
            hidden=int(raw["hidden"]),
            latent_dim=int(raw["latent_dim"]),
            decoder_hidden=int(raw["decoder_hidden"] if "decoder_hidden" in raw else raw["hidden"]),
            layers=int(raw.get("layers", 3)),
            activation=str(raw.get("activation", "relu")),
            encoder_prefix=str(raw.get("encoder_prefix", "encoder.")),
            decoder_prefix=str(raw.get("decoder_prefix", "decoder.")),
            quantizer=dict(raw.get("quantizer") or {}),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise EncoderError(f"metadata 'vqdoctor.arch' lacks or mangles a field: {exc}") from None
    if arch.activation not in _ACTIVATIONS:
        raise EncoderError(
            f"metadata 'vqdoctor.arch' names activation {arch.activation!r}; "
            f"known: {', '.join(sorted(_ACTIVATIONS))}"
        )
    if arch.layers < 1 or min(arch.in_dim, arch.hidden, arch.latent_dim, arch.decoder_hidden) < 1:
        raise EncoderError(f"metadata 'vqdoctor.arch' has non-positive sizes: {text}")
    return arch


def _mlp(dims: list[int], activation: str) -> nn.Sequential:
    mods: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
        if i:
            mods.append(_ACTIVATIONS[activation]())
        mods.append(nn.Linear(a, b))
    return nn.Sequential(*mods)


def build_encoder(arch: MlpArch) -> nn.Sequential:
    """in_dim -> hidden -> ... -> latent_dim; (b, in_dim) -> (b, latent_dim)."""
    return _mlp([arch.in_dim] + [arch.hidden] * (arch.layers - 1) + [arch.latent_dim], arch.activation)


def build_decoder(arch: MlpArch) -> nn.Sequential:
    """latent_dim -> decoder_hidden -> ... -> in_dim; (b, latent_dim) -> (b, in_dim)."""
    return _mlp(
        [arch.latent_dim] + [arch.decoder_hidden] * (arch.layers - 1) + [arch.in_dim], arch.activation
    )

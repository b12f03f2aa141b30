"""The neural audio codecs of transformers: Encodec, Mimi, DAC, X-Codec.

Each encodes a (b, channels, T) waveform at its own sampling rate to (b, d, frames) and
quantizes that with a residual chain (level 0 reads the encoder's output, level i the residual
left by levels < i). The adapter hands vqdoctor the chain's input, captured from the model's
own ``encode``; vqdoctor's residual stacks (``core/chain.py``) run the levels themselves, as the
model does. Read: ``modeling_encodec.py`` (``EncodecModel._encode_frame``: optional RMS
normalisation, ``quantizer.encode``), ``modeling_mimi.py`` (``MimiModel.encode``: encoder,
transformer, downsample, then ``MimiSplitResidualVectorQuantizer.encode``: a semantic and an
acoustic chain, both reading the same latents through their ``input_proj``),
``modeling_dac.py`` (``DacModel.encode``: ``quantizer(encoder(x))``, per-level ``in_proj`` and
l2-normalised lookup), ``modeling_xcodec.py`` (``XcodecModel.encode``: acoustic and semantic
(HuBERT) features concatenated, ``fc``, then ``quantizer.encode``)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from vqdoctor.adapters.base import Adapter, Model, captured, one_capture
from vqdoctor.adapters.preprocess import mix_channels, resample


class _Codec(Adapter):
    modality = "audio"
    rate_field = "sampling_rate"  # config field holding the model's sampling rate
    quantizer_method = "encode"  # how the model calls its quantizer ("forward" for DAC)

    def channels(self, model: Model) -> int:
        return int(getattr(model.config, "audio_channels", 1))

    def rate(self, model: Model) -> int:
        return int(getattr(model.config, self.rate_field))

    def describe_preprocess(self, model: Model, *, pixel_range: tuple[float, float] | None) -> str:
        ch = self.channels(model)
        return (f"audio resampled to {self.rate(model):,} Hz (scipy resample_poly), "
                + ("mono" if ch == 1 else f"mono copied to {ch} channels"))

    def preprocess(self, model: Model, x: Tensor, *, source_rate: int | None,
                   pixel_range: tuple[float, float] | None) -> Tensor:
        x = x if x.ndim == 3 else x.reshape(x.shape[0], 1, -1)
        if source_rate is not None:
            x = resample(x, source_rate, self.rate(model))
        return mix_channels(x, self.channels(model))

    def _quantizer(self, model: Model) -> nn.Module:
        return model.quantizer

    def _run(self, model: Model, x: Tensor) -> Tensor:
        """The model's own encode; returns its codes as (b, levels, frames)."""
        raise NotImplementedError

    def encode(self, model: Model, x: Tensor) -> Tensor:
        with captured(self._quantizer(model), self.quantizer_method) as seen:
            self._run(model, x)
        return one_capture(seen, self.model_class)

    def model_codes(self, model: Model, x: Tensor) -> Tensor:
        return self._run(model, x)


class EncodecAdapter(_Codec):
    """``EncodecModel`` (``encodec``): every quantizer (the largest target bandwidth) is run;
    chunked models (48 kHz) are encoded chunk by chunk, each chunk's frames kept."""

    name = "encodec"
    model_class = "EncodecModel"
    config_class = "EncodecConfig"
    model_types = ("encodec",)
    anchor = "quantizer.layers.0.codebook.embed"

    def _run(self, model: Model, x: Tensor) -> Tensor:
        bandwidth = max(model.config.target_bandwidths)
        frames = model.encode(x, bandwidth=bandwidth).audio_codes  # (chunks, b, levels, frames)
        return torch.cat(list(frames), dim=-1)


class MimiAdapter(_Codec):
    """``MimiModel`` (``mimi``): every quantizer, semantic then acoustic."""

    name = "mimi"
    model_class = "MimiModel"
    config_class = "MimiConfig"
    model_types = ("mimi",)
    anchor = "quantizer.semantic_residual_vector_quantizer.layers.0.codebook.embed_sum"

    def _run(self, model: Model, x: Tensor) -> Tensor:
        return model.encode(x, num_quantizers=model.config.num_quantizers).audio_codes  # (b, levels, frames)


class DacAdapter(_Codec):
    """``DacModel`` (``dac``): every quantizer; clips zero-padded to a multiple of ``hop_length``
    as ``DacFeatureExtractor`` pads them."""

    name = "dac"
    model_class = "DacModel"
    config_class = "DacConfig"
    model_types = ("dac",)
    anchor = "quantizer.quantizers.0.codebook.weight"
    quantizer_method = "forward"

    def describe_preprocess(self, model: Model, *, pixel_range: tuple[float, float] | None) -> str:
        return super().describe_preprocess(model, pixel_range=pixel_range) + (
            f", zero-padded to a multiple of {int(model.config.hop_length)} samples")

    def preprocess(self, model: Model, x: Tensor, *, source_rate: int | None,
                   pixel_range: tuple[float, float] | None) -> Tensor:
        x = super().preprocess(model, x, source_rate=source_rate, pixel_range=pixel_range)
        hop = int(model.config.hop_length)
        return torch.nn.functional.pad(x, (0, (-x.shape[-1]) % hop))

    def _run(self, model: Model, x: Tensor) -> Tensor:
        return model.encode(x).audio_codes  # (b, levels, frames)


class XcodecAdapter(_Codec):
    """``XcodecModel`` (``xcodec``): mono at ``sample_rate``; every quantizer (the largest target
    bandwidth)."""

    name = "xcodec"
    model_class = "XcodecModel"
    config_class = "XcodecConfig"
    model_types = ("xcodec",)
    anchor = "quantizer.quantizers.0.codebook.embed"
    rate_field = "sample_rate"

    def channels(self, model: Model) -> int:
        return 1

    def _run(self, model: Model, x: Tensor) -> Tensor:
        return model.encode(x, bandwidth=max(model.config.target_bandwidths)).audio_codes  # (b, levels, frames)

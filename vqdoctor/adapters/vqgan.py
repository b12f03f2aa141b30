"""The VQGAN image tokenizers of transformers: Chameleon, Janus, Emu3.

Each encodes (b, 3, H, W) pixels in [-1, 1] with a conv encoder and ``quant_conv``, then looks
the (b, d, h, w) result up in ``quantize.embedding`` by Euclidean distance (read:
``modeling_chameleon.py`` ``ChameleonVQVAE.encode`` / ``ChameleonVQVAEVectorQuantizer``,
``modeling_janus.py`` ``JanusVQVAE.encode``, ``modeling_emu3.py`` ``Emu3VQVAE.encode`` /
``Emu3VQVAEVectorQuantizer``). The quantizer's input is captured with a forward pre-hook on
``quantize``, so every step before it is the model's own code."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from vqdoctor.adapters.base import Adapter, Model, captured, one_capture
from vqdoctor.adapters.preprocess import check_unit_range, crop_to_multiple, resize_center_crop, scale_pixels, to_rgb

VQGAN_RANGE = (-1.0, 1.0)


def _downsampling(model: Model) -> int:
    return 2 ** (len(model.config.channel_multiplier) - 1)


class _VQGAN(Adapter):
    modality = "image"
    sub_config = "vq_config"
    anchor = "quantize.embedding.weight"

    def size(self, model: Model) -> int:
        """The square side the model's processor produces."""
        raise NotImplementedError

    def describe_preprocess(self, model: Model, *, pixel_range: tuple[float, float] | None) -> str:
        lo, hi = pixel_range or VQGAN_RANGE
        s = self.size(model)
        return (f"images as RGB, shortest side resized to {s} (bicubic) and centre-cropped to {s}x{s}, "
                f"pixels scaled to [{lo:g}, {hi:g}]")

    def preprocess(self, model: Model, x: Tensor, *, source_rate: int | None,
                   pixel_range: tuple[float, float] | None) -> Tensor:
        x = resize_center_crop(to_rgb(check_unit_range(x)), self.size(model))
        return scale_pixels(x, pixel_range or VQGAN_RANGE)

    def encode(self, model: Model, x: Tensor) -> Tensor:
        with captured(model.quantize) as seen:
            model.encode(x)
        return one_capture(seen, self.model_class)

    def model_codes(self, model: Model, x: Tensor) -> Tensor:
        tokens = model.encode(x).image_tokens  # (b * h * w,)
        return tokens.reshape(x.shape[0], 1, -1)


class ChameleonAdapter(_VQGAN):
    """``ChameleonVQVAE`` (``chameleon_vqgan``; ``model.vqmodel`` of ``ChameleonForConditionalGeneration``).
    Its processor resizes the shortest edge to ``resolution`` (512) and centre-crops; pixels end
    in [-1, 1] (``rescale_factor`` 0.0078, mean 1, std 1)."""

    name = "chameleon"
    model_class = "ChameleonVQVAE"
    config_class = "ChameleonVQVAEConfig"
    model_types = ("chameleon_vqgan",)
    parent_types = ("chameleon",)

    def size(self, model: Model) -> int:
        return int(model.config.resolution)


class JanusAdapter(_VQGAN):
    """``JanusVQVAE`` (``janus_vqgan``; ``model.vqmodel`` of ``JanusForConditionalGeneration``). The
    generation side works at ``num_patches`` tokens a side, i.e. ``num_patches * 2^(levels-1)``
    pixels (384 for Janus-Pro); pixels in [-1, 1] (mean 0.5, std 0.5)."""

    name = "janus"
    model_class = "JanusVQVAE"
    config_class = "JanusVQVAEConfig"
    model_types = ("janus_vqgan",)
    parent_types = ("janus",)

    def size(self, model: Model) -> int:
        return int(model.config.num_patches) * _downsampling(model)


class Emu3Adapter(_VQGAN):
    """``Emu3VQVAE`` (``emu3_vqgan``; ``model.vqmodel`` of ``Emu3ForConditionalGeneration``). Images
    keep their size (Emu3 tokenizes any resolution), centre-cropped to a multiple of the
    spatial factor; the image is repeated ``temporal_downsample_factor`` times as the model
    does. The quantizer reads (b, t, d, h, w)."""

    name = "emu3"
    model_class = "Emu3VQVAE"
    config_class = "Emu3VQVAEConfig"
    model_types = ("emu3_vqgan",)
    parent_types = ("emu3",)
    channel_axis: ClassVar[int] = 2

    def describe_preprocess(self, model: Model, *, pixel_range: tuple[float, float] | None) -> str:
        lo, hi = pixel_range or VQGAN_RANGE
        return (f"images as RGB at their own size, centre-cropped to multiples of {_downsampling(model)} pixels, "
                f"pixels scaled to [{lo:g}, {hi:g}]")

    def preprocess(self, model: Model, x: Tensor, *, source_rate: int | None,
                   pixel_range: tuple[float, float] | None) -> Tensor:
        x = crop_to_multiple(to_rgb(check_unit_range(x)), _downsampling(model))
        return scale_pixels(x, pixel_range or VQGAN_RANGE)

    def _sizes(self, x: Tensor) -> Tensor:
        return torch.tensor([list(x.shape[-2:])] * x.shape[0])

    def encode(self, model: Model, x: Tensor) -> Tensor:
        with captured(model.quantize) as seen:
            model.encode(x, image_sizes=self._sizes(x))
        return one_capture(seen, self.model_class)

    def model_codes(self, model: Model, x: Tensor) -> Tensor:
        tokens = model.encode(x, image_sizes=self._sizes(x)).image_tokens  # list of (h, w)
        return torch.stack([t.reshape(-1) for t in tokens]).unsqueeze(1)

"""GLM-Image's tokenizer: ``GlmImageVQVAE`` reads the hidden states of ``GlmImageVisionModel``,
not pixels (read: ``modeling_glm_image.py`` ``GlmImageModel.get_image_features`` then
``get_image_tokens``: the vision model's packed patch states, reshaped per image to
(1, C, h, w), each through ``vqmodel.encode``: ``quant_conv``, then the l2-normalised nearest
code). So the adapter needs a full ``GlmImageForConditionalGeneration`` folder (``model_type``
``glm_image``): it builds only the vision model (``model.visual.*``) and the VQ model
(``model.vqmodel.*``) from their sub-configs, loaded ``strict=True``; the text model is never
built. Images go through the model's own ``GlmImageImageProcessor`` (the folder's
``preprocessor_config.json``, else one made from the vision config's patch and merge sizes)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from vqdoctor.adapters.base import Adapter, Model, _load_strict, captured, one_capture, require_transformers
from vqdoctor.adapters.preprocess import check_unit_range, to_rgb
from vqdoctor.errors import EncoderError, UsageError


class _GlmImageTokenizer(nn.Module):
    """The two parts of GLM-Image that turn pixels into codes, and its image processor."""

    def __init__(self, visual: nn.Module, vqmodel: nn.Module, processor: Any, config: Any) -> None:
        super().__init__()
        self.visual, self.vqmodel = visual, vqmodel
        self.processor = processor
        self.config = config  # the full model's GlmImageConfig


class GlmImageAdapter(Adapter):
    name = "glm_image"
    model_class = "GlmImageVQVAE"
    config_class = "GlmImageVQVAEConfig"
    model_types = ()  # a VQ model alone cannot be fed pixels: it reads the vision model's states
    parent_types = ("glm_image",)
    sub_config = "vq_config"
    anchor = "quantize.embedding.weight"
    modality = "image"

    def matches(self, config: Mapping[str, Any]) -> bool:
        return (config.get("model_type") in self.parent_types and isinstance(config.get("vq_config"), Mapping)
                and isinstance(config.get("vision_config"), Mapping))

    def build(self, config: Mapping[str, Any], tensors: Mapping[str, Tensor], folder: Path) -> nn.Module:
        tf = require_transformers()
        if getattr(tf, "GlmImageVQVAE", None) is None:
            raise UsageError(f"{folder} holds a GLM-Image model, but the installed transformers {tf.__version__} "
                             "has no GlmImageVQVAE.", 'Upgrade transformers (pip install -U "vqdoctor[hf]").')
        prefix = self._prefix(tensors, folder)  # e.g. "model.vqmodel."
        parent = prefix[: -len("vqmodel.")] if prefix.endswith("vqmodel.") else None
        if parent is None:
            raise EncoderError(f"{folder}: GLM-Image's VQ weights are under {prefix!r}, not '<prefix>vqmodel.'.",
                               "Re-save the model with save_pretrained, or pass --latents.")
        vqmodel = tf.GlmImageVQVAE(tf.GlmImageVQVAEConfig.from_dict(dict(config["vq_config"])))
        visual = tf.GlmImageVisionModel(tf.GlmImageVisionConfig.from_dict(dict(config["vision_config"])))
        for part, sub in ((vqmodel, "vqmodel."), (visual, "visual.")):
            p = parent + sub
            own = {k[len(p):]: tensors[k] for k in tensors if k.startswith(p)}
            _load_strict(part, own, what=f"{folder} ({type(part).__name__} under {p!r})")
        full = tf.GlmImageConfig.from_dict(dict(config))
        return _GlmImageTokenizer(visual.float().eval(), vqmodel.float().eval(), self._processor(tf, folder, full), full)

    @staticmethod
    def _processor(tf: Any, folder: Path, config: Any) -> Any:
        cls = getattr(tf, "GlmImageImageProcessorPil", None) or tf.GlmImageImageProcessor
        if (folder / "preprocessor_config.json").is_file():
            return cls.from_pretrained(str(folder), local_files_only=True)
        vision = config.vision_config
        return cls(patch_size=vision.patch_size, merge_size=vision.spatial_merge_size, temporal_patch_size=1)

    def describe_preprocess(self, model: Model, *, pixel_range: tuple[float, float] | None) -> str:
        return ("images as RGB through the model's own GlmImageImageProcessor (resized to its pixel budget in "
                "multiples of the patch size, normalised with its mean and std), then its vision model")

    def preprocess(self, model: Model, x: Tensor, *, source_rate: int | None,
                   pixel_range: tuple[float, float] | None) -> Tensor:
        if pixel_range is not None:
            raise UsageError("--pixel-range does not apply to GLM-Image: its image processor normalises the pixels.",
                             "Drop --pixel-range.")
        return to_rgb(check_unit_range(x))

    def _states(self, model: Model, x: Tensor) -> list[Tensor]:
        """Per image, the vision model's states as (1, C, h, w): what ``vqmodel.encode`` reads."""
        images = [img.permute(1, 2, 0).cpu().numpy() for img in x]  # (H, W, 3) in [0, 1]
        batch = model.processor(images=images, do_rescale=False, return_tensors="pt")
        pixels, grid = batch["pixel_values"].to(x.device, torch.float32), batch["image_grid_thw"].to(x.device)
        states = model.visual(pixels, grid_thw=grid).pooler_output
        out = []
        for embed, (t, h, w) in zip(torch.split(states, grid.prod(-1).tolist()), grid.tolist()):
            out.append(embed.view(t, h, w, -1).permute(0, 3, 1, 2).reshape(1, -1, h, w))
        return out

    def encode(self, model: Model, x: Tensor) -> Tensor:
        with captured(model.vqmodel.quantize) as seen:
            for states in self._states(model, x):
                model.vqmodel.encode(states)
        return one_capture(seen, self.model_class, cat_dim=0)

    def model_codes(self, model: Model, x: Tensor) -> Tensor:
        tokens = [model.vqmodel.encode(s).image_tokens.reshape(-1) for s in self._states(model, x)]
        return torch.stack(tokens).unsqueeze(1)

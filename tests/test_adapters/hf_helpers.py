"""Tiny randomly initialised Hugging Face VQ models saved with save_pretrained, and real inputs:
crops of scikit-learn's bundled photos, speech-like audio synthesised here (harmonic tones under
formant envelopes, a pitch glide, syllable-like amplitude), written as 16-bit WAV."""

from __future__ import annotations

import json
import wave
from pathlib import Path

import numpy as np
import torch

IMAGE_SIZE = (64, 48)  # (w, h) of each saved crop: not square, so resize + crop is exercised
AUDIO_RATE = 16_000  # the files' rate; the tiny codecs run at 8 kHz, so the adapter resamples
MODEL_RATE = 8_000


# ------------------------------------------------------------------------------------ inputs


def write_images(folder: Path, *, per_photo: int = 4) -> Path:
    """``per_photo`` crops of each bundled photo (china, flower), in one sub-folder per photo."""
    from PIL import Image
    from sklearn.datasets import load_sample_images

    data = load_sample_images()
    rng = np.random.default_rng(0)
    for photo, name in zip(data.images, ("china", "flower")):
        (folder / name).mkdir(parents=True, exist_ok=True)
        h, w = photo.shape[:2]
        for i in range(per_photo):
            ch, cw = 180, 240
            top, left = int(rng.integers(0, h - ch)), int(rng.integers(0, w - cw))
            crop = Image.fromarray(photo[top : top + ch, left : left + cw]).resize(IMAGE_SIZE, Image.Resampling.BICUBIC)
            crop.save(folder / name / f"{i}.png")
    return folder


def read_images(folder: Path) -> torch.Tensor:
    """The images of ``folder`` as (N, 3, H, W) in [0, 1], in vqdoctor's order (class, then name)."""
    from PIL import Image

    files = sorted(p for d in sorted(folder.iterdir()) for p in sorted(d.iterdir()))
    arrays = [np.asarray(Image.open(f).convert("RGB"), dtype=np.float32) / 255.0 for f in files]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


def speech_like(seconds: float, rate: int, *, f0: float, formants: tuple[float, ...], seed: int) -> np.ndarray:
    """A voiced-speech-like signal: harmonics of a gliding f0, shaped by formant resonances,
    under a syllable-rate amplitude envelope, with a little breath noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    pitch = f0 * (1 + 0.15 * np.sin(2 * np.pi * 1.5 * t))
    phase = 2 * np.pi * np.cumsum(pitch) / rate
    out = np.zeros_like(t)
    for k in range(1, int(rate / 2 / (f0 * 1.2))):
        freq = k * f0
        gain = sum(np.exp(-0.5 * ((freq - f) / 90.0) ** 2) for f in formants) + 0.02
        out += gain / k**0.5 * np.sin(k * phase)
    envelope = 0.5 * (1 - np.cos(2 * np.pi * 4.0 * t)) ** 1.5
    out = out * envelope + 0.01 * rng.standard_normal(t.shape)
    return (0.6 * out / np.max(np.abs(out))).astype(np.float32)


VOWELS = {"a": (730, 1090, 2440), "i": (270, 2290, 3010), "u": (300, 870, 2240)}


def write_wavs(folder: Path, *, seconds: float = 0.5, rate: int = AUDIO_RATE) -> Path:
    """Two clips per vowel (different pitch), one sub-folder per vowel, 16-bit PCM mono."""
    for v, (name, formants) in enumerate(VOWELS.items()):
        (folder / name).mkdir(parents=True, exist_ok=True)
        for i, f0 in enumerate((110.0, 190.0)):
            x = speech_like(seconds, rate, f0=f0, formants=formants, seed=10 * v + i)
            with wave.open(str(folder / name / f"{i}.wav"), "wb") as w:
                w.setnchannels(1)
                w.setsampwidth(2)
                w.setframerate(rate)
                w.writeframes((x * 32767).astype("<i2").tobytes())
    return folder


def read_wavs(folder: Path) -> tuple[torch.Tensor, int]:
    """The clips of ``folder`` as (N, 1, T) float32 and their rate, in vqdoctor's order."""
    files = sorted(p for d in sorted(folder.iterdir()) for p in sorted(d.iterdir()))
    clips, rate = [], 0
    for f in files:
        with wave.open(str(f), "rb") as w:
            rate = w.getframerate()
            clips.append(np.frombuffer(w.readframes(w.getnframes()), "<i2").astype(np.float32) / 32768.0)
    return torch.from_numpy(np.stack(clips))[:, None, :], rate


# ------------------------------------------------------------------------------------ models


def _latent_stats(family: str, model: torch.nn.Module, probe: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std of what the codebooks compare, on ``probe`` (model inputs)."""
    from vqdoctor.adapters import find_adapter

    adapter = find_adapter({"model_type": model.config.model_type})
    channels = getattr(model.config, "audio_channels", probe.shape[1])
    if probe.shape[1] != channels:  # mono probe for a stereo codec
        probe = probe.expand(-1, channels, -1)
    with torch.no_grad():
        z = adapter.encode(model, probe)
        if family == "mimi":
            z = model.quantizer.semantic_residual_vector_quantizer.input_proj(z)
    z = z.movedim(adapter.channel_axis, -1).reshape(-1, z.shape[adapter.channel_axis])
    return z.mean(0), z.std(0)


def _spread(model: torch.nn.Module, suffixes: tuple[str, ...], stats: tuple[torch.Tensor, torch.Tensor], *,
            seed: int) -> None:
    """Codebooks drawn around the latents (HF initialises some to zeros), so that codes differ:
    level 0 at the latents' mean and spread, later levels around zero at half the spread."""
    mean, std = stats
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in list(model.named_parameters()) + list(model.named_buffers()):
            if name.endswith(suffixes):
                first = ".0." in name or "layers" not in name and "quantizers" not in name
                centre = mean if first and t.shape[-1] == mean.shape[0] else 0.0
                spread = std if t.shape[-1] == std.shape[0] else std.mean()
                t.copy_(centre + torch.randn(t.shape, generator=gen) * spread * (1.0 if first else 0.5))
            elif name.endswith(("cluster_size", "cluster_usage")):
                t.copy_(torch.rand(t.shape, generator=gen) + 0.5)
        for name, t in model.named_buffers():  # encodec-style embed_avg consistent with embed
            if name.endswith("embed_avg"):
                t.copy_(dict(model.named_buffers())[name[: -len("_avg")]])
            if name.endswith("embed_sum"):  # mimi: the table is embed_sum / cluster_usage
                usage = dict(model.named_buffers())[name[: -len("embed_sum")] + "cluster_usage"]
                t.mul_(usage[:, None])


def tiny(family: str, folder: Path, probe: torch.Tensor, *, seed: int = 0) -> Path:
    """A tiny ``family`` model, randomly initialised (seeded), its codebooks drawn around its
    latents on ``probe`` (model inputs), saved to ``folder``."""
    import transformers as tf

    torch.manual_seed(seed)
    vq = dict(embed_dim=8, latent_channels=8, base_channels=32, channel_multiplier=[1, 2], num_res_blocks=1)
    if family == "chameleon":
        model = tf.ChameleonVQVAE(tf.ChameleonVQVAEConfig(num_embeddings=64, resolution=32, attn_resolutions=[], **vq))
        codes = ("quantize.embedding.weight",)
    elif family == "janus":
        model = tf.JanusVQVAE(tf.JanusVQVAEConfig(num_embeddings=64, num_patches=16, projection_dim=16,
                                                  image_token_embed_dim=16, **vq))
        codes = ("quantize.embedding.weight",)
    elif family == "emu3":
        model = tf.Emu3VQVAE(tf.Emu3VQVAEConfig(codebook_size=64, embed_dim=4, latent_channels=4, base_channels=32,
                                                channel_multiplier=[1, 2], num_res_blocks=1, attn_resolutions=[],
                                                temporal_downsample_factor=2, hidden_size=64))
        codes = ("quantize.embedding.weight",)
    elif family == "encodec":
        model = tf.EncodecModel(tf.EncodecConfig(sampling_rate=MODEL_RATE, target_bandwidths=[5.0, 15.0], num_filters=8,
                                                 hidden_size=16, upsampling_ratios=[4, 2], codebook_size=32,
                                                 num_lstm_layers=1, codebook_dim=16, normalize=False))
        codes = ("codebook.embed",)
    elif family == "encodec_48khz_like":  # stereo, RMS-normalised, encoded in chunks (as encodec_48khz)
        model = tf.EncodecModel(tf.EncodecConfig(sampling_rate=MODEL_RATE, target_bandwidths=[5.0, 15.0], num_filters=8,
                                                 hidden_size=16, upsampling_ratios=[4, 2], codebook_size=32,
                                                 num_lstm_layers=1, codebook_dim=16, audio_channels=2, normalize=True,
                                                 chunk_length_s=0.1, overlap=0.0))
        codes = ("codebook.embed",)
    elif family == "mimi":
        model = tf.MimiModel(tf.MimiConfig(sampling_rate=MODEL_RATE, frame_rate=500, hidden_size=32, num_filters=8,
                                           upsampling_ratios=[4, 2], num_hidden_layers=1, num_attention_heads=2,
                                           num_key_value_heads=2, head_dim=16, intermediate_size=64, codebook_size=32,
                                           codebook_dim=16, num_quantizers=4, num_semantic_quantizers=1,
                                           vector_quantization_hidden_dimension=16, upsample_groups=32))
        codes = ("codebook.embed_sum",)
    elif family == "dac":
        model = tf.DacModel(tf.DacConfig(sampling_rate=MODEL_RATE, encoder_hidden_size=8, downsampling_ratios=[2, 4],
                                         upsampling_ratios=[4, 2], decoder_hidden_size=16, n_codebooks=3,
                                         codebook_size=32, codebook_dim=4, hidden_size=32))
        codes = ("codebook.weight",)
    elif family == "xcodec":
        model = tf.XcodecModel(tf.XcodecConfig(
            sample_rate=MODEL_RATE, target_bandwidths=[5.0, 15.0], codebook_size=32,
            acoustic_model_config=dict(encoder_hidden_size=8, downsampling_ratios=[2, 4], upsampling_ratios=[4, 2],
                                       decoder_hidden_size=16, hidden_size=32, sampling_rate=MODEL_RATE),
            semantic_model_config=dict(model_type="hubert", hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                       intermediate_size=32, conv_dim=[8, 8], conv_stride=[4, 2], conv_kernel=[4, 2],
                                       num_conv_pos_embeddings=8, num_conv_pos_embedding_groups=2)))
        codes = ("codebook.embed",)
    elif family == "glm_image":
        return _tiny_glm_image(folder, probe, seed=seed)
    else:
        raise ValueError(family)
    model.eval()
    _spread(model, codes, _latent_stats(family, model, probe), seed=seed)
    model.eval().save_pretrained(folder)
    return folder


def _tiny_glm_image(folder: Path, probe: torch.Tensor, *, seed: int) -> Path:
    """A tiny full GlmImageForConditionalGeneration (text model too, as the real folder holds it)
    with its image processor saved beside it; the codebook drawn around the quantizer's inputs on
    ``probe`` (images in [0, 1]), as seen through the model's own vision model and quant_conv."""
    import transformers as tf

    from vqdoctor.adapters.glm_image import GlmImageAdapter, _GlmImageTokenizer

    cfg = tf.GlmImageConfig(
        text_config=dict(vocab_size=64, vision_vocab_size=64, pad_token_id=0, eos_token_id=1, hidden_size=16,
                         intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1),
        vision_config=dict(depth=1, hidden_size=32, num_heads=2, intermediate_size=64, image_size=64, patch_size=8,
                           spatial_merge_size=1),
        vq_config=dict(embed_dim=8, num_embeddings=64, latent_channels=32))
    model = tf.GlmImageForConditionalGeneration(cfg).eval()
    processor = tf.GlmImageImageProcessorPil(patch_size=8, merge_size=1, temporal_patch_size=1,
                                             size={"shortest_edge": 32 * 32, "longest_edge": 64 * 64})
    wrapper = _GlmImageTokenizer(model.model.visual, model.model.vqmodel, processor, cfg)
    with torch.no_grad():
        z = GlmImageAdapter().encode(wrapper, probe)  # (b, d, h, w), before the l2 normalisation
        z = torch.nn.functional.normalize(z.movedim(1, -1).reshape(-1, z.shape[1]), dim=-1)
        gen = torch.Generator().manual_seed(seed)
        table = model.model.vqmodel.quantize.embedding.weight
        table.copy_(z.mean(0) + torch.randn(table.shape, generator=gen) * z.std(0))
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def nest(standalone: Path, folder: Path, *, model_type: str, prefix: str = "model.vqmodel.") -> Path:
    """A full-model folder holding ``standalone``'s VQ model under ``prefix`` (as Chameleon's,
    Janus' and Emu3's ``...ForConditionalGeneration`` do) next to a stand-in language-model tensor."""
    from safetensors.torch import load_file, save_file

    folder.mkdir(parents=True, exist_ok=True)
    vq = json.loads((standalone / "config.json").read_text())
    config = {"model_type": model_type, "architectures": [f"{model_type.capitalize()}ForConditionalGeneration"],
              "vq_config": vq}
    (folder / "config.json").write_text(json.dumps(config))
    state = {prefix + k: v for k, v in load_file(standalone / "model.safetensors").items()}
    state["model.embed_tokens.weight"] = torch.zeros(16, 8)
    save_file(state, folder / "model.safetensors")
    return folder

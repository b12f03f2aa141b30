"""--encoder-from's key matching: nestings and prefixes on either side, refusals naming the keys."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from vqdoctor.errors import UsageError
from vqdoctor.io.checkpoints import load_checkpoint
from vqdoctor.io.transplant import part_keys, plan_transplant


def _enc(prefix: str = "", hidden: int = 6) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(hidden)
    return {f"{prefix}encoder.0.weight": torch.randn(hidden, 4, generator=g), f"{prefix}encoder.0.bias": torch.randn(hidden, generator=g),
            f"{prefix}decoder.0.weight": torch.randn(4, hidden, generator=g)}


def test_lightning_target_takes_a_plain_autoencoders_encoder(tmp_path: Path) -> None:
    target = {**_enc("model.", hidden=6), "model.quantize.embedding.weight": torch.randn(8, 6), "loss.scale": torch.ones(1)}
    torch.save({"state_dict": target, "epoch": 3}, tmp_path / "vq.ckpt")  # "model." is not stripped: loss.* has none
    ae = {f"module.{k}": v for k, v in _enc(hidden=6).items()}  # DDP prefix: stripped by the loader
    ae = {k: v * 0 + 1 for k, v in ae.items()}
    save_file(ae, str(tmp_path / "ae.safetensors"))
    t, s = load_checkpoint(tmp_path / "vq.ckpt"), load_checkpoint(tmp_path / "ae.safetensors")
    plan = plan_transplant(t, s, parts=("encoder",))
    assert {c.key for c in plan.copied} == {"model.encoder.0.weight", "model.encoder.0.bias"}
    assert {c.source_key for c in plan.copied} == {"encoder.0.weight", "encoder.0.bias"}
    assert all(bool((v == 1).all()) for v in plan.tensors.values())
    assert "model.decoder.0.weight" not in plan.tensors  # the decoder only with --with-decoder
    both = plan_transplant(t, s, parts=("encoder", "decoder"))
    assert "model.decoder.0.weight" in both.tensors and "2 tensors" in both.notes()[0]


def test_keys_or_shapes_that_differ_are_refused_by_name(tmp_path: Path) -> None:
    save_file(_enc(hidden=6), str(tmp_path / "vq.safetensors"))
    save_file(_enc(hidden=5), str(tmp_path / "wide.safetensors"))
    extra = {**_enc(hidden=6), "encoder.1.weight": torch.ones(2, 2)}
    save_file(extra, str(tmp_path / "extra.safetensors"))
    t = load_checkpoint(tmp_path / "vq.safetensors")
    with pytest.raises(UsageError, match=r"different shapes: .*encoder.0.weight \(6, 4\) vs \(5, 4\)"):
        plan_transplant(t, load_checkpoint(tmp_path / "wide.safetensors"), parts=("encoder",))
    with pytest.raises(UsageError, match=r"only in .*extra.safetensors: 'encoder.1.weight'"):
        plan_transplant(t, load_checkpoint(tmp_path / "extra.safetensors"), parts=("encoder",))
    with pytest.raises(UsageError, match="No 'enc' tensors"):
        plan_transplant(t, t, parts=("enc",))


def test_part_keys_picks_the_module_not_a_name_inside_another() -> None:
    keys = ["model.encoder.a", "model.encoder.b", "quantize.encoder_proj.weight", "post.encoder.x"]
    pre, found = part_keys(keys, "encoder")
    assert pre == "model." and found == {"a": "model.encoder.a", "b": "model.encoder.b"}

"""The paper's recipe end to end on a real vector-quantize-pytorch VQ-VAE (sklearn digits, trained
here for a few seconds): a collapsed model + its pretrained autoencoder -> `fix kmeans
--encoder-from AE` writes a model that loads strictly into the user's class, carries the AE's
encoder (and decoder with --with-decoder), uses the codebook through its own forward and
reconstructs at the AE's level."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

import vqdoctor.cli.fix_cmd  # noqa: F401  (registers `fix`)
from vqdoctor.cli.app import app

pytest.importorskip("vector_quantize_pytorch")
sklearn_datasets = pytest.importorskip("sklearn.datasets")

runner = CliRunner()
K = 256

MODELS = textwrap.dedent(
    f"""
    from torch import nn
    from vector_quantize_pytorch import VectorQuantize

    D, K = 8, {K}

    def mlp(a, b, c):
        return nn.Sequential(nn.Linear(a, b), nn.ReLU(), nn.Linear(b, c))

    class VQVAE(nn.Module):
        def __init__(self, hidden=64):
            super().__init__()
            self.encoder = mlp(64, hidden, D)
            self.vq = VectorQuantize(dim=D, codebook_size=K, decay=0.8, commitment_weight=0.25)
            self.decoder = mlp(D, hidden, 64)

        def encode(self, x):
            return self.encoder(x)

        def forward(self, x):
            q, idx, loss = self.vq(self.encoder(x))
            return self.decoder(q), idx, loss

    class AE(nn.Module):  # the same architecture without the quantizer
        def __init__(self, hidden=64):
            super().__init__()
            self.encoder = mlp(64, hidden, D)
            self.decoder = mlp(D, hidden, 64)

        def forward(self, x):
            return self.decoder(self.encoder(x))

    def build():
        return VQVAE()
    """
)


def _import(path: Path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("vqdoctor_test_models", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod


def _recon(model: torch.nn.Module, x: torch.Tensor) -> tuple[float, int]:
    model.eval()
    with torch.no_grad():
        out = model(x)
    if isinstance(out, tuple):
        r, idx, _ = out
        return float(((r - x) ** 2).mean()), int(torch.unique(idx).numel())
    return float(((out - x) ** 2).mean()), 0


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: one thread is fastest and kind to a shared machine
    try:
        root = tmp_path_factory.mktemp("e2e")
        (root / "models.py").write_text(MODELS)
        mod = _import(root / "models.py")
        x = torch.tensor(sklearn_datasets.load_digits().data / 16.0, dtype=torch.float32)
        np.save(root / "digits.npy", x.numpy())
        torch.manual_seed(0)
        ae = mod.AE()
        opt = torch.optim.Adam(ae.parameters(), 1e-2)
        for _ in range(300):
            loss = ((ae(x) - x) ** 2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        save_file({k: v.contiguous() for k, v in ae.state_dict().items()}, str(root / "ae.safetensors"))
        vq = mod.VQVAE()
        with torch.no_grad():  # codebook from the untrained encoder: the trained latents leave it behind
            vq.vq._codebook.embed.copy_(vq.encoder(torch.rand(K, 64))[None])
            vq.vq._codebook.initted.fill_(True)
        opt = torch.optim.Adam(vq.parameters(), 1e-2)
        vq.train()
        for _ in range(150):
            r, _, commit = vq(x)
            loss = ((r - x) ** 2).mean() + commit.sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
        save_file({k: v.contiguous() for k, v in vq.state_dict().items()}, str(root / "model.safetensors"))
        ae_mse, _ = _recon(ae, x)
        vq_mse, vq_used = _recon(vq, x)
        small = mod.AE(hidden=32)
        save_file({k: v.contiguous() for k, v in small.state_dict().items()}, str(root / "ae_small.safetensors"))
        return {"root": root, "mod": mod, "x": x, "ae": ae, "ae_mse": ae_mse, "vq_mse": vq_mse, "vq_used": vq_used}
    finally:
        torch.set_num_threads(threads)


def _fix(world: dict, *extra: str, out: str = "fixed.safetensors"):
    root = world["root"]
    return runner.invoke(app, ["fix", "kmeans", str(root / "model.safetensors"), "--inputs", str(root / "digits.npy"),
                               "--model", f"{root / 'models.py'}:build", "--encoder-from", str(root / "ae.safetensors"),
                               "--out", str(root / out), "--device", "cpu", *extra])


def test_collapsed_model_is_collapsed(world: dict) -> None:
    assert world["vq_used"] < 0.6 * K  # the planted collapse the fix has to undo
    assert world["vq_mse"] > world["ae_mse"]


def test_encoder_from_writes_the_papers_model(world: dict) -> None:
    r = _fix(world, "--with-decoder", "--json")
    assert r.exit_code == 0, r.output
    outcome = json.loads(r.stdout)
    assert outcome["schema"] == "vqdoctor.fix/1" and outcome["written"] and not outcome["worse"]
    ae_state = world["ae"].state_dict()
    # every tensor that came from the AE is listed, and nothing else
    assert {c["key"] for c in outcome["copied"]} == set(ae_state)
    assert {c["part"] for c in outcome["copied"]} == {"encoder", "decoder"}
    fixed = load_file(str(world["root"] / "fixed.safetensors"))
    model = world["mod"].VQVAE()
    model.load_state_dict(fixed, strict=True)
    for key, value in ae_state.items():
        assert torch.equal(fixed[key], value), key
    assert bool(model.vq._codebook.initted)
    mse, used = _recon(model, world["x"])
    assert used >= 0.95 * K  # through the library's own forward
    assert mse <= 1.5 * world["ae_mse"] and mse < world["vq_mse"]
    # the after-state vqdoctor reports is the one the model has
    (cb,) = outcome["codebooks"]
    assert cb["used_after"] == used and cb["used_before"] == world["vq_used"]


def test_encoder_from_lists_copied_tensors_on_the_terminal(world: dict) -> None:
    r = _fix(world, out="enc_only.safetensors")
    assert r.exit_code == 0, r.output
    assert "Tensors copied from" in r.stdout and "encoder: encoder.0.weight" in r.stdout
    assert "decoder:" not in r.stdout  # without --with-decoder only the encoder is copied
    fixed = load_file(str(world["root"] / "enc_only.safetensors"))
    old = load_file(str(world["root"] / "model.safetensors"))
    assert torch.equal(fixed["decoder.0.weight"], old["decoder.0.weight"])
    assert torch.equal(fixed["encoder.0.weight"], world["ae"].state_dict()["encoder.0.weight"])


def test_encoder_from_refuses_keys_that_differ(world: dict) -> None:
    root = world["root"]
    r = runner.invoke(app, ["fix", "kmeans", str(root / "model.safetensors"), "--inputs", str(root / "digits.npy"),
                            "--model", f"{root / 'models.py'}:build", "--encoder-from", str(root / "ae_small.safetensors"),
                            "--out", str(root / "bad.safetensors"), "--device", "cpu"])
    assert r.exit_code == 2, r.output
    text = " ".join(r.output.split())  # the paragraph wraps at the terminal's width
    assert "different shapes" in text and "encoder.0.weight" in text and "Traceback" not in text
    assert not (root / "bad.safetensors").exists()

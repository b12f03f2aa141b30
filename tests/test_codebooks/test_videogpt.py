"""The VideoGPT / TATS / ESM3 ``Codebook`` (buffers embeddings, N, z_avg), found, read and measured
end to end; and BEiT-v2's NormEMAVectorQuantizer measured as cosine end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from cb_helpers import discover, gen, randn
from safetensors.torch import save_file
from typer.testing import CliRunner

from vqdoctor.cli.app import app
from vqdoctor.codebooks.detectors.videogpt import videogpt
from vqdoctor.io.store import TensorStore

runner = CliRunner()
K, D = 64, 8


def _train_videogpt_codebook(steps: int = 30, seed: int = 0) -> dict[str, torch.Tensor]:
    """The update of wilson1yan/VideoGPT videogpt/vqvae.py Codebook.forward, run on seeded latents
    from 6 clusters: N = 0.99 N + 0.01 n, z_avg likewise, embeddings = z_avg / smoothed N. The codes
    were initialised on latents of which only a quarter still look like the data (the encoder moved
    on), so the other 48 lose their data; restarts (codes with N < 1 re-drawn from the batch) are left
    out so that dead codes stay dead, as they do once restarts stop (TATS' no_random_restart, ESM3's
    frozen EMACodebook)."""
    g = gen(seed)
    centres = torch.randn(6, D, generator=g) * 3
    stale = centres + 40.0  # where the encoder's outputs were when the codes were initialised
    where = torch.cat([centres[torch.randint(0, 6, (16,), generator=g)], stale[torch.randint(0, 6, (K - 16,), generator=g)]])
    first = where + 0.3 * torch.randn(K, D, generator=g)
    embeddings, n_ema, z_avg = first.clone(), torch.ones(K), first.clone()  # _init_embeddings
    for _ in range(steps):
        z = centres[torch.randint(0, 6, (256,), generator=g)] + 0.3 * torch.randn(256, D, generator=g)
        idx = torch.cdist(z, embeddings).argmin(1)
        onehot = F.one_hot(idx, K).float()
        n_ema = 0.99 * n_ema + 0.01 * onehot.sum(0)
        z_avg = 0.99 * z_avg + 0.01 * (z.t() @ onehot).t()
        n = n_ema.sum()
        embeddings = z_avg / ((n_ema + 1e-7) / (n + K * 1e-7) * n)[:, None]
    return {"codebook.embeddings": embeddings, "codebook.N": n_ema, "codebook.z_avg": z_avg, "centres": centres}


def _videogpt_state(prefix: str = "") -> dict[str, torch.Tensor]:
    cb = _train_videogpt_codebook()
    # VQVAE around it: Encoder(SamePadConv3d convs), pre_vq_conv / post_vq_conv (1x1x1 Conv3d), Decoder
    sd = {"encoder.convs.0.conv.weight": randn(240, 3, 4, 4, 4), "encoder.conv_last.conv.weight": randn(240, 240, 3, 3, 3),
          "pre_vq_conv.conv.weight": randn(D, 240, 1, 1, 1), "pre_vq_conv.conv.bias": randn(D),
          "post_vq_conv.conv.weight": randn(240, D, 1, 1, 1), "decoder.convts.0.convt.weight": randn(240, 3, 4, 4, 4)}
    return {prefix + k: v for k, v in sd.items()} | {prefix + k: v for k, v in cb.items() if k != "centres"}


def test_videogpt_codebook_is_found_with_n_as_ema_usage():
    sd = _videogpt_state()
    (st,) = discover(sd).stacks
    (cb,) = st.codebooks
    assert (st.name, cb.layout, cb.kind, cb.size, cb.dim, cb.metric, cb.metric_source) == (
        "codebook", "videogpt-codebook", "ema", K, D, "euclidean", "layout")
    assert cb.keys == {"codes": "codebook.embeddings", "cluster_size": "codebook.N", "embed_avg": "codebook.z_avg"}
    assert torch.equal(cb.ema.cluster_size, sd["codebook.N"]) and torch.equal(cb.ema.embed_sum, sd["codebook.z_avg"])
    assert torch.equal(cb.codes, sd["codebook.embeddings"]) and cb.note is None


def test_esm3_structure_tokenizer_and_forks_with_codebook_usage():
    # evolutionaryscale/esm esm/layers/codebook.py EMACodebook inside the structure VQ-VAE; Infinity's
    # videovae Codebook adds codebook_usage (K,)
    sd = {f"structure_encoder.{k}": v for k, v in _train_videogpt_codebook().items() if k != "centres"}
    sd["structure_encoder.codebook.codebook_usage"] = torch.zeros(K)
    (cb,) = discover(sd).codebooks
    assert cb.name == "structure_encoder.codebook" and cb.layout == "videogpt-codebook"
    det = videogpt(TensorStore.from_dict(sd), set(), config={})
    assert det.claimed == {f"structure_encoder.codebook.{n}" for n in ("embeddings", "N", "z_avg", "codebook_usage")}


def test_not_fooled_by_embeddings_without_the_buffers():
    assert not discover({"model.embeddings": randn(K, D), "model.N": randn(K)}).stacks  # no z_avg
    assert not discover({"codebook.embeddings": randn(K, D), "codebook.N": randn(K + 1),
                         "codebook.z_avg": randn(K, D)}).stacks  # N of the wrong length


def test_never_trained_codebook_says_so():
    sd = {"codebook.embeddings": randn(K, D), "codebook.N": torch.zeros(K), "codebook.z_avg": randn(K, D)}
    (cb,) = discover(sd).codebooks
    assert "never trained" in cb.note


def test_ls_and_inspect_measure_it_from_n_and_from_latents(tmp_path):
    trained = _train_videogpt_codebook()
    sd = _videogpt_state()
    save_file(sd, str(tmp_path / "videogpt.safetensors"))
    g = gen(7)
    z = trained["centres"][torch.randint(0, 6, (3000,), generator=g)] + 0.3 * torch.randn(3000, D, generator=g)
    np.save(tmp_path / "z.npy", z.numpy())

    res = runner.invoke(app, ["ls", str(tmp_path / "videogpt.safetensors")], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    assert "videogpt-codebook" in res.output and "No codebook found" not in res.output

    res = runner.invoke(app, ["inspect", str(tmp_path / "videogpt.safetensors"), "--latents", str(tmp_path / "z.npy"),
                              "--json", "-", "--projection", "none"])
    assert res.exit_code == 0, res.output
    (cb,) = json.loads(res.stdout)["codebooks"]
    assert (cb["layout"], cb["metric"]) == ("videogpt-codebook", "euclidean")
    ema = cb["ema"]
    assert ema["source"] == "codebook.N" and ema["is_count"] is True
    assert ema["total"] == pytest.approx(float(sd["codebook.N"].double().sum()), rel=1e-6)
    # the Codebook's own lookup: argmin of |z|^2 - 2 z.E^T + |E|^2 over embeddings
    e = sd["codebook.embeddings"]
    own = ((z**2).sum(1, keepdim=True) - 2 * z @ e.t() + (e.t() ** 2).sum(0, keepdim=True)).argmin(1)
    assert cb["usage"]["used_codes"] == int(own.unique().numel())
    assert cb["usage"]["used_codes"] < K // 2  # six clusters leave most codes dead
    used_by_ema = int((sd["codebook.N"] >= 1).sum())  # VideoGPT's own notion of a live code (N >= 1)
    assert K - ema["dead_codes_absolute"] == used_by_ema


def test_kmeans_fix_keeps_videogpts_ema_rule(tmp_path):
    """After the fix, embeddings == z_avg / N (the next EMA step must not pull the old codes back)."""
    from safetensors.torch import load_file

    trained = _train_videogpt_codebook()
    save_file(_videogpt_state(), str(tmp_path / "v.safetensors"))
    g = gen(3)
    z = trained["centres"][torch.randint(0, 6, (4000,), generator=g)] + 0.3 * torch.randn(4000, D, generator=g)
    np.save(tmp_path / "z.npy", z.numpy())
    res = runner.invoke(app, ["fix", "kmeans", str(tmp_path / "v.safetensors"), "--latents", str(tmp_path / "z.npy"),
                              "--out", str(tmp_path / "fixed.safetensors"), "--force"])
    assert res.exit_code == 0, res.output
    out = load_file(str(tmp_path / "fixed.safetensors"))
    assert not torch.equal(out["codebook.embeddings"], _videogpt_state()["codebook.embeddings"])
    torch.testing.assert_close(out["codebook.z_avg"], out["codebook.embeddings"] * out["codebook.N"][:, None],
                               rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------------- BEiT-v2


def test_beitv2_norm_ema_is_measured_as_cosine_end_to_end(tmp_path):
    """microsoft/unilm beit2/norm_ema_quantizer.py: l2norm(z), then the nearest unit-norm row. Latents
    far from unit norm: a Euclidean measurement would report an error of order |z|^2."""
    codes = F.normalize(randn(128, 16), dim=1)
    sd = {"quantize.embedding.weight": codes, "quantize.embedding.cluster_size": torch.zeros(128),
          "quantize.embedding.embed_avg": codes.clone(), "quantize.embedding.initted": torch.Tensor([True]),
          "quantize.cluster_size": torch.rand(128, generator=gen(1)) * 10}
    save_file(sd, str(tmp_path / "vqkd.safetensors"))
    z = randn(2000, 16, seed=5) * 10
    np.save(tmp_path / "z.npy", z.numpy())
    res = runner.invoke(app, ["inspect", str(tmp_path / "vqkd.safetensors"), "--latents", str(tmp_path / "z.npy"),
                              "--json", "-", "--projection", "none"])
    assert res.exit_code == 0, res.output
    (cb,) = json.loads(res.stdout)["codebooks"]
    assert (cb["layout"], cb["metric"], cb["metric_source"]) == ("beitv2-normema", "cosine", "layout")
    zn = F.normalize(z, dim=1)
    idx = (zn @ codes.t()).argmax(1)
    assert cb["usage"]["used_codes"] == int(idx.unique().numel())
    mse = float(((zn - codes[idx]) ** 2).mean())  # per coordinate, in the normalised space
    assert cb["usage"]["quantization_mse"] == pytest.approx(mse, rel=1e-3)

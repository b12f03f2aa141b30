"""The shipped samples show what scripts/make_samples.py says they show.

Everything is recomputed here with small numpy code from the files alone (no vqdoctor analysis
code), so these tests pin the samples' truths independently of the product."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors import safe_open

from vqdoctor.errors import UsageError
from vqdoctor.samples import DEFAULT_SAMPLE, SAMPLES_DIR, list_samples, measured, sample_path

ROOT = Path(__file__).resolve().parents[2]
NAMES = [
    "vanilla_tokens_collapse",
    "pretrained_healthy",
    "small_encoder_embeddings_collapse",
    "large_codebook_vanilla",
    "large_codebook_simvq",
    "residual_vq",
]


def load(name: str) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    with safe_open(str(sample_path(name)), framework="np") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata())


def data(name: str) -> tuple[np.ndarray, np.ndarray]:
    _, meta = load(name)
    with np.load(SAMPLES_DIR / meta["vqdoctor.data"]) as z:
        return z["x"], z["y"]


def encode(t: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    h = x.astype(np.float64)
    for i, layer in enumerate((0, 2, 4)):
        h = h @ t[f"encoder.{layer}.weight"].T + t[f"encoder.{layer}.bias"]
        if i < 2:
            h = np.maximum(h, 0)
    return h


def nearest(z: np.ndarray, c: np.ndarray) -> np.ndarray:
    out = []
    for i in range(0, len(z), 1000):
        d = (z[i : i + 1000, None, :] - c[None]) ** 2
        out.append(d.sum(-1).argmin(1))
    return np.concatenate(out)


def usage(idx: np.ndarray, k: int) -> tuple[float, float]:
    p = np.bincount(idx, minlength=k) / len(idx)
    nz = p[p > 0]
    return float((p > 0).mean()), float(np.exp(-(nz * np.log(nz)).sum()))


def allocation(z, c, idx, y) -> tuple[np.ndarray, float]:
    """Per-mode ratio of code share to data share, and the allocation TV (DESIGN.md)."""
    k, m = len(c), y.max() + 1
    table = np.zeros((k, m))
    np.add.at(table, (idx, y), 1)
    owner = table.argmax(1)
    dead = table.sum(1) == 0
    if dead.any():
        owner[dead] = y[nearest(c[dead], z)]
    code_share = np.bincount(owner, minlength=m) / k
    data_share = np.bincount(y, minlength=m) / len(y)
    return code_share / data_share, float(0.5 * np.abs(code_share - data_share).sum())


def knn_purity(v: np.ndarray, y: np.ndarray, k: int = 10, n: int = 2000) -> float:
    rng = np.random.default_rng(0)
    sel = rng.choice(len(v), n, replace=False)
    d = ((v[sel, None, :] - v[None]) ** 2).sum(-1)
    d[np.arange(n), sel] = np.inf
    nb = np.argpartition(d, k, axis=1)[:, :k]
    return float((y[nb] == y[sel, None]).mean())


def codebook(name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    t, _ = load(name)
    x, y = data(name)
    z = encode(t, x)
    if "quantizer.frozen_codebook" in t:
        c = t["quantizer.frozen_codebook"] @ t["quantizer.code_transform.weight"].T
    else:
        c = t["quantizer._codebook.embed"][0]
    return z, c.astype(np.float64), y, nearest(z, c)


# ------------------------------------------------------------------------------------ the files


def test_all_samples_present_with_parseable_metadata():
    assert [s.name for s in list_samples()] == NAMES
    for s in list_samples():
        _, meta = load(s.name)
        arch = json.loads(meta["vqdoctor.arch"])
        assert arch["family"] == "mlp-vqvae" and arch["encoder_prefix"] == "encoder."
        assert s.data.is_file() and s.data.parent == SAMPLES_DIR
        assert meta["vqdoctor.sample"] == s.description and s.description
        assert meta["vqdoctor.seed"] == "0"
        assert json.loads(meta["vqdoctor.measured"])["codebooks"]
        with np.load(s.data) as z:
            assert z["x"].dtype == np.float32 and z["x"].shape == (10_000, arch["in_dim"])
            assert np.bincount(z["y"]).tolist() == [1000] * 10


def test_copies_in_sample_checkpoints_match_package_data():
    for p in SAMPLES_DIR.glob("*.safetensors"):
        assert (ROOT / "sample_checkpoints" / p.name).read_bytes() == p.read_bytes()
    for p in SAMPLES_DIR.glob("*.npz"):
        assert (ROOT / "sample_checkpoints" / p.name).read_bytes() == p.read_bytes()


def test_vector_quantize_pytorch_layout():
    t, _ = load("vanilla_tokens_collapse")
    assert t["quantizer._codebook.embed"].shape == (1, 128, 4)
    assert t["quantizer._codebook.embed_avg"].shape == (1, 128, 4)
    assert t["quantizer._codebook.cluster_size"].shape == (1, 128)
    assert t["quantizer._codebook.initted"].tolist() == [1.0]
    # EMA buffers are consistent: embed = embed_avg / laplace-smoothed cluster_size
    cs = t["quantizer._codebook.cluster_size"].astype(np.float64)
    smoothed = (cs + 1e-5) / (cs.sum() + 128e-5) * cs.sum()
    np.testing.assert_allclose(t["quantizer._codebook.embed_avg"] / smoothed[..., None],
                               t["quantizer._codebook.embed"], rtol=1e-4, atol=1e-6)
    s, _ = load("large_codebook_simvq")
    assert s["quantizer.frozen_codebook"].shape == (4096, 2)
    assert s["quantizer.code_transform.weight"].shape == (2, 2)
    r, _ = load("residual_vq")
    assert sorted({k.split(".")[2] for k in r if k.startswith("quantizer.layers.")}) == ["0", "1", "2", "3"]


def test_sample_path_and_default():
    assert DEFAULT_SAMPLE in NAMES
    assert sample_path(DEFAULT_SAMPLE) == SAMPLES_DIR / f"{DEFAULT_SAMPLE}.safetensors"
    with pytest.raises(UsageError, match="pretrained_healthy"):
        sample_path("nope")


# ---------------------------------------------------------------------------------- the claims


def test_tokens_collapse_vs_pretrained():
    z, c, y, idx = codebook("vanilla_tokens_collapse")
    ratio_v, tv_v = allocation(z, c, idx, y)
    util_v, ppl_v = usage(idx, len(c))
    z, c, y, idx = codebook("pretrained_healthy")
    ratio_p, tv_p = allocation(z, c, idx, y)
    util_p, ppl_p = usage(idx, len(c))
    assert (ratio_v < 0.5).sum() >= 5  # most modes starved of codes
    assert (ratio_p < 0.5).sum() == 0
    assert tv_v > 0.6 > 0.2 > tv_p
    assert util_v < 0.4 and util_p == 1.0 and ppl_p > 4 * ppl_v
    m = measured("vanilla_tokens_collapse")["codebooks"][0]
    assert m["utilization"] == pytest.approx(util_v, abs=0.01)
    assert m["perplexity"] == pytest.approx(ppl_v, rel=0.02)


def test_small_encoder_merges_modes():
    t, _ = load("small_encoder_embeddings_collapse")
    x, y = data("small_encoder_embeddings_collapse")
    assert t["encoder.0.weight"].shape == (4, 8)
    small = knn_purity(encode(t, x), y)
    t32, _ = load("vanilla_tokens_collapse")  # same data, same recipe, hidden 32
    assert data("vanilla_tokens_collapse")[0].shape == x.shape
    large = knn_purity(encode(t32, x), y)
    assert knn_purity(x, y) > 0.99 and large > 0.99
    assert small < 0.95
    assert measured("small_encoder_embeddings_collapse")["merged_pairs"]


def test_simvq_uses_many_more_codes_than_vanilla():
    _, c, _, idx = codebook("large_codebook_vanilla")
    util_v, _ = usage(idx, len(c))
    _, c, _, idx = codebook("large_codebook_simvq")
    util_s, ppl_s = usage(idx, len(c))
    assert len(c) == 4096
    assert util_v < 0.1 and util_s > 0.4 and util_s > 5 * util_v
    m = measured("large_codebook_simvq")
    assert m["w_rank"] == 2


def test_residual_levels_shrink_the_error():
    t, _ = load("residual_vq")
    x, _ = data("residual_vq")
    r = encode(t, x)
    errs = []
    for i in range(4):
        c = t[f"quantizer.layers.{i}._codebook.embed"][0].astype(np.float64)
        r = r - c[nearest(r, c)]
        errs.append(float((r**2).mean()))
    assert all(a > b for a, b in zip(errs, errs[1:]))


# ------------------------------------------------------------------------------- regeneration


def test_regeneration_is_deterministic(tmp_path):
    name = "vanilla_tokens_collapse"
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "make_samples.py"), "--only", name, "--out", str(tmp_path)],
        check=True, capture_output=True, timeout=120,
    )
    with safe_open(str(tmp_path / f"{name}.safetensors"), framework="np") as f:
        new = {k: f.get_tensor(k) for k in f.keys()}
        new_meta = dict(f.metadata())
    old, old_meta = load(name)
    assert new_meta == old_meta
    assert new.keys() == old.keys()
    for k in old:
        np.testing.assert_array_equal(new[k], old[k], err_msg=k)
    with np.load(tmp_path / "blobs8d.npz") as a, np.load(SAMPLES_DIR / "blobs8d.npz") as b:
        np.testing.assert_array_equal(a["x"], b["x"])
        np.testing.assert_array_equal(a["y"], b["y"])

"""`vqdoctor fix ...` through the CLI runner: writes, before/after, files are sacred, bad inputs."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

import vqdoctor.cli.fix_cmd  # noqa: F401  (registers `fix` until app._register imports it)
from tests.test_fixes.conftest import planted
from vqdoctor.cli.app import app

runner = CliRunner()


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def collapsed(tmp_path: Path) -> tuple[Path, Path]:
    pl = planted()
    ckpt = tmp_path / "model.safetensors"
    save_file({"quantize.embedding.weight": pl.collapsed.contiguous(), "decoder.weight": torch.randn(4, 4)},
              str(ckpt), metadata={"note": "keep me"})
    lat = tmp_path / "z.npy"
    np.save(lat, pl.x.numpy())
    return ckpt, lat


def test_fix_kmeans_writes_new_file(collapsed: tuple[Path, Path], tmp_path: Path) -> None:
    ckpt, lat = collapsed
    before = _sha(ckpt)
    out = tmp_path / "fixed.safetensors"
    r = runner.invoke(app, ["fix", "kmeans", str(ckpt), "--latents", str(lat), "--out", str(out), "--device", "cpu"])
    assert r.exit_code == 0, r.output
    assert _sha(ckpt) == before
    assert "Before → after" in r.stdout and "Wrote" in r.stdout
    new, old = load_file(str(out)), load_file(str(ckpt))
    assert torch.equal(new["decoder.weight"], old["decoder.weight"])
    assert not torch.equal(new["quantize.embedding.weight"], old["quantize.embedding.weight"])
    from safetensors import safe_open

    with safe_open(str(out), "pt") as fh:
        assert fh.metadata()["note"] == "keep me"


def test_fix_revive_and_simvq(collapsed: tuple[Path, Path], tmp_path: Path) -> None:
    ckpt, lat = collapsed
    out = tmp_path / "revived.safetensors"
    r = runner.invoke(app, ["fix", "revive", str(ckpt), "--latents", str(lat), "--out", str(out), "--device", "cpu"])
    assert r.exit_code == 0, r.output
    out2 = tmp_path / "simvq.safetensors"
    r = runner.invoke(app, ["fix", "simvq", str(ckpt), "--mode", "exact", "--layout", "official",
                            "--latents", str(lat), "--out", str(out2), "--device", "cpu"])
    assert r.exit_code == 0, r.output
    new = load_file(str(out2))
    assert {"quantize.embedding.weight", "quantize.embedding_proj.weight", "quantize.embedding_proj.bias"} <= set(new)


def test_interrupted_write_leaves_input_intact(collapsed: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ckpt, lat = collapsed
    before = _sha(ckpt)
    out = tmp_path / "fixed.safetensors"

    def boom(*args: object, **kwargs: object) -> None:
        raise OSError("disk full (simulated)")

    import vqdoctor.io.writers as writers

    monkeypatch.setattr(writers.os, "replace", boom)
    r = runner.invoke(app, ["fix", "kmeans", str(ckpt), "--latents", str(lat), "--out", str(out), "--device", "cpu"])
    assert r.exit_code != 0
    monkeypatch.undo()
    assert _sha(ckpt) == before
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.safetensors", "z.npy"]


def test_in_place_keeps_backup(collapsed: tuple[Path, Path]) -> None:
    ckpt, lat = collapsed
    before = _sha(ckpt)
    r = runner.invoke(app, ["fix", "kmeans", str(ckpt), "--latents", str(lat), "--in-place", "--device", "cpu"])
    assert r.exit_code == 0, r.output
    backups = list(ckpt.parent.glob("model.safetensors.bak*"))
    assert backups and _sha(backups[0]) == before and _sha(ckpt) != before


@pytest.mark.parametrize(
    "args, message",
    [
        (["fix", "kmeans", "{ckpt}", "--latents", "{lat}"], "--out"),
        (["fix", "kmeans", "{ckpt}", "--out", "{out}"], "needs data"),
        (["fix", "kmeans", "{ckpt}", "--latents", "{few}", "--out", "{out}"], "k=40"),
        (["fix", "kmeans", "{ckpt}", "--latents", "{wide}", "--out", "{out}"], "dim"),
        (["fix", "kmeans", "{missing}", "--latents", "{lat}", "--out", "{out}"], "does not exist"),
        (["fix", "kmeans", "{ckpt}", "--latents", "{lat}", "--out", "{out}", "--codebook", "nope*"], "nope"),
        (["fix", "simvq", "{ckpt}", "--out", "{out}", "--mode", "magic"], "--mode"),
        (["fix", "kmeans", "{ckpt}", "--latents", "{lat}", "--out", "{ckpt}"], "overwrite"),
        (["fix", "kmeans", "{ckpt}", "--latents", "{lat}", "--out", "{out}", "--with-decoder"], "--with-decoder"),
        (["fix", "kmeans", "{ckpt}", "--latents", "{lat}", "--out", "{out}", "--encoder-from", "{ckpt}"], "--inputs"),
    ],
)
def test_bad_inputs_get_clear_errors(collapsed: tuple[Path, Path], tmp_path: Path, args: list[str], message: str) -> None:
    ckpt, lat = collapsed
    few, wide = tmp_path / "few.npy", tmp_path / "wide.npy"
    np.save(few, np.random.randn(10, 8).astype(np.float32))
    np.save(wide, np.random.randn(100, 5).astype(np.float32))
    paths = {"ckpt": ckpt, "lat": lat, "few": few, "wide": wide, "out": tmp_path / "o.safetensors",
             "missing": tmp_path / "missing.safetensors"}
    r = runner.invoke(app, [a.format(**paths) for a in args] + ["--device", "cpu"])
    assert r.exit_code != 0
    text = r.output
    assert message in text, text
    assert "Traceback" not in text
    assert not (tmp_path / "o.safetensors").exists()


def test_a_fix_that_makes_things_worse_is_caught(collapsed: tuple[Path, Path], tmp_path: Path) -> None:
    ckpt, lat = collapsed
    good = tmp_path / "good.safetensors"
    r = runner.invoke(app, ["fix", "kmeans", str(ckpt), "--latents", str(lat), "--out", str(good), "--device", "cpu"])
    assert r.exit_code == 0, r.output
    # k-means++ seeding without any Lloyd iteration: a worse codebook than the converged one
    worse = tmp_path / "worse.safetensors"
    args = ["fix", "kmeans", str(good), "--latents", str(lat), "--out", str(worse), "--iters", "0", "--seed", "3",
            "--device", "cpu"]
    r = runner.invoke(app, args)
    assert r.exit_code == 1, r.output
    assert "WORSE" in r.stdout and "Not written" in r.stdout
    assert not worse.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["good.safetensors", "model.safetensors", "z.npy"]
    r = runner.invoke(app, [*args, "--force", "--json"])
    assert r.exit_code == 0, r.output
    import json

    outcome = json.loads(r.stdout)
    assert outcome["worse"] and outcome["written"] and worse.exists()
    (cb,) = outcome["codebooks"]
    assert cb["relative_mse_after"] > cb["relative_mse_before"] * 1.01


def test_verified_after_state_is_the_written_file(collapsed: tuple[Path, Path], tmp_path: Path) -> None:
    """bf16 tables round the new codes: the reported after-state is measured on what was written."""
    ckpt, lat = collapsed
    bf = tmp_path / "bf16.safetensors"
    save_file({k: v.to(torch.bfloat16) if k.startswith("quantize") else v for k, v in load_file(str(ckpt)).items()}, str(bf))
    out = tmp_path / "fixed_bf16.safetensors"
    r = runner.invoke(app, ["fix", "kmeans", str(bf), "--latents", str(lat), "--out", str(out), "--device", "cpu", "--json"])
    assert r.exit_code == 0, r.output
    import json

    from vqdoctor.core.assign import nearest_codes

    (cb,) = json.loads(r.stdout)["codebooks"]
    codes = load_file(str(out))["quantize.embedding.weight"].float()
    idx, _ = nearest_codes(torch.as_tensor(np.load(lat)), codes)
    assert cb["used_after"] == int(torch.unique(idx).numel())


def test_modes_are_inferred_once_per_fix(collapsed: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import vqdoctor.diagnose
    import vqdoctor.repair

    calls: list[int] = []
    real = vqdoctor.repair.fit_modes

    def counting(*args: object, **kwargs: object):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(vqdoctor.repair, "fit_modes", counting)
    monkeypatch.setattr(vqdoctor.diagnose, "fit_modes", counting)
    ckpt, lat = collapsed
    r = runner.invoke(app, ["fix", "kmeans", str(ckpt), "--latents", str(lat), "--out", str(tmp_path / "o.safetensors"),
                            "--device", "cpu"])
    assert r.exit_code == 0, r.output
    assert len(calls) == 1
    assert "inferred once per fix" in r.output


def test_sample_fix_with_its_own_data_and_a_pretrained_encoder(tmp_path: Path) -> None:
    """The sample names its data relative to itself; the output written elsewhere is verified on
    the same data, with the pretrained sample's encoder and decoder copied in."""
    from vqdoctor.samples import __file__ as samples_init

    samples = Path(samples_init).parent
    out = tmp_path / "fixed.safetensors"
    r = runner.invoke(app, ["fix", "kmeans", str(samples / "vanilla_tokens_collapse.safetensors"), "--encoder-from",
                            str(samples / "pretrained_healthy.safetensors"), "--with-decoder", "--out", str(out),
                            "--device", "cpu", "--json"])
    assert r.exit_code == 0, r.output
    import json

    outcome = json.loads(r.stdout)
    pretrained = load_file(str(samples / "pretrained_healthy.safetensors"))
    fixed = load_file(str(out))
    assert {c["part"] for c in outcome["copied"]} == {"encoder", "decoder"}
    assert all(torch.equal(fixed[c["key"]], pretrained[c["source_key"]]) for c in outcome["copied"])
    (cb,) = outcome["codebooks"]
    assert cb["used_after"] > cb["used_before"] and cb["used_after"] >= 0.95 * cb["size"]

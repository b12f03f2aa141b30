"""Fixes as values through the Python API: ``api.fix_checkpoint(ckpt, fix=KMeansFix(...), ...)``
from a notebook, the outcome returned (not printed), the same file the CLI writes."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

import vqdoctor.cli.fix_cmd  # noqa: F401  (registers `fix`)
from tests.test_fixes.conftest import planted
from vqdoctor import api
from vqdoctor.cli.app import app
from vqdoctor.errors import DataError, UsageError
from vqdoctor.fixes import KMeansFix, ReviveFix, SimVQFix
from vqdoctor.options import DataOptions
from vqdoctor.report.fix_result import FixOutcome


@pytest.fixture
def collapsed(tmp_path: Path) -> tuple[Path, Path]:
    pl = planted(n=1500)
    ckpt = tmp_path / "model.safetensors"
    save_file({"quantize.embedding.weight": pl.collapsed.contiguous()}, str(ckpt))
    lat = tmp_path / "z.npy"
    np.save(lat, pl.x.numpy())
    return ckpt, lat


def test_fix_values_are_frozen_and_checked() -> None:
    fix = KMeansFix(iters=5)
    with pytest.raises(dataclasses.FrozenInstanceError):
        fix.iters = 6  # type: ignore[misc]
    with pytest.raises(UsageError, match="--mode 'nope'"):
        SimVQFix(mode="nope")  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="--encoder-from"):
        KMeansFix(with_decoder=True)
    assert KMeansFix(encoder_from=Path("ae.pt"), with_decoder=True).transplant_parts() == ("encoder", "decoder")
    assert (KMeansFix.needs_data, ReviveFix.needs_data, SimVQFix.needs_data) == (True, True, False)


def test_kmeans_fix_from_python_equals_cli(collapsed: tuple[Path, Path], tmp_path: Path) -> None:
    ckpt, lat = collapsed
    sha = hashlib.sha256(ckpt.read_bytes()).hexdigest()
    out = tmp_path / "py.safetensors"
    outcome = api.fix_checkpoint(ckpt, fix=KMeansFix(iters=5, seed=1), out=out,
                                 data=DataOptions(latents=lat, device="cpu"))
    assert isinstance(outcome, FixOutcome) and outcome.path == out and not outcome.worse
    assert hashlib.sha256(ckpt.read_bytes()).hexdigest() == sha  # the input is untouched
    (change,) = outcome.changes
    assert change.used_after > change.used_before
    assert outcome.after is not None and outcome.after.codebooks[0].usage.used_codes == change.used_after
    doc = outcome.to_dict()
    assert doc["schema"] == "vqdoctor.fix/1" and doc["written"] and doc["output"] == str(out)

    cli_out = tmp_path / "cli.safetensors"
    r = CliRunner().invoke(app, ["fix", "kmeans", str(ckpt), "--latents", str(lat), "--iters", "5", "--seed", "1",
                                 "--out", str(cli_out), "--device", "cpu"])
    assert r.exit_code == 0, r.output
    a, b = load_file(str(out)), load_file(str(cli_out))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_revive_needs_data_and_simvq_does_not(collapsed: tuple[Path, Path], tmp_path: Path) -> None:
    ckpt, _ = collapsed
    with pytest.raises(DataError, match="needs data"):
        api.fix_checkpoint(ckpt, fix=ReviveFix(), out=tmp_path / "r.safetensors", data=DataOptions(device="cpu"))
    out = tmp_path / "s.safetensors"
    outcome = api.fix_checkpoint(ckpt, fix=SimVQFix(mode="exact"), out=out, data=DataOptions(device="cpu"))
    assert outcome.path == out and outcome.before is None and outcome.changes == ()
    written = load_file(str(out))  # exact mode: C = the old codebook, W = I
    assert set(written) == {"quantize.frozen_codebook", "quantize.code_transform.weight"}
    assert torch.equal(written["quantize.code_transform.weight"], torch.eye(8))
    with pytest.raises(UsageError, match="--out"):
        api.fix_checkpoint(ckpt, fix=SimVQFix(), data=DataOptions(device="cpu"))

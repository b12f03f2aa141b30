"""``vqdoctor.fix``: a state dict (or a module, or a path) and data in, the repaired state dict
out, with the tensors ``vqdoctor fix`` writes for the same data; the input left as it was."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

import vqdoctor
import vqdoctor.cli.fix_cmd  # noqa: F401  (registers `fix`)
from vqdoctor.cli.app import app
from vqdoctor.errors import VqdoctorError

vqp = pytest.importorskip("vector_quantize_pytorch")
warnings.filterwarnings("ignore", module="vector_quantize_pytorch")

K, D = 16, 4
FAST = vqdoctor.AnalysisOptions(projection="none")


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    model = torch.nn.ModuleDict({"encoder": torch.nn.Linear(8, D), "quantizer": vqp.VectorQuantize(dim=D, codebook_size=K)})
    with torch.no_grad():
        model["quantizer"]._codebook.embed[0, 12:] += 50.0  # four codes far from the data: dead
    return model.eval()


@pytest.fixture
def setup(tmp_path):
    model = _model()
    x = torch.randn(600, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        z = model["encoder"](x)
    ckpt = tmp_path / "m.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(ckpt))
    np.save(tmp_path / "z.npy", z.numpy())
    return model, x, z, ckpt, tmp_path


def test_revive_returns_the_state_dict_the_cli_writes(setup):
    model, _, z, ckpt, tmp = setup
    before = {k: v.clone() for k, v in model.state_dict().items()}
    res = CliRunner().invoke(app, ["fix", "revive", str(ckpt), "--latents", str(tmp / "z.npy"), "--out", str(tmp / "f.safetensors")])
    assert res.exit_code == 0, res.output
    written = load_file(str(tmp / "f.safetensors"))
    for source in (model, model.state_dict(), ckpt):
        new = vqdoctor.fix(source, vqdoctor.ReviveFix(), latents=z)
        assert set(new) == set(written)
        for key, value in written.items():
            assert torch.equal(new[key], value), key
    assert "quantizer._codebook.embed" in new.changed and new.removed == ()
    assert any("dead" in n or "revive" in n.lower() for n in new.notes), new.notes
    for key, value in model.state_dict().items():  # the input is not modified
        assert torch.equal(value, before[key]), key
    # the dead codes are live after loading it
    assert vqdoctor.inspect(model, latents=z, analysis=FAST).codebooks[0].usage.dead_codes == 4
    model.load_state_dict(new)
    assert vqdoctor.inspect(model, latents=z, analysis=FAST).codebooks[0].usage.dead_codes == 0
    embed = model.state_dict()["quantizer._codebook.embed"]
    assert torch.equal(embed[0, :12], before["quantizer._codebook.embed"][0, :12])  # live codes bit-exact


def test_keys_come_back_as_given_for_prefixed_and_nested_state_dicts(setup):
    model, _, z, _, _ = setup
    flat = vqdoctor.fix(model.state_dict(), vqdoctor.ReviveFix(), latents=z.numpy())
    ddp_style = {"module." + k: v for k, v in model.state_dict().items()}
    prefixed = vqdoctor.fix(ddp_style, vqdoctor.ReviveFix(), latents=z)
    assert set(prefixed) == set(ddp_style)
    nested = vqdoctor.fix({"state_dict": ddp_style, "global_step": 3}, vqdoctor.ReviveFix(), latents=z)
    assert set(nested) == set(ddp_style)  # the inner state dict, its own keys
    for key, value in flat.items():
        assert torch.equal(prefixed["module." + key], value) and torch.equal(nested["module." + key], value)
    assert "module.quantizer._codebook.embed" in prefixed.changed


def test_simvq_adds_and_removes_keys_and_the_module_loads_them(setup):
    model, _, z, _, _ = setup
    new = vqdoctor.fix(model, vqdoctor.SimVQFix())  # exact mode needs no data
    assert new.removed and set(new.removed) <= set(model.state_dict())
    assert not set(new.removed) & set(new)
    sim = torch.nn.ModuleDict({"encoder": torch.nn.Linear(8, D),
                               "quantizer": vqp.SimVQ(dim=D, codebook_size=K)}).eval()
    missing, unexpected = sim.load_state_dict(new, strict=False)
    assert not [k for k in missing if k.startswith("quantizer.")] and not unexpected
    with torch.no_grad():
        want = model["quantizer"](z[None])[1]
        got = sim["quantizer"](z[None])[1]
    assert torch.equal(got, want)  # exact mode: the same code for every vector


def test_wrong_arguments_are_vqdoctor_errors(setup):
    model, _, z, _, _ = setup
    with pytest.raises(VqdoctorError, match="needs data"):
        vqdoctor.fix(model, vqdoctor.ReviveFix())
    with pytest.raises(VqdoctorError, match="fix value; got str"):
        vqdoctor.fix(model, "revive", latents=z)  # type: ignore[arg-type]
    with pytest.raises(VqdoctorError, match="vqdoctor.fix got list"):
        vqdoctor.fix([1, 2], vqdoctor.ReviveFix(), latents=z)  # type: ignore[arg-type]
    with pytest.raises(VqdoctorError, match="latents must be"):
        vqdoctor.fix(model, vqdoctor.ReviveFix(), latents=z.tolist())  # type: ignore[arg-type]
    with pytest.raises(VqdoctorError, match="fix_checkpoint"):
        vqdoctor.fix(model, vqdoctor.KMeansFix(encoder_from="pre.safetensors"), latents=z)  # type: ignore[arg-type]

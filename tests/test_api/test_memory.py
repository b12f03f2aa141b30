"""The in-memory Python API: modules, state dicts and paths, with tensor / array / path data,
give the CLI's report (``Report.to_dict()`` against ``vqdoctor inspect --json``)."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

import vqdoctor
from vqdoctor.cli.app import app
from vqdoctor.errors import VqdoctorError

vqp = pytest.importorskip("vector_quantize_pytorch")
warnings.filterwarnings("ignore", module="vector_quantize_pytorch")

K, D = 16, 4
FAST = vqdoctor.AnalysisOptions(projection="none")


class Model(torch.nn.Module):
    """A tiny VQ-VAE: encoder (N, 8) -> (N, 4), a real vector-quantize-pytorch quantizer."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.encoder = torch.nn.Linear(8, D)
        self.quantizer = vqp.VectorQuantize(dim=D, codebook_size=K)
        with torch.no_grad():
            self.quantizer._codebook.embed[0, 12:] += 50.0  # four codes far from the data: dead

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)


@pytest.fixture
def setup(tmp_path):
    model = Model().eval()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(600, 8, generator=g)
    y = torch.randint(0, 3, (600,), generator=g)
    with torch.no_grad():
        z = model.encode(x)
    ckpt = tmp_path / "m.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(ckpt))
    np.save(tmp_path / "z.npy", z.numpy())
    np.save(tmp_path / "y.npy", y.numpy())
    return model, x, y, z, ckpt, tmp_path


def _cli_json(*args) -> dict:
    res = CliRunner().invoke(app, ["inspect", *map(str, args), "--json", "-", "--projection", "none"])
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)


def _without_sources(doc: dict) -> dict:
    """The report without where the checkpoint and data came from (paths, formats; the remedies
    name the checkpoint and data as given: a fix command for files, why there is none for an
    object in memory)."""
    text = json.dumps(doc).replace(doc["checkpoint"]["path"], "CKPT")
    out = json.loads(text)
    out.pop("checkpoint")
    out["data"] = {k: v for k, v in out["data"].items() if k != "source"}
    for key in ("verdicts", "diagnosis"):
        out[key] = [{k: v for k, v in item.items() if k not in ("remedy", "remedy_argv")} for item in out[key]]
    return out


def test_paths_give_the_cli_json_exactly(setup):
    _, _, _, _, ckpt, tmp = setup
    cli = _cli_json(ckpt, "--latents", tmp / "z.npy", "--labels", tmp / "y.npy")
    api = vqdoctor.inspect(ckpt, latents=tmp / "z.npy", labels=str(tmp / "y.npy"), analysis=FAST).to_dict()
    assert api == cli
    old_style = vqdoctor.inspect(ckpt, data=vqdoctor.DataOptions(latents=tmp / "z.npy", labels=tmp / "y.npy"), analysis=FAST)
    assert old_style.to_dict() == cli


@pytest.mark.parametrize("source", ["module", "state_dict", "path"])
@pytest.mark.parametrize("kind", ["tensor", "array", "path"])
def test_objects_give_the_cli_numbers(setup, source, kind):
    model, _, y, z, ckpt, tmp = setup
    cli = _cli_json(ckpt, "--latents", tmp / "z.npy", "--labels", tmp / "y.npy")
    obj = {"module": model, "state_dict": model.state_dict(), "path": ckpt}[source]
    lat = {"tensor": z, "array": z.numpy(), "path": tmp / "z.npy"}[kind]
    lab = {"tensor": y, "array": y.numpy(), "path": tmp / "y.npy"}[kind]
    report = vqdoctor.inspect(obj, latents=lat, labels=lab, analysis=FAST)
    assert _without_sources(report.to_dict()) == _without_sources(cli)
    usage = report.codebooks[0].usage
    assert (usage.vectors, usage.used_codes, usage.dead_codes) == (600, cli["codebooks"][0]["usage"]["used_codes"], 4)
    if source != "path":
        assert report.checkpoint.format == "memory"


def test_inputs_with_an_encoder_callable(setup):
    model, x, y, z, ckpt, tmp = setup
    via_encoder = vqdoctor.inspect(model, inputs=x, encoder=model.encode, labels=y, analysis=FAST)
    via_latents = vqdoctor.inspect(model, latents=z, labels=y, analysis=FAST)
    a, b = via_encoder.codebooks[0], via_latents.codebooks[0]
    assert a.usage.vectors == b.usage.vectors == 600
    assert a.usage.used_codes == b.usage.used_codes and a.usage.perplexity == pytest.approx(b.usage.perplexity)
    assert a.tokens_collapse.allocation_tv == pytest.approx(b.tokens_collapse.allocation_tv)
    assert via_encoder.embeddings_collapse is not None  # inputs and latents compared


def test_image_shaped_latents_need_channel_axis(setup):
    model, _, _, z, _, _ = setup
    fmap = z.reshape(6, 10, 10, D).permute(0, 3, 1, 2)  # (B, d, H, W), same vectors in the same order
    with pytest.raises(VqdoctorError, match="channel"):
        vqdoctor.inspect(model, latents=fmap, analysis=FAST)
    r = vqdoctor.inspect(model, latents=fmap, channel_axis=1, analysis=FAST)
    flat = vqdoctor.inspect(model, latents=z, analysis=FAST)
    assert r.codebooks[0].usage == flat.codebooks[0].usage


def test_nested_and_prefixed_state_dicts_unwrap_like_files(setup):
    model, _, _, z, _, _ = setup
    wrapped = {"state_dict": {"module." + k: v for k, v in model.state_dict().items()}, "global_step": 7}
    a = vqdoctor.inspect(wrapped, latents=z, analysis=FAST)
    b = vqdoctor.inspect(model, latents=z, analysis=FAST)
    assert a.codebooks[0].name == b.codebooks[0].name == "quantizer"
    assert a.codebooks[0].usage == b.codebooks[0].usage
    assert a.checkpoint.fingerprint == b.checkpoint.fingerprint  # same tensors, same fingerprint
    assert "state_dict" in a.checkpoint.nesting and "module." in a.checkpoint.nesting


def test_find_codebooks_on_module_and_state_dict(setup):
    model, *_ , ckpt, _ = setup
    for obj in (model, model.state_dict(), ckpt, str(ckpt)):
        (cb,) = vqdoctor.find_codebooks(obj).codebooks
        assert (cb.name, cb.size, cb.dim, cb.kind) == ("quantizer", K, D, "ema")
    assert vqdoctor.find_codebooks({"w": torch.zeros(3)}).codebooks == ()


@pytest.mark.parametrize("bad", [[1, 2, 3], 42, None])
def test_wrong_model_type_names_the_type_and_the_accepted_ones(bad):
    with pytest.raises(VqdoctorError) as err:
        vqdoctor.inspect(bad)
    msg = str(err.value)
    assert type(bad).__name__ in msg and "state dict" in msg and "nn.Module" in msg and "path" in msg


def test_wrong_data_types_are_vqdoctor_errors(setup):
    model, _, y, z, _, _ = setup
    with pytest.raises(VqdoctorError, match=r"latents must be .*got list"):
        vqdoctor.inspect(model, latents=z.tolist())
    with pytest.raises(VqdoctorError, match="600"):  # labels of another length
        vqdoctor.inspect(model, latents=z, labels=y[:10])
    with pytest.raises(VqdoctorError, match="callable"):
        vqdoctor.inspect(model, inputs=z, encoder=3)
    with pytest.raises(VqdoctorError, match="NaN"):
        bad = z.clone()
        bad[5, 0] = float("nan")
        vqdoctor.inspect(model, latents=bad, analysis=FAST)
    with pytest.raises(VqdoctorError, match="find_codebooks got int"):
        vqdoctor.find_codebooks(3)


def test_py_typed_marker_ships():
    from importlib import resources

    assert resources.files("vqdoctor").joinpath("py.typed").is_file()

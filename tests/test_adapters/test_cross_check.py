"""Cross-check (issue 15): for every Hugging Face family, vqdoctor's per-code counts on real
inputs equal np.bincount of the codes the model itself picks (its own ``encode``) on the same
inputs. Tiny random models (hf_helpers.tiny), photos bundled with scikit-learn, synthesised speech."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

pytest.importorskip("transformers")

import hf_helpers as H  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

import vqdoctor  # noqa: E402
from vqdoctor.adapters import find_adapter  # noqa: E402
from vqdoctor.adapters.preprocess import resample  # noqa: E402
from vqdoctor.cli.app import app  # noqa: E402
from vqdoctor.options import AnalysisOptions, DataOptions  # noqa: E402

IMAGE_FAMILIES = ("chameleon", "janus", "emu3", "glm_image")
AUDIO_FAMILIES = ("encodec", "encodec_48khz_like", "mimi", "dac", "xcodec")
ANALYSIS = AnalysisOptions(projection="none", modes="none")
runner = CliRunner()


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("hf_data")
    images, wavs = H.write_images(root / "images"), H.write_wavs(root / "wavs")
    clips, rate = H.read_wavs(wavs)
    return {"images": images, "wavs": wavs, "x_images": H.read_images(images), "x_audio": clips, "rate": rate}


@pytest.fixture(scope="module")
def folders(tmp_path_factory, data):
    """family -> saved model folder (built lazily, once per module)."""
    root = tmp_path_factory.mktemp("hf_models")
    made: dict[str, object] = {}

    def get(family: str):
        if family not in made:
            if family in AUDIO_FAMILIES:
                probe = resample(data["x_audio"], data["rate"], H.MODEL_RATE)
            elif family == "glm_image":  # its own image processor takes [0, 1] images
                probe = data["x_images"]
            else:
                probe = data["x_images"][:, :, :32, :32] * 2 - 1
            made[family] = H.tiny(family, root / family, probe)
        return made[family]

    return get


def _model(folder):
    import transformers

    config = json.loads((folder / "config.json").read_text())
    return getattr(transformers, config["architectures"][0]).from_pretrained(folder, local_files_only=True).eval()


def _own_codes(family: str, model, x: torch.Tensor) -> list[np.ndarray]:
    """Per level, the codes the model's own encode picks: one flat array per codebook."""
    with torch.no_grad():
        if family in ("chameleon", "janus"):
            return [model.encode(x).image_tokens.numpy().ravel()]
        if family == "glm_image":  # the model's own path: get_image_features, then get_image_tokens
            import transformers

            proc = transformers.GlmImageImageProcessorPil.from_pretrained(model.name_or_path, local_files_only=True)
            batch = proc(images=[img.permute(1, 2, 0).numpy() for img in x], do_rescale=False, return_tensors="pt")
            feats = model.get_image_features(batch["pixel_values"], batch["image_grid_thw"]).pooler_output
            return [model.get_image_tokens(torch.stack(list(feats))).numpy().ravel()]
        if family == "emu3":
            tokens = model.encode(x, image_sizes=torch.tensor([list(x.shape[-2:])] * len(x))).image_tokens
            return [torch.stack(tokens).numpy().ravel()]
        if family.startswith("encodec"):  # (chunks, b, levels, T): chunks follow each other in time
            chunks = model.encode(x, bandwidth=max(model.config.target_bandwidths)).audio_codes
            codes = torch.cat(list(chunks), dim=-1)
        elif family == "mimi":
            codes = model.encode(x).audio_codes
        elif family == "dac":
            codes = model.encode(x).audio_codes
        else:  # xcodec
            codes = model.encode(x).audio_codes
    return [codes[:, level].numpy().ravel() for level in range(codes.shape[1])]


def _prepared(family: str, model, data) -> torch.Tensor:
    """The inputs the model's processor would make, read here independently of vqdoctor's readers."""
    adapter = find_adapter(model.config.to_dict())
    if family in AUDIO_FAMILIES:
        return adapter.preprocess(model, data["x_audio"], source_rate=data["rate"], pixel_range=None)
    return adapter.preprocess(model, data["x_images"], source_rate=None, pixel_range=None)


def _level_order(names: list[str]) -> list[int]:
    """Report codebooks in the model's level order (Mimi: semantic first, then acoustic)."""
    return sorted(range(len(names)), key=lambda i: ("acoustic" in names[i], names[i]))


@pytest.mark.parametrize("family", IMAGE_FAMILIES + AUDIO_FAMILIES)
def test_usage_equals_the_models_own_codes(family, folders, data):
    folder = folders(family)
    inputs = data["wavs"] if family in AUDIO_FAMILIES else data["images"]
    report = vqdoctor.inspect(folder, data=DataOptions(inputs=inputs, device="cpu"), analysis=ANALYSIS)
    model = _model(folder)
    own = _own_codes(family, model, _prepared(family, model, data))
    names = [cb.name for cb in report.codebooks]
    assert len(names) == len(own), names
    for level, i in enumerate(_level_order(names)):
        cb = report.codebooks[i]
        expected = np.bincount(own[level], minlength=len(cb.counts))
        assert cb.counts == expected.tolist(), (family, cb.name)
        assert cb.usage.used_codes == int((expected > 0).sum()) > 1  # not a trivial one-code match
    adapter = family if family == "glm_image" else family.split("_")[0]  # encodec_48khz_like: encodec
    assert any(f"'{adapter}'" in n for n in report.notes)  # the adapter's name


def test_nested_chameleon_inside_a_full_model_folder(folders, data, tmp_path):
    # ChameleonForConditionalGeneration keeps its tokenizer at model.vqmodel.* with config["vq_config"]
    nested = H.nest(folders("chameleon"), tmp_path / "full", model_type="chameleon")
    alone = vqdoctor.inspect(folders("chameleon"), data=DataOptions(inputs=data["images"], device="cpu"), analysis=ANALYSIS)
    inside = vqdoctor.inspect(nested, data=DataOptions(inputs=data["images"], device="cpu"), analysis=ANALYSIS)
    assert [cb.counts for cb in inside.codebooks] == [cb.counts for cb in alone.codebooks]


def test_nested_weights_that_do_not_fit_name_the_keys(folders, tmp_path, data):
    from safetensors.torch import load_file, save_file

    nested = H.nest(folders("janus"), tmp_path / "full", model_type="janus")
    state = load_file(nested / "model.safetensors")
    del state["model.vqmodel.quant_conv.weight"]
    save_file(state, nested / "model.safetensors")
    res = runner.invoke(app, ["inspect", str(nested), "--inputs", str(data["images"]), "--json", "-"])
    assert res.exit_code != 0
    assert "'quant_conv.weight'" in res.output and "missing" in res.output


def test_cli_inspect_audio_folder_json_usage_matches_encodec(folders, data):
    folder = folders("encodec")
    res = runner.invoke(app, ["inspect", str(folder), "--inputs", str(data["wavs"]), "--json", "-",
                              "--projection", "none", "--modes", "none", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    model = _model(folder)
    own = _own_codes("encodec", model, _prepared("encodec", model, data))
    used = [cb["usage"]["used_codes"] for cb in doc["codebooks"]]
    assert used == [len(np.unique(level)) for level in own]
    assert [cb["usage"]["vectors"] for cb in doc["codebooks"]] == [level.size for level in own]


def test_pixel_range_override_changes_what_the_model_sees(folders, data):
    folder = folders("chameleon")
    base = vqdoctor.inspect(folder, data=DataOptions(inputs=data["images"], device="cpu"), analysis=ANALYSIS)
    zero_one = vqdoctor.inspect(folder, data=DataOptions(inputs=data["images"], device="cpu", pixel_range=(0.0, 1.0)),
                                analysis=ANALYSIS)
    model = _model(folder)
    adapter = find_adapter(model.config.to_dict())
    x = adapter.preprocess(model, data["x_images"], source_rate=None, pixel_range=(0.0, 1.0))
    assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0
    expected = np.bincount(_own_codes("chameleon", model, x)[0], minlength=64).tolist()
    assert zero_one.codebooks[0].counts == expected != base.codebooks[0].counts
    res = runner.invoke(app, ["inspect", str(folder), "--inputs", str(data["images"]), "--pixel-range", "0,255"])
    assert res.exit_code == 2 and "--pixel-range" in res.output and "0,1" in res.output


def test_image_arrays_outside_unit_range_are_refused(folders, data, tmp_path):
    x = (data["x_images"].numpy() * 255).astype(np.float32)  # uint8-scale pixels in an array file
    np.save(tmp_path / "x.npy", x)
    res = runner.invoke(app, ["inspect", str(folders("janus")), "--inputs", str(tmp_path / "x.npy")])
    assert res.exit_code != 0
    text = " ".join(res.output.split())
    assert "must be scaled to [0, 1]; these span [0, 255]" in text and "Divide uint8 images by 255" in text
    assert "Traceback" not in res.output and "torch.export" not in text  # its own hint, not the generic one


@pytest.mark.parametrize("family", IMAGE_FAMILIES + ("mimi", "dac", "xcodec"))
def test_cli_inspect_folder_with_inputs_needs_no_user_code(family, folders, data):
    """`vqdoctor inspect HF_FOLDER --inputs images/` (or `wavs/`) through the CLI: per codebook, the
    vectors, used codes and perplexity of the JSON report are those of the model's own codes."""
    folder = folders(family)
    inputs = data["wavs"] if family in AUDIO_FAMILIES else data["images"]
    res = runner.invoke(app, ["inspect", str(folder), "--inputs", str(inputs), "--json", "-",
                              "--projection", "none", "--modes", "none", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    model = _model(folder)
    own = _own_codes(family, model, _prepared(family, model, data))
    names = [cb["name"] for cb in doc["codebooks"]]
    assert len(names) == len(own), names
    for level, i in enumerate(_level_order(names)):
        usage = doc["codebooks"][i]["usage"]
        counts = np.bincount(own[level])
        p = counts[counts > 0] / counts.sum()
        assert usage["vectors"] == own[level].size
        assert usage["used_codes"] == int((counts > 0).sum()) > 1
        assert usage["perplexity"] == pytest.approx(float(np.exp(-(p * np.log(p)).sum())), rel=1e-6)

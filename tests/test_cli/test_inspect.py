"""`vqdoctor inspect` through Typer's runner: outputs, and every bad input one paragraph, exit 2."""

from __future__ import annotations

import argparse
import json

import jsonschema
import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

from vqdoctor.cli.app import app
from vqdoctor.report.json_out import load_schema

runner = CliRunner()
K, D = 16, 4


@pytest.fixture
def model(tmp_path):
    """A vector-quantize-pytorch style EMA codebook: 16 codes, 12 of them on the data."""
    g = torch.Generator().manual_seed(0)
    codes = torch.randn(K, D, generator=g)
    codes[12:] += 100.0  # four codes far from any data: dead
    path = tmp_path / "m.safetensors"
    save_file({"quantizer._codebook.embed": codes[None].contiguous(),
               "quantizer._codebook.cluster_size": torch.ones(1, K),
               "quantizer._codebook.embed_avg": codes[None].clone(),
               "quantizer._codebook.initted": torch.tensor([1.0])}, str(path))
    return path, codes


@pytest.fixture
def latents(tmp_path, model):
    _, codes = model
    g = np.random.default_rng(0)
    x = (codes[:12].numpy()[g.integers(0, 12, 3000)] + 0.05 * g.standard_normal((3000, D))).astype(np.float32)
    path = tmp_path / "z.npy"
    np.save(path, x)
    return path


def _run(*args: str):
    return runner.invoke(app, ["inspect", *map(str, args)], env={"COLUMNS": "120"})


def test_json_report_is_valid_and_exact(model, latents):
    res = _run(model[0], "--latents", latents, "--json", "-", "--projection", "none")
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    jsonschema.validate(doc, load_schema())
    usage = doc["codebooks"][0]["usage"]
    assert usage["vectors"] == 3000 and usage["used_codes"] == 12 and usage["dead_codes"] == 4
    assert usage["utilization"] == pytest.approx(12 / 16)
    assert doc["codebooks"][0]["tokens_collapse"]["mode_source"].startswith("inferred")


def test_terminal_html_and_plots(model, latents, tmp_path):
    res = _run(model[0], "--latents", latents, "--html", tmp_path / "r.html", "--plots", tmp_path / "plots")
    assert res.exit_code == 0, res.output
    assert "diagnosis" in res.stdout and "utilization" in res.stdout
    assert (tmp_path / "r.html").read_text().startswith("<!DOCTYPE html>")
    pngs = sorted(p.name for p in (tmp_path / "plots").glob("*.png"))
    assert "projection.png" in pngs and any("rank-frequency" in p for p in pngs)


def test_data_free_analysis_says_so(model):
    res = _run(model[0], "--json", "-")
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    cb = doc["codebooks"][0]
    assert cb["usage"] is None and cb["tokens_collapse"] is None and doc["embeddings_collapse"] is None
    assert cb["ema"]["dead_codes_relative"] == 0  # the buffer says every code is used
    assert doc["data"]["vectors"] is None and any("No data given" in n for n in doc["notes"])


def _assert_error(res, *fragments: str):
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output
    for f in fragments:
        assert f in res.output, res.output


def test_missing_checkpoint(tmp_path):
    _assert_error(_run(tmp_path / "nope.safetensors"), "nope.safetensors")


def test_dimension_mismatch_shows_both(model, tmp_path):
    z = tmp_path / "z96.npy"
    np.save(z, np.zeros((10, 96), np.float32))
    _assert_error(_run(model[0], "--latents", z), "96", "4")


def test_nan_latents_name_file_and_row(model, tmp_path):
    x = np.ones((50, D), np.float32)
    x[7, 2] = np.nan
    z = tmp_path / "bad.npy"
    np.save(z, x)
    _assert_error(_run(model[0], "--latents", z), "bad.npy", "7")


def test_empty_latents(model, tmp_path):
    z = tmp_path / "empty.npy"
    np.save(z, np.zeros((0, D), np.float32))
    _assert_error(_run(model[0], "--latents", z), "empty.npy")


def test_unsafe_pickle_is_refused_with_the_global_it_wanted(tmp_path):
    path = tmp_path / "train.ckpt"
    torch.save({"args": argparse.Namespace(lr=1e-3), "state_dict": {"quantize.embedding.weight": torch.randn(8, 4)}}, path)
    _assert_error(_run(path), "argparse.Namespace", "--allow-global")
    ok = _run(path, "--allow-global", "argparse.Namespace", "--json", "-")
    assert ok.exit_code == 0, ok.output
    assert json.loads(ok.stdout)["codebooks"][0]["size"] == 8


def test_no_codebook_lists_candidates(tmp_path):
    path = tmp_path / "enc.safetensors"
    save_file({"encoder.conv.weight": torch.randn(64, 3, 3, 3), "decoder.fc.weight": torch.randn(10, 64)}, str(path))
    _assert_error(_run(path), "--codebook")


def test_codebook_glob_with_no_match(model):
    _assert_error(_run(model[0], "--codebook", "nothing*"), "nothing*")


def test_bad_options(model, latents):
    _assert_error(_run(model[0], "--projection", "mds"), "mds", "tsne")
    _assert_error(_run(model[0], "--device", "tpu"), "tpu")
    _assert_error(_run(model[0], "--latents", latents, "--model", "x:y"), "--latents")


def test_default_runs_the_shipped_sample():
    res = runner.invoke(app, ["inspect", "--projection", "none"], env={"COLUMNS": "100"})
    assert res.exit_code == 0, res.output
    assert "vanilla_tokens_collapse" in res.output and "tokens collapse" in res.stdout and "Try next" in res.stdout


def test_default_report_fits_80_columns_in_40_lines():
    res = runner.invoke(app, ["inspect"], env={"COLUMNS": "80"})
    assert res.exit_code == 0, res.output
    lines = res.stdout.splitlines()
    assert len(lines) <= 40, res.stdout
    assert max(len(line) for line in lines) <= 80
    assert "diagnosis" in res.stdout and "FAIL starved_modes [quantizer] value 8 (threshold 1)" in res.stdout
    assert res.stdout.count("remedy: vqdoctor fix") == 2  # one per finding, "the one above" for a repeat
    assert "(data options" not in res.stdout


def test_verbose_shows_every_verdict_and_quiet_nothing(model, latents, tmp_path):
    import vqdoctor
    from vqdoctor.options import DataOptions

    report = vqdoctor.inspect(model[0], data=DataOptions(latents=latents))
    res = _run(model[0], "--latents", latents, "--verbose", "--projection", "none")
    assert res.exit_code == 0, res.output
    for v in report.verdicts:
        assert f"{v.status.upper():<4} {v.check} [{v.codebook}]" in res.stdout, v
    assert "verdicts ─" in res.stdout and "notes ─" in res.stdout
    res = _run(model[0], "--latents", latents, "--quiet", "--json", tmp_path / "r.json", "--projection", "none")
    assert res.exit_code == 0 and res.stdout == "", res.output
    assert json.loads((tmp_path / "r.json").read_text())["verdicts"]  # the files asked for are still written
    _assert_error(_run(model[0], "--verbose", "--quiet"), "--verbose", "--quiet")


def test_sample_paths_work_outside_the_repository(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no sample_checkpoints/ here, as after a plain pip install
    res = runner.invoke(app, ["inspect", "sample_checkpoints/pretrained_healthy.safetensors", "--projection", "none"])
    assert res.exit_code == 0, res.output
    assert "is not here: inspecting the" in res.output and "healthy" in res.stdout


def test_error_paragraph_reads_as_sentences():
    from vqdoctor.cli.errors import format_error
    from vqdoctor.errors import InputFileError

    text = format_error(InputFileError("model.safetensors is truncated", "re-download it"))
    assert text == "Error: model.safetensors is truncated. Re-download it."
    assert format_error(InputFileError("unknown metric 'l1'", "use 'euclidean'")) == "Error: Unknown metric 'l1'. Use 'euclidean'."


def test_error_keeps_a_path_as_the_user_wrote_it(model, latents, tmp_path, monkeypatch):
    from vqdoctor.cli.errors import format_error
    from vqdoctor.errors import DataError

    monkeypatch.chdir(tmp_path)
    (tmp_path / "images").mkdir()
    assert format_error(DataError("images holds nothing")).startswith("Error: images holds nothing.")
    res = _run(model[0], "--latents", latents, "--inputs", "images", "--projection", "none")
    assert res.exit_code == 2, res.output
    assert "Error: images/ holds no images" in " ".join(res.output.split()), res.output


def test_inspect_honours_the_check_table_of_pyproject(model, latents, tmp_path, monkeypatch):
    """The fail bounds of [tool.vqdoctor.check] judge inspect's verdicts too: inspect and check agree."""
    import vqdoctor.cli.check_cmd  # noqa: F401  (registers `check`)

    work = tmp_path / "proj" / "sub"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    res = _run(model[0], "--latents", latents, "--json", "-", "--projection", "none")
    before = {v["check"]: v for v in json.loads(res.stdout)["verdicts"]}
    assert before["utilization"]["status"] == "warn"  # 75% used: below the warn bound 80%, above the fail bound
    (tmp_path / "proj" / "pyproject.toml").write_text("[tool.vqdoctor.check]\nmin_utilization = 0.9\n")
    res = _run(model[0], "--latents", latents, "--json", "-", "--projection", "none")
    doc = json.loads(res.stdout)
    after = {v["check"]: v for v in doc["verdicts"]}
    assert after["utilization"]["status"] == "fail" and after["utilization"]["threshold"] == pytest.approx(0.9, abs=0.02)
    assert after["utilization"]["remedy_argv"][:3] == ["vqdoctor", "fix", "revive"]
    assert "--latents" in after["utilization"]["remedy_argv"]
    assert any("pyproject.toml [tool.vqdoctor.check]" in n for n in doc["notes"])
    assert doc["diagnosis"][0]["status"] == "fail"
    res = runner.invoke(app, ["check", str(model[0]), "--latents", str(latents)])
    assert res.exit_code == 1 and "utilization" in res.stdout  # check fails on the same bound


def test_latents_that_fit_no_stack_name_every_stack(tmp_path):
    g = torch.Generator().manual_seed(0)
    save_file({"enc_q._codebook.embed": torch.randn(1, 16, 4, generator=g),
               "dec_q._codebook.embed": torch.randn(1, 16, 6, generator=g)}, str(tmp_path / "two.safetensors"))
    np.save(tmp_path / "z.npy", np.zeros((50, 4), dtype=np.float32))
    res = runner.invoke(app, ["inspect", str(tmp_path / "two.safetensors"), "--latents", str(tmp_path / "z.npy")])
    assert res.exit_code == 2 and "Traceback" not in res.output
    out = " ".join(res.output.split())
    assert "dim=4" in out and "expects dim=4" in out and "expects dim=6" in out
    assert "enc_q" in out and "dec_q" in out

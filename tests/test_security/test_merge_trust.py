"""`vqdoctor merge` trusts nothing a statistics file names: a recorded checkpoint path, nesting
or allowed globals are never used to load anything. Only --checkpoint PATH (with the user's own
--allow-global / --nesting) re-loads a checkpoint, verified by its sha256 and codebook hashes;
without it the report comes from the statistics alone."""

from __future__ import annotations

import json

import pytest
from pickles import payloads, zip_file
from stats_helpers import make_setup, shard_files, tamper
from typer.testing import CliRunner

from vqdoctor import api
from vqdoctor.cli.app import app
from vqdoctor.report.json_out import report_to_dict

runner = CliRunner()


@pytest.fixture
def shards(tmp_path):
    ckpt, z, y = make_setup(tmp_path)
    return ckpt, shard_files(tmp_path, ckpt, z, y)


def _text(res) -> str:
    assert "Traceback" not in res.output
    return " ".join(res.output.split())


def test_hostile_stats_file_cannot_make_merge_load_code(tmp_path, shards):
    ckpt, paths = shards
    marker = tmp_path / "MARKER"
    evil = zip_file(tmp_path / "evil.pt", payloads(marker)["logging.FileHandler"])

    def point_at_evil(doc):
        doc["checkpoint"].update(path=str(evil), format="pickle", load_nesting="state_dict",
                                 allow_globals=["logging.FileHandler", "unittest.main.TestProgram"])

    crafted = [tamper(p, meta=point_at_evil) for p in paths]
    res = runner.invoke(app, ["merge", *map(str, crafted), "--json", "-"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["codebooks"][0]["usage"]["vectors"] == 800 and doc["codebooks"][0]["geometry"] is None
    assert any("--checkpoint" in n for n in doc["notes"])
    # the user names the file: still refused, with or without the globals the stats file wanted
    res = runner.invoke(app, ["merge", *map(str, crafted), "--checkpoint", str(evil)])
    assert res.exit_code == 2 and "needs code to load" in _text(res)
    res = runner.invoke(app, ["merge", *map(str, crafted), "--checkpoint", str(evil), "--allow-global", "logging.FileHandler"])
    assert res.exit_code == 2 and "not on vqdoctor's allow-list" in _text(res)
    assert not marker.exists()


def test_stats_alone_report_matches_the_full_reports_usage(tmp_path, shards):
    ckpt, paths = shards
    merged = api.load_statistics(*paths)
    alone = report_to_dict(api.report_from_statistics(merged))
    full = report_to_dict(api.report_from_statistics(merged, checkpoint=ckpt))
    (a,), (f,) = alone["codebooks"], full["codebooks"]
    assert a["usage"].pop("space") == "as recorded in the statistics"
    f["usage"].pop("space")
    assert a["usage"] == f["usage"] and a["usage"]["vectors"] == 800
    assert a["geometry"] is None and a["ema"] is None and f["geometry"] is not None
    assert alone["embeddings_collapse"] == full["embeddings_collapse"]
    assert a["tokens_collapse"]["modes"] == f["tokens_collapse"]["modes"] == 3
    assert full["checkpoint"]["fingerprint"] == alone["checkpoint"]["fingerprint"]


def test_stats_alone_renders_every_output(tmp_path, shards):
    _, paths = shards
    res = runner.invoke(app, ["merge", *map(str, paths), "--html", str(tmp_path / "r.html"),
                              "--plots", str(tmp_path / "plots")])
    assert res.exit_code == 0, res.output
    assert "--checkpoint" in _text(res) and (tmp_path / "r.html").stat().st_size > 0


def test_merge_checks_the_users_checkpoint(tmp_path, shards):
    ckpt, paths = shards
    res = runner.invoke(app, ["merge", *map(str, paths), "--checkpoint", str(ckpt), "--json", "-"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["codebooks"][0]["geometry"] is not None
    other = tmp_path / "other.safetensors"
    other.write_bytes(ckpt.read_bytes().replace(b"quantizer", b"quantizeR", 1))
    res = runner.invoke(app, ["merge", *map(str, paths), "--checkpoint", str(other)])
    assert res.exit_code == 2 and "is not the one the statistics were made from" in _text(res)


def test_codebook_hash_must_match_the_checkpoint(tmp_path, shards):
    ckpt, paths = shards
    for p in paths:
        tamper(p, meta=lambda doc: doc["codebooks"][0].update(codes_sha256="0" * 64))
    res = runner.invoke(app, ["merge", *map(str, paths), "--checkpoint", str(ckpt)])
    assert res.exit_code == 2 and "differs from the one the statistics were gathered on" in _text(res)


@pytest.mark.parametrize("flag", [["--nesting", "ema"], ["--allow-global", "argparse.Namespace"]])
def test_checkpoint_flags_need_the_checkpoint(shards, flag):
    _, paths = shards
    res = runner.invoke(app, ["merge", *map(str, paths), *flag])
    assert res.exit_code == 2 and "--checkpoint" in _text(res)


@pytest.mark.parametrize("with_checkpoint", [False, True])
def test_configured_bounds_write_merge_remedies_without_the_files_paths(tmp_path, shards, monkeypatch, with_checkpoint):
    """[tool.vqdoctor.check] re-judges a merged report: a verdict the strict bound turns to fail gets
    the same template as the others (the user's --checkpoint or a placeholder, no data options,
    no argv), never the checkpoint path or data the statistics files record."""
    ckpt, paths = shards
    moved = tmp_path / "mine.safetensors"
    moved.write_bytes(ckpt.read_bytes())  # same sha256, another path than the one recorded
    work = tmp_path / "work"
    work.mkdir()
    (work / "pyproject.toml").write_text("[tool.vqdoctor.check]\nmin_utilization = 1.0\n")
    monkeypatch.chdir(work)
    res = runner.invoke(app, ["merge", *map(str, paths), *(["--checkpoint", str(moved)] if with_checkpoint else []),
                              "--json", "-"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    util = next(v for v in doc["verdicts"] if v["check"] == "utilization")
    assert util["status"] == "fail" and util["remedy_argv"] is None
    assert str(ckpt) not in util["remedy"]
    assert util["remedy"].startswith(f"vqdoctor fix revive {moved if with_checkpoint else 'CHECKPOINT'} ")
    assert "add the data options the shards were inspected with" in util["remedy"]

"""Every numeric flag's range and every output path, checked by vqdoctor itself: one paragraph
naming the flag and the value, exit 2, no traceback, and (for outputs) before the analysis runs."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

from vqdoctor.cli.app import app
from vqdoctor.cli.common import FLAG_RANGES

runner = CliRunner()


@pytest.fixture
def files(tmp_path):
    g = torch.Generator().manual_seed(0)
    codes = torch.randn(16, 4, generator=g)
    codes[12:] += 50.0  # four dead codes, so that `fix revive` has work to do
    save_file({"quantizer.embedding.weight": codes}, str(tmp_path / "m.safetensors"))
    rng = np.random.default_rng(0)
    z = (codes[:12].numpy()[rng.integers(0, 12, 400)] + 0.05 * rng.standard_normal((400, 4))).astype(np.float32)
    np.save(tmp_path / "z.npy", z)
    return tmp_path / "m.safetensors", tmp_path / "z.npy"


def _clean_error(res, *fragments: str) -> None:
    assert res.exit_code == 2, res.output
    assert isinstance(res.exception, SystemExit), repr(res.exception)
    assert res.output.startswith("Error: ") and "Traceback" not in res.output and "╭" not in res.output
    flat = " ".join(res.output.split())
    for fragment in fragments:
        assert fragment in flat, (fragment, flat)


BAD = [
    ("--seed", "-5"), ("--seed", str(10**23)), ("--min-count", str(10**20)), ("--min-count", "0"),
    ("--batch-size", "0"), ("--batch-size", str(10**30)), ("--subsample", "3"), ("--max-vectors", "0"),
    ("--max-vectors", str(10**30)), ("--memory-budget-mb", "0"),
]


@pytest.mark.parametrize(("flag", "value"), BAD)
@pytest.mark.parametrize("command", ["inspect", "check"])
def test_out_of_range_flags(files, command, flag, value):
    ckpt, z = files
    res = runner.invoke(app, [command, str(ckpt), "--latents", str(z), flag, value])
    _clean_error(res, flag, "out of range")


@pytest.mark.parametrize(("flag", "value"), [("--seed", "-1"), ("--seed", str(2**32)), ("--iters", "-1"),
                                             ("--min-count", "0"), ("--memory-budget-mb", str(10**9))])
def test_out_of_range_fix_flags(files, tmp_path, flag, value):
    ckpt, z = files
    res = runner.invoke(app, ["fix", "revive", str(ckpt), "--latents", str(z), "--out", str(tmp_path / "o.safetensors"),
                              flag, value])
    _clean_error(res, flag, "out of range")
    assert not (tmp_path / "o.safetensors").exists()


@pytest.mark.parametrize(("flag", "value"), [("--min-utilization", "1.5"), ("--max-dead-fraction", "-0.1"),
                                             ("--min-normalized-perplexity", "nan"), ("--max-allocation-tv", "2"),
                                             ("--max-merged-pairs", "-1"), ("--max-relative-mse", "inf"),
                                             ("--max-regression", "-1")])
def test_check_thresholds(files, flag, value):
    ckpt, z = files
    _clean_error(runner.invoke(app, ["check", str(ckpt), "--latents", str(z), flag, value]), flag, "out of range")


def test_range_edges_are_accepted(files):
    ckpt, z = files
    lo, hi = FLAG_RANGES["--seed"]
    for seed in (lo, hi):
        res = runner.invoke(app, ["inspect", str(ckpt), "--latents", str(z), "--seed", str(seed), "--json", "-"])
        assert res.exit_code == 0, res.output


@pytest.mark.parametrize(("shard", "fragment"), [("0/" + "1" * 23, "at most 1,000,000 shards"), ("0/0", "n=0"),
                                                ("3/3", "slice 3 of 3"), ("a/b", "two whole numbers"),
                                                ("0/" + "9" * 5000, "at most 1,000,000 shards")])
def test_shard(files, shard, fragment):
    ckpt, z = files
    _clean_error(runner.invoke(app, ["inspect", str(ckpt), "--latents", str(z), "--shard", shard]), "--shard", fragment)


@pytest.mark.parametrize(("flag", "value"), [("--image-size", "0"), ("--image-size", "100000"),
                                             ("--clip-seconds", "nan"), ("--clip-seconds", "-1"),
                                             ("--clip-seconds", "1e9")])
def test_raw_data_flags(files, tmp_path, flag, value):
    ckpt, _ = files
    (tmp_path / "imgs").mkdir()
    _clean_error(runner.invoke(app, ["inspect", str(ckpt), "--inputs", str(tmp_path / "imgs"), flag, value]), flag)


def _paths(tmp_path):
    (tmp_path / "a-file").write_text("x")
    return {
        "under a file": (tmp_path / "a-file" / "o.json", "is not a folder"),
        "/proc": ("/proc/o.json", "/proc"),
        "300-char name": (tmp_path / ("a" * 300 + ".json"), "255-byte limit"),
        "a folder": (tmp_path, "is a folder"),
    }


@pytest.mark.parametrize("case", ["under a file", "/proc", "300-char name", "a folder"])
def test_outputs_checked_before_the_analysis(files, tmp_path, case):
    ckpt, z = files
    target, fragment = _paths(tmp_path)[case]
    stats = tmp_path / "s.stats"
    res = runner.invoke(app, ["inspect", str(ckpt), "--latents", str(z), "--save-stats", str(stats), "--json", str(target)])
    _clean_error(res, "--json", fragment)
    assert not stats.exists()  # refused before the analysis (which would have written the statistics)
    res = runner.invoke(app, ["check", str(ckpt), "--latents", str(z), "--junit", str(target).replace(".json", ".xml")])
    _clean_error(res, "--junit")
    _clean_error(runner.invoke(app, ["ls", str(ckpt), "--json", str(target)]), "--json", fragment)
    if case != "a folder":  # a folder is a valid --out (for a model folder)
        res = runner.invoke(app, ["fix", "revive", str(ckpt), "--latents", str(z),
                                  "--out", str(target).replace(".json", ".safetensors")])
        _clean_error(res, "--out", fragment)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_folder(files, tmp_path):
    ckpt, z = files
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        res = runner.invoke(app, ["fix", "revive", str(ckpt), "--latents", str(z), "--out", str(ro / "o.safetensors")])
        _clean_error(res, "--out", "cannot create files")
    finally:
        ro.chmod(0o700)


def test_save_stats_makes_missing_folders(files, tmp_path):
    ckpt, z = files
    res = runner.invoke(app, ["inspect", str(ckpt), "--latents", str(z), "--save-stats", str(tmp_path / "a" / "b" / "s.stats")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "a" / "b" / "s.stats").is_file()
    (tmp_path / "f").write_text("")
    res = runner.invoke(app, ["inspect", str(ckpt), "--latents", str(z), "--save-stats", str(tmp_path / "f" / "s.stats")])
    _clean_error(res, "--save-stats", "is not a folder")

"""Shards saved to files merge, in any order, to the statistics and the report of one pass;
statistics that do not belong together are refused with a message naming the difference."""

from __future__ import annotations

import itertools
import json

import pytest
import torch
from conftest import assert_json_close, strip_timing
from safetensors.torch import save_file
from typer.testing import CliRunner

from vqdoctor import api
from vqdoctor.cli.app import app
from vqdoctor.cli.common import parse_shard
from vqdoctor.core.gathered import merge_stats
from vqdoctor.errors import InputFileError, UsageError
from vqdoctor.io.stats_file import load_stats, save_stats
from vqdoctor.options import AnalysisOptions, DataOptions
from vqdoctor.report.json_out import report_to_dict

runner = CliRunner()
NAME = "quantizer"


def _text(res) -> str:
    return " ".join(res.output.split())


def _data(setup, shard=None, **kw) -> DataOptions:
    return DataOptions(latents=setup.latents, labels=setup.labels, shard=shard, batch_size=256, **kw)


def _assert_same_stats(a, b, *, exact_floats: bool) -> None:
    assert a.vectors == b.vectors and a.elements == b.elements
    assert torch.equal(a.counts.cpu(), b.counts.cpu())
    assert (a.mode_counts is None) == (b.mode_counts is None)
    if a.mode_counts is not None:
        assert torch.equal(a.mode_counts.cpu(), b.mode_counts.cpu())
    for f in ("sq_err_sum", "x_sum", "x_sq_sum"):
        x, y = getattr(a, f).cpu(), getattr(b, f).cpu()
        if exact_floats:
            assert torch.equal(x, y), f
        else:
            torch.testing.assert_close(x, y, rtol=1e-12, atol=1e-9)


def _save_shards(setup, n: int, analysis=AnalysisOptions()) -> list:
    paths = []
    for i in range(n):
        st = api.gather_statistics(setup.ckpt, data=_data(setup, (i, n)), analysis=analysis)
        paths.append(save_stats(st, setup.folder / f"shard{i}.stats"))
    return paths


@pytest.fixture
def one_pass(setup):
    return api.gather_statistics(setup.ckpt, data=_data(setup))


def test_save_load_round_trip_is_exact(setup, one_pass):
    path = save_stats(one_pass, setup.folder / "all.stats")
    back = load_stats(path)
    _assert_same_stats(back.gathered.stats[NAME], one_pass.gathered.stats[NAME], exact_floats=True)
    g, h = back.gathered, one_pass.gathered
    assert torch.equal(g.sub_latents, h.sub_latents.cpu()) and torch.equal(g.sub_modes, h.sub_modes.cpu())
    assert (g.sub_idx == h.sub_idx).all() and g.mode_names == h.mode_names and g.vectors == h.vectors
    assert back.checkpoint == one_pass.checkpoint and back.codebooks == one_pass.codebooks
    assert back.options == one_pass.options and back.complete


def test_shards_merge_in_any_order_to_one_pass(setup, one_pass):
    paths = _save_shards(setup, 3)
    reports, merged_stats = [], []
    for order in itertools.permutations(paths):
        merged = api.load_statistics(*order)
        assert merged.complete and merged.shards == (0, 1, 2)
        merged_stats.append(merged.gathered.stats[NAME])
        _assert_same_stats(merged.gathered.stats[NAME], one_pass.gathered.stats[NAME], exact_floats=False)
        assert merged.gathered.vectors == one_pass.gathered.vectors
        reports.append(strip_timing(report_to_dict(api.report_from_statistics(merged, checkpoint=setup.ckpt))))
    for st in merged_stats[1:]:  # summed in shard order: bit-identical whatever the order given
        _assert_same_stats(st, merged_stats[0], exact_floats=True)
    assert all(r == reports[0] for r in reports[1:])
    single = strip_timing(report_to_dict(api.report_from_statistics(one_pass, checkpoint=setup.ckpt)))
    assert_json_close(reports[0], single)


def test_merge_command_gives_the_inspect_report(setup):
    base = ["--latents", str(setup.latents), "--labels", str(setup.labels), "--batch-size", "500"]
    full = setup.folder / "full.json"
    res = runner.invoke(app, ["inspect", str(setup.ckpt), *base, "--json", str(full)])
    assert res.exit_code == 0, res.output
    for i in range(2):
        res = runner.invoke(app, ["inspect", str(setup.ckpt), *base, "--shard", f"{i}/2", "--save-stats",
                                  str(setup.folder / f"s{i}.stats")])
        assert res.exit_code == 0, res.output
        assert res.stdout == ""  # statistics only: no report
    out = setup.folder / "merged.json"
    res = runner.invoke(app, ["merge", str(setup.folder / "s1.stats"), str(setup.folder / "s0.stats"),
                              "--checkpoint", str(setup.ckpt), "--json", str(out)])
    assert res.exit_code == 0, res.output
    a, b = json.loads(out.read_text()), json.loads(full.read_text())
    # every number and verdict equal; the fix commands differ only in the data options: inspect knows
    # the user's, merge does not (a statistics file's are never trusted), so it says to add them
    for item in (*b["verdicts"], *b["diagnosis"]):
        if item.get("remedy_argv"):
            assert "--latents" in item["remedy_argv"]
    for ours, theirs in zip((*a["verdicts"], *a["diagnosis"]), (*b["verdicts"], *b["diagnosis"])):
        if theirs.get("remedy_argv") and theirs["remedy_argv"][2] in ("kmeans", "revive"):
            assert ours["remedy_argv"] is None and "add the data options the shards were inspected with" in ours["remedy"]
            assert ours["remedy"].startswith(" ".join(theirs["remedy_argv"][:6]))
            ours["remedy"], ours["remedy_argv"] = theirs["remedy"], theirs["remedy_argv"]
    assert_json_close(strip_timing(a), strip_timing(b))
    assert a["codebooks"][0]["usage"]["vectors"] == b["codebooks"][0]["usage"]["vectors"] == 3000


def test_merge_with_moved_checkpoint_checks_its_fingerprint(setup):
    paths = _save_shards(setup, 2)
    moved = setup.folder / "moved.safetensors"
    setup.ckpt.rename(moved)
    res = runner.invoke(app, ["merge", *map(str, paths), "--checkpoint", str(moved), "--json", "-"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["codebooks"][0]["usage"]["vectors"] == 3000
    res = runner.invoke(app, ["merge", *map(str, paths), "--checkpoint", str(setup.other_ckpt)])
    assert res.exit_code != 0 and "is not the one the statistics were made from" in _text(res)


def test_partial_shards_say_so(setup):
    paths = _save_shards(setup, 3)
    merged = api.load_statistics(paths[0], paths[2])
    assert not merged.complete and merged.describe_shards() == "shards 0, 2 of 3"
    for report in (api.report_from_statistics(merged), api.report_from_statistics(merged, checkpoint=setup.ckpt)):
        assert any("missing: 1" in n for n in report.notes)


def test_refuses_different_checkpoints(setup):
    a = api.gather_statistics(setup.ckpt, data=_data(setup, (0, 2)))
    b = api.gather_statistics(setup.other_ckpt, data=_data(setup, (1, 2)))
    with pytest.raises(UsageError, match="different checkpoints") as exc:
        merge_stats([a, b], names=["a.stats", "b.stats"])
    assert "vq.safetensors" in exc.value.message and "vq_other.safetensors" in exc.value.message


def test_refuses_different_codebooks(setup, tmp_path):
    a = api.gather_statistics(setup.ckpt, data=_data(setup, (0, 2)))
    b = api.gather_statistics(setup.ckpt, data=_data(setup, (1, 2)))
    other = replace_codes(b, "0" * 64)
    with pytest.raises(UsageError, match="codebook 'quantizer' has codes"):
        merge_stats([a, other])
    renamed = replace_name(b, "quantizer.other")
    with pytest.raises(UsageError, match="different codebooks: only part 1 has \\['quantizer'\\]"):
        merge_stats([a, renamed])


def replace_codes(stats, digest):
    from dataclasses import replace

    return replace(stats, codebooks=tuple(replace(c, codes_sha256=digest) for c in stats.codebooks))


def replace_name(stats, name):
    from dataclasses import replace

    return replace(stats, codebooks=tuple(replace(c, name=name) for c in stats.codebooks))


@pytest.mark.parametrize(("option", "value", "flag"), [("seed", 1, "--seed"), ("subsample", 500, "--subsample"),
                                                       ("min_count", 3, "--min-count")])
def test_refuses_different_options(setup, option, value, flag):
    a = api.gather_statistics(setup.ckpt, data=_data(setup, (0, 2)))
    b = api.gather_statistics(setup.ckpt, data=_data(setup, (1, 2)), analysis=AnalysisOptions(**{option: value}))
    with pytest.raises(UsageError, match=f"{flag} is") as exc:
        merge_stats([a, b], names=["s0", "s1"])
    assert "s0" in exc.value.message and "s1" in exc.value.message


def test_refuses_duplicate_and_mismatched_shards(setup):
    a = api.gather_statistics(setup.ckpt, data=_data(setup, (0, 2)))
    with pytest.raises(UsageError, match="shard 0 of 2 is in both"):
        merge_stats([a, a])
    c = api.gather_statistics(setup.ckpt, data=_data(setup, (1, 3)))
    with pytest.raises(UsageError, match="different shardings"):
        merge_stats([a, c])


def test_refuses_different_data(setup, tmp_path):
    import numpy as np

    z = np.load(setup.latents)
    np.save(tmp_path / "z2.npy", z + 1.0)
    a = api.gather_statistics(setup.ckpt, data=_data(setup, (0, 2)))
    b = api.gather_statistics(setup.ckpt, data=DataOptions(latents=tmp_path / "z2.npy", labels=setup.labels, shard=(1, 2)))
    with pytest.raises(UsageError, match="different data"):
        merge_stats([a, b])


def test_merge_cli_refusal_is_one_paragraph(setup):
    a = save_stats(api.gather_statistics(setup.ckpt, data=_data(setup, (0, 2))), setup.folder / "a.stats")
    b = save_stats(api.gather_statistics(setup.other_ckpt, data=_data(setup, (1, 2))), setup.folder / "b.stats")
    res = runner.invoke(app, ["merge", str(a), str(b)])
    assert res.exit_code == 2 and "Traceback" not in _text(res)
    assert "different checkpoints" in _text(res) and "a.stats" in _text(res)


def test_foreign_and_missing_files_are_refused(setup):
    plain = setup.folder / "plain.safetensors"
    save_file({"x": torch.zeros(2)}, str(plain))
    with pytest.raises(InputFileError, match="not vqdoctor statistics"):
        load_stats(plain)
    with pytest.raises(InputFileError, match="does not exist"):
        load_stats(setup.folder / "nope.stats")
    junk = setup.folder / "junk.stats"
    junk.write_bytes(b"\x00" * 5)
    with pytest.raises(InputFileError):
        load_stats(junk)


@pytest.mark.parametrize("text", ["3/2", "a/b", "0/0", "1", "-1/2", "2/2", "1/2/3", ""])
def test_bad_shard_strings(text):
    with pytest.raises(UsageError):
        parse_shard(text)


def test_good_shard_strings():
    assert parse_shard("0/1") == (0, 1) and parse_shard(" 3/4 ") == (3, 4) and parse_shard(None) is None


@pytest.mark.parametrize("text", ["3/2", "a/b", "0/0"])
def test_bad_shard_through_the_cli(setup, text):
    res = runner.invoke(app, ["inspect", str(setup.ckpt), "--latents", str(setup.latents), "--shard", text,
                              "--save-stats", str(setup.folder / "x.stats")])
    assert res.exit_code == 2 and "--shard" in _text(res) and "Traceback" not in _text(res)
    assert not (setup.folder / "x.stats").exists()


def test_file_records_schema_fingerprint_and_codebook_identity(setup, one_pass):
    from safetensors import safe_open

    from vqdoctor.io.stats_file import META_KEY, SCHEMA

    path = save_stats(one_pass, setup.folder / "all.stats")
    with safe_open(str(path), framework="pt") as fh:
        meta = json.loads(fh.metadata()[META_KEY])
        keys = set(fh.keys())
    assert meta["schema"] == SCHEMA == "vqdoctor.stats/1"
    assert meta["checkpoint"]["fingerprint"] == api.load(setup.ckpt).fingerprint
    (cb,) = meta["codebooks"]
    assert (cb["name"], cb["size"], cb["dim"], cb["layout"]) == ("quantizer", 64, 8, "vector-quantize-pytorch")
    assert len(cb["codes_sha256"]) == 64
    assert {"seed", "subsample", "min_count"} <= set(meta["options"])
    assert {"stats.0.counts", "stats.0.mode_counts", "subsample.latents", "subsample.idx"} <= keys

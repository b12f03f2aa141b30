"""Statistics files are validated on read: every tampered field is refused with a message that
names the file and the value (exit 2 through `vqdoctor merge`), never an impossible report."""

from __future__ import annotations

import pytest
import torch
from stats_helpers import make_setup, shard_files, tamper
from typer.testing import CliRunner

from vqdoctor.cli.app import app
from vqdoctor.errors import InputFileError
from vqdoctor.io.stats_file import load_stats

runner = CliRunner()


def _t(key, fn):
    def edit(ts):
        ts[key] = fn(ts[key])
    return edit


def _m(fn):
    return fn


def _set(doc, path, value):
    node = doc
    for p in path[:-1]:
        node = node[p]
    node[path[-1]] = value


CASES = {
    "counts x10": (None, _t("stats.0.counts", lambda c: c * 10), "sum of the counts"),
    "negative count": (None, _t("stats.0.counts", lambda c: torch.cat([c[:1] - c[0] - 1, c[1:]])), "-1"),
    "fractional counts": (None, _t("stats.0.counts", lambda c: c.double() + 0.5), "float64"),
    "NaN error sum": (None, _t("stats.0.sq_err_sum", lambda s: torch.tensor(float("nan"), dtype=torch.float64)), "nan"),
    "Inf x_sum": (None, _t("stats.0.x_sum", lambda s: s + float("inf")), "inf"),
    "negative square sum": (None, _t("stats.0.x_sq_sum", lambda s: -s - 1), "must be >= 0"),
    "shard 5 of 3": (lambda d: (_set(d, ["shards"], [5]), _set(d, ["shard_count"], 3)), None, "5"),
    "shard twice": (lambda d: _set(d, ["shards"], [0, 0]), None, "twice"),
    "fractional shard": (lambda d: _set(d, ["shards"], [0.5]), None, "0.5"),
    "vectors != sum counts": (lambda d: (_set(d, ["stats", 0, "vectors"], 401), _set(d, ["stats", 0, "elements"], 1604)),
                              None, "401"),
    "elements != vectors*dim": (lambda d: _set(d, ["stats", 0, "elements"], 7), None, "7"),
    "bad codes hash": (lambda d: _set(d, ["codebooks", 0, "codes_sha256"], "abc"), None, "'abc'"),
    "bad fingerprint": (lambda d: _set(d, ["checkpoint", "fingerprint"], 5), None, "fingerprint"),
    "other schema": (lambda d: _set(d, ["schema"], "vqdoctor.stats/9"), None, "vqdoctor.stats/9"),
    "unknown option": (lambda d: _set(d, ["options", "allow_globals"], ["os.system"]), None, "allow_globals"),
    "huge memory budget": (lambda d: _set(d, ["options", "memory_budget_mb"], 10**12), None, "1000000000000"),
    "string min_count": (lambda d: _set(d, ["options", "min_count"], "3"), None, "'3'"),
    "bad projection": (lambda d: _set(d, ["options", "projection"], "evil"), None, "'evil'"),
    "size mismatch": (lambda d: _set(d, ["stats", 0, "size"], 31), None, "31"),
    "stats for unknown codebook": (lambda d: _set(d, ["stats", 0, "name"], "other"), None, "'other'"),
    "mode out of range": (None, _t("subsample.modes", lambda m: m + 7), "modes are numbered"),
    "mode counts disagree": (None, _t("stats.0.mode_counts", lambda m: m.flip(0)), "mode_counts"),
    "extra tensor": (None, lambda ts: ts.update(evil=torch.zeros(1)), "'evil'"),
    "sample not drawn": (None, _t("subsample.sample", lambda s: s + 10**6), "subsample.sample"),
    "not an object": (lambda d: d.update(codebooks="x"), None, "'x'"),
}


@pytest.fixture
def stats_file(tmp_path):
    ckpt, z, y = make_setup(tmp_path)
    return shard_files(tmp_path, ckpt, z, y)[0]


@pytest.mark.parametrize("case", list(CASES))
def test_tampered_statistics_are_refused(stats_file, case):
    meta, tensors, shown = CASES[case]
    bad = tamper(stats_file, meta=meta, tensors=tensors, out=stats_file.with_name("bad.stats"))
    with pytest.raises(InputFileError) as exc:
        load_stats(bad)
    assert "bad.stats" in exc.value.message and shown in exc.value.message, exc.value.message
    res = runner.invoke(app, ["merge", str(bad)])
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output and "bad.stats" in " ".join(res.output.split())


def test_untouched_file_is_accepted(stats_file):
    st = load_stats(tamper(stats_file, out=stats_file.with_name("same.stats")))
    assert st.gathered.vectors == 400 and st.shards == (0,)


def test_metadata_that_is_not_json(stats_file):
    from safetensors.torch import save_file

    from vqdoctor.io.stats_file import META_KEY

    bad = stats_file.with_name("bad.stats")
    save_file({"x": torch.zeros(1)}, str(bad), metadata={META_KEY: "{not json"})
    with pytest.raises(InputFileError, match="not JSON"):
        load_stats(bad)

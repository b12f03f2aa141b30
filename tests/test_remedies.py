"""Remedies run when pasted: shell-quoted text == shlex.join(argv), the user's data options, an
output of the input's format, and `vqdoctor fix` accepts the command (never a usage error)."""

from __future__ import annotations

import shlex
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import vqdoctor
import vqdoctor.cli.fix_cmd  # noqa: F401  (registers `fix`)
from tests.test_fixes.conftest import planted
from vqdoctor.cli.app import app
from vqdoctor.options import AnalysisOptions, DataOptions
from vqdoctor.remedies import RemedyContext, data_args, fix_remedy, glob_literal
from vqdoctor.samples import DEFAULT_SAMPLE, sample_path

runner = CliRunner()


def _remedies(report) -> list[tuple[str, list[str] | None]]:
    return [(x.remedy, x.remedy_argv) for x in (*report.verdicts, *report.diagnosis) if x.remedy is not None]


@pytest.mark.parametrize(
    ("path", "fmt", "out"),
    [("m.safetensors", "safetensors", "fixed.safetensors"), ("runs/last.pt", "pickle", "fixed.pt"),
     ("a.ckpt", "pickle", "fixed.ckpt"), ("cb.npz", "npz", "fixed.npz"), ("cb.npy", "npy", "fixed.npy"),
     ("hf/model", "hf-folder", "fixed"), ("fixed.pt", "pickle", "fixed-2.pt")],
)
def test_output_keeps_the_input_format(path: str, fmt: str, out: str) -> None:
    r = fix_remedy("revive", "q", RemedyContext(path, fmt))
    assert r.argv is not None and r.argv[-2:] == ("--out", out)
    assert shlex.split(r.text) == list(r.argv)


def test_data_options_are_repeated_and_quoted() -> None:
    data = DataOptions(latents=Path("my data/z.npy"), labels=Path("y.npy"), channel_axis=1, nesting="ema",
                       allow_globals=("argparse.Namespace",))
    ctx = RemedyContext("runs/my model.pt", "pickle", data_args(data, metric="cosine"))
    r = fix_remedy("kmeans", "quantize[0]*", ctx)
    assert r.text == ("vqdoctor fix kmeans 'runs/my model.pt' --codebook 'quantize[[]0][*]' --latents 'my data/z.npy' "
                      "--channel-axis 1 --labels y.npy --allow-global argparse.Namespace --nesting ema "
                      "--metric cosine --out fixed.pt")
    assert shlex.split(r.text) == list(r.argv)
    import fnmatch

    assert fnmatch.fnmatchcase("quantize[0]*", glob_literal("quantize[0]*"))
    assert not fnmatch.fnmatchcase("quantize0x", glob_literal("quantize[0]*"))


@pytest.mark.parametrize(
    ("fix", "ctx", "why"),
    [("kmeans", RemedyContext("<live Model>", "memory"), "writes checkpoint files"),
     ("simvq", RemedyContext("cb.npy", "npy"), "one-array .npy"),
     ("revive", RemedyContext("m.safetensors", "safetensors", has_data=False), "needs the vectors")],
)
def test_no_command_where_fix_would_refuse(fix: str, ctx: RemedyContext, why: str) -> None:
    r = fix_remedy(fix, "q", ctx)
    assert r.argv is None and why in r.text and "(data options" not in r.text


def test_sample_remedies_parse_and_fix_accepts_them(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    report = vqdoctor.inspect(sample_path(DEFAULT_SAMPLE), analysis=AnalysisOptions(projection="none"))
    remedies = _remedies(report)
    assert remedies and all(argv is not None and shlex.split(text) == argv for text, argv in remedies)
    assert all("(" not in text for text, _ in remedies)  # no prose inside a command
    monkeypatch.chdir(tmp_path)
    for argv in {tuple(f.remedy_argv) for f in report.diagnosis if f.remedy_argv}:
        assert argv[:2] == ("vqdoctor", "fix")
        res = runner.invoke(app, [*argv[1:], "--device", "cpu", "--iters", "2"])
        assert res.exit_code in (0, 1), res.output  # 1: the fix's own "worse, not written"; never 2
        assert res.exit_code == 1 or (tmp_path / argv[-1]).is_file()


def test_pickle_input_with_data_options_gives_a_runnable_pt_remedy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pl = planted()
    folder = tmp_path / "my run"
    folder.mkdir()
    ckpt = folder / "last.pt"
    torch.save({"quantize.embedding.weight": pl.collapsed.contiguous()}, ckpt)
    lat = folder / "z latents.npy"
    np.save(lat, pl.x.numpy())
    report = vqdoctor.inspect(ckpt, data=DataOptions(latents=lat), analysis=AnalysisOptions(projection="none"))
    fails = [v for v in report.verdicts if v.status == "fail" and v.remedy_argv]
    assert fails, [v.status for v in report.verdicts]
    argv = fails[0].remedy_argv
    assert argv[3] == str(ckpt) and ["--latents", str(lat)] == argv[6:8] and argv[-2:] == ["--out", "fixed.pt"]
    assert shlex.split(fails[0].remedy) == argv
    monkeypatch.chdir(tmp_path)
    res = runner.invoke(app, [*argv[1:], "--device", "cpu"])
    assert res.exit_code in (0, 1), res.output


def test_remedy_keeps_the_newer_data_options_so_the_fix_reads_the_same_data():
    """--sample-rate, --model-arg (values reading back as the same types) and --pixel-range (one token:
    '-1,1' would read as a flag) reach the fix command as given."""
    from vqdoctor.cli.common import parse_model_args
    from vqdoctor.options import DataOptions
    from vqdoctor.remedies import data_args

    args = (("width", 64), ("tag", "8"), ("ema", True), ("norm", None), ("lr", 0.5), ("name", "vq gan"))
    data = DataOptions(inputs=Path("wavs"), model="m.py:build", model_args=args, pixel_range=(-1.0, 1.0),
                       sample_rate=16000)
    argv = data_args(data)
    assert argv[argv.index("--sample-rate") + 1] == "16000"
    assert "--pixel-range=-1,1" in argv
    values = [argv[i + 1] for i, flag in enumerate(argv) if flag == "--model-arg"]
    assert parse_model_args(values) == args


def test_merged_reports_show_a_template_never_the_statistics_files_own_paths():
    """merge trusts nothing a statistics file names: its fix commands carry no recorded data options
    and, without --checkpoint, a CHECKPOINT placeholder; a command that would not run has no argv."""
    from vqdoctor.stats_report import stats_remedy

    with_ckpt = stats_remedy("safetensors", "run/vq.safetensors")
    revive = fix_remedy("revive", "quantizer", with_ckpt)
    assert revive.argv is None
    assert revive.text == ("vqdoctor fix revive run/vq.safetensors --codebook quantizer --out fixed.safetensors "
                           "(add the data options the shards were inspected with; a statistics file's own are not trusted)")
    simvq = fix_remedy("simvq", "quantizer", with_ckpt)  # needs no data: runs as shown
    assert simvq.argv == ("vqdoctor", "fix", "simvq", "run/vq.safetensors", "--codebook", "quantizer", "--mode", "paper",
                          "--out", "simvq.safetensors")
    alone = fix_remedy("simvq", "quantizer", stats_remedy("safetensors"))
    assert alone.argv is None and alone.text.startswith("vqdoctor fix simvq CHECKPOINT --codebook quantizer")
    assert "CHECKPOINT is the file the statistics were made from" in alone.text

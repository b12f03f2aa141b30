"""examples/plain_loop.py runs: the VQ-VAE on digits collapses within 40 steps and the Monitor
warns at the check where each verdict turns worse; with --revive it stays healthy; --tensorboard
writes an event file."""

from __future__ import annotations

import importlib.util
import runpy
import sys
import warnings
from pathlib import Path

import pytest

pytest.importorskip("vector_quantize_pytorch")

import vqdoctor  # noqa: E402

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "plain_loop.py"
SHORT = ["--steps", "40", "--check-every", "20", "--every", "2"]


def _example():
    spec = importlib.util.spec_from_file_location("plain_loop_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_collapse_is_warned_and_revive_keeps_the_codebook_healthy():
    example = _example()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        collapsed = example.main(SHORT)
        revived = example.main([*SHORT, "--revive"])
    assert [c.step for c in collapsed] == [20, 40]
    util = [c.report.codebooks[0].usage.utilization for c in collapsed]
    assert util[1] < 0.5 and util[1] < util[0]
    turned = [(t.step, t.check, t.status) for c in collapsed for t in c.collapse_started]
    assert (40, "utilization", "fail") in turned or (20, "utilization", "fail") in turned
    assert all(c.report.codebooks[0].usage.utilization == 1.0 for c in revived)
    assert not any(t.check == "utilization" for c in revived for t in c.collapse_started)
    ours = [str(w.message) for w in caught if issubclass(w.category, vqdoctor.CollapseWarning)]
    assert len(ours) == len(turned) + sum(len(c.collapse_started) for c in revived)


def test_it_runs_as_a_script_and_writes_tensorboard(tmp_path, monkeypatch, capsys):
    pytest.importorskip("tensorboard")
    monkeypatch.setattr(sys, "argv", [str(EXAMPLE), "--steps", "20", "--check-every", "10", "--every", "2",
                                      "--tensorboard", str(tmp_path / "tb")])
    with warnings.catch_warnings():
        runpy.run_path(str(EXAMPLE), run_name="__main__")
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[1] for line in lines] == ["10", "20"] and "utilization" in lines[0]
    assert list((tmp_path / "tb").glob("events.out.tfevents.*"))

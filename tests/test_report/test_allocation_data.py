"""The allocation heatmap's data from a real run: the Report keeps each code's vectors per mode,
equal to the counts and to tokens collapse's allocation, and drops them above the size cap."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from vqdoctor import api
from vqdoctor.options import AnalysisOptions, DataOptions
from vqdoctor.report import plots


@pytest.fixture
def run(tmp_path):
    """8 codes; three labelled modes: mode 0 on codes 0-3, mode 1 on codes 4-5, mode 2 on code 6; code 7 far away (dead)."""
    codes = torch.tensor([[0.0, 0], [1, 0], [0, 1], [1, 1], [10, 0], [11, 0], [0, 10], [100, 100]])
    path = tmp_path / "m.safetensors"
    save_file({"quantizer.embedding.weight": codes.contiguous()}, str(path))
    rng = np.random.default_rng(0)
    code_of = np.concatenate([rng.integers(0, 4, 600), rng.integers(4, 6, 300), np.full(100, 6)])
    mode = np.repeat([0, 1, 2], [600, 300, 100])
    z = (codes.numpy()[code_of] + 0.01 * rng.standard_normal((1000, 2))).astype(np.float32)
    np.save(tmp_path / "z.npy", z)
    np.save(tmp_path / "y.npy", mode)
    return path, DataOptions(latents=tmp_path / "z.npy", labels=tmp_path / "y.npy"), code_of, mode


def test_report_keeps_the_counts_behind_the_heatmap(run):
    path, data, code_of, mode = run
    report = api.inspect(path, data=data, analysis=AnalysisOptions(projection="pca"))
    cb = report.codebooks[0]
    expected = np.zeros((8, 3), dtype=np.int64)
    np.add.at(expected, (code_of, mode), 1)
    assert cb.mode_counts == expected.tolist()
    assert [sum(row) for row in cb.mode_counts] == cb.counts
    share, codes, owner = plots.allocation_matrix(cb)
    assert share.shape == (3, cb.tokens_collapse.live_codes) == (3, 7)
    assert [int((owner == m).sum()) for m in range(3)] == [m.codes for m in cb.tokens_collapse.per_mode] == [4, 2, 1]
    assert sorted(codes.tolist()) == list(range(7))  # code 7 is dead: not a column
    # the projection names its codebook and codes, so markers take the code's own usage
    assert report.projection.codebook == cb.name and report.projection.code_ids == list(range(8))
    assert plots.projection_code_counts(report) == cb.counts


def test_no_heatmap_data_above_the_cap(run, monkeypatch):
    import vqdoctor.diagnose

    path, data, _, _ = run
    monkeypatch.setattr(vqdoctor.diagnose, "MODE_COUNTS_MAX_CELLS", 8 * 3 - 1)
    report = api.inspect(path, data=data, analysis=AnalysisOptions(projection="none"))
    cb = report.codebooks[0]
    assert cb.mode_counts is None and cb.tokens_collapse is not None
    assert not any(stem.endswith("-heatmap") for stem, _, _ in plots.iter_plots(report))

"""2-D projections: shapes, determinism, codes overlaid, the pca map, bad methods."""

from __future__ import annotations

import ast

import numpy as np
import pytest
import torch

from vqdoctor.core.projection import PROJECTION_METHODS, Projection, project_2d
from vqdoctor.errors import DataError, UsageError


def clusters(n: int = 300, dim: int = 8, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    centres = 6 * torch.randn(3, dim, generator=g)
    y = torch.arange(n) % 3
    x = centres[y] + torch.randn(n, dim, generator=g)
    codes = centres[torch.arange(20) % 3] + 0.5 * torch.randn(20, dim, generator=g)
    return x, y, codes


def test_pca_is_the_points_principal_plane_and_codes_share_the_map():
    x = torch.zeros(4, 3)
    x[:, 0] = torch.tensor([-3.0, -1.0, 1.0, 3.0])  # main axis
    x[:, 1] = torch.tensor([0.5, -0.5, -0.5, 0.5])  # second axis
    codes = torch.tensor([[2.0, 0.0, 7.0], [0.0, 1.0, 0.0]])
    p = project_2d(x, codes=codes, method="pca")
    assert isinstance(p, Projection) and p.method == "pca"
    assert p.points_xy.shape == (4, 2) and p.points_xy.dtype == np.float32
    np.testing.assert_allclose(np.abs(p.points_xy[:, 0]), [3, 1, 1, 3], atol=1e-5)
    np.testing.assert_allclose(np.abs(p.points_xy[:, 1]), [0.5, 0.5, 0.5, 0.5], atol=1e-5)
    # the points' mean is (0, 0, 0); the codes' third coordinate is off the plane and drops out
    np.testing.assert_allclose(np.abs(p.codes_xy), [[2, 0], [0, 1]], atol=1e-5)
    assert p.code_indices.tolist() == [0, 1] and p.seconds >= 0


def test_pca_one_dimensional_points():
    p = project_2d(torch.arange(5.0).unsqueeze(1), method="pca")
    assert p.points_xy.shape == (5, 2) and np.all(p.points_xy[:, 1] == 0)
    assert p.codes_xy is None and p.code_indices is None


def test_none_returns_none_and_unknown_method_lists_choices():
    x, _, _ = clusters()
    assert project_2d(x, method="none") is None
    with pytest.raises(UsageError) as err:
        project_2d(x, method="isomap")
    assert "isomap" in str(err.value)
    for name in PROJECTION_METHODS:
        assert name in str(err.value)


def test_codes_beyond_max_codes_are_subsampled():
    x, _, _ = clusters(dim=4)
    codes = torch.randn(100, 4)
    p = project_2d(x, codes=codes, method="pca", max_codes=30, seed=1)
    assert p.codes_xy.shape == (30, 2) and p.code_indices.shape == (30,)
    assert np.all(np.diff(p.code_indices) > 0) and p.code_indices.max() < 100
    q = project_2d(x, codes=codes, method="pca", max_codes=30, seed=1)
    assert np.array_equal(p.code_indices, q.code_indices)


def _cluster_separation(xy: np.ndarray, y: np.ndarray) -> float:
    """Smallest distance between cluster means over the largest within-cluster spread."""
    means = np.stack([xy[y == c].mean(0) for c in range(3)])
    spread = max(xy[y == c].std(0).max() for c in range(3))
    gaps = [np.linalg.norm(means[a] - means[b]) for a in range(3) for b in range(a + 1, 3)]
    return min(gaps) / spread


def test_tsne_joint_embedding_keeps_clusters_and_is_deterministic():
    x, y, codes = clusters(n=300, dim=64)
    p = project_2d(x, codes=codes, method="tsne", seed=0)
    assert p.points_xy.shape == (300, 2) and p.codes_xy.shape == (20, 2)
    assert _cluster_separation(p.points_xy, y.numpy()) > 2
    q = project_2d(x, codes=codes, method="tsne", seed=0)
    np.testing.assert_allclose(p.points_xy, q.points_xy, rtol=1e-4, atol=1e-4)
    # each code lands closest to points of its own cluster
    near = np.linalg.norm(p.codes_xy[:, None] - p.points_xy[None], axis=2).argmin(1)
    assert np.array_equal(y.numpy()[near], (torch.arange(20) % 3).numpy())


def test_umap_joint_embedding():
    pytest.importorskip("umap")
    x, y, codes = clusters(n=300, dim=8)
    p = project_2d(x, codes=codes, method="umap", seed=0)
    assert p.method == "umap" and p.points_xy.shape == (300, 2) and p.codes_xy.shape == (20, 2)
    assert np.isfinite(p.points_xy).all()
    assert _cluster_separation(p.points_xy, y.numpy()) > 2


def test_bad_points_and_codes():
    with pytest.raises(DataError):
        project_2d(torch.randn(1, 3))
    with pytest.raises(DataError):
        project_2d(torch.randn(10, 3), codes=torch.randn(5, 4))
    x = torch.randn(10, 3)
    x[0, 0] = float("nan")
    with pytest.raises(DataError):
        project_2d(x)


def test_core_modules_import_no_ui_or_io():
    """core imports nothing from io / report / cli and never rich, typer or matplotlib."""
    import vqdoctor.core.collapse as collapse
    import vqdoctor.core.modes as modes
    import vqdoctor.core.projection as projection
    import vqdoctor.core.subsample as subsample

    banned = ("rich", "typer", "matplotlib", "vqdoctor.io", "vqdoctor.report", "vqdoctor.cli")
    for module in (collapse, modes, projection, subsample):
        tree = ast.parse(open(module.__file__, encoding="utf-8").read())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            for name in names:
                assert not name.startswith(banned), f"{module.__name__} imports {name}"

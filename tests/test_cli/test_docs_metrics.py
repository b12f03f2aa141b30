"""docs/metrics.md defines every number of the report as the code computes it, cites the two
papers, and the README and docs point at the repository's own documents (not a DESIGN.md that is
not shipped)."""

from __future__ import annotations

import dataclasses
import inspect
import re
from pathlib import Path

import pytest

from vqdoctor.core import collapse, ema, geometry, results
from vqdoctor.core.expect import vectors_needed

ROOT = Path(__file__).resolve().parents[2]
METRICS = (ROOT / "docs" / "metrics.md").read_text(encoding="utf-8")
FLAT = " ".join(METRICS.split())
PAPERS = {"arXiv:2411.16550": "Representation Collapsing Problems in Vector Quantization",
          "arXiv:2411.02038": "Addressing Representation Collapse in Vector Quantized Models with One Linear Layer"}


@pytest.mark.parametrize("cls", [results.UsageMetrics, results.EmaMetrics, results.GeometryMetrics, results.WMetrics,
                                 results.TokensCollapse, results.ModeShare, results.EmbeddingsCollapse,
                                 results.MergedPair], ids=lambda c: c.__name__)
def test_every_report_field_is_defined(cls):
    named = set(re.findall(r"`([a-z0-9_]+)`", METRICS))
    missing = [f.name for f in dataclasses.fields(cls) if f.name not in named]
    assert missing == []


def default(fn, name):
    return inspect.signature(fn).parameters[name].default


def test_the_constants_in_the_text_are_the_code_s():
    assert f"u_k < {default(ema.ema_metrics, 'relative_factor'):g} · U / K" in FLAT
    assert f"< {default(geometry.geometry_metrics, 'duplicate_tolerance'):g} × the median nearest-neighbour" in FLAT
    assert f"{default(geometry.geometry_metrics, 'max_codes_for_pairs'):,} codes" in FLAT
    assert f"the {round(geometry.SUPPORT_QUANTILE * 100)}th percentile" in FLAT
    assert f"`ratio` < {default(collapse.tokens_collapse, 'starved_ratio'):g}" in FLAT
    assert f"max({collapse.MIN_MODE_VECTORS}, N95(f_m))" in FLAT
    assert f"k = {default(collapse.embeddings_collapse, 'k')} nearest" in FLAT
    assert f"at most {collapse.DEFAULT_SUBSAMPLE:,} items" in FLAT
    assert (f"latent overlap ≥ {collapse.MERGE_OVERLAP:g} **and** input overlap < {collapse.MERGE_OVERLAP:g} **and** "
            f"latent overlap ≥ {collapse.MERGE_FACTOR:g} × input overlap") in FLAT
    assert f"fewer than {collapse.MIN_MODE_POINTS} subsampled points" in FLAT
    k = 4096
    assert f"{vectors_needed(k, 0.95) / k:.1f} K for 95 %" in FLAT and f"{vectors_needed(k, 0.99) / k:.1f} K for 99 %" in FLAT


def test_the_two_papers_are_cited_with_title_and_arxiv_id():
    readme = " ".join((ROOT / "README.md").read_text(encoding="utf-8").split())
    for arxiv, title in PAPERS.items():
        assert arxiv in FLAT and title in FLAT
        assert arxiv in readme and title in readme
    assert "(docs/metrics.md)" in readme


def test_no_document_cites_a_design_md_that_is_not_shipped():
    assert not (ROOT / "DESIGN.md").exists()
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        assert "DESIGN.md" not in doc.read_text(encoding="utf-8"), doc.name

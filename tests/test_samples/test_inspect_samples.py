"""vqdoctor's own analysis tells each shipped sample's story (docs/reproduction.md)."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest

import vqdoctor
from vqdoctor.options import AnalysisOptions
from vqdoctor.report.json_out import report_to_dict
from vqdoctor.samples import DEFAULT_SAMPLE, sample_path

GOLDEN = Path(__file__).parent / "golden" / f"{DEFAULT_SAMPLE}.json"
FAST = AnalysisOptions(projection="none")


@pytest.fixture(scope="module")
def reports():
    cache = {}

    def get(name: str):
        if name not in cache:
            cache[name] = vqdoctor.inspect(sample_path(name), analysis=FAST)
        return cache[name]

    return get


def _findings(report) -> dict[str, str]:
    return {f.collapse: f.status for f in report.diagnosis}


def test_vanilla_sample_is_diagnosed_with_tokens_collapse(reports):
    r = reports("vanilla_tokens_collapse")
    assert r.data.mode_source == "labels" and r.data.vectors == 10_000
    tc = r.codebooks[0].tokens_collapse
    assert tc.allocation_tv > 0.5
    assert len(tc.starved_modes) >= 5
    assert _findings(r)["tokens collapse"] == "fail"
    assert "embeddings collapse" not in _findings(r)
    assert r.embeddings_collapse.merged_pairs == []


def test_pretrained_sample_is_healthy(reports):
    r = reports("pretrained_healthy")
    assert [(f.collapse, f.status) for f in r.diagnosis] == [("healthy", "ok")]
    assert r.codebooks[0].usage.utilization == 1.0
    assert r.codebooks[0].tokens_collapse.allocation_tv < 0.15


def test_small_encoder_sample_is_diagnosed_with_embeddings_collapse(reports):
    r = reports("small_encoder_embeddings_collapse")
    ec = r.embeddings_collapse
    assert ec.input_knn_purity > 0.99 > ec.latent_knn_purity
    assert [(p.a, p.b) for p in ec.merged_pairs] == [(0, 2)]
    assert _findings(r)["embeddings collapse"] == "fail"
    assert r.diagnosis[0].collapse == "embeddings collapse"  # listed first: no codebook repair helps


def test_simvq_uses_far_more_of_a_large_codebook_than_vanilla(reports):
    vanilla = reports("large_codebook_vanilla").codebooks[0]
    simvq = reports("large_codebook_simvq").codebooks[0]
    assert vanilla.size == simvq.size == 4096
    assert simvq.usage.utilization > 5 * vanilla.usage.utilization
    assert simvq.kind == "simvq" and simvq.w is not None and simvq.w.rank == 2


def test_residual_sample_is_analysed_level_by_level(reports):
    r = reports("residual_vq")
    assert [cb.level for cb in r.codebooks] == [0, 1, 2, 3]
    mse = [cb.usage.quantization_mse for cb in r.codebooks]
    assert all(a > b for a, b in zip(mse, mse[1:]))  # each level quantizes what is left


def _rounded(value):
    if isinstance(value, float):
        return 0.0 if value == 0 else round(value, 4 - int(math.floor(math.log10(abs(value)))))
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    return value


def _portable_remedy(item: dict) -> dict:
    ckpt = str(sample_path(DEFAULT_SAMPLE))
    argv = item["remedy_argv"] and ["CKPT" if a == ckpt else a for a in item["remedy_argv"]]
    return {**item, "remedy": item["remedy"] and item["remedy"].replace(ckpt, "CKPT"), "remedy_argv": argv}


def _portable(doc: dict) -> dict:
    doc = dict(doc)
    doc["checkpoint"] = {**doc["checkpoint"], "path": Path(doc["checkpoint"]["path"]).name}
    doc["data"] = {**doc["data"], "source": doc["data"]["source"].replace(str(sample_path(DEFAULT_SAMPLE).parent), "SAMPLES")}
    doc["notes"] = [n.replace(str(sample_path(DEFAULT_SAMPLE).parent), "SAMPLES") for n in doc["notes"]]
    doc["verdicts"] = [_portable_remedy(v) for v in doc["verdicts"]]
    doc["diagnosis"] = [_portable_remedy(f) for f in doc["diagnosis"]]
    doc.pop("vqdoctor_version")
    return _rounded(doc)


def test_default_sample_report_matches_golden_json(reports):
    """The whole pipeline pinned: regenerate with UPDATE_GOLDEN=1 after a deliberate change."""
    doc = _portable(report_to_dict(reports(DEFAULT_SAMPLE), include_counts=True))
    if os.environ.get("UPDATE_GOLDEN"):
        GOLDEN.write_text(json.dumps(doc, indent=1, sort_keys=False) + "\n")
    assert doc == json.loads(GOLDEN.read_text())


def test_modes_inferred_from_the_inputs_match_the_labels(reports, tmp_path):
    """Without labels, the modes clustered in input space give the same tokens-collapse picture."""
    import numpy as np

    from vqdoctor.options import DataOptions

    data = np.load(sample_path(DEFAULT_SAMPLE).parent / "blobs8d.npz")
    np.savez(tmp_path / "x.npz", x=data["x"])
    r = vqdoctor.inspect(sample_path(DEFAULT_SAMPLE), data=DataOptions(inputs=tmp_path / "x.npz"), analysis=FAST)
    assert r.data.mode_source == "inferred: gmm-bic on inputs"
    tc, want = r.codebooks[0].tokens_collapse, reports(DEFAULT_SAMPLE).codebooks[0].tokens_collapse
    assert tc.modes == 10
    assert abs(tc.allocation_tv - want.allocation_tv) < 0.02
    assert len(tc.starved_modes) == len(want.starved_modes)

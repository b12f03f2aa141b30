"""find_codebooks / select / errors, and a contract every registered detector must meet."""

from __future__ import annotations

import pytest
import torch
from cb_helpers import discover, randn

from vqdoctor.codebooks import DETECTORS, find_codebooks, no_codebook_error, select
from vqdoctor.errors import CodebookNotFoundError
from vqdoctor.io.store import TensorStore

LLM = {
    "model.embed_tokens.weight": randn(32000, 64),
    "lm_head.weight": randn(32000, 64),
    "model.layers.0.self_attn.q_proj.weight": randn(64, 64),
    "model.layers.0.mlp.up_proj.weight": randn(256, 64),
    "model.norm.weight": torch.ones(64),
}
VISION = {
    "encoder.conv_in.weight": randn(128, 3, 3, 3),
    "encoder.down.0.block.0.conv1.weight": randn(128, 128, 3, 3),
    "decoder.conv_out.weight": randn(3, 128, 3, 3),
    "classifier.weight": randn(1000, 768),
    "pos_embed": randn(1, 197, 768),
    "embeddings.position_embeddings.weight": randn(512, 768),
    "attn.mask": torch.ones(16, dtype=torch.bool),
}


@pytest.mark.parametrize("sd", [LLM, VISION, {}], ids=["llm", "vision", "empty"])
def test_not_fooled(sd):
    found = discover(sd)
    assert not found.stacks and not found.codebook_free


@pytest.mark.parametrize("det", DETECTORS, ids=lambda d: d.name)
def test_detector_contract(det):
    """Every detector: a name, silence on non-VQ weights, and no key claimed twice."""
    assert det.name
    for sd in (LLM, VISION, {}):
        out = det(TensorStore.from_dict(sd), set(), config={})
        assert not out.stacks and not out.codebook_free and not out.claimed
    sd = {"quantize.embedding.weight": randn(64, 8), "quantize.embedding_proj.weight": randn(8, 8)}
    state = TensorStore.from_dict(sd)
    assert not det(state, set(sd), config={}).claimed  # everything already claimed: nothing left


def test_find_codebooks_claims_once_and_orders_stacks_numerically():
    sd = {}
    for s in (10, 2):
        for i in (0, 1):
            sd[f"blocks.{s}.vq.layers.{i}._codebook.embed"] = randn(1, 16, 4)
            sd[f"blocks.{s}.vq.layers.{i}._codebook.initted"] = torch.tensor(True)
    found = discover(sd)
    assert [s.name for s in found.stacks] == ["blocks.2.vq", "blocks.10.vq"]
    assert len(found.codebooks) == 4


def test_select_by_name_or_key_and_errors():
    sd = {f"q.layers.{i}._codebook.embed": randn(1, 16, 4, seed=i) for i in range(3)}
    found = discover(sd)
    assert [cb.name for cb in select(found, "q.layers.1").codebooks] == ["q.layers.1"]
    assert [cb.level for cb in select(found, "*layers.[12]._codebook.embed").codebooks] == [1, 2]
    assert select(found, None) is found
    with pytest.raises(CodebookNotFoundError, match="q.layers.0"):
        select(found, "nothing*")


def test_select_names_a_tensor_the_search_missed():
    sd = {"my_table": randn(100, 8), **LLM}
    state = TensorStore.from_dict(sd)
    found = find_codebooks(state)
    assert not found.stacks
    (cb,) = select(found, "my_table", state=state).codebooks
    assert cb.layout == "explicit" and cb.size == 100


def test_no_codebook_error_lists_largest_2d_tensors():
    err = no_codebook_error(TensorStore.from_dict(LLM))
    assert "model.embed_tokens.weight (32000, 64)" in err.message and "--codebook" in err.hint


def test_lfq_table_not_taken_by_generic_detector():
    d = 6
    found = discover({"quantizer.mask": 2 ** torch.arange(d - 1, -1, -1), "quantizer.codebook": torch.ones(64, d)})
    assert not found.stacks and found.codebook_free
    assert "lfq" in no_codebook_error(TensorStore.from_dict({"quantizer.mask": torch.ones(1)}), found).message

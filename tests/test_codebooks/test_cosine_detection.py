"""Telling cosine codebooks from euclidean ones, with the evidence each layout has (DESIGN.md
"measure in the space the quantizer uses"): vector-quantize-pytorch's real classes trained a few
EMA steps, bf16 storage, config switches, and BEiT-v2's NormEMAVectorQuantizer state."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from cb_helpers import discover, randn

vqp = pytest.importorskip("vector_quantize_pytorch")
warnings.filterwarnings("ignore", module="vector_quantize_pytorch")


def _trained(*, cosine: bool, steps: int = 5, k: int = 64, d: int = 8) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    vq = vqp.VectorQuantize(dim=d, codebook_size=k, use_cosine_sim=cosine, decay=0.8, threshold_ema_dead_code=0)
    x = torch.randn(1, 4000, d) * 3 + 1
    vq.train()
    for _ in range(steps):
        vq(x)
    return {key: v.detach().clone() for key, v in vq.state_dict().items()}


def test_trained_cosine_codebook_is_told_by_its_ema_rule():
    (cb,) = discover(_trained(cosine=True)).codebooks
    assert (cb.metric, cb.metric_source) == ("cosine", "detected")
    assert cb.metric_evidence.startswith("EMA buffers: embed = l2norm(embed_avg / cluster_size) for ")
    assert cb.metric_evidence.endswith("; all 64 codes unit-norm ±1e-3")


def test_trained_euclidean_codebook_follows_the_plain_ema_rule():
    (cb,) = discover(_trained(cosine=False)).codebooks
    assert (cb.metric, cb.metric_source) == ("euclidean", "detected")
    assert cb.metric_evidence.startswith("EMA buffers: embed = embed_avg / cluster_size for ")


def test_bf16_cosine_codebook_is_still_cosine():
    # bf16 rounding moves a unit row's norm by up to 2^-8: a 1e-3 tolerance called these euclidean
    fresh = {k: v.to(torch.bfloat16) if v.is_floating_point() else v
             for k, v in vqp.VectorQuantize(dim=8, codebook_size=64, use_cosine_sim=True).state_dict().items()}
    norms = fresh["_codebook.embed"].float().norm(dim=-1)
    assert float((norms - 1).abs().max()) > 1e-3  # the case the old rule missed
    (cb,) = discover(fresh).codebooks
    assert (cb.metric, cb.metric_evidence) == ("cosine", "all 64 codes unit-norm ±7.8e-3")
    trained = {k: v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in _trained(cosine=True).items()}
    (cb,) = discover(trained).codebooks
    assert cb.metric == "cosine" and "EMA buffers" in cb.metric_evidence


def test_config_switch_wins_over_the_codes():
    state = _trained(cosine=True)
    (cb,) = discover(state, config={"quantizer": {"use_cosine_sim": False}}).codebooks
    assert (cb.metric, cb.metric_source) == ("euclidean", "config")
    assert cb.metric_evidence == "use_cosine_sim=False in the checkpoint's config; all 64 codes unit-norm ±1e-3"


def test_a_euclidean_table_that_happens_to_be_unit_norm_is_a_warning():
    codes = F.normalize(randn(256, 16), dim=1)
    (cb,) = discover({"model.quantize.embedding.weight": codes}).codebooks
    assert (cb.layout, cb.metric, cb.metric_source) == ("embedding", "cosine", "detected")
    assert cb.metric_evidence == "all 256 codes unit-norm ±1e-3"
    assert "--metric euclidean" in cb.note and "same assignments" in cb.note
    raw = randn(256, 16)
    (cb,) = discover({"model.quantize.embedding.weight": raw}).codebooks
    assert cb.metric == "euclidean" and cb.metric_evidence.startswith("256 of 256 codes not unit-norm ±1e-3 (norms ")
    assert cb.note is None


def test_one_row_off_unit_norm_is_euclidean():
    codes = F.normalize(randn(64, 8), dim=1)
    codes[5] *= 1.01
    (cb,) = discover({"quantize.embedding.weight": codes}).codebooks
    assert cb.metric == "euclidean" and cb.metric_evidence.startswith("1 of 64 codes not unit-norm")


def test_encodec_layout_is_euclidean_and_says_so_on_unit_codes():
    # facebookresearch/encodec quantization/core_vq.py EuclideanCodebook buffers
    p = "quantizer.vq.layers.0._codebook"
    codes = F.normalize(randn(32, 8), dim=1)
    sd = {f"{p}.inited": torch.tensor([1.0]), f"{p}.cluster_size": torch.ones(32), f"{p}.embed": codes,
          f"{p}.embed_avg": codes.clone()}
    (cb,) = discover(sd).codebooks
    assert (cb.metric, cb.metric_source) == ("euclidean", "layout")
    assert "--metric cosine" in cb.note


def _norm_ema_state(k: int = 512, d: int = 32, *, prefix: str = "quantize.", usage: bool = True) -> dict[str, torch.Tensor]:
    """microsoft/unilm beit2/norm_ema_quantizer.py: EmbeddingEMA(weight, cluster_size, embed_avg as
    frozen Parameters; initted buffer (1,)) inside NormEMAVectorQuantizer (cluster_size buffer (K,))."""
    weight = F.normalize(randn(k, d), dim=1)  # EmbeddingEMA: l2norm(randn) when not kmeans_init
    sd = {f"{prefix}embedding.weight": weight, f"{prefix}embedding.cluster_size": torch.zeros(k),
          f"{prefix}embedding.embed_avg": weight.clone(), f"{prefix}embedding.initted": torch.Tensor([True])}
    if usage:
        sd[f"{prefix}cluster_size"] = torch.rand(k, generator=torch.Generator().manual_seed(1)) * 10
    # VQKD around it: encode_task_layer (Linear, Tanh, Linear) and a decoder, which are not codebooks
    sd |= {"encode_task_layer.0.weight": randn(768, 768), "encode_task_layer.2.weight": randn(d, 768),
           "decode_task_layer.0.weight": randn(768, d)}
    return sd


def test_beitv2_norm_ema_quantizer_is_cosine_by_layout():
    sd = _norm_ema_state()
    (st,) = discover(sd).stacks
    (cb,) = st.codebooks
    assert (cb.layout, cb.kind, cb.size, cb.dim, cb.metric, cb.metric_source) == (
        "beitv2-normema", "ema", 512, 32, "cosine", "layout")
    assert cb.metric_evidence.endswith("; all 512 codes unit-norm ±1e-3") and cb.unit_rows is True
    assert cb.keys == {"codes": "quantize.embedding.weight", "cluster_size": "quantize.cluster_size",
                       "initted": "quantize.embedding.initted"}
    assert torch.equal(cb.ema.cluster_size, sd["quantize.cluster_size"]) and cb.ema.embed_sum is None
    assert cb.ema.initted is True


def test_beitv2_without_usage_buffer_and_uninitialised():
    sd = _norm_ema_state(usage=False, prefix="tokenizer.quantize.")
    sd["tokenizer.quantize.embedding.weight"] = torch.zeros(512, 32)
    sd["tokenizer.quantize.embedding.initted"] = torch.Tensor([False])
    (cb,) = discover(sd).codebooks
    assert cb.layout == "beitv2-normema" and cb.ema.cluster_size is None and cb.ema.initted is False
    assert "not initialised" in cb.note and "statistic_code_usage" in cb.note


def test_taming_ema_without_initted_is_still_taming():
    # CompVis taming EMAVectorQuantizer: embedding.{weight, cluster_size, embed_avg}, no initted
    sd = {k: v for k, v in _norm_ema_state().items() if not k.endswith("initted")}
    (cb,) = discover(sd).codebooks
    assert cb.layout == "taming-ema"

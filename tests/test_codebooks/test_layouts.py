"""Layouts of libraries that are not installed here: exact key names and shapes from their source
(the file read is named in each test), fed to find_codebooks."""

from __future__ import annotations

import pytest
import torch
from cb_helpers import discover, randn
from torch.nn.utils import parametrizations, weight_norm


def _ema_levels(prefix: str, table: str, n: int, k: int, d: int, flag: str) -> dict[str, torch.Tensor]:
    out = {}
    for i in range(n):
        p = f"{prefix}.layers.{i}.{table}"
        out |= {f"{p}.{flag}": torch.tensor([1.0]), f"{p}.cluster_size": torch.rand(k),
                f"{p}.embed": randn(k, d, seed=i), f"{p}.embed_avg": randn(k, d, seed=i)}
    return out


def test_encodec_audiocraft():
    # facebookresearch/encodec encodec/quantization/core_vq.py EuclideanCodebook + ResidualVectorQuantization
    sd = {"encoder.model.0.conv.conv.weight": randn(32, 1, 7)} | _ema_levels("quantizer.vq", "_codebook", 10, 1024, 128, "inited")
    (st,) = discover(sd).stacks
    assert st.name == "quantizer.vq" and st.residual and st.layout == "encodec"
    assert [cb.level for cb in st.codebooks] == list(range(10))
    cb = st.codebooks[3]
    assert (cb.name, cb.kind, cb.size, cb.dim) == ("quantizer.vq.layers.3", "ema", 1024, 128)
    assert cb.ema.initted is True and cb.keys["cluster_size"] == "quantizer.vq.layers.3._codebook.cluster_size"


def test_hf_encodec_zero_codebooks_at_init():
    # transformers models/encodec/modeling_encodec.py EncodecEuclideanCodebook (zeros after from_config)
    sd = {}
    for i in range(2):
        p = f"quantizer.layers.{i}.codebook"
        sd |= {f"{p}.inited": torch.tensor([1.0]), f"{p}.cluster_size": torch.zeros(1024),
               f"{p}.embed": torch.zeros(1024, 128), f"{p}.embed_avg": torch.zeros(1024, 128)}
    (st,) = discover(sd).stacks
    assert st.layout == "hf-encodec" and st.name == "quantizer" and len(st.codebooks) == 2
    assert all("zero" in cb.note and cb.metric == "euclidean" for cb in st.codebooks)


def _moshi_split(prefix: str) -> dict[str, torch.Tensor]:
    # kyutai-labs/moshi moshi/quantization/vq.py SplitResidualVectorQuantizer, core_vq.py EuclideanCodebook
    sd = {}
    for name, n in (("rvq_first", 1), ("rvq_rest", 3)):
        q = f"{prefix}quantizer.{name}"
        sd[f"{q}.input_proj.weight"] = randn(256, 512, 1)
        sd[f"{q}.output_proj.weight"] = randn(512, 256, 1)
        for i in range(n):
            p = f"{q}.vq.layers.{i}._codebook"
            sd |= {f"{p}._initialized": torch.tensor([1.0]), f"{p}.cluster_usage": torch.rand(2048) * 4,
                   f"{p}.embedding_sum": randn(2048, 256, seed=i)}
    return sd


def test_moshi_nested_two_stacks_effective_codebook():
    sd = _moshi_split("lm.mimi.") | {"lm.text_emb.weight": randn(32000, 64)}
    stacks = discover(sd).stacks
    assert [s.name for s in stacks] == ["lm.mimi.quantizer.rvq_first", "lm.mimi.quantizer.rvq_rest"]
    assert [len(s.codebooks) for s in stacks] == [1, 3]
    sem = stacks[0]
    assert sem.project_in.weight.shape == (256, 512) and sem.project_out.weight.shape == (512, 256)
    cb = stacks[1].codebooks[2]
    usage = sd["lm.mimi.quantizer.rvq_rest.vq.layers.2._codebook.cluster_usage"]
    expect = sd["lm.mimi.quantizer.rvq_rest.vq.layers.2._codebook.embedding_sum"] / usage.clamp(min=1e-5)[:, None]
    assert cb.kind == "moshi" and torch.allclose(cb.codes, expect) and cb.ema.cluster_size is not None


def test_hf_mimi_semantic_first():
    # transformers models/mimi/modeling_mimi.py MimiSplitResidualVectorQuantizer / MimiEuclideanCodebook
    sd = {}
    for name, n in (("semantic_residual_vector_quantizer", 1), ("acoustic_residual_vector_quantizer", 2)):
        q = f"quantizer.{name}"
        sd |= {f"{q}.input_proj.weight": randn(256, 512, 1), f"{q}.output_proj.weight": randn(512, 256, 1)}
        for i in range(n):
            p = f"{q}.layers.{i}.codebook"
            sd |= {f"{p}.initialized": torch.tensor([1.0]), f"{p}.cluster_usage": torch.ones(2048),
                   f"{p}.embed_sum": randn(2048, 256, seed=i)}
    stacks = discover(sd).stacks
    assert [s.name for s in stacks] == ["quantizer.semantic_residual_vector_quantizer",
                                        "quantizer.acoustic_residual_vector_quantizer"]
    assert stacks[0].layout == "hf-mimi" and stacks[1].project_in is not None


def _dac_state(parametrize: bool) -> tuple[dict[str, torch.Tensor], list[torch.nn.Conv1d]]:
    # descriptinc/descript-audio-codec dac/nn/quantize.py VectorQuantize (WNConv1d in/out_proj, codebook K x 8)
    torch.manual_seed(0)
    wn = parametrizations.weight_norm if parametrize else weight_norm
    sd, convs = {}, []
    for i in range(3):
        in_proj, out_proj = wn(torch.nn.Conv1d(64, 8, 1)), wn(torch.nn.Conv1d(8, 64, 1))
        with torch.no_grad():
            (in_proj.parametrizations.weight.original0 if parametrize else in_proj.weight_g).mul_(3.0)
        convs.append(in_proj)
        for name, mod in (("in_proj", in_proj), ("out_proj", out_proj)):
            sd |= {f"quantizer.quantizers.{i}.{name}.{k}": v for k, v in mod.state_dict().items()}
        sd[f"quantizer.quantizers.{i}.codebook.weight"] = randn(1024, 8, seed=i)
    return sd, convs


@pytest.mark.filterwarnings("ignore:`torch.nn.utils.weight_norm` is deprecated")
def test_dac_weight_norm_materialised_both_spellings():
    for parametrize in (False, True):
        sd, convs = _dac_state(parametrize)
        (st,) = discover(sd).stacks
        assert st.layout == "dac" and st.residual and len(st.codebooks) == 3
        cb = st.codebooks[1]
        assert (cb.kind, cb.metric, cb.size, cb.dim) == ("factorized", "cosine", 1024, 8)
        sd1 = {k.rsplit(".", 1)[-1] if "original" not in k else k[-9:]: v for k, v in sd.items()
               if k.startswith("quantizer.quantizers.1.in_proj.")}
        g, v = (sd1["original0"], sd1["original1"]) if parametrize else (sd1["weight_g"], sd1["weight_v"])
        w = torch._weight_norm(v, g, 0)[..., 0]  # (8, 64), what the conv multiplies by
        assert torch.allclose(cb.in_proj.weight, w, atol=1e-6) and cb.in_proj.bias is not None
        assert cb.out_proj.in_dim == 8 and cb.out_proj.out_dim == 64


def test_official_simvq_c_wt_plus_b():
    # youngsheen/SimVQ taming/modules/vqvae/quantize.py SimVQ: embedding (frozen) + embedding_proj Linear
    c, w, b = randn(8192, 128), randn(128, 128, seed=1), randn(128, seed=2)
    sd = {"quantize.embedding.weight": c, "quantize.embedding_proj.weight": w, "quantize.embedding_proj.bias": b,
          "quant_conv.weight": randn(128, 128, 1, 1)}
    (cb,) = discover(sd).codebooks
    assert cb.layout == "simvq" and cb.kind == "simvq"
    assert torch.allclose(cb.codes, c @ w.T + b, atol=1e-5) and torch.equal(cb.w, w) and torch.equal(cb.frozen, c)


def test_vqgan_lc_projected_clip_table():
    # zh460045050/VQGAN-LC vqgan-gpt-lc/models/models_vq.py: tok_embeddings + codebook_projection
    c, w, b = randn(1000, 768), randn(8, 768, seed=1), randn(8, seed=2)
    sd = {"tok_embeddings.weight": c, "codebook_projection.weight": w, "codebook_projection.bias": b,
          "encoder.conv_in.weight": randn(128, 3, 3, 3)}
    (cb,) = discover(sd).codebooks
    assert cb.layout == "vqgan-lc" and cb.codes.shape == (1000, 8)
    assert torch.allclose(cb.codes, c @ w.T + b, atol=1e-4)


def test_llama_tok_embeddings_alone_is_not_a_codebook():
    assert not discover({"tok_embeddings.weight": randn(32000, 64), "output.weight": randn(32000, 64)}).stacks


def test_taming_plain_ema_and_gumbel():
    # CompVis/taming-transformers taming/modules/vqvae/quantize.py
    plain = discover({"quantize.embedding.weight": randn(1024, 256), "quant_conv.weight": randn(256, 256, 1, 1),
                      "loss.discriminator.main.0.weight": randn(64, 3, 4, 4)})
    (cb,) = plain.codebooks
    assert (cb.name, cb.layout, cb.kind, cb.size, cb.dim) == ("quantize", "embedding", "plain", 1024, 256)
    ema = discover({"quantize.embedding.weight": randn(512, 64), "quantize.embedding.cluster_size": torch.rand(512),
                    "quantize.embedding.embed_avg": randn(512, 64)}).codebooks[0]
    assert ema.layout == "taming-ema" and ema.kind == "ema" and ema.ema.cluster_size.shape == (512,)
    gumbel = discover({"quantize.embed.weight": randn(8192, 256), "quantize.proj.weight": randn(8192, 128, 1, 1),
                       "quantize.proj.bias": randn(8192)}).codebooks[0]
    assert gumbel.layout == "taming-gumbel" and not gumbel.assignable


def test_llamagen_ring_buffer_and_metric_from_config():
    # FoundationVision/LlamaGen tokenizer/tokenizer_image/vq_model.py VectorQuantizer
    sd = {"quantize.embedding.weight": randn(16384, 8), "quantize.codebook_used": torch.zeros(65536)}
    cb = discover(sd).codebooks[0]
    assert cb.layout == "llamagen" and cb.ema.is_count is False and "ring buffer" in cb.ema.note
    assert cb.metric == "euclidean" and "codebook_l2_norm" in cb.note
    assert discover(sd, config={"codebook_l2_norm": True}).codebooks[0].metric == "cosine"


def test_hf_image_tokenizers_and_glm_cosine():
    # transformers chameleon / janus / emu3: model.vqmodel.quantize.embedding.weight; glm_image: l2-normalised lookup
    sd = {"model.vqmodel.quantize.embedding.weight": randn(8192, 256), "model.embed_tokens.weight": randn(65536, 64),
          "lm_head.weight": randn(65536, 64), "model.vqmodel.encoder.conv_in.weight": randn(128, 3, 3, 3)}
    (cb,) = discover(sd).codebooks
    assert cb.name == "model.vqmodel.quantize" and cb.metric == "euclidean"
    glm = discover(sd, config={"model_type": "glm_image", "vq_config": {"model_type": "glm_image_vqmodel"}})
    assert glm.codebooks[0].metric == "cosine"


def test_ibq_large_plain_table():
    # TencentARC/Open-MAGVIT2 IBQ: quantize.embedding.weight (K, d)
    (cb,) = discover({"quantize.embedding.weight": randn(16384, 16)}).codebooks
    assert cb.size == 16384 and cb.kind == "plain"


def test_vqtorch():
    # minyoungg/vqtorch vqtorch/nn/vq.py VectorQuant (codebook nn.Embedding, data_initialized, affine_transform)
    sd = {"vq_layer.codebook.weight": randn(1024, 32), "vq_layer.data_initialized": torch.ones(1),
          "vq_layer.affine_transform.scale": torch.zeros(1, 32), "vq_layer.affine_transform.bias": torch.zeros(1, 32)}
    (cb,) = discover(sd).codebooks
    assert cb.layout == "vqtorch" and cb.ema.initted is True and "affine" in cb.note


def test_wav2vec2_product_quantizer():
    # transformers models/wav2vec2/modeling_wav2vec2.py Wav2Vec2GumbelVectorQuantizer, Wav2Vec2ForPreTraining
    sd = {"quantizer.codevectors": randn(1, 2 * 320, 128), "quantizer.weight_proj.weight": randn(640, 512),
          "quantizer.weight_proj.bias": randn(640), "project_q.weight": randn(256, 256),
          "wav2vec2.feature_extractor.conv_layers.0.conv.weight": randn(512, 1, 10)}
    (st,) = discover(sd).stacks
    assert [cb.name for cb in st.codebooks] == ["quantizer/group0", "quantizer/group1"]
    cb = st.codebooks[1]
    assert (cb.kind, cb.size, cb.dim, cb.head, cb.heads, cb.assignable) == ("product", 320, 128, 1, 2, False)
    assert torch.equal(cb.codes, sd["quantizer.codevectors"][0, 320:])


def test_old_fsq_buffers_and_lfq_sign_table():
    # vector-quantize-pytorch < 1.x persisted FSQ _levels/_basis/implicit_codebook and LFQ codebook
    levels = torch.tensor([8, 5, 5, 5], dtype=torch.int32)
    sd = {"quantizer._levels": levels, "quantizer._basis": torch.tensor([1, 8, 40, 200], dtype=torch.int32),
          "quantizer.implicit_codebook": torch.rand(1000, 4)}
    found = discover(sd)
    assert not found.stacks and found.codebook_free[0].kind == "fsq" and "1000" in found.codebook_free[0].note
    d = 10
    sd = {"quantize.mask": 2 ** torch.arange(d - 1, -1, -1), "quantize.codebook": torch.ones(2**d, d)}
    found = discover(sd)
    assert not found.stacks and found.codebook_free[0].keys == ("quantize.codebook", "quantize.mask")

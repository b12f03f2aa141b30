"""Real conv tokenizers (tests/conftest.py: conv encoder + vector-quantize-pytorch, trained on
digits) through the CLI: judged like for like, sample by sample (issue 12)."""

from __future__ import annotations

import json

import numpy as np
from typer.testing import CliRunner

from vqdoctor.cli.app import app

runner = CliRunner()


def _inspect(*args) -> dict:
    res = runner.invoke(app, ["inspect", *map(str, args), "--json", "-", "--projection", "none"])
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)


def _not_ok(doc: dict) -> list[tuple[str, str]]:
    return [(v["check"], v["status"]) for v in doc["verdicts"] if v["status"] != "ok"]


def test_healthy_conv_tokenizer_with_image_inputs_is_not_flagged(conv_tokenizer):
    t = conv_tokenizer
    assert t.used_codes == t.size
    doc = _inspect(t.checkpoint, "--inputs", t.inputs, "--encoder", t.encoder)
    ec = doc["embeddings_collapse"]
    assert ec["merged_pairs"] == [] and ec["input_knn_purity"] is not None
    assert "latent map (4 positions x 8 channels) flattened" in ec["comparison"]
    assert ec["subsample"] == 1797  # one row per image, not per position
    assert abs(ec["latent_knn_purity"] - ec["input_knn_purity"]) < 0.1  # like for like: the encoder keeps the digits apart
    assert _not_ok(doc) == [] and doc["diagnosis"][0]["collapse"] == "healthy"
    res = runner.invoke(app, ["check", str(t.checkpoint), "--inputs", str(t.inputs), "--encoder", str(t.encoder)])
    assert res.exit_code == 0, res.output


def test_spatial_latents_without_inputs_give_no_merged_pairs_verdict(conv_tokenizer):
    t = conv_tokenizer
    doc = _inspect(t.checkpoint, "--latents", t.latents, "--channel-axis", "1", "--labels", t.labels)
    ec = doc["embeddings_collapse"]
    assert ec["merged_pairs"] == [] and ec["input_knn_purity"] is None and "merged pairs need the raw inputs" in ec["comparison"]
    assert "merged_pairs" not in {v["check"] for v in doc["verdicts"]}
    res = runner.invoke(app, ["check", str(t.checkpoint), "--latents", str(t.latents), "--channel-axis", "1",
                              "--labels", str(t.labels)])
    assert res.exit_code == 0, res.output


def test_collapsed_conv_tokenizer_is_headed_by_its_codebook_or_tokens_collapse(collapsed_conv_tokenizer):
    t = collapsed_conv_tokenizer
    assert t.used_codes < t.size // 4
    doc = _inspect(t.checkpoint, "--inputs", t.inputs, "--encoder", t.encoder)
    head = doc["diagnosis"][0]
    assert head["status"] == "fail" and head["collapse"] in ("codebook collapse", "tokens collapse")
    assert doc["embeddings_collapse"]["merged_pairs"] == []
    tc = doc["codebooks"][0]["tokens_collapse"]
    assert tc["live_codes"] == t.used_codes and tc["dead_codes"] == t.size - t.used_codes
    assert sum(tc["dead_parked"]) == tc["dead_codes"]  # every dead code placed, over all vectors
    assert sum(m["codes"] for m in tc["per_mode"]) == tc["live_codes"]  # the allocation is over live codes
    res = runner.invoke(app, ["check", str(t.checkpoint), "--inputs", str(t.inputs), "--encoder", str(t.encoder)])
    assert res.exit_code == 1


def test_allocation_is_identical_across_seeds_and_layouts(collapsed_conv_tokenizer, tmp_path):
    t = collapsed_conv_tokenizer
    z = np.load(t.latents)  # (B, 8, 2, 2)
    flat = np.ascontiguousarray(np.moveaxis(z, 1, -1).reshape(-1, z.shape[1]))  # (B*4, 8), position order kept
    np.save(tmp_path / "flat.npy", flat)
    np.save(tmp_path / "flat_y.npy", np.repeat(np.load(t.labels), 4))
    seen = set()
    for seed in (0, 1, 2):
        for layout in (["--latents", t.latents, "--channel-axis", "1", "--labels", t.labels],
                       ["--latents", tmp_path / "flat.npy", "--labels", tmp_path / "flat_y.npy"]):
            tc = _inspect(t.checkpoint, *layout, "--seed", seed, "--subsample", 500)["codebooks"][0]["tokens_collapse"]
            seen.add((tc["allocation_tv"], tuple(tc["dead_parked"]), tuple(tc["starved_modes"])))
    assert len(seen) == 1
    assert next(iter(seen))[0] > 0.15  # and the result is the collapse itself, not noise


def test_modes_flag_none_labels_auto(conv_tokenizer):
    t = conv_tokenizer
    base = ["--latents", t.latents, "--channel-axis", "1"]
    none = _inspect(t.checkpoint, *base, "--labels", t.labels, "--modes", "none")
    assert none["codebooks"][0]["tokens_collapse"] is None and none["embeddings_collapse"] is None
    assert none["data"]["mode_source"] is None
    no_labels = _inspect(t.checkpoint, *base, "--modes", "labels")  # never inferred
    assert no_labels["codebooks"][0]["tokens_collapse"] is None and any("--modes labels" in n for n in no_labels["notes"])
    labelled = _inspect(t.checkpoint, *base, "--labels", t.labels, "--modes", "labels")
    assert labelled["data"]["mode_source"] == "labels"
    auto = _inspect(t.checkpoint, *base)
    assert auto["data"]["mode_source"].startswith("inferred")
    assert auto["embeddings_collapse"] is None  # modes found on the latents: nothing independent to compare
    bad = runner.invoke(app, ["inspect", str(t.checkpoint), *map(str, base), "--modes", "some"])
    assert bad.exit_code == 2 and "--modes 'some'" in bad.output


def test_inputs_with_latents_give_the_input_side_comparison(conv_tokenizer, tmp_path):
    t = conv_tokenizer
    doc = _inspect(t.checkpoint, "--latents", t.latents, "--channel-axis", "1", "--inputs", t.inputs)
    ec = doc["embeddings_collapse"]
    assert doc["data"]["mode_source"] == "labels"  # the labels stored with the inputs
    assert ec["input_knn_purity"] is not None and ec["merged_pairs"] == [] and "against the item's input" in ec["comparison"]
    encoded = _inspect(t.checkpoint, "--inputs", t.inputs, "--encoder", t.encoder)["embeddings_collapse"]
    assert ec["input_knn_purity"] == encoded["input_knn_purity"]  # same rows, same comparison
    assert abs(ec["latent_knn_purity"] - encoded["latent_knn_purity"]) < 0.01
    assert "merged_pairs" in {v["check"] for v in doc["verdicts"]}
    # rows must align: a different count is one paragraph naming both
    x = np.load(t.inputs)
    np.savez(tmp_path / "short.npz", x=x["x"][:100], y=x["y"][:100])
    res = runner.invoke(app, ["inspect", str(t.checkpoint), "--latents", str(t.latents), "--channel-axis", "1",
                              "--inputs", str(tmp_path / "short.npz")])
    assert res.exit_code == 2 and "Traceback" not in res.output
    out = " ".join(res.output.split())
    assert "has 100 items" in out and "has 1797 samples" in out

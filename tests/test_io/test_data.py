"""Latent and input sources: shapes, streaming, shards, labels, bad data."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from vqdoctor.errors import DataError, InputFileError, UsageError
from vqdoctor.io.data import load_labels, open_inputs, open_latents

RNG = np.random.default_rng(0)


def _all(source, batch_size=7, **kw):
    parts = list(source.batches(batch_size, **kw))
    assert all(x.shape[0] <= batch_size for x, _ in parts)
    return torch.cat([x for x, _ in parts]), torch.cat([i for _, i in parts])


# --- latents ---------------------------------------------------------------------------------


def test_npy_vectors_stream_in_order(tmp_path):
    x = RNG.normal(size=(50, 6)).astype(np.float32)
    np.save(tmp_path / "z.npy", x)
    src = open_latents(tmp_path / "z.npy")
    assert (src.n_samples, src.n_vectors, src.dim, src.labels) == (50, 50, 6, None)
    vectors, samples = _all(src)
    assert torch.equal(vectors, torch.from_numpy(x)) and torch.equal(samples, torch.arange(50))


def test_channel_first_maps_positions_to_samples(tmp_path):
    x = RNG.normal(size=(5, 3, 4, 2)).astype(np.float32)  # (B, d, H, W)
    np.savez(tmp_path / "z.npz", latents=x, labels=np.array([0, 1, 0, 2, 1]))
    src = open_latents(tmp_path / "z.npz", channel_axis=1)
    assert (src.n_samples, src.n_vectors, src.dim) == (5, 40, 3)
    vectors, samples = _all(src, batch_size=10)
    assert torch.equal(vectors, torch.from_numpy(x).permute(0, 2, 3, 1).reshape(-1, 3))
    assert torch.equal(samples, torch.arange(5).repeat_interleave(8))
    assert src.labels.tolist() == [0, 1, 0, 2, 1]


def test_channel_last_pt_dict_bf16(tmp_path):
    x = torch.randn(4, 10, 8).to(torch.bfloat16)  # (B, T, d)
    torch.save({"latents": x, "y": torch.tensor([1, 1, 0, 0])}, tmp_path / "z.pt")
    src = open_latents(tmp_path / "z.pt", channel_axis=-1)
    vectors, _ = _all(src, batch_size=16)
    assert vectors.dtype == torch.float32 and torch.equal(vectors, x.float().reshape(-1, 8))
    assert src.labels.tolist() == [1, 1, 0, 0]


def test_safetensors_fp16_and_key(tmp_path):
    x = torch.randn(12, 4).half()
    save_file({"other": torch.zeros(2), "enc_out": x}, tmp_path / "z.safetensors")
    src = open_latents(tmp_path / "z.safetensors", key="enc_out")
    assert torch.equal(_all(src)[0], x.float())
    with pytest.raises(DataError, match="none is named latents / z / x"):
        open_latents(tmp_path / "z.safetensors")


def test_shards_cover_every_vector_once_and_max_vectors(tmp_path):
    np.save(tmp_path / "z.npy", RNG.normal(size=(23, 2, 3)).astype(np.float32))
    src = open_latents(tmp_path / "z.npy", channel_axis=2)
    full = _all(src)[0]
    shards = [_all(src, shard=(i, 3))[0] for i in range(3)]
    assert torch.equal(torch.cat(shards), full)
    assert _all(src, batch_size=4, max_vectors=9)[0].shape == (9, 3)


def test_take_reads_the_chosen_samples(tmp_path):
    x = RNG.normal(size=(30, 2, 5)).astype(np.float32)  # (B, T, d)
    np.save(tmp_path / "z.npy", x)
    src = open_latents(tmp_path / "z.npy", channel_axis=-1)
    vectors, samples = src.take(np.array([7, 3, 7]))
    assert samples.tolist() == [7, 7, 3, 3, 7, 7]
    assert torch.equal(vectors, torch.from_numpy(x[[7, 3, 7]].reshape(-1, 5)))
    with pytest.raises(UsageError, match="index 30 is out of range"):
        src.take(np.array([30]))


def test_uncompressed_npz_is_memory_mapped(tmp_path):
    np.savez(tmp_path / "z.npz", z=np.ones((10, 3), dtype=np.float32))
    assert isinstance(open_latents(tmp_path / "z.npz")._rows.array, np.memmap)


def test_missing_channel_axis_names_the_shape(tmp_path):
    np.save(tmp_path / "z.npy", np.zeros((2, 8, 4, 4), dtype=np.float32))
    with pytest.raises(UsageError) as info:
        open_latents(tmp_path / "z.npy")
    assert "(2, 8, 4, 4)" in str(info.value) and "--channel-axis 1" in str(info.value)
    with pytest.raises(UsageError, match="axis 0 is the batch"):
        open_latents(tmp_path / "z.npy", channel_axis=0)


def test_nan_names_file_and_row(tmp_path):
    x = np.zeros((20, 3), dtype=np.float32)
    x[13, 1] = np.nan
    np.save(tmp_path / "z.npy", x)
    with pytest.raises(DataError, match=r"z\.npy holds NaN or Inf.*vector 13"):
        _all(open_latents(tmp_path / "z.npy"), batch_size=4)


def test_empty_latents(tmp_path):
    np.save(tmp_path / "z.npy", np.zeros((0, 4), dtype=np.float32))
    with pytest.raises(DataError, match="empty"):
        open_latents(tmp_path / "z.npy")
    (tmp_path / "e.npy").write_bytes(b"")
    with pytest.raises(DataError, match="empty"):
        open_latents(tmp_path / "e.npy")


def test_bad_files(tmp_path):
    with pytest.raises(InputFileError, match="does not exist"):
        open_latents(tmp_path / "nope.npy")
    (tmp_path / "z.csv").write_text("1,2")
    with pytest.raises(InputFileError, match="unsupported extension '.csv'"):
        open_latents(tmp_path / "z.csv")


def test_bad_batch_options(tmp_path):
    np.save(tmp_path / "z.npy", np.zeros((4, 2), dtype=np.float32))
    src = open_latents(tmp_path / "z.npy")
    with pytest.raises(UsageError, match="batch_size"):
        next(src.batches(0))
    with pytest.raises(UsageError, match="shard"):
        next(src.batches(2, shard=(3, 3)))


def test_labels_file_length_mismatch_shows_both(tmp_path):
    np.save(tmp_path / "z.npy", np.zeros((10, 2), dtype=np.float32))
    np.save(tmp_path / "y.npy", np.zeros(9, dtype=np.int64))
    with pytest.raises(DataError, match="9 entries.*10 latent samples"):
        open_latents(tmp_path / "z.npy", labels=tmp_path / "y.npy")


def test_string_labels_become_ids(tmp_path):
    np.save(tmp_path / "y.npy", np.array(["dog", "cat", "dog"]))
    ids, names = load_labels(tmp_path / "y.npy")
    assert ids.tolist() == [1, 0, 1] and names == ["cat", "dog"]
    (tmp_path / "y.txt").write_text("3\n1\n")
    ids, names = load_labels(tmp_path / "y.txt")  # ids not 0..M-1: remapped, names keep the values
    assert ids.tolist() == [1, 0] and names == ["1", "3"]
    with pytest.raises(DataError, match="2 entries but the data has 5"):
        load_labels(tmp_path / "y.txt", n=5)


# --- inputs ----------------------------------------------------------------------------------


def test_npz_inputs_with_labels(tmp_path):
    x = RNG.normal(size=(9, 1, 4, 4)).astype(np.float32)
    np.savez(tmp_path / "d.npz", x=x, y=np.arange(9) % 3)
    src = open_inputs(tmp_path / "d.npz")
    assert (src.n, src.sample_shape) == (9, (1, 4, 4))
    assert src.labels.tolist() == (np.arange(9) % 3).tolist()
    batches = list(src.batches(4, max_items=6))
    assert [b.shape[0] for b, _ in batches] == [4, 2]
    assert torch.equal(batches[1][1], torch.tensor([4, 5]))
    assert torch.equal(src.take([8, 0]), torch.from_numpy(x[[8, 0]]))


def test_inputs_labels_override_and_mismatch(tmp_path):
    np.save(tmp_path / "d.npy", np.zeros((5, 3), dtype=np.float32))
    np.save(tmp_path / "y.npy", np.array(["a", "b", "a", "a", "b"]))
    src = open_inputs(tmp_path / "d.npy", labels=tmp_path / "y.npy")
    assert src.label_names == ["a", "b"] and src.labels.tolist() == [0, 1, 0, 0, 1]
    np.save(tmp_path / "y4.npy", np.zeros(4, dtype=np.int64))
    with pytest.raises(DataError, match="4 entries.*5 inputs"):
        open_inputs(tmp_path / "d.npy", labels=tmp_path / "y4.npy")


def _image(path, size, color, mode="RGB"):
    Image.new(mode, size, color).save(path)


def test_image_folder_classes_and_scaling(tmp_path):
    for cls, color in (("cat", (255, 0, 0)), ("dog", (0, 0, 255))):
        (tmp_path / cls).mkdir()
        for i in range(2):
            _image(tmp_path / cls / f"{i}.png", (6, 4), color)
    src = open_inputs(tmp_path)
    assert (src.n, src.sample_shape) == (4, (3, 4, 6))
    assert src.label_names == ["cat", "dog"] and src.labels.tolist() == [0, 0, 1, 1]
    x = src.take([0, 3])
    assert x.max() == 1.0 and x.min() == 0.0
    assert torch.all(x[0, 0] == 1.0) and torch.all(x[1, 2] == 1.0)


def test_image_folder_sizes_and_resize(tmp_path):
    _image(tmp_path / "a.png", (8, 8), 128, mode="L")
    _image(tmp_path / "b.png", (5, 5), 64, mode="L")
    src = open_inputs(tmp_path)
    assert src.labels is None and src.sample_shape == (1, 8, 8)
    with pytest.raises(DataError, match=r"(?s)b\.png is 5x5.*--image-size"):
        list(src.batches(2))
    resized = open_inputs(tmp_path, image_size=4)
    x = next(resized.batches(2))[0]
    assert x.shape == (2, 1, 4, 4) and torch.allclose(x[1], torch.full((1, 4, 4), 64 / 255))


def test_empty_image_folder(tmp_path):
    with pytest.raises(DataError, match="holds no images"):
        open_inputs(tmp_path)


def test_image_size_with_arrays_refused(tmp_path):
    np.save(tmp_path / "d.npy", np.zeros((2, 3), dtype=np.float32))
    with pytest.raises(UsageError, match="image folders"):
        open_inputs(tmp_path / "d.npy", image_size=32)

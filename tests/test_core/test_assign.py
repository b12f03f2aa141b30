"""nearest_codes: exact against a brute-force reference, ties, cosine, chunking, bad input."""

from __future__ import annotations

import pytest
import torch

from vqdoctor.core import assign
from vqdoctor.core.assign import nearest_codes, nearest_other, prepare_codes
from vqdoctor.errors import DataError, UsageError


def _reference(x: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    d = ((x.double()[:, None, :] - c.double()[None, :, :]) ** 2).sum(-1)
    return d.argmin(1), d.min(1).values


@pytest.fixture(params=["onednn", "addmm"])
def gemm_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a test through both CPU GEMM paths (oneDNN where torch has it, and torch.addmm)."""
    if request.param == "addmm":
        monkeypatch.setattr(assign, "_onednn_ok", lambda: False)
    elif not assign._onednn_ok():
        pytest.skip("oneDNN linear not available in this torch")
    return request.param


@pytest.mark.parametrize(
    ("n", "k", "d", "budget"),
    [
        (500, 37, 3, 1 << 20),
        (300, 1000, 16, 4096),
        (257, 130, 8, 64 * 4 * 3),
        (5, 1, 4, 1 << 20),
        (600, 9000, 8, 1 << 20),  # groups of 128 codes, several code chunks
    ],
)
def test_matches_brute_force(n: int, k: int, d: int, budget: int, gemm_path: str) -> None:
    g = torch.Generator().manual_seed(n + k)
    x, c = torch.randn(n, d, generator=g), torch.randn(k, d, generator=g)
    idx, dist = nearest_codes(x, c, budget_bytes=budget)
    ref_idx, ref_dist = _reference(x, c)
    assert idx.dtype == torch.int64 and dist.dtype == torch.float32
    assert idx.shape == (n,) and dist.shape == (n,)
    assert torch.equal(idx, ref_idx)
    torch.testing.assert_close(dist.double(), ref_dist, rtol=1e-5, atol=1e-6)


def test_code_chunks_with_running_min(monkeypatch: pytest.MonkeyPatch) -> None:
    """A budget far below one row of K forces code chunks; the answer must not change."""
    g = torch.Generator().manual_seed(1)
    x, c = torch.randn(200, 12, generator=g), torch.randn(3000, 12, generator=g)
    rb, kb = assign._block_shape(200, 3008, 64, 64 * 64 * 4, cpu=True)
    assert kb < 3008 and rb * kb * 4 <= 64 * 64 * 4
    idx, _ = nearest_codes(x, c, budget_bytes=64 * 64 * 4)
    assert torch.equal(idx, _reference(x, c)[0])
    monkeypatch.setattr(assign, "CPU_MAX_CODE_CHUNK", 128)
    idx2, _ = nearest_codes(x, c)
    assert torch.equal(idx2, idx)


@pytest.mark.parametrize("budget", [1 << 20, 64 * 64 * 4])
def test_ties_resolve_to_lowest_index(budget: int, gemm_path: str) -> None:
    g = torch.Generator().manual_seed(2)
    c = torch.randn(700, 10, generator=g)
    # planted duplicates in different amin groups and different code chunks
    for j in (5, 63, 64, 200, 650, 699):
        c[j] = c[3]
    c[100] = c[600] = c[650 - 1] = torch.zeros(10)  # dead codes left at a shared zero init
    c[601] = -0.0 * c[601]  # -0.0 equals 0.0
    x = torch.cat([c[[3, 5, 64, 699]] + 1e-4 * torch.randn(4, 10, generator=g), torch.zeros(2, 10)])
    idx, dist = nearest_codes(x, c, budget_bytes=budget)
    assert idx.tolist() == [3, 3, 3, 3, 100, 100]
    assert dist[-1].item() == 0.0
    assert prepare_codes(c).canonical is not None
    assert prepare_codes(torch.randn(50, 4)).canonical is None


def test_ties_with_large_codebooks() -> None:
    g = torch.Generator().manual_seed(7)
    c = torch.randn(9000, 6, generator=g)
    c[4500] = c[8999] = c[4100] = c[777]
    x = c[[777, 4100, 8999]] + 1e-4 * torch.randn(3, 6, generator=g)
    assert nearest_codes(x, c)[0].tolist() == [777, 777, 777]


def test_ties_like_argmin_for_equidistant_codes() -> None:
    c = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]])
    idx, dist = nearest_codes(torch.zeros(3, 2), c)
    assert idx.tolist() == [0, 0, 0]
    assert dist.tolist() == [1.0, 1.0, 1.0]


def test_parallel_streams_match_one_stream(monkeypatch: pytest.MonkeyPatch) -> None:
    g = torch.Generator().manual_seed(6)
    x, c = torch.randn(3001, 16, generator=g), torch.randn(300, 16, generator=g)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        one = nearest_codes(x, c)
    finally:
        torch.set_num_threads(threads)
    monkeypatch.setattr(assign, "MIN_ROWS_PER_WORKER", 1)
    torch.set_num_threads(3)
    try:
        many = nearest_codes(x, c, budget_bytes=64 * 100 * 4)
        assert torch.get_num_threads() == 3  # restored after the streams
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one[0], many[0]) and torch.equal(one[1], many[1])


def test_cosine_compares_directions(gemm_path: str) -> None:
    c = torch.tensor([[10.0, 0.0], [0.6, 0.8]])
    x = torch.tensor([[0.5, 0.55], [3.0, 0.1]])
    e_idx, _ = nearest_codes(x, c, metric="euclidean")
    c_idx, c_dist = nearest_codes(x, c, metric="cosine")
    assert e_idx.tolist() == [1, 1]
    assert c_idx.tolist() == [1, 0]
    xn = torch.nn.functional.normalize(x, dim=1)
    cn = torch.nn.functional.normalize(c, dim=1)
    cos = (xn * cn[c_idx]).sum(1)
    torch.testing.assert_close(c_dist, 2 - 2 * cos)


def test_prepared_codes_and_codes_sq() -> None:
    g = torch.Generator().manual_seed(3)
    x, c = torch.randn(100, 6, generator=g), torch.randn(90, 6, generator=g)
    ref = nearest_codes(x, c)[0]
    assert torch.equal(nearest_codes(x, prepare_codes(c))[0], ref)
    assert torch.equal(nearest_codes(x, c, codes_sq=(c * c).sum(1))[0], ref)
    assert torch.equal(nearest_codes(x.double(), c)[0], ref)


def test_empty_rows() -> None:
    idx, dist = nearest_codes(torch.zeros(0, 4), torch.randn(3, 4))
    assert idx.shape == (0,) and dist.shape == (0,)


def test_nearest_other_excludes_self() -> None:
    g = torch.Generator().manual_seed(4)
    p = torch.randn(150, 5, generator=g)
    p[77] = p[12]
    idx, dist = nearest_other(p, budget_bytes=64 * 40 * 4)
    d = torch.cdist(p.double(), p.double()) ** 2
    d.fill_diagonal_(float("inf"))
    assert torch.equal(idx, d.argmin(1))
    assert idx[12].item() == 77 and idx[77].item() == 12 and dist[12].item() == 0.0


def test_bad_input() -> None:
    with pytest.raises(DataError, match="dim=5 but the codebook has dim=4"):
        nearest_codes(torch.zeros(3, 5), torch.zeros(2, 4))
    with pytest.raises(DataError):
        nearest_codes(torch.zeros(3), torch.zeros(2, 4))
    with pytest.raises(DataError):
        nearest_codes(torch.zeros(3, 4), torch.zeros(0, 4))
    with pytest.raises(UsageError):
        nearest_codes(torch.zeros(3, 4), torch.zeros(2, 4), metric="dot")
    with pytest.raises(UsageError):
        nearest_codes(torch.zeros(3, 4), torch.zeros(2, 4), budget_bytes=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu() -> None:
    g = torch.Generator().manual_seed(5)
    x, c = torch.randn(4000, 32, generator=g), torch.randn(3000, 32, generator=g)
    c[2999] = c[7]
    idx, dist = nearest_codes(x.cuda(), c)
    assert idx.device.type == "cuda"
    ref_idx, ref_dist = nearest_codes(x, c)
    assert (idx.cpu() == ref_idx).float().mean() > 0.999
    torch.testing.assert_close(dist.cpu(), ref_dist, rtol=1e-4, atol=1e-5)


def test_pick_device() -> None:
    from vqdoctor.core.device import pick_device

    assert pick_device("cpu") == torch.device("cpu")
    assert pick_device("auto").type in ("cpu", "cuda")
    with pytest.raises(UsageError, match="unknown device"):
        pick_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(UsageError, match="no CUDA device is available"):
            pick_device("cuda")

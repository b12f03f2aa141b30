"""vqdoctor.Monitor on real vector-quantize-pytorch models: it counts exactly what vqp assigns and
what an offline inspect of the same latents counts, samples every n-th call, keeps its state, warns
when a verdict turns worse, and sums over 2 gloo processes."""

from __future__ import annotations

import datetime
import os
import warnings

import pytest
import torch
import torch.multiprocessing as mp

import vqdoctor
from vqdoctor.errors import VqdoctorError

vqp = pytest.importorskip("vector_quantize_pytorch")
warnings.filterwarnings("ignore", module="vector_quantize_pytorch")

FAST = vqdoctor.AnalysisOptions(projection="none")


def _model(quantizer: torch.nn.Module) -> torch.nn.Module:
    return torch.nn.ModuleDict({"encoder": torch.nn.Linear(6, 8), "quantizer": quantizer})


def _batches(n: int, seed: int = 1) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(4, 25, 8, generator=g) for _ in range(n)]


def _run(model: torch.nn.Module, batches: list[torch.Tensor]) -> list[torch.Tensor]:
    """vqp's returned indices for each batch."""
    out = []
    with torch.no_grad():
        for z in batches:
            out.append(model["quantizer"](z)[1])
    return out


def test_vector_quantize_counts_equal_vqp_indices_and_offline_inspect():
    torch.manual_seed(0)
    model = _model(vqp.VectorQuantize(dim=8, codebook_size=32)).eval()
    monitor = vqdoctor.Monitor(model, every_n_steps=1)
    batches = _batches(5)
    idx = torch.cat([i.reshape(-1) for i in _run(model, batches)])
    report = monitor.report()
    (cb,) = report.codebooks
    assert cb.name == "quantizer" and cb.usage.vectors == 500
    assert cb.counts == torch.bincount(idx, minlength=32).tolist()
    offline = vqdoctor.inspect(model, latents=torch.cat([z.reshape(-1, 8) for z in batches]), analysis=FAST)
    assert cb.counts == offline.codebooks[0].counts
    assert cb.usage.quantization_mse == pytest.approx(offline.codebooks[0].usage.quantization_mse, rel=1e-12)
    assert cb.usage.perplexity == pytest.approx(offline.codebooks[0].usage.perplexity, rel=1e-12)


def test_residual_vq_counts_every_level_like_vqp():
    torch.manual_seed(0)
    model = _model(vqp.ResidualVQ(dim=8, codebook_size=16, num_quantizers=3, codebook_dim=4)).eval()
    monitor = vqdoctor.Monitor(model, every_n_steps=1)
    assert monitor.quantizers == {"quantizer": ("quantizer",)}
    batches = _batches(4)
    idx = torch.cat([i.reshape(-1, 3) for i in _run(model, batches)])  # (N, levels)
    report = monitor.report()
    offline = vqdoctor.inspect(model.state_dict(), latents=torch.cat([z.reshape(-1, 8) for z in batches]), analysis=FAST)
    assert [cb.name for cb in report.codebooks] == [f"quantizer.layers.{i}" for i in range(3)]
    for level, (cb, off) in enumerate(zip(report.codebooks, offline.codebooks)):
        assert cb.counts == torch.bincount(idx[:, level], minlength=16).tolist()
        assert cb.counts == off.counts
        assert cb.usage.quantization_mse == pytest.approx(off.usage.quantization_mse, rel=1e-12)


def test_grouped_and_simvq_quantizers_are_found_and_counted():
    torch.manual_seed(0)
    grvq = _model(vqp.GroupedResidualVQ(dim=8, codebook_size=16, num_quantizers=2, groups=2)).eval()
    sim = _model(vqp.SimVQ(dim=8, codebook_size=32)).eval()
    for model in (grvq, sim):
        monitor = vqdoctor.Monitor(model, every_n_steps=1)
        batches = _batches(3)
        _run(model, batches)
        offline = vqdoctor.inspect(model, latents=torch.cat([z.reshape(-1, 8) for z in batches]), analysis=FAST)
        got = monitor.report()
        assert [c.counts for c in got.codebooks] == [c.counts for c in offline.codebooks]
    assert len(got.codebooks) == 1 and got.codebooks[0].w is not None  # SimVQ: W's rank from the live weights


def test_every_n_steps_records_the_first_and_every_nth_call():
    torch.manual_seed(0)
    model = _model(vqp.VectorQuantize(dim=8, codebook_size=32)).eval()
    monitor = vqdoctor.Monitor(model, every_n_steps=3)
    batches = _batches(7)
    idx = _run(model, batches)
    want = torch.bincount(torch.cat([idx[i].reshape(-1) for i in (0, 3, 6)]), minlength=32).tolist()
    assert monitor.recorded_calls == {"quantizer": 3}
    assert monitor.report().codebooks[0].counts == want


def test_training_mode_counts_what_the_codebook_held_before_its_update():
    """EMA codebooks move inside forward(): the pre-hook sees the codes vqp assigned with."""
    torch.manual_seed(0)
    model = _model(vqp.VectorQuantize(dim=8, codebook_size=32, decay=0.5)).train()
    monitor = vqdoctor.Monitor(model, every_n_steps=1)
    idx = _run(model, _batches(4))
    assert monitor.report().codebooks[0].counts == torch.bincount(torch.cat([i.reshape(-1) for i in idx]), minlength=32).tolist()


def test_kmeans_init_codebook_is_not_recorded_before_it_is_initialised():
    torch.manual_seed(0)
    model = _model(vqp.VectorQuantize(dim=8, codebook_size=8, kmeans_init=True, kmeans_iters=2)).train()
    monitor = vqdoctor.Monitor(model, every_n_steps=1)
    idx = _run(model, _batches(3))  # the first call runs k-means on its batch
    report = monitor.report()
    assert report.codebooks[0].usage.vectors == 200  # calls 2 and 3 only
    assert report.codebooks[0].counts == torch.bincount(torch.cat([i.reshape(-1) for i in idx[1:]]), minlength=8).tolist()


def test_reset_state_dict_roundtrip_and_remove():
    torch.manual_seed(0)
    model = _model(vqp.VectorQuantize(dim=8, codebook_size=32)).eval()
    monitor = vqdoctor.Monitor(model, every_n_steps=2)
    _run(model, _batches(3))
    saved = monitor.state_dict()
    counts = monitor.report().codebooks[0].counts
    other = vqdoctor.Monitor(model, every_n_steps=2)
    other.load_state_dict(saved)
    assert other.report().codebooks[0].counts == counts and other.state_dict() == saved
    monitor.reset()
    assert monitor.report().codebooks[0].usage is None  # nothing recorded since the reset
    monitor.remove()
    other.remove()
    _run(model, _batches(2))
    assert monitor.recorded_calls == {"quantizer": 0}
    with pytest.raises(VqdoctorError, match="format"):
        other.load_state_dict({"stats": {}})


def test_collapse_warning_when_a_verdict_turns_worse():
    torch.manual_seed(0)
    model = _model(vqp.VectorQuantize(dim=8, codebook_size=32)).eval()
    seen = []
    monitor = vqdoctor.Monitor(model, every_n_steps=1, on_verdict=seen.append)
    _run(model, _batches(10))
    with warnings.catch_warnings():
        warnings.simplefilter("error", vqdoctor.CollapseWarning)
        monitor.report()  # healthy: spread data over a random codebook
    assert not [v for v in seen if v.check == "utilization"]
    monitor.reset()
    _run(model, [torch.zeros(4, 25, 8) + model["quantizer"].codebook[3]])  # every vector on code 3
    with pytest.warns(vqdoctor.CollapseWarning, match="quantizer"):
        report = monitor.report()
    assert report.codebooks[0].usage.used_codes == 1
    assert any(v.check == "utilization" and v.status == "fail" for v in seen)
    seen.clear()
    monitor.report()  # still collapsed: no new warning
    assert seen == []


def test_wrong_arguments_are_vqdoctor_errors():
    with pytest.raises(VqdoctorError, match="nn.Module"):
        vqdoctor.Monitor({"a": torch.zeros(3)})
    with pytest.raises(VqdoctorError, match="every_n_steps"):
        vqdoctor.Monitor(_model(vqp.VectorQuantize(dim=8, codebook_size=8)), every_n_steps=0)
    with pytest.raises(VqdoctorError, match="No quantizer"):
        vqdoctor.Monitor(torch.nn.Linear(3, 3))


# ------------------------------------------------------------------------------ 2 processes


def _worker(rank: int, world: int, store: str, queue) -> None:
    # Rendezvous through a file, not a TCP port: a port picked free by the parent and bound by
    # rank 0 only seconds later (spawn + import torch) can be taken meanwhile by any process on a
    # busy machine, and rank 1 retrying connect() to a port nobody listens on yet can connect to
    # itself (TCP simultaneous open): it then reads its own bytes and aborts ("terminate called
    # without an active exception", seen under load). Gloo's own pairs listen on OS-given ports.
    os.environ["GLOO_SOCKET_IFNAME"] = "lo"
    torch.distributed.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world,
                                         timeout=datetime.timedelta(seconds=120))
    try:
        torch.manual_seed(0)  # same weights on every rank
        model = _model(vqp.VectorQuantize(dim=8, codebook_size=32)).eval()
        ddp = torch.nn.parallel.DistributedDataParallel(model)
        monitor = vqdoctor.Monitor(ddp, every_n_steps=1)  # names without DDP's "module." prefix
        assert monitor.quantizers == {"module.quantizer": ("quantizer",)}
        _run(model, _batches(6)[rank::world])  # each rank its own batches
        stats = monitor.statistics()["quantizer"]
        local = monitor.statistics(sync=False)["quantizer"]
        queue.put((rank, stats.counts.tolist(), stats.vectors, float(stats.sq_err_sum), local.vectors))
    finally:
        torch.distributed.destroy_process_group()


def test_two_gloo_processes_of_a_ddp_model_merge_to_the_single_process_counts(tmp_path):
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    mp.start_processes(_worker, args=(2, str(tmp_path / "store"), queue), nprocs=2, join=True, start_method="spawn")
    results = sorted(queue.get(timeout=30) for _ in range(2))
    torch.manual_seed(0)
    model = _model(vqp.VectorQuantize(dim=8, codebook_size=32)).eval()
    monitor = vqdoctor.Monitor(model, every_n_steps=1)
    _run(model, _batches(6))
    one = monitor.statistics()["quantizer"]
    for _, counts, vectors, sq, local in results:
        assert counts == one.counts.tolist() and vectors == one.vectors == 600 and local == 300
        assert sq == pytest.approx(float(one.sq_err_sum), rel=1e-12)


class _OwnQuantizer(torch.nn.Module):
    """A user's own nearest-code quantizer around a bare nn.Embedding (taming-style keys)."""

    def __init__(self) -> None:
        super().__init__()
        self.embedding = torch.nn.Embedding(24, 8)

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # (b, n, d)
        flat = z.reshape(-1, 8)
        idx = torch.cdist(flat, self.embedding.weight).argmin(1)
        return self.embedding(idx).reshape(z.shape), idx.reshape(z.shape[:-1])


def test_a_quantizer_the_detectors_recognise_by_its_weights_is_hooked():
    torch.manual_seed(0)
    model = torch.nn.ModuleDict({"encoder": torch.nn.Linear(6, 8), "quantize": _OwnQuantizer()}).eval()
    monitor = vqdoctor.Monitor(model, every_n_steps=1)
    assert monitor.quantizers == {"quantize": ("quantize",)}  # the module around the table, not the table
    batches = _batches(3)
    with torch.no_grad():
        idx = torch.cat([model["quantize"](z)[1].reshape(-1) for z in batches])
    (cb,) = monitor.report().codebooks
    assert cb.counts == torch.bincount(idx, minlength=24).tolist()
    offline = vqdoctor.inspect(model, latents=torch.cat([z.reshape(-1, 8) for z in batches]), analysis=FAST)
    assert cb.counts == offline.codebooks[0].counts


def _drifting_run(monitor: vqdoctor.Monitor, vq: torch.nn.Module, *, steps: int, drift_after: int,
                  check_every: int) -> list[vqdoctor.MonitorCheck]:
    """Train-mode (EMA) steps of ``vq``; after ``drift_after`` the latents move 50 away from the
    codebook, so every vector lands on one code and the EMA keeps it so (a collapse mid-run)."""
    g = torch.Generator().manual_seed(0)
    out = []
    for step in range(1, steps + 1):
        vq(torch.randn(4, 25, 8, generator=g) + (50.0 if step > drift_after else 0.0))
        if step % check_every == 0:
            out.append(monitor.check(step=step))
            monitor.reset()
    return out


def test_a_collapse_mid_run_is_warned_once_per_verdict_at_the_step_it_turns_on():
    torch.manual_seed(0)
    vq = vqp.VectorQuantize(dim=8, codebook_size=32, decay=0.8)
    model = _model(vq).train()
    monitor = vqdoctor.Monitor(model, every_n_steps=2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        checks = _drifting_run(monitor, vq, steps=100, drift_after=40, check_every=20)
    assert [c.step for c in checks] == [20, 40, 60, 80, 100]
    used = [c.report.codebooks[0].usage.used_codes for c in checks]
    assert used[:2] == [32, 32] and used[2:] == [1, 1, 1]  # collapsed from the first check after the drift
    assert [len(c.collapse_started) for c in checks[:2]] == [0, 0]
    started = checks[2].collapse_started
    assert {t.check for t in started} >= {"utilization", "dead_fraction", "normalized_perplexity"}
    assert all(c.collapse_started == [] for c in checks[3:])  # still collapsed: not warned again
    util = next(t for t in started if t.check == "utilization")
    assert (util.codebook, util.before, util.status, util.step) == ("quantizer", "ok", "fail", 60)
    assert util.value == pytest.approx(1 / 32)
    ours = [w for w in caught if issubclass(w.category, vqdoctor.CollapseWarning)]
    assert len(ours) == len(started)  # one warning per transition, none at the later checks
    text = str(next(w.message for w in ours if "utilization" in str(w.message)))
    assert "codebook 'quantizer' utilization turned fail (was ok) at step 60" in text
    assert "3.1%" in text and "vqdoctor fix revive FILE.safetensors --codebook quantizer" in text
    call = next(i for i, line in enumerate(open(__file__), 1) if "out.append(monitor.check(step=step))" in line)
    assert (ours[0].filename, ours[0].lineno) == (__file__, call)  # points at the caller of check()
    assert monitor.collapse_started == []  # the last check's: nothing new


def test_a_verdict_that_recovers_and_turns_worse_again_is_warned_again():
    torch.manual_seed(0)
    model = _model(vqp.VectorQuantize(dim=8, codebook_size=32)).eval()
    monitor = vqdoctor.Monitor(model, every_n_steps=1, warn=False)
    collapsed = [torch.zeros(4, 25, 8) + model["quantizer"].codebook[3]]
    kinds = []
    for batches in (_batches(10), collapsed, _batches(10), collapsed):
        _run(model, batches)
        kinds.append(sorted(t.check for t in monitor.check().collapse_started if t.check == "utilization"))
        monitor.reset()
    assert kinds == [[], ["utilization"], [], ["utilization"]]


def test_too_few_vectors_to_judge_is_no_collapse():
    torch.manual_seed(0)
    model = _model(vqp.VectorQuantize(dim=8, codebook_size=512)).eval()
    monitor = vqdoctor.Monitor(model, every_n_steps=1)
    _run(model, [torch.randn(1, 400, 8)])  # 400 vectors for 512 codes: "insufficient", not a fail
    with warnings.catch_warnings():
        warnings.simplefilter("error", vqdoctor.CollapseWarning)
        check = monitor.check()
    assert any(v.status == "insufficient" for v in check.report.verdicts)
    assert check.collapse_started == []


def test_a_disabled_monitor_neither_counts_nor_records_calls():
    torch.manual_seed(0)
    model = _model(vqp.VectorQuantize(dim=8, codebook_size=32)).eval()
    monitor = vqdoctor.Monitor(model, every_n_steps=2)
    monitor.enabled = False
    _run(model, _batches(3))
    assert monitor.recorded_calls == {"quantizer": 0} and monitor.state_dict()["calls"] == {"quantizer": 0}
    monitor.enabled = True
    _run(model, _batches(3))
    assert monitor.recorded_calls == {"quantizer": 2}  # calls 1 and 3 of the enabled ones

"""A real 2-process gloo job on CPU (loopback only), launched the way torchrun launches ranks:
its reduced statistics equal one process's (counts exactly, float sums to tolerance), its report
equals the single-process report, and only rank 0 writes to stdout."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import assert_json_close, strip_timing

from vqdoctor import api, distributed
from vqdoctor.io.stats_file import load_stats
from vqdoctor.options import DataOptions

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
TIMEOUT = 240


def _free_port() -> int:
    """A free port below the kernel's ephemeral range: a rank that connects before rank 0 listens
    can then never be handed the same port as its own source port (a TCP self-connect, seen as
    a hung or aborted rendezvous under load), and no outgoing connection takes it meanwhile."""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    rng = np.random.default_rng()
    for _ in range(200):
        port = int(rng.integers(max(1024, low - 12000), low))
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port below the ephemeral range")


def _launch(argv: list[str], world: int = 2) -> list[subprocess.CompletedProcess]:
    """Start ``world`` ranks of ``argv`` with torchrun's environment; wait for all of them."""
    port = _free_port()
    procs = []
    for rank in range(world):
        env = {k: v for k, v in os.environ.items() if k not in distributed.ENV_VARS}
        env.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(world),
                   MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), GLOO_SOCKET_IFNAME="lo",
                   OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT) + os.pathsep + env.get("PYTHONPATH", ""))
        procs.append(subprocess.Popen(argv, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    results = []
    try:
        for p in procs:
            out, err = p.communicate(timeout=TIMEOUT)
            results.append(subprocess.CompletedProcess(p.args, p.returncode, out, err))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    return results


def test_detect_reads_torchrun_env():
    assert distributed.detect({}) is None
    env = distributed.detect({"RANK": "1", "WORLD_SIZE": "4", "LOCAL_RANK": "1"})
    assert env.shard == (1, 4) and not env.is_main and env.local_rank == 1
    with pytest.raises(Exception, match="inconsistent"):
        distributed.detect({"RANK": "4", "WORLD_SIZE": "4"})
    assert distributed.backend_for(torch.device("cpu")) == "gloo" and distributed.backend_for(torch.device("cuda")) == "nccl"
    assert distributed.is_main() and distributed.world() == (0, 1)


def test_two_rank_gloo_inspect_equals_one_process(setup):
    out = setup.folder
    argv = [sys.executable, "-m", "vqdoctor", "inspect", str(setup.ckpt), "--latents", str(setup.latents),
            "--labels", str(setup.labels), "--batch-size", "256", "--device", "cpu",
            "--save-stats", str(out / "reduced.stats"), "--json", "-"]
    r0, r1 = _launch(argv)
    assert r0.returncode == 0, r0.stderr
    assert r1.returncode == 0, r1.stderr
    assert r1.stdout == ""  # only rank 0 writes the report

    single = api.gather_statistics(setup.ckpt, data=DataOptions(latents=setup.latents, labels=setup.labels, batch_size=256))
    reduced = load_stats(out / "reduced.stats")
    assert reduced.shards == (0, 1) and reduced.shard_count == 2 and reduced.complete
    a, b = reduced.gathered.stats["quantizer"], single.gathered.stats["quantizer"]
    assert a.vectors == b.vectors == 3000 and reduced.gathered.vectors == 3000
    assert torch.equal(a.counts, b.counts) and torch.equal(a.mode_counts, b.mode_counts)
    for f in ("sq_err_sum", "x_sum", "x_sq_sum"):
        torch.testing.assert_close(getattr(a, f), getattr(b, f).cpu(), rtol=1e-12, atol=1e-9)

    from vqdoctor.report.json_out import report_to_dict

    want = strip_timing(report_to_dict(api.report_from_statistics(single, checkpoint=setup.ckpt)))
    got = strip_timing(json.loads(r0.stdout))
    assert_json_close(got, want)


def test_two_rank_check_gates_on_the_reduced_report(setup):
    """`torchrun -m vqdoctor check`: every rank reads its slice, rank 0 prints and decides."""
    single = api.inspect(setup.ckpt, data=DataOptions(latents=setup.latents, labels=setup.labels))
    util = single.codebooks[0].usage.utilization
    for bound, code in ((util - 0.01, 0), (min(1.0, util + 0.01), 1)):
        argv = [sys.executable, "-m", "vqdoctor", "check", str(setup.ckpt), "--latents", str(setup.latents),
                "--labels", str(setup.labels), "--batch-size", "256", "--device", "cpu",
                "--min-utilization", str(bound), "--json", "-"]
        r0, r1 = _launch(argv)
        assert r0.returncode == code, r0.stderr
        assert r1.returncode == 0 and r1.stdout == "", r1.stderr  # rank 1 stays quiet
        doc = json.loads(r0.stdout)
        assert doc["report"]["codebooks"][0]["usage"]["vectors"] == 3000  # both slices counted


def test_two_rank_fix_kmeans_writes_once_from_reduced_lloyd_steps(setup):
    """`torchrun -m vqdoctor fix kmeans`: each rank encodes its slice, Lloyd statistics are reduced,
    rank 0 writes a checkpoint whose codebook is the k-means of ALL the vectors."""
    from safetensors.torch import load_file

    from vqdoctor.core.assign import nearest_codes
    from vqdoctor.io.data import open_latents

    out = setup.folder / "fixed.safetensors"
    argv = [sys.executable, "-m", "vqdoctor", "fix", "kmeans", str(setup.ckpt), "--latents", str(setup.latents),
            "--device", "cpu", "--iters", "10", "--out", str(out)]
    r0, r1 = _launch(argv)
    assert r0.returncode == 0, r0.stderr
    assert r1.returncode == 0, r1.stderr
    assert r1.stdout == "" and "Wrote" in r0.stdout and "rank 0's slice" in " ".join(r0.stderr.split())
    codes = load_file(str(out))["quantizer._codebook.embed"][0]
    x, _ = open_latents(setup.latents).take(list(range(3000)))
    idx, dist = nearest_codes(x, codes)
    assert torch.bincount(idx, minlength=codes.shape[0]).gt(0).float().mean() > 0.9  # codes cover all vectors
    old = load_file(str(setup.ckpt))["quantizer._codebook.embed"][0]
    assert float(dist.mean()) < float(nearest_codes(x, old)[1].mean())


def test_two_rank_revive_is_refused(setup):
    argv = [sys.executable, "-m", "vqdoctor", "fix", "revive", str(setup.ckpt), "--latents", str(setup.latents),
            "--device", "cpu", "--out", str(setup.folder / "r.safetensors")]
    for r in _launch(argv):
        assert r.returncode == 2 and "does not run under torchrun" in " ".join(r.stderr.split())


def test_two_rank_shard_flag_is_refused(setup):
    argv = [sys.executable, "-m", "vqdoctor", "inspect", str(setup.ckpt), "--latents", str(setup.latents),
            "--device", "cpu", "--shard", "0/2", "--json", "-"]
    for r in _launch(argv):
        assert r.returncode == 2 and "cannot be used under torchrun" in " ".join(r.stderr.split())


def test_two_rank_kmeans_reduces_sums_and_counts(tmp_path):
    results = _launch([sys.executable, str(HERE / "dist_worker.py"), "kmeans", str(tmp_path)])
    for r in results:
        assert r.returncode == 0, r.stderr
    subprocess.run([sys.executable, str(HERE / "dist_worker.py"), "single", str(tmp_path)], check=True,
                   cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=TIMEOUT)
    one = torch.load(tmp_path / "kmeans_single.pt")
    ranks = [torch.load(tmp_path / f"kmeans{r}.pt") for r in range(2)]
    for got in ranks:
        assert torch.equal(got["counts"], one["counts"])
        torch.testing.assert_close(got["sums"], one["sums"], rtol=1e-12, atol=1e-9)
        assert got["inertia"] == pytest.approx(one["inertia"], rel=1e-12)
        assert got["iters"] == one["iters"]
        torch.testing.assert_close(got["centroids"], one["centroids"], rtol=1e-5, atol=1e-5)
        assert torch.equal(got["kcounts"], one["kcounts"])
    assert torch.equal(ranks[0]["centroids"], ranks[1]["centroids"])  # every rank holds the same result

"""Overhead of vqdoctor.Monitor on a vector-quantize-pytorch VQ-VAE training step on CPU.

A small conv VQ-VAE (32x32 RGB -> 8x8x64 latents, VectorQuantize with 512 codes, EMA) trains with
Adam on random images. Blocks of steps with and without a Monitor (default every_n_steps, unless
--every is given) alternate A B B A, so drifting machine load hits both alike; the overhead is the
median block time with the Monitor over the median without (thread CPU time, one torch
thread). The Monitor's own work is also timed directly: the CPU time spent inside its hooks
per step, over the step time.

    PYTHONPATH=. python benchmarks/monitor_overhead.py [--steps 20] [--blocks 8] [--batch 32] [--every 10]
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import torch
from torch import nn

import vqdoctor
from vqdoctor.monitor import Monitor

warnings.filterwarnings("ignore")


class VQVAE(nn.Module):
    def __init__(self, dim: int = 64, codes: int = 512) -> None:
        super().__init__()
        from vector_quantize_pytorch import VectorQuantize

        self.encoder = nn.Sequential(nn.Conv2d(3, 64, 4, 2, 1), nn.ReLU(), nn.Conv2d(64, 128, 4, 2, 1), nn.ReLU(),
                                     nn.Conv2d(128, dim, 1))
        self.quantizer = VectorQuantize(dim=dim, codebook_size=codes, accept_image_fmap=True, decay=0.99)
        self.decoder = nn.Sequential(nn.Conv2d(dim, 128, 1), nn.ReLU(), nn.ConvTranspose2d(128, 64, 4, 2, 1), nn.ReLU(),
                                     nn.ConvTranspose2d(64, 3, 4, 2, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.encoder(x)
        q, _, commit = self.quantizer(z)
        return nn.functional.mse_loss(self.decoder(q), x) + commit.sum()


def block(model: nn.Module, opt: torch.optim.Optimizer, data: list[torch.Tensor]) -> float:
    """CPU time of this thread over the block (torch runs single-threaded here): far less swayed
    by other jobs on a shared machine than wall-clock time."""
    start = time.thread_time()
    for x in data:
        opt.zero_grad(set_to_none=True)
        model(x).backward()
        opt.step()
    return time.thread_time() - start


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=20, help="steps per block")
    ap.add_argument("--blocks", type=int, default=8, help="blocks of each kind")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--every", type=int, default=None, help="every_n_steps (default: the Monitor's default)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = VQVAE().train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    data = [torch.rand(args.batch, 3, 32, 32) for _ in range(args.steps)]
    block(model, opt, data[:5])  # warm up
    every = args.every if args.every is not None else Monitor.__dataclass_fields__["every_n_steps"].default
    plain, monitored, in_hooks = [], [], []
    monitor = None
    def monitored_block() -> None:
        nonlocal monitor
        monitor = vqdoctor.Monitor(model, every_n_steps=every)
        spent = [0.0]
        record = monitor._record

        def timed(w, x, record=record, spent=spent):  # the hook's work, timed
            t0 = time.thread_time()
            record(w, x)
            spent[0] += time.thread_time() - t0

        monitor._record = timed  # type: ignore[method-assign]
        monitored.append(block(model, opt, data))
        in_hooks.append(spent[0])
        monitor.remove()

    for i in range(args.blocks):  # A B B A ...: a drift in machine load hits both alike
        if i % 2 == 0:
            plain.append(block(model, opt, data))
            monitored_block()
        else:
            monitored_block()
            plain.append(block(model, opt, data))
    t_plain, t_mon = statistics.median(plain), statistics.median(monitored)
    t_hook = statistics.median(in_hooks)
    rep = monitor.report()
    start = time.perf_counter()
    monitor.report()
    t_report = time.perf_counter() - start
    n = args.steps
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch}, "
          f"{n} steps/block, {args.blocks} blocks each, every_n_steps={every}")
    print(f"step without Monitor: {1e3 * t_plain / n:.2f} ms CPU (median block; blocks {', '.join(f'{t:.2f}' for t in plain)} s)")
    print(f"step with Monitor:    {1e3 * t_mon / n:.2f} ms CPU (median block; blocks {', '.join(f'{t:.2f}' for t in monitored)} s)")
    print(f"time inside the Monitor's hooks: {1e3 * t_hook / n:.2f} ms per step = {100 * t_hook / t_plain:.2f}% of a step")
    print(f"overhead (A/B of medians): {100 * (t_mon / t_plain - 1):+.2f}%  (recorded {rep.codebooks[0].usage.vectors:,} vectors "
          f"in the last block; report(): {1e3 * t_report:.1f} ms)")


if __name__ == "__main__":
    main()

"""Overhead of vqdoctor.Monitor on a vector-quantize-pytorch VQ-VAE training step on CPU.

A small conv VQ-VAE (32x32 RGB -> 8x8x64 latents, VectorQuantize with 512 codes, EMA) trains with
Adam on random images. Blocks of steps with and without a Monitor (default every_n_steps, unless
--every is given) alternate A B B A, so drifting machine load hits both alike; the overhead is the
median block time with the Monitor over the median without (thread CPU time, one torch
thread). The Monitor's own work is also timed directly: the CPU time spent inside its hooks
per step, over the step time.

    PYTHONPATH=. python benchmarks/monitor_overhead.py [--steps 20] [--blocks 8] [--batch 32] [--every 10]

With --lightning the same model is a LightningModule and blocks are fits of --steps steps (a
fresh Trainer each, CSV logger, log_every_n_steps 50: one check per 50 steps) with and without
``VqdoctorCallback`` (default every_n_steps): the CPU time per step, measured between the ends
of the training batches (so the callback's check and logging are inside it), first 5 steps of
each fit left out.

    PYTHONPATH=. python benchmarks/monitor_overhead.py --lightning [--steps 100] [--blocks 4]
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


def lightning_overhead(args: argparse.Namespace) -> None:
    import tempfile

    import lightning.pytorch as pl

    from vqdoctor.integrations.lightning import VqdoctorCallback

    class Module(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = VQVAE()

        def training_step(self, batch, batch_idx):
            return self.net(batch[0])

        def configure_optimizers(self):
            return torch.optim.Adam(self.parameters(), lr=1e-3)

    class StepClock(pl.Callback):  # last in the list: runs after VqdoctorCallback's hooks
        def __init__(self) -> None:
            self.ends: list[float] = []

        def on_train_batch_end(self, *a) -> None:
            self.ends.append(time.thread_time())

    module = Module()
    images = torch.rand(args.steps * args.batch, 3, 32, 32)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(images), batch_size=args.batch)
    every = args.every if args.every is not None else 10
    plain, monitored, checks = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        def fit(with_callback: bool) -> float:
            clock = StepClock()
            vq = VqdoctorCallback(every_n_steps=every) if with_callback else None
            trainer = pl.Trainer(max_steps=args.steps, accelerator="cpu", logger=pl.loggers.CSVLogger(tmp),
                                 enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                                 log_every_n_steps=50, callbacks=[c for c in (vq, clock) if c is not None])
            trainer.fit(module, loader)
            if vq is not None:
                checks.append(len(vq.history))
            return (clock.ends[-1] - clock.ends[4]) / (len(clock.ends) - 5)

        fit(False)  # warm up
        for i in range(args.blocks):  # A B B A ...
            for with_callback in ((False, True) if i % 2 == 0 else (True, False)):
                (monitored if with_callback else plain).append(fit(with_callback))
    t_plain, t_mon = statistics.median(plain), statistics.median(monitored)
    print(f"torch {torch.__version__}, lightning {pl.__version__}, {torch.get_num_threads()} threads, batch {args.batch}, "
          f"{args.steps} steps/fit, {args.blocks} fits each, VqdoctorCallback(every_n_steps={every}), "
          f"{checks[-1]} checks per fit")
    print(f"step without callback: {1e3 * t_plain:.2f} ms CPU (median fit; {', '.join(f'{1e3 * t:.2f}' for t in plain)})")
    print(f"step with callback:    {1e3 * t_mon:.2f} ms CPU (median fit; {', '.join(f'{1e3 * t:.2f}' for t in monitored)})")
    print(f"ratio with/without: {t_mon / t_plain:.3f}  (overhead {100 * (t_mon / t_plain - 1):+.2f}%)")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=20, help="steps per block")
    ap.add_argument("--blocks", type=int, default=8, help="blocks of each kind")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--every", type=int, default=None, help="every_n_steps (default: the Monitor's default)")
    ap.add_argument("--lightning", action="store_true", help="the Lightning callback's overhead instead")
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    if args.lightning:
        lightning_overhead(args)
        return
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

"""vqdoctor.Monitor in a plain PyTorch training loop: a small VQ-VAE (vector-quantize-pytorch)
on scikit-learn's 8x8 digits, checked every --check-every steps.

Without --revive the codebook collapses within 40 steps (the encoder's outputs move away from
most codes, which then receive no vector) and takes about a hundred steps to recover: the
Monitor warns once per verdict, at the check where it turns worse, and the lines show
utilization falling to ~30% and climbing back. With --revive
(vector-quantize-pytorch's ``threshold_ema_dead_code``) dead codes are re-seeded from the batch
and utilization stays near 100%.

    python examples/plain_loop.py                 # the collapse, warned
    python examples/plain_loop.py --revive        # the same run, kept healthy
    python examples/plain_loop.py --tensorboard runs/vq   # also scalars + histograms (vqdoctor[tensorboard])

Needs vector-quantize-pytorch (``pip install vector-quantize-pytorch``). Runs in a few seconds on a CPU.
"""

from __future__ import annotations

import argparse
import warnings

import torch
from torch import nn

import vqdoctor

TOKENS, DIM = 4, 8  # each 8x8 digit becomes 4 latent vectors of 8 numbers


class VQVAE(nn.Module):
    def __init__(self, codes: int, revive: bool) -> None:
        super().__init__()
        from vector_quantize_pytorch import VectorQuantize

        self.encoder = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, TOKENS * DIM))
        self.quantizer = VectorQuantize(dim=DIM, codebook_size=codes, decay=0.8, kmeans_init=True,
                                        threshold_ema_dead_code=2 if revive else 0)
        self.decoder = nn.Sequential(nn.Linear(TOKENS * DIM, 64), nn.ReLU(), nn.Linear(64, 64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, _, commit = self.quantizer(self.encoder(x).view(-1, TOKENS, DIM))
        return nn.functional.mse_loss(self.decoder(q.reshape(-1, TOKENS * DIM)), x) + commit.sum()


def digits() -> torch.Tensor:
    from sklearn.datasets import load_digits

    return torch.tensor(load_digits().data, dtype=torch.float32) / 16.0


def main(argv: list[str] | None = None) -> list[vqdoctor.MonitorCheck]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--codes", type=int, default=32)
    ap.add_argument("--every", type=int, default=5, help="Monitor(every_n_steps=): record 1 batch in N")
    ap.add_argument("--check-every", type=int, default=20, help="report every N steps (and reset the counts)")
    ap.add_argument("--revive", action="store_true", help="re-seed dead codes (threshold_ema_dead_code=2)")
    ap.add_argument("--tensorboard", metavar="DIR", help="also write to TensorBoard (needs vqdoctor[tensorboard])")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    torch.manual_seed(args.seed)
    x = digits()
    model = VQVAE(args.codes, args.revive).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    monitor = vqdoctor.Monitor(model, every_n_steps=args.every)  # hooks model.quantizer
    writer = None
    if args.tensorboard:
        from torch.utils.tensorboard import SummaryWriter

        from vqdoctor.integrations.tensorboard import log_to_tensorboard

        writer = SummaryWriter(args.tensorboard)

    checks = []
    for step in range(1, args.steps + 1):
        batch = x[torch.randint(len(x), (args.batch,))]
        loss = model(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % args.check_every == 0:
            check = monitor.check(step=step)  # warns (CollapseWarning) when a verdict turns worse
            usage = check.report.codebooks[0].usage
            if usage is None:  # no call recorded since the last check (every_n_steps > check_every)
                print(f"step {step:4d}  loss {loss.item():.4f}  (no batch recorded)")
                continue
            worst = max((v.status for v in check.report.verdicts if v.codebook == "quantizer"),
                        key=["ok", "insufficient", "warn", "fail"].index)
            print(f"step {step:4d}  loss {loss.item():.4f}  utilization {usage.utilization:6.1%}  "
                  f"perplexity {usage.perplexity:5.1f}  dead {usage.dead_codes:3d}/{args.codes}  worst verdict {worst}"
                  + (f"  <- {', '.join(t.check for t in check.collapse_started)} turned worse" if check.collapse_started else ""))
            if writer is not None:
                log_to_tensorboard(writer, check.report, step)
            checks.append(check)
            monitor.reset()  # each check covers the steps since the previous one
    monitor.remove()
    if writer is not None:
        writer.close()
    return checks


if __name__ == "__main__":
    warnings.filterwarnings("ignore", module="vector_quantize_pytorch")
    warnings.simplefilter("always", vqdoctor.CollapseWarning)
    main()

"""µP in your own training loop: `mutune.parametrize` gives the optimizer its param groups.

A small MLP learns a random teacher (a 10-way classification of Gaussian inputs). It is trained
at widths 64 (the base width), 256 and 1024 over the same learning rates, with AdamW under µP.
Under µP the best learning rate stays put as the width grows (0.004 at every width here), which
is what lets you tune narrow and train wide; under SP (``--parametrization sp``) it drifts down
(0.004, 0.002, 0.001). About ten seconds on a CPU:

    python examples/own_loop.py
    python examples/own_loop.py --steps 300 --widths 64,512 --lrs 0.002,0.004,0.008
    python examples/own_loop.py --parametrization sp     # the control
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from torch import nn

import mutune

D_IN, D_OUT = 32, 10


class MLP(nn.Module):
    """Your model: anything whose constructor takes the width."""

    def __init__(self, width: int):
        super().__init__()
        self.inp = nn.Linear(D_IN, width)
        self.hidden = nn.Linear(width, width)
        self.out = nn.Linear(width, D_OUT)  # the readout: width -> fixed size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(F.relu(self.hidden(F.relu(self.inp(x)))))


def teacher_data(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(D_IN, D_OUT, generator=torch.Generator().manual_seed(1234))
    x = torch.randn(n, D_IN, generator=g)
    y = (x @ w + 0.5 * torch.randn(n, D_OUT, generator=g)).argmax(dim=1)
    return x, y


def train(width: int, lr: float, steps: int, base_width: int = 64, parametrization: str = "mup") -> float:
    torch.manual_seed(0)
    model = MLP(width)
    groups = mutune.parametrize(
        model,
        base_width=base_width,
        factory=MLP,  # how to build the model at other widths (on the meta device: free)
        optimizer="adamw",
        lr=lr,
        init_std=0.1,  # σ: re-initialise by the µP rule (σ·√(base/fan_in) for hidden weights)
        seed=0,
        parametrization=parametrization,  # "sp" for the control: the best LR drifts with width
    )
    opt = torch.optim.AdamW(groups, betas=(0.9, 0.95))
    warmup = max(1, steps // 10)
    # relative schedule: each group keeps its own µP learning rate
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warmup))
    x, y = teacher_data(8192, seed=0)
    gen = torch.Generator().manual_seed(0)
    for _ in range(steps):
        idx = torch.randint(0, len(x), (128,), generator=gen)
        loss = F.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    xv, yv = teacher_data(4096, seed=1)
    with torch.no_grad():
        return F.cross_entropy(model(xv), yv).item()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--widths", default="64,256,1024")
    ap.add_argument("--lrs", default="0.001,0.002,0.004,0.008,0.016,0.032")
    ap.add_argument("--parametrization", default="mup", choices=["mup", "sp"])
    args = ap.parse_args()
    widths = [int(w) for w in args.widths.split(",")]
    lrs = [float(v) for v in args.lrs.split(",")]
    torch.set_num_threads(min(2, torch.get_num_threads()))
    print("width " + " ".join(f"lr={lr:<8g}" for lr in lrs) + " best lr")
    for width in widths:
        losses = [train(width, lr, args.steps, parametrization=args.parametrization) for lr in lrs]
        best = lrs[min(range(len(lrs)), key=losses.__getitem__)]
        print(f"{width:<5} " + " ".join(f"{v:<11.4f}" for v in losses) + f" {best:g}")


if __name__ == "__main__":
    main()

"""Gradient clipping against width: is a fixed clipping threshold the same treatment at every width?

Trains the quickstart's GPT under µP (base width 64) at widths 64..512 with the proxy's schedule
and no clipping, and records at every step the global gradient norm two ways:

- ``plain``: torch's ``clip_grad_norm_`` norm, what ``train.grad_clip`` compared against before;
- ``base``: every parameter's gradient norm rescaled to the base width
  (:func:`mutune.optim.grad_norm`), what ``train.grad_clip`` compares against now.

Under µP every gradient entry shrinks like 1/m (the logits' 1/m multiplier scales the whole
backward pass), so the plain norm falls with width wherever the vector-like parameters (one width
dim: √m fewer in norm) weigh, and a fixed threshold clips the proxy where it does not clip the
target. Prints, per width, the median of each norm over the warmup, the middle and the end of the
run, and the fraction of steps each would clip at ``--clip`` (default 1.0, the spec default).

Target (stated before the runs): the ``base`` norm's medians stay within 25% of width 64's at
every width (the plain norm's fall is the problem being measured, no target).

    PYTHONPATH=. python bench/grad_clip_width.py              # ~15 min on 2 CPU cores
    PYTHONPATH=. python bench/grad_clip_width.py --quick      # widths 32/64, seconds
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from mutune import config
from mutune.mup import optim
from mutune.train import build, lr_factor  # noqa: F401  (the trainer's own build)
from mutune.train.parallel import Distributed

FULL = {
    "name": "grad-clip",
    "seed": 0,
    "model": {"family": "gpt", "width": 64, "base_width": 64, "depth": 2, "head_dim": 32, "seq_len": 128},
    "data": {"corpus": "stdlib"},
    "train": {"steps": 100, "batch_size": 16, "warmup_steps": 10, "schedule": "cosine", "grad_clip": 0.0},
    "hparams": {"lr": 2.0**-8, "init_std": 0.05},
}
QUICK = {
    **FULL,
    "model": {**FULL["model"], "width": 32, "base_width": 32, "head_dim": 16, "seq_len": 32},
    "train": {**FULL["train"], "steps": 12, "batch_size": 4, "warmup_steps": 2},
}


def norms(spec: config.Spec) -> tuple[np.ndarray, np.ndarray]:
    """Per step: the plain global grad norm and the base-width one (no clipping applied)."""
    from mutune import data

    run = build(spec, spec.hparams, Distributed(), torch.device("cpu"))
    plain, base = [], []
    t = spec.train
    for _ in range(t.steps):
        x, y = data.get_batch(run.corpus.train, t.batch_size, spec.model.seq_len, run.rng, run.device)
        _, loss = run.model(x, y)
        loss.backward()
        plain.append(torch.nn.utils.get_total_norm([p.grad for p in run.model.parameters()]).item())
        base.append(optim.grad_norm(run.opt).item())
        run.opt.step()
        run.opt.zero_grad(set_to_none=True)
        run.sched.step()
    return np.array(plain), np.array(base)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--widths", default=None, help="comma-separated; default 64,128,256,512")
    ap.add_argument("--clip", type=float, default=1.0)
    args = ap.parse_args()
    torch.set_num_threads(1)
    d = QUICK if args.quick else FULL
    widths = [int(w) for w in (args.widths or ("32,64" if args.quick else "64,128,256,512")).split(",")]
    base_spec = config.spec_from_dict(d)
    steps = base_spec.train.steps
    phases = {"warmup": slice(0, base_spec.train.warmup_steps), "middle": slice(steps // 3, 2 * steps // 3)}
    phases["end"] = slice(2 * steps // 3, steps)
    print(
        f"µP GPT, base width {base_spec.model.base_width}, lr {base_spec.hparams.lr:g}, {steps} steps, no clipping"
    )
    rows = {}
    for w in widths:
        t0 = time.perf_counter()
        plain, base = norms(base_spec.edit({"model.width": w}))
        rows[w] = (plain, base)
        print(f"  width {w}: {time.perf_counter() - t0:.0f}s", flush=True)
    print(
        f"\n{'width':>6s} {'norm':6s} " + " ".join(f"{p:>8s}" for p in phases) + f"  clipped at {args.clip:g}"
    )
    ref = {
        k: {p: float(np.median(v[s])) for p, s in phases.items()}
        for k, v in zip(("plain", "base"), rows[widths[0]], strict=True)
    }
    worst = 0.0
    for w in widths:
        for name, v in zip(("plain", "base"), rows[w], strict=True):
            med = {p: float(np.median(v[s])) for p, s in phases.items()}
            if name == "base":
                worst = max(worst, *(abs(med[p] / ref["base"][p] - 1) for p in phases))
            cells = " ".join(f"{med[p]:8.3f}" for p in phases)
            print(f"{w:6d} {name:6s} {cells}  {100 * float(np.mean(v > args.clip)):5.1f}% of steps")
    verdict = "met" if worst <= 0.25 else f"MISSED by {100 * (worst - 0.25):.0f} points"
    print(
        f"\nbase-width norm: largest deviation of a phase median from width {widths[0]}'s: {100 * worst:.0f}% (target <= 25%): {verdict}"
    )


if __name__ == "__main__":
    main()

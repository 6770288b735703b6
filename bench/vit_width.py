"""Width drift of a Vision Transformer's LR optimum, µP against SP: configs/vit.yaml's model.

``mutune sweep`` (the Python API) of the LR over widths 64, 128, 256 for examples/vit.py (depth 2,
heads of 16 dims, patches 4×4, CLS + 16 tokens) classifying examples/images.py's gratings (10
classes, made on the spot), 100 AdamW steps of 32 images, one seed, on an octave grid
2^-13 … 2^-5; the same grid and runs under SP (``--compare sp``, the control). The drift is the
parabolic optimum's move in log2 units from width 64 to 256 (``mutune.sweep``'s analysis).

Target (stated before the run): µP's optimum moves by at most 0.5 log2 over the 4× width, and SP's
by at least 1 log2 (it falls with width: SP's hidden LR is not divided by the width). Sized for 2
shared CPU cores: 54 runs, about 15 minutes with one worker; --quick: tiny shapes, a correctness
run in about a minute.

    PYTHONPATH=. python bench/vit_width.py --workers 2
    PYTHONPATH=. python bench/vit_width.py --quick
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import torch

import mutune
from mutune import config

ROOT = Path(__file__).resolve().parents[1]
OVERRIDES = [
    "train.steps=100",
    "train.batch_size=32",
    "train.warmup_steps=10",
    "train.eval_every=100",
    "train.eval_batches=8",
]
WIDTHS = [64, 128, 256]
GRID = [2.0**k for k in range(-13, -4)]
QUICK = [
    "model.width=32",
    "model.base_width=32",
    "train.steps=8",
    "train.batch_size=8",
    "train.warmup_steps=2",
    "train.eval_every=8",
    "train.eval_batches=1",
]
QUICK_WIDTHS, QUICK_GRID = [32, 64], [2.0**k for k in (-10, -8, -6)]
TARGET_MUP, TARGET_SP = 0.5, 1.0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--run-dir", type=Path, default=Path("runs/bench-vit-width"))
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    overrides, widths, grid = (QUICK, QUICK_WIDTHS, QUICK_GRID) if args.quick else (OVERRIDES, WIDTHS, GRID)
    spec = config.load_spec(ROOT / "configs" / "vit.yaml", overrides)
    print(
        f"target: |µP LR drift| <= {TARGET_MUP} log2 and |SP LR drift| >= {TARGET_SP} log2 over widths "
        f"{widths[0]}->{widths[-1]} ({spec.train.steps} steps of {spec.train.batch_size} images, "
        f"{len(grid)} LRs 2^{math.log2(grid[0]):.0f}..2^{math.log2(grid[-1]):.0f}, 1 seed)"
    )
    t0 = time.perf_counter()
    res = mutune.sweep(
        spec, "lr", widths=widths, values=grid, compare="sp", run_dir=args.run_dir, workers=args.workers
    )
    a = res.analysis
    for o in a.optima:
        print(
            f"  {o.parametrization:>4} width {o.width:>4}: optimum lr {o.value_refined:.4g} (log2 "
            f"{o.x_refined:+.2f}, {'interior' if o.interior else 'AT THE GRID EDGE'}), loss {o.loss_refined:.4f}"
        )
    drift = {p: (a.drift[p].drift if p in a.drift else float("nan")) for p in ("mup", "sp")}
    for p, d in drift.items():
        print(f"  {p} drift of the optimum {widths[0]}->{widths[-1]}: {d:+.2f} log2")
    met = abs(drift["mup"]) <= TARGET_MUP and abs(drift["sp"]) >= TARGET_SP
    print(f"  target: {'met' if met else 'MISSED'} (µP {drift['mup']:+.2f}, SP {drift['sp']:+.2f})")
    print(f"{time.perf_counter() - t0:.0f}s -> {args.run_dir / 'checks'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

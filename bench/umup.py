"""u-µP next to µP on the built-in corpus: (a) does the LR optimum stay put over width, (b) is an
LR-only search closer to a full search under u-µP than under µP ("fewer hyperparameters")?

(a) ``mutune sweep`` (the Python API) of the LR over widths 64, 128, 256 for the quickstart GPT
(depth 2, head_dim 32, 120 AdamW steps) under µP and under u-µP, each on an octave grid around its
own LR scale (u-µP's η is ~100x µP's: unit weights), the same widths, steps and data; the drift of
the parabolic optimum from 64 to 256 in log2 units.

(b) ``mutune search`` on the width-64 proxy (random sampler, the same seed and trial count) of the LR
alone and of the full default space, under each parametrization; the best proxy loss of each, then
its winner trained at width 256 (the target) with the hyperparameters unchanged. The gap
full − LR-only (proxy, and target) under each.

Targets (stated before the runs): (a) |u-µP drift| <= 0.5 log2 over 4x width, as µP's; (b) the
LR-only-vs-full gap in best proxy loss smaller under u-µP than under µP. Sized for 2 shared CPU
cores (1 seed, 120 steps, 7 LRs per grid, 12 trials per search: about 40 min on 2 idle cores;
--quick: tiny shapes, a correctness run in about a minute).

    PYTHONPATH=. python bench/umup.py --workers 2
    PYTHONPATH=. python bench/umup.py --quick
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import torch

import mutune
from mutune import config

BASE = {
    "name": "umup-bench",
    "seed": 0,
    "model": {"family": "gpt", "width": 64, "base_width": 64, "depth": 2, "head_dim": 32, "seq_len": 128},
    "data": {"corpus": "stdlib"},
    "train": {"steps": 120, "batch_size": 16, "warmup_steps": 12, "eval_every": 120, "eval_batches": 8},
    "hparams": {"lr": 0.01, "init_std": 0.05},
    "search": {"n_trials": 12, "seed": 0},
}
WIDTHS, TARGET = [64, 128, 256], 256
GRIDS = {"mup": [2.0**k for k in range(-10, -3)], "umup": [2.0**k for k in range(-3, 4)]}
QUICK = {
    **BASE,
    "model": {**BASE["model"], "width": 32, "base_width": 32, "head_dim": 16, "seq_len": 32},
    "train": {
        **BASE["train"],
        "steps": 16,
        "batch_size": 4,
        "warmup_steps": 2,
        "eval_every": 16,
        "eval_batches": 2,
    },
    "search": {"n_trials": 3, "seed": 0},
}
QUICK_WIDTHS, QUICK_TARGET = [32, 64], 64
QUICK_GRIDS = {"mup": [2.0**k for k in (-8, -6, -4)], "umup": [2.0**k for k in (-2, 0, 2)]}
TARGET_DRIFT = 0.5


def drift(
    data: dict, parametrization: str, widths: list[int], lrs: list[float], run_dir: Path, workers: int
) -> float:
    spec = config.spec_from_dict(data, [f"model.parametrization={parametrization}"])
    res = mutune.sweep(
        spec, "lr", widths=widths, values=lrs, run_dir=run_dir / f"sweep-{parametrization}", workers=workers
    )
    a = res.analysis
    for o in a.optima:
        print(
            f"  {parametrization:>4} width {o.width:>4}: optimum lr {o.value_refined:.4g} "
            f"(log2 {o.x_refined:+.2f}, {'interior' if o.interior else 'AT THE GRID EDGE'}), loss {o.loss_refined:.4f}"
        )
    d = a.drift.get(parametrization)
    return float("nan") if d is None else d.drift


def search(
    data: dict, parametrization: str, lr_only: bool, target: int, run_dir: Path, workers: int
) -> tuple[float, float]:
    over = [f"model.parametrization={parametrization}", f"target.width={target}"]
    spec = config.spec_from_dict(data, over)
    if lr_only:
        spec = spec.edit({"search.space": {"lr": vars(spec.search.space["lr"])}})
    tag = f"{parametrization}-{'lr' if lr_only else 'full'}"
    res = mutune.search(spec.edit({"name": tag}), run_dir=run_dir / tag, workers=workers, skip_check=True)
    return float(res.best.provenance["loss"]), float(res.target.result.final_val_loss)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--run-dir", type=Path, default=Path("runs/bench-umup"))
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    data, widths, target, grids = (
        (QUICK, QUICK_WIDTHS, QUICK_TARGET, QUICK_GRIDS) if args.quick else (BASE, WIDTHS, TARGET, GRIDS)
    )
    print(
        f"targets: (a) |u-µP LR drift| <= {TARGET_DRIFT} log2 over widths {widths[0]}->{widths[-1]}; "
        "(b) the LR-only-vs-full gap in best proxy loss smaller under u-µP than under µP"
    )
    t0 = time.perf_counter()
    print(f"(a) LR sweeps, widths {widths}, {data['train']['steps']} steps, 1 seed")
    drifts = {p: drift(data, p, widths, grids[p], args.run_dir, args.workers) for p in ("mup", "umup")}
    for p, d in drifts.items():
        print(f"  {p} drift of the optimum {widths[0]}->{widths[-1]}: {d:+.2f} log2")
    ok_a = math.isfinite(drifts["umup"]) and abs(drifts["umup"]) <= TARGET_DRIFT
    print(
        f"  target (a): {'met' if ok_a else 'MISSED'} (u-µP {drifts['umup']:+.2f}, µP {drifts['mup']:+.2f})"
    )
    print(
        f"(b) searches of {data['search']['n_trials']} trials at width {data['model']['width']}, target width {target}"
    )
    gaps = {}
    for p in ("mup", "umup"):
        lr_proxy, lr_target = search(data, p, True, target, args.run_dir, args.workers)
        full_proxy, full_target = search(data, p, False, target, args.run_dir, args.workers)
        gaps[p] = lr_proxy - full_proxy
        print(
            f"  {p:>4}: LR only: proxy {lr_proxy:.4f}, target {lr_target:.4f}; full space: proxy {full_proxy:.4f}, "
            f"target {full_target:.4f}; gap (LR only - full): proxy {lr_proxy - full_proxy:+.4f}, "
            f"target {lr_target - full_target:+.4f}"
        )
    ok_b = gaps["umup"] < gaps["mup"]
    print(
        f"  target (b): {'met' if ok_b else 'MISSED'} (gap u-µP {gaps['umup']:+.4f} vs µP {gaps['mup']:+.4f})"
    )
    print(f"{time.perf_counter() - t0:.0f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

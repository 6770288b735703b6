"""Depth transfer: does the optimal learning rate stay put as the model gets deeper (CompleteP)?

Three measurements on the built-in corpus (byte-level GPT, head_dim 32, seq 128, batch 16, AdamW,
cosine schedule), each run with depth scaling (CompleteP, α = 1, base depth 2) and without (α = 0):

1. `mutune sweep --depths 2,4,8,16` at width 64: the learning-rate optimum per depth and its drift
   from depth 2 to 16 (8×), in log2 units.
2. From the same sweep: the loss at each depth's optimum (deeper should be better at the same HPs).
3. One two-axis transfer: a random search on a (width 64, depth 2) proxy, its winner applied
   unchanged to a (width 256, depth 8) target, with CompleteP and without; the target losses over seeds.

Targets (stated before the runs, from issue 11): CompleteP drift ≤ 0.5 log2 with every optimum
interior; the control's drift is reported as measured; CompleteP's loss at the optimum falls with
depth; the CompleteP target loss ≤ the uncorrected one.

    PYTHONPATH=. python bench/depth_transfer.py --workers 2      # ~30 min on 2 idle CPU cores
    PYTHONPATH=. python bench/depth_transfer.py --quick          # seconds: a correctness run

Resumable: the sweeps and the search keep their studies in the run directory.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

import torch

from mutune import config, search, sweep
from mutune.train import train

ROOT = Path(__file__).resolve().parents[1]

FULL = {
    "name": "depth-transfer",
    "seed": 0,
    "model": {"family": "gpt", "width": 64, "base_width": 64, "depth": 2, "head_dim": 32, "seq_len": 128},
    "data": {"corpus": "stdlib"},
    "train": {"steps": 120, "batch_size": 16, "warmup_steps": 12, "eval_every": 120, "eval_batches": 8},
    "hparams": {"lr": 0.01, "init_std": 0.05},
    "search": {"n_trials": 16},
}
FULL_DEPTHS = [2, 4, 8, 16]
FULL_LRS = [2.0**k for k in range(-12, -2)]  # 2^-12 ... 2^-3
FULL_TARGET = {"model.width": 256, "model.depth": 8}
FULL_TARGET_SEEDS = 2

QUICK = {
    **FULL,
    "name": "depth-transfer-quick",
    "model": {**FULL["model"], "width": 32, "base_width": 32, "head_dim": 16, "seq_len": 32},
    "train": {**FULL["train"], "steps": 12, "batch_size": 4, "warmup_steps": 2, "eval_every": 12},
    "search": {"n_trials": 3},
}
QUICK_DEPTHS = [2, 4]
QUICK_LRS = [2.0**k for k in (-8, -6, -4)]
QUICK_TARGET = {"model.width": 64, "model.depth": 4}
QUICK_TARGET_SEEDS = 1

TARGET_DRIFT = 0.5
ALPHAS = {"CompleteP": 1.0, "no depth scaling": 0.0}


def depth_sweeps(spec, depths, lrs, run_dir: Path, workers: int) -> dict[str, sweep.SweepResult]:
    out = {}
    for label, alpha in ALPHAS.items():
        s = spec.edit({"model.depth_alpha": alpha, "name": f"{spec.name}-a{alpha:g}"})
        out[label] = sweep.sweep(
            s, "lr", None, lrs, depths=depths, run_dir=run_dir / f"a{alpha:g}", workers=workers
        )
    return out


def two_axis(
    spec, target: dict, seeds: int, run_dir: Path, workers: int
) -> tuple[dict, dict[str, list[float]]]:
    """Search the proxy once (at its own depth the two parametrizations coincide), then train the
    target with the winning HPs under each, over ``seeds`` seeds."""
    res = search.search(
        spec.edit({"model.base_depth": 2}), run_dir=run_dir / "proxy", transfer=False, workers=workers
    )
    hp = res.best.hparams
    losses: dict[str, list[float]] = {}
    for label, alpha in ALPHAS.items():
        losses[label] = []
        for seed in range(seeds):
            t = spec.edit({**target, "model.base_depth": 2, "model.depth_alpha": alpha, "seed": seed})
            r = train(t, hp)
            losses[label].append(math.inf if r.diverged else r.final_val_loss)
    return res.best.to_dict(), losses


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="tiny shapes: a correctness run")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--run-dir", type=Path, default=None)
    ap.add_argument("--threads", type=int, default=1, help="torch threads in this process")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    q = args.quick
    spec = config.spec_from_dict(QUICK if q else FULL)
    depths, lrs = (QUICK_DEPTHS, QUICK_LRS) if q else (FULL_DEPTHS, FULL_LRS)
    target, seeds = (QUICK_TARGET, QUICK_TARGET_SEEDS) if q else (FULL_TARGET, FULL_TARGET_SEEDS)
    run_dir = args.run_dir or ROOT / "bench" / "runs" / spec.name
    print(f"# PYTHONPATH=. python bench/depth_transfer.py {' '.join(sys.argv[1:] if argv is None else argv)}")
    print(f"# {time.strftime('%Y-%m-%d %H:%M')}, run dir {run_dir}")
    m, t = spec.model, spec.train
    print(
        f"GPT width {m.width}, head_dim {m.head_dim}, seq {m.seq_len}, batch {t.batch_size}, {t.steps} AdamW "
        f"steps ({t.schedule}), base depth 2; lr grid 2^{math.log2(lrs[0]):.0f}..2^{math.log2(lrs[-1]):.0f}"
    )
    t0 = time.perf_counter()
    sweeps = depth_sweeps(spec, depths, lrs, run_dir, args.workers)
    print(f"{'':<17} {'depth':>5} {'argmin lr':>10} {'log2 refined':>12} {'loss@opt':>9} {'interior':>8}")
    for label, res in sweeps.items():
        for o in res.analysis.optima:
            print(
                f"{label:<17} {o.depth:>5} {o.value:>10.4g} {o.x_refined:>12.2f} {o.loss:>9.4f} "
                f"{'yes' if o.interior else 'no':>8}"
            )
    cp, off = sweeps["CompleteP"].analysis, sweeps["no depth scaling"].analysis
    best, losses = two_axis(spec, target, seeds, run_dir, args.workers)
    print(
        f"proxy search: best trial #{best['provenance']['trial_number']} loss {best['provenance']['loss']:.4f}"
    )
    for label, ls in losses.items():
        mean = statistics.fmean(ls)
        print(
            f"target width {target['model.width']} depth {target['model.depth']}, {label}: {mean:.4f} ({ls})"
        )
    print(f"{(time.perf_counter() - t0) / 60:.1f} min wall")
    d = cp.drift["mup"]
    interior = all(o.interior for o in cp.optima)
    at_opt = [o.loss for o in cp.optima]
    cp_target, off_target = (statistics.fmean(losses[k]) for k in ALPHAS)
    checks = [
        (
            f"CompleteP drift |{d.drift:+.2f}| <= {TARGET_DRIFT}",
            abs(d.drift) <= TARGET_DRIFT,
            f"by {abs(d.drift) - TARGET_DRIFT:.2f}",
        ),
        ("every CompleteP optimum interior", interior, "the drift is only a bound"),
        ("CompleteP loss at the optimum falls with depth", cp.wider["mup"].ok_at_optimum, f"{at_opt}"),
        (
            "CompleteP target loss <= no depth scaling",
            cp_target <= off_target,
            f"by {cp_target - off_target:.4f}",
        ),
    ]
    print(f"INFO   no depth scaling: drift {off.drift['mup'].drift:+.2f} log2 (control, no target)")
    for text, ok, miss in checks:
        print(f"{'MET   ' if ok else 'MISSED'} {text}" + ("" if ok else f" ({miss})"))
    for label, res in sweeps.items():
        print(f"figure ({label}): {res.files['figure']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Transfer fidelity: the µTransfer test of TP5 Figure 1 on the built-in corpus.

Runs ``mutune sweep`` (the Python API, the same code as the CLI) for a byte-level GPT, depth 2,
head_dim 32, µP with base width 64 and its SP twin, widths 64 -> 512 (8x), over a log2 grid of
learning rates, and prints per width the grid argmin and the parabolic optimum, the drift of the
optimum from width 64 to 512 in log2 units, and the loss at the optimum against width.

Targets (stated before the runs): µP drift <= 0.5 log2, SP drift >= 2 log2 (for Muon: reported as
measured, no target), µP loss at the optimum falling monotonically with width, and every optimum
interior to the grid (else the drift is only a bound).

    PYTHONPATH=. python bench/transfer_fidelity.py --workers 2       # ~30-60 min on 2 CPU cores
    PYTHONPATH=. python bench/transfer_fidelity.py --optimizer muon --workers 2   # widths 64..256
    PYTHONPATH=. python bench/transfer_fidelity.py --quick           # widths 32/64, seconds

Resumable: re-running the same command trains only the grid points not yet finished.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch

from mutune import config, sweep

ROOT = Path(__file__).resolve().parents[1]

FULL = {
    "name": "transfer-fidelity",
    "seed": 0,
    "model": {"family": "gpt", "width": 64, "base_width": 64, "depth": 2, "head_dim": 32, "seq_len": 128},
    "data": {"corpus": "stdlib"},
    "train": {
        "steps": 120,
        "batch_size": 16,
        "warmup_steps": 12,
        "schedule": "cosine",
        "eval_every": 120,
        "eval_batches": 8,
    },
    "hparams": {"lr": 0.01, "init_std": 0.05},
}
FULL_WIDTHS = [64, 128, 256, 512]
FULL_LRS = [2.0**k for k in range(-13, -3)]  # 2^-13 ... 2^-4
# Muon: 64 -> 256 (4x, what 2 cores allow next to AdamW's 8x), a grid one octave wider upwards
MUON_WIDTHS = [64, 128, 256]
MUON_LRS = [2.0**k for k in range(-12, -1)]  # 2^-12 ... 2^-2

QUICK = {
    **FULL,
    "name": "transfer-fidelity-quick",
    "model": {**FULL["model"], "width": 32, "base_width": 32, "head_dim": 16, "seq_len": 32},
    "train": {**FULL["train"], "steps": 20, "batch_size": 8, "warmup_steps": 2, "eval_every": 20},
}
QUICK_WIDTHS = [32, 64]
QUICK_LRS = [2.0**k for k in (-8, -6, -4, -2)]

TARGET_MUP_DRIFT = 0.5
TARGET_SP_DRIFT = 2.0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="tiny widths and steps: a correctness run")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--run-dir", type=Path, default=None)
    ap.add_argument("--optimizer", default="adamw", help="adamw (issue 4's benchmark) or muon")
    ap.add_argument(
        "--threads", type=int, default=1, help="torch threads in this process (workers get cores/workers)"
    )
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    spec_dict, widths, lrs = (QUICK, QUICK_WIDTHS, QUICK_LRS) if args.quick else (FULL, FULL_WIDTHS, FULL_LRS)
    if args.optimizer == "muon" and not args.quick:
        widths, lrs = MUON_WIDTHS, MUON_LRS
    name = spec_dict["name"] + ("" if args.optimizer == "adamw" else f"-{args.optimizer}")
    spec = config.spec_from_dict({**spec_dict, "name": name}, [f"train.optimizer={args.optimizer}"])
    run_dir = args.run_dir or ROOT / "bench" / "runs" / spec.name
    cmd = "PYTHONPATH=. python bench/transfer_fidelity.py " + " ".join(sys.argv[1:] if argv is None else argv)
    print(f"# {cmd}")
    print(f"# {time.strftime('%Y-%m-%d %H:%M')}, run dir {run_dir}")
    t0 = time.perf_counter()
    res = sweep.sweep(
        spec, "lr", widths, lrs, seeds=args.seeds, compare="sp", run_dir=run_dir, workers=args.workers
    )
    wall = time.perf_counter() - t0
    a = res.analysis
    m = spec.model
    print(
        f"GPT depth {m.depth}, head_dim {m.head_dim}, base width {m.base_width}, seq {m.seq_len}, "
        f"batch {spec.train.batch_size}, {spec.train.steps} {args.optimizer} steps ({spec.train.schedule}), "
        f"{len(res.grid.seeds)} seed(s), lr grid 2^{math.log2(lrs[0]):.0f}..2^{math.log2(lrs[-1]):.0f}"
    )
    print(
        f"{len(res.runs)} runs ({res.n_run} trained now), {wall / 60:.1f} min wall, "
        f"{res.runs.seconds.sum() / 60:.1f} min of training"
    )
    print(f"{'par':<4} {'width':>5} {'argmin lr':>10} {'log2 refined':>12} {'loss@opt':>9} {'interior':>8}")
    for o in a.optima:
        print(
            f"{o.parametrization:<4} {o.width:>5} {o.value:>10.4g} {o.x_refined:>12.2f} {o.loss:>9.4f} "
            f"{'yes' if o.interior else 'no':>8}"
        )
    for par, w in a.wider.items():
        losses = ", ".join(f"{x:.4f}" for x in w.losses_at_optimum)
        at_choice = ", ".join(f"{x:.4f}" for x in w.losses_at_choice)
        print(f"{par} loss at each width's optimum: {losses}")
        print(f"{par} loss at the width-{widths[0]} choice lr={w.choice_value:.4g}: {at_choice}")
    mup, sp = a.drift["mup"], a.drift["sp"]
    mup_mono = a.wider["mup"].ok_at_optimum
    interior = all(o.interior for o in a.optima)
    checks = [
        (
            f"µP drift |{mup.drift:+.2f}| <= {TARGET_MUP_DRIFT}",
            abs(mup.drift) <= TARGET_MUP_DRIFT,
            f"by {abs(mup.drift) - TARGET_MUP_DRIFT:.2f} log2",
        ),
        (
            f"SP drift |{sp.drift:+.2f}| >= {TARGET_SP_DRIFT}",
            abs(sp.drift) >= TARGET_SP_DRIFT,
            f"by {TARGET_SP_DRIFT - abs(sp.drift):.2f} log2",
        ),
        (
            "µP loss at the optimum falls monotonically with width",
            mup_mono,
            f"rises by up to {a.wider['mup'].worst_increase_at_optimum:.4f}",
        ),
        ("every optimum interior to the grid", interior, "drift is a bound"),
    ]
    if args.optimizer != "adamw":  # no published SP drift to expect for this optimizer: report it
        print(f"INFO   SP drift {sp.drift:+.2f} log2 (no target)")
        checks = [c for c in checks if not c[0].startswith("SP drift")]
    for text, ok, miss in checks:
        print(f"{'MET   ' if ok else 'MISSED'} {text}" + ("" if ok else f" ({miss})"))
    print(f"figure: {res.files['figure']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

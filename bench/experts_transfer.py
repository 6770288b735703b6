"""Experts transfer: does the optimal learning rate of a mixture-of-experts GPT stay put as experts are
added (the experts axis) and as it widens (µP on the moe family)?

Three measurements on the built-in corpus (the moe family: byte-level GPT, depth 2, head_dim 32, seq
128, batch 16, every MLP a mixture with top_k 2, balancing loss 0.01, AdamW, cosine schedule):

1. Across experts: one LR sweep per expert count 2, 4, 8, 16 (base_experts 2: m_E = 1..8) at width
   64, µP: the optimum per count (parabola through the argmin and its neighbours), its drift from 2
   to 16 experts in log2 units, and the loss at each count's optimum.
2. Across width: `mutune sweep` at widths 64, 128, 256 with 4 experts, µP and its SP twin: the
   family's drift, as bench/transfer_fidelity.py measures it for the GPT.
3. Gradient clipping across experts: the global gradient norm as `train.grad_clip` measures it
   (rescaled to the base width), and the mixtures' share of it, at 2..16 experts, no clipping applied.

Targets (stated before the runs): µP drift across experts 2 -> 16 at most 0.5 log2 with every optimum
interior, and the loss at the optimum not rising with the expert count; µP drift across width 64 ->
256 at most 0.5 log2, interior, the loss at the optimum falling with width (SP's drift reported as
measured); the clipping norm's phase medians within 25% of 2 experts' at every count (no clip
factor along the experts: this is what would say one is needed).

    PYTHONPATH=. python bench/experts_transfer.py --workers 2     # ~40 min on 2 shared CPU cores
    PYTHONPATH=. python bench/experts_transfer.py --quick         # seconds: a correctness run

Sized for 2 shared CPU cores: width 64 runs take ~10 s (120 steps), width 256 ~50 s, so the
expert sweeps (4 counts x 8 LRs x 2 seeds) and the width sweep (3 widths x 8 LRs x 2
parametrizations) fit in about 40 minutes with 2 workers. Resumable: the sweeps keep their studies
in the run directory.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

from mutune import config, data, sweep
from mutune.mup import optim
from mutune.train import build
from mutune.train.parallel import Distributed

ROOT = Path(__file__).resolve().parents[1]

FULL = {
    "name": "experts-transfer",
    "seed": 0,
    "model": {
        "family": "moe",
        "width": 64,
        "base_width": 64,
        "depth": 2,
        "head_dim": 32,
        "seq_len": 128,
        "n_experts": 2,
        "top_k": 2,
        "balance": 0.01,
    },
    "data": {"corpus": "stdlib"},
    "train": {"steps": 120, "batch_size": 16, "warmup_steps": 12, "eval_every": 120, "eval_batches": 8},
    "hparams": {"lr": 0.01, "init_std": 0.05},
}
FULL_EXPERTS = [2, 4, 8, 16]
FULL_LRS = [2.0**k for k in range(-11, -3)]  # 2^-11 ... 2^-4
FULL_SEEDS = 2
FULL_WIDTHS = [64, 128, 256]
FULL_WIDTH_EXPERTS = 4
FULL_CLIP_STEPS = 60

QUICK = {
    **FULL,
    "name": "experts-transfer-quick",
    "model": {**FULL["model"], "width": 32, "base_width": 32, "head_dim": 16, "seq_len": 32},
    "train": {**FULL["train"], "steps": 12, "batch_size": 4, "warmup_steps": 2, "eval_every": 12},
}
QUICK_EXPERTS = [2, 4]
QUICK_LRS = [2.0**k for k in (-8, -6, -4)]
QUICK_SEEDS = 1
QUICK_WIDTHS = [32, 64]
QUICK_WIDTH_EXPERTS = 2
QUICK_CLIP_STEPS = 6

TARGET_DRIFT = 0.5
TARGET_CLIP = 0.25


def experts_sweeps(spec, counts, lrs, seeds, run_dir: Path, workers: int) -> dict[int, sweep.Optimum]:
    """One LR sweep per expert count at the spec's width; each count's optimum."""
    base = counts[0]
    out = {}
    for n in counts:
        s = spec.edit({"model.n_experts": n, "model.base_experts": base, "name": f"{spec.name}-e{n}"})
        res = sweep.sweep(
            s, "lr", [spec.model.width], lrs, seeds=seeds, run_dir=run_dir / f"e{n}", workers=workers
        )
        out[n] = res.analysis.optima[0]
    return out


def clip_norms(spec, counts, steps: int) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Per count and step: the global gradient norm as clipping measures it, and the mixtures' part
    of it (plain), with no clipping applied."""
    out = {}
    for n in counts:
        s = spec.edit(
            {
                "model.n_experts": n,
                "model.base_experts": counts[0],
                "train.steps": steps,
                "train.grad_clip": 0.0,
                "hparams.lr": 2.0**-7,
            }
        )
        run = build(s, s.hparams, Distributed(), torch.device("cpu"))
        mixture = [p for name, p in run.model.named_parameters() if ".mlp." in name]
        total, part = [], []
        for _ in range(steps):
            x, y = data.get_batch(run.corpus.train, s.train.batch_size, s.model.seq_len, run.rng, run.device)
            run.model(x, y)[1].backward()
            total.append(optim.grad_norm(run.opt).item())
            part.append(torch.nn.utils.get_total_norm([p.grad for p in mixture]).item())
            run.opt.step()
            run.opt.zero_grad(set_to_none=True)
            run.sched.step()
        out[n] = (np.array(total), np.array(part))
    return out


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
    counts, lrs, seeds = (
        (QUICK_EXPERTS, QUICK_LRS, QUICK_SEEDS) if q else (FULL_EXPERTS, FULL_LRS, FULL_SEEDS)
    )
    widths, width_experts = (QUICK_WIDTHS, QUICK_WIDTH_EXPERTS) if q else (FULL_WIDTHS, FULL_WIDTH_EXPERTS)
    clip_steps = QUICK_CLIP_STEPS if q else FULL_CLIP_STEPS
    run_dir = args.run_dir or ROOT / "bench" / "runs" / spec.name
    print(
        f"# PYTHONPATH=. python bench/experts_transfer.py {' '.join(sys.argv[1:] if argv is None else argv)}"
    )
    print(f"# {time.strftime('%Y-%m-%d %H:%M')}, run dir {run_dir}")
    m, t = spec.model, spec.train
    print(
        f"moe GPT width {m.width}, depth {m.depth}, head_dim {m.head_dim}, seq {m.seq_len}, top_k {m.top_k}, "
        f"batch {t.batch_size}, {t.steps} AdamW steps ({t.schedule}); lr grid "
        f"2^{math.log2(lrs[0]):.0f}..2^{math.log2(lrs[-1]):.0f}, {seeds} seed(s)"
    )
    print(
        f"targets: µP drift across experts {counts[0]} -> {counts[-1]} <= {TARGET_DRIFT} log2, interior, loss at "
        f"the optimum not rising; µP drift across width {widths[0]} -> {widths[-1]} <= {TARGET_DRIFT} log2, "
        f"interior, loss falling; clipping norm medians within {TARGET_CLIP:.0%} of {counts[0]} experts'"
    )
    t0 = time.perf_counter()

    # 1. across experts
    optima = experts_sweeps(spec, counts, lrs, seeds, run_dir / "experts", args.workers)
    print(f"\n1. across experts (width {m.width}, base_experts {counts[0]})")
    print(f"{'experts':>7} {'argmin lr':>10} {'log2 refined':>12} {'loss@opt':>9} {'interior':>8}")
    for n, o in optima.items():
        print(
            f"{n:>7} {o.value:>10.4g} {o.x_refined:>12.2f} {o.loss:>9.4f} {'yes' if o.interior else 'no':>8}"
        )
    e_drift = optima[counts[-1]].x_refined - optima[counts[0]].x_refined
    e_interior = all(o.interior for o in optima.values())
    e_losses = [optima[n].loss for n in counts]
    e_falls = all(b <= a + 1e-3 for a, b in zip(e_losses, e_losses[1:], strict=False))

    # 2. across width
    ws = spec.edit({"model.n_experts": width_experts, "name": f"{spec.name}-width"})
    wres = sweep.sweep(
        ws, "lr", widths, lrs, seeds=1, compare="sp", run_dir=run_dir / "width", workers=args.workers
    )
    a = wres.analysis
    print(f"\n2. across width ({width_experts} experts, 1 seed)")
    print(f"{'':<5} {'width':>5} {'argmin lr':>10} {'log2 refined':>12} {'loss@opt':>9} {'interior':>8}")
    for o in a.optima:
        label = "µP" if o.parametrization == "mup" else "SP"
        print(
            f"{label:<5} {o.width:>5} {o.value:>10.4g} {o.x_refined:>12.2f} {o.loss:>9.4f} "
            f"{'yes' if o.interior else 'no':>8}"
        )
    w_drift, sp_drift = a.drift["mup"].drift, a.drift["sp"].drift
    w_interior = all(o.interior for o in a.optima if o.parametrization == "mup")
    w_falls = a.wider["mup"].ok_at_optimum

    # 3. clipping across experts
    norms = clip_norms(spec, counts, clip_steps)
    phases = {
        "warmup": slice(0, t.warmup_steps),
        "middle": slice(clip_steps // 3, 2 * clip_steps // 3),
        "end": slice(2 * clip_steps // 3, clip_steps),
    }
    ref = {p: float(np.median(norms[counts[0]][0][s])) for p, s in phases.items()}
    print(f"\n3. gradient norm across experts (lr 2^-7, {clip_steps} steps, no clipping): median per phase")
    print(f"{'experts':>7} {'norm':10s} " + " ".join(f"{p:>8s}" for p in phases))
    worst = 0.0
    for n, (total, part) in norms.items():
        med = {p: float(np.median(total[s])) for p, s in phases.items()}
        worst = max(worst, *(abs(med[p] / ref[p] - 1) for p in phases))
        print(f"{n:>7} {'clipping':10s} " + " ".join(f"{med[p]:8.3f}" for p in phases))
        print(
            f"{n:>7} {'mixtures':10s} "
            + " ".join(f"{float(np.median(part[s])):8.3f}" for s in phases.values())
        )
    print(f"\n{(time.perf_counter() - t0) / 60:.1f} min wall")

    checks = [
        (
            f"µP drift across experts |{e_drift:+.2f}| <= {TARGET_DRIFT}",
            abs(e_drift) <= TARGET_DRIFT,
            f"by {abs(e_drift) - TARGET_DRIFT:.2f}",
        ),
        ("every optimum across experts interior", e_interior, "the drift is only a bound"),
        (
            "loss at the optimum not rising with the expert count",
            e_falls,
            f"{[round(x, 4) for x in e_losses]}",
        ),
        (
            f"µP drift across width |{w_drift:+.2f}| <= {TARGET_DRIFT}",
            abs(w_drift) <= TARGET_DRIFT,
            f"by {abs(w_drift) - TARGET_DRIFT:.2f}",
        ),
        ("every µP optimum across width interior", w_interior, "the drift is only a bound"),
        ("µP loss at the optimum falls with width", w_falls, "see the table"),
        (
            f"clipping norm within {TARGET_CLIP:.0%} of {counts[0]} experts' ({worst:.0%})",
            worst <= TARGET_CLIP,
            f"by {100 * (worst - TARGET_CLIP):.0f} points",
        ),
    ]
    print(f"INFO   SP drift across width: {sp_drift:+.2f} log2 (control, no target)")
    for text, ok, miss in checks:
        print(f"{'MET   ' if ok else 'MISSED'} {text}" + ("" if ok else f" ({miss})"))
    print(f"figure (width): {wres.files['figure']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

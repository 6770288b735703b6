"""Horizon transfer: does an LR law fitted on short proxy runs predict the optimum of a long run?

On the built-in corpus, a byte-level GPT (µP, base width 64, depth 2, head_dim 32): fit the steps
law on the width-64 proxy from three short horizons (mutune's own fit, :func:`mutune.laws_run.fit_laws`:
an LR line search at each, LR* by the parabola in log2 LR), predict LR* at 8× the longest horizon,
then measure the optimum there by an LR grid at width 64, and train the width-128 target at that
horizon twice: with the law applied, and with the proxy's LR* copied unchanged.

Targets (stated before the runs):
  1. predicted log2 LR* within 0.5 of the one measured at width 64;
  2. the width-128 target's final loss with the law applied <= its loss with the LR copied.
The fitted exponent (LR* ∝ steps^k) is printed with its 95% interval, next to the literature's.

Sized for 2 shared CPU cores (the issue's design, 100/200/400 -> 3200 steps with width-256 points,
is ~10x this): horizons 50/100/200 -> 1600 steps, target width 128 instead of 256, one seed.

    PYTHONPATH=. OMP_NUM_THREADS=1 python bench/horizon_transfer.py      # ~25-50 min on 2 cores
    PYTHONPATH=. python bench/horizon_transfer.py --quick                # tiny, seconds (CI)

With ``--wsd`` (issue 26): every run a WSD run (20% 1-sqrt cooldown), the law fitted up to 400
steps (100/200/400) from cooldown branches (each LR of a line search trained once to 400 steps, its
100- and 200-step losses from branches), two seeds per point (the default under WSD), and LR*
predicted and measured at 1600 steps (4x the longest). Target (2) then compares what mutune trains
(the law where its interval excludes 0, else the copied LR: ``laws.apply_laws``) with the copy.

    PYTHONPATH=. OMP_NUM_THREADS=1 python bench/horizon_transfer.py --wsd   # ~1 h on 2 busy cores

Resumable: every finished run is kept in <run-dir>/laws/runs.csv (fit) and <run-dir>/runs.csv
(the long runs); re-running trains only what is missing.
"""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import replace
from pathlib import Path

import torch
import yaml

from mutune import config, laws, laws_run
from mutune.events import Events
from mutune.train import train

ROOT = Path(__file__).resolve().parents[1]

FULL = {
    "name": "horizon-transfer",
    "seed": 0,
    "model": {"family": "gpt", "width": 64, "base_width": 64, "depth": 2, "head_dim": 32, "seq_len": 128},
    "data": {"corpus": "stdlib"},
    "train": {
        "steps": 200,
        "batch_size": 16,
        "warmup_steps": 10,
        "schedule": "cosine",
        "eval_every": 200,
        "eval_batches": 16,
    },
    "hparams": {"lr": 0.01, "init_std": 0.05},
    "search": {"laws": {"steps": [0.25, 0.5, 1.0], "lr_step": 0.5, "lr_points": 5}},
}
FULL_LONG, FULL_TARGET_WIDTH = 8.0, 128  # 1600 steps, the target at width 128

QUICK = {
    **FULL,
    "name": "horizon-transfer-quick",
    "model": {**FULL["model"], "width": 32, "base_width": 32, "head_dim": 16, "seq_len": 32},
    "train": {
        **FULL["train"],
        "steps": 16,
        "batch_size": 4,
        "warmup_steps": 2,
        "eval_every": 16,
        "eval_batches": 2,
    },
    "search": {"laws": {"steps": [0.5, 1.0], "lr_step": 1.0, "lr_points": 3}},
}
QUICK_LONG, QUICK_TARGET_WIDTH = 2.0, 64

# --wsd: WSD everywhere, the law from cooldown branches with 2 seeds, fitted to 400 steps, 1600 predicted
FULL_WSD = {
    **FULL,
    "name": "horizon-transfer-wsd",
    "train": {**FULL["train"], "steps": 400, "eval_every": 400, "schedule": "wsd"},
}
FULL_WSD_LONG = 4.0  # 1600 steps
QUICK_WSD = {
    **QUICK,
    "name": "horizon-transfer-wsd-quick",
    "train": {**QUICK["train"], "schedule": "wsd"},
    "search": {"laws": {"steps": [0.5, 1.0], "lr_step": 1.0, "lr_points": 3}},
}

# Bjorck et al. (ICLR 2025), "Scaling Optimal LR Across Token Horizons": LR*(D) = B·D^-β, fitted per model
# size (LLMs of 50M parameters and up); the β values were not retrievable here. Filatov et al. 2025 (arXiv 2510.03871, Scion
# optimizer) report η*(D) ∝ D^-0.28 at a fixed batch size.
LITERATURE = "Bjorck et al. 2025: LR* ∝ D^-β (β per model size); Filatov et al. 2025 (Scion): η* ∝ D^-0.28"


def long_loss(runs: laws_run.Runs, spec: config.Spec, lr: float, label: str) -> tuple[float, float]:
    """Final validation loss of ``spec`` at ``lr`` (from runs.csv, or trained now), and its seconds."""
    hp = replace(spec.hparams, lr=lr)
    key = laws_run.point_key(spec, hp, spec.seed)
    row = runs.get(key)
    if row is None:
        t0 = time.perf_counter()
        r = train(spec, hp)
        loss = math.inf if r.diverged else r.final_val_loss
        row = {"key": key, "axis": label, "multiple": 0, "steps": spec.train.steps}
        row.update(batch_size=spec.train.batch_size, lr=lr, weight_decay=hp.weight_decay, seed=spec.seed)
        row.update(loss=loss, flops=r.flops, seconds=time.perf_counter() - t0)
        runs.add(row)
        print(
            f"  {label} width {spec.model.width} steps {spec.train.steps} lr {lr:.5f}: loss {loss:.4f} "
            f"({row['seconds']:.0f}s)",
            flush=True,
        )
    return float(row["loss"]), float(row["seconds"])


class Printer(Events):
    def law_point(self, text: str) -> None:
        print("  " + text, flush=True)


DECAYS = [0.3, 1.0, 3.0, 10.0]  # λ at the proxy horizon: τ = 1/(η·λ·steps) from ~1.5 to ~0.05 of the run


def decay(spec: config.Spec, run_dir: Path, lr: float, long_mult: float, target_width: int) -> None:
    """--decay: does keeping AdamW's timescale (train.weight_decay_timescale) beat copying λ?

    The best λ at the proxy horizon on a grid (at the proxy's LR*), then the width-``target_width``
    target at ``long_mult``× the horizon with that λ copied and with λ / long_mult (η·λ·steps kept).
    Target (stated before the runs): the timescale λ's loss <= the copied λ's.
    """
    runs = laws_run.Runs(run_dir / "decay-runs.csv")

    def loss(s: config.Spec, wd: float, label: str) -> float:
        return long_loss(runs, s.edit({"hparams.weight_decay": wd}), lr, label)[0]

    print(
        f"weight decay: target timescale-λ loss <= copied-λ loss at {long_mult:g}x steps, width {target_width}"
    )
    short = [loss(spec, wd, "decay-grid") for wd in DECAYS]
    best = DECAYS[min(range(len(DECAYS)), key=lambda i: short[i])]
    for wd, v in zip(DECAYS, short, strict=True):
        print(f"  {spec.train.steps} steps, lr {lr:.5f}, weight_decay {wd:g}: loss {v:.4f}")
    steps = int(spec.train.steps * long_mult)
    tgt = spec.edit({"train.steps": steps, "train.eval_every": steps, "model.width": target_width})
    timescale = laws.timescale_decay(best, lr, spec.train.steps, lr, steps)
    copied, kept = loss(tgt, best, "decay-copied"), loss(tgt, timescale, "decay-timescale")
    none = loss(tgt, 0.0, "decay-none")  # the control: does decay matter here at all?
    verdict = "met" if kept <= copied else f"MISSED by {kept - copied:.4f}"
    print(
        f"width {target_width}, {steps} steps: weight_decay {best:g} copied: loss {copied:.4f}; "
        f"{timescale:.4g} (timescale kept): loss {kept:.4f}: {verdict}; control, no decay: loss {none:.4f}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="tiny shapes, seconds (CI)")
    ap.add_argument("--run-dir", type=Path, default=None)
    ap.add_argument("--decay", action="store_true", help="then measure the timescale weight decay too")
    ap.add_argument("--decay-only", action="store_true", help="the fit (cached), then only the decay part")
    ap.add_argument("--decay-width", type=int, default=None, help="the decay target's width [the target's]")
    ap.add_argument(
        "--wsd", action="store_true", help="WSD runs, the law from cooldown branches with 2 seeds (issue 26)"
    )
    args = ap.parse_args()
    torch.set_num_threads(1)
    base, long_mult, target_width = (
        (QUICK, QUICK_LONG, QUICK_TARGET_WIDTH) if args.quick else (FULL, FULL_LONG, FULL_TARGET_WIDTH)
    )
    if args.wsd:
        base, long_mult = (QUICK_WSD, QUICK_LONG) if args.quick else (FULL_WSD, FULL_WSD_LONG)
    spec = config.spec_from_dict(base)
    run_dir = args.run_dir or ROOT / "bench" / "runs" / spec.name
    run_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    ms = spec.search.laws.steps
    print(
        f"targets: |log2 LR*_pred - log2 LR*_meas| <= 0.5 at {long_mult:g}x the longest fitted horizon; "
        f"width-{target_width} loss with the law <= with the LR copied"
    )
    if args.wsd:
        print(
            "target (2) under --wsd: what mutune trains (the law where its 95% interval excludes 0, else the "
            "copied LR) <= the copied LR"
        )
    print(
        f"fitting the steps law at {[int(m * spec.train.steps) for m in ms]} steps, width {spec.model.width}, "
        f"{spec.train.schedule} schedule, {laws_run.seeds_of(spec)} seed(s) per point"
        f"{', horizons from cooldown branches' if laws_run.branched(spec, 'steps') else ''}"
    )

    # the laws are fitted around a best.yaml, as after a search: here the spec's own hparams, written once
    around = config.Best(spec.hparams, {"trial_number": None})
    if not (run_dir / "best.yaml").is_file():
        (run_dir / "best.yaml").write_text(
            yaml.safe_dump(around.to_dict(), sort_keys=False, allow_unicode=True)
        )
    best = laws_run.fit_laws(spec, run_dir, around, Printer())
    law = laws.Law.from_dict("steps", best.laws["steps"])
    lr_short = next(p["lr"] for p in law.points if p["multiple"] == max(ms))  # the proxy's own LR*
    long_steps = int(spec.train.steps * long_mult)
    lr_pred = law.lr_at(long_mult)
    iv = law.interval
    print(
        f"fitted exponent k = {law.exponent:.3f} (LR* ∝ steps^k), 95% interval "
        f"{'none (2 points)' if iv is None else f'[{iv[0]:.3f}, {iv[1]:.3f}]'}; β = -k = {-law.exponent:.3f}"
    )
    for p in law.points:
        print(
            f"  steps {p['train.steps']}: LR* {p['lr']:.5f} (log2 {math.log2(p['lr']):.2f})"
            f"{'' if p['interior'] else ' (at the grid edge: ' + p['note'] + ')'}"
        )
    print(
        f"predicted LR* at {long_steps} steps: {lr_pred:.5f} (log2 {math.log2(lr_pred):.2f}); "
        f"copied: {lr_short:.5f}"
    )
    if args.decay_only:
        return decay(spec, run_dir, lr_short, long_mult, args.decay_width or target_width)

    runs = laws_run.Runs(run_dir / "runs.csv")
    long_spec = spec.edit({"train.steps": long_steps, "train.eval_every": long_steps})
    step = spec.search.laws.lr_step
    lrs, losses = laws_run.line_search(
        lambda lr: long_loss(runs, long_spec, lr, "grid")[0],
        lr_pred,
        step,
        spec.search.laws.lr_points,
        max_extra=2,
    )
    meas = laws.lr_optimum(lrs, losses)
    print(f"measured at width {spec.model.width}, {long_steps} steps:")
    for a, b in zip(lrs, losses, strict=True):
        print(f"  lr {a:.5f} (log2 {math.log2(a):.2f}): loss {b:.4f}")
    gap = math.log2(lr_pred) - math.log2(meas.lr)
    print(
        f"measured LR* {meas.lr:.5f} (log2 {math.log2(meas.lr):.2f}){'' if meas.interior else ' ' + meas.note}; "
        f"predicted - measured = {gap:+.2f} log2 (target |.| <= 0.5: {'met' if abs(gap) <= 0.5 else 'MISSED'}); "
        f"copied - measured = {math.log2(lr_short) - math.log2(meas.lr):+.2f} log2"
    )

    tgt = long_spec.edit({"model.width": target_width})
    loss_law, _ = long_loss(runs, tgt, lr_pred, "target-law")
    loss_copy, _ = long_loss(runs, tgt, lr_short, "target-copied")
    verdict = "met" if loss_law <= loss_copy else f"MISSED by {loss_law - loss_copy:.4f}"
    print(
        f"width {target_width}, {long_steps} steps: loss with the law {loss_law:.4f} (lr {lr_pred:.5f}) vs copied "
        f"{loss_copy:.4f} (lr {lr_short:.5f}): {verdict}"
    )
    # what a transfer trains: the law only where the proxy determined it (its interval excludes 0)
    lr_mutune, adjustments, _ = laws.apply_laws(
        {"steps": best.laws["steps"]}, lr_short, {"steps": spec.train.steps}, {"steps": long_steps}
    )
    applied = all(a.applied for a in adjustments)
    loss_mutune = loss_law if applied else loss_copy
    verdict = "met" if loss_mutune <= loss_copy else f"MISSED by {loss_mutune - loss_copy:.4f}"
    print(
        f"what mutune transfers: {'the law' if applied else 'the copied LR (the interval includes 0)'}, lr "
        f"{lr_mutune:.5f}: loss {loss_mutune:.4f} vs copied {loss_copy:.4f}: {verdict}"
    )
    fit_flops = sum(float(law["flops"]) for law in best.laws.values())
    separate = sum(float(law.get("separate_flops") or law["flops"]) for law in best.laws.values())
    print(
        f"law fit compute: {fit_flops:.3g} FLOPs (separate runs of each horizon: {separate:.3g}, "
        f"{fit_flops / separate:.2f}x); literature: {LITERATURE}"
    )
    if args.decay:
        decay(spec, run_dir, lr_short, long_mult, args.decay_width or target_width)
    print(f"wall time {time.perf_counter() - t0:.0f}s")


if __name__ == "__main__":
    main()

"""µTransfer vs tuning the target directly, at equal and larger compute (TP5's Pareto view).

µTransfer: a random search of ``n`` trials on a width-64 µP proxy, then one run of the winner at
width 512. Direct: a random search at width 512 with 1x, 3x and 10x the compute µTransfer spent
(search + target run), in trials of the same length. Both search the default space (lr, init_std,
alpha_in, alpha_out, alpha_attn; log-uniform) with mutune's seeded random sampler.

Repeats without re-running everything: random search over a pool is a random subset of it, so
the expected result of a budget-k search is an exact average over all k-subsets of a pool of N
configurations (the "expected validation performance" estimator of Dodge et al., 2019):

- direct, k trials: E[min of k of the N pool losses] = sum_r l_(r) C(N-r, k-1) / C(N, k);
- µTransfer, n proxy trials: the subset's proxy winner has proxy rank r with probability
  C(N-r, n-1) / C(N, n); the top-ranked proxy configurations are trained at width 512 until they
  cover >= 97% of that probability, and the expectation is taken over them (renormalised).

One realised search of each kind (trials 0..k-1 of the seeded sequence) is printed too. Both
pools draw the same random sequence (sampler seed 0), so the direct pool's configurations are
the proxy pool's first N_direct, and a proxy winner among them is not trained twice.

    PYTHONPATH=. python bench/mutransfer_vs_direct.py --workers 2   # ~30-60 min on 2 CPU cores
    PYTHONPATH=. python bench/mutransfer_vs_direct.py --quick       # widths 32 -> 128, about a minute
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import optuna
import pandas as pd
import torch
from transfer_fidelity import FULL as FIDELITY  # bench/ is on sys.path when run as a script

from mutune import config, flops, search
from mutune import study as study_mod

ROOT = Path(__file__).resolve().parents[1]

# the GPT and training of the transfer-fidelity sweep, so the two benchmarks describe one setting
BASE = {**{k: v for k, v in FIDELITY.items() if k != "name"}, "search": {"sampler": "random", "seed": 0}}
FULL = {"proxy": 64, "target": 512, "n_proxy": 16, "pool_proxy": 32, "pool_direct": 16}
QUICK = {"proxy": 32, "target": 128, "n_proxy": 4, "pool_proxy": 8, "pool_direct": 16}
QUICK_OVERRIDES = [
    "model.width=32",
    "model.base_width=32",
    "model.head_dim=16",
    "model.seq_len=32",
    "train.steps=20",
    "train.batch_size=8",
    "train.warmup_steps=2",
    "train.eval_every=20",
]
MULTIPLES = (1, 3, 10)
COVERAGE = 0.97


def expected_min(losses: list[float], k: int) -> float:
    """E[min of a uniformly random k-subset] of ``losses`` (non-finite = diverged, worst)."""
    ls = sorted(losses, key=lambda x: (not math.isfinite(x), x))
    n = len(ls)
    total = math.comb(n, k)
    return sum(ls[r - 1] * math.comb(n - r, k - 1) / total for r in range(1, n - k + 2))


def rank_probabilities(pool: int, n: int) -> list[float]:
    """P(the best of a random n-subset of the pool has rank r), r = 1..pool."""
    total = math.comb(pool, n)
    return [math.comb(pool - r, n - 1) / total for r in range(1, pool + 1)]


def spec_at(width: int, name: str, n_trials: int, quick: bool) -> config.Spec:
    overrides = [*(QUICK_OVERRIDES if quick else []), f"model.width={width}", f"search.n_trials={n_trials}"]
    return config.spec_from_dict({**BASE, "name": name}, overrides)


def run_study(
    spec: config.Spec, run_dir: Path, workers: int, enqueue: list[dict] | None = None
) -> pd.DataFrame:
    """Run a search to its n_trials (resumable; its trials.csv and best.yaml land in run_dir).

    ``enqueue``: parameter sets to run (as fixed trials, before any sampled one) unless the study
    already holds them in any state (a killed one is re-run by the search's own retry logic)."""
    if enqueue:
        run_dir.mkdir(parents=True, exist_ok=True)
        study = study_mod.open_study(spec, study_mod.open_storage(study_mod.storage_url(spec, run_dir)))
        have = [study_mod.trial_params(t) for t in study.get_trials(deepcopy=False)]
        for params in enqueue:
            if params not in have:
                study.enqueue_trial(params)
    search.search(spec, run_dir=run_dir, transfer=False, workers=workers, argv=sys.argv)
    storage = study_mod.open_storage(study_mod.storage_url(spec, run_dir))
    study = optuna.load_study(study_name=spec.search.study_name or spec.name, storage=storage)
    return search.trials_table(study)


def loss_of(row: pd.Series) -> float:
    return float(row["loss"]) if row["state"] == "COMPLETE" and pd.notna(row["loss"]) else math.inf


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="widths 32 -> 128, 20 steps: a correctness run")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1, help="torch threads in this process")
    ap.add_argument("--run-dir", type=Path, default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    cfg = QUICK if args.quick else FULL
    name = "mutransfer-vs-direct" + ("-quick" if args.quick else "")
    run_dir = args.run_dir or ROOT / "bench" / "runs" / name
    cmd = "PYTHONPATH=. python bench/mutransfer_vs_direct.py " + " ".join(
        sys.argv[1:] if argv is None else argv
    )
    print(f"# {cmd}")
    print(f"# {time.strftime('%Y-%m-%d %H:%M')}, run dir {run_dir}")
    t0 = time.perf_counter()

    # 1. the proxy pool (width 64) and the direct pool (width 512), same random sequence
    proxy_spec = spec_at(cfg["proxy"], name, cfg["pool_proxy"], args.quick)
    proxy = run_study(proxy_spec, run_dir / "proxy", args.workers)
    direct_spec = spec_at(cfg["target"], name, cfg["pool_direct"], args.quick)
    direct = run_study(direct_spec, run_dir / "direct", args.workers)
    space = list(direct_spec.search.space)
    key = lambda row: tuple(float(row[p]) for p in space)  # noqa: E731
    at_target = {key(r): loss_of(r) for _, r in direct.iterrows()}

    # 2. the proxy winners µTransfer can pick, trained at the target width
    proxy = proxy.assign(proxy_loss=[loss_of(r) for _, r in proxy.iterrows()])
    ranked = proxy.sort_values(["proxy_loss", "number"], ignore_index=True)
    probs = rank_probabilities(len(ranked), cfg["n_proxy"])
    top = 0
    while sum(probs[:top]) < COVERAGE and top < len(ranked):
        top += 1
    need = [{p: float(ranked.loc[r, p]) for p in space} for r in range(top)]
    missing = [p for p in need if tuple(p.values()) not in at_target]
    if missing:
        extra_spec = spec_at(cfg["target"], name, len(missing), args.quick)
        extra = run_study(extra_spec, run_dir / "targets", args.workers, enqueue=missing)
        at_target.update({key(r): loss_of(r) for _, r in extra.iterrows()})
    target_losses = [at_target[tuple(p.values())] for p in need]
    wall = time.perf_counter() - t0

    # 3. compute: FLOPs of one run at each width (every trial runs all its steps: no pruning)
    # (nominal: a trial that diverges stops early and costs less; it counts as a full run here)
    c_proxy = flops.cost(proxy_spec).total_flops
    c_target = flops.cost(direct_spec).total_flops
    n = cfg["n_proxy"]
    mut_compute = n * c_proxy + c_target
    cover = sum(probs[:top])
    mut_expected = sum(p * loss for p, loss in zip(probs[:top], target_losses, strict=True)) / cover
    # the realised search: trials 0..n-1 of the proxy pool, its winner at the target width
    first = proxy[proxy.number < n].sort_values(["proxy_loss", "number"]).iloc[0]
    mut_realised = at_target[key(first)]

    direct_losses = [loss_of(r) for _, r in direct.sort_values("number").iterrows()]
    pool_d = len(direct_losses)
    s = direct_spec.model
    print(
        f"GPT depth {s.depth}, head_dim {s.head_dim}, base width {s.base_width} (µP), proxy width {cfg['proxy']}, "
        f"target width {cfg['target']}, {direct_spec.train.steps} steps, batch {direct_spec.train.batch_size}, "
        f"seq {s.seq_len}; space {', '.join(space)}"
    )
    print(
        f"one run: proxy {flops.human(c_proxy)}FLOPs, target {flops.human(c_target)}FLOPs "
        f"(ratio {c_target / c_proxy:.1f}); pools: {len(proxy)} proxy configs, {pool_d} direct configs, "
        f"{top} proxy winners at the target (covering {cover:.1%} of the winner's rank distribution)"
    )
    print(f"{len(proxy) + pool_d + len(missing)} runs trained or reused, {wall / 60:.1f} min wall")
    print(f"{'method':<34} {'compute':>10} {'x target run':>12} {'E[target loss]':>15} {'realised':>9}")
    rows = [(f"µTransfer ({n} proxy trials + 1 run)", mut_compute, mut_expected, mut_realised)]
    direct_at: dict[int, float] = {}
    for mult in MULTIPLES:
        k = max(1, math.floor(mult * mut_compute / c_target + 1e-9))
        if k > pool_d:
            print(f"direct {mult}x needs {k} trials but the pool has {pool_d}: raise pool_direct")
            continue
        direct_at[mult] = expected_min(direct_losses, k)
        realised = min(direct_losses[:k], key=lambda x: (not math.isfinite(x), x))
        rows.append(
            (f"direct at {cfg['target']}, {mult}x ({k} trials)", k * c_target, direct_at[mult], realised)
        )
    for label, compute, expected, realised in rows:
        print(
            f"{label:<34} {flops.human(compute):>10} {compute / c_target:>12.2f} {expected:>15.4f} {realised:>9.4f}"
        )
    print("proxy winners: rank, P(chosen by a random n-subset), trial, proxy loss, target loss")
    for r in range(top):
        row = ranked.loc[r]
        print(
            f"  {r + 1:>2} {probs[r]:>6.3f}  #{int(row['number']):<3} {row['proxy_loss']:.4f} -> "
            f"{target_losses[r]:.4f}"
        )
    best_mult = max(direct_at) if direct_at else None
    if best_mult is not None:
        gap = mut_expected - direct_at[best_mult]
        ok = gap <= 0
        print(
            f"{'MET   ' if ok else 'MISSED'} µTransfer at {mut_compute / c_target:.2f}x matches or beats direct at "
            f"{best_mult}x ({mut_expected:.4f} vs {direct_at[best_mult]:.4f}, {gap:+.4f})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

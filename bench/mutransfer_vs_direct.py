"""µTransfer vs tuning the target directly, at equal and larger compute (TP5's Pareto view), with the
search mutune now runs: a tuning budget as a fraction of the target run, and finalists re-ranked up
a width ladder.

µTransfer at tuning budget b: ``mutune``'s own plan (``budget.make_plan`` with ``search.budget=b``,
``target.width=512``) decides the proxy trials at width 64 and the ladder; its winner is trained
once at width 512. Its compute is the plan's FLOPs (proxy trials + ladder, nominal) plus that one
run. Direct: random search at width 512 with 1x, 3x and 10x that compute, in trials of the same
length. Both search the default space (lr, init_std, alpha_in, alpha_out, alpha_attn;
log-uniform) with mutune's seeded random sampler (seed 0).

Targets (stated before the runs): at a budget of at most one target run (so at most 2x one target
run in all), µTransfer's expected target loss <= direct random search's at 10x µTransfer's compute;
the expected loss against budget (1%, 3%, 7%, 20%, plus 50% and 100%) with and without the ladder;
which sampler (random, Sobol, TPE) does better at which budget. No target for the samplers. The
headline is budget 0.5 (1.5x in all): 10x of it is 15 target runs, which the 16-configuration
direct pool covers; 2x would need 20 (a 512-wide run takes ~15 min on this shared machine).

Exact expectations, without repeating searches (the "expected validation performance" of Dodge et
al., 2019): random search over a pool of N i.i.d. configurations draws a random n-subset, and any
outcome that is a function of the subset has an exact, unbiased average over all C(N, n) subsets.
For µTransfer the outcome depends on the subset only through its top-k proxy configurations S
(k = the finalists, 1 without a ladder): P(S) = C(N - 1 - m, n - k) / C(N, n) with m the proxy rank
(0-based) of S's worst member. Top sets are enumerated best-first until they cover >= 97% of the
probability; the ladder (halving on the mean loss over seeds at each rung) then picks the winner of
each S, and the expectation is taken over them (renormalised). Every run those sets need is trained
(at each rung's width and seeds, and the winners at the target). The pools: 64 proxy
configurations (the seeded sequence), the first 16 of them also at width 512 (the direct pool); a
plan of at most 16 proxy trials is evaluated on those 16 (every winner is then trained at the
target), a bigger one on all 64.

"realised" is the one seeded search: trials 0..n-1 and their ladder, as `mutune search` runs it;
one real end-to-end ``mutune.search`` at the headline budget checks that it picks the same winner.

With ``--wsd`` (issue 26) every run, proxy and target, is a WSD run (warmup, stable, a 20% 1-sqrt
cooldown), and the headline selection is successive halving along training length
(``search.fidelity={rungs: [0.25, 0.5, 1.0]}``, keep 1/3): every configuration runs a quarter of
the steps, the best third go on to half, the best third of those to the full length, each rung
evaluated after its cooldown. Each pool configuration is trained once at the proxy with cooldown
branches at those fractions, which give its loss at every rung bit for bit (tests/test_branches.py),
so the selection's outcome for any subset is known without training it again. Successive halving's
winner depends on more of the subset than its top-k, so its expectation is a Monte Carlo average over
``DRAWS`` random subsets (seeded; its standard error printed) instead of the exact enumeration.

    PYTHONPATH=. python bench/mutransfer_vs_direct.py --workers 2            # hours on 2 busy CPU cores; resumable
    PYTHONPATH=. python bench/mutransfer_vs_direct.py --medium --workers 2   # widths 32 -> 256, about an hour
    PYTHONPATH=. python bench/mutransfer_vs_direct.py --quick                # widths 32 -> 128, a few minutes
    PYTHONPATH=. python bench/mutransfer_vs_direct.py --medium --wsd --workers 2   # WSD + successive halving
"""

from __future__ import annotations

import argparse
import itertools
import math
import random
import sys
import time
from pathlib import Path

import optuna
import torch
from transfer_fidelity import FULL as FIDELITY  # bench/ is on sys.path when run as a script

from mutune import budget, config, flops, phases, search
from mutune import study as study_mod

ROOT = Path(__file__).resolve().parents[1]

# the GPT and training of the transfer-fidelity sweep, so the two benchmarks describe one setting
BASE = {**{k: v for k, v in FIDELITY.items() if k != "name"}, "search": {"sampler": "random", "seed": 0}}
FULL = {
    "overrides": (),
    "proxy": 64,
    "target": 512,
    "pool": 64,
    "direct_pool": 16,
    "budgets": (0.01, 0.03, 0.07, 0.2, 0.5, 1.0),
    "sampler_trials": 32,
    "sampler_seeds": (0, 1),
    "sampler_prefixes": (1, 3, 9, 16, 32),
    "sampler_targets": (16,),
    "headline": 0.5,  # 1.5x in all: 10x of it (15 trials) fits the 16-configuration direct pool
}
# §1's GPT and training at widths 32 -> 256 (base 32, head_dim 16: 2 heads at the proxy, 16 at the
# target): the same 8x width gap and a 36x cost gap (FULL: 45x) at a quarter of FULL's target-run
# cost, so the 16 target runs of the direct pool fit in about an hour on 2 shared cores. The
# samplers are compared on proxy loss only (their winners' target runs would double the hour).
MEDIUM = {
    "overrides": ("model.width=32", "model.base_width=32", "model.head_dim=16"),
    "proxy": 32,
    "target": 256,
    "pool": 48,
    "direct_pool": 16,
    "budgets": (0.01, 0.03, 0.07, 0.2, 0.5, 1.0),
    "sampler_trials": 16,
    "sampler_seeds": (0, 1),
    "sampler_prefixes": (1, 3, 8, 16),
    "sampler_targets": (),
    "headline": 0.5,
}
QUICK = {
    "overrides": (
        "model.width=32",
        "model.base_width=32",
        "model.head_dim=16",
        "model.seq_len=32",
        "train.steps=20",
        "train.batch_size=8",
        "train.warmup_steps=2",
        "train.eval_every=20",
    ),
    "proxy": 32,
    "target": 128,
    "pool": 16,
    "direct_pool": 12,
    "budgets": (0.01, 0.2, 1.0),
    "sampler_trials": 4,
    "sampler_seeds": (0, 1),
    "sampler_prefixes": (1, 4),
    "sampler_targets": (4,),
    "headline": 0.2,  # the pools are too small for 10x of 2x
}
# the selections compared: mutune's default (a ladder at 2x the proxy width, one seed, as many
# finalists as half of the budget affords), no ladder, the same ladder with two seeds, and the top 4
# re-run with a second seed at the proxy width instead of at a wider rung
VARIANTS = {
    "no ladder": ["search.rungs=[]"],
    "ladder (default)": [],
    "ladder, 2 seeds": ["search.rung_seeds=2"],
    "4 finalists, 2nd seed": ["search.rungs=[1]", "search.rung_seeds=2", "search.finalists=4"],
}
HEADLINE = "ladder (default)"  # at the budget cfg["headline"]
# --wsd: every run a WSD run; successive halving along training length beside the selections that
# need no rung at another length (full-length proxy trials; the top 4 on a second seed)
HALVING = (0.25, 0.5, 1.0)
WSD_VARIANTS = {
    "no ladder": [],
    "successive halving": [f"search.fidelity={{rungs: {list(HALVING)}}}"],
    "4 finalists, 2nd seed": ["search.rungs=[1]", "search.rung_seeds=2", "search.finalists=4"],
}
WSD_HEADLINE = "successive halving"
DRAWS = 20000  # Monte Carlo subsets for successive halving's expectation


def variants(cfg: dict) -> dict[str, list[str]]:
    return WSD_VARIANTS if cfg.get("wsd") else VARIANTS


def headline(cfg: dict) -> str:
    return WSD_HEADLINE if cfg.get("wsd") else HEADLINE


MULTIPLES = (1, 3, 10)
COVERAGE = 0.97
NAME = "mutransfer-vs-direct"


def spec_at(width: int, seed: int, n_trials: int, base: tuple[str, ...], *extra: str) -> config.Spec:
    """The setting at ``width`` and ``seed``: §1's GPT and training, with the size's ``base`` overrides."""
    overrides = [*base, f"model.width={width}", f"seed={seed}"]
    return config.spec_from_dict({**BASE, "name": NAME}, [*overrides, f"search.n_trials={n_trials}", *extra])


def key(params: dict, names: list[str]) -> tuple:
    return tuple(float(params[n]) for n in names)


def loss_of(t: optuna.trial.FrozenTrial) -> float:
    return float(t.value) if t.state.name == "COMPLETE" and t.value is not None else math.inf


def open_run(spec: config.Spec, run_dir: Path) -> optuna.Study:
    run_dir.mkdir(parents=True, exist_ok=True)
    return study_mod.open_study(spec, study_mod.open_storage(study_mod.storage_url(spec, run_dir)))


def measure(
    root: Path,
    width: int,
    seed: int,
    configs: list[dict],
    base: tuple,
    workers: int,
    sampled: int = 0,
    extra: tuple[str, ...] = (),
) -> dict[tuple, float]:
    """Train each configuration at (width, seed) once (a study per pair, resumable); losses by key.

    ``sampled``: run the first ``sampled`` trials of the seeded sequence as sampled trials (they are
    the pool's configurations 0..sampled-1); the other configurations are enqueued. ``extra``:
    overrides of this study's runs alone (the pool's cooldown branches)."""
    run_dir = root / f"w{width}-s{seed}"
    spec = spec_at(width, seed, 1, base, *extra)
    names = list(spec.search.space)  # what this parametrization searches (µP: the default five)
    study = open_run(spec, run_dir)
    trials = study.get_trials(deepcopy=False)
    done = {key(study_mod.trial_params(t), names) for t in trials if study_mod.is_finished(t)}
    n_finished = sum(study_mod.is_finished(t) for t in trials)
    n_sampled = sum("fixed_params" not in t.user_attrs and study_mod.is_finished(t) for t in trials)
    todo = [p for p in configs[sampled:] if key(p, names) not in done]
    if todo:
        phases.enqueue_missing(study, run_dir, todo)
    waiting = len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,)))
    n = n_finished + waiting + max(0, sampled - n_sampled)
    if n > n_finished:
        # the pool's studies are one model at several widths: the end-to-end search runs the coord check
        search.search(
            spec.edit({"search.n_trials": n}),
            run_dir=run_dir,
            transfer=False,
            workers=workers,
            skip_check=True,
        )
    out = {}
    for t in study.get_trials(deepcopy=False):
        if study_mod.is_finished(t):
            out.setdefault(key(study_mod.trial_params(t), names), loss_of(t))
    return out


# ---------------------------------------------------------------------------------------------
# Exact expectations over the subsets of a pool


def top_sets(pool: int, n: int, k: int, coverage: float = COVERAGE) -> list[tuple[tuple[int, ...], float]]:
    """(proxy ranks of the top-k set, its probability) of a random n-subset, best sets first, until
    ``coverage`` of the probability is listed."""
    total, out, mass = math.comb(pool, n), [], 0.0
    for m in range(k - 1, pool):
        p = math.comb(pool - 1 - m, n - k) / total
        if p == 0:
            break
        for rest in itertools.combinations(range(m), k - 1):
            out.append(((*rest, m), p))
        mass += p * math.comb(m, k - 1)
        if mass >= coverage:
            break
    return out


def pick(s: tuple[int, ...], plan: budget.Plan, loss) -> tuple[int | None, list]:
    """The ladder's winner among the ranked configurations ``s`` (best proxy first), or the
    measurements it is missing. ``loss(i, width, seed)`` is None when not measured."""
    moving = list(s)
    for rung in plan.rungs:
        moving = moving[: rung.entrants]
        missing = [
            (i, rung.width, sd)
            for i in moving
            for sd in rung.seeds
            if loss(i, rung.width, sd, rung.steps) is None
        ]
        if missing:
            return None, missing
        means = {
            i: sum(loss(i, rung.width, sd, rung.steps) for sd in rung.seeds) / len(rung.seeds) for i in moving
        }
        moving.sort(key=lambda i: (means[i], s.index(i)))
    return moving[0], []


def expectation(ranked: list[int], n: int, plan: budget.Plan, loss, target: dict[int, float]):
    """E[target loss] of the plan's selection over random n-subsets of ``ranked`` (pool indices,
    best proxy first); with what is still missing: rung runs and target runs."""
    k = max(1, min(plan.finalists, n)) if plan.rungs else 1
    total = known = 0.0
    need_runs, need_target = set(), set()
    for s, p in top_sets(len(ranked), n, k):
        winner, missing = pick(tuple(ranked[r] for r in s), plan, loss)
        if missing:
            need_runs.update(missing)
        elif winner not in target:
            need_target.add(winner)
        else:
            total += p * target[winner]
            known += p
    value = total / known if known else math.nan
    return value, known, need_runs, need_target


def expectation_mc(members: list[int], n: int, plan: budget.Plan, pool: Pool, draws: int = DRAWS):
    """E[target loss] of successive halving along training length over random n-subsets of
    ``members``, by Monte Carlo (its winner depends on the whole subset's ranking at the first
    horizon, not only on a top-k set); with its standard error and the target runs it still needs."""
    rng = random.Random(0)
    winners: dict[int, int] = {}
    for _ in range(draws):
        w = pick_halving(rng.sample(members, n), plan, pool)
        winners[w] = winners.get(w, 0) + 1
    need = {w for w in winners if w not in pool.target}
    if need:
        return math.nan, 0.0, set(), need, math.nan
    xs = [pool.target[w] for w, c in winners.items() for _ in range(c)]
    m = sum(xs) / len(xs)
    se = math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1) / len(xs)) if len(xs) > 1 else 0.0
    return m, 1.0, set(), set(), se


def pick_halving(subset, plan: budget.Plan, pool: Pool) -> int:
    """Successive halving's winner among ``subset`` (pool indices): ranked by the loss at the first
    horizon (the proxy trials' own length), the best ``entrants`` of each rung ranked again at its
    length; ties by the first ranking (as mutune's ladder breaks them)."""

    def at(i: int, steps: int) -> float:
        x = pool.short[i][steps]
        return x if math.isfinite(x) else math.inf

    moving = sorted(subset, key=lambda i: (at(i, plan.proxy_steps), i))
    order = {i: r for r, i in enumerate(moving)}
    for rung in plan.rungs:
        moving = sorted(moving[: rung.entrants], key=lambda i: (at(i, rung.steps), order[i]))
    return moving[0]


def expected_min(losses: list[float], k: int) -> float:
    """E[min of a uniformly random k-subset] of ``losses`` (non-finite = diverged, worst)."""
    ls = sorted(losses, key=lambda x: (not math.isfinite(x), x))
    total = math.comb(len(ls), k)
    return sum(ls[r - 1] * math.comb(len(ls) - r, k - 1) / total for r in range(1, len(ls) - k + 2))


# ---------------------------------------------------------------------------------------------
# The pool and what was measured of it


class Pool:
    """The seed-0 random sequence's first configurations, with every run measured of each."""

    def __init__(self, root: Path, cfg: dict, workers: int):
        self.root, self.cfg, self.base, self.workers = root, cfg, cfg["overrides"], workers
        self.names = list(spec_at(cfg["proxy"], 0, 1, self.base).search.space)
        # under WSD the pool's proxy runs carry cooldown branches at the halving's horizons
        self.extra = (f"train.branches={list(HALVING)}",) if cfg.get("wsd") else ()
        measure(root, cfg["proxy"], 0, [], self.base, workers, sampled=cfg["pool"], extra=self.extra)
        study = open_run(spec_at(cfg["proxy"], 0, 1, self.base, *self.extra), root / f"w{cfg['proxy']}-s0")
        self.short: dict[int, dict[int, float]] = {}  # config -> {horizon: loss} from the branches
        seen: dict[tuple, float] = {}
        self.configs: list[dict] = []
        for t in sorted(study.get_trials(deepcopy=False), key=lambda t: t.number):
            k = key(study_mod.trial_params(t), self.names)
            if study_mod.is_finished(t) and k not in seen and len(self.configs) < cfg["pool"]:
                seen[k] = loss_of(t)
                self.configs.append({n: float(v) for n, v in zip(self.names, k, strict=True)})
        self.proxy = [seen[key(p, self.names)] for p in self.configs]
        self.index = {key(p, self.names): i for i, p in enumerate(self.configs)}
        for t in study.get_trials(deepcopy=False):
            i = self.index.get(key(study_mod.trial_params(t), self.names))
            if i is not None and study_mod.is_finished(t) and i not in self.short:
                # a diverged run has no branches past its divergence: inf there (the worst)
                got = {b["steps"]: b["val_loss"] for b in t.user_attrs.get("branches") or []}
                self.short[i] = {st: got.get(st, math.inf) for st in self.horizons()}
        self.runs: dict[tuple[int, int], dict[int, float]] = {}
        self.target: dict[int, float] = {}
        self.run_target(range(cfg["direct_pool"]), sampled=cfg["direct_pool"])

    def horizons(self) -> list[int]:
        steps = spec_at(self.cfg["proxy"], 0, 1, self.base).train.steps
        return [round(f * steps) for f in HALVING] if self.cfg.get("wsd") else []

    def loss(self, i: int, width: int, seed: int, steps: int | None = None) -> float | None:
        if steps is not None and steps in self.horizons():
            return self.short[i][steps] if width == self.cfg["proxy"] and seed == 0 else None
        if width == self.cfg["proxy"] and seed == 0:
            return self.proxy[i]
        return self.runs.get((width, seed), {}).get(i)

    def ranked(self, indices) -> list[int]:
        return sorted(indices, key=lambda i: (not math.isfinite(self.proxy[i]), self.proxy[i], i))

    def run(self, needs: set) -> None:
        """Train the missing (config, width, seed) runs, one study per (width, seed)."""
        for width, seed in sorted({(w, s) for _, w, s in needs}):
            idx = sorted(i for i, w, s in needs if (w, s) == (width, seed))
            got = measure(self.root, width, seed, [self.configs[i] for i in idx], self.base, self.workers)
            self.runs.setdefault((width, seed), {}).update(
                {self.index[k]: v for k, v in got.items() if k in self.index}
            )

    def run_target(self, indices, sampled: int = 0) -> None:
        configs = [self.configs[i] for i in sorted(indices)]
        got = measure(self.root, self.cfg["target"], 0, configs, self.base, self.workers, sampled=sampled)
        self.target.update({self.index[k]: v for k, v in got.items() if k in self.index})


def make_plans(cfg: dict) -> dict[tuple[str, float], budget.Plan | str]:
    """mutune's own plan for every (variant, budget), or why there is none."""
    plans: dict[tuple[str, float], budget.Plan | str] = {}
    for variant, extra in variants(cfg).items():
        for b in cfg["budgets"]:
            spec = spec_at(
                cfg["proxy"], 0, 1, cfg["overrides"], "search.n_trials=null", f"target.width={cfg['target']}",
                f"search.budget={b}", *extra,
            )  # fmt: skip
            try:
                plans[variant, b] = budget.make_plan(spec)
            except config.SpecError as e:
                plans[variant, b] = e.message
    return plans


def evaluate(pool: Pool, plan: budget.Plan) -> dict:
    """The expected and the realised target loss of one plan, and what they still need."""
    small = plan.n_proxy <= pool.cfg["direct_pool"]
    members = range(pool.cfg["direct_pool"]) if small else range(len(pool.configs))
    if plan.n_proxy > len(members):
        return {"error": f"{plan.n_proxy} proxy trials, but the pool has {len(members)}"}
    if plan.proxy_steps is not None:  # successive halving along training length
        value, known, runs, targets, se = expectation_mc(list(members), plan.n_proxy, plan, pool)
        winner = pick_halving(range(plan.n_proxy), plan, pool)
        realised = pool.target.get(winner)
        if realised is None:
            targets.add(winner)
        return {
            "expected": value,
            "se": se,
            "coverage": known,
            "pool": len(members),
            "realised": realised,
            "winner": winner,
            "runs": runs,
            "targets": targets,
        }
    value, known, runs, targets = expectation(
        pool.ranked(members), plan.n_proxy, plan, pool.loss, pool.target
    )
    k = max(1, min(plan.finalists, plan.n_proxy)) if plan.rungs else 1
    winner, missing = pick(tuple(pool.ranked(range(plan.n_proxy))[:k]), plan, pool.loss)
    realised = pool.target.get(winner) if winner is not None else None
    if not missing and realised is None:
        targets.add(winner)
    runs.update(missing)
    return {
        "expected": value,
        "coverage": known,
        "pool": len(members),
        "realised": realised,
        "winner": winner,
        "runs": runs,
        "targets": targets,
    }


def fill(pool: Pool, plans: dict) -> dict:
    """Evaluate every plan, training what the estimates need (rungs first, then targets) until done."""
    for _ in range(6):
        results = {kv: evaluate(pool, p) for kv, p in plans.items() if isinstance(p, budget.Plan)}
        runs = set().union(*(r.get("runs", set()) for r in results.values()))
        targets = set().union(*(r.get("targets", set()) for r in results.values()))
        if not runs and not targets:
            return results
        print(
            f"# training {len(runs)} ladder runs and {len(targets)} target runs the estimates need",
            flush=True,
        )
        pool.run(runs)
        if targets:
            pool.run_target(targets)
    raise RuntimeError("the estimates still need runs after 6 rounds")


# ---------------------------------------------------------------------------------------------
# The samplers


def sampler_runs(pool: Pool, sampler: str, seed: int) -> list[tuple[dict, float]]:
    """A realised proxy search of ``sampler_trials`` trials: (params, proxy loss) in trial order."""
    cfg, names = pool.cfg, pool.names
    if sampler == "random" and seed == 0:  # the pool itself
        return [(pool.configs[i], pool.proxy[i]) for i in range(cfg["sampler_trials"])]
    n = cfg["sampler_trials"]
    spec = spec_at(cfg["proxy"], 0, n, pool.base, f"search.sampler={sampler}", f"search.seed={seed}")
    run_dir = pool.root / f"sampler-{sampler}-{seed}"
    workers = (
        pool.workers if sampler != "tpe" else 1
    )  # TPE conditions on the history: one worker, reproducible
    search.search(spec, run_dir=run_dir, transfer=False, workers=workers, skip_check=True)
    study = open_run(spec, run_dir)
    done = [
        t
        for t in sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)
        if study_mod.is_finished(t)
    ]
    return [
        ({k: float(v) for k, v in study_mod.trial_params(t).items() if k in names}, loss_of(t))
        for t in done[:n]
    ]


def compare_samplers(pool: Pool) -> dict:
    """Best proxy loss after each prefix, and the target loss of the winner at some prefixes."""
    cfg, names = pool.cfg, pool.names
    out: dict[str, dict] = {}
    for sampler in ("random", "sobol", "tpe"):
        per_seed = []
        for seed in cfg["sampler_seeds"]:
            runs = sampler_runs(pool, sampler, seed)
            best = {n: min(runs[:n], key=lambda r: (r[1], 0)) for n in cfg["sampler_prefixes"]}
            per_seed.append(best)
        winners = [best[n][0] for best in per_seed for n in cfg["sampler_targets"]]
        got = measure(pool.root, cfg["target"], 0, winners, pool.base, pool.workers)
        out[sampler] = {
            "proxy": {n: [b[n][1] for b in per_seed] for n in cfg["sampler_prefixes"]},
            "target": {n: [got[key(b[n][0], names)] for b in per_seed] for n in cfg["sampler_targets"]},
        }
    return out


# ---------------------------------------------------------------------------------------------
# Printing


def mean(xs: list[float]) -> float:
    return sum(xs) / len(xs)


def fmt(x: float | None, digits: int = 4) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def plan_label(plan: budget.Plan) -> str:
    if plan.proxy_steps is not None:  # successive halving: configurations @ steps
        return "+".join(
            [f"{plan.n_proxy}@{plan.proxy_steps}st", *(f"{r.entrants}@{r.steps}st" for r in plan.rungs)]
        )
    if not plan.rungs:
        return f"{plan.n_proxy} proxy"
    rungs = "+".join(f"{r.entrants}@{r.width}x{len(r.seeds)}" for r in plan.rungs)
    return f"{plan.n_proxy} proxy + {rungs}"


def print_curve(cfg: dict, plans: dict, results: dict, c_target: float, direct: list[float]) -> None:
    print("\nE[target loss] against the tuning budget (search FLOPs / one target run's), per selection;")
    print("'direct 10x': direct random search at 10x that µTransfer's total compute (n/a past the pool)")
    print(f"{'budget':>7} {'selection':<24} {'plan':<22} {'search':>7} {'E[loss]':>8} {'realised':>8} "
          f"{'direct 10x':>10} {'pool':>5} {'cover':>6}")  # fmt: skip
    for b in cfg["budgets"]:
        for variant in variants(cfg):
            plan = plans[variant, b]
            if not isinstance(plan, budget.Plan):
                print(f"{b:>7.0%} {variant:<24} n/a: {plan}")
                continue
            r = results[variant, b]
            if "error" in r:
                print(f"{b:>7.0%} {variant:<24} {plan_label(plan):<22} n/a: {r['error']}")
                continue
            total = plan.total_flops + c_target
            k = math.floor(10 * total / c_target + 1e-9)
            d10 = expected_min(direct, k) if k <= len(direct) else None
            print(
                f"{b:>7.0%} {variant:<24} {plan_label(plan):<22} {plan.total_flops / c_target:>7.1%} "
                f"{fmt(r.get('expected')):>8} {fmt(r.get('realised')):>8} {fmt(d10):>10} "
                f"{r.get('pool', '-'):>5} {r.get('coverage', 0):>6.1%}"
            )


def print_headline(cfg: dict, plan: budget.Plan, r: dict, c_target: float, direct: list[float]) -> dict:
    total = plan.total_flops + c_target
    print(
        f"\nµTransfer at budget {plan.budget:g} ({plan_label(plan)}): {total / c_target:.2f}x one target run"
    )
    print(f"{'method':<60} {'compute':>10} {'x target run':>12} {'E[target loss]':>15} {'realised':>9}")
    se = f" (Monte Carlo s.e. {r['se']:.4f})" if "se" in r else ""
    rows = [(f"µTransfer, {headline(cfg)}{se}", total, r["expected"], r["realised"])]
    direct_at = {}
    for mult in MULTIPLES:
        k = max(1, math.floor(mult * total / c_target + 1e-9))
        if k > len(direct):
            print(f"direct {mult}x needs {k} trials but the pool has {len(direct)}")
            continue
        direct_at[mult] = expected_min(direct, k)
        realised = min(direct[:k], key=lambda x: (not math.isfinite(x), x))
        rows.append(
            (f"direct at {cfg['target']}, {mult}x ({k} trials)", k * c_target, direct_at[mult], realised)
        )
    for label, compute, expected, realised in rows:
        print(
            f"{label:<60} {flops.human(compute):>10} {compute / c_target:>12.2f} {expected:>15.4f} {fmt(realised):>9}"
        )
    return direct_at


def print_samplers(cfg: dict, comp: dict, c_proxy: float, c_target: float) -> None:
    print(
        f"\nsamplers: realised proxy searches, seeds {list(cfg['sampler_seeds'])} (mean, min..max over seeds)"
    )
    for what, prefixes in (("proxy", cfg["sampler_prefixes"]), ("target", cfg["sampler_targets"])):
        print(f"{'trials':>6} {'budget':>7} " + " ".join(f"{s + ' ' + what:>24}" for s in comp))
        for n in prefixes:
            losses = [comp[s][what][n] for s in comp]
            cells = [f"{mean(x):.4f} ({min(x):.3f}..{max(x):.3f})" for x in losses]
            print(f"{n:>6} {n * c_proxy / c_target:>7.1%} " + " ".join(f"{c:>24}" for c in cells))


def print_pool(pool: Pool, n: int = 12) -> None:
    """The proxy's best configurations of the whole pool, with every loss measured of them."""
    cols = sorted(ws for ws in pool.runs if pool.runs[ws])
    print(f"\nthe pool's best {n} by proxy loss (width {pool.cfg['proxy']}, seed 0), and their other runs")
    print(
        f"{'rank':>4} {'config':>6} {'proxy':>7} "
        + " ".join(f"{f'w{w} s{s}':>9}" for w, s in cols)
        + f" {'target':>8}"
    )
    for r, i in enumerate(pool.ranked(range(len(pool.configs)))[:n]):
        cells = " ".join(f"{fmt(pool.loss(i, w, s)):>9}" for w, s in cols)
        print(f"{r + 1:>4} {'#' + str(i):>6} {pool.proxy[i]:>7.4f} {cells} {fmt(pool.target.get(i)):>8}")


def end_to_end(pool: Pool, plan: budget.Plan, expected_winner: int | None) -> None:
    """The realised run as `mutune search` runs it: the same plan, its trials and ladder, best.yaml."""
    cfg = pool.cfg
    spec = spec_at(
        cfg["proxy"], 0, 1, pool.base, "search.n_trials=null", f"target.width={cfg['target']}",
        f"search.budget={plan.budget}", *variants(cfg)[headline(cfg)],
    )  # fmt: skip
    run_dir = pool.root / f"search-b{plan.budget:g}"
    res = search.search(spec, run_dir=run_dir, transfer=False, workers=pool.workers)
    prov = res.best.provenance
    winner = pool.index.get(key(vars(res.best.hparams), pool.names))
    print(
        f"\nend to end: mutune.search(search.budget={plan.budget:g}) -> {run_dir}: {prov['n_trials_finished']} trials, "
        f"search {flops.human(prov['search_flops'])}FLOPs (plan {flops.human(prov['plan']['planned_flops'])}, "
        f"budget {flops.human(prov['plan']['budget_flops'])}); winner: pool config #{winner} "
        f"({'the same' if winner == expected_winner else 'NOT the same'} as the estimate's realised pick #{expected_winner}), "
        f"target loss {fmt(pool.target.get(winner))}"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="widths 32 -> 128, 20 steps: a correctness run")
    ap.add_argument(
        "--medium", action="store_true", help="widths 32 -> 256, §1's training: about an hour on 2 cores"
    )
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1, help="torch threads in this process")
    ap.add_argument("--run-dir", type=Path, default=None)
    ap.add_argument("--no-samplers", action="store_true", help="skip the sampler comparison")
    ap.add_argument(
        "--wsd",
        action="store_true",
        help="every run WSD; successive halving along training length as the headline (no samplers)",
    )
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    size = "quick" if args.quick else "medium" if args.medium else "full"
    cfg = {"quick": QUICK, "medium": MEDIUM, "full": FULL}[size]
    if args.wsd:
        cfg = {**cfg, "overrides": (*cfg["overrides"], "train.schedule=wsd"), "wsd": True}
    suffix = ("" if size == "full" else f"-{size}") + ("-wsd" if args.wsd else "")
    root = args.run_dir or ROOT / "bench" / "runs" / (NAME + suffix)
    print(
        f"# PYTHONPATH=. python bench/mutransfer_vs_direct.py {' '.join(sys.argv[1:] if argv is None else argv)}"
    )
    print(f"# {time.strftime('%Y-%m-%d %H:%M')}, run dir {root}")
    if args.wsd:
        print(
            "# target (issue 26): every run WSD; E[target loss] of µTransfer at budget 0.5 with successive halving "
            "along training length (rungs 0.25, 0.5, 1; keep 1/3) <= direct random search at 10x its compute; "
            "the other selections beside it"
        )
    else:
        print(
            "# targets: E[target loss] of µTransfer at a budget <= 1 target run (<= 2x in all) <= direct random "
            "search at 10x µTransfer's compute; E[loss] against budget with and without the ladder; samplers: reported"
        )
    t0 = time.perf_counter()
    pool = Pool(root, cfg, args.workers)
    plans = make_plans(cfg)
    results = fill(pool, plans)
    c_proxy = flops.cost(spec_at(cfg["proxy"], 0, 1, cfg["overrides"])).total_flops
    c_target = flops.cost(spec_at(cfg["target"], 0, 1, cfg["overrides"])).total_flops
    direct = [pool.target[i] for i in range(cfg["direct_pool"])]
    s = spec_at(cfg["target"], 0, 1, cfg["overrides"])
    print(
        f"GPT depth {s.model.depth}, head_dim {s.model.head_dim}, base width {s.model.base_width} (µP), proxy width "
        f"{cfg['proxy']}, target width {cfg['target']}, {s.train.steps} steps, batch {s.train.batch_size}, seq "
        f"{s.model.seq_len}; one run: proxy {flops.human(c_proxy)}FLOPs, target {flops.human(c_target)}FLOPs "
        f"({c_target / c_proxy:.1f}x); pools: {len(pool.configs)} proxy configurations, {len(direct)} at the target"
    )
    print_curve(cfg, plans, results, c_target, direct)
    plan, r = plans[headline(cfg), cfg["headline"]], results[headline(cfg), cfg["headline"]]
    direct_at = print_headline(cfg, plan, r, c_target, direct)
    print_pool(pool)
    if 10 in direct_at:
        gap = r["expected"] - direct_at[10]
        print(
            f"{'MET   ' if gap <= 0 else 'MISSED'} µTransfer at {(plan.total_flops + c_target) / c_target:.2f}x matches "
            f"or beats direct at 10x ({r['expected']:.4f} vs {direct_at[10]:.4f}, {gap:+.4f})"
        )
    end_to_end(pool, plan, r["winner"])
    if not args.no_samplers and not args.wsd:
        print_samplers(cfg, compare_samplers(pool), c_proxy, c_target)
    print(f"\n# {(time.perf_counter() - t0) / 60:.1f} min wall (runs already in {root} are reused)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

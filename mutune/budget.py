"""The search's budget: how many proxy trials, and which ladder, a search runs.

``search.budget`` states the search's compute as a fraction of the target run's FLOPs, the way
Tensor Programs V reports tuning cost (7% of GPT-3 6.7B's pretraining); :func:`make_plan` turns it
into trial counts: the ladder first (``search.finalists``, or, when not given, as many finalists
as half of the budget affords), the rest in proxy trials. Without a budget, ``search.n_trials``
proxy trials and ``search.finalists`` (default none) make the plan.

Costs are nominal: every trial is counted at its full length, so the plan is an upper bound on what
the search spends (pruned and diverged trials stop early and cost less; the unspent rest is not
used). Trial counts are exact with any number of workers on one machine (the study's budget lock);
workers on several machines sharing a database may each run a trial more.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from . import config
from .config import DEFAULT_N_TRIALS, Spec, SpecError
from .config.validate import cooldown, fidelity_steps
from .files import atomic_write

if TYPE_CHECKING:
    import optuna


@dataclass(frozen=True)
class Rung:
    width: int
    seeds: tuple[int, ...]
    entrants: int  # configurations run at this rung
    run_flops: float  # one run at this width (a continued run: what it trains itself)
    steps: int | None = None  # successive halving along training length: this rung's horizon

    def new_runs(self, proxy_width: int, proxy_seed: int) -> int:
        """Runs this rung adds (at the proxy width and length, the proxy trial itself is the proxy
        seed's run)."""
        reused = self.width == proxy_width and proxy_seed in self.seeds and self.steps is None
        return self.entrants * (len(self.seeds) - int(reused))


@dataclass(frozen=True)
class Plan:
    n_proxy: int
    finalists: int  # 0: no ladder
    rungs: tuple[Rung, ...]
    proxy_width: int
    proxy_seed: int
    proxy_flops: float  # one proxy run
    target_flops: float | None  # one target run (None without target.width)
    budget: float | None  # the fraction of the target run asked for
    proxy_steps: int | None = None  # successive halving: the proxy trials' horizon (the first rung's)

    @property
    def ladder_runs(self) -> int:
        return sum(r.new_runs(self.proxy_width, self.proxy_seed) for r in self.rungs)

    @property
    def n_trials(self) -> int:
        return self.n_proxy + self.ladder_runs

    @property
    def ladder_flops(self) -> float:
        return sum(r.new_runs(self.proxy_width, self.proxy_seed) * r.run_flops for r in self.rungs)

    @property
    def total_flops(self) -> float:
        return self.n_proxy * self.proxy_flops + self.ladder_flops

    @property
    def budget_flops(self) -> float | None:
        return None if self.budget is None or self.target_flops is None else self.budget * self.target_flops

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["rungs"] = [{**asdict(r), "seeds": list(r.seeds)} for r in self.rungs]
        d.update(n_trials=self.n_trials, ladder_flops=self.ladder_flops, total_flops=self.total_flops)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Plan:
        fields = {k: d[k] for k in cls.__dataclass_fields__ if k != "rungs" and k in d}
        rungs = tuple(
            Rung(
                int(r["width"]),
                tuple(int(s) for s in r["seeds"]),
                int(r["entrants"]),
                float(r["run_flops"]),
                None if r.get("steps") is None else int(r["steps"]),
            )
            for r in d["rungs"]
        )
        return cls(rungs=rungs, **fields)


def entrants(first: int, n_rungs: int, keep: float = 0.5) -> list[int]:
    """Configurations at each rung: ``first``, then the best ``keep`` of them (rounded up) at the
    next, and so on; a lone entrant stops it (it could not change the winner)."""
    out, n = [], first
    for _ in range(n_rungs):
        if n < 2:
            break
        out.append(n)
        n = math.ceil(n * keep)
    return out


def build_rungs(spec: Spec, finalists: int, run_flops: list[float]) -> tuple[Rung, ...]:
    seeds = tuple(spec.seed + j for j in range(spec.search.rung_seeds))
    widths = rung_widths(spec)
    return tuple(
        Rung(widths[i], seeds, n, run_flops[i]) for i, n in enumerate(entrants(finalists, len(widths)))
    )


def run_spec(spec: Spec, width: int, seed: int | None = None, steps: int | None = None) -> Spec:
    """The spec of one run at ``width`` (and ``seed``, and ``steps``): a rung trial's, or a rung's for
    its cost."""
    changes: dict[str, Any] = {"model.width": width, "search.budget": None, "search.finalists": None}
    changes["search.fidelity.rungs"] = []  # a run, not a search: its own length is the rung's
    if seed is not None:
        changes["seed"] = seed
    if steps is not None:
        changes["train.steps"] = steps
    try:
        return spec.edit(changes)
    except SpecError as e:
        key = "search.fidelity" if steps is not None else "search.rungs"
        raise SpecError(key, f"width {width}{f', {steps} steps' if steps else ''}: {e}") from None


def fidelity_rungs(spec: Spec, n_proxy: int, cost: Any) -> tuple[Rung, ...]:
    """Successive halving along training length: after the proxy trials at the first horizon, the best
    ``keep`` of them at each longer one, continued from their stable state (each run's cost: the
    steps it adds and its evaluations)."""
    horizons = fidelity_steps(spec)
    counts = entrants(
        math.ceil(n_proxy * spec.search.fidelity.keep), len(horizons) - 1, spec.search.fidelity.keep
    )
    from . import flops  # (here, not at the top: the plan's readers, mutune report among them, load no torch)

    rungs = []
    for i, n in enumerate(counts):
        longer, shorter = run_spec(spec, spec.model.width, steps=horizons[i + 1]), horizons[i]
        begun = shorter - cooldown(shorter, spec.train.decay_fraction)  # where the longer run goes on from
        c = flops.cost(longer)
        run_flops = (
            c.flops_per_step * (longer.train.steps - begun) + c.eval_flops if cost is None else cost(longer)
        )
        rungs.append(Rung(spec.model.width, (spec.seed,), n, run_flops, horizons[i + 1]))
    return tuple(rungs)


def make_plan(spec: Spec, cost: Any = None) -> Plan:
    """The proxy trials and the ladder: from ``search.budget`` when given, else from ``n_trials``.

    ``cost(spec) -> FLOPs of one run`` defaults to :func:`mutune.flops.cost`'s total; tests pass
    their own to check the arithmetic without building models.
    """
    if spec.search.fidelity.rungs:
        return _fidelity_plan(spec, cost)
    if cost is None:
        from . import flops

        def cost(s: Spec) -> float:
            return flops.cost(s).total_flops

    s = spec.search
    widths = rung_widths(spec)
    if (
        s.finalists is not None
        and spec.target.width is not None
        and widths
        and widths[-1] > spec.target.width
    ):
        raise SpecError("search.rungs", f"width {widths[-1]} is wider than the target ({spec.target.width})")
    c0 = cost(spec)
    rung_costs = [cost(run_spec(spec, w)) for w in widths]
    own = config.target.own_changes(spec)  # the target run, derived as the transfer will derive it
    target = cost(config.derive(spec, own, source="target").spec) if spec.target.width is not None else None
    base = dict(proxy_width=spec.model.width, proxy_seed=spec.seed, proxy_flops=c0, target_flops=target)
    if s.budget is None:
        n, k = s.n_trials or DEFAULT_N_TRIALS, s.finalists or 0
        if k > n:
            raise SpecError("search.finalists", f"{k} finalists, but only {n} proxy trials (search.n_trials)")
        return Plan(n_proxy=n, finalists=k, rungs=build_rungs(spec, k, rung_costs), budget=None, **base)
    assert target is not None  # validated: a budget needs target.width
    budget = s.budget * target

    def spent(rungs: tuple[Rung, ...]) -> float:
        return Plan(n_proxy=0, finalists=0, rungs=rungs, budget=None, **base).ladder_flops

    def proxy_trials(rungs: tuple[Rung, ...]) -> int:
        return math.floor((budget - spent(rungs)) / c0 + 1e-9)

    if s.finalists is not None:
        k = s.finalists
        if proxy_trials(build_rungs(spec, k, rung_costs)) < k:
            need = (spent(build_rungs(spec, k, rung_costs)) + k * c0) / target
            raise SpecError(
                "search.budget",
                f"{s.budget:g} of the target run leaves fewer proxy trials than the {k} finalists after "
                f"their ladder; raise it to at least {need:.3g} or lower search.finalists",
            )
    else:  # no ladder unless asked for: measured, it did not beat the same FLOPs spent on proxy
        k = 0  # trials (bench/RESULTS.md §2: at 0.5 and 1.0 of a target run, widths 32 -> 256)
    rungs = build_rungs(spec, k, rung_costs)
    n = proxy_trials(rungs)
    if n < 1:
        raise SpecError(
            "search.budget",
            f"{s.budget:g} of the target run does not cover one proxy run ({c0 / target:.3g} of the "
            f"target); raise it to at least {c0 / target:.3g}",
        )
    return Plan(n_proxy=n, finalists=k, rungs=rungs, budget=s.budget, **base)


def _fidelity_plan(spec: Spec, cost: Any) -> Plan:
    """The proxy trials at the first horizon and the rungs along training length: from
    ``search.n_trials``, or as many proxy trials as ``search.budget`` affords with their rungs."""
    s, default_cost = spec.search, cost is None
    if cost is None:
        from . import flops

        def cost(x: Spec) -> float:
            return flops.cost(x).total_flops

    proxy = run_spec(spec, spec.model.width, steps=fidelity_steps(spec)[0])
    c0 = cost(proxy)
    target = (
        cost(config.derive(spec, config.target.own_changes(spec), source="target").spec)
        if spec.target.width
        else None
    )
    base = dict(proxy_width=spec.model.width, proxy_seed=spec.seed, proxy_flops=c0, target_flops=target)
    base["proxy_steps"] = proxy.train.steps

    def plan_for(n: int) -> Plan:
        rungs = fidelity_rungs(spec, n, None if default_cost else cost)
        finalists = rungs[0].entrants if rungs else 0
        return Plan(n_proxy=n, finalists=finalists, rungs=rungs, budget=s.budget, **base)

    if s.budget is None:
        return plan_for(s.n_trials or DEFAULT_N_TRIALS)
    assert target is not None  # validated: a budget needs target.width
    if plan_for(1).total_flops > s.budget * target:
        raise SpecError(
            "search.budget",
            f"{s.budget:g} of the target run does not cover one proxy run ({c0 / target:.3g} of the target)",
        )
    n = 1
    while plan_for(n + 1).total_flops <= s.budget * target:
        n += 1
    return plan_for(n)


def rung_widths(spec: Spec) -> list[int]:
    """The ladder's widths: ``search.rungs`` (checked with the spec) times the proxy width.

    Checked here, not in the spec's validation, that they are whole: the spec is also edited to
    other widths (the coord check's, the target's), where the multiples need not give whole ones."""
    widths = []
    for i, mult in enumerate(spec.search.rungs):
        width = mult * spec.model.width
        if abs(width - round(width)) > 1e-9:
            raise SpecError(
                f"search.rungs[{i}]", f"{mult} x proxy width {spec.model.width} is not a whole width"
            )
        widths.append(round(width))
    return widths


# ---------------------------------------------------------------------------------------------
# The plan on record


def record_plan(study: optuna.Study, spec: Spec, plan: Plan, run_dir: Path | None = None) -> None:
    """Keep the plan (and the hash of the spec that made it) in the study, for every process that
    writes best.yaml; a resumed search with another budget or ladder replaces it. With ``run_dir``,
    also as search_plan.yaml there, before the first trial: what the search will spend, and on what."""
    record = {"plan": plan.to_dict(), "spec_hash": spec.hash()}
    if run_dir is not None:
        text = yaml.safe_dump(
            {**plan_summary(plan), "proxy_width": plan.proxy_width}, sort_keys=False, allow_unicode=True
        )
        atomic_write(run_dir / "search_plan.yaml", lambda p: p.write_text(text, encoding="utf-8"))
    if study.user_attrs.get("search_plan") != record:
        study.set_user_attr("search_plan", record)


def recorded_plan(study: optuna.Study, spec: Spec) -> tuple[Plan, str]:
    """The plan the search recorded in the study (and the hash of the spec it ran), else one
    without a ladder: a study written before there was a plan, or by a bare :func:`run_trials`."""
    rec = study.user_attrs.get("search_plan")
    if rec:
        return Plan.from_dict(rec["plan"]), rec["spec_hash"]
    n = spec.search.n_trials or DEFAULT_N_TRIALS
    plan = Plan(n, 0, (), spec.model.width, spec.seed, 0.0, None, None)
    return plan, spec.hash()


def plan_summary(plan: Plan) -> dict:
    """The plan as best.yaml records it: trial counts, the ladder, FLOPs, and the budget they fit."""
    return {
        "budget": plan.budget,
        "n_proxy": plan.n_proxy,
        "finalists": plan.finalists,
        "rungs": [{"width": r.width, "seeds": list(r.seeds), "entrants": r.entrants} for r in plan.rungs],
        "n_trials": plan.n_trials,
        "planned_flops": plan.total_flops,
        "budget_flops": plan.budget_flops,
        "target_flops": plan.target_flops,
    }

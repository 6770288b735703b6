"""The finalists ladder: where it stands, as a plain function of the plan and the study's trials.

Under µP a configuration means the same thing at every width, so the proxy's finalists can be
re-ranked where the proxy is least noisy and closest to the target: the top ``search.finalists``
proxy configurations are run again at each rung of ``search.rungs`` (wider widths, and/or more
seeds), the better half of them (rounded up) going on to the next rung: successive halving with
width as the fidelity, as in Essential AI's "telescoping" sweeps (arXiv 2505.02222). The winner is
the best mean over seeds at the last rung. A rung left with a single entrant is dropped: it could
not change the winner.

Everything here is a pure function of the spec, the plan and the study's trials, so that any
process (the search, a worker writing best.yaml after its trial, `mutune report`) derives the same
ladder, and a killed search resumes it from what finished. A rung trial is an ordinary trial with
fixed parameters: the configuration's hyperparameters plus ``ladder_width`` and ``ladder_seed``.
How many finalists and rungs a search runs is its plan (:mod:`mutune.budget`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from optuna.trial import FrozenTrial, TrialState

from .budget import Plan
from .study import is_finished, trial_params
from .study.trials import FIDELITY_PREFIX

# The fixed params that make a trial a ladder run, beside its hyperparameters (named apart from
# a sweep point's "width" and "seed", which go through the same trial function); a rung along
# training length (search.fidelity) adds its horizon.
WIDTH, SEED, STEPS = (FIDELITY_PREFIX + k for k in ("width", "seed", "steps"))


@dataclass
class Entry:
    """One configuration at one rung."""

    proxy_trial: int  # the proxy trial it came from
    params: dict[str, Any]  # its searched hyperparameters
    proxy_loss: float
    losses: list[float | None]  # per seed; None = not finished yet; inf = diverged
    trials: list[int | None]

    @property
    def done(self) -> bool:
        return all(v is not None for v in self.losses)

    @property
    def mean(self) -> float | None:
        return sum(self.losses) / len(self.losses) if self.done else None  # type: ignore[arg-type]


@dataclass
class RungState:
    width: int
    seeds: tuple[int, ...]
    entries: list[Entry]
    steps: int | None = None  # a rung along training length: its horizon

    @property
    def done(self) -> bool:
        return all(e.done for e in self.entries)

    def ranked(self) -> list[Entry]:
        """Best mean first; ties go to the better proxy rank (entries arrive in that order)."""
        order = {id(e): i for i, e in enumerate(self.entries)}
        return sorted(self.entries, key=lambda e: (e.mean, order[id(e)]))


@dataclass
class LadderState:
    proxy: list[FrozenTrial]  # complete proxy trials with a finite loss, best first
    proxy_finished: int
    rungs: list[RungState]  # the rungs reached so far
    plan: Plan
    keep: float = 0.5  # the share of a rung that goes on (the width ladder halves)

    @property
    def proxy_done(self) -> bool:
        return self.proxy_finished >= self.plan.n_proxy

    @property
    def done(self) -> bool:
        return self.proxy_done and len(self.rungs) == len(self.plan.rungs) and all(r.done for r in self.rungs)

    def winner(self) -> tuple[int, float | None, RungState | None] | None:
        """(proxy trial number, mean loss at the deciding rung, that rung), or None.

        The leader of the last finished rung (the ladder's winner once it is done), else the proxy's
        best. A rung where every entrant diverged decides nothing."""
        for rung in reversed(self.rungs):
            if rung.done:
                best = rung.ranked()[0]
                if best.mean is not None and math.isfinite(best.mean):
                    return best.proxy_trial, best.mean, rung
        if not self.proxy:
            return None
        return self.proxy[0].number, None, None

    def pending(self) -> list[tuple[Entry, RungState, int]]:
        """(entry, rung, seed) runs the first unfinished rung still needs; [] when none can start."""
        if not self.proxy_done:
            return []
        for rung in self.rungs:
            if not rung.done:
                return [
                    (e, rung, s)
                    for e in rung.entries
                    for s, v in zip(rung.seeds, e.losses, strict=True)
                    if v is None
                ]
        return []

    def to_dict(self) -> dict[str, Any]:
        """What best.yaml records of the ladder."""
        rungs = []
        for r in self.rungs:
            kept = (
                [e.proxy_trial for e in r.ranked()[: math.ceil(len(r.entries) * self.keep)]] if r.done else []
            )
            rungs.append(
                {
                    "width": r.width,
                    **({"steps": r.steps} if r.steps is not None else {}),
                    "seeds": list(r.seeds),
                    "entrants": [
                        {
                            "trial": e.proxy_trial,
                            "proxy_loss": e.proxy_loss,
                            "losses": e.losses,
                            "trials": e.trials,
                            "mean": e.mean,
                        }
                        for e in r.entries
                    ],
                    "kept": kept,
                }
            )
        win = self.winner()
        deciding = None if win is None else win[2]
        return {
            "finalists": self.plan.finalists,
            "done": self.done,
            "rungs": rungs,
            "winner": None if win is None else win[0],
            "winner_loss": None if win is None else win[1],
            "decided_at_width": None if deciding is None else deciding.width,
            **({"decided_at_steps": deciding.steps} if deciding is not None and deciding.steps else {}),
        }


def run_key(params: dict[str, Any], names: list[str]) -> tuple | None:
    try:
        return tuple(params[n] for n in names)
    except KeyError:
        return None


def trial_loss(t: FrozenTrial) -> float:
    return float(t.value) if t.state == TrialState.COMPLETE and t.value is not None else math.inf


def state(plan: Plan, names: list[str], trials: list[FrozenTrial], keep: float = 0.5) -> LadderState:
    """Where the ladder stands, from the study's trials (``names``: the searched hyperparameters;
    ``keep``: the share of a rung that goes on, for the record)."""
    results: dict[tuple, tuple[float, int]] = {}  # (config, width, seed, steps) -> (loss, trial number)
    proxy: list[FrozenTrial] = []
    proxy_finished = 0
    for t in trials:
        params = trial_params(t)
        key = run_key(params, names)
        is_rung = WIDTH in params
        if not is_rung and is_finished(t):
            proxy_finished += 1
            if t.state == TrialState.COMPLETE and t.value is not None and math.isfinite(t.value):
                proxy.append(t)
        if key is None or not is_finished(t):
            continue
        width = int(params[WIDTH]) if is_rung else plan.proxy_width
        seed = int(params[SEED]) if is_rung else plan.proxy_seed
        steps = int(params[STEPS]) if is_rung and STEPS in params else None
        results.setdefault((key, width, seed, steps), (trial_loss(t), t.number))
    proxy.sort(key=lambda t: (t.value, t.number))
    st = LadderState(proxy=proxy, proxy_finished=proxy_finished, rungs=[], plan=plan, keep=keep)
    if not st.proxy_done or not plan.rungs:
        return st
    # enough proxy trials: the best `finalists` of them start the ladder
    moving = [(t.number, {n: t.params[n] for n in names}, float(t.value)) for t in proxy[: plan.finalists]]
    for rung in plan.rungs:
        entries = []
        for number, params, proxy_loss in moving[: rung.entrants]:
            found = [results.get((run_key(params, names), rung.width, s, rung.steps)) for s in rung.seeds]
            entries.append(
                Entry(
                    proxy_trial=number,
                    params=params,
                    proxy_loss=proxy_loss,
                    losses=[f[0] if f else None for f in found],
                    trials=[f[1] if f else None for f in found],
                )
            )
        if not entries:  # every proxy trial diverged: nothing to re-rank
            break
        rs = RungState(rung.width, rung.seeds, entries, rung.steps)
        st.rungs.append(rs)
        if not rs.done:
            break
        moving = [(e.proxy_trial, e.params, e.proxy_loss) for e in rs.ranked()]
    return st

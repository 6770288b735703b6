"""The search's phases: the proxy trials, then the post-search steps, each a batch of trials.

Every phase runs through the study loop (:func:`mutune.study.run_trials`, or worker processes),
so ladder trials are as parallel, resumable and kill-safe as proxy trials: a phase only says how
many trials the study must hold (``search.n_trials`` of a spec edited for the phase) and, for a
post-search step, enqueues the fixed trials it needs first. Each phase re-reads the study, so a
killed search resumes in the phase it was in.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from . import budget, ladder
from .config import Spec
from .events import SILENT, Events
from .study import BudgetLock, TrialJob, count, enqueue, is_finished, reap_orphans, run_trials, trial_params
from .study.workers import run_workers

# A step after the proxy trials: given the plan, the spec and the study's trials, the parameter
# sets of the fixed trials it still needs ([] when it is done). The search enqueues and runs them
# as ordinary trials (parallel, resumable, kill-safe) and asks again. The finalists ladder is one;
# another step (a fit on the proxy, say) goes beside it and sees the ladder's trials.
PostStep = Callable[[budget.Plan, Spec, list[FrozenTrial]], list[dict[str, Any]]]


def ladder_step(plan: budget.Plan, spec: Spec, trials: list[FrozenTrial]) -> list[dict[str, Any]]:
    """The runs the ladder's first unfinished rung still needs: its configurations at its width and
    seeds (and, along training length, its horizon)."""
    st = ladder.state(plan, list(spec.search.space), trials)
    return [
        {**e.params, ladder.WIDTH: rung.width, ladder.SEED: seed}
        | ({ladder.STEPS: rung.steps} if rung.steps is not None else {})
        for e, rung, seed in st.pending()
    ]


POST_STEPS: list[PostStep] = [ladder_step]


@dataclass
class Phases:
    """What every phase of one search shares: the spec, the run dir and study, and how trials run."""

    spec: Spec
    plan: budget.Plan
    run_dir: Path
    study: optuna.Study
    storage: optuna.storages.BaseStorage
    job: TrialJob
    workers: int = 1
    events: Events = SILENT

    def run(self) -> bool:
        """The proxy trials, then every post-search step, each until it is complete. A phase whose
        remaining trials are running in another live process (another search of this study) is not
        waited for: this one returns False, and the other, running the same phases, carries on (as
        :func:`mutune.study.run_trials` counts such trials rather than waiting for them)."""
        if not self.proxy():
            return False
        return all(self.step(step) for step in POST_STEPS)

    def pending(self) -> bool:
        """Whether any phase has a trial to run: False for a search whose study already holds what it
        asks for (the same or fewer proxy trials, a finished ladder). Reads the study; writes nothing."""
        trials = self.study.get_trials(deepcopy=False)
        proxy = [t for t in trials if ladder.WIDTH not in trial_params(t)]
        if sum(is_finished(t) for t in proxy) < self.plan.n_proxy:
            return True
        return any(step(self.plan, self.spec, trials) for step in POST_STEPS)

    def trials(self) -> list[FrozenTrial]:
        reap_orphans(self.study, self.storage)
        return self.study.get_trials(deepcopy=False)

    def phase(self, extra: int) -> None:
        """Run the study's waiting trials plus ``extra`` sampled ones (the loop counts them under its lock)."""
        finished, running = count(self.study)
        waiting = len(self.study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))
        n = max(1, finished + running + waiting + extra)
        phase = self.spec.edit({"search.budget": None, "search.finalists": None, "search.n_trials": n})
        if self.workers == 1:
            run_trials(phase, self.run_dir, job=self.job, events=self.events)
        else:
            run_workers(phase, self.run_dir, self.workers, job=self.job, events=self.events)

    def proxy(self) -> bool:
        """Sampled proxy trials until ``plan.n_proxy`` of them have finished (killed ones are re-run)."""
        while True:
            trials = self.trials()
            proxy = [t for t in trials if ladder.WIDTH not in trial_params(t)]
            done = sum(is_finished(t) for t in proxy)
            if done >= self.plan.n_proxy:
                return True
            running = sum(t.state == TrialState.RUNNING for t in proxy)
            waiting = sum(t.state == TrialState.WAITING for t in proxy)
            extra = self.plan.n_proxy - done - running - waiting
            if extra <= 0 and not waiting:
                return False  # the rest are running in another process
            self.phase(max(0, extra))

    def step(self, step: PostStep) -> bool:
        """Enqueue and run what ``step`` asks for until it asks for nothing."""
        while True:
            wanted = step(self.plan, self.spec, self.trials())
            if not wanted:
                return True
            queued = enqueue_missing(self.study, self.run_dir, wanted)
            if not queued and not self.study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
                return False  # all of them are running in another process
            self.phase(0)


def enqueue_missing(study: optuna.Study, run_dir: Path, wanted: list[dict[str, Any]]) -> int:
    """Enqueue the parameter sets no trial has finished, is running or waits for; a killed one is
    enqueued as its retry (so the study loop does not queue it a second time). Returns how many."""
    with BudgetLock(run_dir / ".budget.lock"):
        trials = study.get_trials(deepcopy=False)
        live = (TrialState.RUNNING, TrialState.WAITING)
        covered = [trial_params(t) for t in trials if is_finished(t) or t.state in live]
        retried = {t.user_attrs.get("retry_of") for t in trials}
        killed = {
            _frozen(trial_params(t)): t.number
            for t in trials
            if t.state == TrialState.FAIL and t.user_attrs.get("retry") and t.number not in retried
        }
        n = 0
        for params in wanted:
            if params in covered:
                continue
            number = killed.get(_frozen(params))
            enqueue(study, params, **({"retry_of": number} if number is not None else {}))
            covered.append(params)
            n += 1
    return n


def _frozen(params: dict[str, Any]) -> tuple:
    return tuple(sorted((k, repr(v)) for k, v in params.items()))

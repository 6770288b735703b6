"""A study's trials as mutune counts them: finished or not, their parameters (fixed ones included),
re-queued retries, and the event a front end renders after each."""

from __future__ import annotations

from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from ..events import TrialEvent

# Fixed parameters named so say where a trial ran (the ladder's width, seed and training length),
# not what it ran: its loss compares only with trials run at the same place.
FIDELITY_PREFIX = "ladder_"


def fidelity(params: dict[str, Any]) -> dict[str, Any]:
    """Where a trial ran, beyond the proxy's own width, length and seed ({} for a proxy trial)."""
    return {k: v for k, v in params.items() if k.startswith(FIDELITY_PREFIX)}


def is_finished(t: FrozenTrial) -> bool:
    """Counts toward n_trials: complete, pruned, or failed because the loss diverged."""
    return t.state in (TrialState.COMPLETE, TrialState.PRUNED) or (
        t.state == TrialState.FAIL and bool(t.user_attrs.get("diverged"))
    )


def count(study: optuna.Study) -> tuple[int, int]:
    """(finished, running) trials in the study."""
    trials = study.get_trials(deepcopy=False)
    return sum(is_finished(t) for t in trials), sum(t.state == TrialState.RUNNING for t in trials)


def enqueue(study: optuna.Study, params: dict[str, Any], **user_attrs: Any) -> None:
    """Queue a trial with fixed ``params``, recording them as our own ``fixed_params`` attribute too,
    so that a waiting or killed trial's parameters can be read without Optuna's internals."""
    study.enqueue_trial(params, user_attrs={"fixed_params": dict(params), **user_attrs})


def trial_params(trial: FrozenTrial) -> dict[str, Any]:
    """The trial's parameters, including those fixed by :func:`enqueue` that it had not yet
    suggested (a WAITING trial, or one killed before its first ``suggest``)."""
    return {**trial.user_attrs.get("fixed_params", {}), **trial.params}


def enqueue_retries(study: optuna.Study, limit: int) -> int:
    """Re-queue, with the same hyperparameters, trials that were killed or interrupted (not diverged)."""
    trials = study.get_trials(deepcopy=False)
    retried = {t.user_attrs.get("retry_of") for t in trials}
    n = 0
    for t in trials:
        if n >= limit:
            break
        if t.state == TrialState.FAIL and t.user_attrs.get("retry") and t.number not in retried:
            enqueue(study, trial_params(t), retry_of=t.number)
            n += 1
    return n


def trial_event(study: optuna.Study, trial: FrozenTrial, n_trials: int, ran_here: bool = True) -> TrialEvent:
    # a longer or wider run's loss is lower for reasons that are not its hyperparameters: the best
    # so far is among trials run where this one was (the seed aside: a rung's seeds are one place)
    place = {k: v for k, v in fidelity(trial_params(trial)).items() if k != FIDELITY_PREFIX + "seed"}
    complete = [
        t
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if t.value is not None
        and {k: v for k, v in fidelity(trial_params(t)).items() if k != FIDELITY_PREFIX + "seed"} == place
    ]
    best = min(complete, key=lambda t: (t.value, t.number)) if complete else None
    finished, running = count(study)
    return TrialEvent(
        number=trial.number,
        state=trial.state.name,
        value=trial.value,
        params=trial.params,
        fidelity=fidelity(trial_params(trial)),
        seconds=float(trial.user_attrs.get("seconds") or 0.0),
        reason=trial.user_attrs.get("fail_reason", ""),
        finished=finished,
        n_trials=n_trials,
        best_value=best.value if best else None,
        best_number=best.number if best else None,
        running=running,
        worker=trial.user_attrs.get("worker", ""),
        ran_here=ran_here,
    )

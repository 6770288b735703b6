"""Sweep points as Optuna trials: enqueued once, run by the study loop, tabled after each one.

Every grid point is enqueued as a trial with fixed params in a study of its own
(``<name>-sweep-<param>``) in the run directory's storage, so a sweep runs in parallel, survives
kills (killed points are re-run with the same params) and resumes (only missing points train).
"""

from __future__ import annotations

import contextlib
import functools
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
from optuna.trial import TrialState

from .. import search as search_mod
from .. import study as study_mod
from ..config import Spec
from ..events import SILENT, Events
from ..files import atomic_write
from .grid import PARAMETRIZATIONS, Grid, Point, point_spec, to_x

# Fixed distributions for the trial params (Optuna refuses a parameter whose distribution changes
# between trials of a study, so these cannot be the grid itself; the enqueued values are exact).
_VALUE_RANGE = (1e-30, 1e30)
_WIDTH_RANGE = (1, 1 << 24)
_SEED_RANGE = (0, (1 << 31) - 1)

RUN_COLUMNS = [
    "parametrization",
    "width",
    "depth",
    "param",
    "value",
    "x",
    "seed",
    "state",
    "loss",
    "diverged",
    "steps",
    "tokens",
    "flops",
    "seconds",
    "trial",
    "fail_reason",
]


def _trial_point(trial: optuna.Trial) -> Point:
    """The trial's grid point: fixed by the enqueued params, so these calls sample nothing."""
    return Point(
        trial.suggest_categorical("parametrization", PARAMETRIZATIONS),
        trial.suggest_int("width", *_WIDTH_RANGE),
        trial.suggest_int("depth", *_WIDTH_RANGE),
        trial.suggest_float("value", *_VALUE_RANGE, log=True),
        trial.suggest_int("seed", *_SEED_RANGE),
    )


def evaluate_point(
    trial: optuna.Trial, spec: Spec, events: Events = SILENT, *, grid: Grid
) -> tuple[TrialState, float | None]:
    """Train the trial's grid point; the search's own trial function records cost, curve, divergence."""
    point = _trial_point(trial)
    if point not in set(grid.points()) and "retry_of" not in trial.user_attrs:
        # the budget is exactly the enqueued points; a trial that was not enqueued samples a random point
        raise AssertionError(f"sweep trial {trial.number} is not a grid point ({point}); the budget is off")
    return search_mod.evaluate_trial(trial, point_spec(spec, point, grid), events)


def _point_of(t: optuna.trial.FrozenTrial, grid: Grid) -> Point | None:
    p = study_mod.trial_params(t)  # a WAITING trial's point is in its fixed params
    if not {"parametrization", "width", "value", "seed"} <= p.keys():
        return None
    depth = int(p.get("depth", grid.base_depth))  # sweeps from before depths were swept ran at the base depth
    return Point(p["parametrization"], int(p["width"]), depth, float(p["value"]), int(p["seed"]))


def runs_table(study: optuna.Study, grid: Grid) -> pd.DataFrame:
    """One row per grid point: its finished trial (the first, if it ran twice), or its state so far."""
    by_point: dict[Point, optuna.trial.FrozenTrial] = {}
    for t in study.get_trials(deepcopy=False):  # in trial-number order
        point = _point_of(t, grid)
        old = by_point.get(point)
        if point is not None and (old is None or not study_mod.is_finished(old)):
            by_point[point] = t  # the first finished trial of the point, else its latest
    rows = []
    for point in grid.points():
        t = by_point.get(point)
        ua = t.user_attrs if t is not None else {}
        finished = t is not None and study_mod.is_finished(t)
        state = t.state.name if t is not None else "MISSING"
        if t is not None and not finished and t.state == TrialState.FAIL:
            state = "PENDING"  # killed or interrupted: re-run on the next invocation
        rows.append(
            {
                "parametrization": point.parametrization,
                "width": point.width,
                "depth": point.depth,
                "param": grid.param,
                "value": point.value,
                "x": to_x(grid.param, point.value),
                "seed": point.seed,
                "state": state,
                "loss": t.value if finished and t.state == TrialState.COMPLETE else float("nan"),
                "diverged": bool(ua.get("diverged", False)),
                "steps": ua.get("steps"),
                "tokens": ua.get("tokens"),
                "flops": ua.get("flops"),
                "seconds": ua.get("seconds"),
                "trial": t.number if t is not None else None,
                "fail_reason": ua.get("fail_reason", ""),
            }
        )
    return pd.DataFrame(rows, columns=RUN_COLUMNS)


def runs_path(run_dir: Path, param: str) -> Path:
    return run_dir / "checks" / f"sweep-{param}-runs.csv"


def write_runs(study: optuna.Study, spec: Spec, run_dir: Path, *, grid: Grid) -> None:
    """After every finished point: the runs table, so a killed sweep leaves what it measured."""
    df = runs_table(study, grid)
    path = runs_path(run_dir, grid.param)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda p: df.to_csv(p, index=False))


def sweep_job(grid: Grid) -> study_mod.TrialJob:
    return study_mod.TrialJob(
        evaluate=functools.partial(evaluate_point, grid=grid),
        write_outputs=functools.partial(write_runs, grid=grid),
    )


def prepare_study(spec: Spec, run_dir: Path, grid: Grid) -> tuple[Spec, int]:
    """Enqueue the grid points that have not finished; return the spec with the study's budget
    (finished trials + points still to run) and the number of points already done.

    Under the search's budget lock, so two sweeps started together do not enqueue a point twice.
    A point that was killed is enqueued as a retry of its last attempt (``retry_of``), so the
    search loop's own retry logic does not queue it a second time. Points waiting from an earlier,
    different grid are dropped (failed), so they do not run before this grid's points.
    """
    storage = study_mod.open_storage(study_mod.storage_url(spec, run_dir))
    study = study_mod.open_study(spec, storage)
    wanted = set(grid.points())
    with study_mod.BudgetLock(run_dir / ".budget.lock"):
        study_mod.reap_orphans(study, storage, locked=True)
        trials = study.get_trials(deepcopy=False)
        covered: set[Point] = set()
        last_fail: dict[Point, int] = {}
        for t in trials:
            point = _point_of(t, grid)
            if point is None:
                continue
            if study_mod.is_finished(t) or t.state == TrialState.RUNNING:
                covered.add(point)
            elif t.state == TrialState.WAITING:
                if point in wanted and point not in covered:
                    covered.add(point)
                else:
                    _drop_waiting(storage, study, t.number)
            elif t.state == TrialState.FAIL and t.user_attrs.get("retry"):
                last_fail[point] = t.number
        finished = [t for t in trials if study_mod.is_finished(t)]
        done = len(wanted & {_point_of(t, grid) for t in finished})
        for point in grid.points():
            if point in covered:
                continue
            attrs: dict[str, Any] = {"sweep_point": True}
            if point in last_fail:
                attrs["retry_of"] = last_fail[point]
            study_mod.enqueue(study, point._asdict(), **attrs)
    budget = len(finished) + (len(wanted) - done)
    return spec.edit({"search.n_trials": max(1, budget)}), done


def _drop_waiting(storage: optuna.storages.BaseStorage, study: optuna.Study, number: int) -> None:
    trial_id = storage.get_trial_id_from_study_id_trial_number(
        storage.get_study_id_from_name(study.study_name), number
    )
    storage.set_trial_user_attr(trial_id, "fail_reason", "dropped: not in the current sweep grid")
    with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):  # another process ran it
        storage.set_trial_state_values(trial_id, TrialState.FAIL)

"""Width sweeps: does a hyperparameter's optimum stay put as the model gets wider?

The µTransfer test of Tensor Programs V, Figure 1: train a grid of (width × value × seed), under
µP and, as the control, under SP, and look at where each width's loss curve bottoms out. Under µP
the optimum should not move with width (its *drift* between the narrowest and widest width, in
log2 units, should be small) and, at a fixed value, a wider model should not do worse. Under SP
the optimal learning rate typically falls by a factor of ~2 per width doubling.

The grid runs through the search machinery (:func:`mutune.search.run_trials` with a
:class:`~mutune.search.TrialJob`): every grid point is enqueued once, as an Optuna trial with
fixed params, in a study of its own (``<name>-sweep-<param>``) in the run directory's storage.
So a sweep runs in parallel (``workers``), survives kills (killed points are re-run with the
same params) and resumes: a re-run trains only the points that have not finished; a grid
extended with new widths or values trains only the new points.

Outputs, in ``<run_dir>/checks/``:

- ``sweep-<param>-runs.csv``: one row per grid point (rewritten after every finished point);
- ``sweep-<param>-summary.csv``: one row per (parametrization, width): the grid argmin, the
  parabolic refinement, whether the optimum is interior, the loss there, the shift from the
  narrowest width and the loss at the value chosen at the narrowest width;
- ``sweep-<param>.yaml``: the report (grid, optima, drift, wider-is-better, flags);
- ``sweep-<param>.png``: loss against log2(value), one curve per width, µP and SP side by side.

The x axis is log2(value), except for β1, β2 and momentum, where it is log2(1 − value): the
quantity that scales. The default grid is the spec's value times 2^k for k = −4…4 (nine points;
for β1, β2 and momentum, 1 − (1 − value)·2^k, keeping the values inside (0, 1)).
"""

from __future__ import annotations

import contextlib
import functools
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import optuna
import pandas as pd
import yaml
from optuna.trial import TrialState

from . import config, data
from . import search as search_mod
from .config import HPARAM_NAMES, HParams, Spec, SpecError
from .events import SILENT, Events
from .files import atomic_write

PARAMETRIZATIONS = ("mup", "sp")
ONE_MINUS = ("beta1", "beta2", "momentum")  # HPs in [0, 1) whose scale is 1 - value
DEFAULT_OCTAVES = 4  # default grid: value * 2^k, k = -4..4
SMOKE_WIDTHS = (32, 64)
SMOKE_OCTAVES = 1
# Fixed distributions for the trial params (Optuna refuses a parameter whose distribution changes
# between trials of a study, so these cannot be the grid itself; the enqueued values are exact).
_VALUE_RANGE = (1e-30, 1e30)
_WIDTH_RANGE = (1, 1 << 24)
_SEED_RANGE = (0, (1 << 31) - 1)

RUN_COLUMNS = [
    "parametrization",
    "width",
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


# ---------------------------------------------------------------------------------------------
# The grid


def to_x(param: str, value: float) -> float:
    """The plot and drift axis: log2(value), or log2(1 - value) for β1, β2 and momentum."""
    return math.log2(1.0 - value) if param in ONE_MINUS else math.log2(value)


def from_x(param: str, x: float) -> float:
    return 1.0 - 2.0**x if param in ONE_MINUS else 2.0**x


def axis_label(param: str) -> str:
    return f"log2(1 - {param})" if param in ONE_MINUS else f"log2({param})"


def default_values(param: str, center: float, octaves: int = DEFAULT_OCTAVES) -> list[float]:
    """``center * 2^k`` for k = -octaves..octaves (on 1 - value for β1, β2, momentum)."""
    if param in ONE_MINUS:
        if not 0 <= center < 1:
            raise SpecError(f"hparams.{param}", f"must be in [0, 1), got {center}")
        values = [1.0 - (1.0 - center) * 2.0**k for k in range(-octaves, octaves + 1)]
        return [v for v in values if 0.0 < v < 1.0]
    if not center > 0:
        raise SpecError(
            f"hparams.{param}",
            f"is {center}; a log2 grid needs a positive centre: give the values with --values",
        )
    return [center * 2.0**k for k in range(-octaves, octaves + 1)]


class Point(NamedTuple):
    """One run of the sweep; its fields are the params of the Optuna trial that runs it."""

    parametrization: str
    width: int
    value: float
    seed: int


@dataclass(frozen=True)
class Grid:
    param: str
    parametrizations: tuple[str, ...]
    widths: tuple[int, ...]  # ascending
    values: tuple[float, ...]  # ascending along the x axis
    seeds: tuple[int, ...]

    def points(self) -> list[Point]:
        """Narrow widths first, so that a partial sweep has complete curves to look at early."""
        return [
            Point(p, w, v, s)
            for w in self.widths
            for p in self.parametrizations
            for v in self.values
            for s in self.seeds
        ]

    def __len__(self) -> int:
        return len(self.parametrizations) * len(self.widths) * len(self.values) * len(self.seeds)


def make_grid(
    spec: Spec,
    param: str,
    widths: list[int] | tuple[int, ...] | None = None,
    values: list[float] | tuple[float, ...] | None = None,
    seeds: int = 1,
    compare: str | None = None,
) -> Grid:
    """Validate the sweep's arguments against the spec; every point's spec is built once here,
    so that a width the model cannot take or a value the spec rejects fails before any training."""
    if param not in HPARAM_NAMES:
        import difflib

        hint = difflib.get_close_matches(param, HPARAM_NAMES, n=1)
        suggestion = f" (did you mean '{hint[0]}'?)" if hint else f" (known: {', '.join(HPARAM_NAMES)})"
        raise SpecError("--param", f"'{param}' is not a hyperparameter{suggestion}")
    base = spec.model.width
    widths = list(widths) if widths else [base, 2 * base, 4 * base, 8 * base]
    if any(w <= 0 for w in widths) or len(set(widths)) != len(widths):
        raise SpecError("--widths", f"need distinct positive widths, got {widths}")
    if values is None:
        values = default_values(param, getattr(spec.hparams, param))
    values = [float(v) for v in values]
    if len(set(values)) != len(values) or not values:
        raise SpecError("--values", f"need distinct values, got {values}")
    for v in values:
        bad = not (0.0 <= v < 1.0) if param in ONE_MINUS else not v > 0
        if bad or not math.isfinite(v):
            need = "in [0, 1)" if param in ONE_MINUS else "> 0 (the axis is log2)"
            raise SpecError("--values", f"{param} values must be {need}, got {v}")
    if seeds < 1:
        raise SpecError("--seeds", f"must be >= 1, got {seeds}")
    parametrizations = [spec.model.parametrization]
    if compare is not None:
        if compare not in PARAMETRIZATIONS:
            raise SpecError("--compare", f"expected one of {', '.join(PARAMETRIZATIONS)}, got {compare!r}")
        if compare != spec.model.parametrization:
            parametrizations.append(compare)
    parametrizations.sort(key=PARAMETRIZATIONS.index)  # µP first, SP second, whatever the spec says
    grid = Grid(
        param=param,
        parametrizations=tuple(parametrizations),
        widths=tuple(sorted(widths)),
        values=tuple(sorted(values, key=lambda v: to_x(param, v))),
        seeds=tuple(spec.seed + i for i in range(seeds)),
    )
    for w in grid.widths:
        for v in grid.values:
            try:
                point_spec(spec, Point(grid.parametrizations[0], w, v, grid.seeds[0]), param)
            except SpecError as e:
                where = "--widths" if e.key.startswith("model.") else "--values"
                raise SpecError(where, f"{w if where == '--widths' else v}: {e.key}: {e.message}") from None
    return grid


def point_spec(spec: Spec, point: Point, param: str) -> Spec:
    """The spec one grid point trains: the sweep's spec at that width, parametrization, seed and value."""
    d = spec.to_dict()
    d["model"]["width"] = point.width
    d["model"]["parametrization"] = point.parametrization
    d["hparams"][param] = point.value
    d["seed"] = point.seed
    d["search"]["space"] = {}  # search.evaluate_trial then trains exactly these hparams
    return config.spec_from_dict(d)


def study_spec(spec: Spec, grid: Grid) -> Spec:
    """The spec recorded with the sweep's study: what decides a point's outcome besides its params.

    The keys a point overrides are set to fixed placeholders (base width, µP, seed 0, the field's
    default value), so changing the spec's width or the centre of the default grid does not make
    the finished points incomparable, while changing, say, ``train.steps`` is refused.
    """
    d = spec.to_dict()
    d["model"]["width"] = spec.model.base_width
    d["model"]["parametrization"] = "mup"
    d["seed"] = 0
    d["hparams"][grid.param] = getattr(HParams(), grid.param)
    s = d["search"]
    s.update(space={}, sampler="random", seed=0, pruner="none")
    s["study_name"] = f"{spec.search.study_name or spec.name}-sweep-{grid.param}"
    return config.spec_from_dict(d)


# ---------------------------------------------------------------------------------------------
# Trials (run by search.run_trials, in this process or in spawned workers)


def _trial_point(trial: optuna.Trial) -> Point:
    """The trial's grid point: fixed by the enqueued params, so these calls sample nothing."""
    return Point(
        trial.suggest_categorical("parametrization", PARAMETRIZATIONS),
        trial.suggest_int("width", *_WIDTH_RANGE),
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
    return search_mod.evaluate_trial(trial, point_spec(spec, point, grid.param), events)


def _point_of(t: optuna.trial.FrozenTrial) -> Point | None:
    p = search_mod.trial_params(t)  # a WAITING trial's point is in its fixed params
    if not {"parametrization", "width", "value", "seed"} <= p.keys():
        return None
    return Point(p["parametrization"], int(p["width"]), float(p["value"]), int(p["seed"]))


def runs_table(study: optuna.Study, grid: Grid) -> pd.DataFrame:
    """One row per grid point: its finished trial (the first, if it ran twice), or its state so far."""
    by_point: dict[Point, optuna.trial.FrozenTrial] = {}
    for t in study.get_trials(deepcopy=False):  # in trial-number order
        point = _point_of(t)
        old = by_point.get(point)
        if point is not None and (old is None or not search_mod.is_finished(old)):
            by_point[point] = t  # the first finished trial of the point, else its latest
    rows = []
    for point in grid.points():
        t = by_point.get(point)
        ua = t.user_attrs if t is not None else {}
        finished = t is not None and search_mod.is_finished(t)
        state = t.state.name if t is not None else "MISSING"
        if t is not None and not finished and t.state == TrialState.FAIL:
            state = "PENDING"  # killed or interrupted: re-run on the next invocation
        rows.append(
            {
                "parametrization": point.parametrization,
                "width": point.width,
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


def sweep_job(grid: Grid) -> search_mod.TrialJob:
    return search_mod.TrialJob(
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
    storage = search_mod.open_storage(search_mod.storage_url(spec, run_dir))
    study = search_mod.open_study(spec, storage)
    wanted = set(grid.points())
    with search_mod._BudgetLock(run_dir / ".budget.lock"):
        search_mod.reap_orphans(study, storage)
        trials = study.get_trials(deepcopy=False)
        covered: set[Point] = set()
        last_fail: dict[Point, int] = {}
        for t in trials:
            point = _point_of(t)
            if point is None:
                continue
            if search_mod.is_finished(t) or t.state == TrialState.RUNNING:
                covered.add(point)
            elif t.state == TrialState.WAITING:
                if point in wanted and point not in covered:
                    covered.add(point)
                else:
                    _drop_waiting(storage, study, t.number)
            elif t.state == TrialState.FAIL and t.user_attrs.get("retry"):
                last_fail[point] = t.number
        finished = [t for t in trials if search_mod.is_finished(t)]
        done = len(wanted & {_point_of(t) for t in finished})
        for point in grid.points():
            if point in covered:
                continue
            attrs: dict[str, Any] = {"sweep_point": True}
            if point in last_fail:
                attrs["retry_of"] = last_fail[point]
            study.enqueue_trial(point._asdict(), user_attrs=attrs)
    budget = len(finished) + (len(wanted) - done)
    return config.spec_from_dict(spec.to_dict(), [f"search.n_trials={max(1, budget)}"]), done


def _drop_waiting(storage: optuna.storages.BaseStorage, study: optuna.Study, number: int) -> None:
    trial_id = storage.get_trial_id_from_study_id_trial_number(
        storage.get_study_id_from_name(study.study_name), number
    )
    storage.set_trial_user_attr(trial_id, "fail_reason", "dropped: not in the current sweep grid")
    with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):  # another process ran it
        storage.set_trial_state_values(trial_id, TrialState.FAIL)


# ---------------------------------------------------------------------------------------------
# Analysis (pure functions of the runs table; unit-tested on synthetic losses)


@dataclass
class Optimum:
    """Where one width's curve bottoms out. ``x`` is in axis units (log2 of the value)."""

    parametrization: str
    width: int
    index: int | None  # grid index of the argmin; None when no value has a finite loss
    value: float  # the grid argmin
    x: float
    loss: float  # mean loss over seeds at the grid argmin
    x_refined: float  # vertex of the parabola through the argmin and its two neighbours
    value_refined: float
    loss_refined: float
    interior: bool  # the argmin has a finite neighbour on both sides
    note: str = ""


def parabola_vertex(xs: tuple[float, float, float], ys: tuple[float, float, float]) -> tuple[float, float]:
    """Vertex (x, y) of the parabola through three points with x0 < x1 < x2 and y1 <= y0, y2.

    With the middle point lowest the parabola opens upwards (or is flat) and its vertex lies in
    [x0, x2]. A flat or degenerate triple returns the middle point.
    """
    (x0, x1, x2), (y0, y1, y2) = xs, ys
    a, b = x1 - x0, x1 - x2
    num = a * a * (y1 - y2) - b * b * (y1 - y0)
    den = a * (y1 - y2) - b * (y1 - y0)
    if den == 0 or not math.isfinite(num / den):
        return x1, y1
    xv = x1 - 0.5 * num / den
    # the parabola's value at the vertex, from its Lagrange form
    yv = (
        y0 * (xv - x1) * (xv - x2) / ((x0 - x1) * (x0 - x2))
        + y1 * (xv - x0) * (xv - x2) / ((x1 - x0) * (x1 - x2))
        + y2 * (xv - x0) * (xv - x1) / ((x2 - x0) * (x2 - x1))
    )
    return xv, yv


def find_optimum(xs: list[float], ys: list[float]) -> tuple[int | None, float, float, bool, str]:
    """(grid argmin index, refined x, refined loss, interior, note) of a curve sampled at ascending ``xs``.

    Non-finite ``ys`` (diverged) never win. The refinement fits a parabola in x (log2) space
    through the argmin and its two neighbours. At the grid's edge, or next to a diverged
    point, there is no parabola: the refined optimum is the grid argmin and ``interior`` is
    False — the true optimum may lie beyond, so a drift measured there is only a bound.
    """
    finite = [i for i, y in enumerate(ys) if math.isfinite(y)]
    if not finite:
        return None, math.nan, math.nan, False, "no finite loss at any value"
    i = min(finite, key=lambda k: (ys[k], k))
    if i == 0 or i == len(xs) - 1:
        side = "lowest" if i == 0 else "highest"
        return i, xs[i], ys[i], False, f"optimum at the {side} value of the grid: extend the grid"
    if not (math.isfinite(ys[i - 1]) and math.isfinite(ys[i + 1])):
        return i, xs[i], ys[i], False, "optimum next to a diverged value: refine the grid"
    xv, yv = parabola_vertex((xs[i - 1], xs[i], xs[i + 1]), (ys[i - 1], ys[i], ys[i + 1]))
    return i, xv, yv, True, ""


def curves(runs: pd.DataFrame) -> pd.DataFrame:
    """Mean and spread over seeds per (parametrization, width, value); a value at which any seed
    diverged has an infinite mean (it is not a usable optimum). Unfinished points are left out."""
    done = runs[runs.state.isin(["COMPLETE", "FAIL"]) & (runs.loss.notna() | runs.diverged)]
    rows = []
    for (par, width, value), g in done.groupby(["parametrization", "width", "value"], sort=True):
        n_div = int(g.diverged.sum())
        losses = g.loss.astype(float)
        rows.append(
            {
                "parametrization": par,
                "width": int(width),
                "value": float(value),
                "x": float(g.x.iloc[0]),
                "loss": math.inf if n_div else float(losses.mean()),
                "loss_std": float(losses.std(ddof=1)) if len(g) > 1 and not n_div else 0.0,
                "n_seeds": len(g),
                "n_diverged": n_div,
            }
        )
    cols = ["parametrization", "width", "value", "x", "loss", "loss_std", "n_seeds", "n_diverged"]
    return pd.DataFrame(rows, columns=cols).sort_values(["parametrization", "width", "x"], ignore_index=True)


@dataclass
class Drift:
    """How far the optimum moved from the narrowest to the widest width, in log2 units (signed:
    negative means the wide model wants a smaller value)."""

    parametrization: str
    narrow: int
    wide: int
    drift: float  # refined: x_refined(wide) - x_refined(narrow)
    drift_grid: float  # the same with grid argmins
    bound: bool  # an endpoint optimum is not interior: |drift| may be larger (or smaller)


@dataclass
class WiderCheck:
    """At fixed hyperparameters, does the loss fall (or stay) as width grows?

    ``at_choice``: at the value chosen on the narrowest width (what µTransfer would copy);
    ``at_optimum``: at each width's own best grid value.
    """

    parametrization: str
    choice_value: float
    losses_at_choice: list[float]
    ok_at_choice: bool
    worst_increase_at_choice: float  # largest loss rise from one width to the next (0 if none)
    losses_at_optimum: list[float]
    ok_at_optimum: bool
    worst_increase_at_optimum: float


def _worst_increase(losses: list[float]) -> float:
    """The largest rise from one width to the next; inf when a wider width diverged after a finite one."""
    worst = 0.0
    for a, b in zip(losses, losses[1:], strict=False):
        if math.isfinite(a) and not math.isfinite(b):
            return math.inf
        if math.isfinite(a) and math.isfinite(b):
            worst = max(worst, b - a)
    return worst


@dataclass
class Analysis:
    param: str
    curves: pd.DataFrame
    optima: list[Optimum]
    drift: dict[str, Drift]
    wider: dict[str, WiderCheck]
    flags: list[str]
    max_drift: float

    @property
    def passed(self) -> bool:
        return not self.flags

    def optimum(self, parametrization: str, width: int) -> Optimum:
        return next(o for o in self.optima if o.parametrization == parametrization and o.width == width)

    def summary(self) -> pd.DataFrame:
        """One row per (parametrization, width): the sweep-<param>-summary.csv."""
        rows = []
        for o in self.optima:
            narrow = self.optimum(o.parametrization, min(p.width for p in self.optima))
            w = self.wider.get(o.parametrization)
            widths = sorted({p.width for p in self.optima if p.parametrization == o.parametrization})
            rows.append(
                {
                    "parametrization": o.parametrization,
                    "width": o.width,
                    "param": self.param,
                    "argmin_value": o.value,
                    "argmin_x": o.x,
                    "argmin_loss": o.loss,
                    "refined_x": o.x_refined,
                    "refined_value": o.value_refined,
                    "refined_loss": o.loss_refined,
                    "interior": o.interior,
                    "shift_from_narrowest": o.x_refined - narrow.x_refined,
                    "loss_at_narrowest_choice": w.losses_at_choice[widths.index(o.width)] if w else math.nan,
                    "note": o.note,
                }
            )
        return pd.DataFrame(rows)


def analyze(runs: pd.DataFrame, param: str, max_drift: float = 1.0, checked: str = "mup") -> Analysis:
    """Optima per width, drift per parametrization, wider-is-better, and the flags.

    Flags are raised for the ``checked`` parametrization only (µP; SP is the control): an
    optimum that is not interior, ``|drift| > max_drift`` log2 units, or a loss that rises with
    width at the narrowest width's choice or at each width's own optimum.
    """
    table = curves(runs)
    optima: list[Optimum] = []
    drift: dict[str, Drift] = {}
    wider: dict[str, WiderCheck] = {}
    flags: list[str] = []
    for par in [p for p in PARAMETRIZATIONS if p in set(table.parametrization)]:
        sub = table[table.parametrization == par]
        widths = sorted(set(sub.width))
        for w in widths:
            c = sub[sub.width == w].sort_values("x")
            xs, ys, vs = list(c.x), list(c.loss), list(c.value)
            i, xr, yr, interior, note = find_optimum(xs, ys)
            optima.append(
                Optimum(
                    parametrization=par,
                    width=w,
                    index=i,
                    value=vs[i] if i is not None else math.nan,
                    x=xs[i] if i is not None else math.nan,
                    loss=ys[i] if i is not None else math.nan,
                    x_refined=xr,
                    value_refined=(from_x(param, xr) if interior else vs[i]) if i is not None else math.nan,
                    loss_refined=yr,
                    interior=interior,
                    note=note,
                )
            )
        mine = [o for o in optima if o.parametrization == par]
        lo, hi = mine[0], mine[-1]
        if len(mine) > 1:
            drift[par] = Drift(
                parametrization=par,
                narrow=lo.width,
                wide=hi.width,
                drift=hi.x_refined - lo.x_refined,
                drift_grid=hi.x - lo.x,
                bound=not (lo.interior and hi.interior),
            )
        if lo.index is not None:
            at_choice = []
            for w in widths:
                row = sub[(sub.width == w) & (sub.value == lo.value)]
                at_choice.append(float(row.loss.iloc[0]) if len(row) else math.nan)
            at_opt = [o.loss for o in mine]
            wider[par] = WiderCheck(
                parametrization=par,
                choice_value=lo.value,
                losses_at_choice=at_choice,
                ok_at_choice=_worst_increase(at_choice) <= 0,
                worst_increase_at_choice=_worst_increase(at_choice),
                losses_at_optimum=at_opt,
                ok_at_optimum=_worst_increase(at_opt) <= 0,
                worst_increase_at_optimum=_worst_increase(at_opt),
            )
        if par != checked:
            continue
        for o in mine:
            if not o.interior:
                flags.append(f"{par} width {o.width}: {o.note}")
        d = drift.get(par)
        if d is not None and abs(d.drift) > max_drift:
            flags.append(
                f"{par}: the optimum drifted {d.drift:+.2f} log2 from width {d.narrow} to {d.wide} "
                f"(more than {max_drift:g})"
            )
        wc = wider.get(par)
        if wc is not None and not wc.ok_at_choice:
            flags.append(
                f"{par}: wider is not better at {param}={wc.choice_value:.4g} (the narrowest width's "
                f"choice): the loss rises by up to {wc.worst_increase_at_choice:.4f} with width"
            )
        if wc is not None and not wc.ok_at_optimum:
            flags.append(
                f"{par}: wider is not better at each width's optimum: the loss rises by up to "
                f"{wc.worst_increase_at_optimum:.4f} with width"
            )
    return Analysis(
        param=param, curves=table, optima=optima, drift=drift, wider=wider, flags=flags, max_drift=max_drift
    )


# ---------------------------------------------------------------------------------------------
# The figure


NAMES = {"mup": "µP", "sp": "SP"}


def plot(analysis: Analysis, path: Path, title: str = "") -> None:
    """TP5 Figure 1: final loss against log2(value), one curve per width, one panel per parametrization.

    Diverged values are drawn as crosses on the top edge; losses above the window (which is
    sized around the optima, so a blow-up does not flatten every curve) as triangles there.
    The parabolic optimum of each width is a star.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = analysis.curves
    pars = [p for p in PARAMETRIZATIONS if p in set(table.parametrization)]
    widths = sorted(set(table.width))
    colors = dict(zip(widths, plt.cm.viridis(np.linspace(0.0, 0.85, len(widths))), strict=True))
    finite = table.loss[np.isfinite(table.loss)]
    if len(finite):
        best = min(o.loss for o in analysis.optima if math.isfinite(o.loss))
        span = max(float(np.percentile(finite, 50)) - best, 0.05)
        top = min(float(finite.max()), best + 3.0 * span)
        bottom = best - 0.08 * (top - best)
        top += 0.08 * (top - best)
    else:
        bottom, top = 0.0, 1.0
    fig, axes = plt.subplots(
        1, len(pars), figsize=(4.6 * len(pars) + 1.6, 4.4), sharey=True, squeeze=False, layout="constrained"
    )
    for ax, par in zip(axes[0], pars, strict=True):
        sub = table[table.parametrization == par]
        for w in widths:
            c = sub[sub.width == w].sort_values("x")
            if c.empty:
                continue
            color = colors[w]
            ok = np.isfinite(c.loss)
            y = c.loss.where(ok)
            ax.plot(c.x, y, "-o", color=color, ms=3.5, lw=1.5, label=f"width {w}")
            if (c.n_seeds > 1).any():
                ax.fill_between(c.x, y - c.loss_std, y + c.loss_std, color=color, alpha=0.15, lw=0)
            # markers on the top edge, drawn unclipped but kept out of the layout computation
            above, div = c[ok & (c.loss > top)], c[~ok]
            for rows, style in ((above, {"marker": "^", "ms": 6}), (div, {"marker": "x", "ms": 7, "mew": 2})):
                if len(rows):
                    (edge,) = ax.plot(rows.x, [top] * len(rows), ls="", color=color, clip_on=False, **style)
                    edge.set_in_layout(False)
            o = analysis.optimum(par, w)
            if math.isfinite(o.x_refined):
                ax.plot(o.x_refined, o.loss_refined, "*", color=color, ms=12, mec="black", mew=0.6, zorder=5)
        d = analysis.drift.get(par)
        head = NAMES.get(par, par)
        if d is not None:
            head += f"\noptimum drift, width {d.narrow}→{d.wide}: {d.drift:+.2f} log2"
            if d.bound:
                head += "\n(a bound: an optimum is at a grid edge)"
        ax.set_title(head, fontsize=10)
        ax.set_xlabel(axis_label(analysis.param))
        ax.grid(True, alpha=0.3)
        ax.set_ylim(bottom, top)
        # the grid's values on a top axis, so the reader need not take powers of two
        xs = sorted(set(sub.x))
        step = max(1, math.ceil(len(xs) / 6))
        top_axis = ax.secondary_xaxis("top")
        top_axis.set_xticks(xs[::step], [f"{from_x(analysis.param, x):.2g}" for x in xs[::step]], fontsize=7)
        top_axis.tick_params(length=2, pad=1)
        if xs and all(abs(x - round(x)) < 1e-9 for x in xs):
            ax.set_xticks([round(x) for x in xs])
    axes[0][0].set_ylabel("final validation loss")
    from matplotlib.lines import Line2D

    handles, labels = axes[0][0].get_legend_handles_labels()
    marks = [
        Line2D([], [], ls="", marker="*", color="grey", mec="black", ms=10, label="optimum (parabola)"),
        Line2D([], [], ls="", marker="x", color="grey", mew=2, label="diverged"),
        Line2D([], [], ls="", marker="^", color="grey", label="above the window"),
    ]
    fig.legend(
        handles + marks, labels + [m.get_label() for m in marks], fontsize=8, loc="outside right upper"
    )
    if title:
        fig.suptitle(title, fontsize=11)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda p: fig.savefig(p, dpi=120, format="png", bbox_inches="tight"))
    plt.close(fig)


# ---------------------------------------------------------------------------------------------
# The command


@dataclass
class SweepResult:
    run_dir: Path
    grid: Grid
    runs: pd.DataFrame  # one row per grid point
    analysis: Analysis
    files: dict[str, Path]
    n_run: int  # points trained by this call (the rest were already in the study)
    report: dict = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return self.analysis.passed


def _plain(x: Any) -> Any:
    """numpy scalars and non-finite floats as YAML-friendly values."""
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        x = float(x)
        return x if math.isfinite(x) else str(x)
    if isinstance(x, np.bool_):
        return bool(x)
    return x


def report(analysis: Analysis, grid: Grid, spec: Spec, files: dict[str, Path]) -> dict:
    return _plain(
        {
            "param": grid.param,
            "axis": axis_label(grid.param),
            "grid": {
                "parametrizations": list(grid.parametrizations),
                "widths": list(grid.widths),
                "values": list(grid.values),
                "seeds": list(grid.seeds),
                "base_width": spec.model.base_width,
                "steps": spec.train.steps,
            },
            "optima": [asdict(o) for o in analysis.optima],
            "drift": {k: asdict(v) for k, v in analysis.drift.items()},
            "wider_is_better": {k: asdict(v) for k, v in analysis.wider.items()},
            "max_drift": analysis.max_drift,
            "flags": analysis.flags,
            "passed": analysis.passed,
            "files": {k: str(v) for k, v in files.items()},
        }
    )


def sweep(
    spec: Spec,
    param: str = "lr",
    widths: list[int] | tuple[int, ...] | None = None,
    values: list[float] | tuple[float, ...] | None = None,
    *,
    seeds: int = 1,
    compare: str | None = None,
    run_dir: str | Path | None = None,
    smoke: bool = False,
    workers: int = 1,
    max_drift: float = 1.0,
    events: Events = SILENT,
) -> SweepResult:
    """Train the (width × value × seed) grid for the spec's parametrization (and ``compare``'s),
    then write the runs and summary CSVs, the report and the figure to ``<run_dir>/checks/``.

    ``widths`` defaults to the spec's width ×1, ×2, ×4, ×8; ``values`` to the module's log2 grid.
    ``smoke``: the spec's tiny variant, widths 32 and 64, three values (centre·2^-1…2^1), one seed.
    Resumable: the same call trains only what is missing. A ``KeyboardInterrupt`` keeps every
    finished point in the study and in the runs CSV.
    """
    if smoke:
        spec = config.smoke(spec)
        widths = list(SMOKE_WIDTHS)
        seeds = 1
        if values is None and param in HPARAM_NAMES:
            values = default_values(param, getattr(spec.hparams, param), SMOKE_OCTAVES)
    if workers < 1:
        raise SpecError("--workers", f"must be >= 1, got {workers}")
    if not max_drift > 0:
        raise SpecError("--max-drift", f"must be > 0, got {max_drift}")
    grid = make_grid(spec, param, widths, values, seeds, compare)
    run_dir = Path(run_dir) if run_dir is not None else search_mod.default_run_dir(spec, smoke)
    data.load(spec.data, min_len=spec.model.seq_len + 1)  # a missing corpus fails here, not in a worker
    sspec = study_spec(spec, grid)
    (run_dir / "checks").mkdir(parents=True, exist_ok=True)
    sspec, done = prepare_study(sspec, run_dir, grid)
    events.sweep_started(grid, run_dir, done)
    job = sweep_job(grid)
    storage = search_mod.open_storage(search_mod.storage_url(sspec, run_dir))
    study = search_mod.open_study(sspec, storage)
    try:
        if workers == 1:
            search_mod.run_trials(sspec, run_dir, job=job, events=events)
        else:
            search_mod.run_workers(sspec, run_dir, workers, job=job, events=events)
    finally:
        write_runs(study, sspec, run_dir, grid=grid)
    runs = runs_table(study, grid)
    missing = runs[~runs.state.isin(["COMPLETE", "FAIL"])]
    if len(missing):
        raise search_mod.SearchFailed(
            f"{len(missing)} of {len(runs)} sweep points did not finish; re-run to resume "
            f"(see {runs_path(run_dir, grid.param)})"
        )
    analysis = analyze(runs, grid.param, max_drift=max_drift, checked="mup")
    checks = run_dir / "checks"
    files = {
        "runs": runs_path(run_dir, grid.param),
        "summary": checks / f"sweep-{grid.param}-summary.csv",
        "report": checks / f"sweep-{grid.param}.yaml",
        "figure": checks / f"sweep-{grid.param}.png",
    }
    summary = analysis.summary()
    atomic_write(files["summary"], lambda p: summary.to_csv(p, index=False))
    m = spec.model
    title = (
        f"{spec.name}: {m.family}, depth {m.depth}, base width {m.base_width}, {spec.train.steps} steps, "
        f"{len(grid.seeds)} seed{'s' if len(grid.seeds) > 1 else ''}"
    )
    plot(analysis, files["figure"], title=title)
    doc = report(analysis, grid, spec, files)
    atomic_write(files["report"], lambda p: p.write_text(yaml.safe_dump(doc, sort_keys=False)))
    return SweepResult(
        run_dir=run_dir,
        grid=grid,
        runs=runs,
        analysis=analysis,
        files=files,
        n_run=len(grid) - done,
        report=doc,
    )

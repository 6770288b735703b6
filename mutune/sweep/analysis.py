"""Where each size's curve bottoms out, how far that moves with size, and whether bigger is better.

The size axis is the width (TP5's µTransfer test) or the depth (CompleteP's): :func:`analyze` looks
along one axis, at the smallest value of the other. Pure functions of the runs table, unit-tested on
synthetic losses with known answers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from .grid import PARAMETRIZATIONS, from_x

AXES = ("width", "depth")
BIGGER = {"width": "wider", "depth": "deeper"}
SMALLEST = {"width": "narrowest", "depth": "shallowest"}


@dataclass
class Optimum:
    """Where one size's curve bottoms out. ``x`` is in axis units (log2 of the value)."""

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
    depth: int | None = None  # None in sweeps from before depths were swept


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
    """Mean and spread over seeds per (parametrization, width, depth, value); a value at which any seed
    diverged has an infinite mean (it is not a usable optimum). Unfinished points are left out."""
    done = runs[runs.state.isin(["COMPLETE", "FAIL"]) & (runs.loss.notna() | runs.diverged)]
    if "depth" not in done.columns:  # a width sweep's table from before depths were swept
        done = done.assign(depth=0)
    rows = []
    keys = ["parametrization", "width", "depth", "value"]
    for (par, width, depth, value), g in done.groupby(keys, sort=True):
        n_div = int(g.diverged.sum())
        losses = g.loss.astype(float)
        rows.append(
            {
                "parametrization": par,
                "width": int(width),
                "depth": int(depth),
                "value": float(value),
                "x": float(g.x.iloc[0]),
                "loss": math.inf if n_div else float(losses.mean()),
                "loss_std": float(losses.std(ddof=1)) if len(g) > 1 and not n_div else 0.0,
                "n_seeds": len(g),
                "n_diverged": n_div,
            }
        )
    cols = ["parametrization", "width", "depth", "value", "x", "loss", "loss_std", "n_seeds", "n_diverged"]
    order = ["parametrization", "width", "depth", "x"]
    return pd.DataFrame(rows, columns=cols).sort_values(order, ignore_index=True)


@dataclass
class Drift:
    """How far the optimum moved from the smallest to the largest size along ``axis`` (width or depth),
    in log2 units (signed: negative means the bigger model wants a smaller value)."""

    parametrization: str
    narrow: int  # the smallest size along the axis
    wide: int  # the largest
    drift: float  # refined: x_refined(wide) - x_refined(narrow)
    drift_grid: float  # the same with grid argmins
    bound: bool  # an endpoint optimum is not interior: |drift| may be larger (or smaller)
    axis: str = "width"


@dataclass
class WiderCheck:
    """At fixed hyperparameters, does the loss fall (or stay) as the size (width or depth) grows?

    ``at_choice``: at the value chosen on the smallest size (what µTransfer would copy);
    ``at_optimum``: at each size's own best grid value.
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
    axis: str = "width"

    @property
    def passed(self) -> bool:
        return not self.flags

    def optimum(self, parametrization: str, size: int) -> Optimum:
        """The optimum of ``parametrization`` at ``size`` along the analysis axis."""
        return next(
            o for o in self.optima if o.parametrization == parametrization and getattr(o, self.axis) == size
        )

    def summary(self) -> pd.DataFrame:
        """One row per (parametrization, size): the sweep-<param>-summary.csv."""
        rows = []
        small = SMALLEST[self.axis]
        for o in self.optima:
            size = getattr(o, self.axis)
            narrow = self.optimum(o.parametrization, min(getattr(p, self.axis) for p in self.optima))
            w = self.wider.get(o.parametrization)
            sizes = sorted(
                {getattr(p, self.axis) for p in self.optima if p.parametrization == o.parametrization}
            )
            rows.append(
                {
                    "parametrization": o.parametrization,
                    "width": o.width,
                    **({"depth": o.depth} if self.axis == "depth" else {}),
                    "param": self.param,
                    "argmin_value": o.value,
                    "argmin_x": o.x,
                    "argmin_loss": o.loss,
                    "refined_x": o.x_refined,
                    "refined_value": o.value_refined,
                    "refined_loss": o.loss_refined,
                    "interior": o.interior,
                    f"shift_from_{small}": o.x_refined - narrow.x_refined,
                    f"loss_at_{small}_choice": w.losses_at_choice[sizes.index(size)] if w else math.nan,
                    "note": o.note,
                }
            )
        return pd.DataFrame(rows)


def _optimum(par: str, width: int, depth: int, c: pd.DataFrame, param: str) -> Optimum:
    """Where one size's curve (sorted along x) bottoms out."""
    xs, ys, vs = list(c.x), list(c.loss), list(c.value)
    i, xr, yr, interior, note = find_optimum(xs, ys)
    return Optimum(
        parametrization=par,
        width=width,
        index=i,
        value=vs[i] if i is not None else math.nan,
        x=xs[i] if i is not None else math.nan,
        loss=ys[i] if i is not None else math.nan,
        x_refined=xr,
        value_refined=(from_x(param, xr) if interior else vs[i]) if i is not None else math.nan,
        loss_refined=yr,
        interior=interior,
        note=note,
        depth=depth or None,
    )


def _drift(par: str, mine: list[Optimum], axis: str) -> Drift:
    lo, hi = mine[0], mine[-1]
    return Drift(
        parametrization=par,
        narrow=getattr(lo, axis),
        wide=getattr(hi, axis),
        drift=hi.x_refined - lo.x_refined,
        drift_grid=hi.x - lo.x,
        bound=not (lo.interior and hi.interior),
        axis=axis,
    )


def _wider(par: str, sub: pd.DataFrame, sizes: list[int], mine: list[Optimum], axis: str) -> WiderCheck:
    """Losses across sizes at the smallest size's choice, and at each size's own optimum."""
    choice = mine[0].value
    at_choice = []
    for size in sizes:
        row = sub[(sub[axis] == size) & (sub.value == choice)]
        at_choice.append(float(row.loss.iloc[0]) if len(row) else math.nan)
    at_opt = [o.loss for o in mine]
    return WiderCheck(
        parametrization=par,
        choice_value=choice,
        losses_at_choice=at_choice,
        ok_at_choice=_worst_increase(at_choice) <= 0,
        worst_increase_at_choice=_worst_increase(at_choice),
        losses_at_optimum=at_opt,
        ok_at_optimum=_worst_increase(at_opt) <= 0,
        worst_increase_at_optimum=_worst_increase(at_opt),
    )


def _flags(
    par: str,
    param: str,
    mine: list[Optimum],
    d: Drift | None,
    wc: WiderCheck | None,
    max_drift: float,
    axis: str,
) -> list[str]:
    flags = [f"{par} {axis} {getattr(o, axis)}: {o.note}" for o in mine if not o.interior]
    bigger, small = BIGGER[axis], SMALLEST[axis]
    if d is not None and abs(d.drift) > max_drift:
        flags.append(
            f"{par}: the optimum drifted {d.drift:+.2f} log2 from {axis} {d.narrow} to {d.wide} "
            f"(more than {max_drift:g})"
        )
    if wc is not None and not wc.ok_at_choice:
        flags.append(
            f"{par}: {bigger} is not better at {param}={wc.choice_value:.4g} (the {small} {axis}'s "
            f"choice): the loss rises by up to {wc.worst_increase_at_choice:.4f} with {axis}"
        )
    if wc is not None and not wc.ok_at_optimum:
        flags.append(
            f"{par}: {bigger} is not better at each {axis}'s optimum: the loss rises by up to "
            f"{wc.worst_increase_at_optimum:.4f} with {axis}"
        )
    return flags


def analyze(
    runs: pd.DataFrame, param: str, max_drift: float = 1.0, checked: str = "mup", axis: str = "width"
) -> Analysis:
    """Optima per size, drift per parametrization, bigger-is-better, and the flags, along ``axis``
    (width, at the smallest depth; or depth, at the smallest width).

    Flags are raised for the ``checked`` parametrization only (µP; SP is the control): an
    optimum that is not interior, ``|drift| > max_drift`` log2 units, or a loss that rises with
    size at the smallest size's choice or at each size's own optimum.
    """
    other = "depth" if axis == "width" else "width"
    table = curves(runs)
    table = table[table[other] == table[other].min()]
    optima: list[Optimum] = []
    drift: dict[str, Drift] = {}
    wider: dict[str, WiderCheck] = {}
    flags: list[str] = []
    for par in [p for p in PARAMETRIZATIONS if p in set(table.parametrization)]:
        sub = table[table.parametrization == par]
        sizes = sorted(set(sub[axis]))
        mine = []
        for size in sizes:
            c = sub[sub[axis] == size].sort_values("x")
            mine.append(_optimum(par, int(c.width.iloc[0]), int(c.depth.iloc[0]), c, param))
        optima += mine
        if len(mine) > 1:
            drift[par] = _drift(par, mine, axis)
        if mine[0].index is not None:
            wider[par] = _wider(par, sub, sizes, mine, axis)
        if par == checked:
            flags += _flags(par, param, mine, drift.get(par), wider.get(par), max_drift, axis)
    return Analysis(
        param=param,
        curves=table.reset_index(drop=True),
        optima=optima,
        drift=drift,
        wider=wider,
        flags=flags,
        max_drift=max_drift,
        axis=axis,
    )

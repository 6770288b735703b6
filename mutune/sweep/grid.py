"""The sweep's grid: widths × values × seeds (× parametrizations), its axis, and each point's spec."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

from ..config import HPARAM_NAMES, HParams, Spec, SpecError
from ..errors import arg
from ..mup.parametrizations import PARAMETRIZATIONS as REGISTERED

PARAMETRIZATIONS = tuple(REGISTERED)  # registration order: the trial's categorical choices
ONE_MINUS = ("beta1", "beta2", "momentum")  # HPs in [0, 1) whose scale is 1 - value
DEFAULT_OCTAVES = 4  # default grid: value * 2^k, k = -4..4


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
            f"is {center}; a log2 grid needs a positive centre: give the values with {arg('values')}",
        )
    return [center * 2.0**k for k in range(-octaves, octaves + 1)]


class Point(NamedTuple):
    """One run of the sweep; its fields are the params of the Optuna trial that runs it."""

    parametrization: str
    width: int
    depth: int
    value: float
    seed: int


@dataclass(frozen=True)
class Grid:
    param: str
    parametrizations: tuple[str, ...]
    widths: tuple[int, ...]  # ascending
    depths: tuple[int, ...]  # ascending
    values: tuple[float, ...]  # ascending along the x axis
    seeds: tuple[int, ...]
    base_depth: int  # m_L = depth / base_depth at every point (the spec's, else its depth)
    depth_scaled: bool = False  # depth scaling asked for (depths swept, or the spec's base_depth set)

    def points(self) -> list[Point]:
        """Small models first, so that a partial sweep has complete curves to look at early."""
        return [
            Point(p, w, d, v, s)
            for w in self.widths
            for d in self.depths
            for p in self.parametrizations
            for v in self.values
            for s in self.seeds
        ]

    def __len__(self) -> int:
        n = len(self.parametrizations) * len(self.values) * len(self.seeds)
        return n * len(self.widths) * len(self.depths)

    @property
    def axes(self) -> tuple[str, ...]:
        """The size axes this grid varies: width, depth or both."""
        return tuple(a for a, v in (("width", self.widths), ("depth", self.depths)) if len(v) > 1)


def make_grid(
    spec: Spec,
    param: str,
    widths: list[int] | tuple[int, ...] | None = None,
    values: list[float] | tuple[float, ...] | None = None,
    seeds: int = 1,
    compare: str | None = None,
    depths: list[int] | tuple[int, ...] | None = None,
) -> Grid:
    """Validate the sweep's arguments against the spec; every point's spec is built once here,
    so that a width or depth the model cannot take or a value the spec rejects fails before any training.

    ``widths`` defaults to the spec's width ×1, ×2, ×4, ×8 when no ``depths`` are given, else to the
    spec's width alone; ``depths`` to the spec's depth. Depths are relative to the spec's
    ``model.base_depth`` (else its ``model.depth``): m_L = depth / base_depth at every point."""
    if param not in HPARAM_NAMES:
        import difflib

        hint = difflib.get_close_matches(param, HPARAM_NAMES, n=1)
        suggestion = f" (did you mean '{hint[0]}'?)" if hint else f" (known: {', '.join(HPARAM_NAMES)})"
        raise SpecError("param", f"'{param}' is not a hyperparameter{suggestion}")
    base = spec.model.width
    widths = list(widths) if widths else ([base] if depths else [base, 2 * base, 4 * base, 8 * base])
    if any(w <= 0 for w in widths) or len(set(widths)) != len(widths):
        raise SpecError("widths", f"need distinct positive widths, got {widths}")
    depths = list(depths) if depths else [spec.model.depth]
    if any(d <= 0 for d in depths) or len(set(depths)) != len(depths):
        raise SpecError("depths", f"need distinct positive depths, got {depths}")
    if values is None:
        values = default_values(param, getattr(spec.hparams, param))
    values = [float(v) for v in values]
    if len(set(values)) != len(values) or not values:
        raise SpecError("values", f"need distinct values, got {values}")
    for v in values:
        bad = not (0.0 <= v < 1.0) if param in ONE_MINUS else not v > 0
        if bad or not math.isfinite(v):
            need = "in [0, 1)" if param in ONE_MINUS else "> 0 (the axis is log2)"
            raise SpecError("values", f"{param} values must be {need}, got {v}")
    if seeds < 1:
        raise SpecError("seeds", f"must be >= 1, got {seeds}")
    parametrizations = [spec.model.parametrization]
    if compare is not None:
        if compare not in PARAMETRIZATIONS:
            raise SpecError("compare", f"expected one of {', '.join(PARAMETRIZATIONS)}, got {compare!r}")
        if compare != spec.model.parametrization:
            parametrizations.append(compare)
    # the verified parametrizations first, the controls after, whatever the spec says
    parametrizations.sort(key=lambda p: (REGISTERED[p].coord_check == "control", PARAMETRIZATIONS.index(p)))
    grid = Grid(
        param=param,
        parametrizations=tuple(parametrizations),
        widths=tuple(sorted(widths)),
        depths=tuple(sorted(depths)),
        values=tuple(sorted(values, key=lambda v: to_x(param, v))),
        seeds=tuple(spec.seed + i for i in range(seeds)),
        base_depth=spec.model.base_depth or spec.model.depth,
        depth_scaled=spec.model.base_depth is not None or depths != [spec.model.depth],
    )
    for w in grid.widths:
        for d in grid.depths:
            for v in grid.values:
                _check_point(spec, grid, Point(grid.parametrizations[0], w, d, v, grid.seeds[0]))
    return grid


def _depth_keys(grid: Grid) -> dict:
    """The base depth is pinned only where depth scaling is asked for: a spec that does not ask for
    it (an optimizer without a depth rule, say) must not be refused one at every point."""
    return {"model.base_depth": grid.base_depth} if grid.depth_scaled else {}


def _check_point(spec: Spec, grid: Grid, point: Point) -> None:
    try:
        point_spec(spec, point, grid)
    except SpecError as e:
        where = "depths" if e.key.endswith("depth") else "widths" if e.key.startswith("model.") else "values"
        what = {"widths": point.width, "depths": point.depth, "values": point.value}[where]
        raise SpecError(where, f"{what}: {e.key}: {e.message}") from None


def point_spec(spec: Spec, point: Point, grid: Grid) -> Spec:
    """The spec one grid point trains: the sweep's spec at that width, depth (relative to the grid's
    base depth where depth scaling is asked for), parametrization, seed and value."""
    return spec.edit(
        {
            "model.width": point.width,
            "model.depth": point.depth,
            **_depth_keys(grid),
            "model.parametrization": point.parametrization,
            f"hparams.{grid.param}": point.value,
            "seed": point.seed,
            "search.space": {},  # search.evaluate_trial then trains exactly these hparams
        }
    )


def study_spec(spec: Spec, grid: Grid) -> Spec:
    """The spec recorded with the sweep's study: what decides a point's outcome besides its params.

    The keys a point overrides are set to fixed placeholders (base width, base depth, the first
    registered parametrization, seed 0, the field's default value), so changing the spec's width,
    depth or the centre of the default grid does not make the finished points incomparable, while
    changing, say, ``train.steps`` or the base depth is refused.
    """
    return spec.edit(
        {
            "model.width": spec.model.base_width,
            "model.depth": grid.base_depth,
            **_depth_keys(grid),
            "model.parametrization": PARAMETRIZATIONS[0],
            "seed": 0,
            f"hparams.{grid.param}": getattr(HParams(), grid.param),
            "search.space": {},
            "search.sampler": "random",
            "search.seed": 0,
            "search.pruner": "none",
            "search.study_name": f"{spec.search.study_name or spec.name}-sweep-{grid.param}",
        }
    )

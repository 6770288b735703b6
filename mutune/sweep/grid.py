"""The sweep's grid: widths × values × seeds (× parametrizations), its axis, and each point's spec."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

from ..config import HPARAM_NAMES, HParams, Spec, SpecError

PARAMETRIZATIONS = ("mup", "sp")
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
    return spec.edit(
        {
            "model.width": point.width,
            "model.parametrization": point.parametrization,
            f"hparams.{param}": point.value,
            "seed": point.seed,
            "search.space": {},  # search.evaluate_trial then trains exactly these hparams
        }
    )


def study_spec(spec: Spec, grid: Grid) -> Spec:
    """The spec recorded with the sweep's study: what decides a point's outcome besides its params.

    The keys a point overrides are set to fixed placeholders (base width, µP, seed 0, the field's
    default value), so changing the spec's width or the centre of the default grid does not make
    the finished points incomparable, while changing, say, ``train.steps`` is refused.
    """
    return spec.edit(
        {
            "model.width": spec.model.base_width,
            "model.parametrization": "mup",
            "seed": 0,
            f"hparams.{grid.param}": getattr(HParams(), grid.param),
            "search.space": {},
            "search.sampler": "random",
            "search.seed": 0,
            "search.pruner": "none",
            "search.study_name": f"{spec.search.study_name or spec.name}-sweep-{grid.param}",
        }
    )

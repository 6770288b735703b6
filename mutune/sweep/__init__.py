"""Width sweeps: does a hyperparameter's optimum stay put as the model gets wider?

The µTransfer test of Tensor Programs V, Figure 1: train a grid of (width × value × seed), under
µP and, as the control, under SP, and look at where each width's loss curve bottoms out. Under µP
the optimum should not move with width (its *drift* between the narrowest and widest width, in
log2 units, should be small) and, at a fixed value, a wider model should not do worse. Under SP
the optimal learning rate typically falls by a factor of ~2 per width doubling.

The grid runs through the study machinery (:func:`mutune.study.run_trials` with a
:class:`~mutune.study.TrialJob`): every grid point is enqueued once, as an Optuna trial with
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

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from .. import config
from ..arguments import corpus, factory, positive
from ..config import HPARAM_NAMES, Spec, SpecError
from ..events import SILENT, Events
from ..files import atomic_write
from ..mup.parametrizations import PARAMETRIZATIONS as REGISTERED
from .analysis import Analysis, Drift, Optimum, WiderCheck, analyze, curves, find_optimum, parabola_vertex
from .figure import NAMES, plot
from .grid import (
    DEFAULT_OCTAVES,
    ONE_MINUS,
    PARAMETRIZATIONS,
    Grid,
    Point,
    axis_label,
    default_values,
    from_x,
    make_grid,
    point_spec,
    study_spec,
    to_x,
)

# The sweep's trials train, so they load torch: imported on first use (PEP 562), which keeps the grid
# (and so the command line's checks of --param, --widths, --values) free of the training stack.
_TRIALS = (
    "RUN_COLUMNS",
    "evaluate_point",
    "prepare_study",
    "runs_path",
    "runs_table",
    "sweep_job",
    "write_runs",
)


def __getattr__(name: str) -> Any:
    if name in _TRIALS:
        from . import trials

        return getattr(trials, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "DEFAULT_OCTAVES",
    "NAMES",
    "ONE_MINUS",
    "PARAMETRIZATIONS",
    "RUN_COLUMNS",
    "Analysis",
    "Drift",
    "Grid",
    "Optimum",
    "Point",
    "SweepResult",
    "WiderCheck",
    "analyze",
    "axis_label",
    "curves",
    "default_values",
    "evaluate_point",
    "find_optimum",
    "from_x",
    "make_grid",
    "parabola_vertex",
    "plot",
    "point_spec",
    "prepare_study",
    "report",
    "runs_path",
    "runs_table",
    "study_spec",
    "sweep",
    "sweep_job",
    "to_x",
    "write_runs",
]

SMOKE_WIDTHS = (32, 64)
SMOKE_OCTAVES = 1


@dataclass
class SweepResult:
    run_dir: Path
    grid: Grid
    runs: pd.DataFrame  # one row per grid point
    analysis: Analysis  # along the grid's first size axis (width, else depth)
    files: dict[str, Path]
    n_run: int  # points trained by this call (the rest were already in the study)
    report: dict = field(default_factory=dict)
    analyses: dict[str, Analysis] = field(default_factory=dict)  # by axis: width and/or depth

    @property
    def passed(self) -> bool:
        return all(a.passed for a in (self.analyses or {"": self.analysis}).values())


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


def _findings(analysis: Analysis) -> dict:
    return {
        "size_axis": analysis.axis,
        "optima": [asdict(o) for o in analysis.optima],
        "drift": {k: asdict(v) for k, v in analysis.drift.items()},
        "wider_is_better": {k: asdict(v) for k, v in analysis.wider.items()},
        "max_drift": analysis.max_drift,
        "flags": analysis.flags,
        "passed": analysis.passed,
    }


def report(analyses: dict[str, Analysis], grid: Grid, spec: Spec, files: dict[str, Path]) -> dict:
    """The sweep's YAML: the grid, and the findings along each size axis (the first one also at the
    top level, as a width sweep always had them)."""
    first = next(iter(analyses.values()))
    return _plain(
        {
            "param": grid.param,
            "axis": axis_label(grid.param),
            "grid": {
                "parametrizations": list(grid.parametrizations),
                "widths": list(grid.widths),
                "depths": list(grid.depths),
                "values": list(grid.values),
                "seeds": list(grid.seeds),
                "base_width": spec.model.base_width,
                "base_depth": grid.base_depth,
                "steps": spec.train.steps,
            },
            **_findings(first),
            "passed": all(a.passed for a in analyses.values()),
            "by_axis": {axis: _findings(a) for axis, a in analyses.items()},
            "files": {k: str(v) for k, v in files.items()},
        }
    )


def prepare(
    spec: Spec,
    param: str = "lr",
    widths: list[int] | tuple[int, ...] | None = None,
    values: list[float] | tuple[float, ...] | None = None,
    *,
    seeds: int = 1,
    compare: str | None = None,
    smoke: bool = False,
    workers: int = 1,
    max_drift: float = 1.0,
    depths: list[int] | tuple[int, ...] | None = None,
) -> tuple[Spec, Grid]:
    """The spec a sweep trains (its smoke variant with ``smoke``) and its grid, with every point's spec
    built once: a bad argument is refused here, named, before anything trains. Torch-free, so the
    command line calls it before loading the training stack."""
    if smoke:
        spec = config.smoke(spec)
        widths = [SMOKE_WIDTHS[0]] if depths else list(SMOKE_WIDTHS)
        seeds = 1
        if values is None and param in HPARAM_NAMES:
            values = default_values(param, getattr(spec.hparams, param), SMOKE_OCTAVES)
    positive("workers", workers)
    if not max_drift > 0:
        raise SpecError("max_drift", f"must be > 0, got {max_drift}")
    grid = make_grid(spec, param, widths, values, seeds, compare, depths)
    corpus(spec)
    factory(spec)
    return spec, grid


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
    depths: list[int] | tuple[int, ...] | None = None,
    events: Events = SILENT,
) -> SweepResult:
    """Train the (width × depth × value × seed) grid for the spec's parametrization (and ``compare``'s),
    then write the runs and summary CSVs, the report and the figures to ``<run_dir>/checks/``.

    ``widths`` defaults to the spec's width ×1, ×2, ×4, ×8 (to the spec's width alone when ``depths``
    are given); ``depths`` to the spec's depth; ``values`` to the module's log2 grid. Depths are
    relative to ``model.base_depth`` (else the spec's depth). The optimum's drift is reported along
    each axis that varies: across width at the smallest depth, across depth at the smallest width.
    ``smoke``: the spec's tiny variant, widths 32 and 64 (32 alone with ``depths``), three values (centre·2^-1…2^1), one seed.
    Resumable: the same call trains only what is missing. A ``KeyboardInterrupt`` keeps every
    finished point in the study and in the runs CSV.
    """
    spec, grid = prepare(
        spec,
        param,
        widths,
        values,
        seeds=seeds,
        compare=compare,
        smoke=smoke,
        workers=workers,
        max_drift=max_drift,
        depths=depths,
    )
    from .. import data
    from .. import search as search_mod
    from .. import study as study_mod
    from ..device import threads_for
    from ..study import workers as workers_mod
    from .trials import prepare_study, runs_path, runs_table, sweep_job, write_runs

    spec = spec.edit({"train.threads": threads_for(spec.train.threads, workers)})  # each point's share
    run_dir = Path(run_dir) if run_dir is not None else search_mod.default_run_dir(spec, smoke)
    data.load(spec.data, min_len=spec.model.seq_len + 1)  # a missing corpus fails here, not in a worker
    sspec = study_spec(spec, grid)
    (run_dir / "checks").mkdir(parents=True, exist_ok=True)
    sspec, done = prepare_study(sspec, run_dir, grid)
    events.sweep_started(grid, run_dir, done)
    job = sweep_job(grid)
    storage = study_mod.open_storage(study_mod.storage_url(sspec, run_dir))
    study = study_mod.open_study(sspec, storage)
    try:
        if workers == 1:
            study_mod.run_trials(sspec, run_dir, job=job, events=events)
        else:
            workers_mod.run_workers(sspec, run_dir, workers, job=job, events=events)
    finally:
        write_runs(study, sspec, run_dir, grid=grid)
    runs = runs_table(study, grid)
    missing = runs[~runs.state.isin(["COMPLETE", "FAIL"])]
    if len(missing):
        raise study_mod.SearchFailed(
            f"{len(missing)} of {len(runs)} sweep points did not finish; re-run to resume "
            f"(see {runs_path(run_dir, grid.param)})"
        )
    analyses = {
        axis: analyze(runs, grid.param, max_drift=max_drift, checked=checked_of(spec), axis=axis)
        for axis in grid.axes or ("width",)
    }
    files, doc = write_outputs(analyses, grid, spec, run_dir)
    return SweepResult(
        run_dir=run_dir,
        grid=grid,
        runs=runs,
        analysis=next(iter(analyses.values())),
        files=files,
        n_run=len(grid) - done,
        report=doc,
        analyses=analyses,
    )


def checked_of(spec: Spec) -> str | None:
    """The parametrization whose optimum the sweep flags when it moves: the spec's own, unless it is a
    control (SP's optimum is expected to move)."""
    p = spec.model.parametrization
    return None if REGISTERED[p].coord_check == "control" else p


def write_outputs(
    analyses: dict[str, Analysis], grid: Grid, spec: Spec, run_dir: Path
) -> tuple[dict[str, Path], dict]:
    """The summary CSVs, the figures (one per size axis; a width sweep's keep their names) and the
    report YAML of a finished sweep (the runs CSV is kept current by the trials themselves)."""
    from .trials import runs_path

    checks = run_dir / "checks"
    p = grid.param
    files = {"runs": runs_path(run_dir, p), "report": checks / f"sweep-{p}.yaml"}
    m = spec.model
    seeds = f"{len(grid.seeds)} seed{'s' if len(grid.seeds) > 1 else ''}"
    for i, (axis, analysis) in enumerate(analyses.items()):
        tag = "" if axis == "width" else f"-{axis}"
        key = "" if i == 0 else f"_{axis}"
        files[f"summary{key}"] = checks / f"sweep-{p}{tag}-summary.csv"
        files[f"figure{key}"] = checks / f"sweep-{p}{tag}.png"
        summary = analysis.summary()
        atomic_write(files[f"summary{key}"], lambda f, s=summary: s.to_csv(f, index=False))
        fixed = f"depth {min(grid.depths)}" if axis == "width" else f"width {min(grid.widths)}"
        title = (
            f"{spec.name}: {m.family}, {fixed}, base width {m.base_width}, base depth {grid.base_depth}, "
            f"{spec.train.steps} steps, {seeds}"
        )
        plot(analysis, files[f"figure{key}"], title=title)
    doc = report(analyses, grid, spec, files)
    atomic_write(
        files["report"],
        lambda f: f.write_text(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True), encoding="utf-8"),
    )
    return files, doc


from .. import _callable_module  # noqa: E402

_callable_module(__name__)  # mutune.sweep(...) calls sweep.sweep(...)

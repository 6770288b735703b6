"""``mutune sweep``: a width (and/or depth) x value grid, and whether the optimum stays put, as tables."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from .. import config
from ..config import PARAMETRIZATION_NAMES as NAMES
from ..errors import SpecError
from .app import OverridesArg, ThreadsOpt, app, comma_list, threads_override
from .console import err, out, show
from .progress import SweepDisplay
from .signals import interruptible


@app.command()
def sweep(
    config_path: Annotated[Path, typer.Argument(metavar="CONFIG", help="the YAML spec")],
    overrides: OverridesArg = None,
    widths: Annotated[
        str | None,
        typer.Option(
            "--widths",
            metavar="W,W,...",
            help="comma-separated widths; default: the spec's width x1,2,4,8 (x1 with --depths)",
        ),
    ] = None,
    depths: Annotated[
        str | None,
        typer.Option(
            "--depths",
            metavar="D,D,...",
            help="comma-separated depths (relative to model.base_depth); default: the spec's",
        ),
    ] = None,
    param: Annotated[
        str, typer.Option("--param", metavar="NAME", help="the hyperparameter to sweep (any of hparams)")
    ] = "lr",
    values: Annotated[
        str | None,
        typer.Option(
            "--values",
            metavar="V,V,...",
            help="comma-separated values; default: the spec's value x 2^-4 ... 2^4",
        ),
    ] = None,
    seeds: Annotated[
        int, typer.Option("--seeds", metavar="N", help="seeds per point (spec seed, +1, ...)")
    ] = 1,
    compare: Annotated[
        str | None,
        typer.Option("--compare", metavar="sp", help="also sweep this parametrization (sp), the control"),
    ] = None,
    workers: Annotated[
        int, typer.Option("--workers", metavar="N", help="parallel worker processes on this machine")
    ] = 1,
    run_dir: Annotated[
        Path | None, typer.Option("--run-dir", metavar="DIR", help="default: runs/<name>")
    ] = None,
    smoke: Annotated[
        bool, typer.Option("--smoke", help="widths 32 and 64, 3 values, few steps (CI)")
    ] = False,
    max_drift: Annotated[
        float,
        typer.Option(
            "--max-drift", metavar="LOG2", help="flag a µP optimum drift above this many log2 units"
        ),
    ] = 1.0,
    strict: Annotated[bool, typer.Option("--strict", help="exit 1 when a µP check is flagged")] = False,
    threads: ThreadsOpt = None,
) -> None:
    """Train a width (and/or depth) x value grid and show whether the optimum stays put (TP5 Figure 1).

    Writes checks/sweep-<param>-runs.csv, -summary.csv, .yaml and .png in the run dir. Flags (an
    optimum at the grid edge, a drift above --max-drift, a wider model doing worse) are reported;
    the exit code is 0 unless --strict. Re-running the same command resumes the sweep.

    Example: mutune sweep configs/quickstart.yaml --widths 64,128,256 --compare sp
    """
    spec = config.load_spec(config_path, [*(overrides or []), *threads_override(threads)])
    if smoke:  # the sweep's smoke variant fixes its shape, widths and seeds: an explicit choice would be lost
        clash = config.smoke_conflict(config_path, overrides or [])
        clash = clash or ("--widths" if widths else "--seeds" if seeds != 1 else None)
        if clash:
            raise SpecError(clash, "--smoke would replace this explicit value; drop --smoke or the value")
    from .. import sweep as sweep_mod  # the grid (torch-free; its trials load torch when they run)

    args = dict(
        param=param,
        widths=comma_list(widths, "--widths", int),
        values=comma_list(values, "--values", float),
        seeds=seeds,
        compare=compare,
        smoke=smoke,
        workers=workers,
        max_drift=max_drift,
        depths=comma_list(depths, "--depths", int),
    )
    sweep_mod.prepare(spec, **args)  # every point's spec, so a bad argument answers before torch loads
    from .. import search as search_mod

    where = run_dir or search_mod.default_run_dir(spec, smoke)
    display = SweepDisplay()
    with interruptible(display, where):
        res = sweep_mod.sweep(spec, **args, run_dir=run_dir, events=display)
    print_sweep(res)
    raise typer.Exit(1 if strict and not res.passed else 0)


def print_sweep(res: Any) -> None:
    """One table of optima per size axis (width, depth), the drifts, bigger-is-better, the flags."""
    for a in (res.analyses or {res.analysis.axis: res.analysis}).values():
        _print_sweep_axis(a, len(res.grid.seeds))
    out.print(f"wrote {', '.join(str(p) for p in res.files.values())}", highlight=False, soft_wrap=True)


def _print_sweep_axis(a: Any, n: int) -> None:
    from .. import sweep as sweep_mod

    axis = a.axis
    table = Table(title=f"{axis} sweep of {a.param}, {n} seed{'s' if n > 1 else ''} per point")
    for col in (
        "",
        axis,
        f"best {a.param} (grid)",
        "refined",
        sweep_mod.axis_label(a.param),
        "loss",
        "interior",
    ):
        table.add_column(col, justify="right" if col not in ("", "interior") else "left")
    for o in a.optima:
        table.add_row(
            NAMES.get(o.parametrization, o.parametrization),
            str(getattr(o, axis)),
            f"{o.value:.4g}",
            f"{o.value_refined:.4g}",
            f"{o.x_refined:+.2f}",
            f"{o.loss:.4f}",
            "yes" if o.interior else "no",
        )
    show(table)
    for par, d in a.drift.items():
        bound = " (a bound: an optimum is at the grid edge)" if d.bound else ""
        out.print(
            f"{NAMES.get(par, par)} drift of the optimum, {axis} {d.narrow} -> {d.wide}: "
            f"{d.drift:+.2f} log2 (grid {d.drift_grid:+.0f}){bound}",
            highlight=False,
        )
    bigger = "wider" if axis == "width" else "deeper"
    for par, w in a.wider.items():
        verdict = "yes" if w.ok_at_choice else f"no (+{w.worst_increase_at_choice:.4f})"
        out.print(
            f"{NAMES.get(par, par)} {bigger} is better at {a.param}={w.choice_value:.4g}: {verdict}",
            highlight=False,
        )
    for flag in a.flags:
        err.print(f"[yellow]flag:[/] {flag}", highlight=False)

"""``mutune search``: the proxy search, best.yaml, then the target."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .. import arguments, config
from .app import OverridesArg, ThreadsOpt, app, threads_override
from .console import log_line, out
from .progress import Display
from .signals import interruptible
from .target import print_target


@app.command()
def search(
    config_path: Annotated[Path, typer.Argument(metavar="CONFIG", help="the YAML spec")],
    overrides: OverridesArg = None,
    run_dir: Annotated[
        Path | None, typer.Option("--run-dir", metavar="DIR", help="default: runs/<name>")
    ] = None,
    smoke: Annotated[bool, typer.Option("--smoke", help="tiny widths, few steps and trials (CI)")] = False,
    no_transfer: Annotated[
        bool, typer.Option("--no-transfer", help="do not train the target afterwards")
    ] = False,
    workers: Annotated[
        int, typer.Option("--workers", metavar="N", help="parallel worker processes on this machine")
    ] = 1,
    storage: Annotated[
        str | None,
        typer.Option(
            "--storage", metavar="URL", help="Optuna storage URL (e.g. postgresql://...) to share a study"
        ),
    ] = None,
    skip_check: Annotated[
        bool,
        typer.Option("--skip-check", help="search even if the coord check fails (recorded in best.yaml)"),
    ] = False,
    tracker: Annotated[
        str | None,
        typer.Option(
            "--tracker", metavar="NAME", help="log trials to tensorboard, mlflow or wandb (tracker.backend)"
        ),
    ] = None,
    threads: ThreadsOpt = None,
) -> None:
    """Search hyperparameters on the µP proxy, write best.yaml, then train the target.

    A fast coord check runs first and stops a µP model that is not µP. Re-running the same command
    resumes the study.

    Example: mutune search configs/quickstart.yaml search.n_trials=8
    """
    extra = [f"search.storage={storage}"] if storage else []
    extra += [f"tracker.backend={tracker}"] if tracker else []
    extra += threads_override(threads)
    spec = config.load_spec(config_path, [*(overrides or []), *extra], smoke=smoke)
    arguments.search(spec, workers=workers, where=run_dir)
    from .. import search as search_mod  # the training stack, once the spec is known to be good

    where = run_dir or search_mod.default_run_dir(spec, smoke)
    display = Display()
    with interruptible(display, where):
        res = search_mod.search(
            spec,
            run_dir=where,
            smoke=False,  # (already applied by load_spec, under the explicit overrides)
            transfer=not no_transfer,
            workers=workers,
            skip_check=skip_check,
            events=display,
        )
    prov = res.best.provenance
    note = display.summary(res.n_finished)
    if note:
        log_line(note)
    running = f" ({res.n_running} still running in another process)" if res.n_running else ""
    lad = prov.get("ladder") or {}
    via = (
        f" (ladder: {lad['winner_loss']:.4f} at width {lad['decided_at_width']})"
        if lad.get("winner_loss")
        else ""
    )
    out.print(
        f"best trial #{prov['trial_number']} loss {prov['loss']:.4f}{via} of {res.n_finished} finished{running} -> "
        f"{res.run_dir / 'best.yaml'}",
        highlight=False,
    )
    if res.target is not None:
        raise typer.Exit(print_target(res.target))

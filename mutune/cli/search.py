"""``mutune search``: the proxy search, best.yaml, then the target."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .. import arguments, config
from ..errors import SpecError
from .app import OverridesArg, ThreadsOpt, app, threads_override
from .console import log_line, out
from .progress import Display
from .signals import interruptible
from .target import decided, print_laws, print_target, submitted


def launch_slurm(
    spec: config.Spec,
    run_dir: Path | None,
    smoke: bool,
    workers: int,
    launcher: str,
    opts: list[str],
    wait: bool,
    skip_check: bool = False,
) -> int:
    """``--launcher slurm``: submit the workers as an array, say how to follow them, or wait for them."""
    from .. import slurm

    if launcher not in ("local", "slurm"):
        raise SpecError("--launcher", f"expected local or slurm, got {launcher!r}")
    if launcher != "slurm":
        raise SpecError(
            "--launcher", f"--slurm and --wait go with --launcher slurm (got --launcher {launcher})"
        )
    options = slurm.parse_options(opts)
    slurm.submitit_module()  # a missing extra is one line, before the training stack loads
    from .. import search as search_mod

    where = run_dir or search_mod.default_run_dir(spec, smoke)
    sub = slurm.submit_search(spec, where, workers, options, skip_check=skip_check)
    submitted(sub, f"{workers} search worker(s) on the study in {where}")
    if not wait:
        out.print(
            f"then: mutune report {where}   and   mutune transfer {where} --launcher slurm ...",
            highlight=False,
        )
        return 0
    failed = slurm.wait(sub)
    best = config.RunDir(where).best()
    if best is None:
        return 1
    prov = best.provenance
    out.print(
        f"best trial #{prov['trial_number']} loss {prov['loss']:.4f} of {prov['n_trials_finished']} finished -> "
        f"{where / 'best.yaml'}" + (f" ({failed} job(s) failed, see above)" if failed else ""),
        highlight=False,
    )
    return 1 if failed == len(sub.jobs) else 0


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
    launcher: Annotated[
        str,
        typer.Option(
            "--launcher",
            metavar="local|slurm",
            help="slurm: submit the --workers as a Slurm job array (submitit)",
        ),
    ] = "local",
    slurm_opts: Annotated[
        list[str] | None,
        typer.Option(
            "--slurm", metavar="KEY=VALUE", help="a submitit/Slurm parameter, e.g. partition=gpu (repeatable)"
        ),
    ] = None,
    wait: Annotated[bool, typer.Option("--wait", help="with --launcher slurm: wait for the jobs")] = False,
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
    if launcher != "local" or slurm_opts or wait:
        raise typer.Exit(
            launch_slurm(spec, run_dir, smoke, workers, launcher, slurm_opts or [], wait, skip_check)
        )
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
    via = f" (ladder: {lad['winner_loss']:.4f} at {decided(lad)})" if lad.get("winner_loss") else ""
    out.print(
        f"best trial #{prov['trial_number']} loss {prov['loss']:.4f}{via} of {res.n_finished} finished{running} -> "
        f"{res.run_dir / 'best.yaml'}",
        highlight=False,
    )
    print_laws(res.best.laws, res.run_dir / "best.yaml")
    if res.target is not None:
        raise typer.Exit(print_target(res.target))

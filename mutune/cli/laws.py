"""``mutune laws``: fit (or extend) the LR laws across training length and batch size on a run dir."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .app import ThreadsOpt, app, comma_list
from .progress import Display
from .signals import interruptible
from .target import print_laws


@app.command()
def laws(
    run_dir: Annotated[Path, typer.Argument(metavar="RUN_DIR", help="a search run dir")],
    steps: Annotated[
        str | None,
        typer.Option("--steps", metavar="M,M,...", help="multiples of train.steps, e.g. 0.25,0.5,1"),
    ] = None,
    batch_size: Annotated[
        str | None,
        typer.Option("--batch-size", metavar="M,M,...", help="multiples of train.batch_size, e.g. 0.5,1,2"),
    ] = None,
    seeds: Annotated[
        int | None, typer.Option("--seeds", metavar="N", help="seeds per point [default: 1]")
    ] = None,
    lr_step: Annotated[
        float | None, typer.Option("--lr-step", metavar="OCT", help="octaves between LRs [default: 0.5]")
    ] = None,
    threads: ThreadsOpt = None,
) -> None:
    """Fit (or extend) the LR laws across training length and batch size on a run dir's proxy.

    An LR line search around best.yaml's winner at each multiple; the fit goes into best.yaml
    (`laws:`), and `mutune transfer --to train.steps=...` applies it. Points already trained are
    reused, so adding a multiple trains only that one.

    Example: mutune laws runs/quickstart --steps 0.25,0.5,1
    """
    multiples = {
        "steps": comma_list(steps, "--steps", float),
        "batch_size": comma_list(batch_size, "--batch-size", float),
    }
    from .. import laws_run

    display = Display()
    with interruptible(display, run_dir):
        best = laws_run.extend(
            run_dir, multiples, seeds=seeds, lr_step=lr_step, threads=threads, events=display
        )
    print_laws(best.laws, run_dir / "best.yaml")
    raise typer.Exit(0)

"""``mutune export``: the transferred µP recipe in the config syntax of the stack the target trains on."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .. import files
from ..errors import SpecError
from .app import app
from .console import log_line, out

FORMATS = ("yaml", "torchtitan", "nemo", "hf")  # mutune.export.FORMATS (checked here, before torch loads)


@app.command()
def export(
    run_dir: Annotated[Path, typer.Argument(metavar="RUN_DIR", help="a search run dir (holding best.yaml)")],
    to: Annotated[
        list[str] | None,
        typer.Option(
            "--to",
            metavar="KEY=VALUE",
            help="the target, e.g. width=4096 (repeatable); default: the spec's target",
        ),
    ] = None,
    fmt: Annotated[
        str,
        typer.Option(
            "--format",
            metavar="FORMAT",
            help="yaml (mutune's schema), torchtitan (a config-registry module), nemo (NeMo Automodel's "
            "optimizer block) or hf (a Granite config.json)",
        ),
    ] = "yaml",
    output: Annotated[
        Path | None, typer.Option("--out", "-o", metavar="FILE", help="write here instead of stdout")
    ] = None,
    no_laws: Annotated[
        bool, typer.Option("--no-laws", help="copy the hparams literally: ignore best.yaml's fitted LR laws")
    ] = False,
    force: Annotated[
        bool,
        typer.Option("--force", help="apply a best.yaml tuned for another family/base width/parametrization"),
    ] = False,
) -> None:
    """Export the target's transferred recipe: hyperparameters after the laws, and per parameter-name
    pattern the LR, weight-decay and Adam-ε multipliers and the init std, plus the forward multipliers.

    What a format cannot express (NeMo's one Adam ε for every group, u-µP's unit-scaled forward, a
    model Granite does not compute) is refused, naming what is missing.

    Example: mutune export runs/quickstart --to width=4096 --format torchtitan
    """
    if fmt not in FORMATS:
        raise SpecError("--format", f"expected one of {', '.join(FORMATS)}, got {fmt!r}")
    if output is not None and not output.parent.is_dir():
        raise SpecError("--out", f"folder {output.parent} not found")
    from .. import export as export_mod  # the model stack, once the arguments are known to be good

    text = export_mod.export(run_dir, to or [], fmt, no_laws=no_laws, force=force)
    if output is None:
        out.file.write(text)
        out.file.flush()
    else:
        files.atomic_write(output, lambda f: f.write_text(text))
        log_line(f"{fmt} export -> {output}")
    raise typer.Exit(0)

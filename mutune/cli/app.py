"""The Typer app every command registers on, its global options, and the arguments commands share."""

from __future__ import annotations

from typing import Annotated

import typer

from .. import __version__
from ..errors import SpecError
from .console import out, state

HELP_NAMES = ["-h", "--help"]
GLOBAL_FLAGS = ("-v", "--verbose", "-q", "--quiet", "--debug")  # accepted anywhere on the line (main())

app = typer.Typer(
    name="mutune",
    help="µTransfer made practical: tune hyperparameters on a narrow µP proxy, train the wide target with them "
    "unchanged.\n\nExample: mutune search configs/quickstart.yaml",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": HELP_NAMES},
)


def _version(value: bool) -> None:
    if value:
        out.print(f"mutune {__version__}")
        raise typer.Exit()


@app.callback()
def _global(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="more logs (every training step)")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress output")] = False,
    debug: Annotated[bool, typer.Option("--debug", help="show tracebacks")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="print the version")
    ] = False,
) -> None:
    state.verbose, state.quiet, state.debug = verbose, quiet, debug


OverridesArg = Annotated[
    list[str] | None,
    typer.Argument(
        metavar="KEY=VALUE",
        help="dotted KEY=VALUE overrides, e.g. train.steps=50 search.n_trials=8",
        show_default=False,
    ),
]


ThreadsOpt = Annotated[
    int | None,
    typer.Option(
        "--threads",
        metavar="N",
        help="CPU threads per training process (train.threads); default: $OMP_NUM_THREADS, else the "
        "cores shared by the processes that train at once",
        show_default=False,
    ),
]


def threads_override(threads: int | None) -> list[str]:
    """``--threads N`` as the spec key it sets (validated with the spec, named ``train.threads``)."""
    return [] if threads is None else [f"train.threads={threads}"]


def comma_list(text: str | None, key: str, cast: type) -> list | None:
    """``--widths 64,128`` / ``--values 1e-3,3e-3``: a list of ``cast``, or a user error naming the option."""
    if text is None:
        return None
    try:
        return [cast(v) for v in text.split(",") if v.strip()]
    except ValueError:
        what = "integers" if cast is int else "numbers"
        raise SpecError(key, f"expected comma-separated {what}, got {text!r}") from None

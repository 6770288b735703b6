"""The two consoles every command writes to, the global flags' state, and log lines.

``out`` takes results (plans, tables), ``err`` progress, warnings and errors. Lines a user may paste
(commands, paths) are printed with ``soft_wrap`` so the terminal renderer never breaks them.
"""

from __future__ import annotations

import math
import os

from rich.console import Console, RenderableType
from rich.measure import Measurement

# soft_wrap: a printed line is never broken by the renderer (on a terminal or piped), so commands,
# paths and resume lines can be pasted; tables still fit their cells to the width.
out = Console(soft_wrap=True)  # results: plans, tables
err = Console(stderr=True, soft_wrap=True)  # progress, warnings, errors


class _State:
    argv: list[str] | None = None  # the command line as given to main(), for resume hints
    verbose = False
    quiet = False
    debug = False


state = _State()


def live_display() -> bool:
    """Live bars only on an interactive terminal; plain one-line-per-event logs otherwise."""
    return err.is_terminal and not state.quiet and os.environ.get("CI", "").lower() not in ("1", "true")


def fmt_secs(s: float) -> str:
    """Seconds for people (``42s``, ``3m05s``, ``1h02m``); ``?`` for an ETA not known yet."""
    if not math.isfinite(s):
        return "?"
    s = int(round(s))
    return (
        f"{s // 3600}h{s % 3600 // 60:02d}m"
        if s >= 3600
        else f"{s // 60}m{s % 60:02d}s"
        if s >= 60
        else f"{s}s"
    )


def log_line(msg: str) -> None:
    """A progress line on stderr, where results on stdout stay clean; nothing under ``--quiet``."""
    if not state.quiet:
        err.print(msg, highlight=False, soft_wrap=True)


def show(table: RenderableType, console: Console | None = None) -> None:
    """A table, never cut: on a terminal it fits the terminal's width (long names wrap in their cell,
    their columns fold rather than end in "…"); piped or logged, it takes the width it needs, so a
    log or ``| less`` holds every name and value whole, whatever ``COLUMNS`` says."""
    console = console or out
    for column in getattr(table, "columns", ()):
        if column.overflow == "ellipsis":  # rich's default: "wte.we…"
            column.overflow = "fold"
    if not console.is_terminal:
        need = Measurement.get(console, console.options.update_width(10_000), table).maximum
        if need > console.width:
            console = Console(file=console.file, width=need, soft_wrap=True, no_color=True, highlight=False)
    console.print(table)

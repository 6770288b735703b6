"""Ctrl-C and SIGTERM (pre-emption) on the command line: they stop a command like one Ctrl-C, exit 130,
and say what was kept and the command that continues, for a search, sweep or law fit and a target alike.
"""

from __future__ import annotations

import contextlib
import shlex
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import typer

from ..events import Events
from .console import err, state
from .progress import Display

SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _interrupt_once() -> None:
    """SIGINT and SIGTERM (pre-emption) stop like Ctrl-C: a KeyboardInterrupt, raised once. A repeat
    while the first is being handled (the running trial marked, a checkpoint written, the hint
    printed) is ignored, so a quick double Ctrl-C cannot cut that short or print a traceback."""
    fired = False

    def handler(signum: int, frame: object) -> None:
        nonlocal fired
        if not fired:
            fired = True
            raise KeyboardInterrupt

    for s in SIGNALS:
        signal.signal(s, handler)


@contextlib.contextmanager
def stop_once(restore: bool) -> Iterator[None]:
    """Within the block, a signal stops the command once (``_interrupt_once``); only the main thread
    can set handlers. On the way out, ``restore`` (called from Python) gives the caller its handlers
    back; as the program the work is done, so a late repeat is ignored while the interpreter exits
    (Python's own shutdown would reset a handler to the default, and a signal then kills the
    process, not 130)."""
    main_thread = threading.current_thread() is threading.main_thread()
    saved = {s: signal.getsignal(s) for s in SIGNALS} if main_thread else {}
    if main_thread:
        _interrupt_once()
    try:
        yield
    finally:
        for s, handler in saved.items():
            signal.signal(s, handler if restore else signal.SIG_IGN)


def _command_line(*extra: str) -> str:
    """The command as the user typed it (plus ``extra`` flags it lacks), quoted for pasting."""
    args = list(state.argv if state.argv is not None else sys.argv[1:])
    args += [a for a in extra if a not in args]
    return " ".join(shlex.quote(a) for a in ["mutune", *args])


def _resume_hint(display: Events, run_dir: Path | None, exc: BaseException | None, *, target: bool) -> None:
    """What was kept, then the command that continues on a line of its own, unwrapped, so it can be
    pasted. A search, sweep or law fit continues by running the same command again; a target
    (``target``) with ``--resume``, from the checkpoint in its folder."""
    stopped = getattr(exc, "out_dir", None)  # a target (the search's own too) stopped after its checkpoint
    if stopped is not None:
        what = f"stopped at step {exc.step} of {exc.steps}; the checkpoint is in {stopped}"
    elif target:
        what = f"the last checkpoint is kept in {getattr(display, 'target_dir', None) or run_dir}"
    else:
        what = f"finished trials are kept in {run_dir}" if run_dir else "finished work is kept"
    err.print(f"interrupted; {what}. Resume with:", highlight=False, soft_wrap=True)
    again = _command_line("--resume") if target else _command_line()
    err.print(f"  {again}", highlight=False, markup=False, soft_wrap=True)


@contextlib.contextmanager
def interruptible(
    display: Events, run_dir: Path | None, *, target: bool = False, hint: bool = True, code: int = 130
) -> Iterator[None]:
    """Ctrl-C (or SIGTERM) inside: close the live display, say how to resume (``_resume_hint``; not
    with ``hint`` off, as on the ranks after the first), exit ``code`` (130; a rank that ``mutune
    transfer --nproc`` launched exits 0 and leaves the exit code and the hint to the launcher)."""
    try:
        yield
    except KeyboardInterrupt as e:
        _close(display)
        if hint:
            _resume_hint(display, run_dir, e, target=target)
        raise typer.Exit(code) from None
    finally:
        _close(display)


def _close(display: Events) -> None:
    if isinstance(display, Display):
        display.close()

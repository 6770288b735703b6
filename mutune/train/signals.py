"""Stopping a run that has a folder cleanly: SIGTERM (a pre-empted job) or Ctrl-C between steps.

While a run with an output folder trains, SIGINT and SIGTERM are recorded, not raised: an
exception raised in the middle of ``optimizer.step()`` would leave weights half-updated, and the
checkpoint written after it would be wrong. The loop polls after each step; on a signal it writes
a checkpoint of the last whole step and raises :class:`Interrupted`, so a pre-empted job loses at
most the step it was in. A second signal while the checkpoint is written is ignored (it is the same
request). Under torchrun the ranks agree on the step to stop at (every ``LOG_EVERY`` steps, where
the loss is synchronised anyway), so none is left waiting in a collective.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
    """A run stopped by a signal after writing its checkpoint (a ``KeyboardInterrupt``, so every
    layer that cleans up on Ctrl-C does so here too)."""

    def __init__(self, out_dir: Path, step: int, steps: int, signum: int):
        self.out_dir, self.step, self.steps, self.signum = out_dir, step, steps, signum
        name = signal.Signals(signum).name
        super().__init__(f"{name}: stopped at step {step} of {steps}; checkpoint in {out_dir}")


@contextlib.contextmanager
def deferred(active: bool = True) -> Iterator[Callable[[], int | None]]:
    """Within the block SIGINT and SIGTERM are recorded; the yielded ``poll()`` returns the first
    signal's number (or None). Handlers are restored on the way out. Only the main thread can set
    handlers: elsewhere (and when not ``active``) signals behave as before and ``poll()`` is None."""
    if not active or threading.current_thread() is not threading.main_thread():
        yield lambda: None
        return
    got: list[int] = []

    def record(signum: int, frame: object) -> None:
        got.append(signum)

    previous = {s: signal.signal(s, record) for s in SIGNALS}
    try:
        yield lambda: got[0] if got else None
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)

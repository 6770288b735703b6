"""Writing files so that neither a kill nor a full disk leaves a half-written one, and naming why a
write failed in words a user can act on.

``atomic_write`` writes beside the target, flushes it to the disk, then renames it over: a kill, a
full disk or a permission error leaves the previous file whole (or no file), never a partial one,
and the temporary file is removed on every failure path (a full disk is not kept full by our own
leftovers). ``os_error`` finds the operating-system cause in an exception chain, since libraries
wrap it: ``torch.save`` raises ``RuntimeError: [enforce fail at inline_container.cc]`` with the
``OSError`` as context, Optuna's journal ``AssertionError: Should not reach.`` after an ENOSPC.
"""

from __future__ import annotations

import contextlib
import errno
import os
import threading
from collections.abc import Callable
from pathlib import Path

from .errors import SpecError

try:
    import fcntl
except ImportError:  # Windows: no flock; writers of one run dir are not serialised there
    fcntl = None

# What the file system refused, and what to do about it (one line each)
CAUSES = {
    errno.ENOSPC: "no space left on the device; free some space and run the same command again",
    errno.EDQUOT: "disk quota exceeded; free some space and run the same command again",
    errno.EFBIG: "file too large for this file system",
    errno.EACCES: "permission denied; run as a user who may write here, or choose another folder",
    errno.EPERM: "operation not permitted; run as a user who may write here, or choose another folder",
    errno.EROFS: "read-only file system; choose a writable folder",
    errno.EIO: "input/output error from the device",
    errno.ENOTDIR: "a file is in the way where a folder should be",
    errno.EEXIST: "exists and is not a folder; choose another path",
    errno.EISDIR: "is a folder, not a file; name a file",
    errno.ENAMETOOLONG: "file name too long for this file system; choose a shorter name",
}


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Write to a temp file beside ``path``, fsync it, and rename it over ``path``.

    A kill leaves the old file or the new one; any failure removes the temp file and leaves ``path``
    as it was. An ``OSError`` the file system raised (also when a library wrapped it) comes out as a
    :class:`SpecError` naming ``path`` and the cause.
    """
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            tmp.unlink()
        cause = os_error(e)
        if cause is not None and not isinstance(e, SpecError):
            raise SpecError(str(path), describe(cause)) from e
        raise


def os_error(exc: BaseException | None) -> OSError | None:
    """The first ``OSError`` with a cause listed in :data:`CAUSES` in ``exc``'s chain (itself, its
    ``__cause__`` or ``__context__``), or None."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in CAUSES:
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def describe(e: OSError) -> str:
    """``cannot write: no space left on the device; ...`` for an OSError of :data:`CAUSES`."""
    return CAUSES.get(e.errno, e.strerror or str(e))


def os_error_line(e: OSError) -> str:
    """``PATH: CAUSE``, one line for the CLI."""
    where = e.filename if e.filename is not None else "file system"
    if getattr(e, "filename2", None) is not None:  # a rename or link: both ends
        where = f"{where} -> {e.filename2}"
    return f"{where}: {describe(e)}"


class Lock:
    """An exclusive, blocking ``flock`` on ``path`` (created if missing), re-entrant within a process.

    What serialises the writers of one run dir: a search writing best.yaml after a trial, ``mutune
    laws`` merging its law into laws.yaml and best.yaml, two sweeps or laws appending to their
    tables. Each reads what is on disk *under* the lock and writes its merge before letting go, so
    no writer replaces another's work with a copy it read earlier. The kernel drops the lock when
    its holder dies, so a killed process never leaves it held. Re-entrant because a write under the
    lock may call another that takes it (two ``flock`` calls on two descriptors of one file in one
    process would wait for each other forever); threads of one process are serialised too.
    """

    _held: dict[str, list] = {}  # resolved path -> [open file, depth]
    _guard = threading.RLock()

    def __init__(self, path: Path):
        self.path = Path(path)

    def __enter__(self) -> Lock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        key = str(self.path.resolve())
        self._guard.acquire()  # one thread of this process at a time holds any of these locks
        try:
            self.key = key
            entry = self._held.get(key)
            if entry is not None:
                entry[1] += 1
                return self
            f = open(self.path, "a+")  # noqa: SIM115 (held until __exit__)
            try:
                if fcntl is not None:
                    fcntl.flock(f, fcntl.LOCK_EX)  # waits for another process's writer
            except BaseException:  # (a Ctrl-C while waiting)
                f.close()
                raise
            self._held[key] = [f, 1]
        except BaseException:
            self._guard.release()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        entry = self._held[self.key]
        entry[1] -= 1
        if entry[1] == 0:
            del self._held[self.key]
            if fcntl is not None:
                fcntl.flock(entry[0], fcntl.LOCK_UN)
            entry[0].close()
        self._guard.release()

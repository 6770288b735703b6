"""Checking and repairing an Optuna journal file (``study.journal``) before anything is appended.

How Optuna 5's ``JournalFileBackend`` works, and why mutune checks it (measured; see
docs/troubleshooting.md): each operation is appended as one JSON line (ASCII, starting
``{"op_code":``) under a lock file ``<journal>.lock`` (a symlink), then fsynced. The lock is
mutune's :class:`JournalLock` (the same symlink protocol, naming its holder), so a holder killed
while appending no longer blocks every later writer. Readers take no
lock: they skip an unterminated or undecodable *last* line silently, but raise on a bad line that
has lines after it. So a journal torn mid-line (a crash, a kill or a full disk during a write)
still loads, yet the next append lands on the partial line; from then on neither mutune, ``mutune
report`` nor optuna-dashboard can load the study. Optuna's lock only orders writers; it does not
notice a torn tail.

Policy, applied under Optuna's own writer lock (so no writer appends meanwhile):

- damage only after the last valid record (a torn last line, a garbage last line, a torn line with
  an append merged onto it): the file is copied byte for byte to ``<journal>.<time>.<pid>.bak``,
  then truncated to the last valid record. Records are implicit ids (trial k is the k-th
  ``create_trial``), so only a tail can be dropped without shifting what follows.
- a bad line with valid records after it: refused, naming the line and byte offset. Optuna cannot
  load such a file either; repairing it needs a person (the ``.bak`` copies and this message say where).

A trial whose last record was torn is left RUNNING; the search's orphan reaper fails it and runs
its hyperparameters again.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

from optuna.storages.journal._file import BaseJournalFileLock

from ..errors import MutuneWarning, SpecError

try:
    import fcntl
except ImportError:  # Windows: takeovers are not serialised there
    fcntl = None

RECORD_START = b'{"op_code":'  # how Optuna writes every record


@dataclass
class Scan:
    good_end: int  # byte offset just after the last valid record before any damage
    records: int  # valid records before any damage
    bad_line: int | None  # 1-based number of the first bad line
    bad_offset: int | None
    valid_after_bad: bool  # a valid record follows the first bad line (damage in the middle)


def _valid(line: bytes) -> bool:
    if not line.endswith(b"\n"):
        return False
    try:
        record = json.loads(line)
    except ValueError:  # JSONDecodeError and UnicodeDecodeError
        return False
    return isinstance(record, dict) and isinstance(record.get("op_code"), int)


def scan(data: bytes) -> Scan:
    """Where the valid records end and the first damage starts."""
    s = Scan(good_end=0, records=0, bad_line=None, bad_offset=None, valid_after_bad=False)
    offset, number = 0, 0
    while offset < len(data):
        end = data.find(b"\n", offset)
        line = data[offset : len(data) if end < 0 else end + 1]
        number += 1
        if _valid(line):
            if s.bad_line is None:
                s.good_end, s.records = offset + len(line), s.records + 1
            else:
                s.valid_after_bad = True
                break
        elif s.bad_line is None:
            s.bad_line, s.bad_offset = number, offset
        offset += len(line)
    return s


def _refuse(path: Path, data: bytes, s: Scan) -> SpecError:
    head = data[s.bad_offset : s.bad_offset + 40]
    return SpecError(
        str(path),
        f"line {s.bad_line} (byte {s.bad_offset}) is not a journal record ({head!r}...) and valid "
        "records follow it, so it cannot be dropped safely; Optuna cannot load this file either. "
        "Restore it from a backup or a *.bak beside it (see docs/troubleshooting.md)",
    )


def looks_like_journal(path: Path) -> bool:
    """An existing file whose first record is Optuna's (or an empty file)."""
    if not path.is_file():
        return False
    with open(path, "rb") as f:
        head = f.read(len(RECORD_START))
    return head in (b"", RECORD_START)


def _not_a_journal(path: Path, data: bytes, s: Scan) -> SpecError | None:
    """A file with no valid record that does not start like one is someone else's: never cut it."""
    if s.records == 0 and not data.startswith(RECORD_START):
        return SpecError(str(path), "is not an Optuna journal file (its first line is not a journal record)")
    return None


def _damaged_tail(path: Path, data: bytes) -> Scan | None:
    """The scan of a journal whose tail alone is damaged (cut back by :func:`repair`); None when it is
    whole. Damage in the middle, or a file that is not a journal, is refused (:class:`SpecError`)."""
    s = scan(data)
    if s.bad_line is None:
        return None
    if s.valid_after_bad:
        raise _refuse(path, data, s)
    foreign = _not_a_journal(path, data, s)
    if foreign is not None:
        raise foreign
    return s


_REPLAYED: dict[str, tuple[int, int, object]] = {}  # path -> (bytes checked, lines, replay state)


def replay(path: str | Path) -> None:
    """Replay every whole record as Optuna will, so that a record it cannot replay (an unknown
    operation, a missing field: another Optuna's journal, or an edited one) is a user error naming
    the line, not an internal error in the middle of a search. (A torn tail is :func:`repair`'s.)
    Incremental within a process: what was checked is not replayed again while the file only grows."""
    import optuna
    from optuna.storages.journal._storage import JournalOperation, JournalStorageReplayResult

    path = Path(path)
    if not path.is_file():
        return
    key = str(path.resolve())
    offset, number, result = _REPLAYED.get(key, (0, 0, None))
    if result is None or path.stat().st_size < offset:
        offset, number, result = 0, 0, JournalStorageReplayResult("mutune-replay-check-")
    known = {op.value for op in JournalOperation}
    with open(path, "rb") as f, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        f.seek(offset)
        for line in f:
            if not _valid(line):
                break  # the damaged tail (or middle) is check's and repair's to report
            number += 1
            record = json.loads(line)
            why = f"unknown operation {record['op_code']}" if record["op_code"] not in known else ""
            if not why:
                try:
                    result.apply_logs([record])  # type: ignore[attr-defined]
                except Exception as e:  # Optuna's own: KeyError on a missing field, AssertionError...
                    why = f"{type(e).__name__}: {e}"
            if why:
                _REPLAYED.pop(key, None)
                raise SpecError(
                    str(path),
                    f"line {number} is a record Optuna {optuna.__version__} cannot replay ({why}); the file was "
                    "edited or written by another version. Restore it from a backup or a *.bak beside it",
                )
            offset += len(line)
    _REPLAYED[key] = (offset, number, result)


def check(path: str | Path) -> str | None:
    """Read-only: None when the journal is whole; a one-line note when its tail is damaged (Optuna
    reads past it, the next search repairs it); :class:`SpecError` when the middle is damaged."""
    path = Path(path)
    if not path.is_file():
        return None
    data = path.read_bytes()
    s = _damaged_tail(path, data)
    if s is None:
        return None
    return (
        f"{path}: the last {len(data) - s.good_end} bytes are not a complete record (a write was cut "
        "off); they are ignored, and the next `mutune search` in this run dir repairs the file"
    )


def repair(path: str | Path) -> str | None:
    """Under the writers' lock: truncate a damaged tail to the last valid record after keeping a
    byte-for-byte backup. Returns a one-line note of what was done, or None when nothing was needed."""
    path = Path(path)
    if not path.is_file() or path.stat().st_size == 0:
        return None
    lock = JournalLock(path)  # the lock the journal's writers take
    lock.acquire()
    try:
        data = path.read_bytes()
        s = _damaged_tail(path, data)
        if s is None:
            return None
        backup = path.with_name(f"{path.name}.{time.strftime('%Y%m%d-%H%M%S')}.{os.getpid()}.bak")
        f = open(backup, "xb")  # noqa: SIM115 (closed below; the file is ours only once created)
        try:
            with f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        except BaseException:
            backup.unlink(missing_ok=True)  # a full disk: leave no partial backup behind
            raise
        with open(path, "r+b") as f:
            f.truncate(s.good_end)
            f.flush()
            os.fsync(f.fileno())
    finally:
        lock.release()
    return (
        f"{path}: dropped {len(data) - s.good_end} bytes after the last complete record (from line "
        f"{s.bad_line}), left by an interrupted write; {s.records} records kept, the original is in {backup}"
    )


# ---------------------------------------------------------------------------------------------
# The writers' lock

TOKEN = "mutune-journal-lock:"  # what a JournalLock's symlink points to: "<TOKEN><host>:<pid>:<start>"
UNKNOWN_HOLDER_STALE = 30.0  # seconds: a lock whose holder cannot be checked is stale after this


def _start_time(pid: int) -> str:
    """The process's start time (Linux: field 22 of /proc/<pid>/stat), so a reused pid is not
    taken for the holder; '' where it cannot be read."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rpartition(")")[2].split()[19]


def _alive(pid: int, start: str) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return not start or _start_time(pid) in ("", start)


class JournalLock(BaseJournalFileLock):
    """The journal's writers' lock: Optuna's protocol (create the symlink ``<journal>.lock``
    atomically; remove it to release), with the holder written in the link, ``host:pid:start``.

    Optuna's own lock cannot tell a holder that was killed while appending (a SIGKILL, a power cut)
    from a slow one: every later writer waits for it, spinning, forever (with a relative journal
    path its grace period never applies, since the link's target does not resolve). Here a writer
    that finds the lock held by a process of this machine that is gone (or a reused pid) takes it
    over at once, and one whose holder cannot be checked (another machine, Optuna's own lock) after
    :data:`UNKNOWN_HOLDER_STALE` seconds, far longer than an append holds it; each says so in a
    warning. Takeovers are serialised by an ``flock`` on the journal, so two waiters cannot both
    remove the stale link and then each other's. Waiting sleeps (up to 50 ms), never spins.
    """

    def __init__(self, journal: str | Path):
        self.journal = Path(journal)
        self.path = Path(f"{journal}.lock")

    def token(self) -> str:
        pid = os.getpid()
        return f"{TOKEN}{socket.gethostname()}:{pid}:{_start_time(pid)}"

    def acquire(self) -> bool:
        token, delay = self.token(), 0.001
        while True:
            try:
                os.symlink(token, self.path)
                return True
            except FileExistsError:
                pass
            holder = self._holder()
            if holder is not None and self._stale(holder):
                self._take_over(holder)
                continue
            time.sleep(delay)
            delay = min(2 * delay, 0.05)

    def release(self) -> None:
        with contextlib.suppress(OSError):
            if os.readlink(self.path) == self.token():
                os.unlink(self.path)

    def _holder(self) -> str | None:
        try:
            return os.readlink(self.path)
        except OSError:  # released meanwhile, or not a symlink
            return None

    def _stale(self, holder: str) -> bool:
        if holder.startswith(TOKEN):
            host, _, rest = holder[len(TOKEN) :].partition(":")
            pid, _, start = rest.partition(":")
            if host == socket.gethostname() and pid.isdigit():
                return not _alive(int(pid), start)
        try:
            age = time.time() - os.lstat(self.path).st_mtime
        except OSError:
            return False
        return age > UNKNOWN_HOLDER_STALE

    def _take_over(self, holder: str) -> None:
        """Remove the stale link, if it is still the one judged stale (under the takeover flock)."""
        with open(self.journal, "rb") as f:
            if fcntl is not None:
                fcntl.flock(f, fcntl.LOCK_EX)
            try:
                if self._holder() != holder:
                    return  # another waiter took it over first
                os.unlink(self.path)
            finally:
                if fcntl is not None:
                    fcntl.flock(f, fcntl.LOCK_UN)
        who = "a writer"
        if holder.startswith(TOKEN):
            host, pid, _ = (holder[len(TOKEN) :].split(":") + ["", ""])[:3]
            who = f"pid {pid} on {host}"
        warnings.warn(
            MutuneWarning(
                f"{self.path}: the journal's write lock was left by {who}, which is gone (killed while "
                "writing); taken over"
            ),
            stacklevel=2,
        )

"""Checking and repairing an Optuna journal file (``study.journal``) before anything is appended.

How Optuna 5's ``JournalFileBackend`` works, and why mutune checks it (measured; see
docs/troubleshooting.md): each operation is appended as one JSON line (ASCII, starting
``{"op_code":``) under a lock file ``<journal>.lock`` (a symlink), then fsynced. Readers take no
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

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import SpecError

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
    from optuna.storages.journal import JournalFileSymlinkLock

    path = Path(path)
    if not path.is_file() or path.stat().st_size == 0:
        return None
    lock = JournalFileSymlinkLock(str(path))  # the same lock file JournalFileBackend(path) uses
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

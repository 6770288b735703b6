"""Where a study lives: a journal file in the run directory by default, any Optuna storage URL else.

The default is a journal file (``study.journal``, Optuna's ``JournalFileBackend``). It is chosen
over SQLite because several worker processes can append to it safely on one machine (SQLite gives
"database is locked" under concurrent writers, and Optuna's FAQ advises against it for parallel
runs), it needs no server and no SQLAlchemy engine, and ``optuna-dashboard runs/<name>/study.journal``
opens it as it is. Any Optuna RDB URL (``postgresql://…``, ``sqlite:///…``) may be given instead, for
several machines; those get Optuna's heartbeat so a killed worker's trial is failed and re-run.
"""

from __future__ import annotations

import contextlib
import re
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial

from ..config import Spec, SpecError
from ..errors import MutuneWarning
from . import journal
from .trials import enqueue, retry_attrs, trial_params

HEARTBEAT_SECONDS = 30  # RDB storages: a trial without a heartbeat for 4x this is failed and re-run


def storage_url(spec: Spec, run_dir: Path) -> str:
    return spec.search.storage or str(run_dir / "study.journal")


JOURNAL_SUFFIXES = (".journal", ".log", ".jsonl")


def open_storage(url: str, *, repair: bool = True) -> optuna.storages.BaseStorage:
    """A journal file for plain paths, an RDB storage (with heartbeat) for URLs.

    A journal is checked before it is used (:mod:`mutune.journal`): with ``repair`` (every command
    that writes) a torn tail is cut off after a backup, and a warning says so; without it (``mutune
    report``) the tail is only reported. Damage in the middle is a :class:`SpecError` either way.
    """
    if "://" not in url:
        path = Path(url)
        if path.suffix not in JOURNAL_SUFFIXES and not journal.looks_like_journal(path):
            raise SpecError(
                "search.storage",
                f"{url!r} is neither a database URL (postgresql://..., mysql://..., sqlite:///...) nor a "
                f"journal file path (ending in {', '.join(JOURNAL_SUFFIXES)})",
            )
        if path.exists() and not path.is_file():
            raise SpecError(
                str(path),
                "is not a file (a folder?), so it cannot be a journal: move it away, or name another",
            )
        note = journal.repair(path) if repair else journal.check(path)
        if note:
            warnings.warn(note, MutuneWarning, stacklevel=2)
        journal.replay(path)
        if repair:
            path.parent.mkdir(parents=True, exist_ok=True)
        return optuna.storages.JournalStorage(NamedJournalBackend(str(path), journal.JournalLock(path)))
    return _open_rdb(url)


class NamedJournalBackend(optuna.storages.journal.JournalFileBackend):
    """Optuna's journal file, whose write errors name the file: ``write()`` raises ENOSPC without a
    file name, and a full disk must be reported as the path and the cause."""

    def read_logs(self, log_number_from: int) -> Iterator[dict[str, Any]]:
        # Optuna skips a torn last line but raises UnicodeDecodeError on an undecodable one (the
        # NUL bytes a power loss can leave); open_storage has checked that damage is only at the tail
        with contextlib.suppress(UnicodeDecodeError):
            yield from super().read_logs(log_number_from)

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        try:
            super().append_logs(logs)
        except OSError as e:
            if e.filename is None:
                e.filename = self._file_path
            raise


def shown_url(url: str) -> str:
    """A storage URL as it may be printed: never with its password."""
    return re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", url)


def _open_rdb(url: str) -> optuna.storages.BaseStorage:
    shown = shown_url(url)
    if url.startswith("sqlite:///") and not url.startswith("sqlite:///:memory:"):
        folder = Path(url[len("sqlite:///") :]).parent
        if not folder.is_dir():
            raise SpecError("search.storage", f"cannot open {shown!r}: folder {folder} does not exist")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.storages.RDBStorage(
                url,
                heartbeat_interval=HEARTBEAT_SECONDS,
                grace_period=4 * HEARTBEAT_SECONDS,
                heartbeat_stale_trial_callback=_retry_stale,
            )
    except Exception as e:  # a bad URL or an unreachable server is a user error: one line, no links
        cause = getattr(e, "orig", None) or e
        lines = [ln.strip() for ln in str(cause).splitlines() if ln.strip()]
        text = " ".join(ln for ln in lines if not ln.startswith("(Background on this error"))
        raise SpecError("search.storage", f"cannot open {shown!r}: {text or type(e).__name__}") from None


def _retry_stale(study: optuna.Study, trial: FrozenTrial) -> None:
    """Optuna's heartbeat failed ``trial`` (its worker is gone): run it again, same hyperparameters."""
    enqueue(study, trial_params(trial), **retry_attrs(trial))

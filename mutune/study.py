"""The study machinery that the search and the sweeps share: storage, the spec guard, workers.

Storage: by default a journal file in the run directory (``study.journal``, Optuna's
``JournalFileBackend``). It is chosen over SQLite because several worker processes can append
to it safely on one machine (SQLite gives "database is locked" under concurrent writers, and
Optuna's FAQ advises against it for parallel runs), it needs no server and no SQLAlchemy
engine, and ``optuna-dashboard runs/<name>/study.journal`` opens it as it is. Any Optuna RDB
URL (``postgresql://…``, ``sqlite:///…``) may be given instead, for several machines; those
get Optuna's heartbeat so a killed worker's trial is failed and re-run.

Trials are driven with ask/tell (:func:`run_trials`), counting the budget under a lock
(:class:`BudgetLock`), so that parallel workers run exactly ``search.n_trials`` finished trials;
a trial whose worker died is failed (:func:`reap_orphans`) and re-run with the same parameters.
What a trial runs and what is written after it is a :class:`TrialJob`: the proxy search is one,
a width sweep another.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from . import journal
from .config import DEFAULT_N_TRIALS, Spec, SpecError
from .config.meaning import STUDY_EFFECTS, flatten, keys_where
from .errors import MutuneWarning
from .errors import SearchFailed as SearchFailed  # re-exported: search and sweeps raise it
from .events import SILENT, Events, TrialEvent
from .samplers import make_pruner, make_sampler

try:
    import fcntl
except ImportError:  # Windows: no flock; parallel workers may overshoot n_trials by a trial
    fcntl = None

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
        note = journal.repair(path) if repair else journal.check(path)
        if note:
            warnings.warn(note, MutuneWarning, stacklevel=2)
        if repair:
            path.parent.mkdir(parents=True, exist_ok=True)
        return optuna.storages.JournalStorage(NamedJournalBackend(str(path)))
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


def _open_rdb(url: str) -> optuna.storages.BaseStorage:
    shown = re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", url)  # never print a password
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


def trial_relevant(spec: Spec) -> dict[str, Any]:
    """The part of the spec that determines a trial's outcome, by dotted key: what trials train and
    measure, and which configurations the search tries (:data:`mutune.config.meaning.STUDY_EFFECTS`).
    Trial counts, the ladder, the laws, the target, the storage and how to run may change between
    invocations on one study without making its finished trials incomparable."""
    return flatten(spec.to_dict(), keys_where(Spec, STUDY_EFFECTS))


def open_study(spec: Spec, storage: optuna.storages.BaseStorage, worker: int = 0) -> optuna.Study:
    """Create or load the study, refusing one that was run with a different spec."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    name = spec.search.study_name or spec.name
    summaries = {s.study_name: s for s in optuna.get_all_study_summaries(storage)}
    n_existing = summaries[name].n_trials if name in summaries else 0
    study = optuna.create_study(
        study_name=name,
        storage=storage,
        direction="minimize",
        load_if_exists=True,
        sampler=make_sampler(spec, worker, n_existing),
        pruner=make_pruner(spec),
    )
    relevant = trial_relevant(spec)
    recorded = study.user_attrs.get("spec")
    if recorded is None:
        study.set_user_attr("spec", relevant)
        study.set_user_attr("spec_hash", spec.hash())
    elif recorded != relevant:
        changed = sorted(k for k in set(recorded) | set(relevant) if recorded.get(k) != relevant.get(k))
        raise SpecError(
            changed[0],
            f"study '{name}' was run with a different spec (changed: "
            f"{', '.join(changed)}); use another --run-dir or name, or revert the change",
        )
    return study


def is_finished(t: FrozenTrial) -> bool:
    """Counts toward n_trials: complete, pruned, or failed because the loss diverged."""
    return t.state in (TrialState.COMPLETE, TrialState.PRUNED) or (
        t.state == TrialState.FAIL and bool(t.user_attrs.get("diverged"))
    )


def _worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def reap_orphans(study: optuna.Study, storage: optuna.storages.BaseStorage) -> list[int]:
    """Fail RUNNING trials whose worker process is gone (killed, crashed, pre-empted).

    RDB storages do this through Optuna's heartbeat; the journal file has none, so mutune
    records ``host:pid`` on each trial and, for trials of this machine, checks the pid here.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)  # a no-op without heartbeat
    if isinstance(storage, optuna.storages.RDBStorage):
        return []
    host = socket.gethostname()
    study_id = storage.get_study_id_from_name(study.study_name)
    reaped = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = t.user_attrs.get("worker")
        if worker is None:
            # killed between creating the trial and tagging it: reap only when clearly stale
            if t.datetime_start is None or time.time() - t.datetime_start.timestamp() < 120:
                continue
        else:
            w_host, _, w_pid = worker.rpartition(":")
            if w_host != host or _pid_alive(int(w_pid)):
                continue
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, t.number)
        storage.set_trial_user_attr(trial_id, "fail_reason", f"orphaned: worker {worker} is gone")
        storage.set_trial_user_attr(trial_id, "retry", True)
        try:
            storage.set_trial_state_values(trial_id, TrialState.FAIL)
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # another process got there first
        reaped.append(t.number)
    return reaped


def count(study: optuna.Study) -> tuple[int, int]:
    """(finished, running) trials in the study."""
    trials = study.get_trials(deepcopy=False)
    return sum(is_finished(t) for t in trials), sum(t.state == TrialState.RUNNING for t in trials)


class BudgetLock:
    """An flock in the run dir that makes "count the trials, then ask for one" atomic for the
    workers of one machine, so a parallel search runs exactly n_trials. (Workers on other
    machines sharing an RDB storage are not covered: there a study may end a trial or two over.)"""

    def __init__(self, path: Path):
        self.path = path

    def __enter__(self) -> BudgetLock:
        self.file = self.path.open("a+")
        if fcntl is not None:
            fcntl.flock(self.file, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc: object) -> None:
        if fcntl is not None:
            fcntl.flock(self.file, fcntl.LOCK_UN)
        self.file.close()


class Heartbeat:
    """Records Optuna heartbeats for a running trial (RDB storages), so that a killed worker's
    trial goes stale and is failed by the next worker. (``Study.optimize`` does this itself; we
    drive trials with ask/tell to count the budget under a lock.)"""

    def __init__(self, storage: optuna.storages.BaseStorage, study: optuna.Study, number: int):
        interval = storage.get_heartbeat_interval() if hasattr(storage, "get_heartbeat_interval") else None
        self.stop = threading.Event()
        self.thread = None
        if interval:
            study_id = storage.get_study_id_from_name(study.study_name)
            trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, number)
            storage.record_heartbeat(trial_id)
            self.thread = threading.Thread(target=self._beat, args=(storage, trial_id, interval), daemon=True)
            self.thread.start()

    def _beat(self, storage: optuna.storages.BaseStorage, trial_id: int, interval: float) -> None:
        while not self.stop.wait(interval):
            storage.record_heartbeat(trial_id)

    def close(self) -> None:
        self.stop.set()
        if self.thread is not None:
            self.thread.join()


def enqueue(study: optuna.Study, params: dict[str, Any], **user_attrs: Any) -> None:
    """Queue a trial with fixed ``params``, recording them as our own ``fixed_params`` attribute too,
    so that a waiting or killed trial's parameters can be read without Optuna's internals."""
    study.enqueue_trial(params, user_attrs={"fixed_params": dict(params), **user_attrs})


def trial_params(trial: FrozenTrial) -> dict[str, Any]:
    """The trial's parameters, including those fixed by :func:`enqueue` that it had not yet
    suggested (a WAITING trial, or one killed before its first ``suggest``)."""
    return {**trial.user_attrs.get("fixed_params", {}), **trial.params}


def _retry_stale(study: optuna.Study, trial: FrozenTrial) -> None:
    """Optuna's heartbeat failed ``trial`` (its worker is gone): run it again, same hyperparameters."""
    enqueue(study, trial_params(trial), retry_of=trial.number)


def enqueue_retries(study: optuna.Study, limit: int) -> int:
    """Re-queue, with the same hyperparameters, trials that were killed or interrupted (not diverged)."""
    trials = study.get_trials(deepcopy=False)
    retried = {t.user_attrs.get("retry_of") for t in trials}
    n = 0
    for t in trials:
        if n >= limit:
            break
        if t.state == TrialState.FAIL and t.user_attrs.get("retry") and t.number not in retried:
            enqueue(study, trial_params(t), retry_of=t.number)
            n += 1
    return n


def trial_event(study: optuna.Study, trial: FrozenTrial, n_trials: int, ran_here: bool = True) -> TrialEvent:
    complete = [
        t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if t.value is not None
    ]
    best = min(complete, key=lambda t: (t.value, t.number)) if complete else None
    finished, running = count(study)
    return TrialEvent(
        number=trial.number,
        state=trial.state.name,
        value=trial.value,
        params=trial.params,
        seconds=float(trial.user_attrs.get("seconds") or 0.0),
        reason=trial.user_attrs.get("fail_reason", ""),
        finished=finished,
        n_trials=n_trials,
        best_value=best.value if best else None,
        best_number=best.number if best else None,
        running=running,
        worker=trial.user_attrs.get("worker", ""),
        ran_here=ran_here,
    )


# ---------------------------------------------------------------------------------------------
# The loop


@dataclass(frozen=True)
class TrialJob:
    """What each trial of a study runs, and what is written after it.

    The proxy search is one (``search.SEARCH_JOB``); other studies (a width sweep's grid, enqueued
    up front) reuse the same loop, workers, storage, retries and kill-safety by passing their own job.
    Both callables must be module-level functions, so that spawned workers can unpickle them.
    """

    evaluate: Callable[[optuna.Trial, Spec, Events], tuple[TrialState, float | None]]
    write_outputs: Callable[[optuna.Study, Spec, Path], None]


def run_trials(
    spec: Spec,
    run_dir: Path,
    *,
    job: TrialJob,
    worker: int = 0,
    events: Events = SILENT,
    parent_pid: int | None = None,
) -> None:
    """Run trials until the study holds ``search.n_trials`` finished ones; safe to run in parallel.

    Trials killed or interrupted earlier are re-run first, with the same hyperparameters.
    ``parent_pid``: stop between trials once that process is gone (a worker of a killed search).
    """
    storage = open_storage(storage_url(spec, run_dir))
    study = open_study(spec, storage, worker)
    n_trials = spec.search.n_trials or DEFAULT_N_TRIALS  # (a search passes its phase's count)
    while parent_pid is None or os.getppid() == parent_pid:
        with BudgetLock(run_dir / ".budget.lock"):
            reap_orphans(study, storage)
            finished, running = count(study)
            if finished + running >= n_trials:
                break
            waiting = len(study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))
            enqueue_retries(study, n_trials - finished - running - waiting)
            with warnings.catch_warnings():
                # we record the heartbeat ourselves (Heartbeat), so ask/tell is fine with it
                warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used")
                trial = study.ask()
            trial.set_user_attr("worker", _worker_id())
        heartbeat = Heartbeat(storage, study, trial.number)
        try:
            state, value = job.evaluate(trial, spec, events)
        except KeyboardInterrupt:
            trial.set_user_attr("fail_reason", "interrupted")
            trial.set_user_attr("retry", True)
            study.tell(trial, state=TrialState.FAIL)
            raise
        except BaseException as e:
            trial.set_user_attr("fail_reason", f"error: {type(e).__name__}: {e}")
            study.tell(trial, state=TrialState.FAIL)
            raise
        finally:
            heartbeat.close()
        study.tell(trial, value, state=state)
        job.write_outputs(study, spec, run_dir)
        events.trial_ended(trial_event(study, study.get_trials(deepcopy=False)[trial.number], n_trials))

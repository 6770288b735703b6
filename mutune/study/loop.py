"""The trial loop every study runs (the search's proxy trials, a sweep's grid): ask, train, tell.

Trials are driven with ask/tell (:func:`run_trials`), counting the budget under a lock
(:class:`BudgetLock`), so that parallel workers run exactly ``search.n_trials`` finished trials; a
trial whose worker died is failed (:func:`reap_orphans`) and re-run with the same parameters. What a
trial runs and what is written after it is a :class:`TrialJob`: the proxy search is one, a width
sweep another.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import optuna
from optuna.trial import TrialState

from ..config import DEFAULT_N_TRIALS, Spec
from ..events import SILENT, Events
from .guard import open_study
from .storage import open_storage, storage_url
from .trials import count, enqueue_retries, trial_event

try:
    import fcntl
except ImportError:  # Windows: no flock; parallel workers may overshoot n_trials by a trial
    fcntl = None


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


def reap_orphans(
    study: optuna.Study, storage: optuna.storages.BaseStorage, *, locked: bool = False
) -> list[int]:
    """Fail RUNNING trials whose worker process is gone (killed, crashed, pre-empted).

    RDB storages do this through Optuna's heartbeat; the journal file has none, so mutune
    records ``host:pid`` on each trial and, for trials of this machine, checks the pid here; a trial
    of another machine (workers sharing the journal on a shared file system, as Slurm array tasks
    do) is failed once its heartbeat has been silent for 4 intervals (:class:`Heartbeat`).

    An untagged trial was made by a worker between asking for it and tagging it, or by one that
    died there (a kill, or a full disk that tore the tag's record). ``locked``: the caller holds
    the run dir's :class:`BudgetLock`, under which every worker of this machine asks and tags; then,
    unless another machine's worker has tagged a trial of this study (its lock may not span
    machines), the untagged trial is an orphan and is failed at once. Otherwise it is failed only
    once clearly stale (2 minutes).
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)  # a no-op without heartbeat
    if isinstance(storage, optuna.storages.RDBStorage):
        return []
    host = socket.gethostname()
    study_id = storage.get_study_id_from_name(study.study_name)
    reaped = []
    trials = study.get_trials(deepcopy=False)
    only_here = all(t.user_attrs.get("worker", host + ":").rpartition(":")[0] == host for t in trials)
    for t in trials:
        if t.state != TrialState.RUNNING:
            continue
        worker = t.user_attrs.get("worker")
        if worker is None:
            stale = t.datetime_start is None or time.time() - t.datetime_start.timestamp() >= 120
            if not (stale or (locked and only_here)):
                continue
        else:
            w_host, _, w_pid = worker.rpartition(":")
            if w_host != host and not _silent(t):  # another machine's (a Slurm node's): by its heartbeat
                continue
            if w_host == host and _pid_alive(int(w_pid)):
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


JOURNAL_HEARTBEAT_SECONDS = (
    30  # a journal trial's heartbeat; another machine fails it after 4x this of silence
)


def _silent(t: optuna.trial.FrozenTrial) -> bool:
    """A trial of another machine whose worker stopped beating (:class:`Heartbeat`): its last beat,
    or its start if it never beat (a live one beats within the interval), is older than 4 intervals."""
    last = t.user_attrs.get("heartbeat")
    if last is None:
        last = t.datetime_start.timestamp() if t.datetime_start is not None else time.time()
    return time.time() - float(last) > 4 * JOURNAL_HEARTBEAT_SECONDS


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
        if isinstance(storage, optuna.storages.JournalStorage):
            # the journal has no heartbeat of its own; a worker on another machine (a Slurm array task)
            # can't be checked by its pid, so the trial records a beat (module doc, reap_orphans)
            study_id = storage.get_study_id_from_name(study.study_name)
            trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, number)
            self.thread = threading.Thread(target=self._journal_beat, args=(storage, trial_id), daemon=True)
            self.thread.start()
        elif interval:
            study_id = storage.get_study_id_from_name(study.study_name)
            trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, number)
            storage.record_heartbeat(trial_id)
            self.thread = threading.Thread(target=self._beat, args=(storage, trial_id, interval), daemon=True)
            self.thread.start()

    def _journal_beat(self, storage: optuna.storages.BaseStorage, trial_id: int) -> None:
        while not self.stop.wait(JOURNAL_HEARTBEAT_SECONDS):
            try:
                storage.set_trial_user_attr(trial_id, "heartbeat", time.time())
            except optuna.exceptions.UpdateFinishedTrialError:
                return

    def _beat(self, storage: optuna.storages.BaseStorage, trial_id: int, interval: float) -> None:
        while not self.stop.wait(interval):
            storage.record_heartbeat(trial_id)

    def close(self) -> None:
        self.stop.set()
        if self.thread is not None:
            self.thread.join()


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
            reap_orphans(study, storage, locked=True)
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

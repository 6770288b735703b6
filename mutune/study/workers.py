"""Parallel search on one machine: worker processes on one study, each running trials until the budget is met.

The workers are spawned (not forked: torch and Optuna threads do not survive a fork), each pinned
to its share of the CPU threads (and, on a multi-GPU machine, one GPU); the parent relays their
finished trials as events and, on Ctrl-C, makes sure every worker marks its running trial.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import socket
import sys
import time
from pathlib import Path

import torch

from .. import config
from ..config import Spec, SpecError
from ..device import threads_for, use_threads
from ..errors import SearchFailed
from ..events import SILENT, Events
from .guard import open_study
from .loop import TrialJob, run_trials
from .storage import open_storage, storage_url
from .trials import trial_event


def _worker_main(
    spec_dict: dict, run_dir: str, job: TrialJob, rank: int, threads: int, parent_pid: int
) -> None:
    """Entry point of a worker process (spawned): run trials silently until the budget is met."""
    _interrupt_once()
    use_threads(threads)
    try:
        spec = config.spec_from_dict(spec_dict)
        run_trials(spec, Path(run_dir), job=job, worker=rank, parent_pid=parent_pid)
    except KeyboardInterrupt:
        sys.exit(130)
    except SpecError as e:
        print(f"error: worker {rank}: {e}", file=sys.stderr)
        sys.exit(2)
    except Exception as e:
        print(f"error: worker {rank}: {type(e).__name__}: {e}", file=sys.stderr)
        sys.exit(1)


def _interrupt_once() -> None:
    """SIGINT and SIGTERM raise KeyboardInterrupt once; repeats are ignored while the trial is marked."""
    fired = False

    def handler(signum, frame):
        nonlocal fired
        if not fired:
            fired = True
            raise KeyboardInterrupt

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)


def run_workers(
    spec: Spec,
    run_dir: Path,
    n_workers: int,
    *,
    job: TrialJob,
    events: Events = SILENT,
    poll: float = 0.5,
) -> None:
    """Run ``n_workers`` processes on the study and relay their finished trials as events.

    Each worker uses ``spec.train.threads`` CPU threads (by default the usable cores shared by the
    workers, :func:`mutune.device.threads_for`); on a multi-GPU machine each worker sees one GPU.
    """
    ctx = multiprocessing.get_context("spawn")
    threads = threads_for(
        spec.train.threads, n_workers
    )  # the search resolved it; a direct call shares the cores
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    storage = open_storage(storage_url(spec, run_dir))
    study = open_study(spec, storage)
    seen = {t.number for t in study.get_trials(deepcopy=False) if t.state.is_finished()}
    procs = []
    for rank in range(n_workers):
        saved = os.environ.get("CUDA_VISIBLE_DEVICES")
        if gpus > 1:
            os.environ["CUDA_VISIBLE_DEVICES"] = str(rank % gpus)
        try:
            p = ctx.Process(
                target=_worker_main,
                args=(spec.to_dict(), str(run_dir), job, rank, threads, os.getpid()),
                name=f"mutune-worker-{rank}",
            )
            p.start()
        finally:
            if gpus > 1:
                if saved is None:
                    os.environ.pop("CUDA_VISIBLE_DEVICES")
                else:
                    os.environ["CUDA_VISIBLE_DEVICES"] = saved
        procs.append(p)

    mine = {f"{socket.gethostname()}:{p.pid}" for p in procs}

    def relay() -> None:
        for t in study.get_trials(deepcopy=False):
            if t.state.is_finished() and t.number not in seen:
                seen.add(t.number)
                here = t.user_attrs.get("worker") in mine
                events.trial_ended(trial_event(study, t, spec.search.n_trials, ran_here=here))

    try:
        while any(p.is_alive() for p in procs):
            time.sleep(poll)
            relay()
    except KeyboardInterrupt:
        for p in procs:  # children in our process group got the SIGINT too; tell the others
            if p.is_alive():
                os.kill(p.pid, signal.SIGINT)
        for p in procs:
            p.join(timeout=60)
        raise
    finally:
        for p in procs:
            p.join(timeout=5)
            if p.is_alive():
                p.terminate()
    relay()
    bad = [(i, p.exitcode) for i, p in enumerate(procs) if p.exitcode != 0]
    if bad:
        codes = ", ".join(f"worker {i} exited {c}" for i, c in bad)
        if all(c == 2 for _, c in bad):
            raise SpecError("search", f"workers stopped on a user error ({codes}); see the message above")
        raise SearchFailed(f"{codes}; finished trials are kept in {run_dir}, re-run to resume")

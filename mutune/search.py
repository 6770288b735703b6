"""The proxy search: an Optuna study of short runs at the proxy width, and what it leaves behind.

Storage: by default a journal file in the run directory (``study.journal``, Optuna's
``JournalFileBackend``). It is chosen over SQLite because several worker processes can append
to it safely on one machine (SQLite gives "database is locked" under concurrent writers, and
Optuna's FAQ advises against it for parallel runs), it needs no server and no SQLAlchemy
engine, and ``optuna-dashboard runs/<name>/study.journal`` opens it as it is. Any Optuna RDB
URL (``postgresql://…``, ``sqlite:///…``) may be given instead, for several machines; those
get Optuna's heartbeat so a killed worker's trial is failed and re-run.

Re-running the same command resumes: the study is loaded, orphaned RUNNING trials are failed,
and trials run until ``search.n_trials`` have *finished* (complete, pruned, or diverged).
Random search draws trial k's hyperparameters from ``(seed, k)`` alone, so a resumed or
parallel search never repeats a configuration and the set of configurations is reproducible.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import signal
import socket
import sys
import threading
import time
import warnings
import zlib
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pandas as pd
import torch
import yaml
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import FrozenTrial, TrialState

from . import __version__, checks, config, data, flops, models
from .config import HParams, ParamSpace, Spec, SpecError
from .events import SILENT, Events, TrialEvent
from .files import atomic_write
from .train import train

try:
    import fcntl
except ImportError:  # Windows: no flock; parallel workers may overshoot n_trials by a trial
    fcntl = None

# Keys that may change between invocations on the same study without making old trials
# incomparable: how many trials to run, what to do afterwards, where and how fast to run.
RESUMABLE_KEYS = {
    "name",
    "search.n_trials",
    "search.storage",
    "search.pruner",
    "target",
    "train.device",
    "train.compile",
    "train.checkpoint_every",
}
HEARTBEAT_SECONDS = 30  # RDB storages: a trial without a heartbeat for 4x this is failed and re-run


@dataclass
class SearchResult:
    run_dir: Path
    best: dict  # the best.yaml document
    n_finished: int
    target: Any = None  # transfer.TransferResult when the target was launched


class SeededRandomSampler(optuna.samplers.BaseSampler):
    """Random search in which trial k's draw of parameter p depends only on (seed, k, p).

    Optuna's ``RandomSampler(seed)`` replays the same sequence in every process, so a resumed
    study or a second worker would repeat configurations; keying the draw on the trial number
    (unique per study) avoids that without any coordination.
    """

    def __init__(self, seed: int = 0):
        self.seed = seed

    def infer_relative_search_space(self, study, trial):  # noqa: D102
        return {}

    def sample_relative(self, study, trial, search_space):  # noqa: D102
        return {}

    def sample_independent(self, study, trial: FrozenTrial, param_name: str, dist) -> Any:
        rng = np.random.default_rng([self.seed, trial.number, zlib.crc32(param_name.encode())])
        if isinstance(dist, CategoricalDistribution):
            return dist.choices[int(rng.integers(len(dist.choices)))]
        if isinstance(dist, FloatDistribution):
            if dist.log:
                value = math.exp(rng.uniform(math.log(dist.low), math.log(dist.high)))
            else:
                value = rng.uniform(dist.low, dist.high)
            if dist.step is not None:
                value = dist.low + round((value - dist.low) / dist.step) * dist.step
            return float(min(max(value, dist.low), dist.high))
        if isinstance(dist, IntDistribution):
            if dist.log:  # log-uniform over [low - 0.5, high + 0.5], rounded: each integer gets its share
                value = round(math.exp(rng.uniform(math.log(dist.low - 0.5), math.log(dist.high + 0.5))))
            else:
                value = int(rng.integers(dist.low, dist.high + 1))
            value = dist.low + ((value - dist.low) // dist.step) * dist.step
            return int(min(max(value, dist.low), dist.high))
        raise TypeError(f"unsupported distribution {dist!r}")


# ---------------------------------------------------------------------------------------------
# Run directory, storage, study


def default_run_dir(spec: Spec, smoke: bool = False) -> Path:
    return Path("runs") / (f"{spec.name}-smoke" if smoke else spec.name)


def write_config(run_dir: Path, spec: Spec, argv: list[str] | None = None) -> None:
    """config.yaml: the resolved spec, loadable as a spec itself; the argv goes in the header."""
    argv = sys.argv if argv is None else argv
    header = (
        f"# resolved spec, written by mutune {__version__} on {time.strftime('%Y-%m-%d %H:%M:%S')}\n"
        f"# argv: {' '.join(argv)}\n"
    )
    text = header + yaml.safe_dump(spec.to_dict(), sort_keys=False)
    atomic_write(run_dir / "config.yaml", lambda p: p.write_text(text))


def storage_url(spec: Spec, run_dir: Path) -> str:
    return spec.search.storage or str(run_dir / "study.journal")


def open_storage(url: str) -> optuna.storages.BaseStorage:
    """A journal file for plain paths, an RDB storage (with heartbeat) for URLs."""
    if "://" not in url:
        path = Path(url)
        path.parent.mkdir(parents=True, exist_ok=True)
        return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(path)))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.storages.RDBStorage(
                url,
                heartbeat_interval=HEARTBEAT_SECONDS,
                grace_period=4 * HEARTBEAT_SECONDS,
                heartbeat_stale_trial_callback=_retry_stale,
            )
    except Exception as e:  # a bad URL or an unreachable server is a user error
        raise SpecError("search.storage", f"cannot open storage {url!r}: {e}") from None


def trial_relevant(spec: Spec) -> dict[str, Any]:
    """The part of the spec that determines a trial's outcome, flattened to dotted keys."""
    flat: dict[str, Any] = {}

    def walk(prefix: str, node: Any) -> None:
        if prefix in RESUMABLE_KEYS:
            return
        if isinstance(node, dict) and prefix != "search.space":
            for k, v in node.items():
                walk(f"{prefix}.{k}" if prefix else k, v)
        else:
            flat[prefix] = node

    walk("", spec.to_dict())
    return flat


def make_sampler(spec: Spec, worker: int = 0, n_existing: int = 0) -> optuna.samplers.BaseSampler:
    if spec.search.sampler == "random":
        return SeededRandomSampler(spec.search.seed)
    # TPE conditions on the history; offset the seed so workers and resumes draw differently.
    return optuna.samplers.TPESampler(seed=spec.search.seed + 1000 * worker + n_existing)


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


# ---------------------------------------------------------------------------------------------
# Trials


def suggest(trial: optuna.Trial, space: dict[str, ParamSpace], defaults: HParams) -> HParams:
    values = asdict(defaults)
    for name, p in space.items():
        if p.type == "log_uniform":
            values[name] = trial.suggest_float(name, p.low, p.high, log=True)
        elif p.type == "uniform":
            values[name] = trial.suggest_float(name, p.low, p.high)
        elif p.type == "int":
            values[name] = trial.suggest_int(name, int(p.low), int(p.high), log=p.log)
        else:
            values[name] = trial.suggest_categorical(name, p.choices)
    return config.hparams_from_dict(values)


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


def evaluate_trial(
    trial: optuna.Trial, spec: Spec, events: Events = SILENT
) -> tuple[TrialState, float | None]:
    """Train one proxy run for ``trial``; record its cost and curve as trial attributes.

    Returns the state to tell and the value: COMPLETE with the final validation loss, PRUNED
    when the pruner stopped it, FAIL when the loss diverged (with the reason as an attribute).
    """
    hp = suggest(trial, spec.search.space, spec.hparams)
    last_step = 0

    def on_eval(step: int, val_loss: float) -> None:
        nonlocal last_step
        last_step = step
        trial.report(val_loss, step)
        if trial.should_prune():
            raise optuna.TrialPruned(f"pruned at step {step} (val loss {val_loss:.4f})")

    train_curve: dict[str, list] = {"step": [], "train_loss": []}

    def on_log(log) -> None:
        train_curve["step"].append(log.step)
        train_curve["train_loss"].append(log.train_loss)
        events.step(trial.number, log)

    try:
        result = train(spec, hp, on_eval=on_eval, on_log=on_log)
    except optuna.TrialPruned as e:
        cost = flops.cost(spec, hp=hp)
        trial.set_user_attr("steps", last_step)
        trial.set_user_attr("tokens", last_step * cost.tokens_per_step)
        trial.set_user_attr("flops", last_step * cost.flops_per_step)
        trial.set_user_attr("fail_reason", str(e))
        return TrialState.PRUNED, None
    for key in ("flops", "tokens", "seconds", "steps", "params"):
        trial.set_user_attr(key, getattr(result, key))
    # the loss curves, so `mutune report` can draw the proxy next to the target (not in trials.csv)
    trial.set_user_attr("train_curve", train_curve)
    trial.set_user_attr(
        "val_curve",
        {"step": [r["step"] for r in result.curve], "val_loss": [r["val_loss"] for r in result.curve]},
    )
    if result.diverged:
        trial.set_user_attr("diverged", True)
        trial.set_user_attr("fail_reason", f"diverged: {result.reason}")
        return TrialState.FAIL, None
    return TrialState.COMPLETE, result.final_val_loss


def make_pruner(spec: Spec) -> optuna.pruners.BasePruner:
    """Optional early stopping on the validation losses reported at every evaluation."""
    t = spec.train
    if spec.search.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=t.eval_every)
    if spec.search.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(
            min_resource=t.eval_every, max_resource=t.steps, reduction_factor=3
        )
    return optuna.pruners.NopPruner()


class _BudgetLock:
    """An flock in the run dir that makes "count the trials, then ask for one" atomic for the
    workers of one machine, so a parallel search runs exactly n_trials. (Workers on other
    machines sharing an RDB storage are not covered: there a study may end a trial or two over.)"""

    def __init__(self, path: Path):
        self.path = path

    def __enter__(self) -> _BudgetLock:
        self.file = self.path.open("a+")
        if fcntl is not None:
            fcntl.flock(self.file, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc: object) -> None:
        if fcntl is not None:
            fcntl.flock(self.file, fcntl.LOCK_UN)
        self.file.close()


class _Heartbeat:
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


def trial_params(trial: FrozenTrial) -> dict[str, Any]:
    """The trial's parameters, including those fixed by ``enqueue_trial`` that it had not yet
    suggested (a WAITING trial, or one killed before its first ``suggest``)."""
    return {**trial.system_attrs.get("fixed_params", {}), **trial.params}


def _retry_stale(study: optuna.Study, trial: FrozenTrial) -> None:
    """Optuna's heartbeat failed ``trial`` (its worker is gone): run it again, same hyperparameters."""
    study.enqueue_trial(trial_params(trial), user_attrs={"retry_of": trial.number})


def enqueue_retries(study: optuna.Study, limit: int) -> int:
    """Re-queue, with the same hyperparameters, trials that were killed or interrupted (not diverged)."""
    trials = study.get_trials(deepcopy=False)
    retried = {t.user_attrs.get("retry_of") for t in trials}
    n = 0
    for t in trials:
        if n >= limit:
            break
        if t.state == TrialState.FAIL and t.user_attrs.get("retry") and t.number not in retried:
            study.enqueue_trial(trial_params(t), user_attrs={"retry_of": t.number})
            n += 1
    return n


def trial_event(study: optuna.Study, trial: FrozenTrial, n_trials: int) -> TrialEvent:
    complete = [
        t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if t.value is not None
    ]
    best = min(complete, key=lambda t: (t.value, t.number)) if complete else None
    return TrialEvent(
        number=trial.number,
        state=trial.state.name,
        value=trial.value,
        params=trial.params,
        seconds=float(trial.user_attrs.get("seconds") or 0.0),
        reason=trial.user_attrs.get("fail_reason", ""),
        finished=count(study)[0],
        n_trials=n_trials,
        best_value=best.value if best else None,
        best_number=best.number if best else None,
    )


# ---------------------------------------------------------------------------------------------
# Outputs


def trials_table(study: optuna.Study) -> pd.DataFrame:
    """One row per trial: number, state, every HP, loss, steps, tokens, FLOPs, seconds, reason."""
    rows = []
    trials = study.get_trials(deepcopy=False)
    retried_as = {t.user_attrs["retry_of"]: t.number for t in trials if "retry_of" in t.user_attrs}
    for t in trials:
        ua = t.user_attrs
        row = {
            "number": t.number,
            "state": t.state.name,
            "loss": t.value if t.state == TrialState.COMPLETE else None,
        }
        row.update(t.params)
        for key in ("steps", "tokens", "flops", "seconds", "params"):
            row[key] = ua.get(key)
        row["fail_reason"] = ua.get("fail_reason", "")
        if t.number in retried_as:
            reason = row["fail_reason"] or "worker gone (heartbeat stopped)"
            row["fail_reason"] = f"{reason}; retried as #{retried_as[t.number]}"
        row["worker"] = ua.get("worker", "")
        row["datetime_start"] = t.datetime_start.isoformat() if t.datetime_start else ""
        rows.append(row)
    return pd.DataFrame(rows)


def write_trials_csv(study: optuna.Study, run_dir: Path) -> pd.DataFrame:
    df = trials_table(study)
    atomic_write(run_dir / "trials.csv", lambda p: df.to_csv(p, index=False))
    return df


def best_document(study: optuna.Study, spec: Spec, url: str) -> dict | None:
    """best.yaml: the winning hyperparameters (all of them) and where they came from."""
    complete = [
        t
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if t.value is not None and math.isfinite(t.value)
    ]
    if not complete:
        return None
    best = min(complete, key=lambda t: (t.value, t.number))
    hp = asdict(spec.hparams)
    hp.update(best.params)
    all_trials = study.get_trials(deepcopy=False)
    search_flops = float(sum(t.user_attrs.get("flops") or 0.0 for t in all_trials))
    return {
        "hparams": config.hparams_from_dict(hp).__dict__,
        "provenance": {
            "spec_name": spec.name,
            "spec_hash": spec.hash(),
            "study_name": study.study_name,
            "storage": url,
            "model_family": spec.model.family,
            "parametrization": spec.model.parametrization,
            "proxy_width": spec.model.width,
            "base_width": spec.model.base_width,
            "trial_number": best.number,
            "loss": float(best.value),
            "coord_check": (study.user_attrs.get("coord_check") or {}).get("verdict", "not_run"),
            "n_trials_finished": sum(is_finished(t) for t in all_trials),
            "search_flops": search_flops,
            "search_seconds": float(sum(t.user_attrs.get("seconds") or 0.0 for t in all_trials)),
            "argv": list(sys.argv),
            "versions": {
                "mutune": __version__,
                "torch": str(torch.__version__),
                "optuna": str(optuna.__version__),
                "python": sys.version.split()[0],
            },
            "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        },
    }


def write_best(study: optuna.Study, spec: Spec, run_dir: Path) -> dict | None:
    doc = best_document(study, spec, storage_url(spec, run_dir))
    if doc is not None:
        atomic_write(run_dir / "best.yaml", lambda p: p.write_text(yaml.safe_dump(doc, sort_keys=False)))
    return doc


# ---------------------------------------------------------------------------------------------
# The loop


def write_search_outputs(study: optuna.Study, spec: Spec, run_dir: Path) -> None:
    write_trials_csv(study, run_dir)
    write_best(study, spec, run_dir)


@dataclass(frozen=True)
class TrialJob:
    """What each trial of a study runs, and what is written after it.

    The proxy search is the default; other studies (a width sweep's grid, enqueued up front)
    reuse the same loop, workers, storage, retries and kill-safety by passing their own job.
    Both callables must be module-level functions, so that spawned workers can unpickle them.
    """

    evaluate: Callable[[optuna.Trial, Spec, Events], tuple[TrialState, float | None]] = evaluate_trial
    write_outputs: Callable[[optuna.Study, Spec, Path], None] = write_search_outputs


SEARCH_JOB = TrialJob()


def run_trials(
    spec: Spec,
    run_dir: Path,
    *,
    job: TrialJob = SEARCH_JOB,
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
    n_trials = spec.search.n_trials
    while parent_pid is None or os.getppid() == parent_pid:
        with _BudgetLock(run_dir / ".budget.lock"):
            reap_orphans(study, storage)
            finished, running = count(study)
            if finished + running >= n_trials:
                break
            waiting = len(study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))
            enqueue_retries(study, n_trials - finished - running - waiting)
            with warnings.catch_warnings():
                # we record the heartbeat ourselves (_Heartbeat), so ask/tell is fine with it
                warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used")
                trial = study.ask()
            trial.set_user_attr("worker", _worker_id())
        heartbeat = _Heartbeat(storage, study, trial.number)
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


def _worker_main(
    spec_dict: dict, run_dir: str, job: TrialJob, rank: int, threads: int, parent_pid: int
) -> None:
    """Entry point of a worker process (spawned): run trials silently until the budget is met."""
    _interrupt_once()
    torch.set_num_threads(threads)
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
    job: TrialJob = SEARCH_JOB,
    events: Events = SILENT,
    poll: float = 0.5,
) -> None:
    """Run ``n_workers`` processes on the study and relay their finished trials as events.

    CPU threads are split between workers; on a multi-GPU machine each worker sees one GPU.
    """
    ctx = multiprocessing.get_context("spawn")
    threads = max(1, (os.cpu_count() or 1) // n_workers)
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

    def relay() -> None:
        for t in study.get_trials(deepcopy=False):
            if t.state.is_finished() and t.number not in seen:
                seen.add(t.number)
                events.trial_ended(trial_event(study, t, spec.search.n_trials))

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


def coord_gate(spec: Spec, study: optuna.Study, run_dir: Path, skip: bool = False) -> dict:
    """The fast coord check before the first trial; its record is kept in the study's user attrs.

    A µP spec whose check fails raises :class:`GateFailed`: searching it would tune hyperparameters
    that do not transfer. A study that passed once is not checked again when resumed (the spec
    guard in :func:`open_study` makes sure the model is the same). SP specs are the control and are
    not checked. Widths base × 1, 2, 4, 8, two seeds, five forwards on 2×16 tokens: well under a
    second on the test specs, a few seconds at base width 256.
    """
    done = study.user_attrs.get("coord_check") or {}
    if done.get("verdict") == "passed":
        return done
    if spec.model.parametrization != "mup":
        record = {"verdict": "not_applicable", "reason": "SP is the control; the check verifies µP"}
    elif skip:
        record = {"verdict": "skipped", "reason": "--skip-check"}
    else:
        t0 = time.perf_counter()
        out = run_dir / "checks"
        result = checks.coord_check(
            spec, mults=checks.GATE_MULTS, seeds=2, out_dir=out, prefix="gate_coord_check", plot=False
        )
        record = {
            "verdict": "passed" if result.passed else "failed",
            "widths": result.widths,
            "lr": result.lr,
            "largest_slope": round(result.largest_slope, 4),
            "threshold": result.threshold,
            "seconds": round(time.perf_counter() - t0, 3),
        }
        if not result.passed:
            checks.write(result, out, "gate_coord_check", plot=True)  # the picture, for the diagnosis
            study.set_user_attr("coord_check", record)
            raise GateFailed(
                f"{result.message()}. µP is broken, so the search would tune hyperparameters that do not "
                f"transfer; see {out / 'gate_coord_check_slopes.csv'} and .png; fix the model, or pass "
                "--skip-check to search anyway"
            )
    if done != record:
        study.set_user_attr("coord_check", record)
    return record


def search(
    spec: Spec,
    *,
    run_dir: str | Path | None = None,
    smoke: bool = False,
    transfer: bool = True,
    skip_check: bool = False,
    argv: list[str] | None = None,
    workers: int = 1,
    events: Events = SILENT,
) -> SearchResult:
    """Search the proxy, write best.yaml and trials.csv, then (if the spec names a target width) train it.

    Before the first trial a fast coord check (:func:`coord_gate`) must pass; ``skip_check``
    overrides it, and best.yaml's provenance says which (``coord_check: passed | skipped``).
    A ``KeyboardInterrupt`` stops after marking the running trial failed; everything finished is
    kept in the storage and in trials.csv, and the same call resumes.
    """
    if workers < 1:
        raise SpecError("--workers", f"must be >= 1, got {workers}")
    if smoke:
        spec = config.smoke(spec)
    run_dir = Path(run_dir) if run_dir is not None else default_run_dir(spec, smoke)
    data.load(spec.data, min_len=spec.model.seq_len + 1)  # a missing corpus fails here, not in trial 0
    models.validate(spec, spec.hparams, data.vocab_size(spec.data))  # so does a model µP cannot handle
    run_dir.mkdir(parents=True, exist_ok=True)
    storage = open_storage(storage_url(spec, run_dir))
    study = open_study(spec, storage)  # fails fast on a spec that does not match the study
    write_config(run_dir, spec, argv)
    events.coord_checked(coord_gate(spec, study, run_dir, skip_check))
    events.search_started(spec, run_dir, count(study)[0])
    try:
        if workers == 1:
            run_trials(spec, run_dir, events=events)
        else:
            run_workers(spec, run_dir, workers, events=events)
    finally:
        # whatever happened, leave the table and the best-so-far on disk
        write_trials_csv(study, run_dir)
        best = write_best(study, spec, run_dir)
    finished, _ = count(study)
    if best is None:
        raise SearchFailed(
            f"none of the {finished} finished trials has a finite loss; see {run_dir / 'trials.csv'}"
        )
    result = SearchResult(run_dir=run_dir, best=best, n_finished=finished)
    if transfer and spec.target.width is not None:
        from . import transfer as transfer_mod

        result.target = transfer_mod.transfer(
            run_dir, transfer_mod.target_overrides(spec), resume=True, events=events
        )
    return result


class SearchFailed(RuntimeError):
    """The search ran but produced nothing usable (every trial diverged or failed): exit code 1."""


class GateFailed(SearchFailed):
    """The coord check before the first trial failed: the model is not µP. Exit code 1."""

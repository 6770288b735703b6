"""The proxy search: an Optuna study of short runs at the proxy width, and what it leaves behind.

The search runs in steps, each a batch of trials of one study: the proxy trials (``search.n_trials``,
or as many as ``search.budget`` affords), then the steps in :data:`POST_STEPS` (today the finalists
ladder of :mod:`mutune.ladder`), each asked for the fixed trials it still needs until it needs none.
Re-running the same command resumes: the study is loaded, orphaned RUNNING trials are failed,
and each step runs what has not *finished* (complete, pruned, or diverged).
Random search draws trial k's hyperparameters from ``(seed, k)`` alone, so a resumed or
parallel search never repeats a configuration and the set of configurations is reproducible.
The study machinery (storage, the spec guard, workers, kill-safety) is :mod:`mutune.study`;
what a trial draws is :mod:`mutune.samplers`. This module holds what is particular to the search:
its trial (a proxy run), its outputs (trials.csv, best.yaml), the coord-check gate and the entry point.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
import warnings
from dataclasses import asdict, dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

import optuna
import torch
import yaml
from optuna.trial import TrialState

from . import (
    __version__,
    arguments,
    budget,
    checks,
    config,
    data,
    flops,
    ladder,
    laws_run,
    memory,
    models,
    trackers,
)
from .config import Best, RunDir, Spec, SpecError
from .config.meaning import flatten, keys_across
from .config.validate import fidelity_steps
from .device import resolve_device, threads_for, use_threads
from .errors import MutuneWarning, arg
from .events import SILENT, Events
from .files import atomic_write
from .phases import Phases
from .study import (
    SearchFailed,
    TrialJob,
    count,
    is_finished,
    open_storage,
    open_study,
    storage_url,
    trial_params,
)
from .study.samplers import suggest
from .study.storage import shown_url
from .train import Stable, train
from .train import stable as stable_mod
from .trials import write_trials_csv

__all__ = ["GateFailed", "SearchFailed", "SearchResult", "search"]


@dataclass
class SearchResult:
    run_dir: Path
    best: Best  # best.yaml
    n_finished: int
    target: Any = None  # transfer.TransferResult when the target was launched
    n_running: int = 0  # trials other processes were still running when this one finished


def default_run_dir(spec: Spec, smoke: bool = False) -> Path:
    return Path("runs") / (f"{spec.name}-smoke" if smoke else spec.name)


def write_config(run_dir: Path, spec: Spec, argv: list[str] | None = None) -> None:
    """config.yaml: the resolved spec, loadable as a spec itself; the argv goes in the header."""
    argv = sys.argv if argv is None else argv
    header = (
        f"# resolved spec, written by mutune {__version__} on {time.strftime('%Y-%m-%d %H:%M:%S')}\n"
        f"# argv: {' '.join(argv)}\n"
    )
    text = header + yaml.safe_dump(spec.to_dict(), sort_keys=False, allow_unicode=True)
    atomic_write(run_dir / "config.yaml", lambda p: p.write_text(text, encoding="utf-8"))


# ---------------------------------------------------------------------------------------------
# The trial


def evaluate_trial(
    trial: optuna.Trial,
    spec: Spec,
    events: Events = SILENT,
    *,
    tracking: trackers.Tracking | None = None,
    states: Path | None = None,
) -> tuple[TrialState, float | None]:
    """Train one proxy run for ``trial``; record its cost and curve as trial attributes.

    Returns the state to tell and the value: COMPLETE with the final validation loss, PRUNED
    when the pruner stopped it, FAIL when the loss diverged (with the reason as an attribute).
    A ladder trial (fixed ``width`` and ``seed``) trains at its width and seed and is never pruned:
    its losses are not comparable with the proxy's, and a rung needs every entrant's.
    With ``tracking``, the trial is also a run in the experiment tracker. Under successive halving
    along training length (``search.fidelity``), a proxy trial runs the first rung's horizon and
    saves its stable state under ``states``; a rung trial continues its configuration's from there.
    """
    fixed = trial.user_attrs.get("fixed_params") or {}
    rung = ladder.WIDTH in fixed
    horizons = fidelity_steps(spec)
    if rung:
        steps = int(fixed[ladder.STEPS]) if ladder.STEPS in fixed else None
        spec = budget.run_spec(spec, int(fixed[ladder.WIDTH]), int(fixed[ladder.SEED]), steps)
    elif horizons:
        spec = budget.run_spec(spec, spec.model.width, steps=horizons[0])
    hp = suggest(trial, spec.search.space, spec.hparams)
    stable = None
    if horizons and states is not None:  # this configuration's stable states, one folder per (config, seed)
        folder = states / _config_key(trial, spec)
        stable = Stable(
            save_dir=folder,
            start_from=stable_mod.latest(folder, stable_mod.stable_end(spec)) if rung else None,
        )
    run = _track_trial(tracking, trial, spec, hp, "ladder-trial" if rung else "proxy-trial")
    try:
        state, value = _train_trial(trial, spec, hp, events, run, stable)
    except BaseException as e:
        if run is not None:
            run.finish({}, "KILLED" if isinstance(e, KeyboardInterrupt) else "FAILED")
        raise
    if run is not None:
        keys = ("steps", "tokens", "flops", "seconds", "params")
        summary = {k: trial.user_attrs[k] for k in keys if k in trial.user_attrs}
        if value is not None:
            summary["final_val_loss"] = value
        run.finish(
            summary, {TrialState.COMPLETE: "FINISHED", TrialState.PRUNED: "PRUNED"}.get(state, "FAILED")
        )
    return state, value


def _track_trial(
    tracking: trackers.Tracking | None, trial: optuna.Trial, spec: Spec, hp: config.HParams, kind: str
) -> trackers.TrackedRun | None:
    if tracking is None:
        return None
    m = spec.model
    provenance = {
        "mutune.spec_name": spec.name,
        "mutune.spec_hash": spec.hash(),
        "mutune.study": tracking.group,
        "mutune.trial": trial.number,
        "mutune.model": f"{m.family} width {m.width} base {m.base_width} depth {m.depth} ({m.parametrization})",
        "torch": torch.__version__,
        "optuna": optuna.__version__,
    }
    return tracking.start(f"trial-{trial.number:04d}", kind, asdict(hp), provenance)


def _config_key(trial: optuna.Trial, spec: Spec) -> str:
    """A configuration's folder name: its searched hyperparameters, width and seed, hashed."""
    params = {n: trial.params[n] for n in spec.search.space if n in trial.params}
    what = json.dumps({"params": params, "width": spec.model.width, "seed": spec.seed}, sort_keys=True)
    return hashlib.sha256(what.encode()).hexdigest()[:16]


def _train_trial(
    trial: optuna.Trial,
    spec: Spec,
    hp: config.HParams,
    events: Events,
    run: trackers.TrackedRun | None,
    stable: Stable | None = None,
) -> tuple[TrialState, float | None]:
    prune = ladder.WIDTH not in (trial.user_attrs.get("fixed_params") or {})  # a rung trial runs to the end
    last_step = 0

    def on_eval(step: int, val_loss: float) -> None:
        nonlocal last_step
        last_step = step
        if not prune:
            return
        trial.report(val_loss, step)
        if trial.should_prune():
            raise optuna.TrialPruned(f"pruned at step {step} (val loss {val_loss:.4f})")

    train_curve: dict[str, list] = {"step": [], "train_loss": []}

    def on_log(log) -> None:
        train_curve["step"].append(log.step)
        train_curve["train_loss"].append(log.train_loss)
        events.step(trial.number, log)

    on_log, on_eval = trackers.attach(run, on_log, on_eval)
    try:
        result = train(spec, hp, on_eval=on_eval, on_log=on_log, stable=stable)
    except optuna.TrialPruned as e:
        cost = flops.cost(spec, hp=hp)
        trial.set_user_attr("steps", last_step)
        trial.set_user_attr("tokens", last_step * cost.tokens_per_step)
        trial.set_user_attr("flops", last_step * cost.flops_per_step)
        trial.set_user_attr("fail_reason", str(e))
        return TrialState.PRUNED, None
    for key in ("flops", "tokens", "seconds", "steps", "params"):
        trial.set_user_attr(key, getattr(result, key))
    if result.flops_before:  # continued from a shorter rung: its own compute only (search_flops sums them)
        trial.set_user_attr("flops", result.flops - result.flops_before)
    if result.branches:  # a WSD run's cooldown branches: the loss at each shorter horizon
        trial.set_user_attr("branches", result.branches)
    trial.set_user_attr("threads", torch.get_num_threads())  # trials.csv: what its last bits depend on
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


# ---------------------------------------------------------------------------------------------
# Outputs


def best_document(study: optuna.Study, spec: Spec, url: str) -> dict | None:
    """best.yaml: the winning hyperparameters (all of them) and where they came from.

    The winner is the ladder's (the best mean over seeds at its last rung) once the ladder has
    run, the leader of its last finished rung while it runs, and the best proxy trial before it
    starts or without one. ``trial_number`` and ``loss`` are always the winner's proxy trial and
    proxy loss; ``ladder`` records every rung."""
    plan, spec_hash = budget.recorded_plan(study, spec)
    all_trials = study.get_trials(deepcopy=False)
    keep = spec.search.fidelity.keep if spec.search.fidelity.rungs else 0.5
    st = ladder.state(plan, list(spec.search.space), all_trials, keep)
    win = st.winner()
    if win is None:
        return None
    best = all_trials[win[0]]
    hp = asdict(spec.hparams)
    hp.update({k: v for k, v in trial_params(best).items() if k in spec.search.space})
    search_flops = float(sum(t.user_attrs.get("flops") or 0.0 for t in all_trials))
    prov = {
        "spec_name": spec.name,
        "spec_hash": spec_hash,
        "study_name": study.study_name,
        "storage": url,
        "model_family": spec.model.family,
        "parametrization": spec.model.parametrization,
        "proxy_width": spec.model.width,
        **config.axes.bases(spec),  # base_width, base_depth (and base_experts for a mixture)
        "depth_alpha": spec.model.depth_alpha,
        "proxy": fixed_keys(spec),
        "trial_number": best.number,
        "loss": float(best.value),
        "coord_check": (study.user_attrs.get("coord_check") or {}).get("verdict", "not_run"),
        "n_trials_finished": sum(is_finished(t) for t in all_trials),
        "search_flops": search_flops,
        "search_seconds": float(sum(t.user_attrs.get("seconds") or 0.0 for t in all_trials)),
        "plan": budget.plan_summary(plan),
    }
    if plan.rungs:
        prov["ladder"] = st.to_dict()
    prov.update(
        {
            "argv": list(sys.argv),
            "versions": {
                "mutune": __version__,
                "torch": str(torch.__version__),
                "optuna": str(optuna.__version__),
                "python": sys.version.split()[0],
            },
            "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }
    )
    return {"hparams": config.hparams_from_dict(hp).__dict__, "provenance": prov}


def fixed_keys(spec: Spec) -> dict[str, Any]:
    """The proxy's values of every key the tuned hyperparameters depend on (``across="fixed"``: the
    optimizer, tied embeddings, head dim...), recorded in best.yaml so that a transfer from a run dir
    whose spec differs in one (a best.yaml copied beside another spec) is refused, naming it."""
    return flatten(spec.to_dict(), keys_across(Spec, frozenset({"fixed"})))


def write_best(study: optuna.Study, spec: Spec, run_dir: Path) -> dict | None:
    """best.yaml from the study as it is now, with the laws fitted around its winner, under the run
    dir's lock: every writer (this search's workers, another search of the study, ``mutune laws``)
    reads what is on disk and writes its merge in turn, so none writes back a copy older than what
    another wrote (``mutune laws`` beside a resumed search)."""
    with RunDir(run_dir).lock():
        doc = best_document(study, spec, storage_url(spec, run_dir))
        if doc is not None:
            doc = laws_run.merge(doc, run_dir)  # laws fitted around this winner stay in best.yaml
            atomic_write(
                run_dir / "best.yaml",
                lambda p: p.write_text(
                    yaml.safe_dump(doc, sort_keys=False, allow_unicode=True), encoding="utf-8"
                ),
            )
    return doc


def write_search_outputs(study: optuna.Study, spec: Spec, run_dir: Path) -> None:
    """trials.csv and best.yaml after a trial, both from the study as it is when the lock is held."""
    with RunDir(run_dir).lock():
        write_trials_csv(study, run_dir)
        write_best(study, spec, run_dir)


SEARCH_JOB = TrialJob(evaluate=evaluate_trial, write_outputs=write_search_outputs)


def coord_gate(spec: Spec, study: optuna.Study, run_dir: Path, skip: bool = False) -> dict:
    """The fast coord check before the first trial; its record is kept in the study's user attrs.

    A µP spec whose check fails raises :class:`GateFailed`: searching it would tune hyperparameters
    that do not transfer. A check that could not see some attention's scores (:mod:`mutune.checks`:
    incomplete) does not stop the search, but says so and is recorded as ``incomplete``, even where
    ``model.allow_unchecked`` accepts it. A study that passed once is not checked again when resumed (the spec
    guard in :func:`open_study` makes sure the model is the same). SP specs are the control and are
    not checked. Widths base × 1, 2, 4, 8, two seeds, five forwards on 2×16 tokens: well under a
    second on the test specs, a few seconds at base width 256.
    """
    done = study.user_attrs.get("coord_check") or {}
    if done.get("verdict") in ("passed", "incomplete"):
        return done
    rules = models.parametrization(spec)
    if rules.coord_check != "verify":
        record = {
            "verdict": "not_applicable",
            "reason": f"{rules.label} is the control; the check verifies what it controls for",
        }
    elif skip:
        record = {"verdict": "skipped", "reason": "--skip-check"}
    else:
        t0 = time.perf_counter()
        out = run_dir / "checks"
        result = checks.coord_check(
            spec, mults=checks.GATE_MULTS, seeds=2, out_dir=out, prefix="gate_coord_check", plot=False
        )
        failed = result.verdict == "fail"
        record = {
            "verdict": "failed" if failed else "incomplete" if result.unchecked else "passed",
            "widths": result.widths,
            "lr": result.lr,
            "largest_slope": round(result.largest_slope, 4),
            "threshold": result.threshold,
            # the row nearest its limit, with that limit (an own update's is not |x|'s): what the line says
            "closest": {
                k: round(v, 4) if isinstance(v, float) else v for k, v in (result.closest or {}).items()
            },
            "seconds": round(time.perf_counter() - t0, 3),
        }
        if result.unchecked:  # attention whose scores the check could not see: its scale is unchecked
            record["unchecked"] = list(result.unchecked)
        if failed:
            checks.write(result, out, "gate_coord_check", plot=True)  # the picture, for the diagnosis
            study.set_user_attr("coord_check", record)
            raise GateFailed(
                f"{result.message()}. µP is broken, so the search would tune hyperparameters that do not "
                f"transfer; see {out / 'gate_coord_check_slopes.csv'} and .png; fix the model, or pass "
                f"{arg('skip_check', True)} to search anyway"
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
    The plan (:func:`mutune.budget.make_plan`) is made before anything runs and recorded. A
    ``KeyboardInterrupt`` stops after marking the running trial failed; the same call resumes.
    """
    arguments.search(spec, workers=workers, where=run_dir)  # as the command line checked them before torch
    if smoke:
        spec = config.smoke(spec)
    # each process's share of the cores, recorded in config.yaml (the count decides the last bits)
    threads = spec.train.threads  # as asked (--threads): the search's own target runs with it too
    spec = spec.edit({"train.threads": threads_for(threads, workers)})
    if spec.model.base_width > spec.model.width:
        warnings.warn(
            f"model.base_width ({spec.model.base_width}) is larger than model.width ({spec.model.width}): "
            "the proxy is narrower than the base, so every µP multiplier is below 1; usually the proxy is "
            "the base width or wider",
            MutuneWarning,
            stacklevel=2,
        )
    if spec.model.base_depth is not None and spec.model.base_depth > spec.model.depth:
        warnings.warn(
            f"model.base_depth ({spec.model.base_depth}) is larger than model.depth ({spec.model.depth}): the "
            "proxy is shallower than the base, so its depth multiplier m_L is below 1; usually the proxy "
            "is the base depth (leave model.base_depth out)",
            MutuneWarning,
            stacklevel=2,
        )
    if not spec.search.space:
        raise SpecError(
            "search.space",
            "is empty, so every trial would train the same hyperparameters (the spec's hparams); name at "
            "least one, or leave search.space out for the default space",
        )
    resolve_device(spec.train.device)  # a device this machine does not have (mps off Apple), named now
    run_dir = Path(run_dir) if run_dir is not None else default_run_dir(spec, smoke)
    data.load(spec.data, min_len=spec.model.seq_len + 1)  # a missing corpus fails here, not in trial 0
    models.validate(spec, spec.hparams, data.vocab_size(spec.data))  # so does a model µP cannot handle
    if spec.train.memory_check:  # and a proxy that cannot fit, before the coord check allocates
        memory.check(flops.cost(spec).memory_bytes, resolve_device(spec.train.device), what="the proxy")
    plan = budget.make_plan(spec)  # so does a budget that buys nothing
    RunDir(run_dir).claim(spec)  # a run dir holds one study: refuse another's rather than overwrite it
    storage = open_storage(storage_url(spec, run_dir))
    refuse_a_lost_study(spec, storage, run_dir)
    study = open_study(spec, storage)  # fails fast on a spec that does not match the study
    tracking = trackers.Tracking.from_spec(spec.tracker, run_dir, spec.name, study.study_name)
    extra = {"tracking": tracking} if tracking is not None else {}
    if spec.search.fidelity.rungs:  # successive halving: the configurations' stable states live here
        extra["states"] = run_dir / "fidelity"
    job = replace(SEARCH_JOB, evaluate=partial(evaluate_trial, **extra)) if extra else SEARCH_JOB
    phases = Phases(spec, plan, run_dir, study, storage, job, workers, events)
    laws = spec.search.laws.steps or spec.search.laws.batch_size
    recorded = RunDir(run_dir).best() if (run_dir / "trials.csv").is_file() else None
    if recorded is not None and not laws and not phases.pending():
        # the study already holds what this call asks for (fewer trials, say): its records, written by
        # the calls that ran the trials, stay as they are, and so does best.yaml's plan
        finished, running = count(study)
        events.search_complete(run_dir, finished)
        result = SearchResult(run_dir=run_dir, best=recorded, n_finished=finished, n_running=running)
        return _with_target(result, spec, transfer, events, threads)
    use_threads(spec.train.threads)  # the coord check and the trials run here (one worker)
    write_config(run_dir, spec, argv)
    budget.record_plan(study, spec, plan, run_dir)
    events.search_planned(plan)
    events.coord_checked(coord_gate(spec, study, run_dir, skip_check))
    shown = spec.edit({"search.budget": None, "search.finalists": None, "search.n_trials": plan.n_trials})
    events.search_started(shown, run_dir, count(study)[0])
    try:
        phases.run()
    finally:
        # whatever happened, leave the table and the best-so-far on disk
        with RunDir(run_dir).lock():
            write_trials_csv(study, run_dir)
            best = write_best(study, spec, run_dir)
    finished, running = count(study)  # what the study holds, other processes' trials included
    if best is None:
        raise SearchFailed(
            f"none of the {finished} finished trials has a finite loss; see {run_dir / 'trials.csv'}"
        )
    won = Best.from_dict(best, str(run_dir / "best.yaml"))
    if spec.search.laws.steps or spec.search.laws.batch_size:
        won = laws_run.fit_laws(spec, run_dir, won, events)  # LR* across horizon / batch size
    result = SearchResult(run_dir=run_dir, best=won, n_finished=finished, n_running=running)
    return _with_target(result, spec, transfer, events, threads)


def _with_target(
    result: SearchResult, spec: Spec, transfer: bool, events: Events, threads: int | None = None
) -> SearchResult:
    """The search's result, with its target trained (or, finished before, read back) when the spec
    names one and ``transfer``. A thread count the search was given is the target's too; without one
    the target takes its own share of the cores (the search's was its workers')."""
    if transfer and spec.target.width is not None:
        from . import transfer as transfer_mod

        to = [f"train.threads={threads}"] if threads is not None else []
        result.target = transfer_mod.transfer(
            RunDir(result.run_dir), to, resume=True, events=events, proxy=spec, best=result.best
        )
    return result


def refuse_a_lost_study(spec: Spec, storage: optuna.storages.BaseStorage, run_dir: Path) -> None:
    """A run dir whose best.yaml came from a search, but whose storage holds no such study (an emptied
    or replaced study.journal), is refused: a new study would start at trial 0 and overwrite best.yaml
    and trials.csv with its own."""
    best = run_dir / "best.yaml"
    name = spec.search.study_name or spec.name
    if not best.is_file() or name in {s.study_name for s in optuna.get_all_study_summaries(storage)}:
        return
    raise SpecError(
        shown_url(storage_url(spec, run_dir)),
        f"holds no study {name!r}, but {best} is the result of one: the study was emptied or replaced, and "
        "a new one would overwrite best.yaml and trials.csv; restore it (from a backup, or a "
        "study.journal.*.bak beside it if a repair made one), or move best.yaml and trials.csv away to "
        "start this search over",
    )


class GateFailed(SearchFailed):
    """The coord check before the first trial failed: the model is not µP. Exit code 1."""


from . import _callable_module  # noqa: E402

_callable_module(__name__)  # mutune.X(...) calls X.X(...)

"""``--launcher slurm``: the search's workers as a job array and the target as one multi-rank job,
through submitit. Run with submitit's local executor (``--slurm cluster=local``): real subprocesses,
submitted, logged and collected by the same code as on a cluster, where only the executor is Slurm's.
A worker killed mid-trial leaves its trial to the others, and the study finishes on them."""

from __future__ import annotations

import os
import signal
import sys
import time

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from mutune import config
from mutune.study import loop, open_storage

from .conftest import TINY, write_spec

submitit = pytest.importorskip("submitit", reason="submitit is not installed (pip install -e '.[slurm]')")

pytestmark = pytest.mark.slow

LOCAL = ["--launcher", "slurm", "--slurm", "cluster=local"]


def trials(run_dir):
    storage = open_storage(str(run_dir / "study.journal"), repair=False)
    (summary,) = optuna.get_all_study_summaries(storage)
    return optuna.load_study(study_name=summary.study_name, storage=storage).get_trials(deepcopy=False)


def wait_for(predicate, timeout: float, what: str):
    t0 = time.time()
    while time.time() - t0 < timeout:
        got = predicate()
        if got:
            return got
        time.sleep(0.3)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def test_search_workers_as_an_array_finish_the_study_when_one_is_killed(run_cli, workdir):
    slow = {**TINY, "train": {**TINY["train"], "steps": 300, "eval_every": 100}, "search": {"n_trials": 4}}
    spec = write_spec(workdir / "s.yaml", slow)
    r = run_cli("search", spec, "--workers", "3", *LOCAL, "--skip-check", "--run-dir", "run")
    assert r.code == 0, r
    assert "submitted 3 search worker(s)" in r.out and "tail -f" in r.out, r.out
    run = workdir / "run"
    journal = run / "study.journal"

    searched = set(config.load_spec(spec).search.space)

    def a_running_trial():  # training: every hyperparameter drawn; the newest, most of its steps ahead
        if not journal.is_file():
            return None
        running = [
            t
            for t in trials(run)
            if t.state == TrialState.RUNNING and t.user_attrs.get("worker") and set(t.params) == searched
        ]
        return max(running, key=lambda t: t.datetime_start) if running else None

    victim = wait_for(a_running_trial, 180, "a running trial")
    host, _, pid = victim.user_attrs["worker"].rpartition(":")
    os.kill(int(pid), signal.SIGKILL)  # the array task dies mid-trial, as a node failure would leave it

    def finished():
        ts = trials(run)
        done = [t for t in ts if t.state == TrialState.COMPLETE]
        return ts if len(done) >= 4 and not any(t.state == TrialState.RUNNING for t in ts) else None

    ts = wait_for(finished, 300, "the study to finish on the other workers")
    killed = ts[victim.number]
    assert killed.state == TrialState.FAIL and "orphaned" in killed.user_attrs["fail_reason"]
    retry = [t for t in ts if t.user_attrs.get("retry_of") == victim.number]
    assert len(retry) == 1 and retry[0].state == TrialState.COMPLETE and retry[0].params == killed.params
    assert sum(t.state == TrialState.COMPLETE for t in ts) == 4
    workers = {t.user_attrs["worker"] for t in ts if t.state == TrialState.COMPLETE}
    assert len(workers) >= 2 and victim.user_attrs["worker"] not in {t.user_attrs["worker"] for t in retry}

    def best_of_all():  # best.yaml is rewritten after every trial: the last writer may still be at it
        path = run / "best.yaml"
        best = yaml.safe_load(path.read_text()) if path.is_file() else None
        return best if best and best["provenance"]["n_trials_finished"] >= 4 else None

    wait_for(best_of_all, 60, "best.yaml of the finished study")
    assert list((run / "slurm").glob("*_0_log.out"))  # each task's log, where the command said


def test_the_target_as_a_two_rank_job(run_cli, workdir):
    spec = write_spec(workdir / "s.yaml", {**TINY, "search": {"n_trials": 1}})
    assert run_cli("search", spec, "--no-transfer", "--skip-check").code == 0
    r = run_cli("transfer", "runs/tiny", "--to", "width=64", *LOCAL, "--nproc", "2", "--wait")
    assert r.code == 0, r
    assert "1 node(s) x 2 rank(s)" in r.out and "target val loss" in r.out, r.out
    target = workdir / "runs/tiny/target-width64"
    assert yaml.safe_load((target / "plan.yaml").read_text())["nproc"] == 2  # WORLD_SIZE from the job
    result = yaml.safe_load((target / "result.yaml").read_text())
    assert result["steps"] == TINY["train"]["steps"]
    logs = sorted(p.name for p in (workdir / "runs/tiny/target-width64-slurm").glob("*_log.out"))
    assert [n.split("_")[1] for n in logs] == ["0", "1"]  # two ranks, each its own process
    r = run_cli("transfer", "runs/tiny", "--to", "width=64", *LOCAL, "--nproc", "2")
    assert r.code == 2 and "--resume" in r.err, r  # a finished target is not overwritten


def test_a_foreign_workers_silent_trial_is_failed_and_retried(tmp_path):
    """Workers on other machines share the journal: their trial is failed by its silent heartbeat, as
    a local one is by its dead pid (a live one keeps beating and is left alone)."""
    storage = open_storage(str(tmp_path / "study.journal"))
    study = optuna.create_study(study_name="s", storage=storage)
    dead, alive, fresh = study.ask(), study.ask(), study.ask()
    for t in (dead, alive, fresh):
        t.set_user_attr("worker", "node-17:4242")
    dead.set_user_attr("heartbeat", time.time() - 5 * loop.JOURNAL_HEARTBEAT_SECONDS)
    alive.set_user_attr("heartbeat", time.time())
    assert loop.reap_orphans(study, storage) == [dead.number]
    got = study.get_trials(deepcopy=False)
    assert got[dead.number].state == TrialState.FAIL and got[dead.number].user_attrs["retry"]
    assert got[alive.number].state == got[fresh.number].state == TrialState.RUNNING


def test_without_submitit_it_is_one_line(run_cli, tiny_spec, monkeypatch):
    monkeypatch.setitem(sys.modules, "submitit", None)  # as when the extra is not installed
    r = run_cli("search", tiny_spec, "--workers", "2", "--launcher", "slurm")
    assert r.code == 2 and r.err.startswith("error: --launcher: slurm needs submitit"), r
    assert len(r.err.strip().splitlines()) == 1
    r = run_cli("transfer", "runs/x", "--to", "width=64", "--launcher", "slurm")
    assert r.code == 2 and r.err.startswith("error: --launcher: slurm needs submitit"), r


@pytest.mark.parametrize(
    "args, key",
    [
        (["--launcher", "slurm"], "error: --launcher: slurm: no sbatch"),
        (["--launcher", "slurm", "--slurm", "partition"], "error: --slurm:"),
        (["--launcher", "slurm", "--slurm", "cluster=mars"], "error: --slurm cluster:"),
        (["--slurm", "partition=gpu"], "error: --launcher:"),
        (["--launcher", "slurm", "--slurm", "cluster=local", "--workers", "0"], "error: --workers:"),
    ],
)
def test_bad_launch_arguments_are_one_line(run_cli, tiny_spec, args, key):
    if "no sbatch" in key and submitit.SlurmExecutor.affinity() >= 0:
        pytest.skip("this machine has sbatch")
    r = run_cli("search", tiny_spec, *args)
    assert r.code == 2 and r.err.startswith(key) and len(r.err.strip().splitlines()) == 1, r

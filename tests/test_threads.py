"""Threads sized to the machine (issue 23): every training process takes its share of the usable cores
(cores ÷ the processes training at once) unless ``train.threads`` / ``--threads`` or
``$OMP_NUM_THREADS`` says otherwise, and the run records the count it used, since the count decides
the last bits of every CPU loss.

The subprocess tests pin the process to two cores (its affinity mask, which ``usable_cores`` reads)
and unset ``OMP_NUM_THREADS`` (the test suite sets it to 1 for itself).
"""

from __future__ import annotations

import os
import subprocess
import sys

import pandas as pd
import pytest
import yaml

from mutune import config, device

from .conftest import ROOT, TINY, write_spec

TWO_CORES = hasattr(os, "sched_setaffinity") and len(os.sched_getaffinity(0)) >= 2


def _on_two_cores(args: list[str], cwd, **env) -> subprocess.CompletedProcess:
    """``mutune ARGS`` in a process pinned to two cores, with no ``OMP_NUM_THREADS``."""
    cores = sorted(os.sched_getaffinity(0))[:2]
    environ = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    environ.update(CI="true", PYTHONPATH=str(ROOT), **env)
    return subprocess.run(
        [sys.executable, "-m", "mutune", *args],
        cwd=cwd,
        env=environ,
        capture_output=True,
        text=True,
        timeout=600,
        preexec_fn=lambda: os.sched_setaffinity(0, cores),
    )


def test_the_count_is_the_setting_else_omp_else_the_cores_shared(monkeypatch):
    monkeypatch.setattr(device, "usable_cores", lambda: 8)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert device.threads_for(None, 1) == 8
    assert device.threads_for(None, 2) == 4
    assert device.threads_for(None, 3) == 2  # 8 // 3: never more threads than cores in all
    assert device.threads_for(None, 16) == 1  # at least one each
    assert device.threads_for(3, 2) == 3  # train.threads / --threads wins
    monkeypatch.setenv("OMP_NUM_THREADS", "5")
    assert device.threads_for(None, 2) == 5
    assert device.threads_for(2, 2) == 2
    monkeypatch.setenv("OMP_NUM_THREADS", "")  # set but empty: not a count
    assert device.threads_for(None, 2) == 4


@pytest.mark.skipif(not TWO_CORES, reason="needs two cores to pin a process to")
def test_usable_cores_follow_the_affinity_mask():
    code = "import os; os.sched_setaffinity(0, [sorted(os.sched_getaffinity(0))[0]]); "
    code += "from mutune import device; print(device.usable_cores())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "1"


@pytest.mark.skipif(not TWO_CORES, reason="needs two cores to pin a process to")
def test_a_search_with_two_workers_on_two_cores_uses_one_thread_each(workdir):
    spec = write_spec(workdir / "tiny.yaml", {**TINY, "search": {"n_trials": 4}})
    r = _on_two_cores(["search", str(spec), "--no-transfer", "--workers", "2"], workdir)
    assert r.returncode == 0, r.stderr[-2000:]
    run = workdir / "runs" / "tiny"
    assert yaml.safe_load((run / "config.yaml").read_text())["train"]["threads"] == 1
    trials = pd.read_csv(run / "trials.csv")
    assert len(trials) == 4 and trials.worker.nunique() == 2  # both workers ran trials
    assert trials.threads.tolist() == [1, 1, 1, 1]  # what torch.get_num_threads() said in each worker


@pytest.mark.skipif(not TWO_CORES, reason="needs two cores to pin a process to")
def test_one_process_takes_both_cores_and_threads_overrides(workdir):
    spec = write_spec(workdir / "tiny.yaml", {**TINY, "search": {"n_trials": 1}})
    r = _on_two_cores(["search", str(spec), "--no-transfer"], workdir)
    assert r.returncode == 0, r.stderr[-2000:]
    run = workdir / "runs" / "tiny"
    assert yaml.safe_load((run / "config.yaml").read_text())["train"]["threads"] == 2
    assert pd.read_csv(run / "trials.csv").threads.tolist() == [2]
    # --threads: the next trial runs on one, and config.yaml says so; the study is the same one
    r = _on_two_cores(["search", str(spec), "--no-transfer", "search.n_trials=2", "--threads", "1"], workdir)
    assert r.returncode == 0, r.stderr[-2000:]
    assert yaml.safe_load((run / "config.yaml").read_text())["train"]["threads"] == 1
    assert pd.read_csv(run / "trials.csv").threads.tolist() == [2, 1]
    # OMP_NUM_THREADS is a setting too
    r = _on_two_cores(
        ["search", str(spec), "--no-transfer", "search.n_trials=3"], workdir, OMP_NUM_THREADS="1"
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert pd.read_csv(run / "trials.csv").threads.tolist() == [2, 1, 1]
    # a target picks its own count (one process: both cores), and its config.yaml records it
    r = _on_two_cores(["transfer", str(run), "--to", "width=48"], workdir)
    assert r.returncode == 0, r.stderr[-2000:]
    target = yaml.safe_load((run / "target-width48" / "config.yaml").read_text())
    assert target["train"]["threads"] == 2


@pytest.mark.skipif(not TWO_CORES, reason="needs two cores to pin a process to")
def test_the_searchs_own_target_takes_the_threads_the_search_was_given(workdir):
    spec = write_spec(workdir / "t.yaml", {**TINY, "search": {"n_trials": 1}, "target": {"width": 48}})
    r = _on_two_cores(["search", str(spec), "--threads", "1"], workdir)
    assert r.returncode == 0, r.stderr[-2000:]
    target = workdir / "runs" / "t" / "target-width48"
    assert yaml.safe_load((target / "config.yaml").read_text())["train"]["threads"] == 1
    r = _on_two_cores(["search", str(spec), "--run-dir", "runs/auto"], workdir)  # not given: its own share
    assert r.returncode == 0, r.stderr[-2000:]
    auto = workdir / "runs" / "auto" / "target-width48"
    assert yaml.safe_load((auto / "config.yaml").read_text())["train"]["threads"] == 2


def test_a_target_does_not_inherit_the_searchs_count_unless_named():
    proxy = config.spec_from_dict({**TINY, "train": {**TINY["train"], "threads": 1}})
    assert config.derive(proxy, ["width=64"]).spec.train.threads is None  # resolved when it runs
    named = config.derive(proxy, ["width=64", "train.threads=3"])
    assert named.spec.train.threads == 3 and named.key() == "width64"  # how to run: not in the name


def test_threads_is_validated_and_changes_no_study(workdir):
    with pytest.raises(config.SpecError) as e:
        config.spec_from_dict(TINY, ["train.threads=0"])
    assert e.value.key == "train.threads"
    # the thread count is how a trial runs, not what it trains: a resumed study may change it
    from mutune.study import trial_relevant

    one = config.spec_from_dict(TINY, ["train.threads=1"])
    assert trial_relevant(one) == trial_relevant(config.spec_from_dict(TINY, ["train.threads=2"]))

"""Runs that survive: real signals on real processes, parallel workers, PostgreSQL, resumable targets."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pandas as pd
import pytest
import yaml
from optuna.trial import TrialState

from mutune import search
from mutune import study as study_mod

from .conftest import TINY, write_spec

# ~1-2 s per trial on a CPU core: long enough to be killed mid-trial
SLOW = {**TINY, "name": "robust", "train": {**TINY["train"], "steps": 300, "eval_every": 100}}


def mutune(*args: str, cwd: Path, **kw) -> subprocess.Popen:
    env = {**os.environ, "CI": "true", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "mutune", *map(str, args)],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # so a timeout can kill the whole group (torchrun's ranks, workers)
        **kw,
    )


def finish(p: subprocess.Popen, timeout: float = 300) -> tuple[int, str, str]:
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        p.communicate()
        raise
    return p.returncode, out, err


def load_study(run: Path, name: str = "robust") -> optuna.Study:
    return optuna.load_study(study_name=name, storage=study_mod.open_storage(str(run / "study.journal")))


def wait_for(predicate, timeout: float = 120, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError("timed out waiting")


def fresh_running_trial(run: Path):
    """The number (+1) of a trial that started under a second ago, once one trial has completed.

    Trials last well over a second, so a signal sent now lands mid-trial."""
    if not (run / "study.journal").exists():
        return None
    try:
        trials = load_study(run).get_trials(deepcopy=False)
    except KeyError:  # the study is not created yet
        return None
    if not any(t.state == TrialState.COMPLETE for t in trials):
        return None
    for t in trials:
        fresh = t.datetime_start is not None and time.time() - t.datetime_start.timestamp() < 1.0
        if t.state == TrialState.RUNNING and "worker" in t.user_attrs and fresh:
            return t.number + 1  # +1: trial 0 is falsy
    return None


def test_sigkill_mid_trial_then_resume_loses_nothing(workdir):
    spec = write_spec(workdir / "robust.yaml", {**SLOW, "search": {"n_trials": 4}})
    run = workdir / "runs" / "robust"
    p = mutune("search", spec, "--no-transfer", cwd=workdir)
    killed = wait_for(lambda: fresh_running_trial(run)) - 1
    time.sleep(0.1)
    before = {t.number: t.value for t in load_study(run).get_trials() if t.state == TrialState.COMPLETE}
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert load_study(run).get_trials()[killed].state == TrialState.RUNNING  # killed mid-trial, a zombie

    code, out, err = finish(mutune("search", spec, "--no-transfer", cwd=workdir))
    assert code == 0, err
    trials = load_study(run).get_trials()
    numbers = [t.number for t in trials]
    assert len(numbers) == len(set(numbers))
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 4
    assert trials[killed].state == TrialState.FAIL
    assert "orphaned" in trials[killed].user_attrs["fail_reason"]
    retry = [t for t in trials if t.user_attrs.get("retry_of") == killed]
    assert (
        len(retry) == 1 and retry[0].params == trials[killed].params and retry[0].state == TrialState.COMPLETE
    )
    for number, value in before.items():  # what finished before the kill is kept as it was
        assert trials[number].value == value
    table = pd.read_csv(run / "trials.csv")
    assert table.loc[table.number == killed, "state"].item() == "FAIL"
    assert (table.state == "COMPLETE").sum() == 4


def test_sigint_marks_the_trial_and_says_how_to_resume(workdir):
    spec = write_spec(workdir / "robust.yaml", {**SLOW, "search": {"n_trials": 3}})
    run = workdir / "runs" / "robust"
    p = mutune("search", spec, "--no-transfer", cwd=workdir)
    interrupted = wait_for(lambda: fresh_running_trial(run)) - 1
    time.sleep(0.1)
    p.send_signal(signal.SIGINT)
    code, out, err = finish(p)
    assert code == 130
    assert "Resume with" in err and "robust.yaml" in err
    assert "Traceback" not in err
    t = load_study(run).get_trials()[interrupted]
    assert t.state == TrialState.FAIL and t.user_attrs["fail_reason"] == "interrupted"
    assert (run / "best.yaml").is_file()  # the best so far is on disk
    code, out, err = finish(mutune("search", spec, "--no-transfer", cwd=workdir))
    assert code == 0, err
    trials = load_study(run).get_trials()
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 3
    assert any(t.user_attrs.get("retry_of") == interrupted for t in trials)


def _check_parallel_run(run: Path, n_trials: int, name: str, storage: str | None = None) -> None:
    st = study_mod.open_storage(storage or str(run / "study.journal"))
    trials = optuna.load_study(study_name=name, storage=st).get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * n_trials  # exactly n, no errors
    assert len({t.number for t in trials}) == n_trials
    assert len({t.params["lr"] for t in trials}) == n_trials  # no duplicated configurations
    assert len({t.user_attrs["worker"] for t in trials}) == 2  # both workers took trials


def test_two_workers_on_the_embedded_storage(workdir):
    spec = write_spec(workdir / "par.yaml", {**TINY, "name": "par", "search": {"n_trials": 6}})
    code, out, err = finish(mutune("search", spec, "--workers", "2", "--no-transfer", cwd=workdir))
    assert code == 0, err
    _check_parallel_run(workdir / "runs" / "par", 6, "par")
    assert len(pd.read_csv(workdir / "runs" / "par" / "trials.csv")) == 6


def test_workers_split_the_search_in_process(workdir):
    """The same through the Python API, so the relay of trial events is checked too."""
    from mutune import config, events

    seen = []

    class Collect(events.Events):
        def trial_ended(self, ev):
            seen.append(ev.number)

    spec = config.spec_from_dict({**TINY, "name": "par2", "search": {"n_trials": 4}})
    res = search.search(spec, run_dir=workdir / "r", workers=2, transfer=False, events=Collect(), argv=["t"])
    assert res.n_finished == 4 and sorted(seen) == [0, 1, 2, 3]


# ---------------------------------------------------------------------------------------------
# PostgreSQL


def _pg_bindir() -> Path | None:
    for d in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (d / "initdb").exists() and (d / "pg_ctl").exists():
            return d
    return None


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def postgres_url(tmp_path_factory):
    """A real PostgreSQL server on loopback, started for these tests and stopped after."""
    import shutil
    import tempfile

    bindir = _pg_bindir()
    missing = None
    if bindir is None:
        missing = "no PostgreSQL server binaries (initdb, pg_ctl) under /usr/lib/postgresql"
    else:
        try:
            import psycopg  # noqa: F401
        except ImportError:
            missing = "the psycopg driver is not installed (pip install 'psycopg[binary]')"
    if missing:
        if os.environ.get("CI", "").lower() in ("1", "true"):
            pytest.fail(f"CI must run the PostgreSQL test: {missing}")
        pytest.skip(missing)
    root = os.geteuid() == 0
    as_user = ["runuser", "-u", "postgres", "--"] if root else []
    base = Path(tempfile.mkdtemp(prefix="mutune-pg-"))
    base.chmod(0o777)
    data = base / "data"
    port = _free_port()

    def run(*cmd: str) -> None:
        subprocess.run([*as_user, *cmd], check=True, capture_output=True, text=True, timeout=120)

    run(str(bindir / "initdb"), "-D", str(data), "-U", "mutune", "--auth=trust", "-E", "UTF8")
    run(
        str(bindir / "pg_ctl"),
        "-D",
        str(data),
        "-l",
        str(base / "log"),
        "-w",
        "-o",
        f"-p {port} -k {base} -c listen_addresses=127.0.0.1",
        "start",
    )
    try:
        run(str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "mutune", "mutune_test")
        yield f"postgresql://mutune@127.0.0.1:{port}/mutune_test"
    finally:
        subprocess.run(
            [*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "stop"],
            capture_output=True,
            timeout=120,
        )
        shutil.rmtree(base, ignore_errors=True)


def test_two_workers_on_postgresql(workdir, postgres_url):
    spec = write_spec(workdir / "pg.yaml", {**TINY, "name": "pg", "search": {"n_trials": 6}})
    code, out, err = finish(
        mutune("search", spec, "--workers", "2", "--storage", postgres_url, "--no-transfer", cwd=workdir)
    )
    assert code == 0, err
    _check_parallel_run(workdir / "runs" / "pg", 6, "pg", storage=postgres_url)
    assert not (workdir / "runs" / "pg" / "study.journal").exists()  # the study lives in PostgreSQL
    # a second machine joining the same study with a bigger budget continues it
    code, out, err = finish(
        mutune(
            "search",
            spec,
            "search.n_trials=8",
            "--storage",
            postgres_url,
            "--run-dir",
            workdir / "other",
            "--no-transfer",
            cwd=workdir,
        )
    )
    assert code == 0, err
    st = study_mod.open_storage(postgres_url)
    assert len(optuna.load_study(study_name="pg", storage=st).get_trials()) == 8


def test_bad_storage_url_is_a_user_error(run_cli, tiny_spec):
    r = run_cli("search", tiny_spec, "--storage", "postgresql://nobody@127.0.0.1:1/none", "--no-transfer")
    assert r.code == 2 and "search.storage" in r.err


# ---------------------------------------------------------------------------------------------
# Divergence and pruning


def test_median_pruner_prunes_and_counts(workdir, run_cli):
    spec = write_spec(
        workdir / "p.yaml",
        {
            **TINY,
            "name": "prune",
            "train": {**TINY["train"], "steps": 12, "eval_every": 3},
            "search": {
                "n_trials": 10,
                "pruner": "median",
                "space": {"lr": {"type": "log_uniform", "low": 1e-4, "high": 0.3}},
            },
        },
    )
    r = run_cli("search", spec, "--no-transfer")
    assert r.code == 0, r
    trials = pd.read_csv(workdir / "runs" / "prune" / "trials.csv")
    pruned = trials[trials.state == "PRUNED"]
    assert len(trials) == 10 and len(pruned) >= 1
    assert pruned.fail_reason.str.startswith("pruned at step").all()
    assert (pruned.steps < 12).all()


def test_hyperband_pruner_runs(workdir, run_cli, tiny_spec):
    r = run_cli("search", tiny_spec, "search.pruner=hyperband", "search.n_trials=4", "--no-transfer")
    assert r.code == 0, r
    assert len(pd.read_csv(workdir / "runs" / "tiny" / "trials.csv")) == 4


# ---------------------------------------------------------------------------------------------
# Resumable, distributed, guarded target runs


@pytest.fixture
def proxy_run(workdir):
    """A finished tiny search whose spec checkpoints the target every 10 steps."""
    from mutune import config

    spec = config.spec_from_dict(
        {
            **TINY,
            "name": "tgt",
            "train": {**TINY["train"], "steps": 300, "eval_every": 50, "checkpoint_every": 10},
            "search": {"n_trials": 1},
        }
    )
    search.search(spec, run_dir=workdir / "runs" / "tgt", transfer=False, argv=["test"])
    return workdir / "runs" / "tgt"


def _curve(target: Path) -> list[float]:
    return [c["val_loss"] for c in yaml.safe_load((target / "result.yaml").read_text())["curve"]]


def test_target_killed_then_resumed_equals_uninterrupted(proxy_run, workdir):
    import shutil

    import torch

    twin = workdir / "runs" / "twin"
    shutil.copytree(proxy_run, twin)
    p = mutune("transfer", proxy_run, "--to", "width=48", cwd=workdir)
    ckpt = proxy_run / "target-width48" / "checkpoint.pt"
    wait_for(lambda: ckpt.exists() and torch.load(ckpt, weights_only=False)["step"] >= 20, timeout=180)
    p.send_signal(signal.SIGKILL)
    p.wait()
    step = torch.load(ckpt, weights_only=False)["step"]
    assert 20 <= step < 300 and not (proxy_run / "target-width48" / "result.yaml").exists()
    # without --resume the partial run is not overwritten
    code, out, err = finish(mutune("transfer", proxy_run, "--to", "width=48", cwd=workdir))
    assert code == 2 and "--resume" in err
    code, out, err = finish(mutune("transfer", proxy_run, "--to", "width=48", "--resume", cwd=workdir))
    assert code == 0, err
    code, out, err = finish(mutune("transfer", twin, "--to", "width=48", cwd=workdir))
    assert code == 0, err
    assert _curve(proxy_run / "target-width48") == _curve(twin / "target-width48")  # bit for bit
    rows = pd.read_csv(proxy_run / "target-width48" / "metrics.csv")
    assert rows.step.is_monotonic_increasing and rows.step.max() == 300  # killed rows replaced, not doubled
    assert (
        rows.dropna(subset=["train_loss"]).step.is_unique and rows.dropna(subset=["val_loss"]).step.is_unique
    )
    # a finished target resumed again is returned as it is
    code, out, err = finish(mutune("transfer", proxy_run, "--to", "width=48", "--resume", cwd=workdir))
    assert code == 0 and _curve(proxy_run / "target-width48") == _curve(twin / "target-width48")


def test_nproc_2_matches_one_process(proxy_run, workdir):
    import shutil

    twin = workdir / "runs" / "twin"
    shutil.copytree(proxy_run, twin)
    args = ["--to", "width=48", "--to", "train.steps=20", "--to", "train.eval_every=10"]
    code, out, err = finish(mutune("transfer", proxy_run, *args, "--nproc", "2", cwd=workdir))
    assert code == 0, err
    code, out, err = finish(mutune("transfer", twin, *args, cwd=workdir))
    assert code == 0, err
    ddp, single = _curve(proxy_run / "target-width48-steps20"), _curve(twin / "target-width48-steps20")
    assert len(ddp) == len(single) == 2
    assert ddp == pytest.approx(single, rel=1e-4)


def test_nproc_must_divide_the_batch(proxy_run, workdir, run_cli):
    r = run_cli("transfer", proxy_run, "--to", "width=48", "--to", "train.batch_size=3", "--nproc", "2")
    assert r.code == 2 and "train.batch_size" in r.err


def test_provenance_guard_refuses_and_force_records(proxy_run, run_cli):
    best = yaml.safe_load((proxy_run / "best.yaml").read_text())
    best["provenance"]["base_width"] = 64
    (proxy_run / "best.yaml").write_text(yaml.safe_dump(best))
    r = run_cli("transfer", proxy_run, "--to", "width=48", "--to", "train.steps=4", "--dry-run")
    assert r.code == 2 and "best.yaml" in r.err and "base_width" in r.err
    r = run_cli("transfer", proxy_run, "--to", "width=48", "--to", "train.steps=4", "--force")
    assert r.code == 0, r
    plan = yaml.safe_load((proxy_run / "target-width48-steps4" / "plan.yaml").read_text())
    assert plan["forced"] and "base_width" in plan["forced"][0]

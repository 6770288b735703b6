"""Successive halving along training length (issue 26, `search.fidelity`): the proxy trials run the
first rung's horizon (a WSD run, evaluated after its cooldown), the best continue from their stable
state to the next; no step is trained twice; the search resumes without repeating a rung."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
import yaml

from mutune import config
from mutune.train import Stable, train
from mutune.train import stable as stable_mod

from .conftest import CONFIGS

BASE = {
    "model": {"width": 32, "base_width": 32, "depth": 2, "head_dim": 16, "seq_len": 32},
    "train": {
        "steps": 40,
        "batch_size": 4,
        "warmup_steps": 4,
        "schedule": "wsd",
        "eval_every": 20,
        "eval_batches": 2,
    },
}
FIDELITY = ["train.schedule=wsd", "search.fidelity={rungs: [0.5, 1.0], keep: 0.5}", "search.n_trials=6"]


def test_a_run_continued_from_a_shorter_runs_stable_state_is_the_longer_run(tmp_path):
    torch.set_num_threads(1)
    short = config.spec_from_dict(BASE, ["train.steps=20"])
    train(short, short.hparams, stable=Stable(save_dir=tmp_path))
    saved = stable_mod.latest(tmp_path, 10**9)
    assert saved is not None and saved.name == "stable-16.pt"  # 20 steps, a 4-step cooldown
    long = config.spec_from_dict(BASE)
    continued = train(long, long.hparams, stable=Stable(start_from=saved))
    fresh = train(long, long.hparams)
    assert continued.final_val_loss == fresh.final_val_loss  # bit for bit
    per_step = fresh.flops / 40  # (roughly: evaluations aside)
    assert continued.flops_before == pytest.approx(16 * per_step, rel=0.2)  # the 16 steps it did not train


def test_another_configuration_is_not_continued(tmp_path):
    short = config.spec_from_dict(BASE, ["train.steps=20"])
    train(short, short.hparams, stable=Stable(save_dir=tmp_path))
    other = config.spec_from_dict(BASE, ["hparams.lr=0.02"])
    with pytest.raises(config.SpecError, match="another configuration"):
        train(other, other.hparams, stable=Stable(start_from=stable_mod.latest(tmp_path, 99)))


def _run(workdir):
    run = workdir / "runs" / "quickstart-smoke"
    return run, pd.read_csv(run / "trials.csv"), yaml.safe_load((run / "best.yaml").read_text())


def test_search_promotes_the_best_and_repeats_no_step(run_cli, workdir):
    r = run_cli("search", CONFIGS / "quickstart.yaml", "--smoke", *FIDELITY, "--no-transfer")
    assert r.code == 0, r
    run, trials, best = _run(workdir)
    proxy, rung = trials[trials.rung == 0], trials[trials.rung == 1]
    assert len(proxy) == 6 and set(proxy.steps) == {6} and len(rung) == 3 and set(rung.steps) == {12}
    # the best three proxy configurations went on
    top = proxy.sort_values(["loss", "number"]).head(3)
    assert sorted(rung.lr) == sorted(top.lr)
    # a promoted trial is the full run of its configuration, bit for bit, and paid only for what it added
    spec = config.load_spec(CONFIGS / "quickstart.yaml", ["train.schedule=wsd"], smoke=True)
    row = rung.sort_values("number").iloc[0]
    names = list(spec.search.space)
    fresh = train(spec, spec.hparams.__class__(**{**vars(spec.hparams), **{n: row[n] for n in names}}))
    assert fresh.final_val_loss == row.loss
    assert row.flops < fresh.flops  # it continued from step 5: no step trained twice
    ladder = best["provenance"]["ladder"]
    assert ladder["done"] and ladder["decided_at_steps"] == 12
    assert best["provenance"]["search_flops"] == pytest.approx(trials.flops.sum())


def test_an_interrupted_successive_halving_search_resumes_without_repeating_a_rung(
    run_cli, workdir, monkeypatch
):
    from mutune import search as search_mod

    real = search_mod.train
    calls = {"n": 0}

    def stop_in_rung_one(spec, hp, **kwargs):
        if spec.train.steps == 12:  # the first promoted trial: the search is killed there
            calls["n"] += 1
            if calls["n"] == 1:
                raise KeyboardInterrupt
        return real(spec, hp, **kwargs)

    monkeypatch.setattr(search_mod, "train", stop_in_rung_one)
    r = run_cli("search", CONFIGS / "quickstart.yaml", "--smoke", *FIDELITY, "--no-transfer")
    assert r.code == 130, r
    monkeypatch.setattr(search_mod, "train", real)
    r = run_cli("search", CONFIGS / "quickstart.yaml", "--smoke", *FIDELITY, "--no-transfer")
    assert r.code == 0, r
    _, trials, best = _run(workdir)
    done = trials[trials.state == "COMPLETE"]
    assert len(done[done.rung == 0]) == 6  # the first rung ran once
    assert len(done[done.rung == 1]) == 3 and best["provenance"]["ladder"]["done"]


def test_the_budget_plans_successive_halving(run_cli, workdir):
    spec = config.load_spec(
        CONFIGS / "quickstart.yaml",
        ["train.schedule=wsd", "search.fidelity={rungs: [0.25, 0.5, 1.0]}", "search.budget=0.5"],
    )
    from mutune import budget

    plan = budget.make_plan(spec)
    assert plan.proxy_steps == 50 and plan.rungs and all(r.steps for r in plan.rungs)
    assert plan.total_flops <= 0.5 * plan.target_flops
    more = budget.make_plan(spec.edit({"search.budget": 1.0}))
    assert more.n_proxy > plan.n_proxy


def test_the_acceptance_command_runs_end_to_end(run_cli, workdir):
    r = run_cli(
        "search",
        CONFIGS / "quickstart.yaml",
        "--smoke",
        "train.schedule=wsd",
        "search.fidelity={rungs: [0.5, 1.0]}",
    )
    assert r.code == 0, r
    assert (workdir / "runs" / "quickstart-smoke" / "target-width64" / "result.yaml").is_file()


@pytest.mark.parametrize(
    "over, key",
    [
        (["search.fidelity={rungs: [0.5, 1.0]}"], "search.fidelity"),  # not WSD
        (["train.schedule=wsd", "search.fidelity={rungs: [0.5, 1.5]}"], "search.fidelity.rungs[1]"),
        (["train.schedule=wsd", "search.fidelity={rungs: [0.5, 0.25, 1.0]}"], "search.fidelity.rungs[1]"),
        (["train.schedule=wsd", "search.fidelity={rungs: [0.5, 0.9]}"], "search.fidelity.rungs[1]"),
        (["train.schedule=wsd", "search.fidelity={rungs: [0.5, 1.0], keep: 1.0}"], "search.fidelity.keep"),
    ],
)
def test_bad_fidelity_is_one_line_naming_the_key(run_cli, workdir, over, key):
    r = run_cli("search", CONFIGS / "quickstart.yaml", "--smoke", *over)
    assert r.code == 2 and r.err.startswith(f"error: {key}:") and len(r.err.splitlines()) == 1, r
    assert not (workdir / "runs").exists()


def test_best_so_far_compares_only_trials_run_at_the_same_rung():
    """A 12-step rung's loss is lower for its length, not its hyperparameters: the progress line's
    best for a rung trial is among that rung's trials, and a proxy trial's among the proxy's."""
    import optuna

    from mutune.ladder import SEED, STEPS
    from mutune.study import enqueue, trial_event

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study()
    for loss in (3.5, 3.3):  # proxy trials
        study.add_trial(optuna.trial.create_trial(params={"lr": 0.01}, distributions=_dist(), value=loss))
    enqueue(study, {"lr": 0.01, STEPS: 12, SEED: 0})
    t = study.ask()
    study.tell(t, 2.9)
    enqueue(study, {"lr": 0.02, STEPS: 12, SEED: 0})
    t = study.ask()
    study.tell(t, 3.0)
    trials = study.get_trials()
    rung_ev = trial_event(study, trials[3], n_trials=4)
    proxy_ev = trial_event(study, trials[1], n_trials=4)
    assert (rung_ev.best_value, rung_ev.best_number) == (2.9, 2)
    assert (proxy_ev.best_value, proxy_ev.best_number) == (3.3, 1)  # not the rung's 2.9
    assert rung_ev.fidelity == {STEPS: 12, SEED: 0} and proxy_ev.fidelity == {}


def _dist():
    import optuna

    return {"lr": optuna.distributions.FloatDistribution(1e-4, 1.0, log=True)}

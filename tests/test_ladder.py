"""The finalists ladder and the budget: halving, the plan's arithmetic, resume, and the CLI.

Most tests drive the real phases (the study loop, enqueued rung trials, retries) with a synthetic
objective instead of training: a loss with a known optimum whose noise shrinks with width, so a
wider rung re-ranks the proxy's finalists in a way the test can predict.
"""

from __future__ import annotations

import math
import os
import socket
from pathlib import Path

import pandas as pd
import pytest
import yaml
from optuna.trial import TrialState

from mutune import budget, config, ladder, phases, search
from mutune import study as study_mod
from mutune import trials as trials_mod
from mutune.config import SpecError
from mutune.phases import Phases
from mutune.study import samplers

from .conftest import CONFIGS, TINY, write_spec

LADDER = {**TINY, "search": {"n_trials": 8, "finalists": 4, "rungs": [2, 4]}}  # widths 32 -> 64 -> 128


def true_loss(lr: float) -> float:
    return (math.log(lr) - math.log(0.01)) ** 2


def noise(lr: float, seed: int) -> float:
    return math.sin(1e4 * lr + 7.0 * seed)


def synthetic_evaluate(trial, spec, events=None):
    """No training: the loss is the distance to lr = 0.01 plus seed noise that shrinks with width."""
    fixed = trial.user_attrs.get("fixed_params") or {}
    width = int(fixed.get(ladder.WIDTH, spec.model.width))
    seed = int(fixed.get(ladder.SEED, spec.seed))
    hp = samplers.suggest(trial, spec.search.space, spec.hparams)
    trial.set_user_attr("flops", float(width * width))
    return TrialState.COMPLETE, true_loss(hp.lr) + 3.0 * noise(hp.lr, seed) * 32 / width


STOP = {"at": None}  # (width, seed) of the run to interrupt once, as a kill would


def interrupting_evaluate(trial, spec, events=None):
    fixed = trial.user_attrs.get("fixed_params") or {}
    here = (fixed.get(ladder.WIDTH), fixed.get(ladder.SEED))
    if STOP["at"] == here:
        STOP["at"] = None
        raise KeyboardInterrupt
    return synthetic_evaluate(trial, spec, events)


SYNTHETIC = study_mod.TrialJob(evaluate=synthetic_evaluate, write_outputs=search.write_search_outputs)
INTERRUPTING = study_mod.TrialJob(evaluate=interrupting_evaluate, write_outputs=search.write_search_outputs)


def flops_cost(spec: config.Spec) -> float:
    return float(spec.model.width**2)


def run(spec: config.Spec, run_dir: Path, job=SYNTHETIC) -> Phases:
    plan = budget.make_plan(spec, cost=flops_cost)
    storage = study_mod.open_storage(str(run_dir / "study.journal"))
    study = study_mod.open_study(spec, storage)
    budget.record_plan(study, spec, plan)
    phases = Phases(spec, plan, run_dir, study, storage, job)
    phases.run()
    search.write_search_outputs(study, spec, run_dir)
    return phases


# ---------------------------------------------------------------------------------------------
# Halving


def test_entrants_halve_and_stop_at_a_lone_entrant():
    assert budget.entrants(4, 2) == [4, 2]
    assert budget.entrants(5, 3) == [5, 3, 2]
    assert budget.entrants(2, 3) == [2]  # one left after the first rung: the rest cannot change it
    assert budget.entrants(1, 2) == []
    assert budget.entrants(8, 1) == [8]


def test_the_ladder_reranks_the_proxy_finalists_and_decides_at_the_widest_rung(tmp_path):
    spec = config.spec_from_dict(LADDER)
    phases = run(spec, tmp_path)
    trials = phases.study.get_trials()
    proxy = [t for t in trials if ladder.WIDTH not in study_mod.trial_params(t)]
    assert len(proxy) == 8 and len(trials) == 8 + 4 + 2
    top4 = sorted(proxy, key=lambda t: (t.value, t.number))[:4]

    def loss_at(t, width):
        return true_loss(t.params["lr"]) + 3.0 * noise(t.params["lr"], 0) * 32 / width

    # rung 1 (width 64): the proxy's top 4; rung 2 (width 128): their better half at width 64
    kept = sorted(top4, key=lambda t: loss_at(t, 64))[:2]
    winner = min(kept, key=lambda t: loss_at(t, 128))
    doc = yaml.safe_load((tmp_path / "best.yaml").read_text())
    lad = doc["provenance"]["ladder"]
    assert [e["trial"] for e in lad["rungs"][0]["entrants"]] == [t.number for t in top4]
    assert lad["rungs"][0]["kept"] == [t.number for t in sorted(kept, key=lambda t: loss_at(t, 64))]
    assert lad["done"] and lad["winner"] == winner.number and lad["decided_at_width"] == 128
    assert doc["provenance"]["trial_number"] == winner.number
    assert doc["hparams"]["lr"] == winner.params["lr"]
    # with this objective the proxy's best (noise) loses at the wider rungs to the true best: the ladder
    # changes the pick
    assert winner.number != top4[0].number
    assert true_loss(winner.params["lr"]) == min(true_loss(t.params["lr"]) for t in top4)


def test_ties_go_to_the_better_proxy_rank():
    entries = [ladder.Entry(7, {}, 1.0, [2.0], [10]), ladder.Entry(3, {}, 1.5, [2.0], [11])]
    assert [e.proxy_trial for e in ladder.RungState(64, (0,), entries).ranked()] == [7, 3]


def test_seeds_are_averaged_and_a_proxy_width_rung_reuses_the_proxy_run(tmp_path):
    spec = config.spec_from_dict(LADDER, ["search.rungs=[1]", "search.rung_seeds=3", "search.finalists=3"])
    plan = budget.make_plan(spec, cost=flops_cost)
    assert plan.ladder_runs == 3 * 2  # seeds 1 and 2 are new; seed 0 is the proxy trial itself
    run(spec, tmp_path)
    df = pd.read_csv(tmp_path / "trials.csv")
    assert len(df) == 8 + 6 and set(df["rung"]) == {0, 1}
    assert sorted(df[df.rung == 1]["seed"].tolist()) == [1, 1, 1, 2, 2, 2]
    assert (df["width"] == 32).all()
    lad = yaml.safe_load((tmp_path / "best.yaml").read_text())["provenance"]["ladder"]
    for e in lad["rungs"][0]["entrants"]:
        assert e["losses"][0] == e["proxy_loss"] and e["mean"] == pytest.approx(sum(e["losses"]) / 3)


def test_trials_csv_shows_rung_width_and_seed_and_its_flops_are_the_search_flops(tmp_path):
    run(config.spec_from_dict(LADDER), tmp_path)
    df = pd.read_csv(tmp_path / "trials.csv")
    assert df["rung"].tolist() == [0] * 8 + [1] * 4 + [2] * 2
    assert df["width"].tolist() == [32] * 8 + [64] * 4 + [128] * 2
    assert (df["seed"] == 0).all()
    prov = yaml.safe_load((tmp_path / "best.yaml").read_text())["provenance"]
    assert prov["search_flops"] == df["flops"].sum() == 8 * 32**2 + 4 * 64**2 + 2 * 128**2
    assert prov["plan"]["planned_flops"] == prov["search_flops"]


# ---------------------------------------------------------------------------------------------
# Resume


def test_an_interrupted_ladder_resumes_without_repeating_a_run(tmp_path):
    spec = config.spec_from_dict(LADDER)
    run(spec, tmp_path / "reference")
    STOP["at"] = (128, 0)  # killed in the last rung
    with pytest.raises(KeyboardInterrupt):
        run(spec, tmp_path / "killed", job=INTERRUPTING)
    phases = run(spec, tmp_path / "killed", job=INTERRUPTING)  # the same call again
    trials = phases.study.get_trials()
    finished = [study_mod.trial_params(t) for t in trials if study_mod.is_finished(t)]
    assert len(finished) == 14 and all(finished.count(p) == 1 for p in finished)
    killed = [t for t in trials if t.state == TrialState.FAIL]
    assert len(killed) == 1 and killed[0].user_attrs["fail_reason"] == "interrupted"
    retry = [t for t in trials if t.user_attrs.get("retry_of") == killed[0].number]
    assert len(retry) == 1 and study_mod.trial_params(retry[0]) == study_mod.trial_params(killed[0])
    best = [yaml.safe_load((tmp_path / d / "best.yaml").read_text()) for d in ("reference", "killed")]
    assert best[0]["hparams"] == best[1]["hparams"]
    rungs = [b["provenance"]["ladder"]["rungs"] for b in best]
    summary = [[(r["kept"], [(e["trial"], e["mean"]) for e in r["entrants"]]) for r in rs] for rs in rungs]
    assert summary[0] == summary[1]


def test_parallel_workers_run_each_ladder_run_once(tmp_path):
    spec = config.spec_from_dict(LADDER, ["search.rungs=[2]", "search.rung_seeds=2"])
    plan = budget.make_plan(spec, cost=flops_cost)
    storage = study_mod.open_storage(str(tmp_path / "study.journal"))
    study = study_mod.open_study(spec, storage)
    budget.record_plan(study, spec, plan)
    assert Phases(spec, plan, tmp_path, study, storage, SYNTHETIC, workers=2).run()
    # (as search() does once its workers are done: two workers' last rewrites of trials.csv may land
    # in either order, so the last one is not a snapshot of the finished study)
    df = trials_mod.write_trials_csv(study, tmp_path)
    assert len(df) == plan.n_trials == 8 + 4 * 2 and (df["state"] == "COMPLETE").all()
    assert not df.duplicated(["lr", "width", "seed"]).any()


def test_enqueued_proxy_configurations_are_run_not_waited_for(tmp_path):
    """Fixed configurations queued before the search (as the benchmark does) are its proxy trials."""
    spec = config.spec_from_dict(TINY, ["search.n_trials=2"])
    storage = study_mod.open_storage(str(tmp_path / "study.journal"))
    study = study_mod.open_study(spec, storage)
    wanted = [{**{n: 1.0 for n in spec.search.space}, "lr": lr, "init_std": 0.05} for lr in (0.003, 0.03)]
    assert phases.enqueue_missing(study, tmp_path, wanted) == 2
    assert phases.enqueue_missing(study, tmp_path, wanted) == 0  # already queued
    plan = budget.make_plan(spec, cost=flops_cost)
    Phases(spec, plan, tmp_path, study, storage, SYNTHETIC).run()
    assert sorted(t.params["lr"] for t in study.get_trials()) == [0.003, 0.03]


def test_a_proxy_trial_running_in_another_process_is_not_waited_for(tmp_path):
    """Another live search of the study runs the ladder once its trial ends; this one does not wait
    (or start the ladder on a partial ranking), and running again afterwards completes the ladder."""
    spec = config.spec_from_dict(LADDER, ["search.finalists=2", "search.rungs=[2]"])
    plan = budget.make_plan(spec, cost=flops_cost)
    storage = study_mod.open_storage(str(tmp_path / "study.journal"))
    study = study_mod.open_study(spec, storage)
    other = study.ask()  # as another search on this machine would, still running
    other.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
    phases = Phases(spec, plan, tmp_path, study, storage, SYNTHETIC)
    assert phases.run() is False
    states = [t.state for t in study.get_trials()]
    assert states.count(TrialState.COMPLETE) == 7 and states.count(TrialState.RUNNING) == 1
    assert all(ladder.WIDTH not in study_mod.trial_params(t) for t in study.get_trials())
    state, value = synthetic_evaluate(other, spec)  # the other search finishes its trial
    study.tell(other, value, state=state)
    assert phases.run() is True
    df = trials_mod.trials_table(study)
    assert len(df) == 8 + 2 and (df["state"] == "COMPLETE").all()


def test_a_bigger_ladder_on_resume_reuses_the_runs_it_has(tmp_path):
    run(config.spec_from_dict(LADDER, ["search.finalists=2"]), tmp_path)
    assert len(pd.read_csv(tmp_path / "trials.csv")) == 8 + 2  # 2 at width 64; one left for 128: dropped
    run(config.spec_from_dict(LADDER), tmp_path)  # 4 finalists: two more at 64, then 2 at 128
    df = pd.read_csv(tmp_path / "trials.csv")
    assert len(df) == 8 + 4 + 2
    assert not df.duplicated(["lr", "width", "seed"]).any()


# ---------------------------------------------------------------------------------------------
# The budget


def budget_spec(*overrides: str) -> config.Spec:
    """Proxy 32, rungs 64 and 128, target 256: runs cost width^2, so 1, 4, 16 and 64 units."""
    return config.spec_from_dict(
        {**TINY, "search": {}, "target": {"width": 256}}, ["search.rungs=[2,4]", *overrides]
    )


def test_budget_buys_proxy_trials_and_no_ladder_unless_asked():
    c0, target = 32**2, 256**2
    plan = budget.make_plan(budget_spec("search.budget=0.5"), cost=flops_cost)  # 32 proxy runs' worth
    assert plan.finalists == 0 and plan.rungs == () and plan.ladder_flops == 0
    assert plan.n_proxy == (0.5 * target) // c0 == 32 == plan.n_trials
    assert plan.total_flops <= plan.budget_flops == 0.5 * target


def test_budget_with_explicit_finalists_and_the_remainder_in_proxy_trials():
    plan = budget.make_plan(budget_spec("search.budget=2", "search.finalists=4"), cost=flops_cost)
    ladder_cost = 4 * 64**2 + 2 * 128**2
    assert plan.ladder_flops == ladder_cost
    assert plan.n_proxy == math.floor((2 * 256**2 - ladder_cost) / 32**2) == 80
    assert plan.total_flops <= plan.budget_flops


def test_budget_too_small_for_one_proxy_run_or_for_the_ladder_names_the_budget():
    with pytest.raises(SpecError) as e:
        budget.make_plan(budget_spec("search.budget=0.01"), cost=flops_cost)  # 0.64 proxy runs
    assert e.value.key == "search.budget" and "0.0156" in e.value.message
    with pytest.raises(SpecError) as e:
        budget.make_plan(budget_spec("search.budget=0.3", "search.finalists=4"), cost=flops_cost)
    assert e.value.key == "search.budget" and "search.finalists" in e.value.message


def test_budget_without_a_ladder_and_n_trials_without_a_budget():
    plan = budget.make_plan(budget_spec("search.budget=0.05", "search.rungs=[]"), cost=flops_cost)
    assert plan.finalists == 0 and plan.n_proxy == 3  # 3.2 proxy runs' worth, rounded down
    plan = budget.make_plan(budget_spec(), cost=flops_cost)
    assert plan.n_proxy == config.DEFAULT_N_TRIALS and plan.finalists == 0 and plan.budget is None
    plan = budget.make_plan(budget_spec("search.n_trials=5", "search.finalists=3"), cost=flops_cost)
    assert (plan.n_proxy, plan.finalists, [r.entrants for r in plan.rungs]) == (5, 3, [3, 2])
    with pytest.raises(SpecError) as e:
        budget.make_plan(budget_spec("search.n_trials=2", "search.finalists=3"), cost=flops_cost)
    assert e.value.key == "search.finalists"


def test_a_budgeted_search_stays_within_its_plan(tmp_path):
    spec = budget_spec("search.budget=0.5")
    phases = run(spec, tmp_path)
    prov = yaml.safe_load((tmp_path / "best.yaml").read_text())["provenance"]
    assert len(phases.study.get_trials()) == phases.plan.n_trials == prov["plan"]["n_trials"]
    assert prov["search_flops"] == prov["plan"]["planned_flops"] <= prov["plan"]["budget_flops"]
    assert prov["plan"]["budget"] == 0.5


# ---------------------------------------------------------------------------------------------
# Bad input and the CLI


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        (["search.budget=0", "target.width=64"], "search.budget"),
        (["search.budget=-1", "target.width=64"], "search.budget"),
        (["search.finalists=0"], "search.finalists"),
        (["search.finalists=2", "search.rungs=[0.5]"], "search.rungs[0]"),
        (["search.budget=0.5", "search.n_trials=4", "target.width=64"], "search.budget"),
        (["search.budget=0.5", "search.n_trials=null"], "search.budget"),  # no target to be a fraction of
        (["search.rungs=[4,2]", "search.finalists=2"], "search.rungs[1]"),
        (["search.rungs=[1.3]", "search.finalists=2"], "search.rungs[0]"),  # 41.6 wide
        (["search.finalists=2", "search.rungs=[8]", "target.width=64"], "search.rungs"),
    ],
)
def test_bad_ladder_and_budget_input_is_one_line_naming_the_key(run_cli, tiny_spec, overrides, key):
    r = run_cli("search", tiny_spec, *overrides)
    assert r.code == 2, r
    lines = [line for line in r.err.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"error: {key}:"), r.err
    assert "search.n_trials" in r.err if "search.n_trials=4" in overrides else True
    assert "Traceback" not in r.err


def test_cli_search_with_finalists_writes_the_ladders_winner(run_cli, workdir):
    r = run_cli("search", CONFIGS / "quickstart.yaml", "--smoke", "search.finalists=2")
    assert r.code == 0, r
    run_dir = workdir / "runs" / "quickstart-smoke"
    df = pd.read_csv(run_dir / "trials.csv")
    doc = yaml.safe_load((run_dir / "best.yaml").read_text())
    prov = doc["provenance"]
    rung = df[df["rung"] == 1]
    assert len(rung) == 2 and (rung["width"] == 64).all() and len(df) == 3 + 2
    best_rung = rung.sort_values("loss").iloc[0]
    assert doc["hparams"]["lr"] == best_rung["lr"]  # the winner is the ladder's
    assert prov["ladder"]["done"] and prov["ladder"]["decided_at_width"] == 64
    assert prov["search_flops"] == pytest.approx(df["flops"].sum(), rel=1e-12)
    assert prov["search_flops"] > df[df["rung"] == 0]["flops"].sum()  # the ladder is counted
    assert (run_dir / "target-width64" / "result.yaml").is_file()


def test_cli_search_with_a_budget_prints_its_plan_and_stays_within_it(run_cli, workdir):
    r = run_cli("search", CONFIGS / "quickstart.yaml", "--smoke", "search.budget=0.5", "--no-transfer")
    assert r.code == 0, r
    run_dir = workdir / "runs" / "quickstart-smoke"
    prov = yaml.safe_load((run_dir / "best.yaml").read_text())["provenance"]
    plan = prov["plan"]
    assert plan["budget"] == 0.5 and plan["n_proxy"] >= 1
    assert prov["search_flops"] <= plan["planned_flops"] <= plan["budget_flops"]
    assert plan["budget_flops"] == pytest.approx(0.5 * plan["target_flops"])
    assert len(pd.read_csv(run_dir / "trials.csv")) == plan["n_trials"]
    written = yaml.safe_load((run_dir / "search_plan.yaml").read_text())  # the plan, before any trial ran
    assert {k: written[k] for k in plan} == plan
    assert written["planned_flops"] <= written["budget_flops"]
    assert f"plan: {plan['n_proxy']} proxy trials" in r.err  # and printed (plain log lines on stderr)


def test_configs_written_with_a_budget_load_again(tmp_path):
    spec = config.spec_from_dict(TINY, ["search.n_trials=null", "search.budget=0.2", "target.width=64"])
    path = write_spec(tmp_path / "b.yaml", spec.to_dict())
    assert config.load_spec(path).search.budget == 0.2

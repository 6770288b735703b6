"""Search logic driven without training where possible: sampler, counting, orphans, spec guard."""

from __future__ import annotations

import math
import socket
import subprocess
import sys

import optuna
import pytest
from optuna.trial import TrialState

from mutune import config
from mutune import study as study_mod
from mutune.config import SpecError
from mutune.study import samplers

from .conftest import TINY


def draws(seed: int, n: int, storage=None, name="s") -> list[dict]:
    sampler = samplers.SeededRandomSampler(seed)
    study = optuna.create_study(sampler=sampler, storage=storage, study_name=name, load_if_exists=True)
    out = []
    for _ in range(n):
        t = study.ask()
        out.append(
            {
                "lr": t.suggest_float("lr", 1e-4, 1e-1, log=True),
                "a": t.suggest_float("a", 0.0, 1.0),
                "n": t.suggest_int("n", 1, 8),
                "c": t.suggest_categorical("c", ["x", "y", "z"]),
            }
        )
        study.tell(t, 1.0)
    return out


def test_seeded_random_sampler_is_reproducible_and_in_range():
    a, b = draws(0, 20), draws(0, 20)
    assert a == b
    assert draws(1, 20) != a
    assert len({d["lr"] for d in a}) == 20  # no two trials alike
    assert all(1e-4 <= d["lr"] <= 1e-1 and 0 <= d["a"] <= 1 and 1 <= d["n"] <= 8 for d in a)
    assert {d["c"] for d in a} == {"x", "y", "z"}


def test_resumed_study_continues_the_sequence_without_repeats(tmp_path):
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(tmp_path / "j.log"))
    )
    first = draws(0, 5, storage)
    second = draws(0, 5, storage)  # a new process would build a fresh sampler like this
    assert first + second == draws(0, 10)


def test_finished_counts_diverged_but_not_orphaned():
    study = optuna.create_study()
    for state, attrs in [
        (TrialState.COMPLETE, {}),
        (TrialState.PRUNED, {}),
        (TrialState.FAIL, {"diverged": True}),
        (TrialState.FAIL, {"fail_reason": "orphaned"}),
    ]:
        t = study.ask()
        for k, v in attrs.items():
            t.set_user_attr(k, v)
        study.tell(t, 1.0 if state == TrialState.COMPLETE else None, state=state)
    study.ask()  # one running
    assert study_mod.count(study) == (3, 1)


def dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_reap_orphans_fails_only_dead_workers(tmp_path):
    storage = study_mod.open_storage(str(tmp_path / "study.journal"))
    spec = config.spec_from_dict(TINY)
    study = study_mod.open_study(spec, storage)
    host = socket.gethostname()
    orphan, alive, elsewhere = study.ask(), study.ask(), study.ask()
    orphan.set_user_attr("worker", f"{host}:{dead_pid()}")
    alive.set_user_attr("worker", study_mod.loop._worker_id())
    elsewhere.set_user_attr("worker", "some-other-host:1")
    assert study_mod.reap_orphans(study, storage) == [orphan.number]
    states = {t.number: t.state for t in study.get_trials()}
    assert states == {
        orphan.number: TrialState.FAIL,
        alive.number: TrialState.RUNNING,
        elsewhere.number: TrialState.RUNNING,
    }
    assert "orphaned" in study.get_trials()[orphan.number].user_attrs["fail_reason"]


def test_an_untagged_trial_is_reaped_at_once_only_under_the_budget_lock(tmp_path):
    """A worker that died between asking for a trial and tagging it (a kill, a full disk tearing the
    tag's record) leaves an untagged RUNNING trial; a resumed search must not count it as running."""
    storage = study_mod.open_storage(str(tmp_path / "study.journal"))
    study = study_mod.open_study(config.spec_from_dict(TINY), storage)
    untagged = study.ask()
    assert study_mod.reap_orphans(study, storage) == []  # may be a live worker about to tag it
    assert study_mod.reap_orphans(study, storage, locked=True) == [untagged.number]
    assert study.get_trials()[untagged.number].state == TrialState.FAIL
    # a worker on another machine shares the journal (Slurm): its untagged trial may be live
    elsewhere, untagged = study.ask(), study.ask()
    elsewhere.set_user_attr("worker", "some-other-host:1")
    assert study_mod.reap_orphans(study, storage, locked=True) == []


def test_changed_spec_is_refused_but_budget_may_change(tmp_path):
    storage = study_mod.open_storage(str(tmp_path / "study.journal"))
    spec = config.spec_from_dict(TINY)
    study_mod.open_study(spec, storage)
    study_mod.open_study(config.spec_from_dict(TINY, ["search.n_trials=50", "target.width=64"]), storage)
    with pytest.raises(SpecError) as e:
        study_mod.open_study(config.spec_from_dict(TINY, ["train.steps=9"]), storage)
    assert e.value.key == "train.steps"


def test_a_study_opens_after_the_schema_gains_a_null_key(tmp_path):
    """A study recorded before a key with a null default existed (an upgrade) is the same spec; it
    had raised IndexError, as no key differed though the recorded dicts did."""
    storage = study_mod.open_storage(str(tmp_path / "study.journal"))
    spec = config.spec_from_dict(TINY)
    study = study_mod.open_study(spec, storage)
    old = {k: v for k, v in study.user_attrs["spec"].items() if v is not None or k != "data.path"}
    assert "data.path" not in old and study.user_attrs["spec"]["data.path"] is None
    study.set_user_attr("spec", old)
    study_mod.open_study(spec, storage)  # opens
    study.set_user_attr("spec", {**old, "data.path": "elsewhere"})
    with pytest.raises(SpecError) as e:
        study_mod.open_study(spec, storage)
    assert e.value.key == "data.path"


def test_suggest_fills_unsearched_hparams_from_defaults():
    spec = config.spec_from_dict(TINY, ["hparams.weight_decay=0.3"])
    trial = optuna.trial.FixedTrial(
        {"lr": 0.02, "init_std": 0.1, "alpha_in": 1.0, "alpha_out": 2.0, "alpha_attn": 1.0}
    )
    hp = samplers.suggest(trial, spec.search.space, spec.hparams)
    assert hp.lr == 0.02 and hp.alpha_out == 2.0 and hp.weight_decay == 0.3


def sobol_draws(seed: int, n: int, storage=None, name="q") -> list[dict]:
    sampler = samplers.SeededSobolSampler(["lr", "a", "c"], seed)
    study = optuna.create_study(sampler=sampler, storage=storage, study_name=name, load_if_exists=True)
    out = []
    for _ in range(n):
        t = study.ask()
        out.append(
            {
                "lr": t.suggest_float("lr", 1e-4, 1e-1, log=True),
                "a": t.suggest_float("a", 0.0, 1.0),
                "c": t.suggest_categorical("c", ["x", "y"]),
            }
        )
        study.tell(t, 1.0)
    return out


def test_sobol_sampler_is_keyed_on_the_trial_number_and_balanced(tmp_path):
    a = sobol_draws(0, 16)
    assert a == sobol_draws(0, 16) and a != sobol_draws(1, 16)
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(tmp_path / "q.log"))
    )
    assert sobol_draws(0, 8, storage) + sobol_draws(0, 8, storage) == a  # a resume continues the rows
    # 16 Sobol points: exactly one in each sixteenth of every coordinate (random draws rarely are)
    assert sorted(int(d["a"] * 16) for d in a) == list(range(16))
    logs = [(math.log(d["lr"]) - math.log(1e-4)) / (math.log(1e-1) - math.log(1e-4)) for d in a]
    assert sorted(int(u * 16) for u in logs) == list(range(16))
    assert [d["c"] for d in a].count("x") == 8
    random = draws(0, 16)
    assert sorted(int(d["a"] * 16) for d in random) != list(range(16))


def test_samplers_are_chosen_by_name():
    for name, cls in (("random", samplers.SeededRandomSampler), ("sobol", samplers.SeededSobolSampler)):
        spec = config.spec_from_dict(TINY, [f"search.sampler={name}"])
        assert isinstance(samplers.make_sampler(spec), cls)
    spec = config.spec_from_dict(TINY, ["search.sampler=tpe"])
    assert isinstance(samplers.make_sampler(spec), optuna.samplers.TPESampler)

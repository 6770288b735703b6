"""Opening a study, and the spec guard: a study's finished trials stay comparable, so a study run with
another spec (in what decides a trial's outcome) is refused, naming the key that changed."""

from __future__ import annotations

from typing import Any

import optuna

from ..config import Spec, SpecError
from ..config.meaning import STUDY_EFFECTS, flatten, keys_where
from ..errors import arg
from .samplers import make_pruner, make_sampler


def trial_relevant(spec: Spec) -> dict[str, Any]:
    """The part of the spec that determines a trial's outcome, by dotted key: what trials train and
    measure, and which configurations the search tries (:data:`mutune.config.meaning.STUDY_EFFECTS`).
    Trial counts, the ladder, the laws, the target, the storage and how to run may change between
    invocations on one study without making its finished trials incomparable."""
    return flatten(spec.to_dict(), keys_where(Spec, STUDY_EFFECTS))


def open_study(spec: Spec, storage: optuna.storages.BaseStorage, worker: int = 0) -> optuna.Study:
    """Create or load the study, refusing one that was run with a different spec."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    name = spec.search.study_name or spec.name
    summaries = {s.study_name: s for s in optuna.get_all_study_summaries(storage)}
    n_existing = summaries[name].n_trials if name in summaries else 0
    sampler, pruner = make_sampler(spec, worker, n_existing), make_pruner(spec)
    if name in summaries:  # loaded, not created again: a journal would record another creation
        study = optuna.load_study(study_name=name, storage=storage, sampler=sampler, pruner=pruner)
    else:
        study = optuna.create_study(
            study_name=name,
            storage=storage,
            direction="minimize",
            load_if_exists=True,  # another worker may create it at the same moment
            sampler=sampler,
            pruner=pruner,
        )
    relevant = trial_relevant(spec)
    recorded = study.user_attrs.get("spec")
    if recorded is None:
        study.set_user_attr("spec", relevant)
        study.set_user_attr("spec_hash", spec.hash())
    elif recorded != relevant:
        # a key absent on one side and null on the other is no change: the schema gained (or lost) a key
        # whose default is null since the study was made, and a study must open across that upgrade
        changed = sorted(k for k in set(recorded) | set(relevant) if recorded.get(k) != relevant.get(k))
        if not changed:
            return study
        raise SpecError(
            changed[0],
            f"study '{name}' was run with a different spec (changed: "
            f"{', '.join(changed)}); use another {arg('run_dir')} or name, or revert the change",
        )
    return study

"""How the search draws hyperparameters: samplers, pruners, and the space turned into ``HParams``.

Random search is the default (TP5's choice). Optuna's ``RandomSampler(seed)`` replays the same
sequence in every process, so a resumed study or a second worker would repeat configurations;
:class:`SeededRandomSampler` keys each draw on the trial number instead. TPE is offered too, its
seed offset per worker and per resume so that they draw differently.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import asdict
from typing import Any

import numpy as np
import optuna
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import FrozenTrial

from . import config
from .config import HParams, ParamSpace, Spec


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


def make_sampler(spec: Spec, worker: int = 0, n_existing: int = 0) -> optuna.samplers.BaseSampler:
    if spec.search.sampler == "random":
        return SeededRandomSampler(spec.search.seed)
    # TPE conditions on the history; offset the seed so workers and resumes draw differently.
    return optuna.samplers.TPESampler(seed=spec.search.seed + 1000 * worker + n_existing)


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

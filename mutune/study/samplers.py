"""How the search draws hyperparameters: samplers, pruners, and the space turned into ``HParams``.

Random search is the default (TP5's choice). Optuna's ``RandomSampler(seed)`` replays the same
sequence in every process, so a resumed study or a second worker would repeat configurations;
:class:`SeededRandomSampler` keys each draw on the trial's *draw index* instead. Quasi-random search
(:class:`SeededSobolSampler`) does the same with the rows of a scrambled Sobol sequence. TPE is
offered too, its seed offset per worker and per resume so that they draw differently (it conditions
on the history, so a resumed TPE search does not replay an uninterrupted one).

The draw index (:func:`draw_index`) is the k of "the k-th configuration drawn", recorded on the
trial (``draw``) when the study loop creates it, under the budget lock. It is the trial number in an
uninterrupted search, but not after a kill: a killed trial's retry is a new trial (a new number)
carrying the same configuration and the same draw, so the next sampled trial still draws point
k + 1, and the finished search tries exactly the configurations of an uninterrupted one.

Why not Optuna's ``QMCSampler``: it needs scipy (about 113 MB, not otherwise a dependency), it is
still experimental, its first trial is drawn by a random sampler, and its position in the sequence
is a counter in the study's storage that is read and written without a lock, so parallel workers
draw the same point: 4 processes x 16 trials on one journal gave 44 distinct points out of 64
(measured with Optuna 5.0). Keying row k on trial k, as the random sampler does, needs no storage
and no coordination, and torch (already a dependency) ships the scrambled Sobol engine.
"""

from __future__ import annotations

import functools
import math
import zlib
from dataclasses import asdict
from typing import Any

import numpy as np
import optuna
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import FrozenTrial

from .. import config
from ..config import HParams, ParamSpace, Spec


def draw_index(trial: FrozenTrial) -> int:
    """Which configuration of the sequence ``trial`` takes: its recorded ``draw`` (module doc), else
    its number (a trial of a study from before draws were recorded, or created outside the loop)."""
    return int(trial.user_attrs.get("draw", trial.number))


class SeededRandomSampler(optuna.samplers.BaseSampler):
    """Random search in which draw k's value of parameter p depends only on (seed, k, p).

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
        rng = np.random.default_rng([self.seed, draw_index(trial), zlib.crc32(param_name.encode())])
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


@functools.lru_cache(maxsize=1024)
def sobol_row(seed: int, dim: int, k: int) -> tuple[float, ...]:
    """Row ``k`` of the scrambled Sobol sequence in ``dim`` dimensions (the same in every process)."""
    import torch  # here, so that importing the study machinery does not load torch

    engine = torch.quasirandom.SobolEngine(dim, scramble=True, seed=seed)
    if k:
        engine.fast_forward(k)
    return tuple(engine.draw(1, dtype=torch.float64)[0].tolist())


class SeededSobolSampler(optuna.samplers.BaseSampler):
    """Quasi-random search: draw k takes row k of a scrambled Sobol sequence, one coordinate per
    searched parameter (its place among the sorted names), so the first 2^m trials cover the space
    more evenly than 2^m random draws. Scrambled (seeded), so row 0 is not the corner of the box.

    Sobol points are balanced in prefixes of 2^m: budgets of 8, 16, 32 trials use them best. A
    parameter outside ``names`` (none in a mutune search) is drawn like the random sampler does.
    """

    def __init__(self, names: list[str], seed: int = 0):
        self.dims = {n: i for i, n in enumerate(sorted(names))}
        self.seed = seed
        self.fallback = SeededRandomSampler(seed)

    def infer_relative_search_space(self, study, trial):  # noqa: D102
        return {}

    def sample_relative(self, study, trial, search_space):  # noqa: D102
        return {}

    def sample_independent(self, study, trial: FrozenTrial, param_name: str, dist) -> Any:
        if param_name not in self.dims:
            return self.fallback.sample_independent(study, trial, param_name, dist)
        u = sobol_row(self.seed, len(self.dims), draw_index(trial))[self.dims[param_name]]
        return from_unit(u, dist)


def from_unit(u: float, dist: Any) -> Any:
    """The value at quantile ``u`` in [0, 1) of ``dist`` (log-uniform on a log scale), like the
    random sampler's draws."""
    if isinstance(dist, CategoricalDistribution):
        return dist.choices[min(int(u * len(dist.choices)), len(dist.choices) - 1)]
    if isinstance(dist, FloatDistribution):
        lo, hi = (math.log(dist.low), math.log(dist.high)) if dist.log else (dist.low, dist.high)
        value = lo + u * (hi - lo)
        value = math.exp(value) if dist.log else value
        if dist.step is not None:
            value = dist.low + round((value - dist.low) / dist.step) * dist.step
        return float(min(max(value, dist.low), dist.high))
    if isinstance(dist, IntDistribution):
        if dist.log:  # as the random sampler: [low - 0.5, high + 0.5] on a log scale, rounded
            lo, hi = math.log(dist.low - 0.5), math.log(dist.high + 0.5)
            value = round(math.exp(lo + u * (hi - lo)))
        else:
            value = dist.low + min(int(u * (dist.high - dist.low + 1)), dist.high - dist.low)
        value = dist.low + ((value - dist.low) // dist.step) * dist.step
        return int(min(max(value, dist.low), dist.high))
    raise TypeError(f"unsupported distribution {dist!r}")


def make_sampler(spec: Spec, worker: int = 0, n_existing: int = 0) -> optuna.samplers.BaseSampler:
    if spec.search.sampler == "random":
        return SeededRandomSampler(spec.search.seed)
    if spec.search.sampler == "sobol":
        return SeededSobolSampler(list(spec.search.space), spec.search.seed)
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

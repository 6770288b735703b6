"""The run spec's schema: typed sections whose fields carry their doc, range and meaning.

Each field is declared with :func:`~.meaning.key` (its meaning across a transfer and what it
changes in a run; the key lists the rest of mutune needs are derived from these). The model
section is its family's (:mod:`.families`). :meth:`Spec.edit` and :func:`from_dict` validate
(:mod:`.validate`); loading a file, which also checks the spec's target, is :mod:`.load`.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
from dataclasses import dataclass
from typing import Any, Literal

from ..errors import SpecError
from ..mup.optimizers import OPTIMIZER_NAMES, OPTIMIZERS
from ..mup.parametrizations import PARAMETRIZATIONS
from .corpus import read_meta
from .families import FAMILIES, ModelSpec
from .meaning import key, section
from .typed import (
    BETA,
    FRACTION,
    NON_NEGATIVE,
    POSITIVE,
    Range,
    apply_overrides,
    build,
    coerce,
    field_type,
    join_key,
    parse_override,
    set_dotted,
    unknown_key,
)
from .validate import validate


def _choices(entries: Any) -> str:
    """'a (doc), b (doc) or c (doc)': a registry's names for a field's doc line."""
    items = [f"{e.name} ({e.doc})" for e in entries]
    return ", ".join(items[:-1]) + f" or {items[-1]}" if len(items) > 1 else items[0]


APPROX_DATA = "a different corpus: the proxy's optimum was found on other data"


@dataclass
class DataSpec:
    corpus: Literal["stdlib", "text", "tokens"] = key(
        "stdlib",
        "stdlib (Python's own source, built in), text (a file or folder, bytes) or tokens (.bin)",
        across="approximate",
        note=APPROX_DATA,
    )
    path: str | None = key(
        None,
        "text: a file or folder; tokens: a uint16 .bin file or a folder with train.bin/val.bin (`mutune data "
        "prepare` writes one)",
        across="approximate",
        note=APPROX_DATA,
    )
    vocab_size: int | None = key(
        None,
        "tokens: vocabulary size (byte corpora use 256); default: the tokenizer's, from a folder `mutune data "
        "prepare` wrote; module: the number of classes (default: the largest label + 1)",
        POSITIVE,
        across="approximate",
        note=APPROX_DATA,
    )
    module: str | None = key(
        None,
        "'package.module:function' returning (train, val), each an iterable of (x, y): input tensors and "
        "class labels, one example or one batch at a time, for a factory model with model.task: "
        "classification (imported, never evaluated; replaces data.corpus)",
        across="approximate",
        note=APPROX_DATA,
    )
    val_fraction: float = key(
        0.1,
        "fraction of the corpus held out for validation (ignored with val.bin)",
        FRACTION,
        across="approximate",
        note=APPROX_DATA,
    )


@dataclass
class TrainSpec:
    steps: int = key(
        200,
        "optimizer steps per run",
        POSITIVE,
        across="law",
        note="training horizon: the optimal LR falls with it (Bjorck et al. 2025); fit the law on the "
        "proxy with `mutune laws RUN_DIR --steps 0.25,0.5,1` and the transfer applies it",
    )
    batch_size: int = key(
        16,
        "sequences per step",
        POSITIVE,
        across="law",
        note="batch size: transfers roughly (TP5 Fig. 19) if both are above the critical batch; fit "
        "the law on the proxy with `mutune laws RUN_DIR --batch-size 0.5,1,2` and the transfer applies it",
    )
    optimizer: Literal[OPTIMIZER_NAMES] = key(
        "adamw",
        _choices(OPTIMIZERS.values()),
        across="fixed",
        note="the hyperparameters were tuned for the proxy's optimizer, under its width rules",
    )
    schedule: Literal["cosine", "linear", "constant", "wsd"] = key(
        "cosine",
        "LR shape after warmup: cosine, linear or constant over the run, or wsd (warmup-stable-decay: "
        "constant, then a cooldown over the last train.decay_fraction of the steps)",
        across="approximate",
        note="the LR schedule's shape was tuned with the rest",
    )
    warmup_steps: int = key(
        20,
        "linear warmup steps",
        NON_NEGATIVE,
        across="approximate",
        note="warmup: a ratio tuned at small width sometimes needs lengthening at large width",
    )
    min_lr_ratio: float = key(
        0.1,
        "final LR / peak LR for cosine and linear decay",
        Range(0, 1),
        across="approximate",
        note="the LR schedule's shape was tuned with the rest",
    )
    decay_fraction: float = key(
        0.2,
        "wsd: the cooldown's share of the steps (20%, with the 1-sqrt shape, matched cosine in Hägele et "
        "al. 2024, arXiv 2405.18392)",
        Range(0, 1, low_open=True, high_open=True),
        across="approximate",
        note="the LR schedule's shape was tuned with the rest",
    )
    decay_shape: Literal["1-sqrt", "linear"] = key(
        "1-sqrt",
        "wsd: the cooldown's shape, from 1 to train.min_lr_ratio: 1-sqrt (Hägele et al. 2024) or linear",
        across="approximate",
        note="the LR schedule's shape was tuned with the rest",
    )
    branches: list[float] = key(
        [],
        "wsd: cooldown branches at these fractions of the steps (increasing, in (0, 1]): the run saves its "
        "stable state there, trains that horizon's cooldown, records its loss and goes on, so one run "
        "gives the loss of a run of each length",
        across="free",
        effect="measure",
    )
    grad_clip: float = key(
        1.0,
        "max global grad norm, each gradient measured as at the base width (so constant in width); 0 disables",
        NON_NEGATIVE,
        across="approximate",
        note="the clipping threshold was tuned with the rest (it is constant in width)",
    )
    eps: float = key(
        1e-8,
        "Adam epsilon at the base width (µP scales it by 1/fan_in multiplier on hidden weights)",
        NON_NEGATIVE,
        across="approximate",
        note="Adam's ε at the base width was tuned with the rest",
    )
    max_loss: float | None = key(
        None,
        "a loss above this ends the run as diverged, like NaN/inf; default 10·ln(vocab), 10x a uniform guess",
        POSITIVE,
        across="free",
    )
    eval_every: int = key(
        50, "steps between validation evaluations", POSITIVE, across="free", effect="measure"
    )
    eval_batches: int = key(8, "validation batches per evaluation", POSITIVE, across="free", effect="measure")
    device: Literal["auto", "cpu", "cuda", "mps"] = key(
        "auto", "auto picks cuda, then mps, then cpu", across="free", effect="none"
    )
    threads: int | None = key(
        None,
        "torch CPU threads per training process; default $OMP_NUM_THREADS, else the usable cores ÷ the "
        "processes training at once (--workers, --nproc). The search's config.yaml and each target's "
        "record the count used: CPU float sums depend on it, so a run repeats bit for bit at the same "
        "count. A target picks its own unless --threads (its transfer's, or the search's that trains it) "
        "or target.overrides names one",
        POSITIVE,
        across="free",
        effect="none",
    )
    precision: Literal["auto", "bf16", "fp32"] = key(
        "auto", "auto uses bf16 autocast on CUDA, fp32 elsewhere", across="free"
    )
    compile: bool = key(False, "torch.compile the model (CUDA)", across="free", effect="none")
    checkpoint_every: int | None = key(
        None,
        "target runs: steps between checkpoints (atomic); default max(50, steps // 10); 0 = only at the end",
        NON_NEGATIVE,
        across="free",
        effect="none",
    )
    memory_check: bool = key(
        True,
        "refuse to start a run whose estimated memory (the plan's) exceeds what the device has free; "
        "false to try anyway",
        across="free",
        effect="none",
    )
    parallel: Literal["ddp", "fsdp"] = key(
        "ddp",
        "several processes (--nproc): ddp replicates the model on each; fsdp (FSDP2) shards weights, "
        "gradients and optimizer state per block, for targets too big for one GPU",
        across="free",
        effect="layout",
    )
    activation_checkpointing: bool = key(
        False,
        "recompute each block's activations in the backward pass: less memory, ~1/3 more compute",
        across="free",
        effect="none",
    )
    weight_decay_timescale: bool = key(
        False,
        "at transfer, keep 1/(lr·weight_decay·steps) (docs/laws.md)",
        across="free",
        effect="transfer",
    )


def _used_by(name: str) -> str:
    """Which optimizers read an optimizer hyperparameter (for its doc line)."""
    return ", ".join(o.name for o in OPTIMIZERS.values() if name in o.hparams)


@dataclass
class HParams:
    """The hyperparameters µTransfer carries from proxy to target, unchanged."""

    lr: float = key(0.01, "peak learning rate η (at the base width)", POSITIVE, across="tuned")
    init_std: float = key(
        0.05, "init std σ of a weight with fan_in == base_width; embeddings use σ", POSITIVE, across="tuned"
    )
    alpha_in: float = key(1.0, "embedding output multiplier α_in", POSITIVE, across="tuned")
    alpha_out: float = key(1.0, "readout multiplier α_out (µP applies α_out / m)", POSITIVE, across="tuned")
    alpha_attn: float = key(1.0, "attention logit multiplier α_attn", POSITIVE, across="tuned")
    alpha_res: float = key(
        1.0,
        "u-µP: the residual branches' contribution relative to the embedding's (α_res)",
        POSITIVE,
        across="tuned",
    )
    alpha_res_attn_ratio: float = key(
        1.0,
        "u-µP: attention branches' contribution relative to the MLP's (α_res-attn-ratio)",
        POSITIVE,
        across="tuned",
    )
    alpha_ffn_act: float = key(
        1.0, "u-µP: the MLP nonlinearity's input multiplier (α_ffn-act)", POSITIVE, across="tuned"
    )
    weight_decay: float = key(
        0.0, "weight decay λ on weight matrices (does not µTransfer)", NON_NEGATIVE, across="tuned"
    )
    beta1: float = key(0.9, f"Adam β1, in [0, 1) ({_used_by('beta1')})", BETA, across="tuned")
    beta2: float = key(0.95, f"Adam β2, in [0, 1) ({_used_by('beta2')})", BETA, across="tuned")
    momentum: float = key(0.9, f"momentum, in [0, 1) ({_used_by('momentum')})", BETA, across="tuned")


HPARAM_NAMES = tuple(f.name for f in dataclasses.fields(HParams))
MULTIPLIER_HPARAMS = tuple(n for n in HPARAM_NAMES if n.startswith("alpha_"))  # what a family applies
OPTIMIZER_HPARAMS = tuple(sorted({h for o in OPTIMIZERS.values() for h in o.hparams}))


def hparams_used(family: str, optimizer: str, parametrization: str) -> tuple[str, ...]:
    """The hyperparameters a run of this family, optimizer and parametrization reads: the rest change
    nothing (a family applies its multipliers, an optimizer reads its own, a parametrization the rest)."""
    fam, opt, par = FAMILIES[family], OPTIMIZERS[optimizer], PARAMETRIZATIONS[parametrization]
    return tuple(
        n
        for n in HPARAM_NAMES
        if (n in opt.hparams if n in OPTIMIZER_HPARAMS else n in par.hparams)
        and (n not in MULTIPLIER_HPARAMS or n in fam.multipliers)
    )


@dataclass
class ParamSpace:
    type: Literal["log_uniform", "uniform", "int", "categorical"] = key(
        "log_uniform", "distribution", across="search", effect="trials"
    )
    low: float | None = key(None, "lower bound (log_uniform needs low > 0)", across="search", effect="trials")
    high: float | None = key(None, "upper bound", across="search", effect="trials")
    choices: list[Any] | None = key(None, "categorical: the values", across="search", effect="trials")
    log: bool = key(False, "int: sample on a log scale", across="search", effect="trials")


DEFAULT_SPACE: dict[str, ParamSpace] = {
    "lr": ParamSpace("log_uniform", 1e-3, 1e-1),
    "init_std": ParamSpace("log_uniform", 0.01, 0.3),
    "alpha_in": ParamSpace("log_uniform", 0.3, 10.0),
    "alpha_out": ParamSpace("log_uniform", 0.1, 10.0),
    "alpha_attn": ParamSpace("log_uniform", 0.3, 3.0),
    "alpha_res": ParamSpace("log_uniform", 0.25, 4.0),
    "alpha_res_attn_ratio": ParamSpace("log_uniform", 0.25, 4.0),
    "alpha_ffn_act": ParamSpace("log_uniform", 0.25, 4.0),
}


def default_space(family: str, parametrization: str = "mup") -> dict[str, ParamSpace]:
    """The default search space: the LR, the init scale and the multipliers, each where the family,
    the parametrization (and its own ranges) read it."""
    par = PARAMETRIZATIONS[parametrization]
    used = hparams_used(family, OPTIMIZER_NAMES[0], parametrization)  # (the space holds no optimizer's)
    space = {n: copy.deepcopy(p) for n, p in DEFAULT_SPACE.items() if n in used}
    for n, (low, high) in par.space.items():
        if n in space:
            space[n] = ParamSpace("log_uniform", low, high)
    return space


DEFAULT_N_TRIALS = 16  # proxy trials when neither search.n_trials nor search.budget is given


@dataclass
class LawsSpec:
    """``search.laws``: where to fit the LR laws (docs/laws.md)."""

    steps: list[float] = key(
        [],
        "fit LR* at these multiples of train.steps after the search, e.g. [0.25, 0.5, 1]",
        across="search",
        effect="plan",
    )
    batch_size: list[float] = key(
        [],
        "the same at these multiples of train.batch_size, e.g. [0.5, 1, 2]",
        across="search",
        effect="plan",
    )
    lr_step: float = key(
        0.5, "octaves between the LRs of each line search", POSITIVE, across="search", effect="plan"
    )
    lr_points: int = key(
        5,
        "LRs per line search, centred on the winner's (more at an edge)",
        Range(3, None),
        across="search",
        effect="plan",
    )
    seeds: int | None = key(
        None,
        "seeds per line-search point (the loss is their mean); default 2 with train.schedule=wsd (each LR's "
        "horizons come from one run's cooldown branches, so a seed costs 0.66x separate runs at multiples "
        "0.25/0.5/1: two cost 1.3x one seed of separate runs), else 1",
        POSITIVE,
        across="search",
        effect="plan",
    )


@dataclass
class FidelitySpec:
    """``search.fidelity``: successive halving along training length (WSD runs, docs/cli.md)."""

    rungs: list[float] = key(
        [],
        "fractions of train.steps, increasing, the last 1: every configuration runs to the first (evaluated "
        "after its cooldown), the best go on to the next, continued from their stable state",
        across="search",
        effect="trials",
    )
    keep: float = key(
        1 / 3,
        "the share of a rung's configurations that go on to the next (at least one); 1/3 as in Hyperband",
        Range(0, 1, low_open=True, high_open=True),
        across="search",
        effect="trials",
    )


def _search(default: Any, doc: str, valid: Range | None = None, effect: str = "plan") -> Any:
    return key(default, doc, valid, across="search", effect=effect)


@dataclass
class SearchSpec:
    n_trials: int | None = _search(
        None,
        f"finished proxy trials to reach (a resumed study counts what it has); default {DEFAULT_N_TRIALS}, "
        "or derived from search.budget",
        POSITIVE,
    )
    budget: float | None = _search(
        None,
        "search compute as a fraction of the target run's FLOPs (0.07 = 7%, as TP5 reports it): mutune "
        "derives the proxy trials and the ladder from it; needs target.width; not with search.n_trials",
    )
    finalists: int | None = _search(
        None,
        "configurations re-run up the ladder (search.rungs), halved at each rung; the winner is the best mean "
        "over seeds at the last rung. Default: none (measured not to pay at small scale, bench/RESULTS.md §2)",
    )
    rungs: list[float] = _search(
        [2.0],
        "the ladder's widths, as multiples of the proxy width (1 = the proxy width with more seeds), "
        "increasing; [] = no ladder",
    )
    rung_seeds: int = _search(1, "seeds per configuration at each rung (seed, seed+1, ...)")
    sampler: Literal["random", "sobol", "tpe"] = _search(
        "random",
        "random (seeded, as in TP5), sobol (scrambled Sobol points, quasi-random) or tpe; random and "
        "sobol key trial k's point on (seed, k), so resumes and workers never repeat one",
        effect="trials",
    )
    seed: int = _search(0, "sampler seed; trial k always draws the same HPs", NON_NEGATIVE, effect="trials")
    storage: str | None = _search(
        None, "Optuna storage URL (postgresql://...); default: a journal file in the run dir"
    )
    pruner: Literal["none", "median", "hyperband"] = _search(
        "none", "stop poor trials early on their eval losses"
    )
    study_name: str | None = _search(None, "Optuna study name; default: the spec name", effect="trials")
    space: dict[str, ParamSpace] = _search(
        DEFAULT_SPACE,
        "searched hyperparameters (names from hparams); default: lr, init_std and the multipliers the "
        "model family applies",
        effect="trials",
    )
    laws: LawsSpec = section(
        LawsSpec,
        "LR laws across training length and batch size (docs/laws.md)",
        across="search",
        effect="plan",
    )
    fidelity: FidelitySpec = section(
        FidelitySpec,
        "successive halving along training length: many configurations at a short horizon, the best "
        "continued (needs train.schedule=wsd); default: none, every trial runs train.steps",
        across="search",
        effect="trials",
    )


@dataclass
class TargetSpec:
    width: int | None = _search(
        None, "target width; when set, `mutune search` trains the target afterwards", POSITIVE
    )
    overrides: dict[str, Any] = _search(
        {}, "other keys the target changes, e.g. {train.steps: 1000} or {depth: 8}"
    )


@dataclass
class TrackerSpec:
    backend: Literal["none", "tensorboard", "mlflow", "wandb"] = key(
        "none",
        "log each trial and target run to tensorboard (event files), mlflow (a file store) or wandb "
        "(offline); needs pip install 'mutune[<backend>]'",
        across="free",
        effect="none",
    )
    dir: str | None = key(
        None,
        "where the tracker writes; default: the run dir (tensorboard/, mlruns/, wandb/)",
        across="free",
        effect="none",
    )
    project: str | None = key(
        None, "MLflow experiment, W&B project; default: the spec name", across="free", effect="none"
    )


@dataclass
class Spec:
    name: str = key("mutune", "run name; the run dir defaults to runs/<name>", across="search", effect="none")
    seed: int = key(0, "seed for init and data order", NON_NEGATIVE, across="free")
    model: ModelSpec = section(ModelSpec, "model shape and parametrization", across="fixed")
    data: DataSpec = section(DataSpec, "training corpus", across="approximate")
    train: TrainSpec = section(TrainSpec, "optimizer, schedule and evaluation", across="free")
    hparams: HParams = section(
        HParams, "default hyperparameters (searched ones are replaced by the search)", across="tuned"
    )
    search: SearchSpec = section(SearchSpec, "proxy search", across="search", effect="plan")
    target: TargetSpec = section(TargetSpec, "the wide run", across="search", effect="plan")
    tracker: TrackerSpec = section(
        TrackerSpec,
        "an experiment tracker for trials and target runs (optional)",
        across="free",
        effect="none",
    )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def hash(self) -> str:
        """A short content hash of the resolved spec, recorded as provenance."""
        blob = json.dumps(self.to_dict(), sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def edit(self, changes: dict[str, Any]) -> Spec:
        """A copy with dotted keys set to typed values (``{"model.width": 256}``), validated again.

        The typed counterpart of ``KEY=VALUE`` overrides, for code that derives one spec from
        another (a sweep point, the coord check's widths, the smoke variant, a transfer target).
        """
        spec = self
        for k, value in changes.items():
            spec = _replaced(spec, k.split("."), value, k)
        validate(spec)
        return spec


# ---------------------------------------------------------------------------------------------
# Typed edits


def _replaced(node: Any, path: list[str], value: Any, dotted: str, prefix: str = "") -> Any:
    """``node`` (a spec dataclass) with the field at ``path`` replaced, type-checked like YAML input."""
    cls = type(node)
    fields = {f.name: f for f in dataclasses.fields(node)}
    name, here = path[0], join_key(prefix, path[0])
    if hasattr(cls, "variant") and len(path) == 1 and (name == cls.variant_key or name not in fields):
        # the key that picks the section's variant, or one only another variant has: rebuild it
        return build(cls, {**dataclasses.asdict(node), name: value}, prefix)
    if name not in fields:
        raise SpecError(here, unknown_key(cls, name, fields, prefix))
    if len(path) == 1:
        new = coerce(field_type(cls, fields[name]), value, dotted)
    elif dataclasses.is_dataclass(getattr(node, name)):
        new = _replaced(getattr(node, name), path[1:], value, dotted, here)
    else:  # a key inside a mapping field (search.space.lr.low, target.overrides.x): edit a copy
        mapping = copy.deepcopy(dataclasses.asdict(node)[name])
        set_dotted(mapping, ".".join(path[1:]), value)
        new = coerce(field_type(cls, fields[name]), mapping, here)
    return dataclasses.replace(node, **{name: new})


# ---------------------------------------------------------------------------------------------
# From plain data


def _filled(data: dict[str, Any]) -> Spec:
    """``data`` typed, with every default filled in; the default search space is the family's."""
    spec = build(Spec, data)
    if spec.data.corpus == "tokens" and spec.data.vocab_size is None:  # a prepared folder records its own
        spec.data.vocab_size = (read_meta(spec.data.path) or {}).get("vocab_size")
    if "space" not in (data.get("search") or {}):
        spec.search.space = default_space(spec.model.family, spec.model.parametrization)
    return spec


DECIDING_KEYS = ("model.family", "model.parametrization")  # the keys other keys' defaults depend on


def deciding(overrides: list[str] | tuple[str, ...]) -> list[str]:
    """The overrides of :data:`DECIDING_KEYS`, to apply before any default is filled."""
    return [o for o in overrides if parse_override(o)[0] in DECIDING_KEYS]


def from_dict(data: dict[str, Any], overrides: list[str] | tuple[str, ...] = ()) -> Spec:
    """Types are checked, defaults filled, then overrides land on the filled spec (so
    ``search.space.lr.low=1e-4`` edits the default space instead of replacing it), then validation.
    Overrides of the keys that decide defaults (the model's family and parametrization) are applied
    first, so the defaults filled are theirs."""
    if overrides:
        data = apply_overrides(_filled(apply_overrides(data, deciding(overrides))).to_dict(), overrides)
    spec = _filled(data)
    validate(spec)
    return spec

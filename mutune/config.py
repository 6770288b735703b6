"""The run spec: typed sections, YAML loading, dotted ``key=value`` overrides, validation.

The spec is validated once, here, and flows down as typed objects; nothing below re-reads YAML. Every
user mistake raises :class:`SpecError` naming the dotted key (or the file), so the CLI prints one line, exit 2.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from .errors import SpecError
from .laws import LawsSpec
from .registry import FAMILIES, FAMILY_NAMES, OPTIMIZER_NAMES, OPTIMIZERS, check_depth_scaling, check_family
from .typed import (  # noqa: F401 (read_yaml and the ranges are part of the spec API)
    BETA,
    FRACTION,
    NON_NEGATIVE,
    POSITIVE,
    Range,
    apply_overrides,
    build,
    check_ranges,
    coerce,
    field_type,
    join_key,
    parse_override,
    read_yaml,
    set_dotted,
)


def _f(default: Any, doc: str, valid: Range | None = None) -> Any:
    """A dataclass field with a one-line doc (the docs and `mutune init` are generated from these)
    and, for numbers, the range ``validate`` checks it against (a ``null`` is not checked)."""
    meta = {"doc": doc, "valid": valid}
    if isinstance(default, type) and dataclasses.is_dataclass(default):
        return field(default_factory=default, metadata=meta)
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: copy.deepcopy(d), metadata=meta)
    return field(default=default, metadata=meta)


PARAMETRIZATION_NAMES = {"mup": "µP", "sp": "SP"}  # how tables and figures name them


def _choices(entries: Any) -> str:
    """'a (doc), b (doc) or c (doc)': a registry's names for a field's doc line."""
    items = [f"{e.name} ({e.doc})" for e in entries]
    return ", ".join(items[:-1]) + f" or {items[-1]}" if len(items) > 1 else items[0]


@dataclass
class ModelSpec:
    family: Literal[FAMILY_NAMES] = _f(
        "gpt",
        "model family: " + _choices(FAMILIES.values()),
    )
    width: int = _f(
        64, "width of the model being built: the proxy width in a search (d_model for gpt)", POSITIVE
    )
    base_width: int = _f(64, "width at which µP equals SP; all µP multipliers are relative to it", POSITIVE)
    depth: int = _f(2, "gpt: transformer blocks; mlp: hidden layers", POSITIVE)
    base_depth: int | None = _f(
        None,
        "depth at which depth scaling is off (m_L = depth / base_depth); default: the proxy's own depth, so "
        "a target at another depth gets CompleteP's rules relative to the proxy",
        POSITIVE,
    )
    depth_alpha: float = _f(
        1.0,
        "CompleteP's α: each residual branch × m_L^-α, with LRs to match; 1 = CompleteP, 0.5 = depth-µP, "
        "0 = no depth scaling",
        Range(0, 1),
    )
    head_dim: int | None = _f(
        32, "gpt: fixed head dim, heads = width / head_dim (width grows through heads)", POSITIVE
    )
    n_head: int | None = _f(
        None, "gpt: fixed head count instead of head_dim (width grows through head_dim)", POSITIVE
    )
    mlp_ratio: int = _f(4, "gpt: MLP hidden size = mlp_ratio * width", POSITIVE)
    seq_len: int = _f(128, "gpt: context length; mlp: number of previous tokens fed as input", POSITIVE)
    tie_embeddings: bool = _f(False, "gpt: share the token embedding with the readout")
    bias: bool = _f(False, "use biases in Linear and LayerNorm layers")
    parametrization: Literal["mup", "sp"] = _f("mup", "mup, or sp (standard parametrization, the control)")
    zero_init_readout: bool = _f(False, "µP option: initialise the readout to zero (TP5 App. D.2)")
    zero_init_query: bool = _f(False, "µP option: initialise the attention query projection to zero")
    factory: str | None = _f(
        None,
        "factory: 'package.module:function', called as function(width, **factory_kwargs) -> nn.Module "
        "whose forward(idx) returns logits (imported, never evaluated; see docs/mup.md)",
    )
    factory_kwargs: dict[str, Any] = _f({}, "factory: keyword arguments for the factory function")
    readout: list[str] = _f(
        [], "factory: readout module names, e.g. [lm_head] (default: inferred from the shapes)"
    )


@dataclass
class DataSpec:
    corpus: Literal["stdlib", "text", "tokens"] = _f(
        "stdlib", "stdlib (Python's own source, built in), text (a file or folder, bytes) or tokens (.bin)"
    )
    path: str | None = _f(
        None, "text: a file or folder; tokens: a uint16 .bin file or a folder with train.bin/val.bin"
    )
    vocab_size: int | None = _f(None, "tokens: vocabulary size (byte corpora use 256)", POSITIVE)
    val_fraction: float = _f(
        0.1, "fraction of the corpus held out for validation (ignored with val.bin)", FRACTION
    )


@dataclass
class TrainSpec:
    steps: int = _f(200, "optimizer steps per run", POSITIVE)
    batch_size: int = _f(16, "sequences per step", POSITIVE)
    optimizer: Literal[OPTIMIZER_NAMES] = _f("adamw", _choices(OPTIMIZERS.values()))
    schedule: Literal["cosine", "linear", "constant"] = _f("cosine", "LR shape after warmup")
    warmup_steps: int = _f(20, "linear warmup steps", NON_NEGATIVE)
    min_lr_ratio: float = _f(0.1, "final LR / peak LR for cosine and linear decay", Range(0, 1))
    grad_clip: float = _f(
        1.0,
        "max global grad norm, each gradient measured as at the base width (so constant in width); 0 disables",
        NON_NEGATIVE,
    )
    eps: float = _f(
        1e-8,
        "Adam epsilon at the base width (µP scales it by 1/fan_in multiplier on hidden weights)",
        NON_NEGATIVE,
    )
    max_loss: float | None = _f(
        None,
        "a loss above this ends the run as diverged, like NaN/inf; default 10·ln(vocab), 10x a uniform guess",
        POSITIVE,
    )
    eval_every: int = _f(50, "steps between validation evaluations", POSITIVE)
    eval_batches: int = _f(8, "validation batches per evaluation", POSITIVE)
    device: Literal["auto", "cpu", "cuda", "mps"] = _f("auto", "auto picks cuda, then mps, then cpu")
    precision: Literal["auto", "bf16", "fp32"] = _f("auto", "auto uses bf16 autocast on CUDA, fp32 elsewhere")
    compile: bool = _f(False, "torch.compile the model (CUDA)")
    checkpoint_every: int | None = _f(
        None,
        "target runs: steps between checkpoints (atomic); default max(50, steps // 10); 0 = only at the end",
        NON_NEGATIVE,
    )
    memory_check: bool = _f(
        True,
        "refuse to start a run whose estimated memory (the plan's) exceeds what the device has free; "
        "false to try anyway",
    )
    parallel: Literal["ddp", "fsdp"] = _f(
        "ddp",
        "several processes (--nproc): ddp replicates the model on each; fsdp (FSDP2) shards weights, "
        "gradients and optimizer state per block, for targets too big for one GPU",
    )
    activation_checkpointing: bool = _f(
        False, "recompute each block's activations in the backward pass: less memory, ~1/3 more compute"
    )
    weight_decay_timescale: bool = _f(False, "at transfer, keep 1/(lr·weight_decay·steps) (docs/laws.md)")


@dataclass
class HParams:
    """The hyperparameters µTransfer carries from proxy to target, unchanged."""

    lr: float = _f(0.01, "peak learning rate η (at the base width)", POSITIVE)
    init_std: float = _f(0.05, "init std σ of a weight with fan_in == base_width; embeddings use σ", POSITIVE)
    alpha_in: float = _f(1.0, "embedding output multiplier α_in", POSITIVE)
    alpha_out: float = _f(1.0, "readout multiplier α_out (µP applies α_out / m)", POSITIVE)
    alpha_attn: float = _f(1.0, "attention logit multiplier α_attn", POSITIVE)
    weight_decay: float = _f(0.0, "weight decay λ on weight matrices (does not µTransfer)", NON_NEGATIVE)
    beta1: float = _f(0.9, "Adam β1, in [0, 1)", BETA)
    beta2: float = _f(0.95, "Adam β2, in [0, 1)", BETA)
    momentum: float = _f(0.9, "SGD and Muon momentum, in [0, 1)", BETA)


@dataclass
class ParamSpace:
    type: Literal["log_uniform", "uniform", "int", "categorical"] = _f("log_uniform", "distribution")
    low: float | None = _f(None, "lower bound (log_uniform needs low > 0)")
    high: float | None = _f(None, "upper bound")
    choices: list[Any] | None = _f(None, "categorical: the values")
    log: bool = _f(False, "int: sample on a log scale")


DEFAULT_SPACE: dict[str, ParamSpace] = {
    "lr": ParamSpace("log_uniform", 1e-3, 1e-1),
    "init_std": ParamSpace("log_uniform", 0.01, 0.3),
    "alpha_in": ParamSpace("log_uniform", 0.3, 10.0),
    "alpha_out": ParamSpace("log_uniform", 0.1, 10.0),
    "alpha_attn": ParamSpace("log_uniform", 0.3, 3.0),
}


DEFAULT_N_TRIALS = 16  # proxy trials when neither search.n_trials nor search.budget is given


@dataclass
class SearchSpec:
    n_trials: int | None = _f(
        None,
        f"finished proxy trials to reach (a resumed study counts what it has); default {DEFAULT_N_TRIALS}, "
        "or derived from search.budget",
        POSITIVE,
    )
    budget: float | None = _f(
        None,
        "search compute as a fraction of the target run's FLOPs (0.07 = 7%, as TP5 reports it): mutune "
        "derives the proxy trials and the ladder from it; needs target.width; not with search.n_trials",
    )
    finalists: int | None = _f(
        None,
        "configurations re-run up the ladder (search.rungs), halved at each rung; the winner is the best mean "
        "over seeds at the last rung. Default: none (measured not to pay at small scale, bench/RESULTS.md §2)",
    )
    rungs: list[float] = _f(
        [2.0],
        "the ladder's widths, as multiples of the proxy width (1 = the proxy width with more seeds), "
        "increasing; [] = no ladder",
    )
    rung_seeds: int = _f(1, "seeds per configuration at each rung (seed, seed+1, ...)")
    sampler: Literal["random", "sobol", "tpe"] = _f(
        "random",
        "random (seeded, as in TP5), sobol (scrambled Sobol points, quasi-random) or tpe; random and "
        "sobol key trial k's point on (seed, k), so resumes and workers never repeat one",
    )
    seed: int = _f(0, "sampler seed; trial k always draws the same HPs", NON_NEGATIVE)
    storage: str | None = _f(
        None, "Optuna storage URL (postgresql://...); default: a journal file in the run dir"
    )
    pruner: Literal["none", "median", "hyperband"] = _f("none", "stop poor trials early on their eval losses")
    study_name: str | None = _f(None, "Optuna study name; default: the spec name")
    space: dict[str, ParamSpace] = _f(DEFAULT_SPACE, "searched hyperparameters (names from hparams)")
    laws: LawsSpec = _f(LawsSpec, "LR laws across training length and batch size (docs/laws.md)")


@dataclass
class TargetSpec:
    width: int | None = _f(
        None, "target width; when set, `mutune search` trains the target afterwards", POSITIVE
    )
    overrides: dict[str, Any] = _f({}, "other dotted keys the target changes, e.g. {train.steps: 1000}")


@dataclass
class TrackerSpec:
    backend: Literal["none", "tensorboard", "mlflow", "wandb"] = _f(
        "none",
        "log each trial and target run to tensorboard (event files), mlflow (a file store) or wandb "
        "(offline); needs pip install 'mutune[<backend>]'",
    )
    dir: str | None = _f(
        None, "where the tracker writes; default: the run dir (tensorboard/, mlruns/, wandb/)"
    )
    project: str | None = _f(None, "MLflow experiment, W&B project; default: the spec name")


@dataclass
class Spec:
    name: str = _f("mutune", "run name; the run dir defaults to runs/<name>")
    seed: int = _f(0, "seed for init and data order", NON_NEGATIVE)
    model: ModelSpec = _f(ModelSpec, "model shape and parametrization")
    data: DataSpec = _f(DataSpec, "training corpus")
    train: TrainSpec = _f(TrainSpec, "optimizer, schedule and evaluation")
    hparams: HParams = _f(HParams, "default hyperparameters (searched ones are replaced by the search)")
    search: SearchSpec = _f(SearchSpec, "proxy search")
    target: TargetSpec = _f(TargetSpec, "the wide run")
    tracker: TrackerSpec = _f(TrackerSpec, "an experiment tracker for trials and target runs (optional)")

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
        return edit(self, changes)


# ---------------------------------------------------------------------------------------------
# Typed edits


def _replaced(node: Any, path: list[str], value: Any, key: str, prefix: str = "") -> Any:
    """``node`` (a spec dataclass) with the field at ``path`` replaced, type-checked like YAML input."""
    fields = {f.name: f for f in dataclasses.fields(node)}
    name, here = path[0], join_key(prefix, path[0])
    if name not in fields:
        hint = difflib.get_close_matches(name, fields, n=1)
        raise SpecError(
            here, f"unknown key{f' (did you mean {join_key(prefix, hint[0])!r}?)' if hint else ''}"
        )
    if len(path) == 1:
        new = coerce(field_type(type(node), fields[name]), value, key)
    elif dataclasses.is_dataclass(getattr(node, name)):
        new = _replaced(getattr(node, name), path[1:], value, key, here)
    else:  # a key inside a mapping field (search.space.lr.low, target.overrides.x): edit a copy
        mapping = copy.deepcopy(dataclasses.asdict(node)[name])
        set_dotted(mapping, ".".join(path[1:]), value)
        new = coerce(field_type(type(node), fields[name]), mapping, here)
    return dataclasses.replace(node, **{name: new})


def edit(spec: Spec, changes: dict[str, Any]) -> Spec:
    """See :meth:`Spec.edit`."""
    for key, value in changes.items():
        spec = _replaced(spec, key.split("."), value, key)
    validate(spec)
    return spec


# ---------------------------------------------------------------------------------------------
# Loading and validation


def spec_from_dict(data: dict[str, Any], overrides: list[str] | tuple[str, ...] = ()) -> Spec:
    """Types are checked, defaults filled, then overrides land on the filled spec (so
    ``search.space.lr.low=1e-4`` edits the default space instead of replacing it), then validation."""
    if overrides:
        data = apply_overrides(build(Spec, data).to_dict(), overrides)
    spec = build(Spec, data)
    validate(spec)
    return spec


def load_spec(path: str | Path, overrides: list[str] | tuple[str, ...] = (), *, smoke: bool = False) -> Spec:  # noqa: F811 (the flag, not the function)
    """Load, override and validate a spec file (its name defaults to the file's stem); ``smoke``: the
    file's smoke variant with ``overrides`` applied after it (:func:`mutune.spec_variants.smoke_with`)."""
    data = read_yaml(path)
    data.setdefault("name", Path(path).stem)
    if not smoke:
        return spec_from_dict(data, overrides)
    from .spec_variants import smoke_with

    return smoke_with(data, overrides)


HPARAM_NAMES = tuple(f.name for f in dataclasses.fields(HParams))


def validate(spec: Spec) -> None:
    """Cross-field checks that types alone cannot express."""
    m, d, s = spec.model, spec.data, spec.search
    if not spec.name or "/" in spec.name:
        raise SpecError("name", f"must be a non-empty name without '/', got {spec.name!r}")
    check_ranges(spec)
    check_depth_scaling(m, spec.train.optimizer)
    if m.zero_init_readout and m.tie_embeddings:
        raise SpecError("model.zero_init_readout", "cannot zero-init a readout tied to the embedding")
    check_family(m)
    if d.corpus in ("text", "tokens") and not d.path:
        raise SpecError("data.path", f"corpus '{d.corpus}' needs data.path")
    if d.corpus == "tokens" and not d.vocab_size:
        raise SpecError("data.vocab_size", "corpus 'tokens' needs data.vocab_size")
    for name, p in s.space.items():
        validate_space(name, p, f"search.space.{name}")
    from .budget import validate_search  # budget.py builds on this module

    validate_search(spec)
    for key in spec.target.overrides:
        if key.split(".")[0] == "hparams":
            raise SpecError(
                f"target.overrides.{key}", "the target takes its hparams from the search, unchanged"
            )
    from .spec_variants import check_target  # the target's spec is a derived form of this one

    check_target(spec)


def validate_space(name: str, p: ParamSpace, key: str) -> None:
    if name not in HPARAM_NAMES:
        hint = difflib.get_close_matches(name, HPARAM_NAMES, n=1)
        suggestion = f" (did you mean '{hint[0]}'?)" if hint else f" (known: {', '.join(HPARAM_NAMES)})"
        raise SpecError(key, f"not a hyperparameter{suggestion}")
    valid = {f.name: f.metadata.get("valid") for f in dataclasses.fields(HParams)}[name]
    if p.type == "categorical":
        if not p.choices:
            raise SpecError(f"{key}.choices", "categorical needs a non-empty list of choices")
        for i, c in enumerate(p.choices):
            c = coerce(float, c, f"{key}.choices[{i}]")
            if valid is not None and c not in valid:
                raise SpecError(f"{key}.choices[{i}]", f"hparams.{name} must be {valid}, got {c}")
        return
    if p.low is None or p.high is None:
        raise SpecError(f"{key}.{'low' if p.low is None else 'high'}", f"{p.type} needs low and high")
    if p.low >= p.high:
        raise SpecError(f"{key}.low", f"low ({p.low}) must be below high ({p.high})")
    if (p.type == "log_uniform" or (p.type == "int" and p.log)) and p.low <= 0:
        raise SpecError(f"{key}.low", f"a log-uniform range needs low > 0, got {p.low}")
    if p.type == "int" and (p.low != int(p.low) or p.high != int(p.high)):
        raise SpecError(key, "int ranges need integer bounds")
    for end in ("low", "high"):  # every value the sampler may draw must be valid (a beta of 1.0 is not)
        if valid is not None and getattr(p, end) not in valid:
            raise SpecError(
                f"{key}.{end}", f"hparams.{name} must be {valid}, so the range cannot reach {getattr(p, end)}"
            )


def hparams_from_dict(values: dict[str, Any], key: str = "hparams") -> HParams:
    hp = build(HParams, values, key)
    check_ranges(hp, key)
    return hp


# The spec's derived forms live in their own module; re-exported here, where users look for them.
from .spec_variants import shown, smoke, smoke_conflict  # noqa: E402, F401

"""Every check of one spec that its types cannot express, in one place, each naming its key.

Types, unknown keys and ranges come first (:mod:`.typed`, from each field's declaration); then the
run name, the scaling axes that apply (:mod:`.axes`), the family's own checks (:mod:`.families`),
the data, the search space (each searched name a hyperparameter that this family and optimizer
read, each range inside the hyperparameter's own), the trial count, budget and ladder, and the
laws. The spec's *target* is checked where a spec is loaded (:mod:`.load`), by deriving it.
"""

from __future__ import annotations

import dataclasses
import difflib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import SpecError
from ..mup.optimizers import OPTIMIZERS
from ..mup.parametrizations import PARAMETRIZATIONS
from ..mup.rules import ROLES
from . import axes
from .corpus import read_meta
from .families import FACTORY_PATTERN, FAMILIES
from .typed import check_ranges, coerce

if TYPE_CHECKING:
    from .schema import ParamSpace, Spec


def validate(spec: Spec) -> None:
    """Cross-field checks that types alone cannot express."""
    m, d = spec.model, spec.data
    if not spec.name or "/" in spec.name:
        raise SpecError("name", f"must be a non-empty name without '/', got {spec.name!r}")
    check_ranges(spec)
    check_parametrization(spec)
    axes.check(spec)
    FAMILIES[m.family].check(m)
    if d.corpus in ("text", "tokens") and not d.path:
        raise SpecError("data.path", f"corpus '{d.corpus}' needs data.path")
    if d.corpus == "tokens" and not d.vocab_size and not _prepared_elsewhere(d.path):
        raise SpecError(
            "data.vocab_size",
            "corpus 'tokens' needs data.vocab_size (or a folder `mutune data prepare` wrote)",
        )
    meta = read_meta(d.path) if d.corpus == "tokens" else None
    if meta is not None and d.vocab_size < meta["vocab_size"]:  # larger (padded to a multiple of 64) is fine
        raise SpecError(
            "data.vocab_size",
            f"{d.vocab_size} is smaller than the {meta['vocab_size']} tokens of {meta.get('tokenizer')}, which "
            f"tokenized {d.path} (its meta.yaml); leave data.vocab_size out to take the tokenizer's",
        )
    check_task(spec)
    for name, p in spec.search.space.items():
        check_space(spec, name, p, f"search.space.{name}")
    check_schedule(spec.train)
    check_search(spec)
    check_fidelity(spec)
    check_laws(spec.search.laws)


def _prepared_elsewhere(path: str | None) -> bool:
    """A token folder that is not on this machine (yet): its meta.yaml will give the vocabulary size
    when it is (a plan needs it then, :func:`mutune.data.vocab_size`); a single .bin never has one."""
    p = Path(path or "").expanduser()
    return bool(path) and not p.exists() and p.suffix != ".bin"


def check_task(spec: Spec) -> None:
    """Examples from a data module are what a classification model trains on, and only that."""
    m, d = spec.model, spec.data
    classify = getattr(m, "task", "next_token") == "classification"
    if d.module is not None:
        if not FACTORY_PATTERN.match(d.module):
            raise SpecError(
                "data.module",
                f"expected 'package.module:function' (an import path, no code), got {d.module!r}",
            )
        if d.path is not None or d.corpus != "stdlib":
            raise SpecError(
                "data.module", "the examples come from data.module: remove data.corpus and data.path"
            )
        if not classify:
            raise SpecError(
                "data.module",
                "gives (x, y) examples for a classification model: use model.family: factory with model.task: "
                "classification",
            )
    elif classify:
        raise SpecError("model.task", "classification trains on the (x, y) examples of data.module: set it")


def check_parametrization(spec: Spec) -> None:
    """The family computes the parametrization's forward, and its table has rules for the optimizer."""
    fam, par = FAMILIES[spec.model.family], PARAMETRIZATIONS[spec.model.parametrization]
    if par.name not in fam.parametrizations:
        raise SpecError(
            "model.parametrization",
            f"the {fam.name} family computes {', '.join(fam.parametrizations)} only; {par.label} needs a forward "
            f"written for it: use a family that has one ({', '.join(f.name for f in FAMILIES.values() if par.name in f.parametrizations)})",
        )
    opt = OPTIMIZERS[spec.train.optimizer]
    missing = sorted({opt.kind(role, 2) for role in ROLES} - set(par.kinds))
    if missing:
        raise SpecError(
            "train.optimizer",
            f"{par.label} has no rule for {opt.name}'s updates ({', '.join(missing)}); use "
            + " or ".join(
                o.name for o in OPTIMIZERS.values() if {o.kind(r, 2) for r in ROLES} <= set(par.kinds)
            ),
        )


def _hparam_fields(spec: Spec) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(spec.hparams)}


def check_space(spec: Spec, name: str, p: ParamSpace, key: str) -> None:
    """One search range: a hyperparameter this run reads, with bounds its values may all take."""
    fields = _hparam_fields(spec)
    if name not in fields:
        hint = difflib.get_close_matches(name, list(fields), n=1)
        suggestion = f" (did you mean '{hint[0]}'?)" if hint else f" (known: {', '.join(fields)})"
        raise SpecError(key, f"not a hyperparameter{suggestion}")
    family, opt = FAMILIES[spec.model.family], OPTIMIZERS[spec.train.optimizer]
    par = PARAMETRIZATIONS[spec.model.parametrization]
    users = [o.name for o in OPTIMIZERS.values() if name in o.hparams]
    if not users and name not in par.hparams:
        raise SpecError(
            key,
            f"{par.label} does not read {name} (it reads {', '.join(par.hparams)}), so searching it would "
            "change nothing; remove it from search.space",
        )
    if name.startswith("alpha_") and name not in family.multipliers:
        raise SpecError(
            key,
            f"the {family.name} family applies no {name} ({', '.join(family.multipliers)} only), so searching "
            "it would change nothing; remove it from search.space",
        )
    if users and name not in opt.hparams:
        raise SpecError(
            key,
            f"train.optimizer={opt.name} does not read {name} (only {', '.join(users)} do), so searching it "
            "would change nothing; remove it from search.space",
        )
    valid = fields[name].metadata.get("valid")
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


def cooldown(steps: int, decay_fraction: float) -> int:
    """A WSD run's cooldown steps: ``decay_fraction`` of ``steps``, at least one."""
    return max(1, round(decay_fraction * steps))


def branch_steps(train: Any) -> list[int]:
    """The horizons (in steps) of ``train.branches``."""
    return [round(f * train.steps) for f in train.branches]


def check_schedule(t: Any) -> None:
    """A WSD run's cooldown starts after its warmup; its branches are increasing horizons inside it,
    each with a cooldown that starts after the warmup too (else it is not the run of that length)."""
    if t.branches and t.schedule != "wsd":
        raise SpecError(
            "train.branches",
            f"cooldown branches need train.schedule=wsd (a {t.schedule} schedule's shape depends on the "
            "run's length, so a branch would not be the run of its length)",
        )
    if t.schedule != "wsd":
        return
    if t.steps - cooldown(t.steps, t.decay_fraction) < t.warmup_steps:
        raise SpecError(
            "train.decay_fraction",
            f"the cooldown ({cooldown(t.steps, t.decay_fraction)} of {t.steps} steps) would start before "
            f"the warmup ({t.warmup_steps} steps) ends",
        )
    for i, f in enumerate(t.branches):
        if not 0 < f <= 1:
            raise SpecError(f"train.branches[{i}]", f"a branch is a fraction of the steps in (0, 1], got {f}")
        if i and f <= t.branches[i - 1]:
            raise SpecError(f"train.branches[{i}]", f"branches must grow: {f} after {t.branches[i - 1]}")
    for i, b in enumerate(branch_steps(t)):
        if i and b <= branch_steps(t)[i - 1]:
            raise SpecError(
                f"train.branches[{i}]",
                f"{t.branches[i]} x {t.steps} steps is the horizon of the branch before it",
            )
        if b - cooldown(b, t.decay_fraction) < t.warmup_steps:
            raise SpecError(
                f"train.branches[{i}]",
                f"a {b}-step branch's cooldown would start before the warmup ({t.warmup_steps} steps) ends",
            )


def check_search(spec: Spec) -> None:
    """The trial count, the budget and the ladder: what can be checked without costing a run."""
    s = spec.search
    if s.n_trials is not None and s.n_trials < 1:
        raise SpecError("search.n_trials", f"must be > 0, got {s.n_trials}")
    if s.budget is not None:
        if not s.budget > 0:
            raise SpecError(
                "search.budget",
                f"must be > 0 (a fraction of the target run's FLOPs, e.g. 0.07), got {s.budget}",
            )
        if s.n_trials is not None:
            raise SpecError(
                "search.budget",
                "cannot be given with search.n_trials: the budget derives the number of trials; drop one",
            )
        if spec.target.width is None:
            raise SpecError("search.budget", "is a fraction of the target run's FLOPs: set target.width too")
    if s.finalists is not None and s.finalists < 1:
        raise SpecError(
            "search.finalists", f"must be >= 1, got {s.finalists} (for no ladder, set search.rungs=[])"
        )
    if s.rung_seeds < 1:
        raise SpecError("search.rung_seeds", f"must be >= 1, got {s.rung_seeds}")
    for i, mult in enumerate(s.rungs):
        if mult < 1:
            raise SpecError(
                f"search.rungs[{i}]",
                f"{mult} is narrower than the proxy: a rung is a multiple >= 1 of its width",
            )
        if i and mult <= s.rungs[i - 1]:
            raise SpecError(f"search.rungs[{i}]", f"rungs must grow: {mult} after {s.rungs[i - 1]}")
    if s.finalists is None:
        return
    if not s.rungs:
        raise SpecError("search.finalists", "needs at least one rung in search.rungs")
    if s.rungs == [1] and s.rung_seeds == 1:
        raise SpecError("search.rung_seeds", "a rung at the proxy width adds nothing with one seed: use >= 2")


def fidelity_steps(spec: Spec) -> list[int]:
    """The horizons (in steps) of ``search.fidelity.rungs``; [] without successive halving."""
    return [round(f * spec.train.steps) for f in spec.search.fidelity.rungs]


def check_fidelity(spec: Spec) -> None:
    """Successive halving along training length: WSD runs (a rung's loss after its cooldown, the next
    rung continued from the stable state), increasing rungs ending at the full length, each rung's
    cooldown after the warmup, and not beside the width ladder."""
    f, t = spec.search.fidelity, spec.train
    if not f.rungs:
        return
    if t.schedule != "wsd":
        raise SpecError(
            "search.fidelity",
            "needs train.schedule=wsd: each rung is evaluated after its cooldown and the next continues from "
            f"the stable state, which a {t.schedule} schedule (its shape set by the run's length) does not have",
        )
    if spec.search.finalists is not None:
        raise SpecError(
            "search.fidelity", "cannot run beside the width ladder (search.finalists): choose one ladder"
        )
    for i, r in enumerate(f.rungs):
        if not 0 < r <= 1:
            raise SpecError(
                f"search.fidelity.rungs[{i}]", f"a rung is a fraction of train.steps in (0, 1], got {r}"
            )
        if i and r <= f.rungs[i - 1]:
            raise SpecError(f"search.fidelity.rungs[{i}]", f"rungs must grow: {r} after {f.rungs[i - 1]}")
    if f.rungs[-1] != 1:
        raise SpecError(
            f"search.fidelity.rungs[{len(f.rungs) - 1}]",
            "the last rung is the full run (1): the winner is decided there",
        )
    for i, b in enumerate(fidelity_steps(spec)):
        if i and b <= fidelity_steps(spec)[i - 1]:
            raise SpecError(
                f"search.fidelity.rungs[{i}]", f"{f.rungs[i]} x {t.steps} steps is the rung before it"
            )
        if b - cooldown(b, t.decay_fraction) < t.warmup_steps:
            raise SpecError(
                f"search.fidelity.rungs[{i}]",
                f"a {b}-step rung's cooldown would start before the warmup ({t.warmup_steps} steps) ends",
            )


LAW_AXES = ("steps", "batch_size")


def check_laws(laws: Any) -> None:
    """``search.laws``: positive multiples, two or more distinct ones per axis (a line needs two)."""
    for axis in LAW_AXES:
        ms = getattr(laws, axis)
        for i, m in enumerate(ms):
            if not m > 0:
                raise SpecError(f"search.laws.{axis}[{i}]", f"multiples must be > 0, got {m}")
        if ms and len(set(ms)) < 2:
            raise SpecError(f"search.laws.{axis}", f"a law needs two or more distinct multiples, got {ms}")

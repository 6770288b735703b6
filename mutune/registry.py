"""The registries: model families and optimizers, each one registered object.

A family or an optimizer is registered here once, by name, with what the spec layer must know of
it (its checks, its smoke shape, the hyperparameters it reads) and a pointer to the module that
implements it with torch, imported only when a model is built or an optimizer made. So the spec
(``model.family``, ``train.optimizer``) is validated against this table without importing torch,
and adding a family or an optimizer touches this table and its own implementation, nothing in
search, transfer or the CLI.

What an implementation provides:

- a model family's module (``FamilyEntry.impl``): ``build(spec, hp, vocab_size, width)`` (the bare
  model at a width, on the current default device, with its forward multipliers),
  ``readout_names(spec)``, ``cost(spec, model, width, vocab_size)`` (a :class:`mutune.flops.Shape`:
  FLOPs per token, tokens per step, activation and logits sizes), ``coord_seq_len(spec, seq_len)``
  (the context the coord check may use) and ``after_init(model, spec)`` (family-specific
  re-initialisation, e.g. a zero query).
- an optimizer's constructor (``OptimizerEntry.constructor``): ``build(groups, hp)`` -> a
  ``torch.optim.Optimizer`` over mutune's param groups; its rules are the rows of
  :data:`mutune.rules.MUP` for the kinds its ``kind`` function maps parameters to.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from .errors import SpecError

# ---------------------------------------------------------------------------------------------
# Model families


def _no_checks(m: Any) -> None:
    return None


def _no_smoke(m: dict[str, Any]) -> None:
    return None


@dataclass(frozen=True)
class FamilyEntry:
    name: str
    doc: str
    impl: str  # the module implementing it (imports torch)
    multipliers: tuple[str, ...]  # the forward multipliers (hparams) it applies
    check: Callable[[Any], None] = _no_checks  # torch-free checks of the model section
    smoke: Callable[[dict[str, Any]], None] = _no_smoke  # family-specific shapes of --smoke
    owns: tuple[str, ...] = ()  # model.* keys only this family reads
    residual: bool = True  # its blocks are residual branches, so depth scaling (CompleteP) applies

    def module(self) -> ModuleType:
        return importlib.import_module(self.impl)


def _check_gpt(m: Any) -> None:
    if (m.head_dim is None) == (m.n_head is None):
        raise SpecError("model.head_dim", "set exactly one of model.head_dim and model.n_head")
    for key in ("head_dim", "n_head"):
        value = getattr(m, key)
        if value is not None and value <= 0:
            raise SpecError(f"model.{key}", f"must be > 0, got {value}")
    for key in ("width", "base_width"):
        w = getattr(m, key)
        div = m.head_dim or m.n_head
        if w % div:
            what = "model.head_dim" if m.head_dim else "model.n_head"
            raise SpecError(f"model.{key}", f"{w} is not divisible by {what}={div}")


def _smoke_gpt(m: dict[str, Any]) -> None:
    if m["head_dim"] is not None:
        m["head_dim"] = 16
    else:
        m["n_head"] = 2


FACTORY_PATTERN = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*:[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*$")


def _check_factory(m: Any) -> None:
    if not m.factory:
        raise SpecError("model.factory", "family 'factory' needs model.factory: 'package.module:function'")
    if not FACTORY_PATTERN.match(m.factory):
        raise SpecError(
            "model.factory",
            f"expected 'package.module:function' (an import path, no code), got {m.factory!r}",
        )
    if "width" in m.factory_kwargs:
        raise SpecError("model.factory_kwargs.width", "mutune passes the width itself (model.width)")
    for key, what in (("tie_embeddings", "ties its own weights"), ("zero_init_query", "owns its attention")):
        if getattr(m, key):
            raise SpecError(f"model.{key}", f"only for the built-in gpt; a factory model {what}")
    for i, name in enumerate(m.readout):
        if not name or name.startswith(".") or name.endswith("."):
            raise SpecError(f"model.readout[{i}]", f"expected a module name such as 'lm_head', got {name!r}")


FAMILIES: dict[str, FamilyEntry] = {
    f.name: f
    for f in (
        FamilyEntry(
            "gpt",
            "decoder-only LM",
            "mutune.models.gpt",
            ("alpha_in", "alpha_out", "alpha_attn"),
            check=_check_gpt,
            smoke=_smoke_gpt,
        ),
        FamilyEntry(
            "mlp", "the paper's MLP demo", "mutune.models.mlp", ("alpha_in", "alpha_out"), residual=False
        ),
        FamilyEntry(
            "factory",
            "your own, see model.factory",
            "mutune.models.factory",
            ("alpha_in", "alpha_out", "alpha_attn"),
            check=_check_factory,
            owns=("factory", "factory_kwargs", "readout"),
        ),
    )
}
FAMILY_NAMES = tuple(FAMILIES)


def check_family(m: Any) -> None:
    """The family's own checks, and no key of another family set."""
    entry = FAMILIES[m.family]
    for other in FAMILIES.values():
        for key in other.owns:
            if other is not entry and getattr(m, key):
                raise SpecError(
                    f"model.{key}", f"only used with model.family: {other.name} (family is {m.family!r})"
                )
    entry.check(m)


# ---------------------------------------------------------------------------------------------
# Optimizers


def _all(kind: str) -> Callable[[str, int], str]:
    return lambda role, ndim: kind


def _muon_kind(role: str, ndim: int) -> str:
    """Muon orthogonalises 2-D hidden matrices; everything else (embeddings, readout, norms, biases,
    and hidden weights that are not matrices, e.g. convolutions) goes to its AdamW."""
    return "muon" if role == "hidden" and ndim == 2 else "adam"


@dataclass(frozen=True)
class OptimizerEntry:
    name: str
    doc: str
    constructor: str  # "module:function": build(groups, hp) -> torch.optim.Optimizer
    kind: Callable[[str, int], str]  # (role, ndim) -> the rule-table kind it applies to that parameter
    state_bytes: Mapping[str, int] = field(default_factory=dict)  # optimizer state per parameter, per kind
    uses: tuple[str, ...] = ()  # the hparams it reads
    check_lr: float | None = None  # the coord check's LR; None: the middle of the searched LR range
    depth_rule: bool = False  # a published depth rule exists (rules.DEPTH_KINDS has all its kinds)

    def build(self, groups: list[dict], hp: Any) -> Any:
        module, _, attr = self.constructor.partition(":")
        return getattr(importlib.import_module(module), attr)(groups, hp)


OPTIMIZERS: dict[str, OptimizerEntry] = {
    o.name: o
    for o in (
        OptimizerEntry(
            "adamw",
            "AdamW",
            "mutune.optim:build_adamw",
            _all("adam"),
            {"adam": 8},
            ("beta1", "beta2"),
            check_lr=0.01,  # the LR of nanoGPT-mup's coord checks (see checks.default_lr)
            depth_rule=True,  # CompleteP (arXiv 2505.01618, Table 1)
        ),
        OptimizerEntry(
            "sgd", "SGD with momentum", "mutune.optim:build_sgd", _all("sgd"), {"sgd": 4}, ("momentum",)
        ),
        OptimizerEntry(
            "muon",
            "Muon for hidden matrices, AdamW for the rest",
            "mutune.optim:build_muon",
            _muon_kind,
            {"muon": 4, "adam": 8},
            ("beta1", "beta2", "momentum"),
            check_lr=0.02,  # measured: the clearest split of correct µP from a missing width rule (docs/mup.md)
        ),
    )
}
OPTIMIZER_NAMES = tuple(OPTIMIZERS)


def check_depth_scaling(m: Any, optimizer: str) -> None:
    """Depth scaling asked for (``model.base_depth`` set, α > 0) where no rule exists is refused, not guessed."""
    if m.base_depth is None or m.depth_alpha == 0:
        return
    if not FAMILIES[m.family].residual:
        raise SpecError(
            "model.base_depth",
            f"the {m.family} family has no residual branches, so depth scaling (CompleteP) does not apply; "
            "remove model.base_depth or set model.depth_alpha=0",
        )
    if not OPTIMIZERS[optimizer].depth_rule:
        with_rule = ", ".join(o.name for o in OPTIMIZERS.values() if o.depth_rule)
        raise SpecError(
            "model.base_depth",
            f"depth scaling has a published rule for {with_rule} only (CompleteP, arXiv 2505.01618); "
            f"train.optimizer={optimizer} has none and mutune does not guess one: set model.depth_alpha=0 "
            "or use adamw",
        )

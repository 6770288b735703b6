"""The optimizer registry: each optimizer one registered object, with the rule kind it gives each
parameter, the hyperparameters it reads, its state size and whether a depth rule exists for it.

An optimizer is registered here once, by name, with what the spec must know of it (validated
without torch) and a pointer to its torch constructor, imported only when an optimizer is made:
``constructor`` names ``build(groups, hp) -> torch.optim.Optimizer`` over mutune's param groups
(:func:`mutune.mup.optim.param_groups`); its rules are the rows of each parametrization's table
for the kinds its ``kind`` function maps parameters to. Adding an optimizer touches this table, its
constructor and its rows, nothing in search, transfer or the CLI.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any


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
    hparams: tuple[str, ...] = ()  # the hyperparameters it reads beyond lr and weight_decay
    check_lr: float | None = None  # the coord check's LR; None: the middle of the searched LR range
    depth_rule: bool = False  # a published depth rule exists for every kind it uses

    @property
    def kinds(self) -> tuple[str, ...]:
        """The rule kinds it maps parameters to (those it keeps state for)."""
        return tuple(self.state_bytes)

    def build(self, groups: list[dict], hp: Any) -> Any:
        module, _, attr = self.constructor.partition(":")
        return getattr(importlib.import_module(module), attr)(groups, hp)


OPTIMIZERS: dict[str, OptimizerEntry] = {
    o.name: o
    for o in (
        OptimizerEntry(
            "adamw",
            "AdamW",
            "mutune.mup.optim:build_adamw",
            _all("adam"),
            {"adam": 8},
            ("beta1", "beta2"),
            check_lr=0.01,  # the LR of nanoGPT-mup's coord checks (see checks.default_lr)
            depth_rule=True,  # CompleteP (arXiv 2505.01618, Table 1)
        ),
        OptimizerEntry(
            "sgd", "SGD with momentum", "mutune.mup.optim:build_sgd", _all("sgd"), {"sgd": 4}, ("momentum",)
        ),
        OptimizerEntry(
            "muon",
            "Muon for hidden matrices, AdamW for the rest",
            "mutune.mup.optim:build_muon",
            _muon_kind,
            {"muon": 4, "adam": 8},
            ("beta1", "beta2", "momentum"),
            check_lr=0.02,  # measured: the clearest split of correct µP from a missing width rule (docs/mup.md)
        ),
    )
}
OPTIMIZER_NAMES = tuple(OPTIMIZERS)


def get(name: str) -> OptimizerEntry:
    """The registered optimizer; anything else would silently get another optimizer's width rules."""
    if name not in OPTIMIZERS:
        raise ValueError(
            f"µP rules are implemented for {', '.join(OPTIMIZERS)} only, got {name!r} "
            "(Lion, Shampoo... need other width rules, TP5 App. B)"
        )
    return OPTIMIZERS[name]

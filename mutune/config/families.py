"""The model section of the spec, and the model families: each registers its own keys.

``model:`` holds the keys every family shares (:class:`ModelSpec`: family, width, depth, base
shapes, parametrization...) and the keys of its family, one dataclass per family that extends it
(:class:`GPTModel`: heads, MLP ratio, tied embeddings...; :class:`MoEModel` adds the experts). The YAML stays flat (``model.head_dim``);
the family picks the class, so another family's key is refused by name, and code reads
``spec.model.head_dim`` only where the family has one.

A family is registered once (:data:`FAMILIES`) with what the spec must know of it, torch-free: its
keys, its checks, its smoke shape, the forward multipliers it applies (so its default search space
and what may be searched), whether its blocks are residual branches (depth scaling), the starter
values of ``mutune init``, and the module that implements it with torch (imported only when a
model is built):

- ``build(spec, hp, vocab_size, width)``: the model at a width, on the current default device,
  with its forward multipliers; ``bare`` the same before any instrumentation;
- ``readout_names(spec)``, optionally ``router_names(spec)`` (a mixture's gates: role ``router``),
  ``validate(spec)`` (checks that need its code), ``after_init(model, spec)``,
  ``coord_seq_len(spec, seq_len)``, ``workload(spec, model, width, vocab_size)`` (FLOPs, tokens,
  activation sizes: a :class:`mutune.flops.Workload`).

Adding a family is its dataclass and entry here and its module in :mod:`mutune.models`.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from dataclasses import dataclass, fields
from types import ModuleType
from typing import Any, ClassVar, Literal

from ..errors import SpecError
from ..mup.parametrizations import PARAMETRIZATIONS
from ..mup.rules import ROLES
from .meaning import key
from .typed import DEPTH, NON_NEGATIVE, POSITIVE, SIZE, Range

PARAMETRIZATION_NAMES = {p.name: p.label for p in PARAMETRIZATIONS.values()}  # how tables name them
_PARAMETRIZATIONS = tuple(PARAMETRIZATIONS)


@dataclass
class ModelSpec:
    """The keys every family shares. The family's own keys are in its subclass."""

    variant_key: ClassVar[str] = "family"  # the key whose value picks the subclass

    family: str = key(
        "gpt",
        "model family, one of the registered ones (`mutune init --help` lists them)",
        across="fixed",
        note="the hyperparameters were tuned on the proxy's model family",
    )
    width: int = key(
        64,
        "width of the model being built: the proxy width in a search (d_model for gpt)",
        SIZE,
        across="axis",
    )
    base_width: int = key(
        64,
        "width at which µP equals SP; all µP multipliers are relative to it",
        SIZE,
        across="fixed",
        note="it defines what the tuned hyperparameters mean",
    )
    depth: int = key(2, "gpt: transformer blocks; mlp: hidden layers", DEPTH, across="axis")
    base_depth: int | None = key(
        None,
        "depth at which depth scaling is off (m_L = depth / base_depth); default: the proxy's own depth, so "
        "a target at another depth gets CompleteP's rules relative to the proxy",
        DEPTH,
        across="fixed",
        note="it defines what the tuned hyperparameters mean along depth (m_L = depth / base_depth)",
    )
    depth_alpha: float = key(
        1.0,
        "CompleteP's α: each residual branch × m_L^-α, with LRs to match; 1 = CompleteP, 0.5 = depth-µP, "
        "0 = no depth scaling",
        Range(0, 1),
        across="fixed",
        note="the hyperparameters were tuned under the proxy's depth parametrization",
    )
    seq_len: int = key(
        128,
        "gpt: context length; mlp: number of previous tokens fed as input",
        SIZE,
        across="approximate",
        note="sequence length: transfers roughly (TP5 Fig. 19) from ~128 up",
    )
    bias: bool = key(
        False,
        "use biases in Linear and LayerNorm layers",
        across="approximate",
        note="biases are parameters the proxy's search did not train with",
    )
    parametrization: Literal[_PARAMETRIZATIONS] = key(
        "mup",
        ", ".join(f"{p.name} ({p.doc})" for p in PARAMETRIZATIONS.values()),
        across="fixed",
        note="the hyperparameters were tuned under the proxy's parametrization",
    )
    zero_init_readout: bool = key(
        False,
        "µP option: initialise the readout to zero (TP5 App. D.2)",
        across="fixed",
        note="the readout's init is part of what the hyperparameters were tuned with",
    )

    @classmethod
    def variant(cls, data: dict[str, Any], where: str = "model") -> type[ModelSpec]:
        """The class of ``data``'s family (its own keys), for :func:`mutune.config.typed.build`."""
        name = data.get("family", "gpt")
        if name not in FAMILIES:
            choices = " | ".join(repr(n) for n in FAMILIES)
            raise SpecError(
                f"{where}.family" if where else "family", f"expected one of {choices}, got {name!r}"
            )
        return FAMILIES[name].spec

    @classmethod
    def default(cls) -> ModelSpec:
        """The model section of a spec that gives none: the default family's, with its defaults."""
        return cls.variant({})()

    @classmethod
    def variants(cls) -> list[type[ModelSpec]]:
        return [f.spec for f in FAMILIES.values()]

    @classmethod
    def elsewhere(cls, name: str) -> str:
        """For a key this family does not have: which families do."""
        owners = [f.name for f in FAMILIES.values() if name in {g.name for g in fields(f.spec)}]
        family = next((f.name for f in FAMILIES.values() if f.spec is cls), None)
        if not owners or family is None:
            return ""
        return f"not a key of the {family} family (only of {', '.join(owners)})"


@dataclass
class GPTModel(ModelSpec):
    head_dim: int | None = key(
        32,
        "gpt: fixed head dim, heads = width / head_dim (width grows through heads)",
        POSITIVE,
        across="fixed",
        note="the proxy's head_dim fixes the attention base; use n_head/head_dim as the proxy did",
    )
    n_head: int | None = key(
        None,
        "gpt: fixed head count instead of head_dim (width grows through head_dim)",
        POSITIVE,
        across="fixed",
        note="the proxy's head count fixes the attention base",
    )
    mlp_ratio: int = key(
        4,
        "gpt: MLP hidden size = mlp_ratio * width (moe: each expert's)",
        POSITIVE,
        across="approximate",
        note="MLP ratio: a different shape; the multipliers adapt but the optimum may move",
    )
    tie_embeddings: bool = key(
        False,
        "gpt: share the token embedding with the readout",
        across="fixed",
        note="a tied readout takes the embedding's init and LR: another model than the one tuned",
    )
    zero_init_query: bool = key(
        False,
        "µP option: initialise the attention query projection to zero",
        across="fixed",
        note="the query's init is part of what the hyperparameters were tuned with",
    )


@dataclass
class MoEModel(GPTModel):
    n_experts: int = key(
        4,
        "moe: experts in each block's mixture (every block's MLP is one; each expert has the GPT's MLP shape)",
        POSITIVE,
        across="axis",
    )
    base_experts: int | None = key(
        None,
        "moe: expert count at which the experts rules are off (m_E = n_experts / base_experts); default: the "
        "proxy's own, so a target with more experts gets them relative to the proxy",
        POSITIVE,
        across="fixed",
        note="it defines what the tuned hyperparameters mean along the experts axis",
    )
    top_k: int = key(
        2,
        "moe: experts each token is sent to, their gates renormalised to sum to 1 (>= 2: one gate of 1 "
        "teaches the router nothing)",
        POSITIVE,
        across="approximate",
        note="the experts a token meets: another mixture; the multipliers adapt but the optimum may move",
    )
    balance: float = key(
        0.01,
        "moe: weight of the load-balancing loss (Switch Transformer's n_experts·Σ f_e·P_e, 1 when the load "
        "is even) added to the training loss; 0 = off",
        NON_NEGATIVE,
        across="fixed",
        note="the balancing pressure is part of the objective the hyperparameters were tuned with",
    )


@dataclass
class MLPModel(ModelSpec):
    pass


@dataclass
class FactoryModel(ModelSpec):
    factory: str | None = key(
        None,
        "factory: 'package.module:function' or 'path/to/file.py:function' (a path relative to the spec "
        "file's folder), called as function(width, **factory_kwargs) -> nn.Module whose forward(idx) "
        "returns logits (imported, never evaluated; see docs/mup.md)",
        across="fixed",
        note="the hyperparameters were tuned on the proxy's model",
    )
    factory_kwargs: dict[str, Any] = key(
        {},
        "factory: keyword arguments for the factory function",
        across="approximate",
        note="a different shape of your model; the multipliers adapt but the optimum may move",
    )
    readout: list[str] = key(
        [],
        "factory: readout module names, e.g. [lm_head] (default: inferred from the shapes)",
        across="fixed",
        note="it decides where α_out/m applies, part of what the hyperparameters mean",
    )
    roles: dict[str, Literal[ROLES]] = key(
        {},
        "factory: the µP role of named parameters, e.g. {pos: embedding}, overriding what mutune finds "
        "(from the module holding it, else from how the forward uses it, else from its shape; "
        "`mutune inspect` shows which)",
        across="fixed",
        note="a role decides a parameter's init, LR and multipliers: part of what the hyperparameters mean",
    )
    task: Literal["next_token", "classification"] = key(
        "next_token",
        "factory: next_token (token ids in, next-token logits out, on data.corpus) or classification "
        "(tensors in, class logits out, on the (x, y) examples of data.module)",
        across="fixed",
        note="the hyperparameters were tuned on the proxy's task",
    )
    allow_unchecked: list[Literal["attention"]] = key(
        [],
        "factory: what the coord check may leave unchecked: [attention] passes a model whose attention "
        "scores it cannot see (otherwise its verdict is incomplete); as --allow-unchecked",
        across="free",
        effect="none",
    )


# ---------------------------------------------------------------------------------------------
# The registry


def _no_checks(m: Any) -> None:
    return None


def _no_smoke(m: dict[str, Any]) -> None:
    return None


@dataclass(frozen=True)
class FamilyEntry:
    name: str
    doc: str
    spec: type[ModelSpec]  # its model section: the shared keys and its own
    impl: str  # the module implementing it (imports torch)
    multipliers: tuple[str, ...]  # the forward multipliers (hparams) it applies: searchable
    check: Callable[[Any], None] = _no_checks  # torch-free checks of its model section
    smoke: Callable[[dict[str, Any]], None] = _no_smoke  # its shapes under --smoke
    residual: bool = True  # its blocks are residual branches, so depth scaling (CompleteP) applies
    starter: dict[str, dict[str, Any]] | None = None  # `mutune init --model NAME`: values by section
    # the parametrizations its model can compute (u-µP needs every op of the forward unit-scaled)
    parametrizations: tuple[str, ...] = ("mup", "sp")

    def module(self) -> ModuleType:
        return importlib.import_module(self.impl)


def _check_gpt(m: GPTModel) -> None:
    if (m.head_dim is None) == (m.n_head is None):
        raise SpecError("model.head_dim", "set exactly one of model.head_dim and model.n_head")
    for k in ("width", "base_width"):
        w, div = getattr(m, k), m.head_dim or m.n_head
        if w % div:
            what = "model.head_dim" if m.head_dim else "model.n_head"
            raise SpecError(f"model.{k}", f"{w} is not divisible by {what}={div}")
    if m.zero_init_readout and m.tie_embeddings:
        raise SpecError("model.zero_init_readout", "cannot zero-init a readout tied to the embedding")


def _smoke_gpt(m: dict[str, Any]) -> None:
    if m["head_dim"] is not None:
        m["head_dim"] = 16
    else:
        m["n_head"] = 2


def _check_moe(m: MoEModel) -> None:
    _check_gpt(m)
    if m.top_k < 2:
        raise SpecError(
            "model.top_k",
            f"must be >= 2, got {m.top_k}: the gates are renormalised over the chosen experts, so one expert's "
            "gate is always 1 and the router would learn from the balancing loss alone",
        )
    if m.top_k > m.n_experts:
        raise SpecError("model.top_k", f"{m.top_k} is more than model.n_experts={m.n_experts}")


def _smoke_moe(m: dict[str, Any]) -> None:
    _smoke_gpt(m)
    m["n_experts"] = min(m["n_experts"], 4)
    m["top_k"] = min(m["top_k"], m["n_experts"])
    if m["base_experts"] is not None:  # the experts rules stay asked for, and are off at the smoke proxy
        m["base_experts"] = m["n_experts"]


FACTORY_PATTERN = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*:[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*$")
FACTORY_FILE_PATTERN = re.compile(r"^[^:]+\.py:[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*$")  # file.py:function


def _check_factory(m: FactoryModel) -> None:
    if not m.factory:
        raise SpecError("model.factory", "family 'factory' needs model.factory: 'package.module:function'")
    if not (FACTORY_PATTERN.match(m.factory) or FACTORY_FILE_PATTERN.match(m.factory)):
        raise SpecError(
            "model.factory",
            f"expected 'package.module:function' or 'file.py:function' (no code), got {m.factory!r}",
        )
    if "width" in m.factory_kwargs:
        raise SpecError("model.factory_kwargs.width", "mutune passes the width itself (model.width)")
    for i, name in enumerate(m.readout):
        if not name or name.startswith(".") or name.endswith("."):
            raise SpecError(f"model.readout[{i}]", f"expected a module name such as 'lm_head', got {name!r}")
    for name in m.roles:
        if not name or name.startswith(".") or name.endswith("."):
            raise SpecError(f"model.roles.{name}", f"expected a parameter name such as 'pos', got {name!r}")


FAMILIES: dict[str, FamilyEntry] = {
    f.name: f
    for f in (
        FamilyEntry(
            "gpt",
            "decoder-only LM",
            GPTModel,
            "mutune.models.gpt",
            ("alpha_in", "alpha_out", "alpha_attn", "alpha_res", "alpha_res_attn_ratio", "alpha_ffn_act"),
            check=_check_gpt,
            smoke=_smoke_gpt,
            parametrizations=("mup", "sp", "umup"),
        ),
        FamilyEntry(
            "moe",
            "decoder-only LM whose MLPs are mixtures of experts (top-k routing)",
            MoEModel,
            "mutune.models.moe",
            ("alpha_in", "alpha_out", "alpha_attn"),
            check=_check_moe,
            smoke=_smoke_moe,
        ),
        FamilyEntry(
            "mlp",
            "the paper's MLP demo",
            MLPModel,
            "mutune.models.mlp",
            ("alpha_in", "alpha_out"),
            residual=False,
            starter={
                "model": {"width": 128, "base_width": 128, "depth": 2, "seq_len": 16},
                "train": {"steps": 300, "batch_size": 64, "eval_every": 100},
                "hparams": {"lr": 0.003, "init_std": 0.1},
                "target": {"width": 1024},
            },
        ),
        FamilyEntry(
            "factory",
            "your own, see model.factory",
            FactoryModel,
            "mutune.models.factory",
            ("alpha_in", "alpha_out", "alpha_attn"),
            check=_check_factory,
            # the example in examples/my_model.py (run from the repository root, or put your own here)
            starter={
                "model": {
                    "factory": "examples.my_model:build",
                    "factory_kwargs": {"depth": 2, "head_dim": 16},
                    "readout": ["unembed"],
                }
            },
        ),
    )
}
FAMILY_NAMES = tuple(FAMILIES)


def family(name: str) -> FamilyEntry:
    return FAMILIES[name]

"""The vocabulary of a µP rule table: how init, LR, weight decay and Adam ε scale, per (optimizer
kind, role), and the functions that read a parametrization's table for one parameter.

Each :class:`RoleRule` gives, per quantity, the *exponents* of the parameter's multipliers along the
scaling axes (:mod:`mutune.mup.axes`), so a table reads like the papers' tables and a new axis is a
new exponent, not a branch:

- width: ``fan_in``, ``fan_out`` (m_in = fan_in / base fan_in, m_out likewise) and ``width`` (m of a
  vector-like parameter's one width dim, mup's ``infshape.width_mult()``);
- depth: ``depth`` and ``depth_alpha``: the exponent of m_L = L / L_base is ``depth + depth_alpha·α``
  (α = ``model.depth_alpha``); it applies to per-block parameters only (m_L = 1 for the rest, and
  everywhere at L == L_base).

The tables themselves (µP's "Table 8" form, SP's), and reading them for one parameter, are the
parametrizations' (:mod:`mutune.mup.parametrizations`). Roles (:mod:`mutune.mup.shapes`):
``embedding``, ``input``, ``hidden``, ``readout``, ``router`` (an internal width → fixed-size map, e.g.
a mixture's gate: readout-like, but inside the network), ``vector``, ``scalar``.

This module imports nothing of the spec and no torch: it raises plain ``ValueError``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from .axes import FACTORS

if TYPE_CHECKING:
    from .shapes import ParamInfo, Role

InitFanIn = Literal["fan_in", "base_fan_in", "none", "unit"]
InitKind = Literal["normal", "zeros", "ones", "keep"]
ROLES: tuple[Role, ...] = ("embedding", "input", "hidden", "readout", "router", "vector", "scalar")
KINDS = ("adam", "sgd", "muon")  # rule kinds with a table; an optimizer maps each parameter to one of them


@dataclass(frozen=True)
class Scaling:
    """A multiplier: the product over the axes' factors (:data:`~mutune.mup.axes.FACTORS`) of each
    factor to its exponent, ``exponent + alpha_exponent·α``. Written ``Scaling.of(fan_in=-1, depth=-1,
    depth_alpha=1)``: a ``<factor>_alpha`` key is the exponent per unit of α."""

    terms: tuple[tuple[str, float, float], ...] = ()  # (factor, exponent, exponent per unit of α)

    @classmethod
    def of(cls, **exponents: float) -> Scaling:
        alpha = {k.removesuffix("_alpha"): v for k, v in exponents.items() if k.endswith("_alpha")}
        plain = {k: v for k, v in exponents.items() if not k.endswith("_alpha")}
        unknown = (set(plain) | set(alpha)) - set(FACTORS)
        if unknown:
            raise ValueError(
                f"no scaling axis has the factor(s) {sorted(unknown)} (known: {', '.join(FACTORS)})"
            )
        return cls(
            tuple(
                (f, float(plain.get(f, 0)), float(alpha.get(f, 0)))
                for f in FACTORS
                if f in plain or f in alpha
            )
        )

    def exponent(self, factor: str, alpha: float = 1.0) -> float:
        return next((e + a * alpha for f, e, a in self.terms if f == factor), 0.0)

    def plus(self, **exponents: float) -> Scaling:
        """This scaling with ``exponents`` added to its own (a deliberate violation, in the tests)."""
        mine = {f: e for f, e, _ in self.terms} | {f"{f}_alpha": a for f, _, a in self.terms if a}
        for k, v in exponents.items():
            mine[k] = mine.get(k, 0) + v
        return Scaling.of(**mine)

    def __call__(self, info: ParamInfo, alpha: float = 1.0) -> float:
        # positive powers multiply the numerator, negative ones the denominator, so that the
        # familiar ratios (fan_out_mult / fan_in_mult, 1 / fan_in_mult) come out exactly as written
        num = den = 1.0
        for f, e, a in self.terms:  # in the order of FACTORS (see `of`)
            m, e = info.factor(f), e + a * alpha
            if e > 0:
                num *= m if e == 1 else m**e
            elif e < 0:
                den *= m if e == -1 else m**-e
        return num / den


ONE = Scaling()


@dataclass(frozen=True)
class RoleRule:
    """How one role's init, LR, weight decay and ε scale. ``init_fan_in``: a normal init has std
    σ·√(base_width / fan_in) at the fan-in named here (``none``: σ, whatever the fan-in; ``unit``: 1,
    whatever σ, as unit scaling initialises)."""

    init_fan_in: InitFanIn = "fan_in"
    lr: Scaling = ONE
    weight_decay: Scaling = ONE
    eps: Scaling = ONE
    same_fan_mults: bool = False  # the rule assumes fan-in and fan-out grow by the same factor


@dataclass(frozen=True)
class Rule:
    """One parameter's treatment: its init and its LR / weight-decay / ε multipliers."""

    init: InitKind
    std: float
    lr_mult: float
    wd_mult: float  # 0 means not decayed
    eps_mult: float


def init_kind(info: ParamInfo) -> InitKind:
    """Norm gains start at 1 and biases at 0; other 1-D parameters keep the model's own init."""
    if info.module_kind == "norm":
        return "zeros" if info.is_bias else "ones"
    if info.role in ("vector", "scalar") and len(info.shape) < 2:
        return "zeros" if info.is_bias else "keep"
    return "normal"

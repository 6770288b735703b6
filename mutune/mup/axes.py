"""The scaling axes: the sizes a model grows along from proxy to target, each one object.

An axis names the spec key it sets (``model.width``), the key of its base (``model.base_width``: the
size at which its multiplier is 1), the short key ``--to`` accepts (``width=1024``), how a parameter
is found to scale along it, and the multipliers it contributes to a parameter's rules (the names the
exponents of :class:`mutune.mup.rules.Scaling` use):

- **width**: found by shape (the dims that differ between models built at two widths); a parameter
  gets m_in (``fan_in``), m_out (``fan_out``) and, for a vector-like one, m of its one width dim
  (``width``), each relative to the base width (TP5 App. B).
- **depth**: found by name (the parameters of a repeated block, :func:`mutune.mup.shapes.per_block`);
  a per-block parameter gets m_L = depth / base_depth (``depth``), raised to exponents that may
  involve CompleteP's α (Dey et al., arXiv 2505.01618).
- **experts**: found by unit (:func:`mutune.mup.shapes.per_unit`: the parameters of each expert of a
  mixture, whose names carry an index that grows with the count, and those sized by the count, the
  routers); such a parameter gets m_E = n_experts / base_experts (``experts``). With ``top_k`` fixed,
  each expert sees a fraction top_k / n_experts of the tokens, so its gradient, and a router row's,
  shrinks like 1/m_E while the forward does not change size (the gates are renormalised over the
  chosen experts, :mod:`mutune.models.moe`): the rules put back what an optimizer does not normalise
  away (:mod:`mutune.mup.parametrizations`).

Each axis also names the *absolute* size a parameter has along it (``size_in``: a weight's fan-in as
unit scaling counts it; ``blocks``: the number of blocks; ``n_experts``: the experts of its mixture),
for rules stated in sizes rather than in multipliers of a base shape (u-µP's: a weight's LR
η·fan_in^-1/2, a block's depth^-1/2).

Adding an axis is one more :class:`Axis` here, its detection in :mod:`mutune.mup.shapes` where it is
found by something new, and the rows of the rule tables that use its multiplier. Whether an axis
*applies* to a given spec (depth needs residual branches and an optimizer with a published rule; the
experts a family with a mixture) is the spec's decision (:mod:`mutune.config.axes`).
This module is plain data: no torch, no spec.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class Axis:
    name: str
    key: str  # the spec key the axis sets
    base_key: str  # the spec key of its base: the multiplier is key / base_key
    doc: str
    found_by: Literal["shape", "blocks", "units"]  # how a parameter is found to scale along it
    factors: tuple[str, ...]  # its multipliers, as the rule table's exponents name them
    size: str  # the absolute size a parameter has along it, for rules stated in sizes (u-µP's)

    @property
    def short(self) -> str:
        """What ``--to`` accepts for it: ``width=1024``, ``depth=8``, ``experts=16``."""
        return self.name

    def mult(self, value: float, base: float) -> float:
        """The axis's multiplier at ``value`` against ``base``: m = value / base."""
        return value / base


WIDTH = Axis(
    "width",
    "model.width",
    "model.base_width",
    "µP: hidden sizes grow; LR, init and multipliers follow m = width / base_width",
    "shape",
    ("fan_out", "fan_in", "width"),
    "size_in",  # a weight's fan-in as unit scaling counts it: its second dim (an embedding's width)
)
DEPTH = Axis(
    "depth",
    "model.depth",
    "model.base_depth",
    "CompleteP: blocks are added; per-block LR, ε and the residual branches follow m_L = depth / base_depth",
    "blocks",
    ("depth",),
    "blocks",  # the number of blocks, for a per-block parameter
)

EXPERTS = Axis(
    "experts",
    "model.n_experts",
    "model.base_experts",
    "experts are added to each mixture (top_k fixed); expert and router LR (SGD), ε (Adam) and decay "
    "follow m_E = n_experts / base_experts",
    "units",
    ("experts",),
    "n_experts",  # the number of experts of the mixture a parameter belongs to
)

AXES: dict[str, Axis] = {a.name: a for a in (WIDTH, DEPTH, EXPERTS)}
# every multiplier name a rule's exponent may use, in the order they are multiplied: the relative
# multipliers (µP's, relative to the base shape), then the absolute sizes (u-µP's rules are stated in them)
FACTORS: tuple[str, ...] = tuple(f for a in AXES.values() for f in a.factors) + tuple(
    a.size for a in AXES.values()
)


def by_key(key: str) -> Axis | None:
    """The axis that sets spec key ``key`` (``model.depth``), or whose short key it is (``depth``)."""
    return next((a for a in AXES.values() if key in (a.key, a.short)), None)

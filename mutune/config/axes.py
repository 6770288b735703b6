"""Which scaling axes apply to a spec, and the multiplier each gives it: decided from the spec alone.

Whether the spec's *model* can apply what is decided here (a factory that does not take
``residual_mult`` cannot scale its residual branches) needs the model's code, which this layer does
not import: :func:`mutune.models.check_axes` asks this module and the family, and is what every
command that plans or trains along an axis calls. Width always applies. Depth (CompleteP) applies where the rules exist: ``model.depth_alpha`` > 0, a
family whose blocks are residual branches, an optimizer with a published depth rule. A spec that
asks for depth scaling where it does not apply is refused (:func:`check`); a target at another depth
where it does not apply trains as asked, with a warning (:func:`why_not`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import SpecError
from ..mup.axes import AXES, Axis
from ..mup.optimizers import OPTIMIZERS
from ..mup.parametrizations import PARAMETRIZATIONS
from .families import FAMILIES

if TYPE_CHECKING:
    from .schema import Spec


def why_not(spec: Spec, axis: Axis | str) -> str:
    """Why ``axis``'s rules do not apply to ``spec`` ('' when they do)."""
    axis = AXES[axis] if isinstance(axis, str) else axis
    if axis.name != "depth":
        return ""
    m, opt = spec.model, spec.train.optimizer
    par = PARAMETRIZATIONS[m.parametrization]
    if own_rule(spec, axis):
        return f"{par.label} scales depth by its own rule, in the number of blocks"
    if m.depth_alpha == 0:
        return "model.depth_alpha is 0"
    if not FAMILIES[m.family].residual:
        return f"the {m.family} family has no residual branches"
    if not OPTIMIZERS[opt].depth_rule:
        return f"train.optimizer={opt} has no published depth rule"
    return ""


def own_rule(spec: Spec, axis: Axis | str) -> bool:
    """Whether the spec's parametrization states its rules along ``axis`` in absolute sizes (u-µP's
    depth^-1/2), so the relative rules (CompleteP's m_L) do not apply: a target at another size along
    it transfers by that rule."""
    axis = AXES[axis] if isinstance(axis, str) else axis
    return PARAMETRIZATIONS[spec.model.parametrization].uses(axis.size)


def base(spec: Spec, axis: Axis | str) -> int:
    """The axis's base size: ``model.base_width``; ``model.base_depth``, else the model's own depth."""
    axis = AXES[axis] if isinstance(axis, str) else axis
    m = spec.model
    return m.base_width if axis.name == "width" else (m.base_depth or m.depth)


def value(spec: Spec, axis: Axis | str) -> int:
    """The spec's size along the axis (``model.width``, ``model.depth``)."""
    axis = AXES[axis] if isinstance(axis, str) else axis
    section, _, name = axis.key.partition(".")
    return getattr(getattr(spec, section), name)


def mult(spec: Spec, axis: Axis | str) -> float:
    """The axis's multiplier for ``spec`` (m = width / base_width; m_L = depth / base_depth where depth
    scaling applies), 1 where it does not apply or the size is the base."""
    axis = AXES[axis] if isinstance(axis, str) else axis
    size, b = value(spec, axis), base(spec, axis)
    if size == b or why_not(spec, axis):
        return 1.0
    return axis.mult(size, b)


def check(spec: Spec) -> None:
    """Depth scaling asked for (``model.base_depth`` set, α > 0) where no rule exists is refused, not
    guessed."""
    m = spec.model
    if m.base_depth is None or m.depth_alpha == 0:
        return
    if own_rule(spec, "depth"):
        raise SpecError(
            "model.base_depth",
            f"{PARAMETRIZATIONS[m.parametrization].label} scales depth by its own rule (in the number of blocks), "
            "so CompleteP's base depth does not apply; remove model.base_depth",
        )
    if not FAMILIES[m.family].residual:
        raise SpecError(
            "model.base_depth",
            f"the {m.family} family has no residual branches, so depth scaling (CompleteP) does not apply; "
            "remove model.base_depth or set model.depth_alpha=0",
        )
    opt = spec.train.optimizer
    if not OPTIMIZERS[opt].depth_rule:
        with_rule = ", ".join(o.name for o in OPTIMIZERS.values() if o.depth_rule)
        raise SpecError(
            "model.base_depth",
            f"depth scaling has a published rule for {with_rule} only (CompleteP, arXiv 2505.01618); "
            f"train.optimizer={opt} has none and mutune does not guess one: set model.depth_alpha=0 "
            "or use adamw",
        )

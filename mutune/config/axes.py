"""Which scaling axes apply to a spec, and the multiplier each gives it: decided from the spec alone.

An axis applies where the spec's family has its key (a GPT has no experts) and where its own
requirements hold. Width always applies. Depth (CompleteP) applies where the rules exist:
``model.depth_alpha`` > 0, a family whose blocks are residual branches, an optimizer with a published
depth rule, a parametrization without its own depth rule (u-µP's, in the number of blocks). The
experts (a mixture's) apply with an optimizer whose every rule kind has an experts rule in the
parametrization (AdamW, Muon; not SGD). A spec that asks for depth scaling where it does not apply
is refused (:func:`check`); a target at another depth where it does not apply trains as asked, with
a warning (:func:`why_not`).

An axis's base is its ``base_key`` (``model.base_width``), or where that is unset (``model.base_depth:
null``) the spec's own size: a target derived from a proxy pins the proxy's (:mod:`.target`).

Whether the spec's *model* can apply what is decided here (a factory that does not take
``residual_mult`` cannot scale its residual branches) needs the model's code, which this layer does
not import: :func:`mutune.models.check_axes` asks this module and the family, and is what every
command that plans or trains along an axis calls.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..errors import SpecError
from ..mup.axes import AXES, Axis
from ..mup.optimizers import OPTIMIZERS
from ..mup.parametrizations import PARAMETRIZATIONS
from .families import FAMILIES

if TYPE_CHECKING:
    from .schema import Spec


def _axis(axis: Axis | str) -> Axis:
    return AXES[axis] if isinstance(axis, str) else axis


def _get(spec: Spec, dotted: str) -> Any:
    """A spec value by dotted key; None where the spec's family has no such key."""
    section, _, name = dotted.partition(".")
    return getattr(getattr(spec, section), name, None)


def present(spec: Spec, axis: Axis | str) -> bool:
    """Whether the spec's model has the axis at all (its family declares the axis's key)."""
    return _get(spec, _axis(axis).key) is not None


def _depth_needs(spec: Spec) -> str:
    m, opt = spec.model, spec.train.optimizer
    par = PARAMETRIZATIONS[m.parametrization]
    if own_rule(spec, "depth"):
        return f"{par.label} scales depth by its own rule, in the number of blocks"
    if m.depth_alpha == 0:
        return "model.depth_alpha is 0"
    if not FAMILIES[m.family].residual:
        return f"the {m.family} family has no residual branches"
    if not OPTIMIZERS[opt].depth_rule:
        return f"train.optimizer={opt} has no published depth rule"
    return ""


def _experts_needs(spec: Spec) -> str:
    opt = OPTIMIZERS[spec.train.optimizer]
    with_rule = PARAMETRIZATIONS[spec.model.parametrization].axis_kinds.get("experts", ())
    if any(kind not in with_rule for kind in opt.kinds):
        return f"train.optimizer={opt.name} has no experts rule"
    return ""


# what each axis needs beyond its key, and how to meet it (said where a target changes it anyway)
_NEEDS: dict[str, tuple[Callable[[Spec], str], str]] = {
    "depth": (_depth_needs, "CompleteP applies with model.depth_alpha > 0, a residual family and adamw"),
    "experts": (_experts_needs, "the experts rules apply with adamw or muon"),
}


def why_not(spec: Spec, axis: Axis | str) -> str:
    """Why ``axis``'s rules do not apply to ``spec`` ('' when they do)."""
    axis = _axis(axis)
    if not present(spec, axis):
        return f"the {spec.model.family} family has no {axis.key}"
    needs = _NEEDS.get(axis.name)
    return needs[0](spec) if needs else ""


def remedy(axis: Axis | str) -> str:
    """How to make ``axis``'s rules apply where :func:`why_not` says they do not ('' if nothing to say)."""
    needs = _NEEDS.get(_axis(axis).name)
    return needs[1] if needs else ""


def own_rule(spec: Spec, axis: Axis | str) -> bool:
    """Whether the spec's parametrization states its rules along ``axis`` in absolute sizes (u-µP's
    depth^-1/2), so the relative rules (CompleteP's m_L) do not apply: a target at another size along
    it transfers by that rule."""
    axis = AXES[axis] if isinstance(axis, str) else axis
    return PARAMETRIZATIONS[spec.model.parametrization].uses(axis.size)


def base(spec: Spec, axis: Axis | str) -> int:
    """The axis's base size: its base key (``model.base_width``), else the model's own size
    (``model.base_depth`` unset: the model's depth)."""
    axis = _axis(axis)
    return _get(spec, axis.base_key) or value(spec, axis)


def bases(spec: Spec) -> dict[str, int]:
    """``base_<axis>`` of every axis the spec's family has (``base_width``, ``base_depth``,
    ``base_experts``): what the tuned hyperparameters are relative to, recorded in best.yaml's
    provenance and checked against a target's spec."""
    return {f"base_{a.name}": base(spec, a) for a in AXES.values() if present(spec, a)}


def value(spec: Spec, axis: Axis | str) -> int:
    """The spec's size along the axis (``model.width``, ``model.depth``)."""
    return _get(spec, _axis(axis).key)


def mult(spec: Spec, axis: Axis | str) -> float:
    """The axis's multiplier for ``spec`` (m = width / base_width; m_L = depth / base_depth where depth
    scaling applies), 1 where it does not apply or the size is the base."""
    axis = _axis(axis)
    if why_not(spec, axis):
        return 1.0
    size, b = value(spec, axis), base(spec, axis)
    if size == b:
        return 1.0
    return axis.mult(size, b)


def check(spec: Spec) -> None:
    """Depth scaling asked for (``model.base_depth`` set, α > 0), or the experts rules
    (``model.base_experts`` set), where no rule exists is refused, not guessed."""
    m = spec.model
    if getattr(m, "base_experts", None) is not None and (why := _experts_needs(spec)):
        raise SpecError(
            "model.base_experts",
            f"{why} (the expert and router updates of SGD shrink with the expert count by no single "
            "power, docs/mup.md) and mutune does not guess one: remove model.base_experts or use adamw or muon",
        )
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

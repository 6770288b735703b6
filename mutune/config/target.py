"""The one target derivation: the proxy's spec at the target's shape, and what the change means.

A target is the proxy's spec with some keys changed: ``--to KEY=VALUE`` on the command line, or
the spec's own ``target:`` section (``target.width`` and ``target.overrides``). Each key is read by
its meaning (:mod:`.meaning`): a hyperparameter comes from best.yaml, unchanged (refused); a key
that defines what the hyperparameters mean must keep the proxy's value (refused, saying why); a
key of the search is not a run's (refused); an axis (width, depth, experts) changes freely; a key the
optimum moves with, or that transfers only roughly, changes with a warning saying so.
A target at another depth gets CompleteP's rules relative to the proxy's base depth (pinned in the
target spec) where they apply (:mod:`.axes`), and a warning why not where they do not; so does every
axis whose base defaults to the model's own size.

The same function serves every caller, so they cannot disagree: the spec's validation at load (a
target the transfer would refuse is refused before any trial, naming ``target.…``), the budget's
plan, ``mutune transfer`` and ``mutune inspect`` (naming ``--to …``).
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import SpecError, arg
from ..mup.axes import AXES
from ..mup.axes import by_key as axis_by_key
from . import axes
from .meaning import NAMING_EFFECTS, meaning_of
from .schema import Spec, from_dict
from .typed import leaf_keys, parse_override
from .variants import smoke

SMOKE_MAX_WIDTH = 128


@dataclass
class Target:
    """A derived target: its spec, the canonical changes (``model.width`` -> 1024) and the warnings."""

    spec: Spec
    changes: dict[str, Any]
    warnings: list[str] = field(default_factory=list)

    def key(self) -> str:
        """The target folder's name: ``width1024-steps400``. Keys that do not change what is trained
        (the device, the evaluation cadence, a tracker) do not name it."""
        parts = [
            k.rsplit(".", 1)[-1] + re.sub(r"[^A-Za-z0-9.]+", "_", str(value))
            for k, value in self.changes.items()
            if meaning_of(Spec, k).effect in NAMING_EFFECTS
        ]
        return "-".join(parts) or "default"


def canonical(k: str) -> str:
    """``width`` -> ``model.width``: an axis's short key as the spec key it sets."""
    axis = axis_by_key(k)
    return axis.key if axis is not None else k


def own_changes(spec: Spec) -> dict[str, Any]:
    """The changes a spec's own ``target`` section asks for; a key it gives twice (``target.width``
    and ``width`` in ``target.overrides``, or ``width`` and ``model.width`` there) is refused, not
    decided silently by which one comes last."""
    t = spec.target
    out: dict[str, Any] = {"model.width": t.width} if t.width is not None else {}
    for k, v in t.overrides.items():
        c = canonical(k)
        if c in out:
            first = "target.width" if c == "model.width" and t.width is not None else "target.overrides"
            raise SpecError(
                f"target.overrides.{k}",
                f"{c} is given twice ({out[c]!r} in {first}, and {v!r}); give it once",
            )
        out[c] = v
    return out


# ``--to width=256,depth=8``: a comma followed by another KEY= starts another change (a comma inside a
# value, as in ``search.rungs=[1,2]``, is not followed by a key)
_NEXT_CHANGE = re.compile(r",\s*(?=[A-Za-z_][\w.]*=)")


def parse_changes(tokens: Sequence[str], source: str = "to") -> dict[str, Any]:
    """``["width=1024", "train.steps=400"]`` (or ``["width=1024,train.steps=400"]``) as canonical
    changes; a key given twice is refused, even with the same value (one of them is a typo)."""
    out: dict[str, Any] = {}
    for token in tokens:
        for part in _NEXT_CHANGE.split(token):
            k, value = parse_override(part)
            k = canonical(k)
            if k in out:
                raise SpecError(f"{source} {k}", f"given twice ({out[k]!r} and {value!r}); give it once")
            out[k] = value
    return out


def names_target(k: str) -> bool:
    """A key that changes what a target trains (an unknown one too: the derivation names it)."""
    m = meaning_of(Spec, canonical(k))
    return m is None or m.effect in NAMING_EFFECTS


def changes_for(proxy: Spec, to: Sequence[str]) -> dict[str, Any]:
    """A transfer's changes: ``to``'s; where they only say how to run (a tracker, the threads), the
    spec's own target with them; refused when neither names a target."""
    changes = parse_changes(to)
    if not any(names_target(k) for k in changes):
        changes = {**own_changes(proxy), **changes}
    if not any(names_target(k) for k in changes):
        raise SpecError("to", f"give {arg('to', ['width=W'])} (the spec names no target.width)")
    return changes


def _check_key(k: str, where: str) -> None:
    """A short key the schema does not have is refused with the closest one (``widht`` -> ``width``)."""
    if "." in k:
        return  # a dotted key is checked, part by part with its suggestions, when the spec is built
    leaves = {a.short: a.short for a in AXES.values()}
    for dotted in leaf_keys(Spec):
        leaves.setdefault(dotted.rsplit(".", 1)[-1], dotted)
    hint = difflib.get_close_matches(k, list(leaves), n=1)
    suggestion = f" (did you mean '{leaves[hint[0]]}'?)" if hint else ""
    raise SpecError(where, f"unknown key{suggestion}")


def _value(tree: dict, dotted: str) -> Any:
    node: Any = tree
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def derive(
    proxy: Spec,
    changes: Mapping[str, Any] | Sequence[str],
    *,
    source: str = "to",
    smoke_run: bool = False,
    force: bool = False,
) -> Target:
    """The target of ``proxy`` with ``changes`` (canonical or short keys, or ``KEY=VALUE`` tokens).

    ``source`` names where the changes came from in errors: ``to`` (``to model.base_width: …``, which
    the command line prints as ``--to model.base_width: …``) or ``target`` (the spec's own section: ``target.overrides.model.base_width: …``). ``smoke_run``
    derives from the proxy's smoke variant and caps the width; ``force`` also lets a target above the
    device's free memory try (``train.memory_check: false``).
    """
    if not isinstance(changes, Mapping):
        changes = parse_changes(changes, source)
    changes = {canonical(k): v for k, v in changes.items()}
    base = smoke(proxy) if smoke_run else proxy

    def where(k: str) -> str:
        if source != "target":
            return f"{source} {k}"
        if k == "model.width" and proxy.target.width is not None:
            return "target.width"
        return f"target.overrides.{k}" if k in changes else k

    d = base.to_dict()
    warnings: list[str] = []
    for k, value in changes.items():
        meaning = meaning_of(Spec, k)
        if meaning is None:  # unknown: a short key gets the closest one here, a dotted one when it is built
            _check_key(k, where(k))
            continue
        if meaning.across == "tuned":
            raise SpecError(
                where(k), "hyperparameters come from best.yaml, unchanged; tune them in the search"
            )
        if meaning.across == "search":
            raise SpecError(where(k), "not used by a target run")
        if meaning.across == "fixed" and value != _value(d, k):
            raise SpecError(where(k), f"cannot change for a transfer: {meaning.note}")
        if meaning.across in ("law", "approximate") and value != _value(d, k):
            warnings.append(f"{k}={value} does not µTransfer exactly ({meaning.note})")
    # a target is a run, not a search: no budget relative to itself, no target of its own
    d["search"].update(budget=None, finalists=None)
    # nor the search's thread count, chosen for its workers: a target picks its own unless named
    d["train"]["threads"] = None
    d["target"] = {"width": None, "overrides": {}}
    try:
        target = from_dict(d, [f"{k}={json.dumps(v)}" for k, v in changes.items()])
        target, notes = _on_axes(target, base)
    except SpecError as e:
        raise SpecError(where(e.key), e.message) from None
    warnings += notes
    if target.model.width < base.model.width:
        warnings.append(
            f"model.width={target.model.width} is narrower than the proxy ({base.model.width}): µP transfers "
            "either way, but the target is usually the wide model (a digit missing?)"
        )
    if smoke_run and target.model.width > SMOKE_MAX_WIDTH:
        warnings.append(f"--smoke: width {target.model.width} capped at {SMOKE_MAX_WIDTH}")
        target = target.edit({"model.width": SMOKE_MAX_WIDTH})
    if force:  # --force also tries a target above the device's free memory (mutune.memory)
        target = target.edit({"train.memory_check": False})
    return Target(target, dict(changes), warnings)


def _on_axes(target: Spec, proxy: Spec) -> tuple[Spec, list[str]]:
    """A target at another size than the proxy along an axis whose base defaults to the model's own
    size (depth, experts): the axis's rules relative to the proxy's base (pinned in the target spec)
    where they apply (:mod:`.axes`); otherwise the target as asked and a warning why."""
    notes, pins = [], {}
    for axis in AXES.values():
        if not axes.present(target, axis) or axes.value(target, axis) == axes.value(proxy, axis):
            continue
        if axes.own_rule(target, axis):  # u-µP's depth: its rule is in absolute sizes, nothing to pin
            continue
        why = axes.why_not(target, axis)
        if why:
            fix = axes.remedy(axis)
            notes.append(
                f"{axis.key}={axes.value(target, axis)} does not µTransfer exactly ({axis.name} scaling is "
                f"off: {why}{'; ' + fix if fix else ''})"
            )
        elif axes.base(target, axis) != axes.base(proxy, axis):
            pins[axis.base_key] = axes.base(proxy, axis)
    return (target.edit(pins) if pins else target), notes


def check(spec: Spec) -> None:
    """The spec's own target (``target.width``, ``target.overrides``) derived now, so that a target
    the transfer would refuse is refused when the spec loads, before any trial, naming the key."""
    if spec.target.width is None and not spec.target.overrides:
        return
    derive(spec, own_changes(spec), source="target")

"""What each key of the spec means, declared once on its field, and the key lists derived from it.

Every field of the schema is declared with :func:`key`: its default, a one-line doc (the docs and
``mutune init`` are generated from these), for numbers the :class:`~.typed.Range` it accepts, and
two facts about its meaning:

**across** — how it behaves from proxy to target:

- ``tuned``: a hyperparameter the search tunes; the target takes it from best.yaml, unchanged.
- ``fixed``: defines what the tuned hyperparameters mean (the base width, the parametrization...);
  the target must keep the proxy's (``note`` says why).
- ``axis``: set by a scaling axis (:mod:`mutune.mup.axes`): changes freely, the rules absorb it.
- ``law``: the optimum moves with it by a law fitted on the proxy (steps, batch size).
- ``approximate``: may change, but µTransfer then holds only roughly (``note`` says why).
- ``free``: may change without touching what the hyperparameters mean (device, logging...).
- ``search``: belongs to the search, not to a run (``search.*``, ``target.*``, ``name``).

**effect** — what changing it changes in a run:

- ``numbers``: the trained weights and losses.
- ``measure``: what is measured of a run, not what it trains (the evaluation cadence and size).
- ``layout``: how a run's state is stored (DDP's checkpoint file or FSDP's sharded folder).
- ``transfer``: read only when a target is derived from the proxy.
- ``trials``: which configurations a search tries (sampler, seed, space).
- ``plan``: how much a search runs and what follows it (trial counts, ladder, laws, storage).
- ``none``: not what a run computes but how (device, CPU threads, compile, checkpoints, trackers).
  The device and the thread count still decide the last bits of float results (the order of
  sums), so a run records them: the same spec on the same device and threads repeats bit for bit.

The lists of keys that used to be kept by hand are derived here, by effect (:func:`keys_where`):
what a resumed study must share with the one that made its trials, what a checkpoint must share
with the run resuming it, what a laws line-search run's cache key covers, what names a target folder.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import typing
from dataclasses import dataclass, field
from typing import Any, Literal

Across = Literal["tuned", "fixed", "axis", "law", "approximate", "free", "search"]
Effect = Literal["numbers", "measure", "layout", "transfer", "trials", "plan", "none"]


@dataclass(frozen=True)
class Meaning:
    across: Across
    effect: Effect
    note: str = ""  # why a fixed key is fixed, or why an approximate one transfers only roughly


def key(
    default: Any,
    doc: str,
    valid: Any = None,
    *,
    across: Across,
    effect: Effect = "numbers",
    note: str = "",
) -> Any:
    """A spec field: its default, one-line doc, accepted range and meaning (module doc)."""
    meta = {"doc": doc, "valid": valid, "meaning": Meaning(across, effect, note)}
    if isinstance(default, type) and dataclasses.is_dataclass(default):
        return field(default_factory=default, metadata=meta)
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: copy.deepcopy(d), metadata=meta)
    return field(default=default, metadata=meta)


def section(cls: type, doc: str, *, across: Across, effect: Effect = "numbers") -> Any:
    """A field holding a section (a dataclass of keys, each with its own meaning); a section with
    variants (the model's, by family) defaults to its default variant."""
    meta = {"doc": doc, "valid": None, "meaning": Meaning(across, effect)}
    return field(default_factory=getattr(cls, "default", cls), metadata=meta)


def _variants(cls: type) -> list[type]:
    """A section and, for one with variants (the model section), each variant's class."""
    return [cls, *getattr(cls, "variants", lambda: [])()]


@functools.cache
def meanings(cls: type, prefix: str = "") -> dict[str, Meaning]:
    """Every dotted key of ``cls`` with its meaning. A section field whose own meaning is not one of
    its keys' (``search.laws``: plan) is one key; otherwise its keys are listed, for every variant.
    (Cached: the schema does not change while mutune runs; do not modify the result.)"""
    out: dict[str, Meaning] = {}
    for klass in _variants(cls):
        hints = typing.get_type_hints(klass)
        for f in dataclasses.fields(klass):
            name = f"{prefix}.{f.name}" if prefix else f.name
            tp = hints[f.name]
            if dataclasses.is_dataclass(tp) and prefix == "":
                out.update(meanings(tp, name))
            else:
                out[name] = f.metadata["meaning"]
    return out


def meaning_of(cls: type, dotted: str) -> Meaning | None:
    """The meaning of a dotted key, or of the mapping-valued key it lies in (``search.space.lr.low``
    is ``search.space``'s); None for a key the schema does not have."""
    table = meanings(cls)
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        found = table.get(".".join(parts[:i]))
        if found is not None:
            return found
    return None


# Which effects each derived list keeps:
# - a resumed study must share with the one that made its trials what they train and measure, and
#   which configurations the search tries;
STUDY_EFFECTS = frozenset({"numbers", "measure", "trials"})
# - a checkpoint must share with the run resuming it everything that decides its numbers, what it
#   records, and how its state is laid out;
RESUME_EFFECTS = frozenset({"numbers", "measure", "layout", "transfer"})
# - a laws line-search run is cached (laws/runs.csv) under what decides its loss;
LAW_POINT_EFFECTS = frozenset({"numbers", "measure", "transfer"})
# - a target folder is named by what changes what it trains (``target-width1024-steps400``).
NAMING_EFFECTS = frozenset({"numbers", "transfer"})


def keys_where(cls: type, effects: frozenset[str]) -> frozenset[str]:
    """The dotted keys of ``cls`` whose effect is one of ``effects``."""
    return frozenset(k for k, m in meanings(cls).items() if m.effect in effects)


def flatten(tree: dict[str, Any], keep: frozenset[str], prefix: str = "") -> dict[str, Any]:
    """The values of ``keep``'s keys in a spec's dict, by dotted key (sections walked)."""
    out: dict[str, Any] = {}
    for k, v in tree.items():
        name = f"{prefix}.{k}" if prefix else k
        if name in keep:
            out[name] = v
        elif isinstance(v, dict) and any(x.startswith(name + ".") for x in keep):
            out.update(flatten(v, keep, name))
    return out


def select(tree: dict[str, Any], keep: frozenset[str], prefix: str = "") -> dict[str, Any]:
    """``tree`` (a spec's dict) with only ``keep``'s keys, its sections kept as sections."""
    out: dict[str, Any] = {}
    for k, v in tree.items():
        name = f"{prefix}.{k}" if prefix else k
        if name in keep:
            out[k] = v
        elif isinstance(v, dict) and any(x.startswith(name + ".") for x in keep):
            out[k] = select(v, keep, name)
    return out

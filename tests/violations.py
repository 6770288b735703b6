"""Deliberate µP violations, injected in-process, for the coord check's tests and bench/coord_margins.py.

Each is a context manager: while it is open, building a model gives the violation.
"""

from __future__ import annotations

import contextlib
import dataclasses

from mutune import models, rules
from mutune.models import factory, mlp
from mutune.multipliers import multipliers as real_multipliers

LR_CLASSES = ("embedding", "hidden", "readout", "vector")
ROLES = {
    "embedding": ("embedding", "input"),
    "hidden": ("hidden",),
    "readout": ("readout",),
    "vector": ("vector",),
}


@contextlib.contextmanager
def lr_class(name: str, exponent: int):
    """The AdamW LR of a class of roles times m^exponent (hidden: m_in^exponent) on top of µP's."""
    saved = {}
    for role in ROLES[name]:
        key = ("adam", role)
        saved[key] = rules.MUP.get(key)
        base = saved[key] or rules.RoleRule()
        field = "fan_in" if role == "hidden" else "width"
        lr = dataclasses.replace(base.lr, **{field: getattr(base.lr, field) + exponent})
        rules.MUP[key] = dataclasses.replace(base, lr=lr)
    try:
        yield
    finally:
        for key, old in saved.items():
            if old is None:
                del rules.MUP[key]
            else:
                rules.MUP[key] = old


@contextlib.contextmanager
def broken_multipliers(no_readout: bool = False, sqrt_attention: bool = False):
    """The families' forward multipliers without the readout's 1/m, or with 1/√d attention."""

    def fake(parametrization, width, base_width, **kw):
        m = real_multipliers(parametrization, width, base_width, **kw)
        changes = {}
        if no_readout:
            changes["output"] = m.output * width / base_width
        if sqrt_attention and m.attn is not None:
            changes["attn"] = kw.get("alpha_attn", 1.0) / kw["head_dim"] ** 0.5
        return dataclasses.replace(m, **changes)

    modules = (models, mlp, factory)  # models.forward_multipliers is the GPT's
    old = [mod.multipliers for mod in modules]
    for mod in modules:
        mod.multipliers = fake
    try:
        yield
    finally:
        for mod, fn in zip(modules, old, strict=True):
            mod.multipliers = fn


def violation(name: str):
    """``mup`` (none), ``<class>/m`` or ``<class>*m`` (an LR class, see :data:`LR_CLASSES`),
    ``no_readout_mult`` or ``sqrt_attention``."""
    if name == "mup":
        return contextlib.nullcontext()
    if name == "no_readout_mult":
        return broken_multipliers(no_readout=True)
    if name == "sqrt_attention":
        return broken_multipliers(sqrt_attention=True)
    role, op = name[:-2], name[-2]
    return lr_class(role, -1 if op == "/" else 1)

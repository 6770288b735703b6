"""Deliberate µP violations, injected in-process, for the coord check's tests and bench/coord_margins.py.

Each is a context manager: while it is open, the registered "mup" parametrization is a broken copy of
itself (another rule table, or forward multipliers without one of their factors), so building any
model under µP gives the violation — through the same seam a new parametrization would use.
"""

from __future__ import annotations

import contextlib
import dataclasses

from mutune.mup import parametrizations as pz

LR_CLASSES = ("embedding", "hidden", "readout", "vector")
ROLES = {
    "embedding": ("embedding", "input"),
    "hidden": ("hidden",),
    "readout": ("readout",),
    "vector": ("vector",),
    "router": ("router",),  # a mixture's gates (the moe family only, so not among LR_CLASSES)
}


@contextlib.contextmanager
def registered(broken: pz.Parametrization):
    """``broken`` registered as "mup" while the block runs."""
    real = pz.PARAMETRIZATIONS["mup"]
    pz.PARAMETRIZATIONS["mup"] = broken
    try:
        yield
    finally:
        pz.PARAMETRIZATIONS["mup"] = real


def lr_class(name: str, exponent: int):
    """The AdamW LR of a class of roles times m^exponent (hidden: m_in^exponent) on top of µP's."""
    mup = pz.PARAMETRIZATIONS["mup"]
    table = dict(mup.table)
    for role in ROLES[name]:
        base = mup.role_rule("adam", role)
        field = "fan_in" if role == "hidden" else "width"
        table[("adam", role)] = dataclasses.replace(base, lr=base.lr.plus(**{field: exponent}))
    return registered(dataclasses.replace(mup, table=table))


@dataclasses.dataclass(frozen=True)
class BrokenMultipliers(pz.Parametrization):
    """µP whose forward multipliers lack the readout's 1/m or the router's, or use 1/√d attention."""

    no_readout: bool = False
    sqrt_attention: bool = False
    no_router: bool = False

    def multipliers(self, width: int, base_width: int, **kw) -> pz.Multipliers:
        m = super().multipliers(width, base_width, **kw)
        changes = {}
        if self.no_readout:
            changes["output"] = m.output * width / base_width
        if self.no_router:
            changes["router"] = 1.0
        if self.sqrt_attention and m.attn is not None:
            changes["attn"] = kw.get("alpha_attn", 1.0) / kw["head_dim"] ** 0.5
        return dataclasses.replace(m, **changes)


def broken_multipliers(no_readout: bool = False, sqrt_attention: bool = False, no_router: bool = False):
    """The families' forward multipliers without the readout's 1/m, or the router's, or with 1/√d attention."""
    mup = pz.PARAMETRIZATIONS["mup"]
    fields = {f.name: getattr(mup, f.name) for f in dataclasses.fields(pz.Parametrization)}
    return registered(
        BrokenMultipliers(**fields, no_readout=no_readout, sqrt_attention=sqrt_attention, no_router=no_router)
    )


def violation(name: str):
    """``mup`` (none), ``<class>/m`` or ``<class>*m`` (an LR class, see :data:`LR_CLASSES`),
    ``no_readout_mult``, ``no_router_mult`` or ``sqrt_attention``."""
    if name == "mup":
        return contextlib.nullcontext()
    if name == "no_readout_mult":
        return broken_multipliers(no_readout=True)
    if name == "sqrt_attention":
        return broken_multipliers(sqrt_attention=True)
    if name == "no_router_mult":
        return broken_multipliers(no_router=True)
    role, op = name[:-2], name[-2]
    return lr_class(role, -1 if op == "/" else 1)

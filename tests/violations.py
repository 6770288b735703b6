"""Deliberate µP violations, injected in-process, for the coord check's tests and bench/coord_margins.py.

Each is a context manager: while it is open, a registered parametrization ("mup" here) is a broken copy of
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
    """``broken`` registered under its name (in place of the real one) while the block runs."""
    real = pz.PARAMETRIZATIONS[broken.name]
    pz.PARAMETRIZATIONS[broken.name] = broken
    try:
        yield
    finally:
        pz.PARAMETRIZATIONS[broken.name] = real


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


# ---------------------------------------------------------------------------------------------
# Model styles: the ways people write models (tests/model_styles.py), each in a correct variant and
# a broken one, for the coord check through the CLI (tests/test_model_styles.py)


@dataclasses.dataclass(frozen=True)
class Style:
    """A model style: its factory (``tests.model_styles:<name>``), the correct variant's
    ``factory_kwargs``, and the broken variant: other ``factory_kwargs`` or a :func:`violation` name.
    ``outcome`` is the coord check's verdict on the broken variant (``fail``), or on both variants
    (``incomplete``) where the check truly cannot see (attention whose scores are never normalised)."""

    factory: str
    doc: str
    kwargs: dict = dataclasses.field(default_factory=dict)
    broken_kwargs: dict | None = None
    broken_violation: str | None = None
    outcome: str = "fail"
    broken_factory: str | None = None  # the broken variant is another function

    def spec(self, broken: bool = False) -> dict:
        """The tiny spec of a variant (the violation, if any, is applied with :meth:`injected`)."""
        kwargs = {**self.kwargs, **(self.broken_kwargs or {})} if broken else self.kwargs
        factory = self.broken_factory if broken and self.broken_factory else self.factory
        return {
            "name": "style",
            "model": {
                "family": "factory",
                "factory": f"tests.model_styles:{factory}",
                "width": 32,
                "base_width": 32,
                "seq_len": 32,
                "factory_kwargs": kwargs,
            },
            "train": {"steps": 4, "batch_size": 4, "warmup_steps": 1, "eval_every": 2, "eval_batches": 1},
            "search": {"n_trials": 1, "space": {"lr": {"type": "log_uniform", "low": 1e-3, "high": 1e-1}}},
        }

    def injected(self, broken: bool = False):
        return (
            violation(self.broken_violation) if broken and self.broken_violation else contextlib.nullcontext()
        )


STYLES = {
    "manual_softmax": Style(
        "manual_softmax",
        "a hand-written Llama: einsum scores, softmax written out as exp / sum",
        {},
        {"scale": "sqrt"},
    ),
    "non_T_tokens": Style(
        "register_tokens",
        "attention over T + 3 tokens (register tokens; a ViT's CLS + patches)",
        {},
        {"scale": "sqrt"},
    ),
    "eager_hf": Style(
        "eager_hf",
        "Hugging Face's eager attention (additive finfo.min mask, fp32 softmax) over T + 1",
        {},
        {"scale": "sqrt"},
    ),
    "renamed_classes": Style(
        "renamed", "attention in classes not named like attention", {}, {"scale": "sqrt"}
    ),
    "unseen_attention": Style(
        "renamed",
        "renamed classes and a sigmoid of the scores: no normalisation, the check cannot see it",
        {"gate": "sigmoid"},
        {"gate": "sigmoid", "scale": "sqrt"},
        outcome="incomplete",
    ),
    "raw_parameters": Style(
        "raw_params",
        "every weight a raw nn.Parameter; the readout's 1/m left out",
        broken_violation="no_readout_mult",
    ),
    "fused_qkv": Style(
        "fused_qkv", "q, k, v in one raw (3, d, d) parameter used through einsum", {}, {"scale": "sqrt"}
    ),
    "nested_inputs": Style(
        "nested_inputs",
        "an embedding inside a module holding a raw position table",
        broken_violation="embedding*m",
    ),
    # not a coord-check case: a deeper target of a model that cannot scale its branches is refused
    "depth_without_residual_mult": Style(
        "with_residual_mult",
        "depth= and residual_mult= taken; broken: depth= only, so a deeper target could not be scaled",
        broken_factory="without_residual_mult",
        outcome="refused",
    ),
}

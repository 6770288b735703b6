"""Which dims of each parameter scale with width, found by building the model at two widths on meta.

µP needs to know, for every parameter, which of its dims are "infinite" (grow with width) and by
how much: that decides its role and its multipliers (TP5 App. B). Like ``mup.set_base_shapes``,
we build the model at the base width and at twice the base width and compare shapes; unlike it,
the builds happen on the meta device, so nothing is allocated, and the result is plain data
(:class:`ParamInfo`) rather than an attribute hidden on the tensor, so it survives wrappers
(DDP, FSDP) and ``torch.save``.

Roles (TP5 App. B, "Table 8"): ``embedding`` (an ``nn.Embedding`` table: fan-in is the finite
vocabulary), ``input`` (finite -> width), ``hidden`` (width -> width), ``readout`` (width -> finite: the output),
``router`` (width -> finite inside the network: a mixture's gate, named by the model),
``vector`` (one width dim and no other dim above 1: biases, norm gains, ``MultiheadAttention``'s
(1, 1, E) ``bias_k``) and ``scalar`` (no width dim at all).

A parameter is a readout because of what it does, mapping the width to the model's output, not
because its last dim is the one that grows. For the weight of an ``nn.Linear`` or a convolution
(stored (out, in, ...)) or of a Hugging Face ``Conv1D`` (stored (in, out)) the layout says it. For a
raw parameter of any other module the layout is unknown: a (seq_len, width) position table and a
(vocab, width) readout used as ``x @ w.T`` look alike. There the output size decides
(``out_features``, the vocabulary for a language model): a width dim paired with exactly the output
size is a readout, with anything else a table (the ``embedding`` role: constant init, η).

This module knows nothing of the spec or the CLI: it raises :class:`ShapeError`, a plain
``ValueError`` whose ``arg`` says which of its own arguments was at fault, and the caller names
the key (``model.readout[0]`` for a spec, ``readout[0]`` for :func:`mutune.parametrize`).
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Literal

import torch
from torch import nn

Role = Literal["embedding", "input", "hidden", "readout", "router", "vector", "scalar"]
ModuleKind = Literal["linear", "embedding", "norm", "other"]

NORM_TYPES = (nn.LayerNorm, nn.GroupNorm, nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d) + (
    (nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ()
)


class ShapeError(ValueError):
    """The model's shapes cannot be given µP rules. ``arg`` names the argument at fault
    (``"readout"``, ``"readout[1]"``), or is empty when the model itself is the problem."""

    def __init__(self, message: str, arg: str = ""):
        self.arg = arg
        super().__init__(message)


@dataclass(frozen=True)
class ParamInfo:
    """What the µP rules need to know about one parameter."""

    name: str
    role: Role
    shape: tuple[int, ...]
    base_shape: tuple[int, ...]
    inf_dims: tuple[int, ...]  # dims that grow with width
    fan_in_mult: float  # fan_in / fan_in at base width (1 when fan_in is finite)
    fan_out_mult: float  # fan_out / fan_out at base width
    fan_in: int  # inputs per output unit at this width (for the 1/fan_in init)
    base_fan_in: int
    module_kind: ModuleKind
    is_bias: bool = False
    tied_readout: bool = False
    owners: tuple[str, ...] = ()  # names of the modules holding it (more than one when tied)
    along: tuple[tuple[str, float], ...] = ()  # (axis, its multiplier) for the other axes it scales along

    def mult(self, axis: str) -> float:
        """Its multiplier along a non-width axis (``depth``: m_L for a per-block parameter), else 1."""
        return dict(self.along).get(axis, 1.0)

    def factor(self, name: str) -> float:
        """A multiplier by the name a rule's exponent uses (:data:`mutune.mup.axes.FACTORS`)."""
        width = {"fan_in": self.fan_in_mult, "fan_out": self.fan_out_mult}
        if name in width:
            return width[name]
        return self.width_mult if name == "width" else self.mult(name)

    @property
    def is_matrix(self) -> bool:
        """Two or more dims above 1 (a (1, 1, E) bias is a vector, a (T, E) table a matrix): what
        decides normal init and weight decay."""
        return sum(1 for i, b in enumerate(self.base_shape) if b > 1 or i in self.inf_dims) >= 2

    @property
    def width_mult(self) -> float:
        """The multiplier of the last infinite dim (1 if none): mup's ``infshape.width_mult()``.

        For a vector-like parameter that is its one width dim. (``max(fan_in_mult, fan_out_mult)``
        would be 1 instead of m for a model narrower than its base, m < 1.)
        """
        if not self.inf_dims:
            return 1.0
        i = self.inf_dims[-1]
        return self.shape[i] / self.base_shape[i]


def module_kind(module: nn.Module) -> ModuleKind:
    if isinstance(module, nn.Embedding):
        return "embedding"
    if isinstance(module, (nn.Linear, nn.modules.conv._ConvNd)):
        return "linear"
    if isinstance(module, NORM_TYPES):
        return "norm"
    return "other"


def param_shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    return {n: tuple(p.shape) for n, p in model.named_parameters()}


def owners(model: nn.Module) -> dict[str, list[tuple[nn.Module, str]]]:
    """Every (module, attribute) that holds each parameter, keyed by its canonical name."""
    canonical = {id(p): n for n, p in model.named_parameters()}
    found: dict[str, list[tuple[nn.Module, str]]] = {n: [] for n in canonical.values()}
    for mod_name, mod in model.named_modules(remove_duplicate=False):
        for attr, p in mod.named_parameters(recurse=False):
            if id(p) in canonical:
                found[canonical[id(p)]].append((mod, f"{mod_name}.{attr}" if mod_name else attr))
    return found


def _check_readout_names(readout: tuple[str, ...], modules: dict, shapes: dict) -> None:
    for i, r in enumerate(readout):
        if r not in modules and r not in shapes:
            hint = difflib.get_close_matches(r, list(modules), n=1)
            suggestion = f" (did you mean '{hint[0]}'?)" if hint else ""
            raise ShapeError(f"the model has no module named '{r}'{suggestion}", f"readout[{i}]")


def transposed(module: nn.Module) -> bool:
    """A Linear that stores its weight as (in, out): Hugging Face's ``Conv1D`` (GPT-2)."""
    w = getattr(module, "weight", None)
    return (
        type(module).__name__ == "Conv1D"
        and isinstance(w, torch.Tensor)
        and w.ndim == 2
        and getattr(module, "nf", None) == w.shape[1]
    )


def _role(
    shape: tuple[int, ...], inf: tuple[int, ...], kind: ModuleKind, out_features: int | None
) -> tuple[Role, bool]:
    """(role, whether the shape alone could not say, so ``out_features`` decided) of a weight whose
    layout is (out, in, ...) for kind ``linear`` and unknown for ``other``."""
    if sum(1 for i, d in enumerate(shape) if d > 1 or i in inf) < 2:
        return ("vector" if inf else "scalar"), False
    if kind == "embedding":
        return "embedding", False
    if len(inf) == 2:
        return "hidden", False
    if len(inf) == 0:
        return "scalar", False
    if kind == "linear":
        return ("input" if inf == (0,) else "readout"), False
    # a raw parameter: a readout maps the width to the output, anything else is a table
    finite = math.prod(d for i, d in enumerate(shape) if i not in inf)
    if out_features is not None:
        return ("readout" if finite == out_features else "embedding"), True
    return ("input" if inf == (0,) else "readout"), False


def _fans(
    shape: tuple[int, ...], base_shape: tuple[int, ...], mult: dict[int, float], kind: ModuleKind, role: Role
) -> tuple[float, float, int, int]:
    """(fan_in_mult, fan_out_mult, fan_in, base_fan_in) of a weight stored as (fan_out, fan_in, ...);
    a table (an embedding, a raw (rows, width) parameter) has the finite dims as its fan-in."""
    if kind == "embedding" or (kind == "other" and role == "embedding"):
        w = next(iter(mult.values()), 1.0)
        finite = math.prod(d for i, d in enumerate(shape) if i not in mult)
        return 1.0, w, finite, finite
    if len(shape) >= 2:
        return mult.get(1, 1.0), mult.get(0, 1.0), math.prod(shape[1:]), math.prod(base_shape[1:])
    return 1.0, mult.get(0, 1.0), 1, 1


def _flip(shape: tuple[int, ...]) -> tuple[int, ...]:
    """A Conv1D's (in, out) shape as the (out, in) of a Linear."""
    return (shape[1], shape[0], *shape[2:])


def _role_and_fans(
    shape: tuple[int, ...],
    base_shape: tuple[int, ...],
    inf: tuple[int, ...],
    kind: ModuleKind,
    out: int | None,
) -> tuple[str, tuple[float, float, int, int]]:
    """The role ("by_output" / "table" for a raw parameter that ``out`` decided) and the fans."""
    mult = {i: shape[i] / base_shape[i] for i in inf}
    role, by_output = _role(shape, inf, kind, out)
    fans = _fans(shape, base_shape, mult, kind, role)
    return (("by_output" if role == "readout" else "table") if by_output else role), fans


def _info(
    name: str,
    shape: tuple[int, ...],
    base_shape: tuple[int, ...],
    delta_shape: tuple[int, ...],
    mods: list[tuple[nn.Module, str]],
    readout: tuple[str, ...],
    out_features: int | None,
    routers: tuple[str, ...] = (),
) -> ParamInfo:
    """One parameter's classification (see :func:`classify`)."""
    if not (len(shape) == len(base_shape) == len(delta_shape)):
        raise ShapeError(f"parameter '{name}' changes its number of dims with width")
    inf = tuple(i for i, (b, d) in enumerate(zip(base_shape, delta_shape, strict=True)) if b != d)
    if len(inf) > 2:
        raise ShapeError(
            f"parameter '{name}' has {len(inf)} dims that grow with width; µP "
            "rules cover at most two (a hidden matrix)"
        )
    kinds = [module_kind(module) for module, _ in mods]
    # a tied weight is an embedding whichever module registered it first (so its rules do not
    # depend on attribute order): constant init, the embedding's LR, α_out/m where it is a readout
    kind: ModuleKind = "embedding" if "embedding" in kinds else kinds[0]
    # a parameter is a named readout if it, or the module holding it, is named in `readout`
    is_readout_module = any(n == r or n.startswith(r + ".") for _, n in mods for r in readout)
    # classify a Conv1D (in, out) weight in the (out, in) layout of a Linear
    if kind == "other" and transposed(mods[0][0]) and mods[0][1].endswith("weight"):
        kind = "linear"
        flipped_inf = tuple(sorted({0: 1, 1: 0}.get(i, i) for i in inf))
        role, fans = _role_and_fans(_flip(shape), _flip(base_shape), flipped_inf, kind, out_features)
    else:
        role, fans = _role_and_fans(shape, base_shape, inf, kind, out_features)
    # a raw parameter: "by_output" when its finite side is the output size, else a table
    role = {"by_output": "readout", "table": "readout" if is_readout_module else "embedding"}.get(role, role)
    fan_in_mult, fan_out_mult, fan_in, base_fan_in = fans
    if role == "readout" and any(n == r or n.startswith(r + ".") for _, n in mods for r in routers):
        role = "router"  # maps the width to a fixed size inside the network, not to the output
    if role == "readout" and not is_readout_module and readout:
        raise ShapeError(
            f"'{name}' maps the width to a fixed size (a readout) but "
            f"is not among the named readouts {list(readout)}",
            "readout",
        )
    return ParamInfo(
        name=name,
        role=role,
        shape=shape,
        base_shape=base_shape,
        inf_dims=inf,
        fan_in_mult=fan_in_mult,
        fan_out_mult=fan_out_mult,
        fan_in=fan_in,
        base_fan_in=base_fan_in,
        module_kind=kind,
        is_bias=mods[0][1].rsplit(".", 1)[-1] == "bias",
        tied_readout=kind == "embedding" and (is_readout_module or "linear" in kinds),
        owners=tuple(n.rpartition(".")[0] for _, n in mods),
    )


def classify(
    build: Callable[[int], nn.Module],
    width: int,
    base_width: int,
    readout: Iterable[str] = (),
    out_features: int | None = None,
    routers: Iterable[str] = (),
) -> dict[str, ParamInfo]:
    """Classify every parameter of ``build(width)``.

    ``build`` must construct the same architecture at any width; it is called on the meta device
    at ``width``, ``base_width`` and ``2 * base_width``. A dim is infinite when its size differs
    between the base and the delta model. ``readout`` names modules (or parameters) that are
    readouts even if the shape rule would not find them; a name covers the modules under it.
    ``out_features`` (the model's output size, e.g. the vocabulary) tells a raw-parameter readout
    from a raw-parameter table (module doc); without it a raw parameter is classified by its layout
    as if it were a Linear weight. ``routers`` names modules whose width -> fixed-size weight is
    used inside the network (a mixture's gate) rather than as the output: role ``router``.
    """
    with torch.device("meta"):
        model, base, delta = build(width), build(base_width), build(2 * base_width)
    shapes, base_shapes, delta_shapes = param_shapes(model), param_shapes(base), param_shapes(delta)
    if not (shapes.keys() == base_shapes.keys() == delta_shapes.keys()):
        raise ShapeError("the model has different parameters at different widths")
    readout, routers = tuple(readout), tuple(routers)
    _check_readout_names(readout, dict(model.named_modules()), shapes)
    holders = owners(model)
    infos: dict[str, ParamInfo] = {}
    for name, shape in shapes.items():
        infos[name] = _info(
            name, shape, base_shapes[name], delta_shapes[name], holders[name], readout, out_features, routers
        )
    if not any(i.inf_dims for i in infos.values()):
        raise ShapeError(
            f"no parameter changes shape between widths {base_width} and {2 * base_width}: "
            "the model ignores its width, so µP would silently be SP"
        )
    return infos


def infer_width(model: nn.Module, base: nn.Module, base_width: int) -> int:
    """The width ``model`` was built at, from how its shapes compare with the base model's."""
    shapes, base_shapes = param_shapes(model), param_shapes(base)
    if shapes.keys() != base_shapes.keys():
        raise ShapeError("the model and the base-width model have different parameters", "factory")
    ratios = {
        s / b
        for name, shape in shapes.items()
        if len(shape) == len(base_shapes[name])
        for s, b in zip(shape, base_shapes[name], strict=True)
        if s != b
    }
    if not ratios:
        return base_width
    ratio = next(iter(ratios))
    if len(ratios) > 1 or abs(base_width * ratio - round(base_width * ratio)) > 1e-6:
        raise ShapeError("cannot infer the model's width from its shapes; pass width=", "width")
    return round(base_width * ratio)


def _indexed(build: Callable[[int], nn.Module], size: int, arg: str) -> tuple[set[str], set[str]]:
    """(prefixes, names): the prefixes under which ``build(size + 1)`` adds parameters named
    ``<prefix>.<size>.<rest>``, and the parameter names of ``build(size)``."""
    with torch.device("meta"):
        names = set(param_shapes(build(size)))
        bigger = set(param_shapes(build(size + 1)))
    new = bigger - names
    if not new or names - bigger:
        raise ShapeError(
            f"the model has the same parameters at {arg} {size} and {size + 1}: it ignores its {arg}, "
            f"so {arg} scaling would silently do nothing",
            arg,
        )
    prefixes = set()
    for name in new:
        parts = name.split(".")
        at = [i for i, p in enumerate(parts) if p == str(size)]
        # the index that grew: where several parts equal the old size, the one whose predecessor (the
        # same name, that index one less) the smaller model has (h.4.mlp.experts.4: expert 4 of block 4)
        grew = [i for i in at if ".".join([*parts[:i], str(size - 1), *parts[i + 1 :]]) in names]
        at = grew or at
        if not at:
            what = "a block index" if arg == "depth" else "an index"
            raise ShapeError(f"'{name}' appears at {arg} {size + 1} without {what} in its name", arg)
        prefixes.add(".".join(parts[: at[0]]))
    return prefixes, names


def unit_prefixes(build: Callable[[int], nn.Module], size: int, arg: str = "depth") -> set[str]:
    """The prefixes under which the model's repeated units are indexed by ``size``: ``{"h"}`` for a
    transformer's blocks, ``{"h.0.mlp.experts", "h.1.mlp.experts"}`` for its mixtures' experts."""
    return _indexed(build, size, arg)[0]


def per_block(build: Callable[[int], nn.Module], depth: int, arg: str = "depth") -> set[str]:
    """The parameters that belong to a repeated block: those whose names change with depth.

    ``build(depth)`` constructs the model at a depth (on the meta device, at any fixed width). Going
    from ``depth`` to ``depth + 1`` blocks adds parameters named ``<prefix>.<depth>.<rest>``; every
    parameter of the model at ``depth`` named ``<prefix>.<i>.<rest>`` with i < depth is per-block
    (its LR and ε get the depth multiplier; the embeddings, final norm and readout do not).
    ``arg`` names the size in errors (``depth``; ``n_experts`` for :func:`per_unit`).
    """
    prefixes, names = _indexed(build, depth, arg)
    blocks = set()
    for name in names:
        for prefix in prefixes:
            head = f"{prefix}." if prefix else ""
            rest = name[len(head) :].split(".", 1) if name.startswith(head) else []
            if rest and rest[0].isdigit() and int(rest[0]) < depth:
                blocks.add(name)
    return blocks


def per_unit(build: Callable[[int], nn.Module], count: int, arg: str = "n_experts") -> set[str]:
    """The parameters that scale with a count of interchangeable units (a mixture's experts): each
    unit's own (named ``<prefix>.<i>.<rest>``, i < count, as :func:`per_block` finds them) and those
    sized by the count (a router, width -> one logit per expert): the parameters whose gradient
    signal the count divides among the units."""
    members = per_block(build, count, arg)
    with torch.device("meta"):
        shapes, more = param_shapes(build(count)), param_shapes(build(count + 1))
    return members | {n for n, s in shapes.items() if n in more and more[n] != s}


# how a parameter is found to scale along an axis that is not found by shape (Axis.found_by), each
# called as finder(build, size, arg) with build(size) the model at that size along the axis and arg
# the model key of the size (errors name it)
FINDERS: dict[str, Callable[..., set[str]]] = {"blocks": per_block, "units": per_unit}


def along(infos: dict[str, ParamInfo], axis: str, members: set[str], mult: float) -> dict[str, ParamInfo]:
    """``infos`` with multiplier ``mult`` along ``axis`` on ``members`` (the others keep 1)."""
    return {n: replace(i, along=(*i.along, (axis, mult))) if n in members else i for n, i in infos.items()}

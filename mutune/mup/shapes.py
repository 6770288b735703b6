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
(vocab, width) readout used as ``x @ w.T`` look alike. There how the forward uses it decides
(:mod:`.uses`, when ``classify`` is given a forward to watch): indexed as a table, an embedding;
added to the stream, vector-like; multiplied into it, a matrix whose fan-in is what the product
sums over. Only where the forward cannot run or never uses it does the shape decide: a width dim
paired with exactly the output size (``out_features``, the vocabulary for a language model; found
from the model's Linear readouts when not given) is a readout, with anything else a table (the
``embedding`` role: constant init, η); a raw (k, d, d) is k stacked matrices of fan-in d.

Each :class:`ParamInfo` says where its role came from (``source``): the module holding it, the
observed use, the shape, or the user (``roles``, which overrides any parameter).

This module knows nothing of the spec or the CLI: it raises :class:`ShapeError`, a plain
``ValueError`` whose ``arg`` says which of its own arguments was at fault, and the caller names
the key (``model.readout[0]`` for a spec, ``readout[0]`` for :func:`mutune.parametrize`).
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Literal

import torch
from torch import nn

from .axes import AXES
from .rules import ROLES
from .uses import Use, observe

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
    # (axis, its multiplier, its size) for the other axes it scales along: ("depth", m_L, L) for a
    # per-block parameter where depth scaling or a rule stated in blocks needs it
    along: tuple[tuple[str, float, int], ...] = ()
    # where its role came from: "module: Linear", "use: indexed as a table (F.embedding)", "shape", "user"
    source: str = ""

    def mult(self, axis: str) -> float:
        """Its multiplier along a non-width axis (``depth``: m_L for a per-block parameter), else 1."""
        return next((m for a, m, _ in self.along if a == axis), 1.0)

    @property
    def size_in(self) -> int:
        """Its fan-in as unit scaling counts it: the second dim of a matrix (an embedding table's
        width, a Linear's input size), the product of the rest for a convolution, a vector's length."""
        return self.shape[0] if len(self.shape) == 1 else math.prod(self.shape[1:])

    def factor(self, name: str) -> float:
        """A multiplier or a size by the name a rule's exponent uses (:data:`mutune.mup.axes.FACTORS`)."""
        width = {"fan_in": self.fan_in_mult, "fan_out": self.fan_out_mult, "width": self.width_mult}
        if name in width:
            return width[name]
        for axis in AXES.values():  # an absolute size: the width's is the parameter's own fan-in
            if name == axis.size:
                return float(self.size_in if axis.found_by == "shape" else self.size(axis.name))
        return self.mult(name)

    def size(self, axis: str) -> int:
        """Its size along a non-width axis (``depth``: the number of blocks of a per-block parameter), else 1."""
        return next((n for a, _, n in self.along if a == axis), 1)

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
    if kind == "other" and len(shape) >= 3 and 0 not in mult:
        # a raw (k, out, in) parameter: k stacked matrices (a fused q/k/v), each of fan-in `in`
        n = len(shape) - 1
        return mult.get(n, 1.0), mult.get(n - 1, 1.0), shape[n], base_shape[n]
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
    uses: list[Use] | None = None,
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
    tied_by_use = False
    holder = type(mods[0][0]).__name__
    # classify a Conv1D (in, out) weight in the (out, in) layout of a Linear
    if kind == "other" and transposed(mods[0][0]) and mods[0][1].endswith("weight"):
        kind = "linear"
        flipped_inf = tuple(sorted({0: 1, 1: 0}.get(i, i) for i in inf))
        role, fans = _role_and_fans(_flip(shape), _flip(base_shape), flipped_inf, kind, out_features)
        source = f"module: {holder} (a Linear stored (in, out))"
    elif kind == "other" and uses and (found := _from_uses(shape, base_shape, inf, uses)) is not None:
        role, fans, tied_by_use, source = found
    else:
        role, fans = _role_and_fans(shape, base_shape, inf, kind, out_features)
        if kind != "other":
            others = sorted({type(m).__name__ for m, _ in mods} - {holder})
            source = f"module: {holder}" + (f", tied to {', '.join(others)}" if others else "")
        elif role in ("by_output", "table"):
            side = "is" if role == "by_output" else "is not"
            source = f"shape (its finite side {side} the output size {out_features})"
        else:
            source = "shape"
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
        tied_readout=tied_by_use or (kind == "embedding" and (is_readout_module or "linear" in kinds)),
        owners=tuple(n.rpartition(".")[0] for _, n in mods),
        source=source,
    )


def _from_uses(
    shape: tuple[int, ...], base_shape: tuple[int, ...], inf: tuple[int, ...], uses: list[Use]
) -> tuple[Role, tuple[float, float, int, int], bool, str] | None:
    """(role, fans, tied readout, source) of a raw parameter from how the forward used it (:mod:`.uses`);
    None when no use decides (it was seen only in ways that say nothing of its role)."""
    mult = {i: shape[i] / base_shape[i] for i in inf}
    tables = [u for u in uses if u.kind == "table"]
    products = [u for u in uses if u.kind == "product"]
    if products:
        u = products[0]
        wide_in = any(d in inf for d in u.contracted)
        wide_out = any(d in inf for d in u.outputs)
        role: Role = (
            "hidden" if wide_in and wide_out else "readout" if wide_in else "input" if wide_out else "scalar"
        )
        fans = (
            math.prod(mult.get(d, 1.0) for d in u.contracted),
            math.prod(mult.get(d, 1.0) for d in u.outputs),
            math.prod(shape[d] for d in u.contracted),
            math.prod(base_shape[d] for d in u.contracted),
        )
        if tables and role == "readout":  # a table the logits reuse: an embedding tied to the readout
            return (
                "embedding",
                _fans(shape, base_shape, mult, "other", "embedding"),
                True,
                (f"use: {tables[0].describe()} and {u.describe()}"),
            )
        return role, fans, False, f"use: {u.describe()}"
    if tables:
        return (
            "embedding",
            _fans(shape, base_shape, mult, "other", "embedding"),
            False,
            f"use: {tables[0].describe()}",
        )
    if len(inf) == 1:  # added to the stream, or multiplied into it elementwise: vector-like
        return "vector", (1.0, mult[inf[0]], 1, 1), False, f"use: {uses[0].describe()}"
    return None


REAL_FORWARD_MAX_PARAMS = (
    50_000_000  # a forward that cannot run on meta is watched on a real CPU copy up to this
)


def raw_parameters(model: nn.Module) -> list[str]:
    """Parameters no Linear, convolution, Embedding, norm or Conv1D holds: their role needs their use."""
    found = []
    for name, mods in owners(model).items():
        if all(module_kind(m) == "other" for m, _ in mods) and not (
            transposed(mods[0][0]) and mods[0][1].endswith("weight")
        ):
            found.append(name)
    return found


def watch_uses(
    model: nn.Module,
    build: Callable[[int], nn.Module],
    base_width: int,
    forward: Callable[[nn.Module], object],
    names: list[str],
) -> tuple[dict[str, list[Use]], str]:
    """Each raw parameter's uses (:mod:`.uses`) in one forward of ``model`` (the model at
    ``base_width`` on the meta device), or, for a forward that needs values, of a real CPU copy
    (``build(base_width)``) when it is small; and why not ('' when watched). The global random state
    is left as it was."""
    try:
        return observe(model, forward, names), ""
    except Exception as e:  # noqa: BLE001 - a forward that cannot run on meta is tried for real
        why = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    if sum(p.numel() for p in model.parameters()) > REAL_FORWARD_MAX_PARAMS:
        return {}, f"its forward cannot run on the meta device ({why}) and it is too large to run for real"
    try:
        with torch.random.fork_rng(devices=[]), torch.device("cpu"):
            real = build(base_width)
            return observe(real, forward, names), ""
    except Exception as e:  # noqa: BLE001
        return {}, f"its forward could not be watched ({why}; on the CPU: {type(e).__name__}: {e})"


def _output_size(shapes: dict, base_shapes: dict, holders: dict) -> int | None:
    """The model's output size from the Linears that map the width to a fixed size (its readouts),
    when they agree: what tells a raw readout from a raw table where the forward cannot be watched."""
    sizes = set()
    for name, mods in holders.items():
        linear = any(isinstance(m, nn.Linear) and n.endswith("weight") for m, n in mods)
        if linear and len(shapes[name]) == 2:
            out_grows = shapes[name][0] != base_shapes[name][0]
            in_grows = shapes[name][1] != base_shapes[name][1]
            if in_grows and not out_grows:
                sizes.add(shapes[name][0])
    return sizes.pop() if len(sizes) == 1 else None


def _with_role(info: ParamInfo, role: Role, source: str) -> ParamInfo:
    """``info`` with the role a user gave it: its fans kept where it stays a matrix of the same kind."""
    if role == info.role:
        return replace(info, source=source)
    mult = {i: info.shape[i] / info.base_shape[i] for i in info.inf_dims}
    if role == "embedding":
        fans = _fans(info.shape, info.base_shape, mult, "other", "embedding")
    elif role in ("vector", "scalar") or info.role in ("embedding", "vector", "scalar"):
        kind = "other" if info.module_kind == "other" else "linear"
        fans = _fans(info.shape, info.base_shape, mult, kind, role)
    else:
        fans = (info.fan_in_mult, info.fan_out_mult, info.fan_in, info.base_fan_in)
    return replace(
        info,
        role=role,
        fan_in_mult=fans[0],
        fan_out_mult=fans[1],
        fan_in=fans[2],
        base_fan_in=fans[3],
        tied_readout=info.tied_readout and role == "embedding",
        source=source,
    )


def classify(
    build: Callable[[int], nn.Module],
    width: int,
    base_width: int,
    readout: Iterable[str] = (),
    out_features: int | None = None,
    routers: Iterable[str] = (),
    roles: Mapping[str, str] | None = None,
    forward: Callable[[nn.Module], object] | None = None,
) -> dict[str, ParamInfo]:
    """Classify every parameter of ``build(width)``.

    ``build`` must construct the same architecture at any width; it is called on the meta device
    at ``width``, ``base_width`` and ``2 * base_width``. A dim is infinite when its size differs
    between the base and the delta model. ``readout`` names modules (or parameters) that are
    readouts even if the shape rule would not find them; a name covers the modules under it.
    ``forward(model)`` runs one forward of a model (its input made on the model's device): with it,
    each raw parameter's role comes from how that forward uses it (:func:`watch_uses`).
    ``out_features`` (the model's output size, e.g. the vocabulary) tells a raw-parameter readout
    from a raw-parameter table where the use cannot (module doc); without it, the output size of
    the model's Linear readouts. ``routers`` names modules whose width -> fixed-size weight is
    used inside the network (a mixture's gate) rather than as the output: role ``router``.
    ``roles`` ({parameter name: role}) overrides any parameter's role (source ``user``).
    """
    with torch.device("meta"):
        model, base, delta = build(width), build(base_width), build(2 * base_width)
    shapes, base_shapes, delta_shapes = param_shapes(model), param_shapes(base), param_shapes(delta)
    if not (shapes.keys() == base_shapes.keys() == delta_shapes.keys()):
        raise ShapeError("the model has different parameters at different widths")
    readout, routers = tuple(readout), tuple(routers)
    _check_readout_names(readout, dict(model.named_modules()), shapes)
    roles = dict(roles or {})
    for name, role in roles.items():
        if name not in shapes:
            hint = difflib.get_close_matches(name, list(shapes), n=1)
            suggestion = f" (did you mean '{hint[0]}'?)" if hint else ""
            raise ShapeError(f"the model has no parameter named '{name}'{suggestion}", f"roles.{name}")
        if role not in ROLES:
            raise ShapeError(f"expected one of {', '.join(ROLES)}, got {role!r}", f"roles.{name}")
    holders = owners(model)
    raw = raw_parameters(model)
    uses: dict[str, list[Use]] = {}
    unwatched = ""
    if raw and forward is not None:
        uses, unwatched = watch_uses(base, build, base_width, forward, raw)
    if out_features is None:
        out_features = _output_size(shapes, base_shapes, holders)
    infos: dict[str, ParamInfo] = {}
    for name, shape in shapes.items():
        args = (name, shape, base_shapes[name], delta_shapes[name], holders[name])
        try:
            info = _info(*args, readout, out_features, routers, uses.get(name))
        except ShapeError:
            if name not in roles:
                raise
            info = _info(*args, (), out_features, routers, uses.get(name))  # the user says what it is
        if info.source.startswith("shape") and name in raw:
            why = unwatched or ("no forward to watch" if forward is None else "the forward never used it")
            info = replace(info, source=f"{info.source}; {why}")
        infos[name] = _with_role(info, roles[name], "user (roles)") if name in roles else info
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


def along(
    infos: dict[str, ParamInfo], axis: str, members: set[str], mult: float, size: int
) -> dict[str, ParamInfo]:
    """``infos`` with multiplier ``mult`` and size ``size`` along ``axis`` on ``members`` (the others
    keep 1)."""
    return {
        n: replace(i, along=(*i.along, (axis, mult, size))) if n in members else i for n, i in infos.items()
    }

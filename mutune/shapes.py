"""Which dims of each parameter scale with width, found by building the model at two widths on meta.

µP needs to know, for every parameter, which of its dims are "infinite" (grow with width) and by
how much: that decides its role and its multipliers (TP5 App. B). Like ``mup.set_base_shapes``,
we build the model at the base width and at twice the base width and compare shapes; unlike it,
the builds happen on the meta device, so nothing is allocated, and the result is plain data
(:class:`ParamInfo`) rather than an attribute hidden on the tensor, so it survives wrappers
(DDP, FSDP) and ``torch.save``.

Roles (TP5 App. B, "Table 8"): ``embedding`` (an ``nn.Embedding`` table: fan-in is the finite
vocabulary), ``input`` (finite -> width), ``hidden`` (width -> width), ``readout`` (width -> finite),
``vector`` (1-D with a width dim: biases, norm gains) and ``scalar`` (no width dim at all).

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

Role = Literal["embedding", "input", "hidden", "readout", "vector", "scalar"]
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
    depth_mult: float = 1.0  # depth / base depth for a per-block parameter; 1 for the rest

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


def _role(shape: tuple[int, ...], inf: tuple[int, ...], kind: ModuleKind) -> Role:
    if len(shape) < 2:
        return "vector" if inf else "scalar"
    if kind == "embedding":
        return "embedding"
    if len(inf) == 2:
        return "hidden"
    if len(inf) == 0:
        return "scalar"
    return "input" if inf == (0,) else "readout"


def _fans(
    shape: tuple[int, ...], base_shape: tuple[int, ...], mult: dict[int, float], kind: ModuleKind
) -> tuple[float, float, int, int]:
    """(fan_in_mult, fan_out_mult, fan_in, base_fan_in) of a weight stored as (fan_out, fan_in, ...)."""
    if kind == "embedding":  # (num_embeddings, dim): the width dim is the fan-out; the fan-in is the vocab
        return 1.0, mult.get(1, 1.0), shape[0], shape[0]
    if len(shape) >= 2:
        return mult.get(1, 1.0), mult.get(0, 1.0), math.prod(shape[1:]), math.prod(base_shape[1:])
    return 1.0, mult.get(0, 1.0), 1, 1


def classify(
    build: Callable[[int], nn.Module],
    width: int,
    base_width: int,
    readout: Iterable[str] = (),
) -> dict[str, ParamInfo]:
    """Classify every parameter of ``build(width)``.

    ``build`` must construct the same architecture at any width; it is called on the meta device
    at ``width``, ``base_width`` and ``2 * base_width``. A dim is infinite when its size differs
    between the base and the delta model. ``readout`` names modules (or parameters) that are
    readouts even if the shape rule would not find them; a name covers the modules under it.
    """
    with torch.device("meta"):
        model, base, delta = build(width), build(base_width), build(2 * base_width)
    shapes, base_shapes, delta_shapes = param_shapes(model), param_shapes(base), param_shapes(delta)
    if not (shapes.keys() == base_shapes.keys() == delta_shapes.keys()):
        raise ShapeError("the model has different parameters at different widths")
    readout = tuple(readout)
    _check_readout_names(readout, dict(model.named_modules()), shapes)
    holders = owners(model)
    infos: dict[str, ParamInfo] = {}
    for name, shape in shapes.items():
        base_shape, delta_shape = base_shapes[name], delta_shapes[name]
        if not (len(shape) == len(base_shape) == len(delta_shape)):
            raise ShapeError(f"parameter '{name}' changes its number of dims with width")
        inf = tuple(i for i, (b, d) in enumerate(zip(base_shape, delta_shape, strict=True)) if b != d)
        if len(inf) > 2:
            raise ShapeError(
                f"parameter '{name}' has {len(inf)} dims that grow with width; µP "
                "rules cover at most two (a hidden matrix)"
            )
        mods = holders[name]
        kinds = [module_kind(module) for module, _ in mods]
        # a tied weight is an embedding whichever module registered it first (so its rules do not
        # depend on attribute order): constant init, the embedding's LR, α_out/m where it is a readout
        kind: ModuleKind = "embedding" if "embedding" in kinds else kinds[0]
        mult = {i: shape[i] / base_shape[i] for i in inf}
        # a parameter is a named readout if it, or the module holding it, is named in `readout`
        is_readout_module = any(n == r or n.startswith(r + ".") for _, n in mods for r in readout)
        fan_in_mult, fan_out_mult, fan_in, base_fan_in = _fans(shape, base_shape, mult, kind)
        role = _role(shape, inf, kind)
        if role == "readout" and not is_readout_module and readout:
            raise ShapeError(
                f"'{name}' maps the width to a fixed size (a readout) but "
                f"is not among the named readouts {list(readout)}",
                "readout",
            )
        infos[name] = ParamInfo(
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


def per_block(build: Callable[[int], nn.Module], depth: int) -> set[str]:
    """The parameters that belong to a repeated block: those whose names change with depth.

    ``build(depth)`` constructs the model at a depth (on the meta device, at any fixed width). Going
    from ``depth`` to ``depth + 1`` blocks adds parameters named ``<prefix>.<depth>.<rest>``; every
    parameter of the model at ``depth`` named ``<prefix>.<i>.<rest>`` with i < depth is per-block
    (its LR and ε get the depth multiplier; the embeddings, final norm and readout do not).
    """
    with torch.device("meta"):
        names = set(param_shapes(build(depth)))
        deeper = set(param_shapes(build(depth + 1)))
    new = deeper - names
    if not new or names - deeper:
        raise ShapeError(
            f"the model has the same parameters at depth {depth} and {depth + 1}: it ignores its depth, "
            "so depth scaling would silently do nothing",
            "depth",
        )
    prefixes = set()
    for name in new:
        parts = name.split(".")
        at = [i for i, p in enumerate(parts) if p == str(depth)]
        if not at:
            raise ShapeError(
                f"'{name}' appears at depth {depth + 1} without a block index in its name", "depth"
            )
        prefixes.add(".".join(parts[: at[0]]))
    blocks = set()
    for name in names:
        for prefix in prefixes:
            head = f"{prefix}." if prefix else ""
            rest = name[len(head) :].split(".", 1) if name.startswith(head) else []
            if rest and rest[0].isdigit() and int(rest[0]) < depth:
                blocks.add(name)
    return blocks


def with_depth(infos: dict[str, ParamInfo], blocks: set[str], depth_mult: float) -> dict[str, ParamInfo]:
    """``infos`` with ``depth_mult`` set on the per-block parameters (the others keep 1)."""
    return {n: replace(i, depth_mult=depth_mult) if n in blocks else i for n, i in infos.items()}

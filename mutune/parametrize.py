"""µP and SP as data: which dims of each parameter grow with width, and what that implies.

A parameter is classified by building the model at two widths on the meta device (nothing is
allocated) and comparing shapes, the way `mup.set_base_shapes` does with a base and a delta
model. From the class follow its init std, its LR / weight-decay / Adam-eps multipliers and the
forward multipliers, per the table in DESIGN.md (TP5 "Table 8" form, the one `mup` implements):

=================  =====================  ==============  ===========  ========================
role               init std               Adam LR          SGD LR        AdamW weight decay
=================  =====================  ==============  ===========  ========================
embedding          σ                      η               η·m          λ
input (Linear)     σ·√(base/fan_in)       η               η·m          λ
hidden             σ·√(base/fan_in)       η/m_in          η·m_out/m_in  λ·m_in
readout (µP)       σ·√(base/fan_in_base)  η               η·m          λ
vector (bias/LN)   0 / 1                  η               η·m          (not decayed)
scalar (finite)    σ·√(base/fan_in)       η               η            λ
=================  =====================  ==============  ===========  ========================

Forward: embedding output × α_in, logits × α_out/m, attention logits × α_attn·√d_head_base/d_head.
SP (the control) keeps every multiplier at 1 (α's still apply), a 1/fan_in init variance for all
weight matrices including the readout, and attention α_attn/√d_head. With m = 1 both coincide, so
a µP model at its base width trains exactly like its SP twin.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from .config import HParams, SpecError

Role = Literal["embedding", "input", "hidden", "readout", "vector", "scalar"]
Parametrization = Literal["mup", "sp"]

NORM_TYPES = (nn.LayerNorm, nn.GroupNorm, nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d) + (
    (nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ()
)


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
    module_kind: Literal["linear", "embedding", "norm", "other"]
    is_bias: bool = False
    tied_readout: bool = False

    owners: tuple[str, ...] = ()  # names of the modules holding it (more than one when tied)

    @property
    def width_mult(self) -> float:
        """The multiplier of the last infinite dim (1 if none): mup's ``infshape.width_mult()``.

        For a vector-like parameter that is its one width dim. (It was ``max(fan_in_mult,
        fan_out_mult)``, which is 1 instead of m for a model narrower than its base, m < 1.)
        """
        if not self.inf_dims:
            return 1.0
        i = self.inf_dims[-1]
        return self.shape[i] / self.base_shape[i]


def _owners(model: nn.Module) -> dict[str, list[tuple[nn.Module, str]]]:
    """Every (module, attribute) that holds each parameter, keyed by its canonical name."""
    canonical = {id(p): n for n, p in model.named_parameters()}
    owners: dict[str, list[tuple[nn.Module, str]]] = {n: [] for n in canonical.values()}
    for mod_name, mod in model.named_modules(remove_duplicate=False):
        for attr, p in mod.named_parameters(recurse=False):
            if id(p) in canonical:
                owners[canonical[id(p)]].append((mod, f"{mod_name}.{attr}" if mod_name else attr))
    return owners


def _shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    return {n: tuple(p.shape) for n, p in model.named_parameters()}


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
    shapes, base_shapes, delta_shapes = _shapes(model), _shapes(base), _shapes(delta)
    if not (shapes.keys() == base_shapes.keys() == delta_shapes.keys()):
        raise SpecError("model", "the model has different parameters at different widths")
    readout = tuple(readout)
    modules = dict(model.named_modules())
    for i, r in enumerate(readout):
        if r not in modules and r not in shapes:
            hint = difflib.get_close_matches(r, list(modules), n=1)
            suggestion = f" (did you mean '{hint[0]}'?)" if hint else ""
            raise SpecError(f"model.readout[{i}]", f"the model has no module named '{r}'{suggestion}")
    owners = _owners(model)
    infos: dict[str, ParamInfo] = {}
    for name, shape in shapes.items():
        base_shape, delta_shape = base_shapes[name], delta_shapes[name]
        if not (len(shape) == len(base_shape) == len(delta_shape)):
            raise SpecError("model", f"parameter '{name}' changes its number of dims with width")
        inf = tuple(i for i, (b, d) in enumerate(zip(base_shape, delta_shape, strict=True)) if b != d)
        if len(inf) > 2:
            raise SpecError(
                "model",
                f"parameter '{name}' has {len(inf)} dims that grow with width; µP "
                "rules cover at most two (a hidden matrix)",
            )
        mods = owners[name]
        _, attr = mods[0]
        attr_leaf = attr.rsplit(".", 1)[-1]
        kinds = [module_kind(module) for module, _ in mods]
        # a tied weight is an embedding whichever module registered it first (so its rules do not
        # depend on attribute order): constant init, the embedding's LR, α_out/m where it is a readout
        kind = "embedding" if "embedding" in kinds else kinds[0]
        mult = {i: shape[i] / base_shape[i] for i in inf}
        # a parameter is a named readout if it, or the module holding it, is named in `readout`
        is_readout_module = any(n == r or n.startswith(r + ".") for _, n in mods for r in readout)
        if kind == "embedding":
            # (num_embeddings, dim): the width dim is the fan-out; the fan-in is the vocab.
            fan_in_mult, fan_out_mult = 1.0, mult.get(1, 1.0)
            fan_in = base_fan_in = shape[0]
        elif len(shape) >= 2:
            fan_in_mult, fan_out_mult = mult.get(1, 1.0), mult.get(0, 1.0)
            fan_in, base_fan_in = math.prod(shape[1:]), math.prod(base_shape[1:])
        else:
            fan_in_mult, fan_out_mult = 1.0, mult.get(0, 1.0)
            fan_in = base_fan_in = 1
        tied = kind == "embedding" and (is_readout_module or "linear" in kinds)
        if len(shape) < 2:
            role: Role = "vector" if inf else "scalar"
        elif kind == "embedding":
            role = "embedding"
        elif len(inf) == 2:
            role = "hidden"
        elif len(inf) == 0:
            role = "scalar"
        elif inf == (0,):
            role = "input"
        else:
            role = "readout"
        if role == "readout" and not is_readout_module and readout:
            raise SpecError(
                "model.readout",
                f"'{name}' maps the width to a fixed size (a readout) but "
                f"is not among the named readouts {list(readout)}",
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
            is_bias=attr_leaf == "bias",
            tied_readout=tied,
            owners=tuple(n.rpartition(".")[0] for _, n in mods),
        )
    if not any(i.inf_dims for i in infos.values()):
        raise SpecError(
            "model",
            f"no parameter changes shape between widths {base_width} and {2 * base_width}: "
            "the model ignores its width, so µP would silently be SP",
        )
    return infos


def module_kind(module: nn.Module) -> Literal["linear", "embedding", "norm", "other"]:
    if isinstance(module, nn.Embedding):
        return "embedding"
    if isinstance(module, (nn.Linear, nn.modules.conv._ConvNd)):
        return "linear"
    if isinstance(module, NORM_TYPES):
        return "norm"
    return "other"


# ---------------------------------------------------------------------------------------------
# The rules


@dataclass(frozen=True)
class Rule:
    init: Literal["normal", "zeros", "ones", "keep"]
    std: float
    lr_mult: float
    wd_mult: float  # 0 means not decayed
    eps_mult: float


def rule(
    info: ParamInfo, hp: HParams, parametrization: Parametrization, optimizer: str, base_width: int
) -> Rule:
    """The init, LR, weight-decay and eps treatment of one parameter (see the module table)."""
    check_optimizer(optimizer)
    mup = parametrization == "mup"
    role = info.role
    # init
    if info.module_kind == "norm" or (role in ("vector", "scalar") and len(info.shape) < 2):
        if info.module_kind == "norm":
            init = "zeros" if info.is_bias else "ones"
        else:
            init = "zeros" if info.is_bias else "keep"
        std = 0.0
    elif role == "embedding":
        init, std = "normal", hp.init_std
    elif role == "readout" and mup:
        init, std = "normal", hp.init_std * math.sqrt(base_width / info.base_fan_in)
    else:
        init, std = "normal", hp.init_std * math.sqrt(base_width / info.fan_in)
    # LR, weight decay, eps
    decayed = len(info.shape) >= 2
    lr_mult = wd_mult = eps_mult = 1.0
    if mup:
        if optimizer == "sgd":
            if role == "hidden":
                lr_mult = info.fan_out_mult / info.fan_in_mult
                wd_mult = info.fan_in_mult / info.fan_out_mult
            elif role != "scalar":
                lr_mult = info.width_mult
                wd_mult = 1.0 / info.width_mult
        elif role == "hidden":  # Adam / AdamW
            lr_mult = 1.0 / info.fan_in_mult
            wd_mult = info.fan_in_mult
            eps_mult = 1.0 / info.fan_in_mult
    return Rule(init=init, std=std, lr_mult=lr_mult, wd_mult=wd_mult if decayed else 0.0, eps_mult=eps_mult)


@dataclass(frozen=True)
class Multipliers:
    """Forward multipliers a model applies: embedding output, logits, attention logits."""

    input: float
    output: float
    attn: float | None  # None for models without attention


def multipliers(
    hp: HParams,
    parametrization: Parametrization,
    width: int,
    base_width: int,
    head_dim: int | None = None,
    base_head_dim: int | None = None,
) -> Multipliers:
    m = width / base_width
    output = hp.alpha_out / m if parametrization == "mup" else hp.alpha_out
    attn = None
    if head_dim is not None:
        if parametrization == "mup":
            # α_attn·√d_base/d, written so that at d == d_base it is bit-identical to SP's α/√d
            base = base_head_dim or head_dim
            attn = hp.alpha_attn / math.sqrt(base) * (base / head_dim)
        else:
            attn = hp.alpha_attn / math.sqrt(head_dim)
    return Multipliers(input=hp.alpha_in, output=output, attn=attn)


def init_weights(
    model: nn.Module,
    infos: dict[str, ParamInfo],
    hp: HParams,
    parametrization: Parametrization,
    base_width: int,
    generator: torch.Generator,
    zero_init_readout: bool = False,
) -> None:
    """Initialise every parameter by its rule, in a fixed order, from ``generator``."""
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, info in infos.items():
            p = params[name]
            r = rule(info, hp, parametrization, "adamw", base_width)
            if info.role == "readout" and zero_init_readout:
                p.zero_()
            elif r.init == "normal":
                if p.device.type == "meta":
                    continue
                # draw on the CPU so the same seed gives the same weights on every device
                p.copy_(torch.randn(p.shape, generator=generator) * r.std)
            elif r.init == "zeros":
                p.zero_()
            elif r.init == "ones":
                p.fill_(1.0)


def param_groups(
    model: nn.Module,
    infos: dict[str, ParamInfo],
    hp: HParams,
    parametrization: Parametrization,
    optimizer: str,
    base_width: int,
    eps: float = 1e-8,
) -> list[dict]:
    """Optimizer param groups, one per distinct (LR, weight decay, eps) treatment.

    Each group carries ``lr_mult`` and its ``lr`` is ``hp.lr * lr_mult``; schedules must scale
    group LRs relatively (``LambdaLR`` does), never set one absolute LR on all groups.
    """
    params = dict(model.named_parameters())
    groups: dict[tuple[float, float, float], dict] = {}
    for name, info in infos.items():
        r = rule(info, hp, parametrization, optimizer, base_width)
        key = (r.lr_mult, r.wd_mult, r.eps_mult)
        g = groups.get(key)
        if g is None:
            g = groups[key] = {
                "params": [],
                "names": [],
                "roles": set(),
                "lr": hp.lr * r.lr_mult,
                "lr_mult": r.lr_mult,
                "weight_decay": hp.weight_decay * r.wd_mult,
            }
            if optimizer != "sgd":
                g["eps"] = eps * r.eps_mult
        g["params"].append(params[name])
        g["names"].append(name)
        g["roles"].add(info.role)
    out = []
    for g in groups.values():
        g["roles"] = sorted(g["roles"])
        out.append(g)
    return out


def make_optimizer(groups: list[dict], hp: HParams, optimizer: str) -> torch.optim.Optimizer:
    check_optimizer(optimizer)
    if optimizer == "sgd":
        return torch.optim.SGD(groups, lr=hp.lr, momentum=hp.momentum)
    return torch.optim.AdamW(groups, lr=hp.lr, betas=(hp.beta1, hp.beta2))


# ---------------------------------------------------------------------------------------------
# Your own training loop


def _infer_width(model: nn.Module, base: nn.Module, base_width: int) -> int:
    """The width ``model`` was built at, from how its shapes compare with the base model's."""
    shapes, base_shapes = _shapes(model), _shapes(base)
    if shapes.keys() != base_shapes.keys():
        raise SpecError("factory", "the model and the base-width model have different parameters")
    ratios = {
        s / b
        for name, shape in shapes.items()
        if len(shape) == len(base_shapes[name])
        for s, b in zip(shape, base_shapes[name], strict=True)
        if s != b
    }
    if not ratios:
        return base_width
    if (
        len(ratios) > 1
        or abs(base_width * next(iter(ratios)) - round(base_width * next(iter(ratios)))) > 1e-6
    ):
        raise SpecError("width", "cannot infer the model's width from its shapes; pass width=")
    return round(base_width * ratios.pop())


def parametrize(
    model: nn.Module,
    *,
    base_width: int,
    factory: Callable[[int], nn.Module] | None = None,
    base_model: nn.Module | None = None,
    delta_model: nn.Module | None = None,
    width: int | None = None,
    optimizer: str = "adamw",
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    eps: float = 1e-8,
    init_std: float | None = None,
    alpha_out: float = 1.0,
    scale_readout: bool = True,
    readout: Iterable[str] = (),
    parametrization: Parametrization = "mup",
    seed: int = 0,
) -> list[dict]:
    """µP for your own model and training loop: returns optimizer param groups.

    ``mutune.parametrize(model, base_width=..., factory=..., optimizer=...)``. µP needs to know
    which dims of each parameter grow with width, and finds out by comparing shapes at two widths
    (as ``mup.set_base_shapes`` does), so give either ``factory`` (a callable ``width -> model``;
    it is called on the meta device, nothing is allocated) or ``base_model`` and ``delta_model``
    (the model at ``base_width`` and at any other width). ``model``'s own width is inferred from
    its shapes unless ``width`` is given.

    What it does to ``model``:

    - with ``init_std`` given, re-initialises every parameter by the µP rule (hidden matrices
      σ·√(base/fan_in), the readout at its base-width scale, norms 1, biases 0), seeded by ``seed``;
    - with ``scale_readout`` (the default), hooks every readout module (a Linear mapping the width
      to a fixed size, e.g. the logits) so its output is multiplied by α_out/m, m = width/base_width.
      Apply that yourself instead (and pass ``scale_readout=False``) for a readout tied to the
      embedding, which no hook can see. Attention logits, if any, should use
      α_attn·√d_head_base/d_head rather than 1/√d_head (see ``multipliers``).

    Returns one param group per LR/weight-decay/eps treatment, each a dict with ``params``, ``lr``
    (``lr`` × the group's µP multiplier), ``weight_decay``, ``eps`` (Adam) and, for reference,
    ``lr_mult``, ``names`` and ``roles``. Pass them to ``torch.optim.AdamW(groups, betas=...)`` or
    ``torch.optim.SGD(groups, momentum=...)``. A schedule must scale each group's LR relatively
    (``LambdaLR`` does); never set one absolute LR on every group.
    """
    if optimizer not in ("adamw", "adam", "sgd"):
        raise SpecError("optimizer", f"expected adamw, adam or sgd, got {optimizer!r}")
    if parametrization not in ("mup", "sp"):
        raise SpecError("parametrization", f"expected mup or sp, got {parametrization!r}")
    if factory is not None:
        with torch.device("meta"):
            base, delta = factory(base_width), factory(2 * base_width)
    elif base_model is not None and delta_model is not None:
        base, delta = base_model, delta_model
    else:
        raise SpecError(
            "factory",
            "µP must know which dims grow with width: pass factory=lambda width: MyModel(width), or "
            "base_model= and delta_model= (your model at base_width and at another width)",
        )
    if _shapes(base) == _shapes(delta):
        raise SpecError(
            "factory", "the models at the two widths have the same shapes; does the factory use its width?"
        )
    if width is None:
        width = _infer_width(model, base, base_width)
    elif factory is not None:
        with torch.device("meta"):
            built = factory(width)
        if _shapes(built) != _shapes(model):
            raise SpecError("width", f"factory({width}) does not build a model with the shapes of `model`")

    def build(w: int) -> nn.Module:
        return model if w == width else base if w == base_width else delta

    infos = classify(build, width, base_width, readout)
    hp = HParams(lr=lr, weight_decay=weight_decay, alpha_out=alpha_out)
    if init_std is not None:
        hp.init_std = init_std
        init_weights(model, infos, hp, parametrization, base_width, torch.Generator().manual_seed(seed))
    if scale_readout:
        _hook_readouts(model, infos, multipliers(hp, parametrization, width, base_width).output)
    kind = "sgd" if optimizer == "sgd" else "adamw"
    return param_groups(model, infos, hp, parametrization, kind, base_width, eps=eps)


def _hook_readouts(model: nn.Module, infos: dict[str, ParamInfo], mult: float) -> None:
    """Multiply each readout module's output by ``mult`` (replacing a hook an earlier call left)."""
    modules = dict(model.named_modules())
    for name, info in infos.items():
        if info.role != "readout":
            continue
        if info.module_kind != "linear":
            raise SpecError(
                "scale_readout",
                f"'{name}' is a readout but not a Linear/conv weight, so no hook can scale its output; "
                f"multiply it by α_out/m ({mult:.4g}) in your forward and pass scale_readout=False",
            )
        module = modules[name.rpartition(".")[0]]
        old = getattr(module, "_mutune_readout_hook", None)
        if old is not None:
            old.remove()
            module._mutune_readout_hook = None
        if mult != 1.0:
            module._mutune_readout_hook = module.register_forward_hook(lambda _m, _inp, out, k=mult: out * k)


# Silent breakers: things that defeat µP without an error, detected


OPTIMIZERS = ("adamw", "sgd")
# torch optimizers whose update the rules above describe (Adam-like: entrywise normalised; SGD-like)
COVERED_OPTIMIZERS: tuple[type, ...] = (torch.optim.AdamW, torch.optim.Adam, torch.optim.SGD)


class MuPError(RuntimeError):
    """µP was defeated at run time (e.g. a scheduler overwrote the per-group learning rates)."""


def check_optimizer(optimizer: str) -> None:
    """The rules exist for AdamW and SGD only; anything else would silently get Adam's rules."""
    if optimizer not in OPTIMIZERS:
        raise SpecError(
            "train.optimizer",
            f"µP rules are implemented for {' and '.join(OPTIMIZERS)} only, got {optimizer!r} "
            "(Lion, Muon, Shampoo... need other width rules, TP5 App. B)",
        )


def check_param_groups(optimizer: torch.optim.Optimizer, rtol: float = 1e-6) -> None:
    """Verify, at any point in training, that the optimizer still applies the µP LR ratios.

    Every group from :func:`param_groups` carries ``lr_mult``; µP holds while ``lr / lr_mult`` is
    the same for all groups (a relative schedule such as ``LambdaLR`` keeps it so). A scheduler or
    user code that sets one absolute LR on every group (``OneCycleLR(max_lr=0.01)``, a loop doing
    ``g["lr"] = lr``) collapses the ratios and turns µP into SP without an error; this raises
    :class:`MuPError` instead. Also refuses optimizers the rules do not cover.
    """
    if not isinstance(optimizer, COVERED_OPTIMIZERS):
        raise MuPError(
            f"{type(optimizer).__name__} is not covered by the µP rules (AdamW/Adam or SGD); "
            "its per-group LRs would not give µP"
        )
    groups = optimizer.param_groups
    missing = [i for i, g in enumerate(groups) if "lr_mult" not in g]
    if missing:
        raise MuPError(
            f"param group {missing[0]} has no lr_mult: it was not built by mutune.parametrize.param_groups"
        )
    base = [g["lr"] / g["lr_mult"] for g in groups]
    ref = base[0]
    for g, b in zip(groups, base, strict=True):
        if abs(b - ref) > rtol * max(abs(ref), abs(b), 1e-30):
            first = groups[0]
            raise MuPError(
                f"param group LRs no longer follow their µP multipliers: lr={g['lr']:.4g} for lr_mult="
                f"{g['lr_mult']:.4g} but lr={first['lr']:.4g} for lr_mult={first['lr_mult']:.4g} "
                f"(ratio {g['lr'] / first['lr']:.4g}, expected {g['lr_mult'] / first['lr_mult']:.4g}); "
                "something set one absolute LR on all groups (e.g. OneCycleLR(max_lr=float)): "
                "scale group LRs relatively, e.g. with LambdaLR"
            )

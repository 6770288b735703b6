"""The µP rule table, as data: (optimizer kind, role) -> how init, LR, weight decay and Adam ε scale.

Each entry gives, per quantity, the *exponents* of the parameter's multipliers (relative to the
base model), so the table reads like the papers' tables and a second scaling axis is a column,
not a branch:

- ``fan_in``, ``fan_out``: m_in = fan_in / base fan_in, m_out = fan_out / base fan_out;
- ``width``: m of a vector-like parameter's one width dim (mup's ``infshape.width_mult()``);
- ``depth``, ``depth_alpha``: the exponent of the depth multiplier m_L = L / L_base is
  ``depth + depth_alpha · α`` (α = ``model.depth_alpha``); it applies to per-block parameters only,
  whose :attr:`ParamInfo.depth_mult` is m_L (1 everywhere else, and everywhere at L == L_base).

µP, "Table 8" form (TP5 App. B; what ``mup`` implements; m = width / base_width):

=============  =========================  ===========  ===============  ===============
role           init std                   Adam(W) LR   SGD LR           Muon LR
=============  =========================  ===========  ===============  ===============
embedding      σ                          η            η·m              (AdamW's)
input          σ·√(base/fan_in)           η            η·m              (AdamW's)
hidden         σ·√(base/fan_in)           η/m_in       η·m_out/m_in     η/√m
readout        σ·√(base/base fan_in)      η            η·m              (AdamW's)
vector         1 (norm gain) / 0 (bias)   η            η·m              (AdamW's)
scalar         σ·√(base/fan_in)           η            η                (AdamW's)
=============  =========================  ===========  ===============  ===============

AdamW's weight decay on hidden matrices is λ·m_in, so that PyTorch's decay per step (LR·λ) does
not depend on width; its ε is ε/m on every parameter with a width dim (TP5 App. B.3: ε added after
the square root scales like the gradient, ∝ 1/m under µP). SGD decays λ·m_in/m_out (hidden) and λ/m (vector-like), again keeping
LR·λ constant. Vectors and scalars (1-D) are not decayed. SP (the control) keeps every multiplier at
1 and gives every weight matrix, the readout included, the 1/fan_in init variance; at m = 1 the
two coincide, so a µP model at its base width trains exactly like its SP twin.

Depth (CompleteP, AdamW only; m_L = depth / base_depth, α = ``model.depth_alpha``): per-block
matrices LR ×m_L^(α−1), ε ×m_L^−α; per-block norms and biases LR ×m_L^(α−1), ε ×m_L^−α; each residual
branch ×m_L^−α in the forward (:mod:`mutune.multipliers`); embeddings, final norm and readout unchanged.

This module imports nothing of the spec: it raises plain ``ValueError``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from .shapes import ParamInfo, Role

Parametrization = Literal["mup", "sp"]
InitFanIn = Literal["fan_in", "base_fan_in", "none"]
ROLES: tuple[Role, ...] = ("embedding", "input", "hidden", "readout", "vector", "scalar")


@dataclass(frozen=True)
class Scaling:
    """A multiplier m_in^fan_in · m_out^fan_out · m^width · m_L^(depth + depth_alpha·α)."""

    fan_in: float = 0.0
    fan_out: float = 0.0
    width: float = 0.0
    depth: float = 0.0
    depth_alpha: float = 0.0

    def __call__(self, info: ParamInfo, alpha: float = 1.0) -> float:
        # positive powers multiply the numerator, negative ones the denominator, so that the
        # familiar ratios (fan_out_mult / fan_in_mult, 1 / fan_in_mult) come out exactly as written
        num = den = 1.0
        for m, e in (
            (info.fan_out_mult, self.fan_out),
            (info.fan_in_mult, self.fan_in),
            (info.width_mult, self.width),
            (info.depth_mult, self.depth + self.depth_alpha * alpha),
        ):
            if e > 0:
                num *= m if e == 1 else m**e
            elif e < 0:
                den *= m if e == -1 else m**-e
        return num / den


ONE = Scaling()


@dataclass(frozen=True)
class RoleRule:
    """How one role's init, LR, weight decay and ε scale. ``init_fan_in``: a normal init has std
    σ·√(base_width / fan_in) at the fan-in named here (``none``: σ, whatever the fan-in)."""

    init_fan_in: InitFanIn = "fan_in"
    lr: Scaling = ONE
    weight_decay: Scaling = ONE
    eps: Scaling = ONE
    same_fan_mults: bool = False  # the rule assumes fan-in and fan-out grow by the same factor


SGD_VECTOR = RoleRule(lr=Scaling(width=1), weight_decay=Scaling(width=-1))
# Adam's ε is added after the square root, so it must shrink like the gradient it is compared with
# (TP5 App. B.3, "for all parameters"): under µP every gradient entry of a parameter with a width dim
# is ∝ 1/m (the backward signal into the residual stream carries the readout's α_out/m), and inside
# a residual branch also ∝ m_L^-α. CompleteP's reference code gives embeddings, final norm and readout
# ε/m and everything in a block ε/(m·m_L^α) since its January 2026 fix (arXiv 2512.22382).
ADAM_EPS = Scaling(width=-1)
# CompleteP (Dey et al., arXiv 2505.01618, Table 1) for AdamW: a block's matrices get LR η/m·m_L^(α-1)
# and ε/(m·m_L^α), its norms and biases LR η·m_L^(α-1); hidden decay λ·m (LR·λ constant in width), no
# depth factor; nothing outside the blocks changes with depth.
ADAM_HIDDEN = RoleRule(
    lr=Scaling(fan_in=-1, depth=-1, depth_alpha=1),
    weight_decay=Scaling(fan_in=1),
    eps=Scaling(fan_in=-1, depth_alpha=-1),
)

# (optimizer kind, role) -> rule, under µP. Missing roles of a kind take RoleRule() (no scaling).
MUP: dict[tuple[str, Role], RoleRule] = {
    ("adam", "embedding"): RoleRule(init_fan_in="none", eps=ADAM_EPS),
    ("adam", "input"): RoleRule(eps=ADAM_EPS),
    ("adam", "readout"): RoleRule(init_fan_in="base_fan_in", eps=ADAM_EPS),
    ("adam", "hidden"): ADAM_HIDDEN,
    ("adam", "vector"): RoleRule(lr=Scaling(depth=-1, depth_alpha=1), eps=Scaling(width=-1, depth_alpha=-1)),
    ("sgd", "embedding"): RoleRule(init_fan_in="none", lr=Scaling(width=1), weight_decay=Scaling(width=-1)),
    ("sgd", "input"): SGD_VECTOR,
    ("sgd", "hidden"): RoleRule(lr=Scaling(fan_out=1, fan_in=-1), weight_decay=Scaling(fan_in=1, fan_out=-1)),
    ("sgd", "readout"): RoleRule(
        init_fan_in="base_fan_in", lr=Scaling(width=1), weight_decay=Scaling(width=-1)
    ),
    ("sgd", "vector"): SGD_VECTOR,
}
# SP: every multiplier 1, a 1/fan_in init variance for every weight matrix except embeddings.
SP_EMBEDDING = RoleRule(init_fan_in="none")

# Muon (torch.optim.Muon with adjust_lr_fn="match_rms_adamw") orthogonalises the update of a hidden
# matrix and scales it by 0.2·√max(fan_out, fan_in), so that at the base width its RMS matches
# AdamW's and one η serves both optimizers (Moonlight, arXiv 2502.16982). Its spectral norm is then
# 0.2·lr·√max(fan_out, fan_in), growing like √m; the spectral condition for feature learning (Yang,
# Simon & Bernstein, arXiv 2310.17813) wants it constant when both dims grow together, so the LR
# falls like m^-1/2 and the decay, coupled to the LR as in PyTorch, rises like m^1/2 (LR·λ constant).
MUP[("muon", "hidden")] = RoleRule(
    lr=Scaling(fan_in=-0.5), weight_decay=Scaling(fan_in=0.5), same_fan_mults=True
)

KINDS = ("adam", "sgd", "muon")  # rule kinds with a table; an optimizer maps each parameter to one of them
# Kinds with a published depth rule (the depth columns above). SGD's depth-µP (TP6) covers residual
# blocks of one matrix, not transformers (TP6 §10.3); Muon has none: both are refused, not guessed.
DEPTH_KINDS = ("adam",)


@dataclass(frozen=True)
class Rule:
    """One parameter's treatment: its init and its LR / weight-decay / ε multipliers."""

    init: Literal["normal", "zeros", "ones", "keep"]
    std: float
    lr_mult: float
    wd_mult: float  # 0 means not decayed
    eps_mult: float


def role_rule(parametrization: Parametrization, kind: str, role: Role) -> RoleRule:
    if kind not in KINDS:
        raise ValueError(f"no µP rules for optimizer kind {kind!r} (known: {', '.join(KINDS)})")
    if parametrization == "sp":
        return SP_EMBEDDING if role == "embedding" else RoleRule()
    if parametrization != "mup":
        raise ValueError(f"unknown parametrization {parametrization!r} (mup or sp)")
    return MUP.get((kind, role), RoleRule())


def init_kind(info: ParamInfo) -> Literal["normal", "zeros", "ones", "keep"]:
    """Norm gains start at 1 and biases at 0; other 1-D parameters keep the model's own init."""
    if info.module_kind == "norm":
        return "zeros" if info.is_bias else "ones"
    if info.role in ("vector", "scalar") and len(info.shape) < 2:
        return "zeros" if info.is_bias else "keep"
    return "normal"


def init(
    info: ParamInfo, parametrization: Parametrization, init_std: float, base_width: int
) -> tuple[Literal["normal", "zeros", "ones", "keep"], float]:
    """How one parameter starts: (kind, std of the normal draw, 0 for the other kinds)."""
    kind = init_kind(info)
    if kind != "normal":
        return kind, 0.0
    # the init does not depend on the optimizer: every kind's table agrees on it
    r = role_rule(parametrization, "adam", info.role)
    fan_in = {"fan_in": info.fan_in, "base_fan_in": info.base_fan_in, "none": None}[r.init_fan_in]
    return kind, init_std if fan_in is None else init_std * math.sqrt(base_width / fan_in)


def scaling(
    info: ParamInfo, parametrization: Parametrization, kind: str, depth_alpha: float = 1.0
) -> tuple[float, float, float]:
    """One parameter's (LR, weight-decay, ε) multipliers under optimizer kind ``kind``; a parameter
    that is not a matrix is not decayed (multiplier 0)."""
    r = role_rule(parametrization, kind, info.role)
    if r.same_fan_mults and info.fan_in_mult != info.fan_out_mult:
        raise ValueError(
            f"'{info.name}': its fan-in grows {info.fan_in_mult:g}x and its fan-out {info.fan_out_mult:g}x; "
            f"the {kind} width rule assumes a hidden matrix whose dims grow together"
        )
    if info.depth_mult != 1.0 and kind not in DEPTH_KINDS:
        raise ValueError(f"'{info.name}': no published depth rule for optimizer kind {kind!r}")
    decayed = len(info.shape) >= 2
    return (
        r.lr(info, depth_alpha),
        r.weight_decay(info, depth_alpha) if decayed else 0.0,
        r.eps(info, depth_alpha),
    )


def rule(
    info: ParamInfo,
    parametrization: Parametrization,
    kind: str,
    init_std: float,
    base_width: int,
    depth_alpha: float = 1.0,
) -> Rule:
    """The init, LR, weight-decay and ε treatment of one parameter (see the module table)."""
    init_as, std = init(info, parametrization, init_std, base_width)
    lr_mult, wd_mult, eps_mult = scaling(info, parametrization, kind, depth_alpha)
    return Rule(init=init_as, std=std, lr_mult=lr_mult, wd_mult=wd_mult, eps_mult=eps_mult)


def assign_(p: torch.Tensor, full: torch.Tensor) -> None:
    """Write ``full`` (the parameter's whole value, a plain tensor) into ``p``. A sharded parameter
    (a DTensor, under FSDP2) keeps only its own shard of it, cut locally without communication, so
    every rank that drew the same ``full`` holds the same weights as one process would."""
    if hasattr(p, "device_mesh"):  # a DTensor; torch.distributed is imported only then
        from torch.distributed.tensor import distribute_tensor

        full = distribute_tensor(full.to(p.device), p.device_mesh, p.placements, src_data_rank=None)
    p.copy_(full)


def full_value(p: torch.Tensor) -> torch.Tensor:
    """The parameter's whole value: itself, or all of a sharded parameter's shards gathered (a copy)."""
    return p.full_tensor() if hasattr(p, "full_tensor") else p


def init_weights(
    model: nn.Module,
    infos: dict[str, ParamInfo],
    parametrization: Parametrization,
    init_std: float,
    base_width: int,
    generator: torch.Generator,
    zero_init_readout: bool = False,
) -> None:
    """Initialise every parameter by its rule, in a fixed order, from ``generator``.

    Normal draws are made on the CPU in fp32 (so the same seed gives the same weights on every
    device and in every dtype) and written into the parameter where it lives, in its own dtype.
    A sharded parameter (FSDP2's DTensor) keeps its own shard of the same draw (:func:`assign_`).
    """
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, info in infos.items():
            p = params[name]
            kind, std = init(info, parametrization, init_std, base_width)
            if info.role == "readout" and zero_init_readout:
                p.zero_()
            elif kind == "normal":
                if p.device.type == "meta":
                    continue
                assign_(p, torch.randn(p.shape, generator=generator) * std)
            elif kind == "zeros":
                p.zero_()
            elif kind == "ones":
                p.fill_(1.0)

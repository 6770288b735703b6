"""The parametrizations, each one registered object: its rule table, its forward multipliers, its
clipping rule and what the coord check expects of it.

Nothing outside this module compares a parametrization's name: code asks the object (``p.label``,
``p.multipliers(...)``, ``p.clip_scale(info)``, ``p.coord_check``). Adding one (u-µP, say) is one
more object here and its tests.

µP, "Table 8" form (TP5 App. B; what ``mup`` implements; m = width / base_width):

=============  =========================  ===========  ===============  ===============
role           init std                   Adam(W) LR   SGD LR           Muon LR
=============  =========================  ===========  ===============  ===============
embedding      σ                          η            η·m              (AdamW's)
input          σ·√(base/fan_in)           η            η·m              (AdamW's)
hidden         σ·√(base/fan_in)           η/m_in       η·m_out/m_in     η/√m
readout        σ·√(base/base fan_in)      η            η·m              (AdamW's)
router         σ·√(base/base fan_in)      η            η·m              (AdamW's)
vector         1 (norm gain) / 0 (bias)   η            η·m              (AdamW's)
scalar         σ·√(base/fan_in)           η            η                (AdamW's)
=============  =========================  ===========  ===============  ===============

AdamW's weight decay on hidden matrices is λ·m_in, so that PyTorch's decay per step (LR·λ) does
not depend on width; its ε is ε/m on every parameter with a width dim (TP5 App. B.3: ε added after
the square root scales like the gradient, ∝ 1/m under µP). SGD decays λ·m_in/m_out (hidden) and λ/m
(vector-like), again keeping LR·λ constant. Vectors and scalars (1-D) are not decayed. Forward: the
embedding output × α_in, the logits × α_out/m, attention logits × α_attn·√d_head_base/d_head (1/d
attention that equals SP's 1/√d at the base head dim; TP5 Def. 4.1, App. B.1). A router (a width ->
fixed-size map inside the network, a mixture's gate) is treated as a readout whose output is × 1/m,
without α_out (microsoft/mup #48: "routing gate should be MuReadout").

SP (the control) keeps every multiplier at 1 and gives every weight matrix, the readout included,
the 1/fan_in init variance; the embeddings keep σ. At m = 1 the two coincide, so a µP model at its
base width trains exactly like its SP twin.

Depth (CompleteP, AdamW only; m_L = depth / base_depth, α = ``model.depth_alpha``): per-block
matrices LR ×m_L^(α−1), ε ×m_L^−α; per-block norms and biases LR ×m_L^(α−1), ε ×m_L^−α; each residual
branch ×m_L^−α in the forward (:mod:`mutune.mup.multipliers`); embeddings, final norm and readout
unchanged.

Experts (a mixture's, m_E = n_experts / base_experts at a fixed top_k; AdamW and Muon): each expert
sees a fraction top_k / n_experts of the tokens and each router row the gradient of those that chose
it, so their gradient entries shrink with m_E while the forward keeps its size (the gates are
renormalised over the chosen experts). Adam and Muon normalise the update, so the LR needs no factor
and only Adam's ε follows the gradient (ε/m_E, TP5 App. B.3's reason for ε/m). Nothing else depends
on the expert count: attention, embeddings, norms and readout see every token whatever the number of
experts. SGD's update is the gradient itself, which shrinks between 1/m_E and 1/√m_E as per-token
gradients partly cancel (the coord check across experts 2..16: ×m_E on the LR over-updates the
routers and experts, slopes up to +1.0, no factor under-updates them, down to -0.9; docs/mup.md): no
rule is given, and an SGD target at another expert count is warned, not guessed.

Plain data and arithmetic: no torch, no spec.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from .rules import KINDS, InitKind, RoleRule, Rule, Scaling, init_kind

if TYPE_CHECKING:
    from .shapes import ParamInfo, Role


@dataclass(frozen=True)
class Multipliers:
    """Forward multipliers a model applies: embedding output, logits, attention logits, residual
    branches, router logits."""

    input: float
    output: float
    attn: float | None  # None for models without attention
    residual: float = 1.0  # each residual branch's output, m_L^-α (CompleteP); 1 without depth scaling
    router: float = 1.0  # a router's (a mixture's gate's) logits: 1/m under µP


@dataclass(frozen=True)
class Parametrization:
    """A parametrization: how each parameter starts, learns and is multiplied in the forward."""

    name: str  # what the spec calls it (model.parametrization)
    label: str  # how tables and figures name it
    doc: str
    # (optimizer kind, role) -> rule; a kind of "*" stands for every kind. Missing: RoleRule() (no scaling)
    table: dict[tuple[str, str], RoleRule]
    logits_width_exponent: float  # the logits × α_out · m^this (µP -1: α_out/m; SP 0)
    attention: Literal["1/d", "1/sqrt(d)"]  # the attention logit scale, relative to the base head dim
    clip_by_base_width: bool  # gradient norms measured as at the base width (see clip_scale)
    # what the coord check expects: "verify" (activations keep their size as the model widens) or
    # "control" (they grow: the negative control, checked only beside a verified one)
    coord_check: Literal["verify", "control"]
    axis_kinds: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # axis -> kinds with its rule

    def role_rule(self, kind: str, role: Role) -> RoleRule:
        if kind not in KINDS:
            raise ValueError(f"no µP rules for optimizer kind {kind!r} (known: {', '.join(KINDS)})")
        return self.table.get((kind, role)) or self.table.get(("*", role)) or RoleRule()

    def init(self, info: ParamInfo, init_std: float, base_width: int) -> tuple[InitKind, float]:
        """How one parameter starts: (kind, std of the normal draw, 0 for the other kinds)."""
        kind = init_kind(info)
        if kind != "normal":
            return kind, 0.0
        if info.role == "vector":  # stored with extra dims of 1 ((1, 1, E) bias_k): Θ(1) entries at any width
            return kind, init_std
        # the init does not depend on the optimizer: every kind's table agrees on it
        r = self.role_rule("adam", info.role)
        fan_in = {"fan_in": info.fan_in, "base_fan_in": info.base_fan_in, "none": None}[r.init_fan_in]
        return kind, init_std if fan_in is None else init_std * math.sqrt(base_width / fan_in)

    def scaling(self, info: ParamInfo, kind: str, depth_alpha: float = 1.0) -> tuple[float, float, float]:
        """One parameter's (LR, weight-decay, ε) multipliers under optimizer kind ``kind``; a parameter
        that is not a matrix is not decayed (multiplier 0)."""
        r = self.role_rule(kind, info.role)
        if r.same_fan_mults and info.fan_in_mult != info.fan_out_mult:
            raise ValueError(
                f"'{info.name}': its fan-in grows {info.fan_in_mult:g}x and its fan-out "
                f"{info.fan_out_mult:g}x; the {kind} width rule assumes a hidden matrix whose dims grow together"
            )
        for axis, m in info.along:
            if m != 1.0 and kind not in self.axis_kinds.get(axis, ()):
                raise ValueError(f"'{info.name}': no published {axis} rule for optimizer kind {kind!r}")
        return (
            r.lr(info, depth_alpha),
            r.weight_decay(info, depth_alpha) if info.is_matrix else 0.0,
            r.eps(info, depth_alpha),
        )

    def rule(
        self, info: ParamInfo, kind: str, init_std: float, base_width: int, depth_alpha: float = 1.0
    ) -> Rule:
        """The init, LR, weight-decay and ε treatment of one parameter (see the table)."""
        init_as, std = self.init(info, init_std, base_width)
        lr_mult, wd_mult, eps_mult = self.scaling(info, kind, depth_alpha)
        return Rule(init=init_as, std=std, lr_mult=lr_mult, wd_mult=wd_mult, eps_mult=eps_mult)

    def multipliers(
        self,
        width: int,
        base_width: int,
        *,
        alpha_in: float = 1.0,
        alpha_out: float = 1.0,
        alpha_attn: float = 1.0,
        head_dim: int | None = None,
        base_head_dim: int | None = None,
        depth_mult: float = 1.0,
        depth_alpha: float = 1.0,
    ) -> Multipliers:
        """The forward multipliers of a model at ``width`` (and m_L = ``depth_mult``)."""
        m = width / base_width
        e = self.logits_width_exponent
        output = alpha_out if e == 0 else alpha_out / m if e == -1 else alpha_out * m**e
        attn = None
        if head_dim is not None:
            if self.attention == "1/d":
                # α_attn·√d_base/d, written so that at d == d_base it is bit-identical to SP's α/√d
                base = base_head_dim or head_dim
                attn = alpha_attn / math.sqrt(base) * (base / head_dim)
            else:
                attn = alpha_attn / math.sqrt(head_dim)
        residual = depth_mult**-depth_alpha if depth_mult != 1.0 else 1.0
        router = 1.0 if e == 0 else 1.0 / m if e == -1 else m**e
        return Multipliers(input=alpha_in, output=output, attn=attn, residual=residual, router=router)

    def clip_scale(self, info: ParamInfo) -> float:
        """The factor that takes this parameter's gradient norm back to what it is at the base width.

        Under µP every gradient entry shrinks like 1/m (the logits' α_out/m multiplier scales the
        whole backward pass; measured for every role, issue 13), so a parameter with n entries
        (n_base at the base width) has a gradient norm ∝ √n / m: m·√(n_base/n) undoes it. A hidden
        matrix (n grows like m²) gets 1; a vector, an embedding or a readout (one width dim) gets
        √m; a parameter with no width dim 1. At the base width every factor is 1. SP measures the
        plain norm (factor 1).
        """
        if not self.clip_by_base_width or not info.inf_dims:
            return 1.0
        n, n_base = math.prod(info.shape), math.prod(info.base_shape)
        return info.width_mult * math.sqrt(n_base / n)


# Adam's ε is added after the square root, so it must shrink like the gradient it is compared with
# (TP5 App. B.3, "for all parameters"): under µP every gradient entry of a parameter with a width dim
# is ∝ 1/m (the backward signal into the residual stream carries the readout's α_out/m), and inside
# a residual branch also ∝ m_L^-α. CompleteP's reference code gives embeddings, final norm and readout
# ε/m and everything in a block ε/(m·m_L^α) since its January 2026 fix (arXiv 2512.22382).
# A mixture's experts and routers (the parameters along the experts axis) see top_k / n_experts of
# the tokens: their gradient entries shrink like 1/m_E, so ε/m_E (m_E is 1 for every other parameter).
ADAM_EPS = Scaling.of(width=-1, experts=-1)
SGD_VECTOR = RoleRule(lr=Scaling.of(width=1), weight_decay=Scaling.of(width=-1))
SGD_READOUT = RoleRule(init_fan_in="base_fan_in", lr=Scaling.of(width=1), weight_decay=Scaling.of(width=-1))
ADAM_READOUT = RoleRule(init_fan_in="base_fan_in", eps=ADAM_EPS)
# CompleteP (Dey et al., arXiv 2505.01618, Table 1) for AdamW: a block's matrices get LR η/m·m_L^(α-1)
# and ε/(m·m_L^α), its norms and biases LR η·m_L^(α-1); hidden decay λ·m (LR·λ constant in width), no
# depth factor; nothing outside the blocks changes with depth.
ADAM_HIDDEN = RoleRule(
    lr=Scaling.of(fan_in=-1, depth=-1, depth_alpha=1),
    weight_decay=Scaling.of(fan_in=1),
    eps=Scaling.of(fan_in=-1, depth_alpha=-1, experts=-1),
)
# Muon (torch.optim.Muon with adjust_lr_fn="match_rms_adamw") orthogonalises the update of a hidden
# matrix and scales it by 0.2·√max(fan_out, fan_in), so that at the base width its RMS matches
# AdamW's and one η serves both optimizers (Moonlight, arXiv 2502.16982). Its spectral norm is then
# 0.2·lr·√max(fan_out, fan_in), growing like √m; the spectral condition for feature learning (Yang,
# Simon & Bernstein, arXiv 2310.17813) wants it constant when both dims grow together, so the LR
# falls like m^-1/2 and the decay, coupled to the LR as in PyTorch, rises like m^1/2 (LR·λ constant).
MUON_HIDDEN = RoleRule(lr=Scaling.of(fan_in=-0.5), weight_decay=Scaling.of(fan_in=0.5), same_fan_mults=True)

# Kinds with a published depth rule (the depth exponents above). SGD's depth-µP (TP6) covers residual
# blocks of one matrix, not transformers (TP6 §10.3); Muon has none: both are refused, not guessed.
DEPTH_KINDS = ("adam",)
# Kinds with an experts rule: Adam's and Muon's (whose orthogonalised update of an expert's matrix
# does not depend on the gradient's scale, so it needs no factor); SGD's is refused (module doc)
EXPERTS_KINDS = ("adam", "muon")

MUP = Parametrization(
    name="mup",
    label="µP",
    doc="the Maximal Update Parametrization (TP5): hyperparameters transfer across width",
    table={
        ("adam", "embedding"): RoleRule(init_fan_in="none", eps=ADAM_EPS),
        ("adam", "input"): RoleRule(eps=ADAM_EPS),
        ("adam", "readout"): ADAM_READOUT,
        ("adam", "router"): ADAM_READOUT,
        ("adam", "hidden"): ADAM_HIDDEN,
        ("adam", "vector"): RoleRule(
            lr=Scaling.of(depth=-1, depth_alpha=1), eps=Scaling.of(width=-1, depth_alpha=-1, experts=-1)
        ),
        ("sgd", "embedding"): RoleRule(
            init_fan_in="none", lr=Scaling.of(width=1), weight_decay=Scaling.of(width=-1)
        ),
        ("sgd", "input"): SGD_VECTOR,
        ("sgd", "hidden"): RoleRule(
            lr=Scaling.of(fan_out=1, fan_in=-1), weight_decay=Scaling.of(fan_in=1, fan_out=-1)
        ),
        ("sgd", "readout"): SGD_READOUT,
        ("sgd", "router"): SGD_READOUT,
        ("sgd", "vector"): SGD_VECTOR,
        ("muon", "hidden"): MUON_HIDDEN,
    },
    logits_width_exponent=-1,
    attention="1/d",
    clip_by_base_width=True,
    coord_check="verify",
    axis_kinds={"depth": DEPTH_KINDS, "experts": EXPERTS_KINDS},
)

SP = Parametrization(
    name="sp",
    label="SP",
    doc="standard parametrization, the control: no width scaling, hyperparameters do not transfer",
    # every multiplier 1, a 1/fan_in init variance for every weight matrix except the embeddings
    table={("*", "embedding"): RoleRule(init_fan_in="none")},
    logits_width_exponent=0,
    attention="1/sqrt(d)",
    clip_by_base_width=False,
    coord_check="control",
    axis_kinds={"depth": DEPTH_KINDS, "experts": EXPERTS_KINDS},
)

PARAMETRIZATIONS: dict[str, Parametrization] = {p.name: p for p in (MUP, SP)}


def get(name: str) -> Parametrization:
    """The registered parametrization called ``name``; anything else is a plain ``ValueError``."""
    if name not in PARAMETRIZATIONS:
        raise ValueError(f"unknown parametrization {name!r} (known: {', '.join(PARAMETRIZATIONS)})")
    return PARAMETRIZATIONS[name]


def names() -> tuple[str, ...]:
    return tuple(PARAMETRIZATIONS)


def label(name: str) -> str:
    """How tables and figures name a parametrization (``µP``); an unknown name as it is."""
    return PARAMETRIZATIONS[name].label if name in PARAMETRIZATIONS else name


def resolve(parametrization: Parametrization | str) -> Parametrization:
    """A parametrization object from itself or its registered name (what the Python API accepts)."""
    return get(parametrization) if isinstance(parametrization, str) else parametrization


def multipliers(parametrization: Parametrization | str, width: int, base_width: int, **kwargs) -> Multipliers:
    """The forward multipliers of ``parametrization`` at ``width`` (see :meth:`Parametrization.multipliers`)."""
    return resolve(parametrization).multipliers(width, base_width, **kwargs)


def controls_of(p: Parametrization) -> tuple[Parametrization, ...]:
    """The parametrizations a check of ``p`` may run beside it as the negative control."""
    return tuple(q for q in PARAMETRIZATIONS.values() if q.coord_check == "control" and q is not p)

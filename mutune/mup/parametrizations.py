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
class UnitScales:
    """u-µP's forward hyperparameters (Blake et al. 2025, Table 3), for a model whose every op is unit-scaled."""

    attn: float  # α_attn-softmax: attention logits × α / d_head
    act: float  # α_ffn-act: the MLP's nonlinearity applied to α·x (and divided by α)
    loss: float  # α_loss-softmax: the logits × α inside the loss
    residual: float  # α_res: the residual branches' contribution relative to the embedding's
    residual_attn_ratio: float  # α_res-attn-ratio: attention branches' relative to MLP branches'


@dataclass(frozen=True)
class Multipliers:
    """Forward multipliers a model applies: embedding output, logits, attention logits, residual
    branches, router logits; and, for a unit-scaled model (u-µP), its scales."""

    input: float
    output: float
    attn: float | None  # None for models without attention
    residual: float = 1.0  # each residual branch's output, m_L^-α (CompleteP); 1 without depth scaling
    router: float = 1.0  # a router's (a mixture's gate's) logits: 1/m under µP
    unit: UnitScales | None = None  # set: the model computes every op unit-scaled (u-µP)


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
    # gradient clipping: norms measured as at the base width (see clip_scale), plain, or none at all
    clip: Literal["base_width", "global", "none"]
    # what the coord check expects: "verify" (activations keep their size as the model widens) or
    # "control" (they grow: the negative control, checked only beside a verified one)
    coord_check: Literal["verify", "control"]
    axis_kinds: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # axis -> kinds with its rule
    # the parametrization this one trains exactly like at its base width and depth (every multiplier
    # 1 there): a sweep does not train that one's base point again (µP: SP)
    same_at_base: str | None = None
    # the hyperparameters it reads (beyond the optimizer's own): the rest change nothing under it
    hparams: tuple[str, ...] = ("lr", "init_std", "weight_decay", "alpha_in", "alpha_out", "alpha_attn")
    kinds: tuple[str, ...] = KINDS  # the optimizer kinds its table has rules for
    # PyTorch decays by lr·λ per step; independent decay makes it λ, whatever the (peak) LR (u-µP)
    independent_weight_decay: bool = False
    # its own default search ranges (log-uniform), where they differ from the usual ones
    space: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    # the coord check's extra property: every activation and gradient of RMS within this factor of 1
    # at init (unit scaling); None: not expected
    unit_rms: float | None = None
    # slopes against log width the coord check expects other than 0: (layer kind, measure) -> (slope, why)
    expected_slopes: Mapping[tuple[str, str], tuple[float, str]] = field(default_factory=dict)
    check_lr: float | None = None  # the coord check's LR where its LR scale is its own (else the optimizer's)

    def uses(self, factor: str) -> bool:
        """Whether any rule of its table has an exponent on ``factor`` (an axis multiplier or size)."""
        return any(
            any(f == factor and (e or a) for f, e, a in s.terms)
            for r in self.table.values()
            for s in (r.lr, r.weight_decay, r.eps)
        )

    def role_rule(self, kind: str, role: Role) -> RoleRule:
        if kind not in self.kinds:
            raise ValueError(
                f"no {self.label} rules for optimizer kind {kind!r} (known: {', '.join(self.kinds)})"
            )
        return self.table.get((kind, role)) or self.table.get(("*", role)) or RoleRule()

    def init(self, info: ParamInfo, init_std: float, base_width: int) -> tuple[InitKind, float]:
        """How one parameter starts: (kind, std of the normal draw, 0 for the other kinds)."""
        kind = init_kind(info)
        if kind != "normal":
            return kind, 0.0
        if info.role == "vector":  # stored with extra dims of 1 ((1, 1, E) bias_k): Θ(1) entries at any width
            return kind, 1.0 if self.role_rule("adam", "vector").init_fan_in == "unit" else init_std
        # the init does not depend on the optimizer: every kind's table agrees on it
        r = self.role_rule("adam", info.role)
        if r.init_fan_in == "unit":
            return kind, 1.0
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
        for axis, m, _ in info.along:
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
        alpha_res: float = 1.0,
        alpha_res_attn_ratio: float = 1.0,
        alpha_ffn_act: float = 1.0,
        head_dim: int | None = None,
        base_head_dim: int | None = None,
        depth_mult: float = 1.0,
        depth_alpha: float = 1.0,
    ) -> Multipliers:
        """The forward multipliers of a model at ``width`` (and m_L = ``depth_mult``); the u-µP
        hyperparameters (``alpha_res``, ...) are read by u-µP only."""
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
        if self.clip != "base_width" or not info.inf_dims:
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
    same_at_base="sp",
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
    clip="base_width",
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
    clip="global",
    coord_check="control",
    axis_kinds={"depth": DEPTH_KINDS, "experts": EXPERTS_KINDS},
)


@dataclass(frozen=True)
class UnitMuP(Parametrization):
    """u-µP: every op of the model unit-scaled, so its forward carries its own scales (:class:`UnitScales`)."""

    def multipliers(
        self,
        width: int,
        base_width: int,
        *,
        alpha_in: float = 1.0,
        alpha_out: float = 1.0,
        alpha_attn: float = 1.0,
        alpha_res: float = 1.0,
        alpha_res_attn_ratio: float = 1.0,
        alpha_ffn_act: float = 1.0,
        head_dim: int | None = None,
        base_head_dim: int | None = None,
        depth_mult: float = 1.0,
        depth_alpha: float = 1.0,
    ) -> Multipliers:
        """No width factor anywhere: unit scaling's ops take their scales from the shapes they see."""
        unit = UnitScales(alpha_attn, alpha_ffn_act, alpha_out, alpha_res, alpha_res_attn_ratio)
        return Multipliers(input=1.0, output=alpha_out, attn=alpha_attn if head_dim else None, unit=unit)


# u-µP (Blake et al., "u-µP: The Unit-Scaled Maximal Update Parametrization", ICLR 2025; Graphcore's
# unit_scaling 0.3.5, unit_scaling/optim.py): every weight starts at unit variance; Adam's LR is η for
# the output (readout) weight, norms and biases, η·fan_in^-1/2 for every other weight (an embedding
# table's "fan-in" is its width), times depth^-1/2 for a parameter of a residual block; SGD's is the
# same (unit-scaled gradients, readout constraint None); weight decay independent of the LR.
UNIT_WEIGHT = RoleRule(init_fan_in="unit", lr=Scaling.of(size_in=-0.5, blocks=-0.5))
UNIT_OUTPUT = RoleRule(init_fan_in="unit", lr=Scaling.of(blocks=-0.5))

UMUP = UnitMuP(
    name="umup",
    label="u-µP",
    doc="unit-scaled µP (Blake et al. 2025): unit init, every op unit-scaled, fewer hyperparameters",
    table={
        ("*", "embedding"): UNIT_WEIGHT,
        ("*", "input"): UNIT_WEIGHT,
        ("*", "hidden"): UNIT_WEIGHT,
        ("*", "scalar"): UNIT_WEIGHT,
        ("*", "readout"): UNIT_OUTPUT,
        ("*", "router"): UNIT_OUTPUT,
        ("*", "vector"): UNIT_OUTPUT,
    },
    logits_width_exponent=0,
    attention="1/d",
    # the gradients are unit-scaled (the loss's backward is not divided by the batch), so a norm
    # threshold in the loss's units does not apply: train.grad_clip is not used
    clip="none",
    coord_check="verify",
    hparams=(
        "lr",
        "weight_decay",
        "alpha_out",
        "alpha_attn",
        "alpha_res",
        "alpha_res_attn_ratio",
        "alpha_ffn_act",
    ),
    kinds=("adam", "sgd"),  # Muon: no u-µP rule published
    independent_weight_decay=True,
    space={"lr": (2.0**-6, 2.0**3)},
    unit_rms=4.0,
    expected_slopes={
        ("embedding", "dx"): (
            -0.5,
            "u-µP's embedding LR is η/√fan-out (u-µP Table 2, after Everett et al. 2024), so the table moves "
            "like width^-1/2 by design",
        )
    },
    # u-µP's LR scale is its own (η ~ 1): at 0.5 correct u-µP's closest slope on quickstart --smoke was
    # at 25% of its limit; at 2 the own-update slopes reached 0.35 (limit 0.5)
    check_lr=0.5,
)

PARAMETRIZATIONS: dict[str, Parametrization] = {p.name: p for p in (MUP, SP, UMUP)}


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

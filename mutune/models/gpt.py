"""A decoder-only transformer in the nanoGPT mould, with the three µP forward multipliers.

Pre-norm blocks, causal attention through ``scaled_dot_product_attention`` with an explicit
logit scale, GELU MLP, learned position embeddings, optional tied embeddings. Init and learning
rates are not set here: the parametrization's rules do that (:mod:`mutune.mup`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..flops import Workload, matmul_params
from ..mup import unit
from ..mup.init import assign_, full_value
from ..mup.parametrizations import UnitScales
from . import forward_multipliers


@dataclass
class GPTConfig:
    vocab_size: int
    seq_len: int
    width: int  # d_model
    depth: int
    n_head: int
    mlp_ratio: int = 4
    bias: bool = False
    tie_embeddings: bool = False
    input_mult: float = 1.0  # α_in on the embedding output
    output_mult: float = 1.0  # α_out / m on the logits (µP) or α_out (SP)
    attn_scale: float | None = None  # logit scale; None means SDPA's default 1/√d_head
    residual_mult: float = 1.0  # each residual branch × this: m_L^-α under depth scaling (CompleteP)
    unit: UnitScales | None = None  # u-µP: every op unit-scaled (UnitGPT), with these scales

    @property
    def head_dim(self) -> int:
        return self.width // self.n_head


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.n_head = cfg.n_head
        self.attn_scale = cfg.attn_scale
        self.c_attn = nn.Linear(cfg.width, 3 * cfg.width, bias=cfg.bias)  # q, k, v stacked on dim 0
        self.c_proj = nn.Linear(cfg.width, cfg.width, bias=cfg.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.size()  # batch, sequence length, width
        q, k, v = self.c_attn(x).split(C, dim=2)
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hd)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=self.attn_scale)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.c_proj(y)


class MLPBlock(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(cfg.width, cfg.mlp_ratio * cfg.width, bias=cfg.bias)
        self.c_proj = nn.Linear(cfg.mlp_ratio * cfg.width, cfg.width, bias=cfg.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(F.gelu(self.c_fc(x)))


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig, mlp: Callable[[GPTConfig], nn.Module] = MLPBlock):
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.width, bias=cfg.bias)
        self.attn = CausalSelfAttention(cfg)
        self.ln_2 = nn.LayerNorm(cfg.width, bias=cfg.bias)
        self.mlp = mlp(cfg)  # the feed-forward branch: an MLP, or a mixture of them (models.moe)
        self.residual_mult = cfg.residual_mult

    def branch(self, y: torch.Tensor) -> torch.Tensor:
        return y if self.residual_mult == 1.0 else y * self.residual_mult

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.branch(self.attn(self.ln_1(x)))
        return x + self.branch(self.mlp(self.ln_2(x)))


class GPT(nn.Module):
    readout_names = ("lm_head",)

    def __init__(self, cfg: GPTConfig, block: Callable[[GPTConfig], nn.Module] = Block):
        super().__init__()
        self.cfg = cfg
        self.wte = nn.Embedding(cfg.vocab_size, cfg.width)
        self.wpe = nn.Embedding(cfg.seq_len, cfg.width)
        self.h = nn.ModuleList(block(cfg) for _ in range(cfg.depth))
        self.ln_f = nn.LayerNorm(cfg.width, bias=cfg.bias)
        self.lm_head = nn.Linear(cfg.width, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.wte.weight

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None):
        B, T = idx.size()
        pos = torch.arange(T, device=idx.device)
        x = (self.wte(idx) + self.wpe(pos)) * self.cfg.input_mult  # (B, T, C)
        for block in self.h:
            x = block(x)
        logits = self.lm_head(self.ln_f(x)) * self.cfg.output_mult  # (B, T, V)
        if targets is None:
            return logits, None
        loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.reshape(-1))
        return logits, loss

    @torch.no_grad()
    def zero_init_query_(self) -> None:
        """TP5 App. D.2: zero the query projection so attention is uniform at init at any width."""
        for block in self.h:  # gathered and written back when sharded (slicing a DTensor copies it)
            w = block.attn.c_attn.weight
            full = full_value(w)
            full[: self.cfg.width] = 0
            assign_(w, full)


# ---------------------------------------------------------------------------------------------
# The same GPT, every op unit-scaled (u-µP): the same parameters, the ops of mutune.mup.unit


class UnitAttention(CausalSelfAttention):
    def __init__(self, cfg: GPTConfig):
        nn.Module.__init__(self)
        self.n_head, self.mult = cfg.n_head, cfg.unit.attn
        self.c_attn = unit.Linear(cfg.width, 3 * cfg.width, bias=cfg.bias)
        self.c_proj = unit.Linear(cfg.width, cfg.width, bias=cfg.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.size()
        q, k, v = (
            t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
            for t in self.c_attn(x).split(C, dim=2)
        )
        y = unit.attention(q, k, v, mult=self.mult).transpose(1, 2).contiguous().view(B, T, C)
        return self.c_proj(y)


class UnitMLP(MLPBlock):
    def __init__(self, cfg: GPTConfig):
        nn.Module.__init__(self)
        self.mult = cfg.unit.act
        self.c_fc = unit.Linear(cfg.width, cfg.mlp_ratio * cfg.width, bias=cfg.bias)
        self.c_proj = unit.Linear(cfg.mlp_ratio * cfg.width, cfg.width, bias=cfg.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(unit.gelu(self.c_fc(x), self.mult))


class UnitBlock(nn.Module):
    """Pre-norm, each branch weighted against the skip by its τ (u-µP App. G), unit in both passes."""

    def __init__(self, cfg: GPTConfig, taus: tuple[float, float]):
        super().__init__()
        self.ln_1 = unit.LayerNorm(cfg.width, bias=cfg.bias)
        self.attn = UnitAttention(cfg)
        self.ln_2 = unit.LayerNorm(cfg.width, bias=cfg.bias)
        self.mlp = UnitMLP(cfg)
        self.taus = taus

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for norm, branch, tau in ((self.ln_1, self.attn, self.taus[0]), (self.ln_2, self.mlp, self.taus[1])):
            h, skip = unit.residual_split(x, tau)
            x = unit.residual_add(branch(norm(h)), skip, tau)
        return x


class UnitGPT(GPT):
    """The GPT under u-µP: unit init (the rules), unit-scaled ops, the token and position embeddings
    summed unit-scaled, the readout × 1/fan_in, α_loss-softmax on the logits, a unit-scaled loss."""

    def __init__(self, cfg: GPTConfig):
        nn.Module.__init__(self)
        self.cfg = cfg
        self.wte = unit.Embedding(cfg.vocab_size, cfg.width)
        self.wpe = unit.Embedding(cfg.seq_len, cfg.width)
        taus = unit.residual_taus(cfg.depth, cfg.unit.residual, cfg.unit.residual_attn_ratio)
        self.h = nn.ModuleList(UnitBlock(cfg, t) for t in taus)
        self.ln_f = unit.LayerNorm(cfg.width, bias=cfg.bias)
        self.lm_head = unit.Readout(cfg.width, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.wte.weight

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None):
        B, T = idx.size()
        x = unit.add(self.wte(idx), self.wpe(torch.arange(T, device=idx.device)))  # (B, T, C)
        for block in self.h:
            x = block(x)
        logits = unit.scale_fwd(self.lm_head(self.ln_f(x)), self.cfg.unit.loss)  # (B, T, V)
        if targets is None:
            return logits, None
        wide = logits.to(torch.promote_types(logits.dtype, torch.float32))  # fp32 at least (bf16 logits)
        return logits, unit.cross_entropy(wide.view(-1, logits.size(-1)), targets.reshape(-1))


# ---------------------------------------------------------------------------------------------
# The family's registry interface (see mutune.config.families)


def head_dims(spec, width: int) -> tuple[int, int]:
    """(n_head, head_dim) at ``width``: a fixed head_dim grows the heads, a fixed n_head the head dim."""
    m = spec.model
    if m.head_dim is not None:
        return width // m.head_dim, m.head_dim
    return m.n_head, width // m.n_head


def config(spec, mult, vocab_size: int, width: int, cls: type = GPTConfig, **extra) -> GPTConfig:
    """The model's config at ``width`` with its forward multipliers ``mult``; a family built on the
    GPT (the mixture) passes its own config class and fields."""
    m = spec.model
    n_head, _ = head_dims(spec, width)
    return cls(
        vocab_size=vocab_size,
        seq_len=m.seq_len,
        width=width,
        depth=m.depth,
        n_head=n_head,
        mlp_ratio=m.mlp_ratio,
        bias=m.bias,
        tie_embeddings=m.tie_embeddings,
        input_mult=mult.input,
        output_mult=mult.output,
        attn_scale=mult.attn,
        residual_mult=mult.residual,
        unit=mult.unit,
        **extra,
    )


def build(spec, hp, vocab_size: int, width: int) -> GPT:
    mult = forward_multipliers(spec, hp, width)
    return (GPT if mult.unit is None else UnitGPT)(config(spec, mult, vocab_size, width))


bare = build


def readout_names(spec) -> tuple[str, ...]:
    return GPT.readout_names


def validate(spec) -> None:
    return None


def after_init(model: GPT, spec) -> None:
    if spec.model.zero_init_query:
        model.zero_init_query_()


def coord_seq_len(spec, seq_len: int) -> int:
    """A shorter context is the same model (position rows and attention length are finite dims)."""
    return min(seq_len, spec.model.seq_len)


def workload(spec, model: GPT, width: int, vocab_size: int) -> Workload:
    """6N for the matmuls plus 12·depth·seq_len·width for attention's score and value products."""
    m, t = spec.model, spec.train
    n_head, _ = head_dims(spec, width)
    return Workload(
        flops_per_token=6.0 * matmul_params(model) + 12.0 * m.depth * m.seq_len * width,
        tokens_per_step=t.batch_size * m.seq_len,
        activation_bytes=m.seq_len * t.batch_size * m.depth * (34 * width + 5 * n_head * m.seq_len),
        logits_bytes=2 * 4 * t.batch_size * m.seq_len * vocab_size,
    )

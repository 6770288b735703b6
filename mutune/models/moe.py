"""A decoder-only transformer whose feed-forward branches are mixtures of experts (``model.family: moe``).

The GPT of :mod:`.gpt` with each block's MLP replaced by ``n_experts`` MLPs of the same shape and a
router, a width -> ``n_experts`` Linear. Each token goes to the ``top_k`` experts with the largest
router probabilities; their outputs are summed with the probabilities renormalised over the chosen
ones (Mixtral's gate), so the mixture is a convex combination of ``top_k`` experts whatever the
number of experts: the forward does not change size when experts are added, only which expert a
token meets. (A gate that keeps the softmax over every expert, Switch Transformer's, gives each
chosen expert ~1/n_experts of a token at init: the mixture's output would shrink as experts are
added.) One consequence: with ``top_k = 1`` the renormalised gate is exactly 1 and the router would
learn from the balancing loss alone, so the family asks for ``top_k >= 2`` (:mod:`mutune.config.families`).

The router is its own µP role (``router``, :mod:`mutune.mup.shapes`): a readout's init and LR, its
logits × 1/m (``Multipliers.router``), applied inside :class:`Router` so that what the coord check
records of it is what the softmax sees. Switch Transformer's load-balancing loss,
``n_experts · Σ_e f_e · P_e`` (f_e the fraction of routed slots that went to expert e, P_e its mean
router probability; 1 when the load is even), times ``model.balance``, is added to the training
loss; evaluation reports the language-model loss alone.

Every expert runs at every step, on the tokens routed to it, on none if none were: a parameter that
sat out a step would break DDP's gradient reduction (and FSDP's), which expect every parameter in
the graph. The outputs are combined by writing each (token, slot) once and summing the ``top_k``
slots, not by ``index_add``, whose CUDA kernel adds in no fixed order.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..flops import Workload, matmul_params
from . import forward_multipliers
from .gpt import GPT, Block, GPTConfig, MLPBlock, config
from .gpt import after_init as after_init
from .gpt import coord_seq_len as coord_seq_len
from .gpt import head_dims as head_dims
from .gpt import validate as validate


@dataclass
class MoEConfig(GPTConfig):
    n_experts: int = 4
    top_k: int = 2
    router_mult: float = 1.0  # the router logits × this: 1/m under µP (a readout's)
    balance: float = 0.0  # the load-balancing loss's weight in the training loss


class Router(nn.Linear):
    """The gate's logits: width -> one per expert, × ``mult`` here, inside the module."""

    def __init__(self, width: int, n_experts: int, mult: float):
        super().__init__(width, n_experts, bias=False)
        self.mult = mult

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = super().forward(x)
        return z if self.mult == 1.0 else z * self.mult


class MoE(nn.Module):
    """``n_experts`` MLPs and a top-k router with renormalised gates (see the module doc)."""

    def __init__(self, cfg: MoEConfig):
        super().__init__()
        self.top_k = cfg.top_k
        self.router = Router(cfg.width, cfg.n_experts, cfg.router_mult)
        self.experts = nn.ModuleList(MLPBlock(cfg) for _ in range(cfg.n_experts))
        self.balance_loss: torch.Tensor | None = None  # of the last forward

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.size()  # batch, sequence length, width
        flat = x.reshape(B * T, C)  # (N, C)
        probs = F.softmax(self.router(flat).float(), dim=-1)  # (N, E)
        top_p, top_i = probs.topk(self.top_k, dim=-1)  # (N, k)
        gates = (top_p / top_p.sum(dim=-1, keepdim=True)).to(x.dtype)
        rows, slots, outs = [], [], []
        for e, expert in enumerate(self.experts):
            r, s = torch.nonzero(top_i == e, as_tuple=True)  # the tokens (and their slot) sent to e
            outs.append(expert(flat[r]) * gates[r, s].unsqueeze(-1))
            rows.append(r)
            slots.append(s)
        picked = flat.new_zeros(B * T, self.top_k, C).index_put(
            (torch.cat(rows), torch.cat(slots)), torch.cat(outs)
        )  # (N, k, C): each (token, slot) written once
        E = len(self.experts)
        load = F.one_hot(top_i, E).sum(dim=(0, 1)).float() / top_i.numel()  # f_e, not differentiable
        self.balance_loss = E * (load * probs.mean(dim=0)).sum()
        return picked.sum(dim=1).view(B, T, C)


class MoEGPT(GPT):
    def __init__(self, cfg: MoEConfig):
        super().__init__(cfg, block=lambda c: Block(c, mlp=MoE))

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None):
        logits, loss = super().forward(idx, targets)
        if loss is not None and self.training and self.cfg.balance > 0:
            balance = torch.stack([block.mlp.balance_loss for block in self.h]).mean()
            loss = loss + self.cfg.balance * balance
        return logits, loss


# ---------------------------------------------------------------------------------------------
# The family's registry interface (see mutune.config.families)


def build(spec, hp, vocab_size: int, width: int) -> MoEGPT:
    m = spec.model
    mult = forward_multipliers(spec, hp, width)
    return MoEGPT(
        config(
            spec,
            mult,
            vocab_size,
            width,
            MoEConfig,
            n_experts=m.n_experts,
            top_k=m.top_k,
            router_mult=mult.router,
            balance=m.balance,
        )
    )


bare = build


def readout_names(spec) -> tuple[str, ...]:
    return MoEGPT.readout_names


def router_names(spec) -> tuple[str, ...]:
    """The routers: each block's ``h.<i>.mlp.router``."""
    return tuple(f"h.{i}.mlp.router" for i in range(spec.model.depth))


def workload(spec, model: MoEGPT, width: int, vocab_size: int) -> Workload:
    """6N for the matmuls a token meets (the router and top_k of the n_experts experts; every other
    weight) plus attention as the GPT's; activations after Korthikanti et al. with the MLP's part
    (19·s·b·h of 34) once per active expert."""
    m, t = spec.model, spec.train
    n_head, _ = head_dims(spec, width)
    experts = sum(matmul_params(block.mlp.experts) for block in model.h)
    active = matmul_params(model) - experts + experts * m.top_k / m.n_experts
    return Workload(
        flops_per_token=6.0 * active + 12.0 * m.depth * m.seq_len * width,
        tokens_per_step=t.batch_size * m.seq_len,
        activation_bytes=m.seq_len
        * t.batch_size
        * m.depth
        * ((15 + 19 * m.top_k) * width + 5 * n_head * m.seq_len),
        logits_bytes=2 * 4 * t.batch_size * m.seq_len * vocab_size,
    )

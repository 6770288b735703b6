"""Your model, for ``model.family: factory``: written by ``mutune init --model factory`` beside the spec.

Replace it with your own (or point ``model.factory`` at it: ``path/to/file.py:function`` relative to
the spec's folder, or ``package.module:function`` importable from where mutune runs). The contract
(docs/mup.md, "Bring your own model"):

- a function ``build(width, **kwargs) -> nn.Module`` that builds the same architecture at any width
  (mutune calls it at the base width and at twice that on the meta device to see which dims grow);
- ``forward(idx) -> logits``, ``idx`` a ``(B, T)`` tensor of token ids and the logits ``(B, T, vocab)``;
  mutune computes the loss;
- for depth transfer (CompleteP): take ``depth`` and ``residual_mult`` and multiply each residual
  branch by ``residual_mult``; mutune finds the per-block parameters from the names that appear
  when the depth grows (``blocks.<i>.…``).

Nothing µP-specific is in here: mutune re-initialises the weights, builds the per-group optimizer,
multiplies the embedding output by α_in and the readout's input by α_out/m (hooks on ``tok_emb`` and
``unembed``, found from the shapes). The one thing a model must do itself is its attention scale:
this one grows width through the number of heads at a fixed head dim, where 1/√d_head is constant,
so µP's 1/d rule changes nothing; a model that grows head_dim should use alpha_attn·√d_base/d_head.
(The same model as the repository's examples/my_model.py, which configs/factory.yaml trains.)
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class Attention(nn.Module):
    def __init__(self, width: int, head_dim: int, alpha_attn: float):
        super().__init__()
        self.n_head, self.head_dim = width // head_dim, head_dim
        self.scale = alpha_attn / math.sqrt(head_dim)
        self.qkv = nn.Linear(width, 3 * width, bias=False)
        self.out = nn.Linear(width, width, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = (t.view(B, T, self.n_head, self.head_dim).transpose(1, 2) for t in self.qkv(x).split(C, 2))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=self.scale)
        return self.out(y.transpose(1, 2).reshape(B, T, C))


class Block(nn.Module):
    def __init__(self, width: int, head_dim: int, alpha_attn: float, residual_mult: float = 1.0):
        super().__init__()
        self.residual_mult = residual_mult  # m_L^-α under depth scaling (CompleteP), passed by mutune
        self.norm1 = nn.RMSNorm(width)
        self.attn = Attention(width, head_dim, alpha_attn)
        self.norm2 = nn.RMSNorm(width)
        self.ff = nn.Sequential(
            nn.Linear(width, 4 * width, bias=False), nn.GELU(), nn.Linear(4 * width, width, bias=False)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.residual_mult * self.attn(self.norm1(x))
        return x + self.residual_mult * self.ff(self.norm2(x))


class TinyLM(nn.Module):
    def __init__(
        self,
        width: int,
        vocab_size: int,
        seq_len: int,
        depth: int,
        head_dim: int,
        alpha_attn: float,
        residual_mult: float = 1.0,
    ):
        super().__init__()
        self.tok_emb = nn.Embedding(vocab_size, width)
        self.pos_emb = nn.Embedding(seq_len, width)
        self.blocks = nn.ModuleList(Block(width, head_dim, alpha_attn, residual_mult) for _ in range(depth))
        self.norm = nn.RMSNorm(width)
        self.unembed = nn.Linear(width, vocab_size, bias=False)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.tok_emb(idx) + self.pos_emb(torch.arange(idx.shape[1], device=idx.device))  # (B, T, C)
        for block in self.blocks:
            x = block(x)
        return self.unembed(self.norm(x))  # (B, T, vocab)


def build(
    width: int,
    vocab_size: int,
    seq_len: int,
    depth: int = 2,
    head_dim: int = 16,
    alpha_attn: float = 1.0,
    residual_mult: float = 1.0,
) -> TinyLM:
    """mutune passes width, and vocab_size, seq_len, alpha_attn, depth (model.depth) and residual_mult
    (m_L^-α, for depth scaling) because they are named here."""
    return TinyLM(width, vocab_size, seq_len, depth, head_dim, alpha_attn, residual_mult)

"""Models written only for the tests, loaded through ``model.factory: tests.factory_models:<name>``.

None of them contains µP code: mutune must make them µP (or refuse them with a clear error).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class ConvBlock(nn.Module):
    """Pre-norm residual block: causal 1-D convolution (kernel k) -> GELU -> 1x1 convolution."""

    def __init__(self, width: int, kernel: int):
        super().__init__()
        self.kernel = kernel
        self.norm = nn.LayerNorm(width)
        self.conv = nn.Conv1d(width, 2 * width, kernel)
        self.proj = nn.Conv1d(2 * width, width, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, C)
        h = F.pad(self.norm(x).transpose(1, 2), (self.kernel - 1, 0))  # causal: pad on the left
        return x + self.proj(F.gelu(self.conv(h))).transpose(1, 2)


class ConvLM(nn.Module):
    """A small residual CNN language model whose head is called ``unembed`` (not lm_head)."""

    def __init__(self, width: int, vocab_size: int, depth: int, kernel: int, bypass_head: bool = False):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, width)
        self.blocks = nn.ModuleList(ConvBlock(width, kernel) for _ in range(depth))
        self.norm = nn.LayerNorm(width)
        self.unembed = nn.Linear(width, vocab_size)
        self.bypass_head = bypass_head

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.embed(idx)
        for block in self.blocks:
            x = block(x)
        x = self.norm(x)
        if self.bypass_head:  # a readout used through its weight: mutune's α_out/m hook never runs
            return F.linear(x, self.unembed.weight, self.unembed.bias)
        return self.unembed(x)


def conv_lm(width: int, vocab_size: int, depth: int = 2, kernel: int = 3) -> ConvLM:
    return ConvLM(width, vocab_size, depth, kernel)


def conv_lm_bypass(width: int, vocab_size: int) -> ConvLM:
    """µP deliberately broken: the logits skip the readout module, so no 1/m multiplier is applied."""
    return ConvLM(width, vocab_size, 1, 3, bypass_head=True)


class SelfAttention(nn.Module):
    def __init__(self, width: int, n_head: int):
        super().__init__()
        self.n_head = n_head
        self.qkv = nn.Linear(width, 3 * width, bias=False)
        self.out = nn.Linear(width, width, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = (
            t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in self.qkv(x).split(C, 2)
        )
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # SP's 1/√d_head: wrong when d_head grows
        return self.out(y.transpose(1, 2).reshape(B, T, C))


class SqrtAttentionLM(nn.Module):
    """Two heads whatever the width, so d_head grows with width, with SDPA's default 1/√d_head
    scale: the attention logits grow like √width once q and k align. Only the coord check can see it."""

    def __init__(self, width: int, vocab_size: int, seq_len: int):
        super().__init__()
        self.tok = nn.Embedding(vocab_size, width)
        self.pos = nn.Embedding(seq_len, width)
        self.layers = nn.ModuleList([nn.LayerNorm(width), SelfAttention(width, 2)])
        self.ln = nn.LayerNorm(width)
        self.head = nn.Linear(width, vocab_size, bias=False)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.tok(idx) + self.pos(torch.arange(idx.shape[1], device=idx.device))
        x = x + self.layers[1](self.layers[0](x))
        return self.head(self.ln(x))


def sqrt_attention_lm(width: int, vocab_size: int, seq_len: int) -> SqrtAttentionLM:
    return SqrtAttentionLM(width, vocab_size, seq_len)


class TiedLM(nn.Module):
    """Embedding and readout share one weight; ``linear_first`` registers the Linear first, so that
    the shared parameter's canonical name is ``head.weight`` rather than ``emb.weight``."""

    def __init__(self, width: int, vocab_size: int, linear_first: bool):
        super().__init__()
        if linear_first:
            self.head = nn.Linear(width, vocab_size, bias=False)
            self.emb = nn.Embedding(vocab_size, width)
            self.emb.weight = self.head.weight
        else:
            self.emb = nn.Embedding(vocab_size, width)
            self.head = nn.Linear(width, vocab_size, bias=False)
            self.head.weight = self.emb.weight
        self.mix = nn.Linear(width, width)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.head(F.gelu(self.mix(self.emb(idx))))


def tied_lm(width: int, vocab_size: int, linear_first: bool = False) -> TiedLM:
    return TiedLM(width, vocab_size, linear_first)


class EmbeddingReadoutLM(nn.Module):
    """Logits from the embedding weight directly (F.linear), with no readout module to hook."""

    def __init__(self, width: int, vocab_size: int):
        super().__init__()
        self.emb = nn.Embedding(vocab_size, width)
        self.mix = nn.Linear(width, width)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return F.linear(self.mix(self.emb(idx)), self.emb.weight)


def embedding_readout_lm(width: int, vocab_size: int) -> EmbeddingReadoutLM:
    return EmbeddingReadoutLM(width, vocab_size)


class Head(nn.Module):
    """A readout that is not an nn.Linear: its forward could do anything to its input."""

    def __init__(self, width: int, vocab_size: int):
        super().__init__()
        self.w = nn.Parameter(torch.randn(vocab_size, width) / math.sqrt(width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, x.shape[-1:]) @ self.w.t()


class CustomHeadLM(nn.Module):
    def __init__(self, width: int, vocab_size: int):
        super().__init__()
        self.emb = nn.Embedding(vocab_size, width)
        self.out = Head(width, vocab_size)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.out(self.emb(idx))


def custom_head_lm(width: int, vocab_size: int) -> CustomHeadLM:
    return CustomHeadLM(width, vocab_size)


class Cube(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.t = nn.Parameter(torch.zeros(width, width, width))


def cube(width: int) -> Cube:
    return Cube(width)


def ignores_width(width: int, vocab_size: int) -> nn.Module:
    return nn.Sequential(nn.Embedding(vocab_size, 16), nn.Linear(16, vocab_size))


def not_a_module(width: int) -> dict:
    return {"width": width}


class TupleLM(ConvLM):
    def forward(self, idx: torch.Tensor):
        return super().forward(idx), None


def tuple_lm(width: int, vocab_size: int) -> TupleLM:
    return TupleLM(width, vocab_size, 1, 3)


def no_depth(width: int, vocab_size: int, seq_len: int, alpha_attn: float = 1.0) -> nn.Module:
    """examples/my_model.py's model with a fixed depth and no residual_mult: cannot be depth-scaled."""
    from examples.my_model import build

    return build(width, vocab_size, seq_len, alpha_attn=alpha_attn)

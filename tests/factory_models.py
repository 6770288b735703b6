"""Models written only for the tests, loaded through ``model.factory: tests.factory_models:<name>``.

None of them contains µP code: mutune must make them µP (or refuse them with a clear error).
"""

from __future__ import annotations

import math
import os

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


class HiddenStatesLM(ConvLM):
    """Returns a dict of hidden states: no logits anywhere in it."""

    def forward(self, idx: torch.Tensor):
        return {"hidden": self.embed(idx)}


def hidden_states_lm(width: int, vocab_size: int) -> HiddenStatesLM:
    return HiddenStatesLM(width, vocab_size, 1, 3)


# ---------------------------------------------------------------------------------------------
# Models written the way other people write them (their conventions, not their code), brought to
# mutune with no wrapper


class NanoAttention(nn.Module):
    """nanoGPT's conventions: one c_attn for q, k, v; SDPA with dropout in training; c_proj."""

    def __init__(self, n_embd: int, n_head: int, dropout: float, bias: bool):
        super().__init__()
        self.n_head, self.dropout = n_head, dropout
        self.c_attn = nn.Linear(n_embd, 3 * n_embd, bias=bias)
        self.c_proj = nn.Linear(n_embd, n_embd, bias=bias)
        self.resid_dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=None, dropout_p=self.dropout if self.training else 0.0, is_causal=True
        )
        return self.resid_dropout(self.c_proj(y.transpose(1, 2).contiguous().view(B, T, C)))


class NanoBlock(nn.Module):
    def __init__(self, n_embd: int, n_head: int, dropout: float, bias: bool):
        super().__init__()
        self.ln_1 = nn.LayerNorm(n_embd, bias=bias)
        self.attn = NanoAttention(n_embd, n_head, dropout, bias)
        self.ln_2 = nn.LayerNorm(n_embd, bias=bias)
        self.mlp = nn.ModuleDict(
            dict(
                c_fc=nn.Linear(n_embd, 4 * n_embd, bias=bias), c_proj=nn.Linear(4 * n_embd, n_embd, bias=bias)
            )
        )
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.drop(self.mlp.c_proj(F.gelu(self.mlp.c_fc(self.ln_2(x)))))


class NanoGPT(nn.Module):
    """forward(idx, targets) -> (logits, loss); without targets only the last position's logits;
    wte tied to lm_head; blocks nested in transformer.h; its own init (which mutune replaces)."""

    def __init__(
        self,
        vocab_size: int,
        block_size: int,
        n_layer: int,
        n_head: int,
        n_embd: int,
        dropout: float,
        bias: bool,
    ):
        super().__init__()
        self.transformer = nn.ModuleDict(
            dict(
                wte=nn.Embedding(vocab_size, n_embd),
                wpe=nn.Embedding(block_size, n_embd),
                drop=nn.Dropout(dropout),
                h=nn.ModuleList(NanoBlock(n_embd, n_head, dropout, bias) for _ in range(n_layer)),
                ln_f=nn.LayerNorm(n_embd, bias=bias),
            )
        )
        self.lm_head = nn.Linear(n_embd, vocab_size, bias=False)
        self.transformer.wte.weight = self.lm_head.weight  # weight tying, nanoGPT's way round
        for p in self.parameters():
            torch.nn.init.normal_(p, std=0.02)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None):
        b, t = idx.size()
        pos = torch.arange(0, t, dtype=torch.long, device=idx.device)
        x = self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(pos))
        for block in self.transformer.h:
            x = block(x)
        x = self.transformer.ln_f(x)
        if targets is not None:
            logits = self.lm_head(x)
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1), ignore_index=-1)
        else:
            logits, loss = self.lm_head(x[:, [-1], :]), None  # inference: the last position only
        return logits, loss


def nanogpt(
    width: int,
    vocab_size: int,
    seq_len: int,
    head_dim: int = 16,
    n_layer: int = 2,
    dropout: float = 0.0,
    bias: bool = True,
) -> NanoGPT:
    return NanoGPT(vocab_size, seq_len, n_layer, width // head_dim, width, dropout, bias)


class BmmAttention(nn.Module):
    """Attention written with torch.bmm and a softmax, the scale 1/√d_head."""

    def __init__(self, width: int, n_head: int):
        super().__init__()
        self.n_head = n_head
        self.qkv = nn.Linear(width, 3 * width)
        self.out = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        hd = C // self.n_head
        q, k, v = (
            t.reshape(B, T, self.n_head, hd).transpose(1, 2).reshape(B * self.n_head, T, hd)
            for t in self.qkv(x).split(C, 2)
        )
        scores = torch.bmm(q, k.transpose(1, 2)) / math.sqrt(hd)  # (B*nh, T, T)
        mask = torch.ones(T, T, dtype=torch.bool, device=x.device).triu(1)
        att = torch.softmax(scores.masked_fill(mask, float("-inf")), dim=-1)
        y = torch.bmm(att, v).reshape(B, self.n_head, T, hd).transpose(1, 2).reshape(B, T, C)
        return self.out(y)


class PostLNBlock(nn.Module):
    def __init__(self, width: int, n_head: int):
        super().__init__()
        self.attn = BmmAttention(width, n_head)
        self.ln1 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, 2 * width), nn.GELU(), nn.Linear(2 * width, width))
        self.ln2 = nn.LayerNorm(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.ln1(x + self.attn(x))
        return self.ln2(x + self.mlp(x))


class BmmLM(nn.Module):
    """Post-LayerNorm blocks with bmm attention, a raw nn.Parameter position table (seq_len, width)
    and a log_softmax output: every way the old coord check had of not seeing something."""

    def __init__(self, width: int, vocab_size: int, seq_len: int, n_head: int):
        super().__init__()
        self.tok = nn.Embedding(vocab_size, width)
        self.pos = nn.Parameter(torch.zeros(seq_len, width))
        self.blocks = nn.ModuleList(PostLNBlock(width, n_head) for _ in range(2))
        self.head = nn.Linear(width, vocab_size)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.tok(idx) + self.pos[: idx.shape[1]]
        for block in self.blocks:
            x = block(x)
        return F.log_softmax(self.head(x), dim=-1)


def bmm_fixed_heads(width: int, vocab_size: int, seq_len: int) -> BmmLM:
    """Two heads at every width: d_head grows and 1/√d_head is wrong (µP wants 1/d_head)."""
    return BmmLM(width, vocab_size, seq_len, n_head=2)


def bmm_fixed_head_dim(width: int, vocab_size: int, seq_len: int) -> BmmLM:
    """Heads of 16 dims, more of them as width grows: 1/√d_head is constant and µP is fine."""
    return BmmLM(width, vocab_size, seq_len, n_head=width // 16)


class ItemLM(ConvLM):
    """A forward that reads values (.item(), torch.equal), as torch's TransformerEncoder and Hugging
    Face masks do: it cannot run on the meta device, where mutune counts FLOPs."""

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        if idx.max().item() >= self.embed.num_embeddings or not torch.equal(idx, idx):
            raise ValueError("token out of range")
        return super().forward(idx)


def item_lm(width: int, vocab_size: int) -> ItemLM:
    return ItemLM(width, vocab_size, 1, 3)


class MHALM(nn.Module):
    """nn.MultiheadAttention with add_bias_kv: (1, 1, E) bias_k / bias_v parameters, which are
    vectors (one width dim), not readouts."""

    def __init__(self, width: int, vocab_size: int):
        super().__init__()
        self.emb = nn.Embedding(vocab_size, width)
        self.attn = nn.MultiheadAttention(width, width // 16, add_bias_kv=True, batch_first=True)
        self.ln = nn.LayerNorm(width)
        self.head = nn.Linear(width, vocab_size)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.emb(idx)
        T = idx.shape[1]
        mask = torch.ones(T, T, dtype=torch.bool, device=idx.device).triu(1)  # MHA adds the bias_k column
        y, _ = self.attn(x, x, x, attn_mask=mask)
        return self.head(self.ln(x + y))


def mha_lm(width: int, vocab_size: int) -> MHALM:
    return MHALM(width, vocab_size)


# Hugging Face causal LMs, built from a local config (nothing is downloaded); tests skip them
# when `transformers` is not installed


def hf_llama(width: int, vocab_size: int, seq_len: int, head_dim: int = 16, layers: int = 2):
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a local config: nothing to fetch, and no trying
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(
        hidden_size=width,
        intermediate_size=4 * width,
        num_attention_heads=width // head_dim,
        num_key_value_heads=width // head_dim,
        num_hidden_layers=layers,
        vocab_size=vocab_size,
        max_position_embeddings=seq_len,
        tie_word_embeddings=False,
        bos_token_id=None,
        eos_token_id=None,
        pad_token_id=None,
    )
    return LlamaForCausalLM(cfg)


def hf_gpt2(width: int, vocab_size: int, seq_len: int, head_dim: int = 16, layers: int = 2):
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import GPT2Config, GPT2LMHeadModel

    cfg = GPT2Config(
        n_embd=width,
        n_head=width // head_dim,
        n_layer=layers,
        vocab_size=vocab_size,
        n_positions=seq_len,
        bos_token_id=None,
        eos_token_id=None,
    )
    return GPT2LMHeadModel(cfg)  # wte tied to lm_head; Conv1D weights stored (in, out)


class SigmoidAttention(nn.Module):
    """Attention without a softmax (sigmoid of the scores): the check cannot see its logits."""

    def __init__(self, width: int):
        super().__init__()
        self.qkv = nn.Linear(width, 3 * width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv(x).split(x.shape[-1], dim=-1)
        scores = torch.sigmoid(q @ k.transpose(1, 2) / x.shape[-1]).tril()
        return scores @ v / x.shape[1]


class SigmoidAttentionLM(nn.Module):
    def __init__(self, width: int, vocab_size: int):
        super().__init__()
        self.emb = nn.Embedding(vocab_size, width)
        self.blocks = nn.ModuleList([SigmoidAttention(width)])
        self.head = nn.Linear(width, vocab_size)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.emb(idx)
        x = x + self.blocks[0](x)
        return self.head(x)


def sigmoid_attention_lm(width: int, vocab_size: int) -> SigmoidAttentionLM:
    return SigmoidAttentionLM(width, vocab_size)


class Conv1D(nn.Module):
    """GPT-2's convention for a Linear (Hugging Face's ``Conv1D``): the weight stored (in, out)."""

    def __init__(self, nf: int, nx: int):
        super().__init__()
        self.nf, self.nx = nf, nx
        self.weight = nn.Parameter(torch.empty(nx, nf).normal_(std=0.02))
        self.bias = nn.Parameter(torch.zeros(nf))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addmm(self.bias, x.reshape(-1, x.size(-1)), self.weight).view(*x.shape[:-1], self.nf)


class Conv1DLM(nn.Module):
    """An MLP language model in GPT-2's layout (Conv1D (in, out) weights, tied wte / lm_head), with
    an ``nn.Linear`` twin (``linear=True``) whose init must come out the same."""

    def __init__(self, width: int, vocab_size: int, linear: bool):
        super().__init__()
        self.wte = nn.Embedding(vocab_size, width)
        self.c_fc = nn.Linear(width, 4 * width) if linear else Conv1D(4 * width, width)
        self.c_proj = nn.Linear(4 * width, width) if linear else Conv1D(width, 4 * width)
        self.lm_head = nn.Linear(width, vocab_size, bias=False)
        self.lm_head.weight = self.wte.weight

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.wte(idx)
        return self.lm_head(x + self.c_proj(F.gelu(self.c_fc(x))))


def conv1d_lm(width: int, vocab_size: int, linear: bool = False) -> Conv1DLM:
    return Conv1DLM(width, vocab_size, linear)


def no_depth(width: int, vocab_size: int, seq_len: int, alpha_attn: float = 1.0) -> nn.Module:
    """examples/my_model.py's model with a fixed depth and no residual_mult: cannot be depth-scaled."""
    from examples.my_model import build

    return build(width, vocab_size, seq_len, alpha_attn=alpha_attn)

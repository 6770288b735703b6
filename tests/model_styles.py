"""Models written the ways people write them, for the coord check's model styles (tests/violations.py).

Each is loaded through ``model.factory: tests.model_styles:<name>`` and contains no µP code. The
attention styles keep two heads at every width, so the head dim grows with width and the attention
scale decides µP: ``scale="mup"`` is 4/d_head (∝ 1/d, equal to 1/√d_head at the base head dim 16),
``scale="sqrt"`` is 1/√d_head, the violation (logits growing like √width once q and k align).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

N_HEAD = 2


def _scale(head_dim: int, scale: str) -> float:
    if scale not in ("mup", "sqrt"):
        raise ValueError(f"scale must be mup or sqrt, got {scale!r}")
    return 4.0 / head_dim if scale == "mup" else 1.0 / math.sqrt(head_dim)


def _causal(n: int, device: torch.device) -> torch.Tensor:
    """True where a query may not look (a key after it)."""
    return torch.ones(n, n, dtype=torch.bool, device=device).triu(1)


class MLP(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.up, self.down = nn.Linear(width, 2 * width), nn.Linear(2 * width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(F.gelu(self.up(x)))


class Block(nn.Module):
    """Pre-norm residual block around any token mixer."""

    def __init__(self, width: int, mixer: nn.Module):
        super().__init__()
        self.n1, self.n2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.mix, self.mlp = mixer, MLP(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.mix(self.n1(x))
        return x + self.mlp(self.n2(x))


class LM(nn.Module):
    """Token and position embeddings, blocks, a final norm and a head; ``prefix`` learned tokens
    (register tokens, a CLS-like token: a raw (prefix, width) parameter) are put before the
    sequence, so the mixers see ``prefix + T`` tokens, and dropped before the head."""

    def __init__(self, width: int, vocab_size: int, seq_len: int, mixers: list[nn.Module], prefix: int = 0):
        super().__init__()
        self.tok, self.pos = nn.Embedding(vocab_size, width), nn.Embedding(seq_len, width)
        self.prefix = nn.Parameter(torch.randn(prefix, width)) if prefix else None
        self.blocks = nn.ModuleList(Block(width, m) for m in mixers)
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, vocab_size, bias=False)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.tok(idx) + self.pos(torch.arange(idx.shape[1], device=idx.device))
        if self.prefix is not None:
            x = torch.cat([self.prefix.expand(x.shape[0], -1, -1), x], dim=1)
        for block in self.blocks:
            x = block(x)
        if self.prefix is not None:
            x = x[:, self.prefix.shape[0] :]
        return self.head(self.norm(x))


# ---------------------------------------------------------------------------------------------
# Attention written by hand


class ManualSoftmaxAttention(nn.Module):
    """A hand-written Llama's attention: separate q, k, v, o projections, the scores by einsum and a
    softmax written out (exp of the scores less their row maximum, over its sum)."""

    def __init__(self, width: int, scale: str):
        super().__init__()
        self.hd = width // N_HEAD
        self.scale = _scale(self.hd, scale)
        self.wq, self.wk, self.wv, self.wo = (nn.Linear(width, width, bias=False) for _ in range(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = (w(x).view(B, T, N_HEAD, self.hd) for w in (self.wq, self.wk, self.wv))
        s = torch.einsum("bthd,bshd->bhts", q, k) * self.scale
        s = s.masked_fill(_causal(T, x.device), float("-inf"))
        p = torch.exp(s - s.amax(dim=-1, keepdim=True))
        p = p / p.sum(dim=-1, keepdim=True)
        return self.wo(torch.einsum("bhts,bshd->bthd", p, v).reshape(B, T, C))


def manual_softmax(width: int, vocab_size: int, seq_len: int, scale: str = "mup") -> LM:
    return LM(width, vocab_size, seq_len, [ManualSoftmaxAttention(width, scale) for _ in range(2)])


class BmmAttention(nn.Module):
    """torch.bmm scores and F.softmax over however many tokens it is given."""

    def __init__(self, width: int, scale: str):
        super().__init__()
        self.hd = width // N_HEAD
        self.scale = _scale(self.hd, scale)
        self.qkv, self.out = nn.Linear(width, 3 * width), nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, C = x.shape
        q, k, v = (
            t.reshape(B, N, N_HEAD, self.hd).transpose(1, 2).reshape(B * N_HEAD, N, self.hd)
            for t in self.qkv(x).split(C, dim=-1)
        )
        s = torch.bmm(q, k.transpose(1, 2)) * self.scale
        a = F.softmax(s.masked_fill(_causal(N, x.device), float("-inf")), dim=-1)
        y = torch.bmm(a, v).reshape(B, N_HEAD, N, self.hd).transpose(1, 2).reshape(B, N, C)
        return self.out(y)


def register_tokens(width: int, vocab_size: int, seq_len: int, scale: str = "mup") -> LM:
    """Three register tokens before the sequence: attention over T + 3 tokens, not the T the check feeds."""
    return LM(width, vocab_size, seq_len, [BmmAttention(width, scale) for _ in range(2)], prefix=3)


def eager_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
) -> torch.Tensor:
    """Hugging Face's eager attention, as its model files write it."""
    attn_weights = torch.matmul(query, key.transpose(2, 3)) * scaling
    if attention_mask is not None:
        attn_weights = attn_weights + attention_mask[:, :, :, : key.shape[-2]]
    attn_weights = nn.functional.softmax(attn_weights, dim=-1, dtype=torch.float32).to(query.dtype)
    attn_weights = nn.functional.dropout(attn_weights, p=dropout, training=module.training)
    return torch.matmul(attn_weights, value).transpose(1, 2).contiguous()


class EagerSelfAttention(nn.Module):
    """q_proj, k_proj, v_proj, o_proj and a module-level attention function; the mask additive,
    ``torch.finfo(dtype).min`` where a query may not look, as Hugging Face builds it."""

    def __init__(self, width: int, scale: str):
        super().__init__()
        self.hd = width // N_HEAD
        self.scaling = _scale(self.hd, scale)
        self.q_proj, self.k_proj, self.v_proj, self.o_proj = (
            nn.Linear(width, width, bias=True) for _ in range(4)
        )

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        B, N, C = hidden_states.shape
        shape = (B, N, N_HEAD, self.hd)
        q, k, v = (
            p(hidden_states).view(shape).transpose(1, 2) for p in (self.q_proj, self.k_proj, self.v_proj)
        )
        mask = torch.zeros(1, 1, N, N, dtype=q.dtype, device=q.device)
        mask = mask.masked_fill(_causal(N, q.device), torch.finfo(q.dtype).min)
        out = eager_attention_forward(self, q, k, v, mask, self.scaling, dropout=0.1)
        return self.o_proj(out.reshape(B, N, C))


def eager_hf(width: int, vocab_size: int, seq_len: int, scale: str = "mup") -> LM:
    """Hugging Face's eager attention over a CLS-like token and the sequence (T + 1 tokens)."""
    return LM(width, vocab_size, seq_len, [EagerSelfAttention(width, scale) for _ in range(2)], prefix=1)


class Mixer(nn.Module):
    """Attention in a class not named like attention: softmax, or (``gate="sigmoid"``) a sigmoid of the
    scores, which no normalisation follows and so no check can read as attention logits."""

    def __init__(self, width: int, scale: str, gate: str):
        super().__init__()
        self.hd, self.gate = width // N_HEAD, gate
        self.scale = _scale(self.hd, scale)
        self.into, self.back = nn.Linear(width, 3 * width), nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = (t.view(B, T, N_HEAD, self.hd).transpose(1, 2) for t in self.into(x).split(C, dim=-1))
        s = (q @ k.transpose(-2, -1)) * self.scale
        if self.gate == "softmax":
            a = s.masked_fill(_causal(T, x.device), float("-inf")).softmax(dim=-1)
        else:
            a = torch.sigmoid(s).masked_fill(_causal(T, x.device), 0.0) / T
        return self.back((a @ v).transpose(1, 2).reshape(B, T, C))


def renamed(width: int, vocab_size: int, seq_len: int, scale: str = "mup", gate: str = "softmax") -> LM:
    """Every class named for something else (``Mixer``, ``Block``, ``LM``)."""
    return LM(width, vocab_size, seq_len, [Mixer(width, scale, gate) for _ in range(2)])


# ---------------------------------------------------------------------------------------------
# Raw parameters


class RawNorm(nn.Module):
    """RMS norm with its gain a raw parameter (a vector: used multiplied into the stream elementwise)."""

    def __init__(self, width: int):
        super().__init__()
        self.gain = nn.Parameter(torch.ones(width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * self.gain


class RawBlock(nn.Module):
    """Attention and MLP from raw (in, out) matrices used as ``x @ w``; ``fused``: q, k and v in one
    raw (3, width, width) parameter used through einsum, whose fan-in is width (not 3·width, nor width²)."""

    def __init__(self, width: int, scale: str, fused: bool):
        super().__init__()
        self.hd, self.fused = width // N_HEAD, fused
        self.scale = _scale(self.hd, scale)
        self.n1, self.n2 = RawNorm(width), RawNorm(width)
        if fused:
            self.qkv = nn.Parameter(torch.randn(3, width, width) / math.sqrt(width))
        else:
            self.wq, self.wk, self.wv = (
                nn.Parameter(torch.randn(width, width) / math.sqrt(width)) for _ in range(3)
            )
        self.wo = nn.Parameter(torch.randn(width, width) / math.sqrt(width))
        self.w1 = nn.Parameter(torch.randn(width, 2 * width) / math.sqrt(width))
        self.b1 = nn.Parameter(torch.zeros(2 * width))
        self.w2 = nn.Parameter(torch.randn(2 * width, width) / math.sqrt(2 * width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        h = self.n1(x)
        if self.fused:
            q, k, v = torch.einsum("btd,kde->kbte", h, self.qkv).unbind(0)
        else:
            q, k, v = h @ self.wq, h @ self.wk, h @ self.wv
        q, k, v = (t.view(B, T, N_HEAD, self.hd).transpose(1, 2) for t in (q, k, v))
        s = (q @ k.transpose(-2, -1)) * self.scale
        a = s.masked_fill(_causal(T, x.device), float("-inf")).softmax(-1)
        x = x + (a @ v).transpose(1, 2).reshape(B, T, C) @ self.wo
        return x + F.gelu(self.n2(x) @ self.w1 + self.b1) @ self.w2


class RawLM(nn.Module):
    """Every weight a raw nn.Parameter: a (vocab, width) token table used through F.embedding, a
    (seq_len, width) position table sliced and added, raw blocks, a raw norm gain, and a
    (vocab, width) head used as ``x @ head.T`` by the model itself."""

    def __init__(self, width: int, vocab_size: int, seq_len: int, scale: str, fused: bool):
        super().__init__()
        self.wte = nn.Parameter(torch.randn(vocab_size, width))
        self.wpe = nn.Parameter(torch.randn(seq_len, width))
        self.blocks = nn.ModuleList(RawBlock(width, scale, fused) for _ in range(2))
        self.norm = RawNorm(width)
        self.head = nn.Parameter(torch.randn(vocab_size, width) / math.sqrt(width))

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = F.embedding(idx, self.wte) + self.wpe[: idx.shape[1]]
        for block in self.blocks:
            x = block(x)
        return self.norm(x) @ self.head.T


def raw_params(width: int, vocab_size: int, seq_len: int, scale: str = "mup") -> RawLM:
    return RawLM(width, vocab_size, seq_len, scale, fused=False)


def fused_qkv(width: int, vocab_size: int, seq_len: int, scale: str = "mup") -> RawLM:
    return RawLM(width, vocab_size, seq_len, scale, fused=True)


# ---------------------------------------------------------------------------------------------
# Nested input modules (Hugging Face ViT's embeddings: a patch projection inside a module that
# also holds raw CLS and position parameters)


class Embeddings(nn.Module):
    """The token embedding inside a module that holds a raw position table: two input weights whose
    modules nest, so α_in must be applied once, on the outer module's output."""

    def __init__(self, width: int, vocab_size: int, seq_len: int):
        super().__init__()
        self.word_embeddings = nn.Embedding(vocab_size, width)
        self.position_embeddings = nn.Parameter(torch.randn(1, seq_len, width))

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.word_embeddings(idx) + self.position_embeddings[:, : idx.shape[1]]


class NestedLM(nn.Module):
    def __init__(self, width: int, vocab_size: int, seq_len: int):
        super().__init__()
        self.embeddings = Embeddings(width, vocab_size, seq_len)
        self.layers = nn.ModuleList(Block(width, BmmAttention(width, "mup")) for _ in range(2))
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, vocab_size)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.embeddings(idx)
        for layer in self.layers:
            x = layer(x)
        return self.head(self.norm(x))


def nested_inputs(width: int, vocab_size: int, seq_len: int) -> NestedLM:
    return NestedLM(width, vocab_size, seq_len)


# ---------------------------------------------------------------------------------------------
# Depth


class ResidualLM(nn.Module):
    """``depth`` blocks whose branches are × ``residual_mult`` (what CompleteP needs of a model)."""

    def __init__(self, width: int, vocab_size: int, seq_len: int, depth: int, residual_mult: float):
        super().__init__()
        self.tok, self.pos = nn.Embedding(vocab_size, width), nn.Embedding(seq_len, width)
        self.blocks = nn.ModuleList(MLP(width) for _ in range(depth))
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, vocab_size)
        self.residual_mult = residual_mult

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.tok(idx) + self.pos(torch.arange(idx.shape[1], device=idx.device))
        for block in self.blocks:
            x = x + self.residual_mult * block(x)
        return self.head(self.norm(x))


def with_residual_mult(
    width: int, vocab_size: int, seq_len: int, depth: int, residual_mult: float
) -> ResidualLM:
    return ResidualLM(width, vocab_size, seq_len, depth, residual_mult)


def without_residual_mult(width: int, vocab_size: int, seq_len: int, depth: int = 2) -> ResidualLM:
    """Takes depth but not residual_mult: a deeper target's branches could never be scaled."""
    return ResidualLM(width, vocab_size, seq_len, depth, 1.0)


# ---------------------------------------------------------------------------------------------
# Models that are not language models: images in, class logits out (model.task: classification,
# data.module: examples.images:make)


class MixerBlock(nn.Module):
    """MLP-Mixer: an MLP across the tokens (its weights have no width dim) and one across the channels."""

    def __init__(self, width: int, tokens: int):
        super().__init__()
        self.n1, self.n2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.token_up, self.token_down = nn.Linear(tokens, 2 * tokens), nn.Linear(2 * tokens, tokens)
        self.channels = MLP(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, N, C)
        y = self.n1(x).transpose(1, 2)  # (B, C, N): mix across the tokens
        x = x + self.token_down(F.gelu(self.token_up(y))).transpose(1, 2)
        return x + self.channels(self.n2(x))


class MLPMixer(nn.Module):
    def __init__(self, width: int, num_classes: int, depth: int, patch: int, image: int):
        super().__init__()
        self.stem = nn.Conv2d(3, width, patch, stride=patch)
        self.blocks = nn.ModuleList(MixerBlock(width, (image // patch) ** 2) for _ in range(depth))
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, num_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.stem(images).flatten(2).transpose(1, 2)
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x).mean(dim=1))


def mlp_mixer(width: int, num_classes: int, depth: int = 2, patch: int = 4, image: int = 16) -> MLPMixer:
    return MLPMixer(width, num_classes, depth, patch, image)


def hf_vit(width: int, num_classes: int, attn: str = "eager", heads: int | None = None, layers: int = 2):
    """Hugging Face's ViTForImageClassification from a local config (nothing downloaded): heads of 16
    dims, or ``heads`` fixed (the head dim grows; HF's 1/√d_head scale is then the violation)."""
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import ViTConfig, ViTForImageClassification

    cfg = ViTConfig(
        hidden_size=width,
        num_attention_heads=heads or width // 16,
        intermediate_size=4 * width,
        num_hidden_layers=layers,
        image_size=16,
        patch_size=4,
        num_channels=3,
        num_labels=num_classes,
        attn_implementation=attn,
    )
    return ViTForImageClassification(cfg)


class ItemRawLM(nn.Module):
    """A raw position table and a forward that reads a value (``.item()``), which the meta device
    cannot give: its use is watched on a real CPU copy instead."""

    def __init__(self, width: int, vocab_size: int, seq_len: int):
        super().__init__()
        self.tok = nn.Embedding(vocab_size, width)
        self.pos = nn.Parameter(torch.randn(seq_len, width))
        self.mix = nn.Linear(width, width)
        self.head = nn.Linear(width, vocab_size)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        if idx.max().item() >= self.tok.num_embeddings:
            raise ValueError("token out of range")
        x = self.tok(idx) + self.pos[: idx.shape[1]]
        return self.head(F.gelu(self.mix(x)))


def item_raw_lm(width: int, vocab_size: int, seq_len: int) -> ItemRawLM:
    return ItemRawLM(width, vocab_size, seq_len)

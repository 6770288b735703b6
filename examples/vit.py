"""A small Vision Transformer, made µP by mutune without edits: ``configs/vit.yaml`` trains it.

Written the way ViTs are (Hugging Face's layout): an ``embeddings`` module holding a raw CLS token
and a raw position table and containing the patch projection (a convolution), pre-norm blocks with
attention over the CLS token and the patches (17 tokens for 16×16 images in 4×4 patches), and a
classifier on the CLS token. The model knows nothing of µP: mutune classifies the raw CLS token and
position table by their use (concatenated to, added to the stream: vector-like), the projection as
the input weight (α_in on the module's output), the classifier as the readout (α_out/m on its input).

The contract is the one of ``model.task: classification`` (docs/mup.md): ``build(width,
num_classes, ...)``, ``forward(images) -> (B, num_classes)`` logits; mutune computes the loss. The
head dim is fixed, so width grows through the number of heads and 1/√d_head is a constant (µP's
1/d rule changes nothing); ``alpha_attn`` multiplies it, so it can be searched. ``depth`` and
``residual_mult`` make it depth-transferable (CompleteP).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class Embeddings(nn.Module):
    def __init__(self, width: int, image: int, patch: int, channels: int):
        super().__init__()
        self.projection = nn.Conv2d(channels, width, patch, stride=patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, width))
        self.position_embeddings = nn.Parameter(torch.randn(1, (image // patch) ** 2 + 1, width) * 0.02)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        patches = self.projection(images).flatten(2).transpose(1, 2)  # (B, N, width)
        x = torch.cat([self.cls_token.expand(len(patches), -1, -1), patches], dim=1)
        return x + self.position_embeddings


class Attention(nn.Module):
    def __init__(self, width: int, head_dim: int, alpha_attn: float):
        super().__init__()
        self.heads, self.head_dim = width // head_dim, head_dim
        self.scale = alpha_attn / math.sqrt(head_dim)
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, C = x.shape
        q, k, v = self.qkv(x).view(B, N, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        attn = ((q @ k.transpose(-2, -1)) * self.scale).softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(B, N, C))


class Block(nn.Module):
    def __init__(self, width: int, head_dim: int, alpha_attn: float, residual_mult: float):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.attn = Attention(width, head_dim, alpha_attn)
        self.fc1, self.fc2 = nn.Linear(width, 4 * width), nn.Linear(4 * width, width)
        self.residual_mult = residual_mult

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.residual_mult * self.attn(self.norm1(x))
        return x + self.residual_mult * self.fc2(F.gelu(self.fc1(self.norm2(x))))


class ViT(nn.Module):
    def __init__(
        self,
        width: int,
        num_classes: int,
        depth: int,
        head_dim: int,
        patch: int,
        image: int,
        channels: int,
        alpha_attn: float,
        residual_mult: float,
    ):
        super().__init__()
        self.embeddings = Embeddings(width, image, patch, channels)
        self.blocks = nn.ModuleList(Block(width, head_dim, alpha_attn, residual_mult) for _ in range(depth))
        self.norm = nn.LayerNorm(width)
        self.classifier = nn.Linear(width, num_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.embeddings(images)
        for block in self.blocks:
            x = block(x)
        return self.classifier(self.norm(x)[:, 0])


def build(
    width: int,
    num_classes: int,
    depth: int = 2,
    head_dim: int = 16,
    patch: int = 4,
    image: int = 16,
    channels: int = 3,
    alpha_attn: float = 1.0,
    residual_mult: float = 1.0,
) -> ViT:
    return ViT(width, num_classes, depth, head_dim, patch, image, channels, alpha_attn, residual_mult)

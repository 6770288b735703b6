"""Unit-scaled ops, for u-µP: each op scales its output (and, separately, its gradients) so that
activations, weights and gradients have unit scale at initialisation, at any width.

The rules are those of u-µP (Blake et al., "u-µP: The Unit-Scaled Maximal Update Parametrization",
ICLR 2025) as Graphcore's ``unit_scaling`` 0.3.5 implements them (``unit_scaling/functional.py``,
``core/functional.py``); this is our own code, checked against that package op by op
(tests/test_umup.py). An op's forward scale and its backward scale may differ: :func:`scale_fwd`
multiplies in the forward only, :func:`scale_bwd` in the backward only. Where an op has both, the
``to_output_scale`` constraint uses the forward's for the input's gradient too (so that the two
passes agree, which a residual stream needs), as the package does by default.

- ``linear``: output × fan_in^-1/2 (a readout: × fan_in^-1, its input gradient × fan_out^-1/2 apart);
  the weight's gradient × batch^-1/2;
- ``embedding``: the table's gradient × (rows / batch)^1/2;
- ``add``: two unit tensors summed, × 2^-1/2;
- ``layer_norm``: the gain's gradient × (size / numel)^1/2;
- ``gelu``: an empirical model of GELU's output scale given α_ffn-act;
- ``attention``: scaled dot-product attention with logits × α_attn / d_head, its output rescaled by an
  empirical model of its scale given α and the sequence length;
- ``residual_split`` / ``residual_add``: a branch weighted by τ against the skip, unit in both passes;
  τ per branch from :func:`residual_taus` (u-µP App. G);
- ``cross_entropy``: the logits' gradient × V/√(V-1), the loss's batch mean in the forward only.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class _Scale(torch.autograd.Function):
    """``fwd · x`` in the forward, ``bwd · grad`` in the backward."""

    @staticmethod
    def forward(ctx, x: Tensor, fwd: float, bwd: float) -> Tensor:  # type: ignore[override]
        ctx.bwd = bwd
        return fwd * x

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, None]:  # type: ignore[override]
        return ctx.bwd * grad, None, None


def scale_fwd(x: Tensor, scale: float) -> Tensor:
    """``x × scale`` in the forward; its gradient passed on unchanged."""
    return _Scale.apply(x, scale, 1.0)


def scale_bwd(x: Tensor, scale: float) -> Tensor:
    """``x`` unchanged in the forward; its gradient × scale."""
    return _Scale.apply(x, 1.0, scale)


def log_interp(alpha: float, lower: float, upper: float) -> float:
    """``lower`` at α = 0, ``upper`` at α = 1, geometrically in between."""
    return math.exp(alpha * math.log(upper) + (1 - alpha) * math.log(lower))


def linear(x: Tensor, weight: Tensor, bias: Tensor | None, readout: bool = False) -> Tensor:
    fan_out, fan_in = weight.shape
    batch = x.numel() // fan_in
    out_scale = fan_in**-1.0 if readout else fan_in**-0.5
    grad_in_scale = fan_out**-0.5 if readout else out_scale  # a hidden linear: "to_output_scale"
    grad_w_scale = batch**-0.5
    x = scale_bwd(x, grad_in_scale)
    weight = scale_bwd(weight, grad_w_scale)
    bias = scale_bwd(bias, grad_w_scale) if bias is not None else None
    return scale_fwd(F.linear(x, weight, bias), out_scale)


def embedding(idx: Tensor, weight: Tensor) -> Tensor:
    weight = scale_bwd(weight, (weight.shape[0] / idx.numel()) ** 0.5)
    return F.embedding(idx, weight)


def add(a: Tensor, b: Tensor) -> Tensor:
    """Two unit-scaled tensors (broadcast) summed into a unit-scaled one."""
    s = 2**-0.5
    return scale_fwd(torch.add(scale_bwd(a, s), scale_bwd(b, s)), s)


def layer_norm(x: Tensor, size: int, weight: Tensor | None, bias: Tensor | None, eps: float) -> Tensor:
    grad_scale = (size / x.numel()) ** 0.5
    weight = scale_bwd(weight, grad_scale) if weight is not None else None
    bias = scale_bwd(bias, grad_scale) if bias is not None else None
    return F.layer_norm(x, (size,), weight, bias, eps)


def gelu(x: Tensor, mult: float = 1.0) -> Tensor:
    alpha = 1 / (1 + 0.25 / mult**2)
    scale = log_interp(alpha, 2.0, (2 / (1 - 1 / math.pi)) ** 0.5)  # "to_output_scale": both passes
    x = scale_bwd(x, scale)
    out = F.gelu(x) if mult == 1 else F.gelu(x * mult) / mult
    return scale_fwd(out, scale)


def attention(q: Tensor, k: Tensor, v: Tensor, mult: float = 1.0, causal: bool = True) -> Tensor:
    """(B, heads, T, d_head) each: causal attention with logits × mult / d_head, unit-scaled."""
    seq_len, d_head = v.shape[-2:]
    lower = ((math.log(seq_len) if causal else 1.0) / seq_len) ** 0.5
    scale = 1.0 / log_interp(1 / (1 + 4 * d_head / mult**2), lower, 1.0)
    q, k, v = (scale_bwd(t, scale) for t in (q, k, v))
    out = F.scaled_dot_product_attention(q, k, v, is_causal=causal, scale=mult / d_head)
    return scale_fwd(out, scale)


def residual_split(x: Tensor, tau: float) -> tuple[Tensor, Tensor]:
    denom = (1 + tau**2) ** 0.5
    return scale_bwd(x, tau / denom), scale_bwd(x, 1 / denom)


def residual_add(branch: Tensor, skip: Tensor, tau: float) -> Tensor:
    denom = (1 + tau**2) ** 0.5
    return scale_fwd(branch, tau / denom) + scale_fwd(skip, 1 / denom)


def residual_taus(
    depth: int, residual_mult: float = 1.0, attn_ratio: float = 1.0
) -> list[tuple[float, float]]:
    """(attention τ, MLP τ) of each of ``depth`` blocks: every attention branch contributes the same,
    every MLP branch the same; all of them together ``residual_mult`` times the embedding's
    (variance), attention to MLP as ``attn_ratio`` (u-µP App. G)."""
    a_mlp = residual_mult * (2 / (1 + attn_ratio**2)) ** 0.5
    a_attn = attn_ratio * a_mlp
    branches = 2 * depth

    def tau(i: int) -> float:
        n_attn, n_mlp = (i + 1) // 2, i // 2
        return (a_attn if i % 2 == 0 else a_mlp) / (
            branches / 2 + n_attn * a_attn**2 + n_mlp * a_mlp**2
        ) ** 0.5

    return [(tau(2 * b), tau(2 * b + 1)) for b in range(depth)]


def cross_entropy(logits: Tensor, targets: Tensor) -> Tensor:
    """Mean cross-entropy over ``logits`` (N, V); its gradient that of the sum, × V/√(V-1)."""
    n, vocab = logits.shape
    logits = scale_bwd(logits, vocab / (vocab - 1) ** 0.5)
    return scale_fwd(F.cross_entropy(logits, targets, reduction="sum"), 1 / n)


# ---------------------------------------------------------------------------------------------
# Modules: the same parameters as torch's, so classification, hooks and checkpoints see no difference


class Linear(nn.Linear):
    def forward(self, x: Tensor) -> Tensor:
        return linear(x, self.weight, self.bias)


class Readout(nn.Linear):
    """The output layer: × fan_in^-1 (µP's 1/m at unit scale), its input's gradient × fan_out^-1/2."""

    def forward(self, x: Tensor) -> Tensor:
        return linear(x, self.weight, self.bias, readout=True)


class Embedding(nn.Embedding):
    def forward(self, idx: Tensor) -> Tensor:
        return embedding(idx, self.weight)


class LayerNorm(nn.LayerNorm):
    def forward(self, x: Tensor) -> Tensor:
        return layer_norm(x, self.normalized_shape[0], self.weight, self.bias, self.eps)

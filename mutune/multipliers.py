"""The forward multipliers of µP: embedding output, logits, attention logits.

Under µP (TP5 Def. 4.1, App. B.1): the embedding output is multiplied by α_in, the logits by
α_out / m (m = width / base_width; "a multiplier of order 1/fan_in should accompany any weight
that maps an infinite dimension to a finite one"), and the attention logits by
α_attn · √d_head_base / d_head, which is 1/d attention that equals SP's 1/√d at the base head dim.
SP (the control) applies the α's but none of the width factors. With depth scaling (CompleteP, Dey et
al., arXiv 2505.01618) each residual branch is multiplied by m_L^-α, m_L = depth / base_depth:
h ← h + m_L^-α · F(h), for the attention and the MLP branch of every block. The α's are constant in width,
which is what makes them hyperparameters that transfer.

This module imports nothing of the spec.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Multipliers:
    """Forward multipliers a model applies: embedding output, logits, attention logits."""

    input: float
    output: float
    attn: float | None  # None for models without attention
    residual: float = 1.0  # each residual branch's output, m_L^-α (CompleteP); 1 without depth scaling


def multipliers(
    parametrization: str,
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
    m = width / base_width
    output = alpha_out / m if parametrization == "mup" else alpha_out
    attn = None
    if head_dim is not None:
        if parametrization == "mup":
            # α_attn·√d_base/d, written so that at d == d_base it is bit-identical to SP's α/√d
            base = base_head_dim or head_dim
            attn = alpha_attn / math.sqrt(base) * (base / head_dim)
        else:
            attn = alpha_attn / math.sqrt(head_dim)
    residual = depth_mult**-depth_alpha if depth_mult != 1.0 else 1.0
    return Multipliers(input=alpha_in, output=output, attn=attn, residual=residual)

"""The forward multipliers of µP: embedding output, logits, attention logits.

Under µP (TP5 Def. 4.1, App. B.1): the embedding output is multiplied by α_in, the logits by
α_out / m (m = width / base_width; "a multiplier of order 1/fan_in should accompany any weight
that maps an infinite dimension to a finite one"), and the attention logits by
α_attn · √d_head_base / d_head, which is 1/d attention that equals SP's 1/√d at the base head dim.
SP (the control) applies the α's but none of the width factors. The α's are constant in width,
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
    return Multipliers(input=alpha_in, output=output, attn=attn)

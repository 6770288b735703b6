"""The MLP of TP5's demos (input -> w -> ... -> w -> readout, ReLU), as a next-token predictor.

The input is the one-hot encoding of the previous ``seq_len`` tokens, flattened. It is applied as
a gather of the input layer's columns, which equals ``Linear(one_hot)`` without materialising the
one-hot matrix, so large vocabularies stay cheap.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..flops import Workload, matmul_params
from . import forward_multipliers


@dataclass
class MLPConfig:
    vocab_size: int
    seq_len: int
    width: int
    depth: int  # hidden layers (>= 1)
    bias: bool = False
    input_mult: float = 1.0
    output_mult: float = 1.0


class MLP(nn.Module):
    readout_names = ("readout",)

    def __init__(self, cfg: MLPConfig):
        super().__init__()
        self.cfg = cfg
        self.fc_in = nn.Linear(cfg.seq_len * cfg.vocab_size, cfg.width, bias=cfg.bias)
        self.fc_in._mutune_gather = True  # applied as a lookup, not a matmul (FLOP accounting)
        self.hidden = nn.ModuleList(
            nn.Linear(cfg.width, cfg.width, bias=cfg.bias) for _ in range(cfg.depth - 1)
        )
        self.readout = nn.Linear(cfg.width, cfg.vocab_size, bias=cfg.bias)
        self.register_buffer("offsets", torch.arange(cfg.seq_len) * cfg.vocab_size, persistent=False)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None):
        # one_hot(idx).flatten(1) @ W.T == sum over positions of W[:, pos * V + token]
        h = F.embedding(idx + self.offsets, self.fc_in.weight.t()).sum(dim=1)  # (B, width)
        if self.fc_in.bias is not None:
            h = h + self.fc_in.bias
        h = F.relu(h * self.cfg.input_mult)
        for layer in self.hidden:
            h = F.relu(layer(h))
        # the multiplier scales the readout's input, as mup's MuReadout does: the readout bias has no
        # width dim, so it must not be divided by m (scaling the output would slow its learning by m)
        logits = self.readout(h * self.cfg.output_mult)  # (B, V)
        if targets is None:
            return logits, None
        return logits, F.cross_entropy(logits.float(), targets[:, -1])


# ---------------------------------------------------------------------------------------------
# The family's registry interface (see mutune.config.families)


def build(spec, hp, vocab_size: int, width: int) -> MLP:
    m = spec.model
    mult = forward_multipliers(spec, hp, width)
    return MLP(
        MLPConfig(
            vocab_size=vocab_size,
            seq_len=m.seq_len,
            width=width,
            depth=m.depth,
            bias=m.bias,
            input_mult=mult.input,
            output_mult=mult.output,
        )
    )


bare = build


def readout_names(spec) -> tuple[str, ...]:
    return MLP.readout_names


def validate(spec) -> None:
    return None


def after_init(model: MLP, spec) -> None:
    return None


def coord_seq_len(spec, seq_len: int) -> int:
    """The context is the MLP's input size: the coord check keeps the model's own."""
    return spec.model.seq_len


def workload(spec, model: MLP, width: int, vocab_size: int) -> Workload:
    """One prediction per sequence; the input gather is a lookup, not a matmul."""
    m, t = spec.model, spec.train
    return Workload(
        flops_per_token=6.0 * matmul_params(model),
        tokens_per_step=t.batch_size,
        activation_bytes=2 * t.batch_size * (width * 4 * m.depth),
        logits_bytes=2 * 4 * t.batch_size * vocab_size,
    )

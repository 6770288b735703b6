"""Parameters, FLOPs and memory of a run, computed from the spec without allocating weights.

FLOPs per token of training follow the usual accounting (Kaplan et al. 2020; PaLM App. B):
``6 * N`` for the matmul parameters N (forward 2N, backward 4N) plus, for attention,
``12 * depth * seq_len * width`` for the score and value products (full T, as nanoGPT counts
them; causal kernels that skip the masked half do less). Embedding lookups are not matmuls and
are not counted; a tied readout still costs its matmul. Evaluation adds forward passes at a
third of the training cost per token.

The memory figure is an estimate, meant for planning: fp32 weights, gradients and optimizer
state, plus activations after Korthikanti et al. (2022): ``s·b·L·(34·d + 5·heads·s)`` bytes in
16-bit, doubled in fp32, and the fp32 logits.

Factory models (``model.family: factory``) are measured instead of modelled: one forward pass of a
single sequence on the meta device under ``torch.utils.flop_counter.FlopCounterMode`` (matmuls,
convolutions and attention, nothing allocated), times 3 for forward + backward, times the batch. Their
activation memory is approximated by the sizes of every leaf module's output in that pass (what
autograd keeps, roughly), in the training precision, plus the fp32 logits.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn

from . import data, models
from .config import HParams, Spec
from .registry import OPTIMIZERS


@dataclass(frozen=True)
class Cost:
    params: int  # unique parameters
    matmul_params: int  # N in 6N: weights used in a matmul per token
    flops_per_token: float  # training, forward + backward
    tokens_per_step: int
    flops_per_step: float
    steps: int
    train_flops: float
    eval_flops: float
    total_flops: float
    memory_bytes: float  # estimated peak for training (see module doc)

    def to_dict(self) -> dict:
        return asdict(self)


def n_evals(steps: int, eval_every: int) -> int:
    """Evaluations a run makes: every ``eval_every`` steps and once at the end."""
    return steps // eval_every + (1 if steps % eval_every else 0)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def matmul_params(model: nn.Module) -> int:
    """Weights of every Linear / conv applied per token (a tied readout counts again)."""
    total = 0
    for mod in model.modules():
        if isinstance(mod, (nn.Linear, nn.modules.conv._ConvNd)) and not getattr(
            mod, "_mutune_gather", False
        ):
            total += mod.weight.numel()
    return total


@dataclass(frozen=True)
class Workload:
    """What a model family reports of one training step (see each family's ``workload``)."""

    flops_per_token: float  # training, forward + backward
    tokens_per_step: int
    activation_bytes: float  # the batch's activations at 16 bit
    logits_bytes: float  # fp32 logits and their gradient


def cost(spec: Spec, width: int | None = None, hp: HParams | None = None) -> Cost:
    """The cost of one training run of ``spec`` (at ``width`` if given)."""
    t = spec.train
    width = spec.model.width if width is None else width
    hp = hp or spec.hparams
    vocab = data.vocab_size(spec.data)
    with torch.device("meta"):
        model = models.build(spec, hp, vocab, width)
    params = count_params(model)
    work = models.family(spec).workload(spec, model, width, vocab)
    act_bytes = work.activation_bytes * (1 if _uses_bf16(spec) else 2)
    memory = (
        params * (4 + 4)
        + optimizer_state_bytes(spec, hp, vocab, width, model)
        + act_bytes
        + work.logits_bytes
    )
    flops_per_step = work.flops_per_token * work.tokens_per_step
    train_flops = flops_per_step * t.steps
    eval_tokens = t.eval_batches * work.tokens_per_step * n_evals(t.steps, t.eval_every)
    eval_flops = work.flops_per_token / 3.0 * eval_tokens
    return Cost(
        params=params,
        matmul_params=matmul_params(model),
        flops_per_token=work.flops_per_token,
        tokens_per_step=work.tokens_per_step,
        flops_per_step=flops_per_step,
        steps=t.steps,
        train_flops=train_flops,
        eval_flops=eval_flops,
        total_flops=train_flops + eval_flops,
        memory_bytes=float(memory),
    )


def optimizer_state_bytes(spec: Spec, hp: HParams, vocab: int, width: int, model: nn.Module) -> float:
    """fp32 optimizer state: one size per rule kind of the optimizer (AdamW 8 B/parameter, SGD 4);
    an optimizer that treats parameters differently (Muon) is summed over the classified model."""
    opt = OPTIMIZERS[spec.train.optimizer]
    if len(opt.state_bytes) == 1:
        (per_param,) = opt.state_bytes.values()
        return float(count_params(model) * per_param)
    infos = models.classify(spec, hp, vocab, width)
    return float(
        sum(math.prod(i.shape) * opt.state_bytes[opt.kind(i.role, len(i.shape))] for i in infos.values())
    )


def _uses_bf16(spec: Spec) -> bool:
    p = spec.train.precision
    return p == "bf16" or (
        p == "auto" and spec.train.device in ("auto", "cuda") and torch.cuda.is_available()
    )


def human(n: float, unit: str = "") -> str:
    """1234567 -> '1.23M' (SI prefixes), for plans and tables."""
    for div, suffix in ((1e18, "E"), (1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= div:
            return f"{n / div:.3g}{suffix}{unit}"
    return f"{n:.3g}{unit}"


def human_bytes(n: float) -> str:
    for div, suffix in ((1 << 40, "TiB"), (1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")):
        if n >= div:
            return f"{n / div:.3g} {suffix}"
    return f"{n:.0f} B"

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

from dataclasses import asdict, dataclass

import torch
from torch import nn

from . import data, models
from .config import HParams, Spec


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


def cost(spec: Spec, width: int | None = None, hp: HParams | None = None) -> Cost:
    """The cost of one training run of ``spec`` (at ``width`` if given)."""
    m, t = spec.model, spec.train
    width = m.width if width is None else width
    vocab = data.vocab_size(spec.data)
    with torch.device("meta"):
        model = models.build(spec, hp or spec.hparams, vocab, width)
    params = count_params(model)
    n_mm = matmul_params(model)
    if m.family == "factory":
        fwd_flops, act_per_seq, logits_per_seq, per_position = _measure(model, m.seq_len)
        tokens_per_step = t.batch_size * (m.seq_len if per_position else 1)
        flops_per_token = 3.0 * fwd_flops * t.batch_size / tokens_per_step
        act_16bit = act_per_seq * t.batch_size  # bytes at 16 bit
        logits = 2 * 4 * t.batch_size * logits_per_seq
    elif m.family == "gpt":
        n_head, _ = models.head_dims(spec, width)
        flops_per_token = 6.0 * n_mm + 12.0 * m.depth * m.seq_len * width
        tokens_per_step = t.batch_size * m.seq_len
        act_16bit = m.seq_len * t.batch_size * m.depth * (34 * width + 5 * n_head * m.seq_len)
        logits = 2 * 4 * t.batch_size * m.seq_len * vocab
    else:
        flops_per_token = 6.0 * n_mm  # one prediction per sequence; the input gather is a lookup
        tokens_per_step = t.batch_size
        act_16bit = 2 * t.batch_size * (width * 4 * m.depth)
        logits = 2 * 4 * t.batch_size * vocab
    act_bytes = act_16bit * (1 if _uses_bf16(spec) else 2)
    state = 8 if t.optimizer == "adamw" else 4
    memory = params * (4 + 4 + state) + act_bytes + logits
    flops_per_step = flops_per_token * tokens_per_step
    train_flops = flops_per_step * t.steps
    eval_tokens = t.eval_batches * tokens_per_step * n_evals(t.steps, t.eval_every)
    eval_flops = flops_per_token / 3.0 * eval_tokens
    return Cost(
        params=params,
        matmul_params=n_mm,
        flops_per_token=flops_per_token,
        tokens_per_step=tokens_per_step,
        flops_per_step=flops_per_step,
        steps=t.steps,
        train_flops=train_flops,
        eval_flops=eval_flops,
        total_flops=train_flops + eval_flops,
        memory_bytes=float(memory),
    )


def _measure(model: nn.Module, seq_len: int) -> tuple[float, int, int, bool]:
    """Forward FLOPs of one sequence, its activation bytes at 16 bit, its logits' elements, and
    whether it predicts every position: one pass on the meta device."""
    from torch.utils.flop_counter import FlopCounterMode

    sizes: list[int] = []

    def record(module, args, output):
        if isinstance(output, torch.Tensor):
            sizes.append(output.numel())

    handles = [mod.register_forward_hook(record) for mod in model.modules() if not list(mod.children())]
    try:
        with torch.device("meta"), torch.no_grad(), FlopCounterMode(display=False) as counter:
            logits, _ = model(torch.zeros(1, seq_len, dtype=torch.long))
    finally:
        for h in handles:
            h.remove()
    return float(counter.get_total_flops()), 2 * sum(sizes), logits.numel(), logits.ndim == 3


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

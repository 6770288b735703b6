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
from dataclasses import asdict, dataclass, replace

import torch
from torch import nn

from . import data, models
from .config import HParams, Spec
from .mup.optimizers import OPTIMIZERS
from .units import human as human  # re-exported for callers of flops.human
from .units import human_bytes as human_bytes


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
    memory_bytes: float  # estimated peak for training in one process (see module doc)
    memory: Memory | None = None  # its parts, for the per-GPU estimate under DDP and FSDP

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Memory:
    """The parts of ``Cost.memory_bytes`` (bytes, one process holding the whole batch), and the
    model's shape as sharding sees it."""

    weights: float  # fp32
    grads: float  # fp32
    optimizer: float  # fp32 state
    activations: float  # the batch's, at the training precision
    logits: float  # fp32 logits and their gradient
    params: int
    largest_block: int  # parameters of the largest repeated unit (FSDP gathers one at a time)
    root_params: int  # parameters outside the blocks (embeddings, readout): FSDP's root unit
    n_blocks: int
    block_input_bytes: float  # one block's input for the whole batch (kept under activation checkpointing)
    bf16: bool  # trained in bf16 (autocast; FSDP gathers bf16 parameters)
    activation_checkpointing: bool
    batch_size: int = 0  # sequences per step (the whole batch the activations above are for; 0: unknown)
    micro_batch_size: int | None = None  # sequences per forward pass (gradient accumulation), or the batch

    def share(self, nproc: int) -> float:
        """The fraction of the batch's activations one of ``nproc`` processes holds at once: its slice
        of the batch, or one micro-batch of it (``train.micro_batch_size``)."""
        share = 1.0 / nproc
        if self.micro_batch_size and self.batch_size:
            share = min(share, self.micro_batch_size / self.batch_size)
        return share

    def in_precision(self, bf16: bool) -> Memory:
        """The same run trained in bf16 (activations and FSDP's gathers at 16 bits) or fp32."""
        if bf16 == self.bf16:
            return self
        f = 0.5 if bf16 else 2.0
        return replace(
            self, activations=self.activations * f, block_input_bytes=self.block_input_bytes * f, bf16=bf16
        )


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
    bf16 = _uses_bf16(spec)
    act_bytes = work.activation_bytes * (1 if bf16 else 2)
    opt_bytes = optimizer_state_bytes(spec, hp, vocab, width, model)
    micro = t.micro_batch_size if t.micro_batch_size and t.micro_batch_size < t.batch_size else None
    held = micro / t.batch_size if micro else 1.0  # gradient accumulation holds one micro-batch's activations
    memory = params * (4 + 4) + opt_bytes + (act_bytes + work.logits_bytes) * held
    block_params = [count_params(b) for b in models.blocks(model)]
    parts = Memory(
        weights=4.0 * params,
        grads=4.0 * params,
        optimizer=opt_bytes,
        activations=act_bytes,
        logits=work.logits_bytes,
        params=params,
        largest_block=max(block_params, default=0),
        root_params=params - sum(block_params),
        n_blocks=len(block_params),
        block_input_bytes=work.tokens_per_step * width * (2 if bf16 else 4),
        bf16=bf16,
        activation_checkpointing=t.activation_checkpointing,
        batch_size=t.batch_size,
        micro_batch_size=micro,
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
        memory=parts,
    )


# ---------------------------------------------------------------------------------------------
# Per GPU, under DDP and FSDP


@dataclass(frozen=True)
class PerGPU:
    """Estimated training memory of one of ``nproc`` GPUs under ``strategy`` (bytes)."""

    strategy: str  # ddp | fsdp
    nproc: int
    states: float  # weights, gradients and optimizer state this GPU holds
    gathered: float  # FSDP: full parameters and gradients of the units being computed
    buffers: float  # DDP: the gradient buckets (a copy of the gradients)
    activations: float  # this GPU's slice of the batch (logits included)

    @property
    def total(self) -> float:
        return self.states + self.gathered + self.buffers + self.activations

    def fits(self, gib: float, usable: float = 1.0) -> bool:
        """Whether the estimate fits in ``usable`` of a GPU of ``gib`` GiB (default its whole memory;
        keep some headroom)."""
        return self.total <= usable * gib * (1 << 30)

    def to_dict(self) -> dict:
        return {**asdict(self), "total": self.total}


def activations_per_gpu(mem: Memory, nproc: int) -> float:
    """Each GPU trains on 1/nproc of the batch, one micro-batch of it at a time under gradient
    accumulation (:meth:`Memory.share`). With activation checkpointing a block keeps only its input,
    and one block's activations exist at a time (during its recompute)."""
    acts = mem.activations
    if mem.activation_checkpointing and mem.n_blocks:
        acts = mem.activations / mem.n_blocks + mem.block_input_bytes * mem.n_blocks
    return (acts + mem.logits) * mem.share(nproc)


def per_gpu(mem: Memory, nproc: int, strategy: str) -> PerGPU:
    """The per-GPU estimate of a run whose single-process parts are ``mem``.

    DDP replicates the weights, gradients and optimizer state, and keeps its gradient buckets (a
    second copy of the gradients). FSDP (FSDP2, a unit per block plus the root) holds 1/nproc of
    every state, plus the unsharded parameters and gradients of what is being computed: the root
    (embeddings, readout; not resharded between forward and backward) and two blocks (the current
    one and the one prefetched), in bf16 when the run trains in bf16.
    """
    states = mem.weights + mem.grads + mem.optimizer
    acts = activations_per_gpu(mem, nproc)
    if strategy == "ddp":
        return PerGPU("ddp", nproc, states, 0.0, mem.grads if nproc > 1 else 0.0, acts)
    if strategy != "fsdp":
        raise ValueError(f"unknown strategy {strategy!r}")
    unit_bytes = 2 if mem.bf16 else 4
    gathered = 2 * unit_bytes * (mem.root_params + 2 * mem.largest_block) if nproc > 1 else 0.0
    return PerGPU("fsdp", nproc, states / nproc, float(gathered), 0.0, acts)


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


def fit_warnings(gpus: dict[str, PerGPU], chosen: str, gib: float) -> list[str]:
    """Say so when the chosen strategy does not fit a GPU of ``gib`` GiB, and what would."""
    g = gpus[chosen]
    if g.fits(gib):
        return []
    others = [s for s, o in gpus.items() if s != chosen and o.fits(gib)]
    hint = (
        f"; train.parallel={others[0]} needs {human_bytes(gpus[others[0]].total)}"
        if others
        else "; more GPUs, train.activation_checkpointing=true or a smaller train.batch_size would lower it"
    )
    return [
        f"{chosen} needs about {human_bytes(g.total)} per GPU at {g.nproc} GPUs, more than {gib:g} GiB{hint}"
    ]


# ---------------------------------------------------------------------------------------------
# A layout that fits


USABLE = 0.9  # of a GPU's memory a layout may plan for: the rest is the CUDA context, fragmentation, NCCL
MAX_GPUS = 1 << 16


@dataclass(frozen=True)
class Layout:
    """How to run a target on ``gpus`` GPUs of ``gib`` GiB: the strategy, the micro-batch and its
    accumulation steps, activation checkpointing, and the memory each GPU then needs."""

    gpus: int
    gib: float
    strategy: str  # ddp | fsdp
    micro_batch_size: int  # sequences per forward pass on each GPU
    accumulation: int  # micro-batches per optimizer step on each GPU
    activation_checkpointing: bool
    per_gpu: PerGPU

    def keys(self) -> list[str]:
        """The spec keys that ask for this layout (``--to`` / KEY=VALUE)."""
        keys = [f"train.parallel={self.strategy}"] if self.gpus > 1 else []
        return keys + [
            f"train.micro_batch_size={self.micro_batch_size}",
            f"train.activation_checkpointing={str(self.activation_checkpointing).lower()}",
        ]

    def describe(self) -> str:
        """``fsdp, micro-batch 8 x 64 accumulation steps, activation checkpointing: 69.2 GiB per GPU (keys)``."""
        how = {"fsdp": "fsdp (FSDP2)"}.get(self.strategy, self.strategy) if self.gpus > 1 else "one process"
        steps = f"{self.accumulation} accumulation step{'s' if self.accumulation > 1 else ''}"
        ac = ", activation checkpointing" if self.activation_checkpointing else ""
        return (
            f"{how}, micro-batch {self.micro_batch_size} x {steps}{ac}: {human_bytes(self.per_gpu.total)} "
            f"per GPU ({' '.join(self.keys())})"
        )

    def to_dict(self) -> dict:
        return {**asdict(self), "per_gpu": self.per_gpu.to_dict(), "keys": self.keys()}


def _divisors(n: int) -> list[int]:
    small = [d for d in range(1, int(math.isqrt(n)) + 1) if n % d == 0]
    return sorted(set(small + [n // d for d in small]))


def plan_layout(mem: Memory, gib: float, gpus: int | None = None, usable: float = USABLE) -> Layout | None:
    """The first layout that fits ``usable`` of a GPU of ``gib`` GiB, at ``gpus`` GPUs or, without
    them, at the fewest GPUs that can hold the run (each a whole share of the batch). Preferred in
    this order: DDP (it communicates least), then FSDP2; without activation checkpointing (it costs a
    third more compute), then with; the largest micro-batch that fits (the fewest accumulation
    steps). None when nothing fits (at ``gpus``, or at up to :data:`MAX_GPUS`)."""
    batch = mem.batch_size
    if batch < 1:
        return None
    counts = [gpus] if gpus else [n for n in _divisors(batch) if n <= MAX_GPUS]
    for n in counts:
        if batch % n:
            return None
        micros = sorted(_divisors(batch // n), reverse=True)
        for strategy in ("ddp", "fsdp"):
            for ac in (False, True):
                for mb in micros:
                    m = replace(mem, micro_batch_size=mb, activation_checkpointing=ac)
                    g = per_gpu(m, n, strategy)
                    if g.fits(gib, usable):
                        return Layout(n, gib, strategy, mb, batch // n // mb, ac, g)
    return None

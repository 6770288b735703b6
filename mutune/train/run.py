"""What one run is made of: its result and progress records, the LR schedule, evaluation, and the
build (data, the µP-initialised model, its optimizer and schedule) and one training step."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import data, flops, models
from ..config import HParams, Spec, TrainSpec
from ..config.validate import cooldown
from ..device import autocast, uses_bf16
from ..mup import optim
from .parallel import Distributed, parallelize

LOG_EVERY = 10  # steps between loss reads (each is a device sync) and progress callbacks


@dataclass
class StepLog:
    step: int
    steps: int
    train_loss: float
    lr: float
    tokens_per_s: float
    elapsed: float

    @property
    def eta(self) -> float:
        return self.elapsed / self.step * (self.steps - self.step) if self.step else float("nan")


@dataclass
class RunResult:
    final_val_loss: float
    diverged: bool
    steps: int  # steps completed
    tokens: int
    flops: float
    seconds: float
    params: int
    reason: str = ""
    curve: list[dict] = field(default_factory=list)  # one row per evaluation
    branches: list[dict] = field(default_factory=list)  # WSD cooldown branches: fraction, steps, val_loss
    flops_before: float = 0.0  # of ``flops``, what a shorter run trained before this one continued it

    def summary(self) -> dict:
        """The result without the curve, as plain types (for YAML and trial attributes)."""
        d = asdict(self)
        d.pop("curve")
        for key in ("branches", "flops_before"):  # (only where they say something)
            if not d[key]:
                d.pop(key)
        return d


def lr_factor(step: int, t: TrainSpec) -> float:
    """Multiplier on every group's LR before step ``step + 1`` (``LambdaLR`` convention). Under µP
    every group's LR is scaled by it relatively, whatever the shape (WSD included)."""
    if step < t.warmup_steps:
        return (step + 1) / t.warmup_steps
    if t.schedule == "constant":
        return 1.0
    if t.schedule == "wsd":  # warmup, stable at 1, then the cooldown to min_lr_ratio at the last step
        decay = cooldown(t.steps, t.decay_fraction)
        stable = t.steps - decay
        if step < stable:
            return 1.0
        p = min(1.0, (step - stable + 1) / decay)
        return 1.0 - (1 - t.min_lr_ratio) * (math.sqrt(p) if t.decay_shape == "1-sqrt" else p)
    progress = min(1.0, (step - t.warmup_steps) / max(1, t.steps - t.warmup_steps))
    if t.schedule == "cosine":
        return t.min_lr_ratio + (1 - t.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    return 1.0 - (1 - t.min_lr_ratio) * progress


@torch.no_grad()
def evaluate(model: torch.nn.Module, val: np.ndarray, spec: Spec, device: torch.device) -> float:
    """Mean loss over a fixed set of validation batches (same batches for every run)."""
    rng = np.random.default_rng(data.VAL_SEED)
    model.eval()
    losses = []
    for _ in range(spec.train.eval_batches):
        x, y = data.get_batch(val, spec.train.batch_size, spec.model.seq_len, rng, device)
        with autocast(device, spec.train.precision):
            _, loss = model(x, y)
        losses.append(loss.float())
    model.train()
    if hasattr(model, "reshard"):  # FSDP: a no_grad forward leaves the root's parameters gathered
        model.reshard()
    return torch.stack(losses).mean().item()


@dataclass
class Run:
    """Everything one run trains with; ``fwd`` is the model as this process calls it (wrapped, compiled)."""

    spec: Spec
    hp: HParams
    world: Distributed
    device: torch.device
    corpus: data.Corpus
    model: torch.nn.Module
    opt: Any  # a torch optimizer (or mutune's combined one), built from µP param groups
    sched: torch.optim.lr_scheduler.LambdaLR
    rng: np.random.Generator  # the data order
    fwd: torch.nn.Module | None = None
    cost: flops.Cost | None = None
    flops_before: float = 0.0  # compute of the steps a continued run did not train itself (stable state)
    stable_dir: Path | None = None  # where to save the state at the end of the stable phase (WSD)


def sharded(spec: Spec, world: Distributed) -> bool:
    """Whether the run's model is sharded over processes (FSDP2) rather than whole on each."""
    return spec.train.parallel == "fsdp" and world.world > 1


def _parallelize(
    model: torch.nn.Module, spec: Spec, world: Distributed, device: torch.device
) -> torch.nn.Module:
    t = spec.train
    return parallelize(
        model,
        world,
        device,
        t.parallel,
        blocks=models.blocks(model),
        bf16=uses_bf16(device, t.precision),
        activation_checkpointing=t.activation_checkpointing,
    )


def build(spec: Spec, hp: HParams, world: Distributed, device: torch.device) -> Run:
    """Data, the model initialised by the µP rules, its optimizer and the relative LR schedule.

    A sharded run (FSDP2) is built on meta, sharded, then initialised shard by shard (no rank holds the
    whole model), and its optimizer is built on the sharded parameters, as FSDP needs; its ``fwd`` is
    the model itself. Other runs are wrapped later, by :func:`_train`.
    """
    t, m = spec.train, spec.model
    models.check_axes(spec)  # a run along an axis its model cannot apply would train something else
    corpus = data.load(spec.data, min_len=m.seq_len + 1)
    fwd = None
    if sharded(spec, world):
        shard = lambda model: _parallelize(model, spec, world, device)  # noqa: E731
        model, infos = models.create_sharded(spec, hp, corpus.vocab_size, device, shard)
        fwd = model
    else:
        model, infos = models.create(spec, hp, corpus.vocab_size, device)
    groups = models.param_groups(spec, model, infos, hp)
    opt = optim.make_optimizer(groups, hp, t.optimizer)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, t))
    return Run(spec, hp, world, device, corpus, model, opt, sched, np.random.default_rng(spec.seed), fwd)


def train_step(run: Run) -> torch.Tensor:
    """One optimizer step on the next batch (this rank's slice of the global batch); the loss."""
    t, m = run.spec.train, run.spec.model
    x, y = data.get_batch(
        run.corpus.train, t.batch_size, m.seq_len, run.rng, run.device, part=(run.world.rank, run.world.world)
    )
    with autocast(run.device, t.precision):
        _, loss = run.fwd(x, y)
    loss.backward()
    if t.grad_clip > 0 and models.parametrization(run.spec).clip != "none":
        optim.clip_grad_norm_(run.model, run.opt, t.grad_clip)  # as at the base width (µP): any width alike
    run.opt.step()
    run.opt.zero_grad(set_to_none=True)
    run.sched.step()
    return loss

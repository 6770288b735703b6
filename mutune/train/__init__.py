"""One training run: ``train(spec, hparams) -> RunResult``, in parts a reader can hold in their head.

``train`` joins the launch (:mod:`.parallel`), refuses or loads a checkpoint (:mod:`.checkpoint`),
**builds** the run (data, model initialised by the µP rules, per-group optimizer, relative LR
schedule), **parallelizes** the model (DDP under torchrun), then **steps** until the end, with
periodic **evaluation** and **checkpoints**. The schedule scales every param group's LR
*relatively*, so the µP per-group ratios survive it, and the LR-ratio guard proves it at every log
step. A NaN/inf (or absurdly large) loss ends the run as *diverged* rather than as a crash.

Search and transfer both call this; it knows nothing of Optuna: intermediate losses go out through
the ``on_eval`` callback (which may raise to stop the run, e.g. pruning), progress through ``on_log``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import data, flops, models, optim
from ..config import HParams, Spec, SpecError, TrainSpec
from ..device import autocast
from . import checkpoint
from .checkpoint import Metrics, read_result, resume_signature
from .parallel import Distributed, global_mean, init_distributed, parallelize, teardown

__all__ = ["RunResult", "StepLog", "evaluate", "lr_factor", "read_result", "train"]

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

    def summary(self) -> dict:
        """The result without the curve, as plain types (for YAML and trial attributes)."""
        d = asdict(self)
        d.pop("curve")
        return d


def lr_factor(step: int, t: TrainSpec) -> float:
    """Multiplier on every group's LR before step ``step + 1`` (``LambdaLR`` convention)."""
    if step < t.warmup_steps:
        return (step + 1) / t.warmup_steps
    if t.schedule == "constant":
        return 1.0
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


def build(spec: Spec, hp: HParams, world: Distributed, device: torch.device) -> Run:
    """Data, the model initialised by the µP rules, its optimizer and the relative LR schedule."""
    t, m = spec.train, spec.model
    corpus = data.load(spec.data, min_len=m.seq_len + 1)
    model, infos = models.create(spec, hp, corpus.vocab_size, device)
    groups = models.param_groups(spec, model, infos, hp)
    opt = optim.make_optimizer(groups, hp, t.optimizer)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, t))
    return Run(spec, hp, world, device, corpus, model, opt, sched, np.random.default_rng(spec.seed))


def train_step(run: Run) -> torch.Tensor:
    """One optimizer step on the next batch (this rank's slice of the global batch); the loss."""
    t, m = run.spec.train, run.spec.model
    x, y = data.get_batch(
        run.corpus.train, t.batch_size, m.seq_len, run.rng, run.device, part=(run.world.rank, run.world.world)
    )
    with autocast(run.device, t.precision):
        _, loss = run.fwd(x, y)
    loss.backward()
    if t.grad_clip > 0:  # the norm as at the base width: the same steps clipped at any width
        optim.clip_grad_norm_(run.model, run.opt, t.grad_clip)
    run.opt.step()
    run.opt.zero_grad(set_to_none=True)
    run.sched.step()
    return loss


def train(
    spec: Spec,
    hp: HParams,
    *,
    on_log: Callable[[StepLog], None] | None = None,
    on_eval: Callable[[int, float], None] | None = None,
    out_dir: str | Path | None = None,
    resume: bool = False,
) -> RunResult:
    """Train ``spec``'s model with hyperparameters ``hp``.

    With ``out_dir``: metrics.csv (row by row), checkpoint.pt every ``train.checkpoint_every``
    steps (atomic), result.yaml at the end. ``resume`` continues from out_dir's checkpoint: the
    model, optimizer, schedule and data-order state are restored, so on CPU the resumed losses
    equal an uninterrupted run's. Under torchrun each rank trains on its slice of the same global
    batch (DDP averages the gradients), so N processes match one with the same global batch.
    """
    world, device = init_distributed(spec.train.device)
    try:
        return _train(spec, hp, world, device, on_log, on_eval, out_dir, resume)
    finally:
        teardown(world)


def _resumable_state(spec: Spec, hp: HParams, out: Path | None, resume: bool, device: torch.device) -> Any:
    """The checkpoint to continue from (None for a fresh run), or the finished run's result."""
    ckpt_path = out / "checkpoint.pt" if out is not None else None
    if ckpt_path is None or not ckpt_path.exists():
        return None
    state = checkpoint.load(ckpt_path, device)
    if not resume:
        raise SpecError(
            str(out),
            f"already holds a run (checkpoint at step {state['step']} of {spec.train.steps}); "
            "pass --resume to continue it, or remove the folder to start over",
        )
    if state.get("signature") != resume_signature(spec, hp):
        raise SpecError(str(ckpt_path), "was written by a different spec or hyperparameters; cannot resume")
    if state["step"] >= spec.train.steps and (out / "result.yaml").exists():
        return RunResult(**read_result(out / "result.yaml"))
    return state


def _train(
    spec: Spec,
    hp: HParams,
    world: Distributed,
    device: torch.device,
    on_log: Callable[[StepLog], None] | None,
    on_eval: Callable[[int, float], None] | None,
    out_dir: str | Path | None,
    resume: bool,
) -> RunResult:
    t = spec.train
    if t.batch_size % world.world:
        raise SpecError("train.batch_size", f"{t.batch_size} is not divisible by the {world.world} processes")
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    out = Path(out_dir) if out_dir is not None else None
    state = _resumable_state(spec, hp, out, resume, device)
    if isinstance(state, RunResult):
        return state
    run = build(spec, hp, world, device)
    start, curve, seconds_before = 0, [], 0.0
    if state is not None:
        start, curve, seconds_before = checkpoint.restore(state, run.model, run.opt, run.sched, run.rng)
    run.fwd = parallelize(run.model, world, device)
    if t.compile:
        run.fwd = torch.compile(run.fwd)
    run.cost = flops.cost(spec, hp=hp)
    if out is not None and world.main:
        out.mkdir(parents=True, exist_ok=True)
    metrics = Metrics(out / "metrics.csv" if out is not None and world.main else None, keep_until=start)
    return _loop(run, start, curve, seconds_before, metrics, out, on_log, on_eval)


def _loop(
    run: Run,
    start: int,
    curve: list[dict],
    seconds_before: float,
    metrics: Metrics,
    out: Path | None,
    on_log: Callable[[StepLog], None] | None,
    on_eval: Callable[[int, float], None] | None,
) -> RunResult:
    """Step from ``start`` to ``train.steps``: log, evaluate, checkpoint; stop early on divergence."""
    spec, t, world, cost = run.spec, run.spec.train, run.world, run.cost
    every = t.checkpoint_every if t.checkpoint_every is not None else max(50, t.steps // 10)
    max_loss = t.max_loss if t.max_loss is not None else 10 * math.log(run.corpus.vocab_size)
    val_loss = curve[-1]["val_loss"] if curve else float("nan")
    reason, step, t0 = "", start, time.perf_counter()
    for step in range(start + 1, t.steps + 1):
        loss = train_step(run)
        elapsed = seconds_before + time.perf_counter() - t0
        if step % LOG_EVERY == 0 or step == t.steps or step == start + 1:
            optim.check_param_groups(run.opt)  # the schedule kept the µP per-group LR ratios
            train_loss = global_mean(loss, world)
            if not math.isfinite(train_loss) or train_loss > max_loss:
                reason = _diverged("train", train_loss, step, max_loss)
                break
            lr = run.opt.param_groups[0]["lr"] / run.opt.param_groups[0]["lr_mult"]
            metrics.row(
                step=step,
                train_loss=f"{train_loss:.6g}",
                lr=f"{lr:.6g}",
                tokens=step * cost.tokens_per_step,
                seconds=f"{elapsed:.3f}",
            )
            if on_log is not None and world.main:
                speed = (step - start) * cost.tokens_per_step / max(time.perf_counter() - t0, 1e-9)
                on_log(StepLog(step, t.steps, train_loss, lr, speed, elapsed))
        if step % t.eval_every == 0 or step == t.steps:
            val_loss = evaluate(run.model, run.corpus.val, spec, run.device)
            curve.append({"step": step, "val_loss": val_loss, "seconds": elapsed})
            metrics.row(
                step=step,
                val_loss=f"{val_loss:.6g}",
                tokens=step * cost.tokens_per_step,
                seconds=f"{elapsed:.3f}",
            )
            if not math.isfinite(val_loss) or val_loss > max_loss:
                reason = _diverged("validation", val_loss, step, max_loss)
                break
            if on_eval is not None:
                on_eval(step, val_loss)
        if every and step % every == 0 and step < t.steps:
            _checkpoint(run, out, step, curve, elapsed)
    return _finish(run, out, step, curve, seconds_before + time.perf_counter() - t0, val_loss, reason)


def _checkpoint(run: Run, out: Path | None, step: int, curve: list[dict], elapsed: float) -> None:
    if out is not None and run.world.main:
        checkpoint.save(
            out / "checkpoint.pt",
            run.model,
            run.opt,
            run.sched,
            run.rng,
            step,
            curve,
            elapsed,
            run.spec,
            run.hp,
        )


def _finish(
    run: Run, out: Path | None, step: int, curve: list[dict], seconds: float, val_loss: float, reason: str
) -> RunResult:
    """The run's result (written with a last checkpoint when it has a folder)."""
    t, cost = run.spec.train, run.cost
    diverged = bool(reason)
    result = RunResult(
        final_val_loss=float("nan") if diverged else val_loss,
        diverged=diverged,
        steps=step,
        tokens=step * cost.tokens_per_step,
        flops=step * cost.flops_per_step
        + len(curve) * t.eval_batches * cost.tokens_per_step * cost.flops_per_token / 3,
        seconds=seconds,
        params=cost.params,
        reason=reason,
        curve=curve,
    )
    if out is not None and run.world.main:
        _checkpoint(run, out, step, curve, seconds)
        checkpoint.write_result(out / "result.yaml", result.summary(), result.curve, run.hp)
    return result


def _diverged(which: str, loss: float, step: int, max_loss: float) -> str:
    above = f" (above train.max_loss={max_loss:.3g})" if math.isfinite(loss) else ""
    return f"{which} loss {loss:.4g} at step {step}{above}"

"""One training run: ``train(spec, hparams) -> RunResult``.

Warmup + cosine/linear/constant schedule applied *relatively* to every param group (so the µP
per-group LR ratios survive it), grad clipping, periodic validation, bf16 autocast on CUDA, and a
NaN/inf (or absurdly large) loss ending the run as *diverged* rather than as a crash. Search and transfer both call
this; neither knows how a step is taken, and this module knows nothing of Optuna: intermediate
losses go out through the ``on_eval`` callback (which may raise to stop the run, e.g. pruning).
"""

from __future__ import annotations

import csv
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import yaml

from . import data, flops, models, optim
from .config import HParams, Spec, SpecError, TrainSpec
from .device import autocast, resolve_device
from .files import atomic_write

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


class _Metrics:
    """metrics.csv, appended row by row so a killed run keeps what it logged. On resume, rows
    after the checkpoint's step are dropped (they are about to be recomputed)."""

    COLUMNS = ("step", "train_loss", "val_loss", "lr", "tokens", "seconds")

    def __init__(self, path: Path | None, keep_until: int = 0):
        self.path = path
        if path is None:
            return
        kept = []
        if keep_until and path.exists():
            with path.open(newline="") as f:
                kept = [r for r in csv.DictReader(f) if r.get("step") and int(r["step"]) <= keep_until]
        with path.open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(self.COLUMNS)
            w.writerows([[r.get(c, "") for c in self.COLUMNS] for r in kept])

    def row(self, **values: float | int | str) -> None:
        if self.path is not None:
            with self.path.open("a", newline="") as f:
                csv.writer(f).writerow([values.get(c, "") for c in self.COLUMNS])


@dataclass
class Distributed:
    """Where this process sits in a torchrun launch (rank 0 of 1 when not launched by torchrun)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    owns_group: bool = False  # we initialised the process group, so we tear it down

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device_name: str) -> tuple[Distributed, torch.device]:
    """Join the torchrun process group if WORLD_SIZE > 1: NCCL and one GPU per rank on CUDA, gloo on CPU."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    device = resolve_device(device_name)
    if world <= 1:
        return Distributed(), device
    import torch.distributed as dist

    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    owns = not dist.is_initialized()
    if owns:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Distributed(rank, world, local_rank, owns), device


# Spec keys that may differ between a checkpoint and the run resuming it.
RESUME_FREE_KEYS = ("device", "compile", "checkpoint_every")


def _resume_signature(spec: Spec, hp: HParams) -> dict:
    d = spec.to_dict()
    return {
        "model": d["model"],
        "data": d["data"],
        "train": {k: v for k, v in d["train"].items() if k not in RESUME_FREE_KEYS},
        "seed": d["seed"],
        "hparams": asdict(hp),
    }


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
        if world.owns_group:
            import torch.distributed as dist

            # rank 0 writes the checkpoint and result last: wait for it, so that no rank is left
            # alone in the teardown (gloo hangs there when its peers have already exited)
            dist.barrier()
            dist.destroy_process_group()


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
    t, m = spec.train, spec.model
    if t.batch_size % world.world:
        raise SpecError("train.batch_size", f"{t.batch_size} is not divisible by the {world.world} processes")
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    out = Path(out_dir) if out_dir is not None else None
    ckpt_path = out / "checkpoint.pt" if out is not None else None
    state = None
    if ckpt_path is not None and ckpt_path.exists():
        state = torch.load(ckpt_path, map_location=device, weights_only=False)
        if not resume:
            raise SpecError(
                str(out),
                f"already holds a run (checkpoint at step {state['step']} of {t.steps}); "
                "pass --resume to continue it, or remove the folder to start over",
            )
        if state.get("signature") != _resume_signature(spec, hp):
            raise SpecError(
                str(ckpt_path), "was written by a different spec or hyperparameters; cannot resume"
            )
        if state["step"] >= t.steps and (out / "result.yaml").exists():
            return read_result(out / "result.yaml")

    corpus = data.load(spec.data, min_len=m.seq_len + 1)
    model, infos = models.create(spec, hp, corpus.vocab_size, device)
    groups = optim.param_groups(model, infos, hp, m.parametrization, t.optimizer, eps=t.eps)
    opt = optim.make_optimizer(groups, hp, t.optimizer)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, t))
    rng = np.random.default_rng(spec.seed)
    start, curve, seconds_before = 0, [], 0.0
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        rng.bit_generator.state = state["data_rng"]
        start, curve, seconds_before = state["step"], state["curve"], state["seconds"]
    ddp = model
    if world.world > 1:
        ddp = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    fwd = torch.compile(ddp) if t.compile else ddp
    cost = flops.cost(spec, hp=hp)
    if out is not None and world.main:
        out.mkdir(parents=True, exist_ok=True)
    metrics = _Metrics(out / "metrics.csv" if out is not None and world.main else None, keep_until=start)
    every = t.checkpoint_every if t.checkpoint_every is not None else max(50, t.steps // 10)

    def checkpoint(step: int, elapsed: float) -> None:
        if ckpt_path is not None and world.main:
            save_checkpoint(ckpt_path, model, opt, sched, rng, step, curve, elapsed, spec, hp)

    max_loss = t.max_loss if t.max_loss is not None else 10 * math.log(corpus.vocab_size)
    val_loss = curve[-1]["val_loss"] if curve else float("nan")
    reason = ""
    step = start
    t0 = time.perf_counter()
    for step in range(start + 1, t.steps + 1):
        x, y = data.get_batch(
            corpus.train, t.batch_size, m.seq_len, rng, device, part=(world.rank, world.world)
        )
        with autocast(device, t.precision):
            _, loss = fwd(x, y)
        loss.backward()
        if t.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        sched.step()
        elapsed = seconds_before + time.perf_counter() - t0

        if step % LOG_EVERY == 0 or step == t.steps or step == start + 1:
            optim.check_param_groups(opt)  # the schedule kept the µP per-group LR ratios
            train_loss = _global_mean(loss, world)
            if not math.isfinite(train_loss) or train_loss > max_loss:
                reason = _diverged("train", train_loss, step, max_loss)
                break
            lr = opt.param_groups[0]["lr"] / opt.param_groups[0]["lr_mult"]
            tokens = step * cost.tokens_per_step
            metrics.row(
                step=step,
                train_loss=f"{train_loss:.6g}",
                lr=f"{lr:.6g}",
                tokens=tokens,
                seconds=f"{elapsed:.3f}",
            )
            if on_log is not None and world.main:
                speed = (step - start) * cost.tokens_per_step / max(time.perf_counter() - t0, 1e-9)
                on_log(StepLog(step, t.steps, train_loss, lr, speed, elapsed))
        if step % t.eval_every == 0 or step == t.steps:
            val_loss = evaluate(model, corpus.val, spec, device)
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
            checkpoint(step, elapsed)
    seconds = seconds_before + time.perf_counter() - t0
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
    if out is not None and world.main:
        checkpoint(step, seconds)
        write_result(out / "result.yaml", result, hp)
    return result


def _global_mean(loss: torch.Tensor, world: Distributed) -> float:
    """The loss over the global batch: averaged over ranks, so every rank sees (and acts on) the same value."""
    value = loss.detach().float()
    if world.world > 1:
        import torch.distributed as dist

        dist.all_reduce(value)
        value = value / world.world
    return value.item()


def _diverged(which: str, loss: float, step: int, max_loss: float) -> str:
    above = f" (above train.max_loss={max_loss:.3g})" if math.isfinite(loss) else ""
    return f"{which} loss {loss:.4g} at step {step}{above}"


def save_checkpoint(
    path: Path,
    model: torch.nn.Module,
    opt: torch.optim.Optimizer,
    sched,
    rng: np.random.Generator,
    step: int,
    curve: list[dict],
    seconds: float,
    spec: Spec,
    hp: HParams,
) -> None:
    """Everything needed to continue exactly: weights, optimizer and schedule state, data order."""
    state = {
        "step": step,
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),
        "scheduler": sched.state_dict(),
        "data_rng": rng.bit_generator.state,
        "curve": list(curve),
        "seconds": seconds,
        "signature": _resume_signature(spec, hp),
        "spec": spec.to_dict(),
        "hparams": asdict(hp),
    }
    atomic_write(path, lambda p: torch.save(state, p))


def write_result(path: Path, result: RunResult, hp: HParams) -> None:
    doc = {"hparams": asdict(hp), **result.summary(), "curve": result.curve}
    atomic_write(path, lambda p: p.write_text(yaml.safe_dump(doc, sort_keys=False)))


def read_result(path: Path) -> RunResult:
    doc = yaml.safe_load(path.read_text())
    doc.pop("hparams", None)
    return RunResult(**doc)

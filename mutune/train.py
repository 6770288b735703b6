"""One training run: ``train(spec, hparams) -> RunResult``.

Warmup + cosine/linear/constant schedule applied *relatively* to every param group (so the µP
per-group LR ratios survive it), grad clipping, periodic validation, bf16 autocast on CUDA, and a
NaN/inf (or absurdly large) loss ending the run as *diverged* rather than as a crash. Search and transfer both call
this; neither knows how a step is taken, and this module knows nothing of Optuna: intermediate
losses go out through the ``on_eval`` callback (which may raise to stop the run, e.g. pruning).
"""

from __future__ import annotations

import contextlib
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

from . import data, flops, models, parametrize
from .config import HParams, Spec, TrainSpec

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


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        from .config import SpecError

        raise SpecError("train.device", "cuda was asked for but torch sees no CUDA device")
    return torch.device(name)


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    use_bf16 = precision == "bf16" or (precision == "auto" and device.type == "cuda")
    if use_bf16:
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


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
    """metrics.csv, appended row by row so a killed run keeps what it logged."""

    COLUMNS = ("step", "train_loss", "val_loss", "lr", "tokens", "seconds")

    def __init__(self, path: Path | None):
        self.path = path
        if path is not None:
            with path.open("w", newline="") as f:
                csv.writer(f).writerow(self.COLUMNS)

    def row(self, **values: float | int | str) -> None:
        if self.path is not None:
            with self.path.open("a", newline="") as f:
                csv.writer(f).writerow([values.get(c, "") for c in self.COLUMNS])


def train(
    spec: Spec,
    hp: HParams,
    *,
    on_log: Callable[[StepLog], None] | None = None,
    on_eval: Callable[[int, float], None] | None = None,
    out_dir: str | Path | None = None,
) -> RunResult:
    """Train ``spec``'s model with hyperparameters ``hp``; write metrics/result/checkpoint to ``out_dir``."""
    t, m = spec.train, spec.model
    device = resolve_device(t.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    corpus = data.load(spec.data, min_len=m.seq_len + 1)
    model, infos = models.create(spec, hp, corpus.vocab_size, device)
    groups = parametrize.param_groups(
        model, infos, hp, m.parametrization, t.optimizer, m.base_width, eps=t.eps
    )
    opt = parametrize.make_optimizer(groups, hp, t.optimizer)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, t))
    fwd = torch.compile(model) if t.compile else model
    rng = np.random.default_rng(spec.seed)
    cost = flops.cost(spec, hp=hp)
    out = Path(out_dir) if out_dir is not None else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    metrics = _Metrics(out / "metrics.csv" if out else None)

    max_loss = t.max_loss if t.max_loss is not None else 10 * math.log(corpus.vocab_size)
    curve: list[dict] = []
    val_loss = float("nan")
    reason = ""
    step = 0
    t0 = time.perf_counter()
    for step in range(1, t.steps + 1):
        x, y = data.get_batch(corpus.train, t.batch_size, m.seq_len, rng, device)
        with autocast(device, t.precision):
            _, loss = fwd(x, y)
        loss.backward()
        if t.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        sched.step()

        if step % LOG_EVERY == 0 or step == t.steps or step == 1:
            parametrize.check_param_groups(opt)  # the schedule kept the µP per-group LR ratios
            train_loss = loss.item()
            elapsed = time.perf_counter() - t0
            if not math.isfinite(train_loss) or train_loss > max_loss:
                reason = f"train loss {train_loss:.4g} at step {step}" + (
                    f" (above train.max_loss={max_loss:.3g})" if math.isfinite(train_loss) else ""
                )
                break
            lr = opt.param_groups[0]["lr"] / opt.param_groups[0]["lr_mult"]
            metrics.row(
                step=step,
                train_loss=f"{train_loss:.6g}",
                lr=f"{lr:.6g}",
                tokens=step * cost.tokens_per_step,
                seconds=f"{elapsed:.3f}",
            )
            if on_log is not None:
                on_log(
                    StepLog(
                        step,
                        t.steps,
                        train_loss,
                        lr,
                        step * cost.tokens_per_step / max(elapsed, 1e-9),
                        elapsed,
                    )
                )
        if step % t.eval_every == 0 or step == t.steps:
            val_loss = evaluate(fwd, corpus.val, spec, device)
            elapsed = time.perf_counter() - t0
            curve.append({"step": step, "val_loss": val_loss, "seconds": elapsed})
            metrics.row(
                step=step,
                val_loss=f"{val_loss:.6g}",
                tokens=step * cost.tokens_per_step,
                seconds=f"{elapsed:.3f}",
            )
            if not math.isfinite(val_loss) or val_loss > max_loss:
                reason = f"validation loss {val_loss:.4g} at step {step}" + (
                    f" (above train.max_loss={max_loss:.3g})" if math.isfinite(val_loss) else ""
                )
                break
            if on_eval is not None:
                on_eval(step, val_loss)
    seconds = time.perf_counter() - t0
    diverged = bool(reason)
    done = step if not diverged else step
    evals = len(curve)
    result = RunResult(
        final_val_loss=float("nan") if diverged else val_loss,
        diverged=diverged,
        steps=done,
        tokens=done * cost.tokens_per_step,
        flops=done * cost.flops_per_step
        + evals * t.eval_batches * cost.tokens_per_step * cost.flops_per_token / 3,
        seconds=seconds,
        params=cost.params,
        reason=reason,
        curve=curve,
    )
    if out is not None:
        save_checkpoint(out / "checkpoint.pt", model, opt, sched, rng, step, spec, hp)
        write_result(out / "result.yaml", result, hp)
    return result


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Write to a temp file beside ``path`` and rename it over: a kill leaves the old file or the new one."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    write(tmp)
    os.replace(tmp, path)


def save_checkpoint(
    path: Path,
    model: torch.nn.Module,
    opt: torch.optim.Optimizer,
    sched,
    rng: np.random.Generator,
    step: int,
    spec: Spec,
    hp: HParams,
) -> None:
    state = {
        "step": step,
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),
        "scheduler": sched.state_dict(),
        "data_rng": rng.bit_generator.state,
        "spec": spec.to_dict(),
        "hparams": asdict(hp),
    }
    atomic_write(path, lambda p: torch.save(state, p))


def write_result(path: Path, result: RunResult, hp: HParams) -> None:
    doc = {"hparams": asdict(hp), **result.summary(), "curve": result.curve}
    atomic_write(path, lambda p: p.write_text(yaml.safe_dump(doc, sort_keys=False)))

"""The step loop: log, evaluate, checkpoint, stop early on divergence or a signal, and the result."""

from __future__ import annotations

import math
import signal
import time
from collections.abc import Callable
from pathlib import Path

import torch

from ..errors import SpecError
from ..mup import optim
from . import branches, checkpoint, signals, stable
from . import sharded as sharded_ckpt
from .checkpoint import Metrics
from .parallel import global_mean
from .run import LOG_EVERY, Run, RunResult, StepLog, evaluate, train_step


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
    t = run.spec.train
    every = t.checkpoint_every if t.checkpoint_every is not None else max(50, t.steps // 10)
    max_loss = t.max_loss if t.max_loss is not None else 10 * math.log(run.corpus.vocab_size)
    evals = [r for r in curve if "branch" not in r]
    val_loss = evals[-1]["val_loss"] if evals else float("nan")
    reason, step, t0 = "", start, time.perf_counter()
    starts = branches.starts(t, done={r["branch"] for r in curve if "branch" in r})
    with signals.deferred(out is not None) as poll:
        for step in range(start + 1, t.steps + 1):
            if step - 1 in starts:  # a shorter run's cooldown starts here: train it on the side
                row = branches.branch(run, starts[step - 1], max_loss)
                curve.append(row)
                metrics.row(step=step - 1, val_loss=f"{row['val_loss']:.6g}", branch=row["branch"])
            loss = train_step(run)
            elapsed = seconds_before + time.perf_counter() - t0
            if run.stable_dir is not None and step == stable.stable_end(run.spec):
                _save_stable(run, step, curve, elapsed)
            reason = _log_and_eval(
                run, step, start, t0, elapsed, loss, curve, metrics, max_loss, on_log, on_eval
            )
            if reason:
                break
            if every and step % every == 0 and step < t.steps:
                _checkpoint(run, out, step, curve, elapsed)
            if step < t.steps and _stop_requested(poll, run, step):
                if not (every and step % every == 0):
                    _checkpoint(run, out, step, curve, elapsed)
                raise signals.Interrupted(out, step, t.steps, poll() or signal.SIGTERM)
        evals = [r for r in curve if "branch" not in r]
        val_loss = evals[-1]["val_loss"] if evals else val_loss
        # (still deferred: a signal now does not cut the last checkpoint and result.yaml short)
        return _finish(run, out, step, curve, seconds_before + time.perf_counter() - t0, val_loss, reason)


def _stop_requested(poll: Callable[[], int | None], run: Run, step: int) -> bool:
    """A signal came. Under torchrun the ranks must stop at the same step (or one waits in a
    collective forever), so they agree on it every LOG_EVERY steps, where the loss is synchronised
    anyway: a pre-empted distributed job loses at most that many steps, a single process one."""
    if run.world.world == 1:
        return poll() is not None
    if step % LOG_EVERY:
        return False
    return global_mean(torch.tensor(float(poll() is not None), device=run.device), run.world) > 0


def _log_and_eval(
    run: Run,
    step: int,
    start: int,
    t0: float,
    elapsed: float,
    loss: torch.Tensor,
    curve: list[dict],
    metrics: Metrics,
    max_loss: float,
    on_log: Callable[[StepLog], None] | None,
    on_eval: Callable[[int, float], None] | None,
) -> str:
    """The step's log line and, when due, the evaluation; the divergence reason, or ''."""
    spec, t, world, cost = run.spec, run.spec.train, run.world, run.cost
    if step % LOG_EVERY == 0 or step == t.steps or step == start + 1:
        optim.check_param_groups(run.opt)  # the schedule kept the µP per-group LR ratios
        train_loss = global_mean(loss, world)
        if not math.isfinite(train_loss) or train_loss > max_loss:
            return _diverged("train", train_loss, step, max_loss)
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
            return _diverged("validation", val_loss, step, max_loss)
        if on_eval is not None:
            on_eval(step, val_loss)
    return ""


def _save_stable(run: Run, step: int, curve: list[dict], elapsed: float) -> None:
    """The state at the end of a WSD run's stable phase, for a longer run to continue from
    (:mod:`.stable`); one process writes it (every rank holds the same state under DDP)."""
    if run.spec.train.parallel == "fsdp" and run.world.world > 1:
        raise SpecError("search.fidelity", "a sharded (FSDP) run's stable state is not saved yet: use ddp")
    if run.world.main:
        run.stable_dir.mkdir(parents=True, exist_ok=True)
        checkpoint.save(
            stable.path(run.stable_dir, step),
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


def _checkpoint(run: Run, out: Path | None, step: int, curve: list[dict], elapsed: float) -> None:
    """Called on every rank: a sharded run's ranks each write their shards; otherwise rank 0 writes all."""
    if out is not None and run.spec.train.parallel == "fsdp":
        sharded_ckpt.save(out, run, step, curve, elapsed)
    elif out is not None and run.world.main:
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
    evals = [r for r in curve if "branch" not in r]
    side = branches.results(run.spec.train, curve, float("nan") if diverged else val_loss, step)
    extra = sum(b["steps_trained"] for b in side)  # the branches' own cooldown steps
    result = RunResult(
        final_val_loss=float("nan") if diverged else val_loss,
        diverged=diverged,
        steps=step,
        tokens=step * cost.tokens_per_step,
        flops=(step + extra) * cost.flops_per_step
        + (len(evals) + len(side)) * t.eval_batches * cost.tokens_per_step * cost.flops_per_token / 3,
        seconds=seconds,
        params=cost.params,
        reason=reason,
        curve=evals,
        branches=side,
        flops_before=run.flops_before,
    )
    _checkpoint(run, out, step, curve, seconds)
    if out is not None and run.world.main:
        checkpoint.write_result(out / "result.yaml", result.summary(), result.curve, run.hp)
    return result


def _diverged(which: str, loss: float, step: int, max_loss: float) -> str:
    above = f" (above train.max_loss={max_loss:.3g})" if math.isfinite(loss) else ""
    return f"{which} loss {loss:.4g} at step {step}{above}"

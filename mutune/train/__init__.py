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

import contextlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from .. import flops, memory
from ..config import HParams, Spec, SpecError
from ..device import threads_for, use_threads
from ..errors import arg
from . import checkpoint
from . import sharded as sharded_ckpt
from .checkpoint import FolderLock, Metrics, read_result, resume_signature
from .loop import _loop
from .parallel import Distributed, init_distributed, teardown
from .run import LOG_EVERY, Run, RunResult, StepLog, _parallelize, build, evaluate, lr_factor, train_step
from .stable import Stable, continued_state, reschedule

__all__ = [
    "LOG_EVERY",
    "Run",
    "RunResult",
    "StepLog",
    "build",
    "evaluate",
    "has_checkpoint",
    "lr_factor",
    "read_result",
    "Stable",
    "train",
    "train_step",
]


def train(
    spec: Spec,
    hp: HParams,
    *,
    on_log: Callable[[StepLog], None] | None = None,
    on_eval: Callable[[int, float], None] | None = None,
    out_dir: str | Path | None = None,
    resume: bool = False,
    stable: Stable | None = None,
) -> RunResult:
    """Train ``spec``'s model with hyperparameters ``hp``.

    ``stable`` (WSD runs, successive halving along training length): save the state at the end of
    the stable phase into ``stable.save_dir``, and/or start from ``stable.start_from``, the stable
    state a shorter WSD run of the same configuration saved (the same run up to there, bit for bit).

    With ``out_dir``: metrics.csv (row by row), checkpoint.pt every ``train.checkpoint_every``
    steps (atomic), result.yaml at the end. ``resume`` continues from out_dir's checkpoint: the
    model, optimizer, schedule and data-order state are restored, so on CPU the resumed losses
    equal an uninterrupted run's. Under torchrun each rank trains on its slice of the same global
    batch (DDP averages the gradients), so N processes match one with the same global batch.
    """
    # this process's share of the cores (the ranks torchrun started on this machine share them)
    use_threads(threads_for(spec.train.threads, int(os.environ.get("LOCAL_WORLD_SIZE", "1"))))
    world, device = init_distributed(spec.train.device)
    try:
        # one writer per folder (rank 0 writes for every rank)
        lock = FolderLock(Path(out_dir)) if out_dir is not None and world.main else contextlib.nullcontext()
        with lock:
            return _train(spec, hp, world, device, on_log, on_eval, out_dir, resume, stable)
    finally:
        teardown(world)


def has_checkpoint(out: Path) -> bool:
    """Whether ``out`` holds a run's checkpoint (a file, or a sharded run's directory)."""
    return (out / "checkpoint.pt").exists() or sharded_ckpt.latest(out) is not None


def _resumable_state(spec: Spec, hp: HParams, out: Path | None, resume: bool, device: torch.device) -> Any:
    """The checkpoint to continue from (None for a fresh run), or the finished run's result.

    A sharded run's checkpoint is a directory (:mod:`.sharded`), any other a file; a folder holding
    the other kind is refused by the signature, which names the strategy.
    """
    if out is None:
        return None
    ckpt_path = out / "checkpoint.pt"
    shards = sharded_ckpt.latest(out)
    if ckpt_path.exists() and (shards is None or spec.train.parallel != "fsdp"):
        state = checkpoint.load(ckpt_path, device)
    elif shards is not None:
        ckpt_path, state = shards, sharded_ckpt.load_state(shards)
    else:
        return None
    if not resume:
        raise SpecError(
            str(out),
            f"already holds a run (checkpoint at step {state['step']} of {spec.train.steps}); "
            f"pass {arg('resume', True)} to continue it, or remove the folder to start over",
        )
    changed = _changed(state.get("signature") or {}, resume_signature(spec, hp))
    if changed:
        raise SpecError(
            str(ckpt_path),
            f"was written by a different spec or hyperparameters ({', '.join(changed)}); cannot resume",
        )
    if state["step"] >= spec.train.steps and (out / "result.yaml").exists():
        return RunResult(**read_result(out / "result.yaml"))
    return state


def _changed(saved: dict, mine: dict, prefix: str = "") -> list[str]:
    """The dotted keys whose values differ between two resume signatures, as ``key: old -> new``.
    (A checkpoint from before ``train.parallel`` existed was written by DDP or one process.)"""
    if prefix == "train":
        saved = {"parallel": "ddp", **saved}
    out = []
    for key in sorted(set(saved) | set(mine)):
        a, b, here = saved.get(key), mine.get(key), f"{prefix}.{key}" if prefix else key
        if isinstance(a, dict) and isinstance(b, dict):
            out += _changed(a, b, here)
        elif a != b:
            out.append(f"{here}: {a!r} -> {b!r}")
    return out


def _train(
    spec: Spec,
    hp: HParams,
    world: Distributed,
    device: torch.device,
    on_log: Callable[[StepLog], None] | None,
    on_eval: Callable[[int, float], None] | None,
    out_dir: str | Path | None,
    resume: bool,
    stable: Stable | None = None,
) -> RunResult:
    t = spec.train
    if t.batch_size % world.world:
        raise SpecError("train.batch_size", f"{t.batch_size} is not divisible by the {world.world} processes")
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    out = Path(out_dir) if out_dir is not None else None
    cost = flops.cost(spec, hp=hp)
    if t.memory_check:  # before anything is allocated (the checkpoint included); this process's share
        need = flops.per_gpu(cost.memory, world.world, t.parallel).total
        memory.check(need, device, what=f"a width-{spec.model.width} run")
    state = _resumable_state(spec, hp, out, resume, device)
    if isinstance(state, RunResult):
        return state
    run = build(spec, hp, world, device)
    start, curve, seconds_before = 0, [], 0.0
    if state is None and stable is not None and stable.start_from is not None:
        state = continued_state(spec, hp, stable.start_from, device)
        run.flops_before = (
            state["step"] * cost.flops_per_step
            + sum(1 for r in state["curve"] if "branch" not in r)
            * t.eval_batches
            * cost.tokens_per_step
            * cost.flops_per_token
            / 3
        )
    if state is not None:
        restore = sharded_ckpt.restore if "dir" in state else checkpoint.restore
        start, curve, seconds_before = restore(state, run.model, run.opt, run.sched, run.rng)
        if run.flops_before:  # continued from a shorter run's stable state: this run's LRs from there on
            reschedule(run.opt, run.sched, lambda s: lr_factor(s, t))
    run.stable_dir = stable.save_dir if stable is not None else None
    if run.fwd is None:
        run.fwd = _parallelize(run.model, spec, world, device)
    if t.compile:
        run.fwd = torch.compile(run.fwd)
    run.cost = cost
    if out is not None and world.main:
        out.mkdir(parents=True, exist_ok=True)
    metrics = Metrics(out / "metrics.csv" if out is not None and world.main else None, keep_until=start)
    return _loop(run, start, curve, seconds_before, metrics, out, on_log, on_eval)

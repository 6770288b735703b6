"""Cooldown branches of a WSD run: one run gives the loss of a run of each shorter length.

A warmup-stable-decay run of T steps is, up to the start of its cooldown, the same run as every
WSD run of B < T steps (the same warmup, LR 1 in the stable phase, the same batches), and a run of B
steps differs only in its last cooldown(B) steps. So at step B − cooldown(B) of the long run, the
state is saved, the B-step run's cooldown is trained on the side and evaluated, and the state is put
back: the long run goes on as if nothing happened, and the branch's loss *is* the B-step run's, bit
for bit on the CPU (tests/test_branches.py). A branch costs its cooldown's steps, not B.

The branches' results live in the run's curve (rows with a ``branch`` key), so a checkpoint carries
them and a resumed run does not train a branch twice; a kill during a branch loses only that branch,
which the resumed run trains again from the last checkpoint.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from typing import Any

import torch

from ..config.validate import branch_steps, cooldown
from ..errors import SpecError
from .run import Run, evaluate, lr_factor, train_step


def starts(t: Any, done: set[int]) -> dict[int, tuple[float, int]]:
    """{the long run's step count at which a branch's cooldown starts: (fraction, horizon)} for the
    branches shorter than the run that are not in ``done`` (horizons)."""
    out = {}
    for f, b in zip(t.branches, branch_steps(t), strict=True):
        if b < t.steps and b not in done:
            out[b - cooldown(b, t.decay_fraction)] = (f, b)
    return out


def branch(run: Run, at: tuple[float, int], max_loss: float) -> dict:
    """Train the ``horizon``-step run's cooldown from the current (stable) state, evaluate it, and
    put the state back; the branch's curve row."""
    fraction, horizon = at
    if run.spec.train.parallel == "fsdp" and run.world.world > 1:
        raise SpecError(
            "train.branches", "cooldown branches of a sharded (FSDP) run are not supported yet: use ddp"
        )
    t0 = time.perf_counter()
    t_b = dataclasses.replace(run.spec.train, steps=horizon)
    begin = horizon - cooldown(horizon, t_b.decay_fraction)
    saved = (
        copy.deepcopy(run.model.state_dict()),
        copy.deepcopy(run.opt.state_dict()),
        run.rng.bit_generator.state,
        run.sched,
    )
    # the B-step run's schedule from its cooldown's first step (the same base LRs: LambdaLR's initial_lr)
    run.sched = torch.optim.lr_scheduler.LambdaLR(run.opt, lambda s: lr_factor(s, t_b), last_epoch=begin - 1)
    val_loss, reason = float("nan"), ""
    try:
        for step in range(begin + 1, horizon + 1):
            loss = train_step(run)
            if step == horizon or step % 10 == 0:
                value = loss.item()
                if not math.isfinite(value) or value > max_loss:
                    reason = f"train loss {value:.4g} at step {step}"
                    break
        if not reason:
            val_loss = evaluate(run.model, run.corpus.val, run.spec, run.device)
    finally:
        model_state, opt_state, rng_state, run.sched = saved
        run.model.load_state_dict(model_state)
        run.opt.load_state_dict(opt_state)
        run.rng.bit_generator.state = rng_state
    row = {"branch": horizon, "fraction": fraction, "val_loss": val_loss, "steps_trained": horizon - begin}
    row["seconds"] = time.perf_counter() - t0
    if reason:
        row["diverged"] = reason
    return row


def results(t: Any, curve: list[dict], final_val_loss: float, steps: int) -> list[dict]:
    """Every branch's result, the run's own end (fraction 1, when asked for) included, by horizon."""
    side = [
        {k: r[k] for k in ("fraction", "val_loss", "steps_trained") if k in r} | {"steps": r["branch"]}
        for r in curve
        if "branch" in r
    ]
    if t.branches and t.branches[-1] == 1.0 and steps == t.steps:
        side.append({"fraction": 1.0, "val_loss": final_val_loss, "steps_trained": 0, "steps": t.steps})
    return sorted(side, key=lambda r: r["steps"])

"""A WSD run's stable state, saved and continued: successive halving along training length.

Up to the start of its cooldown, a warmup-stable-decay run of S steps is the same run as a WSD run of
any S' > S steps (the same warmup, LR 1, the same batches). So a configuration promoted from a rung of
S steps to one of S' steps continues from the state the S-step run saved at the end of its stable
phase, and trains only what the S'-step run adds: no step is trained twice but the shorter run's
cooldown. The continued run equals a fresh S'-step run bit for bit on the CPU (tests/test_fidelity.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..config import HParams, Spec, SpecError
from ..config.validate import cooldown
from . import checkpoint

# the keys a continued run may change: its length (and the branches it records)
CONTINUABLE = ("steps", "branches")


@dataclass(frozen=True)
class Stable:
    save_dir: Path | None = None  # save the state at the end of the stable phase here
    start_from: Path | None = None  # continue from this stable state


def stable_end(spec: Spec) -> int:
    """The step at which a WSD run's cooldown begins (its stable state's step)."""
    t = spec.train
    return t.steps - cooldown(t.steps, t.decay_fraction)


def path(save_dir: Path, step: int) -> Path:
    return save_dir / f"stable-{step}.pt"


def latest(save_dir: Path, before: int) -> Path | None:
    """The saved stable state with the most steps, at most ``before``; None if there is none."""
    found = []
    for p in save_dir.glob("stable-*.pt"):
        try:
            step = int(p.stem.removeprefix("stable-"))
        except ValueError:
            continue
        if step <= before:
            found.append((step, p))
    return max(found)[1] if found else None


def continued_state(spec: Spec, hp: HParams, from_path: Path, device: torch.device) -> dict[str, Any]:
    """A stable state to continue ``spec``'s run from: the same run in everything but its length, and
    still in the stable phase of this one."""
    if spec.train.schedule != "wsd":
        raise SpecError("train.schedule", "only a WSD run continues from a stable state")
    state = checkpoint.load(from_path, device)

    def strip(sig: dict) -> dict:
        return {**sig, "train": {k: v for k, v in sig.get("train", {}).items() if k not in CONTINUABLE}}

    if strip(state.get("signature") or {}) != strip(checkpoint.resume_signature(spec, hp)):
        raise SpecError(str(from_path), "was saved by another configuration; it cannot be continued here")
    if state["step"] > stable_end(spec):
        raise SpecError(str(from_path), f"holds step {state['step']}, past this run's stable phase")
    return state


def reschedule(opt: Any, sched: Any, factor: Any) -> None:
    """After a stable state is loaded: the LRs of this run's schedule at that step. (The shorter run
    saved its LRs for its own next step, the first of its cooldown; this run is still stable there.)"""
    lrs = [base * factor(sched.last_epoch) for base in sched.base_lrs]
    for group, lr in zip(opt.param_groups, lrs, strict=True):
        group["lr"] = lr
    sched._last_lr = lrs

"""What a run leaves on disk so it can be continued exactly: checkpoint, metrics.csv, result.yaml.

The checkpoint holds weights, optimizer and schedule state and the data-order state, so a resumed
run on the CPU reproduces an uninterrupted one bit for bit; it is written atomically (a kill leaves
the previous one). Its *signature* (the spec and hyperparameters that decide the numbers) must match
the resuming run's.
"""

from __future__ import annotations

import csv
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from ..config import HParams, Spec
from ..files import atomic_write

# Spec keys that may differ between a checkpoint and the run resuming it.
RESUME_FREE_KEYS = ("device", "compile", "checkpoint_every", "activation_checkpointing")


def resume_signature(spec: Spec, hp: HParams) -> dict:
    d = spec.to_dict()
    return {
        "model": d["model"],
        "data": d["data"],
        "train": {k: v for k, v in d["train"].items() if k not in RESUME_FREE_KEYS},
        "seed": d["seed"],
        "hparams": asdict(hp),
    }


def load(path: Path, device: torch.device) -> dict[str, Any]:
    return torch.load(path, map_location=device, weights_only=False)


def save(
    path: Path,
    model: torch.nn.Module,
    opt: torch.optim.Optimizer,
    sched: Any,
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
        "signature": resume_signature(spec, hp),
        "spec": spec.to_dict(),
        "hparams": asdict(hp),
    }
    atomic_write(path, lambda p: torch.save(state, p))


def restore(
    state: dict[str, Any], model: torch.nn.Module, opt: Any, sched: Any, rng: np.random.Generator
) -> tuple[int, list[dict], float]:
    """Load a checkpoint's state into the run's objects; (step, curve, seconds so far)."""
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    sched.load_state_dict(state["scheduler"])
    rng.bit_generator.state = state["data_rng"]
    return state["step"], state["curve"], state["seconds"]


class Metrics:
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


def write_result(path: Path, summary: dict, curve: list[dict], hp: HParams) -> None:
    doc = {"hparams": asdict(hp), **summary, "curve": curve}
    atomic_write(path, lambda p: p.write_text(yaml.safe_dump(doc, sort_keys=False)))


def read_result(path: Path) -> dict:
    doc = yaml.safe_load(path.read_text())
    doc.pop("hparams", None)
    return doc

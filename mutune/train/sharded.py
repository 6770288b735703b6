"""Checkpoints of a sharded run (``train.parallel: fsdp``): every rank writes its own shards.

A run that does not fit one device cannot gather its weights on one rank to save them, so each rank
writes its shards with ``torch.distributed.checkpoint`` (DCP), keyed by parameter name, into
``<out>/checkpoints/step-<N>/``; rank 0 adds ``state.pt``: the step, schedule, data order, curve and
resume signature (what :mod:`.checkpoint` keeps beside the weights). The commit is atomic: all ranks
write into ``.tmp-step-<N>/``, then rank 0 renames it, so a kill mid-save leaves the previous step,
and a step directory with ``state.pt`` is complete. Older steps are removed after the commit. DCP
reshards on load, so a run may resume on another number of processes. DDP and one-process runs keep
their single ``checkpoint.pt`` (:mod:`.checkpoint`); only this strategy writes this format.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import warnings
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from ..files import atomic_write
from .checkpoint import resume_signature

DIRNAME = "checkpoints"
STEP = re.compile(r"^step-(\d+)$")


def latest(out: Path) -> Path | None:
    """The newest committed checkpoint directory under ``out``, or None."""
    root = out / DIRNAME
    if not root.is_dir():
        return None
    steps = [
        (int(m.group(1)), p)
        for p in root.iterdir()
        if (m := STEP.match(p.name)) and (p / "state.pt").is_file()
    ]
    return max(steps)[1] if steps else None


def load_state(ckpt: Path) -> dict[str, Any]:
    """The non-tensor state (step, signature, schedule...) of a checkpoint directory; every rank reads it."""
    return {**torch.load(ckpt / "state.pt", weights_only=False), "dir": ckpt}


def _optimizers(opt: Any) -> list[torch.optim.Optimizer]:
    """The torch optimizers to checkpoint: mutune's combined Muon + AdamW is two."""
    return list(opt.optimizers.values()) if hasattr(opt, "optimizers") else [opt]


def _tensors(model: torch.nn.Module, opt: Any) -> dict[str, Any]:
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_optimizer_state_dict

    return {"model": get_model_state_dict(model), "optim": get_optimizer_state_dict(model, _optimizers(opt))}


def _distributed() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


@contextlib.contextmanager
def _quiet_single_process() -> Iterator[None]:
    """DCP warns that it assumes one process when there is no process group: that is what is meant."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message="torch.distributed is disabled, unavailable or uninitialized"
        )
        yield


def _barrier() -> None:
    if _distributed():
        import torch.distributed as dist

        dist.barrier()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save(out: Path, run: Any, step: int, curve: list[dict], seconds: float) -> Path:
    """Write step ``step`` of ``run`` (a :class:`mutune.train.Run`); called on every rank."""
    import torch.distributed.checkpoint as dcp

    root, main = out / DIRNAME, run.world.main
    tmp, final = root / f".tmp-step-{step}", root / f"step-{step}"
    if main:
        shutil.rmtree(tmp, ignore_errors=True)
        root.mkdir(parents=True, exist_ok=True)
    _barrier()
    with _quiet_single_process():  # returns on every rank once .metadata is written
        dcp.save(_tensors(run.model, run.opt), checkpoint_id=str(tmp), no_dist=not _distributed())
    if main:
        state = {
            "step": step,
            "scheduler": run.sched.state_dict(),
            "data_rng": run.rng.bit_generator.state,
            "curve": list(curve),
            "seconds": seconds,
            "signature": resume_signature(run.spec, run.hp),
            "spec": run.spec.to_dict(),
            "hparams": asdict(run.hp),
        }
        atomic_write(tmp / "state.pt", lambda p: torch.save(state, p))
        if final.exists():  # the same step saved again (a finished run's last step): replace it
            shutil.rmtree(final)
        os.replace(tmp, final)
        _fsync_dir(root)
        for old in root.iterdir():
            if old != final and (STEP.match(old.name) or old.name.startswith(".tmp-step-")):
                shutil.rmtree(old, ignore_errors=True)
    _barrier()
    return final


def restore(
    state: dict[str, Any], model: torch.nn.Module, opt: Any, sched: Any, rng: Any
) -> tuple[int, list, float]:
    """Load a checkpoint directory's shards and state into the run's objects; (step, curve, seconds)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import set_model_state_dict, set_optimizer_state_dict

    tensors = _tensors(model, opt)  # the structure to fill, sharded as this run is
    with _quiet_single_process():
        dcp.load(tensors, checkpoint_id=str(state["dir"]), no_dist=not _distributed())
    set_model_state_dict(model, tensors["model"])
    set_optimizer_state_dict(model, _optimizers(opt), tensors["optim"])
    if hasattr(opt, "share_groups"):
        opt.share_groups()
    sched.load_state_dict(state["scheduler"])
    rng.bit_generator.state = state["data_rng"]
    return state["step"], state["curve"], state["seconds"]

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
import importlib
import io
import os
import pickle
import re
import shutil
import warnings
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from ..errors import SpecError
from ..files import atomic_write
from .checkpoint import read, resume_signature

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
    """The non-tensor state (step, signature, schedule...) of a checkpoint directory; every rank reads it
    (with ``weights_only``, so a crafted file runs nothing; a damaged one is named, never a restart)."""
    state = read(ckpt / "state.pt")
    if not isinstance(state, dict) or not {"step", "signature", "scheduler", "data_rng"} <= set(state):
        raise SpecError(
            str(ckpt / "state.pt"), "is not a mutune checkpoint; move its folder away to start over"
        )
    return {**state, "dir": ckpt, "metadata": check_folder(ckpt)}  # (its shards checked before DCP reads)


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


# What DCP's ``.metadata`` pickle may name: its own metadata classes, tensor sizes, dtypes and
# layouts, paths. DCP unpickles it (and the non-tensor items of the shards) with nothing restricted,
# so a crafted checkpoint folder could run code when a target resumes; mutune reads both its own way.
_SAFE_GLOBALS = {
    ("torch", "Size"),
    ("torch.serialization", "_get_layout"),
    ("collections", "OrderedDict"),
    ("pathlib", "PosixPath"),
    ("pathlib", "PurePosixPath"),
    ("pathlib", "WindowsPath"),
    ("pathlib", "PureWindowsPath"),
}


class _MetadataUnpickler(pickle.Unpickler):
    """Unpickles DCP's ``.metadata`` from an allow-list (:data:`_SAFE_GLOBALS`, dtypes, and the
    classes of ``torch.distributed.checkpoint``); anything else is refused before it is called."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _SAFE_GLOBALS:
            return getattr(importlib.import_module(module), name)
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        if module.startswith("torch.distributed.checkpoint."):
            obj = getattr(importlib.import_module(module), name, None)
            if isinstance(obj, type):  # its metadata dataclasses and enums; no function
                return obj
        raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a checkpoint's metadata")


def check_folder(ckpt: Path) -> Any:
    """A checkpoint folder read the safe way before DCP touches it: its ``.metadata`` through
    :class:`_MetadataUnpickler`, and every non-tensor item of its shards with ``weights_only`` (DCP
    unpickles both with nothing restricted). Returns the metadata; a refusal names the file."""
    from torch.distributed.checkpoint.metadata import BytesStorageMetadata, Metadata

    path = Path(ckpt) / ".metadata"
    try:
        with open(path, "rb") as f:
            metadata = _MetadataUnpickler(f).load()
    except (OSError, EOFError, pickle.UnpicklingError, AttributeError, ValueError, TypeError) as e:
        raise SpecError(
            str(path),
            f"is not a checkpoint's metadata mutune can read ({e}); it is not loaded. Move the folder away "
            "to start this target over",
        ) from None
    if not isinstance(metadata, Metadata) or not isinstance(metadata.storage_data, dict):
        raise SpecError(str(path), "is not a checkpoint's metadata; move the folder away to start over")
    items = {k for k, v in metadata.state_dict_metadata.items() if isinstance(v, BytesStorageMetadata)}
    for index, info in metadata.storage_data.items():
        if index.fqn not in items:
            continue
        shard = Path(ckpt) / info.relative_path
        try:
            with open(shard, "rb") as f:
                f.seek(info.offset)
                torch.load(io.BytesIO(f.read(info.length)), weights_only=True)
        except Exception as e:
            raise SpecError(
                str(shard),
                f"its item {index.fqn} is not what a checkpoint holds ({_first_line(e)}); it is not loaded. "
                "Move the folder away to start this target over",
            ) from None
    return metadata


def _first_line(e: BaseException) -> str:
    return (str(e).splitlines() or [type(e).__name__])[0][:160]


def _reader(ckpt: Path, metadata: Any) -> Any:
    """DCP's file reader, handed the metadata :func:`check_folder` read (it never unpickles it)."""
    from torch.distributed.checkpoint import FileSystemReader
    from torch.distributed.checkpoint.metadata import StorageMeta

    class Reader(FileSystemReader):
        def read_metadata(self, *args: Any, **kwargs: Any) -> Any:
            if getattr(metadata, "storage_meta", None) is None:
                metadata.storage_meta = StorageMeta()
            metadata.storage_meta.load_id = self.load_id
            return metadata

    return Reader(str(ckpt))


def _planner() -> Any:
    """DCP's load planner, its non-tensor items read with ``weights_only`` (DCP's own does not; they
    were checked by :func:`check_folder` already, this keeps the read itself restricted too)."""
    from torch.distributed.checkpoint import DefaultLoadPlanner

    class Planner(DefaultLoadPlanner):
        def load_bytes(self, read_item: Any, value: io.BytesIO) -> None:
            data = value.read()
            torch.load(io.BytesIO(data), weights_only=True)
            super().load_bytes(read_item, io.BytesIO(data))

    return Planner()


def restore(
    state: dict[str, Any], model: torch.nn.Module, opt: Any, sched: Any, rng: Any
) -> tuple[int, list, float]:
    """Load a checkpoint directory's shards and state into the run's objects; (step, curve, seconds)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import set_model_state_dict, set_optimizer_state_dict

    metadata = state.get("metadata") or check_folder(state["dir"])  # checked before DCP reads any of it
    tensors = _tensors(model, opt)  # the structure to fill, sharded as this run is
    with _quiet_single_process():
        dcp.load(
            tensors,
            storage_reader=_reader(state["dir"], metadata),
            planner=_planner(),
            no_dist=not _distributed(),
        )
    set_model_state_dict(model, tensors["model"])
    set_optimizer_state_dict(model, _optimizers(opt), tensors["optim"])
    if hasattr(opt, "share_groups"):
        opt.share_groups()
    sched.load_state_dict(state["scheduler"])
    rng.bit_generator.state = state["data_rng"]
    return state["step"], state["curve"], state["seconds"]

"""Where a run computes: device auto-detection, the precision it trains in, and its CPU threads."""

from __future__ import annotations

import contextlib
import math
import os
from pathlib import Path

import torch

from .errors import SpecError


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA, then MPS, then the CPU; an explicit ``cuda`` that is not there is a user error."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise SpecError("train.device", "cuda was asked for but torch sees no CUDA device")
    return torch.device(name)


def uses_bf16(device: torch.device, precision: str) -> bool:
    """bf16 on CUDA with ``precision: auto``, anywhere with ``bf16``; fp32 otherwise."""
    return precision == "bf16" or (precision == "auto" and device.type == "cuda")


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA with ``precision: auto`` (or anywhere with ``bf16``); fp32 otherwise."""
    if uses_bf16(device, precision):
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


# ---------------------------------------------------------------------------------------------
# CPU threads


def usable_cores() -> int:
    """The CPU cores this process may run on: its affinity mask (taskset, a batch scheduler's
    cpuset), capped by a container's CPU quota (cgroup v2 ``cpu.max``, v1 ``cpu.cfs_quota_us``),
    which ``os.cpu_count()`` ignores."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    quota = _cgroup_quota()
    return max(1, min(cores, quota) if quota is not None else cores)


def _cgroup_quota() -> int | None:
    """The container's CPU quota in whole cores (rounded up), or None without one."""
    for path, parse in (
        ("/sys/fs/cgroup/cpu.max", lambda t: t.split()),
        ("/sys/fs/cgroup/cpu/cpu.cfs_quota_us", None),
    ):
        try:
            text = Path(path).read_text().strip()
            if parse is not None:
                quota, period = parse(text)
            else:
                quota = text
                period = Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read_text().strip()
            if quota in ("max", "-1"):
                return None
            return max(1, math.ceil(int(quota) / int(period)))
        except (OSError, ValueError):
            continue
    return None


def threads_for(setting: int | None, processes: int = 1) -> int:
    """The torch threads one training process uses: ``train.threads`` when set; else
    ``$OMP_NUM_THREADS`` when set (the usual way to say it to every OpenMP program, which torch
    reads too); else the usable cores shared evenly by the ``processes`` that train at once
    (search or sweep workers, a target's ranks on this machine), at least one each. Sharing them
    matters: on a machine with other work, each process taking every core made a trial up to 3x
    slower (bench/RESULTS.md)."""
    if setting is not None:
        return setting
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    if env.isdigit() and int(env) > 0:
        return int(env)
    return max(1, usable_cores() // max(1, processes))


def use_threads(n: int) -> None:
    """Set this process's torch threads. The count changes the order of CPU float sums (and so the
    last bits of every loss), which is why a run records it (config.yaml's ``train.threads``)."""
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)

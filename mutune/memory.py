"""Will the run fit? The plan's memory estimate against what the device has free, before allocating.

Without this, ``transfer --to width=1000000`` prints a plan of hundreds of TiB and then dies in the
allocator (or swaps the machine to a halt). The estimate is :attr:`mutune.flops.Cost.memory_bytes`
(weights, gradients, optimizer state, activations, logits: the same figure the plan prints); what
is free comes from the device: CUDA's ``mem_get_info``, the MPS recommended limit, or on the CPU
the kernel's ``MemAvailable`` (and a cgroup's limit, inside a container). ``MUTUNE_MEMORY_LIMIT``
(bytes, or ``8GiB``, ``512MiB``) caps it, for a machine shared with others.

``train.memory_check: false`` (or ``mutune transfer --force``) skips the check: the estimate is an
estimate, and a run just above it may still fit.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch

from .device import resolve_device
from .errors import SpecError
from .flops import human_bytes

FALLBACK_GIB = 80.0  # an 80 GB A100/H100, the usual training GPU, for a device this machine lacks
UNITS = {"": 1, "b": 1, "kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "tib": 1 << 40}
UNITS.update({"kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30})


def parse_bytes(text: str) -> float:
    """``8GiB`` / ``512MiB`` / ``1e9`` -> bytes; a user error names ``MUTUNE_MEMORY_LIMIT``."""
    m = re.fullmatch(r"\s*([0-9.eE+]+)\s*([A-Za-z]*)\s*", text)
    if not m or m.group(2).lower() not in UNITS:
        raise SpecError("MUTUNE_MEMORY_LIMIT", f"expected bytes such as 8GiB or 512MiB, got {text!r}")
    try:
        return float(m.group(1)) * UNITS[m.group(2).lower()]
    except ValueError:
        raise SpecError("MUTUNE_MEMORY_LIMIT", f"expected bytes such as 8GiB, got {text!r}") from None


def _cpu_available() -> float | None:
    free = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                free = float(line.split()[1]) * 1024
    except OSError:
        pass
    if free is None and hasattr(os, "sysconf"):
        try:
            free = float(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
        except (ValueError, OSError):
            free = None
    try:  # a container's cgroup v2 limit, when there is one
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        used = float(Path("/sys/fs/cgroup/memory.current").read_text())
        if limit != "max":
            free = min(free if free is not None else float("inf"), float(limit) - used)
    except (OSError, ValueError):
        pass
    return free


def available(device: torch.device | str) -> tuple[float, str] | None:
    """(bytes free, a description naming the device's memory) or None when it cannot be known."""
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:  # this rank's GPU under torchrun
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    free, desc = None, ""
    if device.type == "cuda":
        free_b, total = torch.cuda.mem_get_info(device)
        free = float(free_b)
        desc = f"{torch.cuda.get_device_name(device)} ({device}) has {human_bytes(free)} free of {human_bytes(total)}"
    elif device.type == "mps":
        free = float(torch.mps.recommended_max_memory() - torch.mps.driver_allocated_memory())
        desc = f"mps has {human_bytes(free)} free"
    elif device.type == "cpu":
        free = _cpu_available()
        desc = f"this machine has {human_bytes(free)} of memory available" if free is not None else ""
    limit = os.environ.get("MUTUNE_MEMORY_LIMIT")
    if limit:
        cap = parse_bytes(limit)
        if free is None or cap < free:
            free, desc = cap, f"MUTUNE_MEMORY_LIMIT allows {human_bytes(cap)} on {device.type}"
    return None if free is None else (free, desc)


def budget(device_name: str, processes: int = 1) -> tuple[float, str]:
    """What a plan compares its memory estimate with when no ``--gpu-memory`` is given: the memory the
    run's device has free here, in GiB per process (a GPU each; on the CPU the ``processes`` share the
    machine's), and a description naming it. A device this machine does not have (a CUDA spec planned
    on a laptop) falls back to an 80 GiB GPU, and says so."""
    try:
        device = resolve_device(device_name)
        have = available(device)
    except SpecError:
        have, device = None, None
    if have is None:
        what = f"no {device_name} here" if device is None else f"{device.type}'s memory is unknown here"
        return (
            FALLBACK_GIB,
            f"an {FALLBACK_GIB:g} GiB GPU (assumed: {what}; --gpu-memory GIB to plan for another)",
        )
    share = processes if device.type in ("cpu", "mps") else 1
    gib = have[0] / share / (1 << 30)
    shared = f", shared by {share} processes" if share > 1 else ""
    return gib, f"{have[1]}{shared}"


def check(need_bytes: float, device: torch.device | str, *, what: str = "the run", force: str = "") -> None:
    """Refuse (a :class:`SpecError` naming ``train.memory_check``) when ``need_bytes`` exceeds what
    ``device`` has free. ``force`` names how to skip the check, for the message."""
    have = available(device)
    if have is None or need_bytes <= have[0]:
        return
    skip = force or "train.memory_check=false"
    raise SpecError(
        "train.memory_check",
        f"{what} needs about {human_bytes(need_bytes)} (the plan's estimate) but {have[1]}; make the model or "
        f"batch smaller (model.width, train.batch_size), or pass {skip} to try anyway",
    )

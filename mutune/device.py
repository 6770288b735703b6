"""Where a run computes: device auto-detection and the precision it trains in."""

from __future__ import annotations

import contextlib

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
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise SpecError(
            "train.device",
            "mps was asked for but torch sees no MPS device (Apple silicon only); use auto or cpu",
        )
    return torch.device(name)


def uses_bf16(device: torch.device, precision: str) -> bool:
    """bf16 on CUDA with ``precision: auto``, anywhere with ``bf16``; fp32 otherwise."""
    return precision == "bf16" or (precision == "auto" and device.type == "cuda")


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA with ``precision: auto`` (or anywhere with ``bf16``); fp32 otherwise."""
    if uses_bf16(device, precision):
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()

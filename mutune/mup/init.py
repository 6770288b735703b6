"""Initialising a torch model by its parametrization's rules, identically on every device and under
FSDP2 sharding."""

from __future__ import annotations

import torch
from torch import nn

from .parametrizations import Parametrization, resolve
from .shapes import ParamInfo


def assign_(p: torch.Tensor, full: torch.Tensor) -> None:
    """Write ``full`` (the parameter's whole value, a plain tensor) into ``p``. A sharded parameter
    (a DTensor, under FSDP2) keeps only its own shard of it, cut locally without communication, so
    every rank that drew the same ``full`` holds the same weights as one process would."""
    if hasattr(p, "device_mesh"):  # a DTensor; torch.distributed is imported only then
        from torch.distributed.tensor import distribute_tensor

        full = distribute_tensor(full.to(p.device), p.device_mesh, p.placements, src_data_rank=None)
    p.copy_(full)


def full_value(p: torch.Tensor) -> torch.Tensor:
    """The parameter's whole value: itself, or all of a sharded parameter's shards gathered (a copy)."""
    return p.full_tensor() if hasattr(p, "full_tensor") else p


def init_weights(
    model: nn.Module,
    infos: dict[str, ParamInfo],
    parametrization: Parametrization | str,
    init_std: float,
    base_width: int,
    generator: torch.Generator,
    zero_init_readout: bool = False,
) -> None:
    """Initialise every parameter by its rule, in a fixed order, from ``generator``.

    Normal draws are made on the CPU in fp32 (so the same seed gives the same weights on every
    device and in every dtype) and written into the parameter where it lives, in its own dtype.
    A sharded parameter (FSDP2's DTensor) keeps its own shard of the same draw (:func:`assign_`).
    """
    params = dict(model.named_parameters())
    rules = resolve(parametrization)
    with torch.no_grad():
        for name, info in infos.items():
            p = params[name]
            kind, std = rules.init(info, init_std, base_width)
            if info.role == "readout" and zero_init_readout:
                p.zero_()
            elif kind == "normal":
                if p.device.type == "meta":
                    continue
                assign_(p, torch.randn(p.shape, generator=generator) * std)
            elif kind == "zeros":
                p.zero_()
            elif kind == "ones":
                p.fill_(1.0)

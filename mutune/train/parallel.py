"""Where this process sits in a run, and how the model is spread over the processes.

``init_distributed`` joins a torchrun launch (NCCL and one GPU per rank on CUDA, gloo on CPU);
``parallelize`` wraps the model for the launch through a small registry, so that a new strategy
(FSDP) is one entry here and the training loop does not change.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from ..device import resolve_device


@dataclass
class Distributed:
    """Where this process sits in a torchrun launch (rank 0 of 1 when not launched by torchrun)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    owns_group: bool = False  # we initialised the process group, so we tear it down

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device_name: str) -> tuple[Distributed, torch.device]:
    """Join the torchrun process group if WORLD_SIZE > 1: NCCL and one GPU per rank on CUDA, gloo on CPU."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    device = resolve_device(device_name)
    if world <= 1:
        return Distributed(), device
    import torch.distributed as dist

    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    owns = not dist.is_initialized()
    if owns:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Distributed(rank, world, local_rank, owns), device


def teardown(world: Distributed) -> None:
    """Leave the process group we joined. Rank 0 writes the checkpoint and result last: wait for it,
    so that no rank is left alone in the teardown (gloo hangs there when its peers have exited)."""
    if world.owns_group:
        import torch.distributed as dist

        dist.barrier()
        dist.destroy_process_group()


def global_mean(loss: torch.Tensor, world: Distributed) -> float:
    """The loss over the global batch: averaged over ranks, so every rank sees (and acts on) the same value."""
    value = loss.detach().float()
    if world.world > 1:
        import torch.distributed as dist

        dist.all_reduce(value)
        value = value / world.world
    return value.item()


def ddp(model: nn.Module, world: Distributed, device: torch.device) -> nn.Module:
    """Replicate the model on every rank; DDP averages the gradients of the ranks' batch slices."""
    return torch.nn.parallel.DistributedDataParallel(
        model, device_ids=[device.index] if device.type == "cuda" else None
    )


STRATEGIES: dict[str, Callable[[nn.Module, Distributed, torch.device], nn.Module]] = {"ddp": ddp}


def parallelize(
    model: nn.Module, world: Distributed, device: torch.device, strategy: str = "ddp"
) -> nn.Module:
    """The model as this process runs it: itself on one process, wrapped by ``strategy`` under torchrun."""
    if world.world <= 1:
        return model
    return STRATEGIES[strategy](model, world, device)

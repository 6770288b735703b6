"""Where this process sits in a run, and how the model is spread over the processes.

``init_distributed`` joins a torchrun launch (NCCL and one GPU per rank on CUDA, gloo on CPU);
``parallelize`` wraps the model for the launch through a small registry: DDP replicates it, FSDP2
shards it (the training loop builds a sharded run's model on meta and its optimizer after sharding,
see :func:`mutune.train.build`).
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ..device import resolve_device
from ..errors import SpecError


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


LAUNCHED = "MUTUNE_LAUNCHED"  # set by `mutune transfer --nproc N` for its ranks: it prints the resume hint


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise SpecError(name, f"expected an integer (torchrun sets it), got {raw!r}") from None


def launch_env() -> Distributed:
    """This process's place in a torchrun launch, from ``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK``,
    checked: a value that is not an integer, or a ``RANK`` without a ``WORLD_SIZE`` above 1 (set in
    the shell by accident, it would make this process a rank that writes nothing and prints
    nothing), is a user error naming the variable."""
    world = _env_int("WORLD_SIZE", 1)
    if world < 1:
        raise SpecError("WORLD_SIZE", f"must be >= 1, got {world}")
    rank = _env_int("RANK", 0)
    if world == 1 and rank != 0:
        raise SpecError(
            "RANK",
            f"is {rank} but WORLD_SIZE is not above 1: RANK belongs to a torchrun launch, and this process "
            "would run as a rank that writes nothing; unset RANK (or launch with --nproc / torchrun)",
        )
    if not 0 <= rank < world:
        raise SpecError("RANK", f"{rank} is outside 0..{world - 1} (WORLD_SIZE={world})")
    local_rank = _env_int("LOCAL_RANK", 0)
    if local_rank < 0:
        raise SpecError("LOCAL_RANK", f"must be >= 0, got {local_rank}")
    return Distributed(rank, world, local_rank)


def init_distributed(device_name: str) -> tuple[Distributed, torch.device]:
    """Join the torchrun process group if WORLD_SIZE > 1: NCCL and one GPU per rank on CUDA, gloo on CPU."""
    env = launch_env()
    world = env.world
    device = resolve_device(device_name)
    if world <= 1:
        return Distributed(), device
    import torch.distributed as dist

    rank, local_rank = env.rank, env.local_rank
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


def ddp(model: nn.Module, world: Distributed, device: torch.device, **_: object) -> nn.Module:
    """Replicate the model on every rank; DDP averages the gradients of the ranks' batch slices."""
    return torch.nn.parallel.DistributedDataParallel(
        model, device_ids=[device.index] if device.type == "cuda" else None
    )


def fsdp(
    model: nn.Module,
    world: Distributed,
    device: torch.device,
    *,
    blocks: Sequence[nn.Module] = (),
    bf16: bool = False,
) -> nn.Module:
    """Shard the model over the ranks (FSDP2): each block is a unit, then the root (embeddings, readout,
    tied weights kept together). Every parameter becomes a DTensor holding 1/N of its rows; a unit's
    parameters are gathered for its forward and backward only, and its gradients reduce-scattered
    (averaged, as DDP does). With ``bf16``, parameters are gathered in bf16 and gradients reduced in
    fp32. The same module is returned, sharded in place: build the optimizer after this call.
    """
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    mesh = init_device_mesh(device.type, (world.world,))
    mp = (
        MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
        if bf16
        else MixedPrecisionPolicy()
    )
    for block in blocks:
        fully_shard(block, mesh=mesh, mp_policy=mp)
    fully_shard(model, mesh=mesh, mp_policy=mp)
    return model


STRATEGIES: dict[str, Callable[..., nn.Module]] = {"ddp": ddp, "fsdp": fsdp}


@contextlib.contextmanager
def grad_sync(model: nn.Module, sync: bool) -> Iterator[None]:
    """A backward pass that does (``sync``) or does not yet reduce the gradients over the processes:
    gradient accumulation reduces once, on its last micro-batch (DDP's ``no_sync``, FSDP2's
    ``set_requires_gradient_sync``); on one process there is nothing to reduce."""
    if sync:
        yield
    elif hasattr(model, "no_sync"):  # DDP
        with model.no_sync():
            yield
    elif hasattr(model, "set_requires_gradient_sync"):  # FSDP2
        model.set_requires_gradient_sync(False)
        try:
            yield
        finally:
            model.set_requires_gradient_sync(True)
    else:
        yield


def checkpoint_activations(blocks: Sequence[nn.Module]) -> None:
    """Recompute each block's activations in the backward pass instead of keeping them (parameter
    names are unchanged: the block's forward is wrapped, not the block)."""
    from torch.utils.checkpoint import checkpoint

    for block in blocks:
        block.forward = functools.partial(checkpoint, block.forward, use_reentrant=False)


def parallelize(
    model: nn.Module,
    world: Distributed,
    device: torch.device,
    strategy: str = "ddp",
    *,
    blocks: Sequence[nn.Module] = (),
    bf16: bool = False,
    activation_checkpointing: bool = False,
) -> nn.Module:
    """The model as this process runs it: itself on one process, wrapped by ``strategy`` under torchrun.

    ``blocks`` are the model's repeated units (FSDP's units, activation checkpointing's recompute
    units); ``bf16`` is FSDP's mixed precision.
    """
    if activation_checkpointing:
        checkpoint_activations(blocks)
    if world.world <= 1:
        return model
    return STRATEGIES[strategy](model, world, device, blocks=blocks, bf16=bf16)

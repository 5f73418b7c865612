"""Several processes, one training run: torchrun / DistributedDataParallel helpers.

The same script runs with ``python train.py`` (one process) and with
``torchrun --nproc_per_node=N train.py`` (N processes): torchrun sets ``RANK``, ``LOCAL_RANK`` and
``WORLD_SIZE``, and :func:`init_distributed` joins the process group it describes (NCCL on CUDA,
Gloo on CPU). Everything here is a no-op in a single process.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from .errors import ResnetzooError

__all__ = ["DistributedContext", "DistributedError", "init_distributed", "resolve_device", "all_reduce_sum",
           "all_gather_object", "broadcast_tensors", "barrier", "cleanup"]

logger = logging.getLogger(__name__)


class DistributedError(ResnetzooError, RuntimeError):
    """A distributed launch that cannot work as configured."""


@dataclass(frozen=True)
class DistributedContext:
    """Where this process stands: its rank among ``world_size`` processes and its device."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        """Rank 0 writes files, logs epochs and draws progress bars; the others stay quiet."""
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def resolve_device(device: str | torch.device = "auto", local_rank: int = 0) -> torch.device:
    """``"auto"`` -> this process's CUDA device when there is one, else the CPU."""
    if isinstance(device, torch.device):
        return device
    name = device.lower()
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise DistributedError(f"device={device!r} but no CUDA device is visible here. Use device='cpu' or 'auto'.")
        return torch.device(name if ":" in name else f"cuda:{local_rank}")
    return torch.device(name)


def init_distributed(device: str | torch.device = "auto") -> DistributedContext:
    """Join torchrun's process group when launched by torchrun; otherwise a single-process context.

    Call once per process before building data loaders. Safe to call again (the group is reused).
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistributedContext(device=resolve_device(device))
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    local_world_size = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    if isinstance(device, str) and device.lower().startswith("cuda:") and local_world_size > 1:
        # Every process on this node would take the same GPU, and NCCL refuses that ("Duplicate GPU detected").
        raise DistributedError(
            f"device={device!r} names one GPU, but torchrun started {local_world_size} processes on this node. "
            "Pass device='cuda' (or 'auto') so that each process takes cuda:LOCAL_RANK; choose the GPUs with "
            "CUDA_VISIBLE_DEVICES."
        )
    target = resolve_device(device, local_rank)
    if target.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise DistributedError(
                f"LOCAL_RANK {local_rank} but only {torch.cuda.device_count()} CUDA devices; start torchrun with "
                f"--nproc_per_node={torch.cuda.device_count()} or fewer."
            )
        torch.cuda.set_device(target)
    if not dist.is_initialized():
        # NCCL moves CUDA tensors between GPUs without a CPU round trip; Gloo is the CPU backend.
        backend = "nccl" if target.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend)
        logger.info("Joined process group: rank %d of %d (%s, %s).", rank, world_size, backend, target)
    return DistributedContext(rank=rank, local_rank=local_rank, world_size=world_size, device=target)


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over every process, in place; returns it."""
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_gather_object(value: object) -> list[object]:
    """Every rank's ``value``, in rank order (``[value]`` in a single process)."""
    if not (dist.is_available() and dist.is_initialized()):
        return [value]
    gathered: list[object] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, value)
    return gathered


def broadcast_tensors(tensors: list[torch.Tensor] | tuple[torch.Tensor, ...], source: int = 0) -> None:
    """Overwrite ``tensors`` on every rank with rank ``source``'s, in place."""
    if dist.is_available() and dist.is_initialized():
        for tensor in tensors:
            dist.broadcast(tensor, src=source)


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def cleanup() -> None:
    """Leave the process group (at the end of a torchrun script)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()

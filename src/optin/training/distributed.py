"""Multi-process training under ``torchrun`` (DistributedDataParallel).

The same command runs alone or under ``torchrun --nproc_per_node=N [--nnodes ...]``: when the
``WORLD_SIZE`` environment variable says more than one process, the process group is set up
(NCCL on GPUs, Gloo on CPUs), each rank takes every N-th draw of the epoch's sampling plan, and
only rank 0 writes files. Validation is sharded and summed across ranks.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistEnv:
    """Where this process stands: rank, world size, local rank and its device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup(device_name: str = "auto") -> tuple[DistEnv, torch.device]:
    """Initialise the process group when launched by torchrun; pick this rank's device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device_name == "auto":
        device = torch.device(f"cuda:{local}" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(device_name)
        if device.type == "cuda" and device.index is None and world > 1:
            device = torch.device(f"cuda:{local}")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return DistEnv(rank, world, local), device


def teardown(env: DistEnv) -> None:
    """Leave the process group (after a barrier so rank 0's files are complete)."""
    if env.enabled and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def all_sum(values: list[float], env: DistEnv, device: torch.device) -> list[float]:
    """Element-wise sum of a list of numbers over all ranks (identity when alone)."""
    if not env.enabled:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.tolist()


def barrier(env: DistEnv) -> None:
    if env.enabled:
        dist.barrier()


def parameter_checksums(module: torch.nn.Module, env: DistEnv) -> list[str]:
    """SHA-256 of ``module``'s parameters and buffers on every rank (rank order).

    Equal entries prove the ranks hold the same model.
    """
    import hashlib

    h = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().to("cpu").contiguous().numpy().tobytes())
    digest = h.hexdigest()
    if not env.enabled:
        return [digest]
    gathered: list[str | None] = [None] * env.world_size
    dist.all_gather_object(gathered, digest)
    return [str(g) for g in gathered]

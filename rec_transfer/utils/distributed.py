"""Where this process stands in a ``torch.distributed`` job (or that there is none)."""

from __future__ import annotations

import torch
import torch.distributed as dist


def dist_info() -> tuple[int, int]:
    """``(rank, world size)`` of the default process group; ``(0, 1)`` when none is initialised."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_distributed() -> bool:
    """Whether several processes share this job, so collectives must be entered by all of them."""
    return dist_info()[1] > 1


def collective_device() -> torch.device:
    """Device that tensors must live on for collectives of the current process group (CUDA for NCCL)."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")

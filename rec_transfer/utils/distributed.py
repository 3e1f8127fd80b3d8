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


def step_share(count: torch.Tensor) -> torch.Tensor | float:
    """``world × count / (count summed over the ranks)``; 1 without DDP.

    DDP averages the ranks' gradients. A rank's mean loss over its ``count`` elements, multiplied by this, makes that
    average the gradient of the mean over all ranks' elements: what one process computes on the whole batch, however
    unevenly the elements fall on the ranks.
    """
    world = dist_info()[1]
    if world == 1:
        return 1.0
    total = count.detach().float().clone()
    dist.all_reduce(total)
    return world * count.detach().float() / total.clamp(min=1)

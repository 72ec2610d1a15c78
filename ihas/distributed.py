"""Data-parallel helpers over `torch.distributed`, used by the training loop when a group is initialized.

Every function works without an initialized process group: it then behaves as a single process
(rank 0 of world size 1), so library code calls them unconditionally.
"""

from __future__ import annotations

from typing import Iterable

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    """Return True when a process group with more than one process is initialized."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    """Return True on the process that writes outputs (rank 0)."""
    return rank() == 0


def all_reduce_gradients(parameters: Iterable[torch.nn.Parameter]) -> None:
    """Average the gradients of `parameters` over all processes, in place.

    A parameter without a gradient on this rank gets a zero gradient first, so every rank joins
    the same collective calls in the same order.
    """
    if not is_distributed():
        return
    size = float(world_size())
    for param in parameters:
        if param.grad is None:
            param.grad = torch.zeros_like(param)
        dist.all_reduce(param.grad, op=dist.ReduceOp.SUM)
        param.grad.div_(size)

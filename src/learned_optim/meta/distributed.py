"""Distributed meta-training on ``torch.distributed``, started by ``torchrun``.

Each meta-batch of ``K`` problems is split over the ``world_size`` processes (problem ``k`` runs on
one process, drawn from the same seed whatever the split); each process backpropagates its share
of the mean meta-loss, and the meta-gradients are summed with ``all_reduce``, so every process
takes the same meta-step and a run gives the same weights (to floating-point tolerance) on any
number of processes. Only rank 0 writes the run folder. gloo on CPU, NCCL on GPU.

    torchrun --nproc-per-node 2 -m learned_optim.meta train RUN ...
    torchrun --nnodes 2 --node-rank R --rdzv-backend c10d --rdzv-endpoint HOST:29500 \\
        --nproc-per-node 8 -m learned_optim.meta train RUN ...   # on every node, R = 0, 1
"""

from __future__ import annotations

import atexit
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor


@dataclass
class Distribution:
    """Which share of the work this process does, and how it talks to the others.

    ``Distribution()`` is a single process: every problem is its own and ``all_reduce`` is the identity.
    """

    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that writes the run folder and prints progress."""
        return self.rank == 0

    def shard(self, count: int) -> range:
        """This process's indices among ``count`` items (contiguous, sizes differing by at most one)."""
        base, extra = divmod(count, self.world_size)
        start = self.rank * base + min(self.rank, extra)
        return range(start, start + base + (self.rank < extra))

    def all_reduce(self, tensor: Tensor) -> None:
        """Sums ``tensor`` in place over the processes."""
        if self.world_size > 1:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)

    def barrier(self) -> None:
        if self.world_size > 1:
            dist.barrier()

    def broadcast_object(self, value):
        """Rank 0's ``value``, on every process."""
        if self.world_size == 1:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]


def from_environment(device: torch.device | str = "cpu") -> Distribution:
    """The process group set up by ``torchrun`` (``WORLD_SIZE`` > 1), or a single process.

    The backend is NCCL for a CUDA ``device``, gloo otherwise; on CUDA each process takes the GPU of
    its ``LOCAL_RANK``.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return Distribution()
    if not dist.is_initialized():
        cuda = torch.device(device).type == "cuda"
        if cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend="nccl" if cuda else "gloo")
        # Torn down before the interpreter exits: left to C++ destructors, gloo's threads can abort the process
        # ("terminate called without an active exception") after a run has finished.
        atexit.register(dist.destroy_process_group)
    return Distribution(dist.get_rank(), dist.get_world_size())

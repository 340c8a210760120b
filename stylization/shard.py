"""A folder or pattern of files shared among the processes torchrun starts.

    torchrun --nproc_per_node N stylize.py --content_type image --source photos/ ...

torchrun describes the run in the environment (RANK, WORLD_SIZE, LOCAL_RANK), read here as
train/distributed.py reads it for training. Every process plans the same outputs from the same
flags and files; source i is stylised by process i % WORLD_SIZE, on GPU LOCAL_RANK where there
are GPUs. The processes meet twice over gloo (control messages only, on every device): after
planning, so that no process picks output names while another is already writing, and at the
end, where the first process prints one summary of everything that was saved. Without torchrun
a run is a group of one and nothing here does anything.
"""
from __future__ import annotations

import atexit
import os
import sys
import warnings
from dataclasses import dataclass
from datetime import timedelta
from typing import Sequence, TypeVar

import torch
import torch.distributed as dist

import config
from utils import fail

T = TypeVar("T")


@dataclass(frozen=True)
class Share:
    """This process's place among those torchrun started."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def take(self, items: Sequence[T]) -> list[T]:
        """This process's items: r, r + N, r + 2N, ..."""
        return list(items[self.rank::self.world_size])

    def device(self, device: torch.device) -> torch.device:
        """On CUDA, the GPU of this process's LOCAL_RANK (made the current one)."""
        if self.world_size == 1 or device.type != "cuda":
            return device
        local_size = int(os.environ.get("LOCAL_WORLD_SIZE", self.local_rank + 1))
        if local_size > torch.cuda.device_count():
            gpus = torch.cuda.device_count()
            fail(f"torchrun started {local_size} processes on this machine but it has {gpus} GPU(s): "
                 f"pass --nproc_per_node {gpus} or fewer")
        device = torch.device("cuda", self.local_rank)
        torch.cuda.set_device(device)
        return device

    def barrier(self) -> None:
        if self.world_size > 1:
            dist.barrier()

    def gather(self, item: T) -> list[T]:
        """Every process's item, in rank order, on every process."""
        if self.world_size == 1:
            return [item]
        items: list = [None] * self.world_size
        dist.all_gather_object(items, item)
        return items


def join() -> Share:
    """The group torchrun started this process in (a group of one without torchrun).

    Processes other than the first print nothing to stdout (the summary is the first one's),
    and warnings only on the first process of each machine, as in training."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return Share()
    if "RANK" not in os.environ or "LOCAL_RANK" not in os.environ:
        fail(f"WORLD_SIZE is {world_size} but RANK or LOCAL_RANK is not set: start stylize.py with "
             "torchrun, which sets them (or unset WORLD_SIZE)")
    rank, local_rank = int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"])
    if rank != 0:
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 (for the life of the process)
    if local_rank != 0:
        warnings.simplefilter("ignore")
    # gloo on every device: only a barrier and the summary travel, never frames. The wait at
    # the end lasts as long as the slowest process's share, hence the long timeout.
    dist.init_process_group("gloo", timeout=timedelta(hours=config.SHARD_TIMEOUT_HOURS))
    atexit.register(dist.destroy_process_group)
    return Share(rank, world_size, local_rank)

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
from dataclasses import dataclass
from datetime import timedelta
from typing import Sequence, TypeVar

import torch
import torch.distributed as dist

import config
from common.devices import local_gpu, Place, torchrun_place

T = TypeVar("T")


@dataclass(frozen=True)
class Share(Place):
    """This process's place among those torchrun started, and its share of the files."""

    def take(self, items: Sequence[T]) -> list[T]:
        """This process's items: r, r + N, r + 2N, ..."""
        return list(items[self.rank::self.world_size])

    def device(self, device: torch.device) -> torch.device:
        """On CUDA, the GPU of this process's LOCAL_RANK (made the current one)."""
        if self.world_size == 1 or device.type != "cuda":
            return device
        return local_gpu(self.local_rank)

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
    place = torchrun_place("stylize.py")
    if place.world_size == 1:
        return Share()
    # gloo on every device: only a barrier and the summary travel, never frames. The wait at
    # the end lasts as long as the slowest process's share, hence the long timeout.
    dist.init_process_group("gloo", timeout=timedelta(hours=config.SHARD_TIMEOUT_HOURS))
    atexit.register(dist.destroy_process_group)
    return Share(place.rank, place.world_size, place.local_rank)

"""Training on several processes (GPUs, machines) when train.py is started by torchrun.

torchrun describes the run in the environment (RANK, WORLD_SIZE, LOCAL_RANK, and where to
meet); without it a run is a group of one and nothing here does anything. Each process
stylises its own share of every step's images (train.dataset.EpochSampler's shard), and
DistributedDataParallel averages the gradients, so all processes take the same Adam step and
hold the same weights: `--batch_size` images per process, `--batch_size` x processes per step.
Only the first process writes checkpoints, samples and the loss log, and prints progress.

Machines need not share a file system: what the first process reads (the checkpoint to
resume) reaches the others by broadcast, so every process decides alike (Cluster.decide).
"""
from __future__ import annotations

import atexit
from dataclasses import dataclass
from datetime import timedelta
from typing import Callable, TypeVar

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

import config
from common.devices import local_gpu, Place, torchrun_place
from common.errors import fail, UserError

T = TypeVar("T")


@dataclass(frozen=True)
class Cluster(Place):
    """This process's place among those torchrun started, and the device it trains on."""

    device: torch.device = torch.device("cpu")

    def wrap(self, model: nn.Module) -> nn.Module:
        """model as the training step should call it: gradients averaged over the group."""
        if self.world_size == 1:
            return model
        device_ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=device_ids)

    def agree(self, terms: dict[str, torch.Tensor], stop: bool) -> tuple[dict[str, torch.Tensor], bool]:
        """The loss terms averaged over the group (what the log shows: the whole step's batch),
        and whether any process was asked to stop: all must stop after the same step, or the
        others would wait for it forever. One small all-reduce per step, which the host waits for."""
        if self.world_size == 1:
            return terms, stop
        names = list(terms)
        packed = torch.stack([terms[n].detach().float() for n in names]
                             + [torch.tensor(float(stop), device=self.device)])
        dist.all_reduce(packed)
        averaged = {n: value / self.world_size for n, value in zip(names, packed[:-1])}
        return averaged, bool(packed[-1] > 0)

    def decide(self, choose: Callable[[], T]) -> T:
        """choose() run by the first process only, and its result (or its one-line error) given
        to every process: a decision that hangs on files (which checkpoint to resume, whether
        the folder already holds a run) must be the same everywhere, or the processes would
        take different numbers of steps and wait for each other forever. The result must be
        plain data and tensors (it travels pickled, unpickled with weights_only)."""
        if self.world_size == 1:
            return choose()
        outcome: list = [None]
        failure: BaseException | None = None
        if self.is_main:
            try:
                outcome = [("ok", choose())]
            except UserError as err:
                outcome = [("error", str(err))]
            except Exception as err:  # still tell the others, then fail here with the traceback
                failure = err
                outcome = [("error", f"the first process failed ({type(err).__name__}: {err}); "
                                     "see its output")]
        dist.broadcast_object_list(outcome, src=0, weights_only=True)
        if failure is not None:
            raise failure
        kind, value = outcome[0]
        if kind == "error":
            fail(value)
        return value

    def once_per_machine(self, work: Callable[[], object]) -> None:
        """work() done by the first process of each machine while the others wait, e.g. a cache
        in a folder all processes of a machine read. An error there stops every process.

        The wait may be long (hours of optical flow): it runs in a gloo group of its own with
        config.PREPARE_TIMEOUT_S, so NCCL's watchdog does not end it after its 10 minutes."""
        if self.world_size == 1:
            work()
            return
        waiting = dist.new_group(backend="gloo", timeout=timedelta(seconds=config.PREPARE_TIMEOUT_S))
        message, failure = None, None
        if self.local_rank == 0:
            try:
                work()
            except UserError as err:
                message = str(err)
            except Exception as err:  # still tell the others, then fail here with the traceback
                failure = err
                message = f"process {self.rank} failed ({type(err).__name__}: {err}); see its output"
        messages: list = [None] * self.world_size
        dist.all_gather_object(messages, message, group=waiting, weights_only=True)  # the others wait here
        dist.destroy_process_group(waiting)
        if failure is not None:
            raise failure
        if any(messages):
            fail(next(m for m in messages if m))

    def barrier(self) -> None:
        if self.world_size > 1:
            dist.barrier()


def join(device: torch.device) -> Cluster:
    """The group torchrun started this process in (a group of one without torchrun), with the
    process's device: on CUDA, the GPU of its LOCAL_RANK.

    Ranks other than 0 print nothing to stdout; warnings and errors are shown by the first
    process of each machine only, since the others on that machine read the same files and
    flags (a machine missing the data still says so)."""
    place = torchrun_place("train.py")
    if place.world_size == 1:
        return Cluster(device=device)
    if device.type == "cuda":
        device = local_gpu(place.local_rank)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    atexit.register(dist.destroy_process_group)
    return Cluster(place.rank, place.world_size, place.local_rank, device)

"""The machine a run is on: which device, which GPU under torchrun, the memory allocator, the C++ compiler torch.compile needs."""
from __future__ import annotations

import ctypes
import os
import platform
import shutil
import sys
import warnings
from dataclasses import dataclass

import torch

import config
from common.errors import fail


def keep_freed_memory() -> None:
    """Make glibc keep the memory of freed tensors in the process for the next ones.

    By default glibc gives large blocks (every full-size activation of a video frame or a
    training batch) back to the kernel when a tensor is freed, so each frame or step pays page
    faults to get them again: at 640x360 on the 2-core CPU that was a fifth (bf16) to a third
    (fp32) of stylisation's time, and a fifth of a bf16 training step's (README, Stylization
    speed, Training speed). Taking every block from the heap and never trimming it keeps them;
    peak memory stays about what it was. Does nothing where the C library is not glibc.
    """
    if platform.libc_ver()[0] != "glibc":
        return
    libc = ctypes.CDLL(None)
    m_trim_threshold, m_top_pad, m_mmap_max = -1, -2, -4  # mallopt parameters, <malloc.h>
    libc.mallopt(m_mmap_max, 0)
    libc.mallopt(m_trim_threshold, config.MALLOC_KEEP_BYTES)
    libc.mallopt(m_top_pad, config.MALLOC_TOP_PAD_BYTES)


def find_compiler() -> str | None:
    """The C++ compiler torch.compile would build its kernels with (C++ on a CPU, Triton's
    launchers on CUDA), or None."""
    names = (os.environ.get("CXX", ""), "g++", "clang++", "c++")
    return next((found for name in names if name and (found := shutil.which(name))), None)


def check_compiler() -> None:
    """Refuse --compile True where torch.compile could not work."""
    if find_compiler() is None:
        fail("--compile True needs a C++ compiler (torch.compile builds its kernels with one): "
             "install g++ (e.g. apt install g++) or leave --compile False")


def resolve_device(requested: str) -> torch.device:
    """'auto' picks CUDA when present; 'cuda' without CUDA warns and falls back to the CPU.

    cuda:N must name a GPU that is there, and becomes the current one: what uses the current
    GPU implicitly (pinned memory, the bf16 check) then opens no stray context on GPU 0."""
    requested = requested.lower()
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested != "cpu" and not requested.startswith("cuda"):
        fail(f"unknown device {requested!r}: use cuda, cuda:N (N counted from 0), cpu or auto")
    try:
        device = torch.device(requested)
    except RuntimeError:
        fail(f"unknown device {requested!r}: use cuda, cuda:N (N counted from 0), cpu or auto")
    if device.type == "cuda" and not torch.cuda.is_available():
        warnings.warn("CUDA was requested but is not available here; using the CPU.", stacklevel=2)
        return torch.device("cpu")
    if device.type == "cuda" and device.index is not None:
        count = torch.cuda.device_count()
        if device.index >= count:
            present = "cuda:0" if count == 1 else f"cuda:0 to cuda:{count - 1}"
            fail(f"--device {requested}: this machine has {count} GPU(s), {present} "
                 "(as CUDA_VISIBLE_DEVICES shows them): pick one of them")
        torch.cuda.set_device(device)
    return device


@dataclass(frozen=True)
class Place:
    """This process's place among those torchrun started (a group of one without torchrun)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """The process that writes the shared files and reports progress."""
        return self.rank == 0


def torchrun_place(script: str) -> Place:
    """Where torchrun's environment (WORLD_SIZE, RANK, LOCAL_RANK) puts this process.

    Processes other than the first print nothing to stdout, and only the first of each machine
    shows warnings: the others read the same flags and files (a machine missing the data still
    says so, through its own first process)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return Place()
    if "RANK" not in os.environ or "LOCAL_RANK" not in os.environ:
        fail(f"WORLD_SIZE is {world_size} but RANK or LOCAL_RANK is not set: start {script} with "
             "torchrun, which sets them (or unset WORLD_SIZE)")
    place = Place(int(os.environ["RANK"]), world_size, int(os.environ["LOCAL_RANK"]))
    if place.rank != 0:
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 (for the life of the process)
    if place.local_rank != 0:
        warnings.simplefilter("ignore")
    return place


def local_gpu(local_rank: int) -> torch.device:
    """The GPU of this process's LOCAL_RANK, made the current one; a one-line error where
    torchrun started more processes on this machine than it has GPUs."""
    local_size = int(os.environ.get("LOCAL_WORLD_SIZE", local_rank + 1))
    if local_size > torch.cuda.device_count():
        gpus = torch.cuda.device_count()
        fail(f"torchrun started {local_size} processes on this machine but it has {gpus} GPU(s): "
             f"pass --nproc_per_node {gpus} or fewer")
    device = torch.device("cuda", local_rank)
    torch.cuda.set_device(device)
    return device

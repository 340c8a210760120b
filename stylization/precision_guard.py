"""--precision auto per model: a reduced precision is kept only where this model's output stays
close to float32's.

The table in config.STYLIZE_AUTO_PRECISION was measured on the shipped model; other models
(the original project's files, untrained or unusual weights) can stray much further in bf16 or
fp16. So the first batch of a run goes through the network in both precisions, and when the
mean absolute difference of the 8-bit outputs exceeds config.AUTO_PRECISION_MAX_MEAN_DIFF the
run continues in float32 with a one-line note. The same check runs on every device (fp16 on
CUDA, bf16 on CPUs). stylization/processor.Processor calls it; an explicit --precision skips it.
"""
from __future__ import annotations

import torch
from tqdm import tqdm

import config
from common.precision import precision_name


def mean_difference(reference: torch.Tensor, other: torch.Tensor) -> float:
    """Mean absolute difference of two uint8 frame tensors, in 0-255 units."""
    return (reference.to(torch.int16) - other.to(torch.int16)).abs().float().mean().item()


def too_flat(frames: torch.Tensor) -> bool:
    """Whether uint8 frames hold too little contrast (standard deviation in 0-255 units below
    config.PRECISION_GUARD_MIN_STD) to judge a precision on."""
    return frames.float().std().item() < config.PRECISION_GUARD_MIN_STD


def keeps_reduced(difference: float, limit: float | None = None) -> bool:
    limit = config.AUTO_PRECISION_MAX_MEAN_DIFF if limit is None else limit
    return difference <= limit


def fallback_note(dtype: torch.dtype, difference: float,
                  limit: float | None = None) -> str:
    limit = config.AUTO_PRECISION_MAX_MEAN_DIFF if limit is None else limit
    name = precision_name(dtype)
    return (f"note: --precision auto: this model's {name} output differs from fp32 by a mean of "
            f"{difference:.2f}/255 on the first frames (limit {limit}/255), so it runs in fp32; "
            f"--precision {name} keeps {name}")


def report(note: str) -> None:
    tqdm.write(note)  # above a progress bar, if one is running

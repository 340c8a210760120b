"""Reduced precision: which dtype --precision means on a device, and autocast for it."""
from __future__ import annotations

import warnings

import torch

import config
from common.errors import fail


def has_native_bf16_cpu() -> bool:
    """Whether this CPU does bfloat16 arithmetic in hardware (AVX512-BF16 or AMX), where
    oneDNN's bf16 convolutions beat float32; elsewhere bf16 is emulated and slower. A process
    held to AVX2 (ATEN_CPU_CAPABILITY=avx2, as on most laptops) counts as without."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")  # private, hence getattr
    if not torch.backends.cpu.get_cpu_capability().startswith("AVX512"):
        return False
    return torch.backends.mkldnn.is_available() and any(
        getattr(torch.cpu, check, lambda: False)() for check in checks)


def has_native_bf16_gpu(device: torch.device) -> bool:
    """Whether the GPU `device` (the current one if it has no index) does bfloat16 in
    hardware (compute capability 8.0 on). torch's default check also counts emulation, which
    runs (slowly) on older cards such as Turing, and asks the current GPU, not this one."""
    if device.index is None:
        return torch.cuda.is_bf16_supported(including_emulation=False)
    with torch.cuda.device(device.index):  # the check looks at the current GPU
        return torch.cuda.is_bf16_supported(including_emulation=False)


def resolve_precision(name: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype that --precision asks for on device; None means plain float32.

    auto: float16 on CUDA, bfloat16 on CPUs with native bf16, float32 elsewhere.
    fp16 on a CPU warns and uses what auto would: CPU autocast accepts float16 but runs it
    about ten times slower than float32 and needs loss scaling, for nothing in return.
    bf16 on a GPU without it warns and uses fp16; bf16 on a CPU without native bf16 is
    honoured (it is correct, only slow) with a warning.
    """
    if name not in config.PRECISION_CHOICES:
        fail(f"unknown precision {name!r}: use {', '.join(config.PRECISION_CHOICES)}")
    cuda = device.type == "cuda"
    cpu_choice = "bf16" if not cuda and has_native_bf16_cpu() else "fp32"
    if name == "auto":
        name = "fp16" if cuda else cpu_choice
    elif name == "fp16" and not cuda:
        warnings.warn(f"fp16 on the CPU is slow and needs loss scaling; using {cpu_choice} instead",
                      stacklevel=2)
        name = cpu_choice
    elif name == "bf16" and cuda and not has_native_bf16_gpu(device):
        warnings.warn(f"the GPU {device} has no bf16 in hardware (only a slow emulation); using fp16 instead",
                      stacklevel=2)
        name = "fp16"
    elif name == "bf16" and not cuda and not has_native_bf16_cpu():
        warnings.warn("this CPU has no native bf16: bf16 will be emulated and slower than fp32",
                      stacklevel=2)
    return None if name == "fp32" else getattr(torch, config.PRECISIONS[name])


def precision_name(dtype: torch.dtype | None) -> str:
    """The --precision name of an autocast dtype from resolve_precision (None: fp32)."""
    names = {getattr(torch, value): key for key, value in config.PRECISIONS.items()}
    return names[dtype or torch.float32]


def autocast(device: torch.device, dtype: torch.dtype | None) -> torch.autocast:
    """Mixed precision in dtype on device; a no-op for float32 (dtype None). One call for
    every device, so there is no CUDA branch and CPU branch of the same step."""
    return torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None)

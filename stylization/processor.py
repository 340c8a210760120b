"""Turns RGB uint8 frames into stylised RGB uint8 frames with the stylizing network."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

import config
from utils import autocast, has_native_bf16_cpu, resolve_precision


def stylize_precision(name: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for --precision on device (None: float32).

    auto follows config.STYLIZE_AUTO_PRECISION, which holds a reduced precision only where its
    output was measured close enough to float32's; explicit names go through
    utils.resolve_precision, so an unusable choice warns and falls back as in training.
    """
    if name == "auto":
        kind = device.type if device.type == "cuda" else (
            "cpu_native_bf16" if has_native_bf16_cpu() else "cpu")
        name = config.STYLIZE_AUTO_PRECISION[kind]
    return resolve_precision(name, device)


def default_batch_size(device: torch.device) -> int:
    return config.STYLIZE_BATCH_SIZE.get(device.type, 1)


class Float32(torch.nn.Module):
    """Runs a part of the network in float32 inside a reduced-precision autocast region."""

    def __init__(self, module: torch.nn.Module):
        super().__init__()
        self.module = module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, enabled=False):
            return self.module(x.float())


class Processor:
    """Runs the network on batches of same-sized frames; one code path for every device.

    dtype: autocast precision (None: float32). channels_last: the network and its input in
    NHWC memory. compile: torch.compile the network (the first batch then takes a while).
    batch_size: how many frames a video pipeline hands over per call.
    """

    def __init__(self, model: torch.nn.Module, device: torch.device | str,
                 dtype: torch.dtype | None = None, channels_last: bool = False,
                 compile: bool = False, batch_size: int = 1):
        self.device = torch.device(device)
        self.dtype = dtype
        self.batch_size = batch_size
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.model = model.to(self.device, memory_format=self.memory_format).eval()
        if dtype is not None:
            # Only this project's network has these parts; other layouts (network/formats.py)
            # run wholly at dtype, and an ONNX model in its own float32.
            for name in config.STYLIZE_FLOAT32_LAYERS:
                if isinstance(getattr(self.model, name, None), torch.nn.Module):
                    setattr(self.model, name, Float32(getattr(self.model, name)))
        self.compiled = compile
        self._forward = torch.compile(self.model, dynamic=False) if compile else self.model
        self._full_batch: dict[tuple[int, ...], int] = {}

    def __call__(self, frames: Sequence[np.ndarray]) -> list[np.ndarray]:
        if not frames:
            return []
        shapes = {frame.shape for frame in frames}
        if len(shapes) > 1:
            raise ValueError(f"a batch needs frames of one size, got {sorted(shapes)}")
        count = len(frames)
        if self.compiled:
            # Another batch shape would compile again (a minute on a CPU): fill a video's
            # last, short batch up to the size seen before and drop the extra results.
            full = self._full_batch.setdefault(frames[0].shape, count)
            frames = [*frames, *[frames[-1]] * (full - count)]
        with torch.inference_mode(), autocast(self.device, self.dtype):
            # uint8 crosses to the device (a quarter of float32's bytes) and is converted there.
            batch = torch.from_numpy(np.stack(frames)).to(self.device)
            batch = (batch.permute(0, 3, 1, 2).float().div_(255.0)
                     .contiguous(memory_format=self.memory_format))
            result = self._forward(batch).float().clamp_(0, 1).mul_(255).round_().to(torch.uint8)
            result = result.permute(0, 2, 3, 1).contiguous().cpu().numpy()
        return list(result[:count])

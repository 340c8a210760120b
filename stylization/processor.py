"""Turns RGB uint8 frames into stylised RGB uint8 frames with the stylizing network."""
from __future__ import annotations

import copy
import logging
from typing import Sequence

import numpy as np
import torch

import config
from network.fast_inference import for_inference
from stylization import compile_cache, precision_guard
from utils import batch_to_frames, frames_to_batch, has_native_bf16_cpu, resolve_precision


def stylize_precision(name: str, device: torch.device) -> torch.dtype | None:
    """The dtype of weights and activations for --precision on device (None: float32).

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


class Processor:
    """Runs the network on batches of same-sized frames; one code path for every device.

    The network runs as network/fast_inference.py rewrites it, with weights and activations in
    dtype (None: float32; measured faster than autocast, which converts around every layer).
    channels_last: NHWC memory for the network's input. compile: torch.compile the whole step
    from uint8 frames to uint8 frames, so that the conversions fuse with the first and last
    layers (the first batch then takes a while). batch_size: how many frames a video pipeline
    hands over per call. guard_precision (--precision auto): the first batch also runs in
    float32, and a reduced dtype that strays too far from it is dropped for float32
    (stylization/precision_guard.py); `precision_difference` then holds the difference.
    """

    def __init__(self, model: torch.nn.Module, device: torch.device | str,
                 dtype: torch.dtype | None = None, channels_last: bool = False,
                 compile: bool = False, batch_size: int = 1, guard_precision: bool = False):
        self.device = torch.device(device)
        self.dtype = dtype or torch.float32
        self.batch_size = batch_size
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        fast = for_inference(model, compiled=compile)
        self._reference = None  # the float32 model while the precision is still to be checked
        if guard_precision and self.dtype != torch.float32:
            # Copied before .to(dtype), which converts a module in place; a model without
            # parameters (ONNX) stays float32 anyway, and may not be copyable.
            has_weights = next(fast.parameters(), None) is not None
            self._reference = (copy.deepcopy(fast) if has_weights else fast).to(self.device).eval()
        self.precision_difference: float | None = None
        # An ONNX model has no parameters: .to(dtype) leaves it in its own float32.
        self.model = fast.to(self.device, self.dtype).eval()
        self.compiled = compile
        if compile:
            # A CUDA build of torch on a machine without CUDA says so while compiling: noise here.
            logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
            compile_cache.use_persistent_cache()  # a later run of the same shape starts warm
        self._step = (torch.compile(self._frames_to_frames, dynamic=False, options={"freezing": True})
                      if compile else self._frames_to_frames)
        self._full_batch: dict[tuple[int, ...], int] = {}
        self._compiled: set[tuple[tuple[int, int], int]] = set()

    @property
    def compiled_shapes(self) -> list[tuple[tuple[int, int], int]]:
        """((height, width), frames per call) of every shape compiled so far."""
        return sorted(self._compiled)

    def _frames_to_frames(self, frames: torch.Tensor) -> torch.Tensor:
        batch = frames_to_batch(frames, self.dtype).contiguous(memory_format=self.memory_format)
        return batch_to_frames(self.model(batch))

    def _settle_precision(self, frames: torch.Tensor) -> torch.Tensor:
        """The first batch, eager, in dtype and in float32; keeps the dtype only if they agree."""
        reference_model, self._reference = self._reference, None
        reduced = self._frames_to_frames(frames)
        batch = frames_to_batch(frames).contiguous(memory_format=self.memory_format)
        reference = batch_to_frames(reference_model(batch))
        self.precision_difference = precision_guard.mean_difference(reference, reduced)
        if precision_guard.keeps_reduced(self.precision_difference):
            return reduced
        # Before the first compiled call, so torch.compile traces the float32 model.
        precision_guard.report(precision_guard.fallback_note(self.dtype, self.precision_difference))
        self.model, self.dtype = reference_model, torch.float32
        return reference

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
        with torch.inference_mode():
            # uint8 crosses to the device and back (a quarter of float32's bytes).
            batch = torch.from_numpy(np.stack(frames)).to(self.device)
            if self._reference is not None:
                result = self._settle_precision(batch)
            else:
                result = self._step(batch)
                if self.compiled:
                    self._compiled.add((tuple(batch.shape[1:3]), len(batch)))
            result = result.cpu().numpy()
        return list(result[:count])

"""Turns RGB uint8 frames into stylised RGB uint8 frames with the stylizing network."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from utils import image_to_tensor, tensor_to_array


class Processor:
    """Runs the network on batches of same-sized frames; one code path for every device."""

    def __init__(self, model: torch.nn.Module, device: torch.device | str):
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()

    def __call__(self, frames: Sequence[np.ndarray]) -> list[np.ndarray]:
        if not frames:
            return []
        shapes = {frame.shape for frame in frames}
        if len(shapes) > 1:
            raise ValueError(f"a batch needs frames of one size, got {sorted(shapes)}")
        with torch.inference_mode():
            batch = torch.stack([image_to_tensor(frame) for frame in frames]).to(self.device)
            return [tensor_to_array(result) for result in self.model(batch)]

"""Optical flow between frames, warping by it, and where it can be trusted: shared by the
warping-error metric (stylization/stability.py) and the flow loss (train/loss.py).

Flow arrays are H x W x 2 (x then y displacement, in pixels) as OpenCV and .flo files hold
them; flow tensors are N x 2 x H x W. "flow from a to b" maps a pixel x of a to x + flow(x) in b,
so warp(b, flow) lines b up with a.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch

import config
from common.errors import fail

FLO_MAGIC = 202021.25  # the Middlebury .flo header's sanity check ("PIEH" read as a float)


def optical_flow(first: np.ndarray, second: np.ndarray, method: str | None = None) -> np.ndarray:
    """Dense flow from first to second (RGB uint8 H x W x 3) with OpenCV, as H x W x 2 float32."""
    method = config.FLOW_METHOD if method is None else method
    if method not in config.FLOW_METHODS:
        fail(f"unknown flow method {method!r}: use {', '.join(config.FLOW_METHODS)}")
    a, b = (cv2.cvtColor(np.ascontiguousarray(f), cv2.COLOR_RGB2GRAY) for f in (first, second))
    if method == "dis":
        return cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM).calc(a, b, None)
    return cv2.calcOpticalFlowFarneback(a, b, None, pyr_scale=0.5, levels=4, winsize=15,
                                        iterations=3, poly_n=5, poly_sigma=1.2, flags=0)


def flow_to_tensor(flow: np.ndarray) -> torch.Tensor:
    """H x W x 2 array -> 2 x H x W float32 tensor."""
    return torch.from_numpy(np.ascontiguousarray(flow, dtype=np.float32)).permute(2, 0, 1)


def warp(images: torch.Tensor, flow: torch.Tensor, mode: str = "bilinear") -> torch.Tensor:
    """Backward warp: out(x) = images(x + flow(x)), bilinear (or mode, as grid_sample names
    it), edges clamped.

    images N x C x H x W, flow N x 2 x H x W in pixels; computed in float32. Differentiable in
    images, so the flow loss can train through it.
    """
    n, _, height, width = images.shape
    ys, xs = torch.meshgrid(torch.arange(height, device=flow.device, dtype=torch.float32),
                            torch.arange(width, device=flow.device, dtype=torch.float32), indexing="ij")
    x = (xs + flow[:, 0].float()) * (2 / max(width - 1, 1)) - 1
    y = (ys + flow[:, 1].float()) * (2 / max(height - 1, 1)) - 1
    return torch.nn.functional.grid_sample(images.float(), torch.stack([x, y], dim=-1),
                                           mode=mode, padding_mode="border", align_corners=True)


def valid_flow_mask(flow: torch.Tensor, flow_back: torch.Tensor) -> torch.Tensor:
    """N x 1 x H x W: 1 where flow (a to b) can be trusted, 0 where the pixel is occluded
    (forward-backward check against flow_back, b to a) or on a motion boundary; the
    thresholds are config.OCCLUSION's."""
    c = config.OCCLUSION
    flow, back = flow.float(), warp(flow_back, flow)  # the backward flow at x + flow(x)
    length = flow.pow(2).sum(1)
    inconsistent = ((flow + back).pow(2).sum(1)
                    > c["consistency_ratio"] * (length + back.pow(2).sum(1)) + c["consistency_offset"])
    du_dy, du_dx = torch.gradient(flow[:, 0], dim=(1, 2))
    dv_dy, dv_dx = torch.gradient(flow[:, 1], dim=(1, 2))
    boundary = (du_dx ** 2 + du_dy ** 2 + dv_dx ** 2 + dv_dy ** 2
                > c["boundary_ratio"] * length + c["boundary_offset"])
    return (~(inconsistent | boundary)).float().unsqueeze(1)


def is_scene_cut(first: np.ndarray, second: np.ndarray) -> bool:
    """Whether two RGB uint8 frames belong to different shots: the correlation of their
    small greyscale thumbnails (blind to brightness and contrast, tolerant of motion) is
    below config.SCENE_CUT_CORRELATION."""
    size = config.SCENE_CUT_THUMBNAIL

    def thumbnail(frame: np.ndarray) -> np.ndarray:
        grey = cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2GRAY)
        small = cv2.resize(grey, (size, size), interpolation=cv2.INTER_AREA).astype(np.float64)
        small -= small.mean()
        return small / (np.sqrt((small ** 2).sum()) + 1e-6)  # a flat frame correlates with nothing

    return float((thumbnail(first) * thumbnail(second)).sum()) < config.SCENE_CUT_CORRELATION


def read_flo(path: str | Path) -> np.ndarray:
    """A Middlebury .flo file as H x W x 2 float32 (little-endian: magic, width, height, u v ...)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        fail(f"cannot read flow file {path} ({err.strerror})")
    header_ok = len(data) >= 12 and np.frombuffer(data[:4], "<f4")[0] == FLO_MAGIC
    width, height = np.frombuffer(data[4:12], "<i4") if header_ok else (0, 0)
    if not header_ok or width < 1 or height < 1 or len(data) != 12 + 8 * int(width) * int(height):
        fail(f"{path} is not a Middlebury .flo flow file (bad header or size)")
    return np.frombuffer(data[12:], "<f4").reshape(int(height), int(width), 2).astype(np.float32)

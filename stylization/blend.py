"""The output's look, frame by frame: style strength, the input's colours, temporal smoothing.

All three work on the network's output and the input frame it came from (RGB uint8 H x W x 3
of one size), so they apply to every model this project runs, without retraining:

- blend_strength: S * stylised + (1 - S) * input.
- preserve_color: the stylised luminance with the input's chroma (Gatys et al. 2016,
  "Preserving Color in Neural Artistic Style Transfer", the luminance-only variant) in
  YCbCr (BT.601 full range, config.LUMA_WEIGHTS). Y is a weighted mean of R, G, B with weights
  summing to 1 and Cb, Cr are differences whose weights sum to 0, so adding one number to R, G
  and B moves Y by that number and leaves Cb and Cr alone: the result is the input plus
  (Y_stylised - Y_input) on every channel, exact up to clipping to 0-255 where that leaves the
  RGB cube.
- TemporalSmoother: out_t = (1 - W m) stylised_t + W m warp(out_{t-1}), with the flow of the
  input frames from t to t-1 and m the mask of pixels where that flow is reliable
  (flow.valid_flow_mask: forward-backward and motion-boundary checks); nothing is blended
  across a scene cut (flow.is_scene_cut). Following the content rather than the pixel grid is
  what keeps moving things from ghosting, as a plain running average would. The blend's fine
  detail is then scaled back to the stylised frame's contrast (keep_detail), since averaging
  strokes that do not line up exactly fades the style.

Order (Look): colour, then strength, then smoothing. Colour and strength are linear and
commute up to clipping (both give input + S (Y_stylised - Y_input) on every channel); strength
comes second so that strength 0 returns the input exactly. Smoothing comes last because it
blends with the previous *output*, which already has the look.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import cv2
import numpy as np
import torch

import config
from flow import flow_to_tensor, is_scene_cut, optical_flow, valid_flow_mask, warp

Finish = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (input frame, stylised) -> output


def blend_strength(stylised: np.ndarray, frame: np.ndarray, strength: float) -> np.ndarray:
    """strength * stylised + (1 - strength) * frame, rounded to uint8; 0 returns frame."""
    if not 0 <= strength <= 1:
        raise ValueError(f"strength must be in [0, 1], got {strength}")
    return cv2.addWeighted(stylised, float(strength), frame, 1.0 - float(strength), 0.0)


def luminance(frame: np.ndarray) -> np.ndarray:
    """Y of RGB frames (... x 3, any dtype) as float32 in the frames' units."""
    return frame.astype(np.float32) @ np.asarray(config.LUMA_WEIGHTS, dtype=np.float32)


def preserve_color(stylised: np.ndarray, frame: np.ndarray) -> np.ndarray:
    """The stylised frame's luminance with frame's chroma (Cb, Cr), uint8."""
    if stylised.shape != frame.shape:
        raise ValueError(f"stylised {stylised.shape} and input {frame.shape} frames differ in size")
    shift = luminance(stylised) - luminance(frame)
    return np.clip(np.rint(frame + shift[..., None]), 0, 255).astype(np.uint8)


def frame_to_tensor(frame: np.ndarray) -> torch.Tensor:
    """RGB uint8 H x W x 3 -> 3 x H x W float32 in 0-255 (the smoother's working form)."""
    return torch.from_numpy(np.ascontiguousarray(frame)).permute(2, 0, 1).float()


def tensor_to_frame(tensor: torch.Tensor) -> np.ndarray:
    """3 x H x W float in 0-255 -> RGB uint8 H x W x 3, rounded."""
    return tensor.round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).contiguous().numpy()


def warp_previous(previous: torch.Tensor, flow_back: np.ndarray,
                  flow_forward: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """The previous output lined up with the current frame, and where that can be trusted.

    previous: 3 x H x W; flow_back: H x W x 2 from the current input frame to the previous one
    (so current(x) ~ previous(x + flow_back(x))); flow_forward: from the previous to the current
    one, for the checks. Returns (warped 3 x H x W, valid 1 x H x W with 1 = reliable).
    """
    back, forward = flow_to_tensor(flow_back)[None], flow_to_tensor(flow_forward)[None]
    # Bicubic can overshoot at edges: clamped to the range of frames.
    warped = warp(previous[None], back, config.SMOOTH_WARP_MODE)[0].clamp_(0, 255)
    return warped, valid_flow_mask(back, forward)[0]


def blend_previous(stylised: torch.Tensor, warped: torch.Tensor, valid: torch.Tensor,
                   weight: float) -> torch.Tensor:
    """(1 - weight * valid) * stylised + weight * valid * warped."""
    share = weight * valid
    return stylised * (1 - share) + warped * share


def gaussian_blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """C x H x W blurred per channel with a separable Gaussian, edges reflected."""
    radius = max(1, int(np.ceil(3 * sigma)))
    taps = torch.exp(-0.5 * (torch.arange(-radius, radius + 1, dtype=torch.float32) / sigma) ** 2)
    taps = (taps / taps.sum()).to(images.device)
    channels = images.shape[0]
    x = images[None].float()
    for kernel, pad in ((taps.view(1, 1, 1, -1), (radius, radius, 0, 0)),
                        (taps.view(1, 1, -1, 1), (0, 0, radius, radius))):
        x = torch.nn.functional.conv2d(torch.nn.functional.pad(x, pad, mode="reflect"),
                                       kernel.expand(channels, 1, *kernel.shape[2:]), groups=channels)
    return x[0]


def keep_detail(blended: torch.Tensor, stylised: torch.Tensor,
                sigma: float | None = None,
                share: float | None = None,
                max_gain: float | None = None) -> torch.Tensor:
    """The blended frame with the fine detail it lost scaled back towards the stylised frame's
    contrast.

    A weighted mean of textures that do not line up exactly (the network's strokes move a
    little from frame to frame) has less fine-scale energy than either: the style fades. Per
    channel, one gain scales the detail (the frame minus its Gaussian blur of sigma pixels):
    the gain that would give it the stylised frame's energy (at least 1, at most max_gain),
    taken `share` of the way from 1 (1: all the energy back). The blurred part, the steady one,
    is left alone; where the two frames agree the gain is 1.
    """
    sigma = config.SMOOTH_DETAIL["sigma"] if sigma is None else sigma
    share = config.SMOOTH_DETAIL["share"] if share is None else share
    max_gain = config.SMOOTH_DETAIL["max_gain"] if max_gain is None else max_gain
    detail = blended - gaussian_blur(blended, sigma)
    wanted = (stylised - gaussian_blur(stylised, sigma)).pow(2).mean((1, 2))
    have = detail.pow(2).mean((1, 2))
    full = (wanted / have.clamp_min(1e-6)).sqrt().clamp(1.0, max_gain)
    return blended + detail * (share * (full - 1)).view(-1, 1, 1)


class TemporalSmoother:
    """Steadies one video or stream: call it with each input frame and its stylised frame, in
    order; it returns the output frame and keeps the previous input frame and output.

    weight 0 returns the stylised frames unchanged. flows, if given to a call, are the
    (current -> previous, previous -> current) flows of the input frames, else OpenCV's
    (config.FLOW_METHOD), computed at the frames' size, which is the output size.
    """

    def __init__(self, weight: float, method: str | None = None):
        method = config.FLOW_METHOD if method is None else method
        if not 0 <= weight < 1:
            raise ValueError(f"the smoothing weight must be in [0, 1), got {weight}")
        self.weight = float(weight)
        self.method = method
        self._previous: tuple[np.ndarray, torch.Tensor] | None = None  # input frame, output
        self.blended = 0  # frames blended with the previous output
        self.cuts = 0  # frames not blended because a scene cut came before them

    def __call__(self, frame: np.ndarray, stylised: np.ndarray,
                 flows: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
        if self.weight == 0:
            return stylised
        if frame.shape != stylised.shape:
            raise ValueError(f"input frame {frame.shape} and stylised frame {stylised.shape} differ in size")
        current = frame_to_tensor(stylised)
        previous = self._previous
        if previous is None or previous[0].shape != frame.shape:
            output = current
        elif is_scene_cut(previous[0], frame):
            self.cuts += 1
            output = current
        else:
            if flows is None:
                flows = (optical_flow(frame, previous[0], self.method),
                         optical_flow(previous[0], frame, self.method))
            warped, valid = warp_previous(previous[1], *flows)
            output = keep_detail(blend_previous(current, warped, valid, self.weight), current)
            self.blended += 1
        # The unrounded output is kept, so rounding does not pile up from frame to frame.
        self._previous = (frame, output)
        return tensor_to_frame(output)


@dataclass(frozen=True)
class Look:
    """What stylize.py's --strength, --preserve_color and --smooth ask of the output."""

    strength: float = 1.0
    preserve_color: bool = False
    smooth: float = 0.0

    @property
    def is_identity(self) -> bool:
        return self.strength == 1 and not self.preserve_color and self.smooth == 0

    def start(self) -> Finish:
        """A function (input frame, stylised frame) -> output frame for one source; each
        source needs its own, since the smoother remembers the previous frame."""
        smoother = TemporalSmoother(self.smooth) if self.smooth > 0 else None

        def finish(frame: np.ndarray, stylised: np.ndarray) -> np.ndarray:
            out = preserve_color(stylised, frame) if self.preserve_color else stylised
            if self.strength != 1:
                out = blend_strength(out, frame, self.strength)
            return smoother(frame, out) if smoother is not None else out
        return finish

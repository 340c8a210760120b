"""Frames larger than memory allows, stylised on overlapping tiles with the whole frame's
instance-norm statistics.

An instance norm divides each channel by its mean and variance over the whole frame, so a tile
run on its own would be normalised by its own statistics: colours and contrast would jump from
tile to tile. With the statistics fixed, every norm is a per-channel affine map and the network
is a local operator: an output pixel depends only on the input pixels within receptive_radius of
it. So TiledNetwork

1. runs the frame scaled down to a tile's size once, each norm recording its statistics (and
   the order in which the norms run);
2. with config.TILE_STATISTICS "exact", measures each norm's statistics at full resolution, one
   norm after the other: a pass over the tiles, with the norms before it already exact, that
   stops at that norm and sums its input over each tile's own (non-overlapping) part. A norm's
   input depends on the statistics of every norm before it, so they cannot all be measured in
   one pass. "scaled" keeps the scaled-down copy's statistics: one pass instead of about one per
   norm, but that copy lacks the fine detail the first layers respond to (docs/tiling.md);
3. runs the tiles with the final statistics. Each tile's window reaches the receptive radius
   past the part it contributes, so what it contributes equals the whole frame's output with
   those statistics (up to float rounding), and neighbours cross-fade linearly over
   config.TILE_FEATHER pixels: no seam, no colour jump.

Tile windows start on multiples of the network's total stride, so that every strided
convolution samples the same grid as on the whole frame.

Only PyTorch networks can be tiled: an ONNX graph computes its norms' statistics inside itself
and cannot be given stored ones (see tileable).
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import cv2
import numpy as np
import torch
from torch import nn

import config
from common.images import frames_to_batch
from network.fast_inference import ChannelGroupNorm, TwoPassInstanceNorm


# ----------------------------------------------------------------------------- the plan
@dataclass(frozen=True)
class Span:
    """One tile along one axis: the window [start, stop) the network sees, and the part
    [cut_lo, cut_hi) it owns (its contribution fades in and out around the cuts)."""

    start: int
    stop: int
    cut_lo: int
    cut_hi: int


def tile_window(height: int, width: int, budget_pixels: float, min_side: int) -> tuple[int, int]:
    """Window height and width of at most budget_pixels (never below min_side): square where
    both sides exceed it, else the whole short side and as much of the long one as fits."""
    side = max(min_side, int(math.sqrt(budget_pixels)))
    if height <= side:
        return height, max(min_side, int(budget_pixels // height))
    if width <= side:
        return max(min_side, int(budget_pixels // width)), width
    return side, side


def min_window(radius: int, feather: int, align: int) -> int:
    """The smallest window that still owns a part wider than two feather ramps."""
    return 2 * radius + 3 * feather + 4 * align


def plan_axis(length: int, window: int, radius: int, feather: int, align: int) -> list[Span]:
    """Tiles along an axis of `length` pixels with windows of about `window` pixels.

    Cuts lie on multiples of align; window i reaches radius + feather / 2 past its cuts
    (clipped to the frame, start floored to align), so that inside its feather ramps the
    network sees all the context the whole frame would give it.
    """
    if length <= window:
        return [Span(0, length, 0, length)]
    core = window - 2 * radius - feather - 2 * align
    if core < 2 * feather + 2 * align:
        raise ValueError(f"a window of {window} pixels is too small for a receptive radius of "
                         f"{radius} (at least {min_window(radius, feather, align)})")
    count = math.ceil(length / core)
    cuts = [0, *[round(i * length / count / align) * align for i in range(1, count)], length]
    reach = radius + (feather + 1) // 2
    windows = [(max(0, lo - reach) // align * align, min(length, hi + reach))
               for lo, hi in zip(cuts, cuts[1:])]
    # Windows of one size (more context never changes a tile's contribution): every tile then
    # needs the same memory, which the allocator reuses, where tiles of many sizes would leave
    # it holding blocks of each (glibc keeps freed memory, common.devices.keep_freed_memory).
    size = max(stop - start for start, stop in windows)
    spans = []
    for (start, stop), lo, hi in zip(windows, cuts, cuts[1:]):
        start = min(start, (length - size) // align * align)
        spans.append(Span(start, length if hi == length else min(length, start + size), lo, hi))
    return spans


def axis_weights(span: Span, length: int, feather: int) -> np.ndarray:
    """Weights of a tile along one axis, over its window: 1 on its own part, linear ramps of
    feather pixels centred on its inner cuts; neighbours' weights sum to 1 at every pixel."""
    x = np.arange(span.start, span.stop, dtype=np.float64) + 0.5  # pixel centres
    weight = np.ones_like(x)
    if span.cut_lo > 0:
        weight = np.minimum(weight, np.clip((x - span.cut_lo) / feather + 0.5, 0, 1))
    if span.cut_hi < length:
        weight = np.minimum(weight, np.clip((span.cut_hi - x) / feather + 0.5, 0, 1))
    return weight.astype(np.float32)


# ----------------------------------------------------------------------------- the network
def tileable(model: nn.Module) -> bool:
    """Whether a network can run on tiles: it must be PyTorch modules whose instance norms can be
    given stored statistics. An ONNX model computes its statistics inside the graph."""
    from network.onnx_model import OnnxModel

    return not isinstance(model, OnnxModel)


def receptive_radius(model: nn.Module, probe_side: int = 64) -> tuple[int, int]:
    """(radius, total stride) of a network, from the convolutions one probe run calls.

    Each convolution widens the receptive field by kernel // 2 (times its dilation) of its
    input's pixels, that is times the input's scale in frame pixels; going up a resolution
    (nearest or bilinear resize) can reach one more pixel of the coarse map, so a convolution
    whose input is finer than the previous one's output adds that output's scale. The result
    is an upper bound: with fixed statistics, no output pixel depends on input further away.
    """
    convs: list[tuple[int, int, float, float]] = []  # kernel reach, dilation, scale in, scale out

    def hook(module: nn.Conv2d, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        # From the output's width: the input's includes the convolution's own padding.
        scale_out = probe_side / output.shape[-1]
        scale_in = scale_out / module.stride[-1]
        convs.append((module.kernel_size[-1] // 2, module.dilation[-1], scale_in, scale_out))

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.Conv2d)]
    parameter = next(model.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    dtype = parameter.dtype if parameter is not None else torch.float32
    try:
        with torch.inference_mode():
            model(torch.rand(1, 3, probe_side, probe_side, device=device, dtype=dtype))
    finally:
        for handle in handles:
            handle.remove()
    radius, previous_out = 0.0, 1.0
    for reach, dilation, scale_in, scale_out in convs:
        if scale_in < previous_out * 0.99:
            radius += previous_out
        radius += reach * dilation * scale_in
        previous_out = scale_out
    stride = max([1.0, *[c[3] for c in convs]])
    return math.ceil(radius), int(round(stride))


_SUM_ROWS = 64  # rows of a feature map summed at once when measuring statistics


class _Measured(Exception):
    """Ends a tile's run at the norm being measured."""


class _StoredStatsNorm(nn.Module):
    """Stands in for an instance norm: records the statistics of its input (record), or
    normalises with stored ones (apply), optionally summing its input over the tile's own part
    (measure). Computed in float32, like TwoPassInstanceNorm."""

    def __init__(self, weight: torch.Tensor | None, bias: torch.Tensor | None, eps: float,
                 region: list, order: list):
        super().__init__()
        self.order = order  # shared: the norms in the order a record run called them
        self.weight, self.bias, self.eps = weight, bias, eps
        self.mode = "record"
        self.mean: torch.Tensor | None = None
        self.var: torch.Tensor | None = None
        self.region = region  # shared with TiledNetwork: [window h, window w, (y0, y1, x0, x1)]
        self.sums = torch.zeros(0)
        self.count = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x.float()
        if self.mode == "record":
            self.order.append(self)
            self.mean = y.mean((2, 3), keepdim=True)
            self.var = y.var((2, 3), unbiased=False, keepdim=True)
        elif self.mode == "measure":
            self._add(y)
            raise _Measured  # the layers after this one need its statistics first
        # One multiply-add and one full-size result: the norm and its affine map folded into a
        # per-channel scale and shift (a norm at full resolution is the tiles' largest tensor).
        scale = torch.rsqrt(self.var + self.eps)
        shift = -self.mean * scale
        if self.weight is not None:
            scale = scale * self.weight.float()[:, None, None]
            shift = shift * self.weight.float()[:, None, None] + self.bias.float()[:, None, None]
        return torch.addcmul(shift, y, scale).to(x.dtype)

    def _add(self, y: torch.Tensor) -> None:
        window_h, window_w, (y0, y1, x0, x1) = self.region
        # This map's pixels per frame pixel; cuts are multiples of the total stride, so the
        # owned part starts on a whole pixel of every map. The last tile owns everything to
        # the map's end, the rows and columns the network padded included, as on the whole frame.
        sy, sx = round(window_h / y.shape[-2]), round(window_w / y.shape[-1])
        part = y[..., y0 // sy: None if y1 is None else y1 // sy,
                 x0 // sx: None if x1 is None else x1 // sx]
        # A band of rows at a time, in float32, into float64 sums: a float64 copy or the squares
        # of a whole full-resolution map would need more memory than the tile's pass itself.
        sums = torch.zeros(2, y.shape[1], dtype=torch.float64, device=y.device)
        for band in part.split(_SUM_ROWS, dim=-2):
            sums[0] += band.sum((0, 2, 3)).double()
            sums[1] += band.square().sum((0, 2, 3)).double()
        self.sums = sums if self.count == 0 else self.sums + sums
        self.count += part.shape[-1] * part.shape[-2]

    def start_measuring(self) -> None:
        self.mode, self.count = "measure", 0

    def finish_measuring(self) -> None:
        mean = self.sums[0] / self.count
        var = (self.sums[1] / self.count - mean.square()).clamp_min(0)
        self.mean = mean.float()[None, :, None, None]
        self.var = var.float()[None, :, None, None]
        self.mode = "apply"


def _norm_parameters(module: nn.Module) -> tuple[torch.Tensor | None, torch.Tensor | None, float] | None:
    if isinstance(module, nn.InstanceNorm2d):
        return (module.weight, module.bias, module.eps) if module.affine else (None, None, module.eps)
    if isinstance(module, (TwoPassInstanceNorm, ChannelGroupNorm)):
        return module.weight, module.bias, module.eps
    return None


@dataclass(frozen=True)
class TilePlan:
    rows: list[Span]
    columns: list[Span]

    @property
    def count(self) -> int:
        return len(self.rows) * len(self.columns)


class TiledNetwork:
    """Runs `model` (RGB [0, 1] in and out at the input's size, weights in dtype) on one
    uint8 frame at a time, in tiles of about budget_pixels. `source` is the model before
    network.fast_inference rewrote it (same function), whose plain convolutions
    receptive_radius can see."""

    def __init__(self, model: nn.Module, source: nn.Module, device: torch.device,
                 dtype: torch.dtype = torch.float32, feather: int | None = None,
                 statistics: str | None = None):
        feather = config.TILE_FEATHER if feather is None else feather
        statistics = config.TILE_STATISTICS if statistics is None else statistics
        if statistics not in ("exact", "scaled"):
            raise ValueError(f"statistics must be 'exact' or 'scaled', not {statistics!r}")
        self.device, self.dtype = device, dtype
        self.feather, self.statistics = feather, statistics
        self._order: list[_StoredStatsNorm] = []
        radius, self.align = receptive_radius(source)
        self.radius = -(-radius // self.align) * self.align
        self.model = copy.deepcopy(model)
        self._region: list = [1, 1, (0, None, 0, None)]
        self.norms: list[_StoredStatsNorm] = []
        for module in list(self.model.modules()):
            for name, child in module.named_children():
                found = _norm_parameters(child)
                if found is not None:
                    norm = _StoredStatsNorm(*found, region=self._region, order=self._order)
                    setattr(module, name, norm)
                    self.norms.append(norm)

    @property
    def min_side(self) -> int:
        return min_window(self.radius, self.feather, self.align)

    def plan(self, height: int, width: int, budget_pixels: float) -> TilePlan:
        """Tiles of a frame above budget_pixels: windows of config.TILE_WINDOW_SHARE of it."""
        window_h, window_w = tile_window(height, width, budget_pixels * config.TILE_WINDOW_SHARE,
                                         self.min_side)
        return TilePlan(plan_axis(height, window_h, self.radius, self.feather, self.align),
                        plan_axis(width, window_w, self.radius, self.feather, self.align))

    def _run(self, frame: np.ndarray) -> torch.Tensor:
        batch = frames_to_batch(torch.from_numpy(np.ascontiguousarray(frame))[None].to(self.device),
                                self.dtype)
        return self.model(batch)

    def _set_mode(self, mode: str) -> None:
        for norm in self.norms:
            norm.mode = mode

    def __call__(self, frame: np.ndarray, budget_pixels: float) -> np.ndarray:
        """The stylised frame (RGB uint8 HxWx3) of an RGB uint8 frame."""
        height, width = frame.shape[:2]
        plan = self.plan(height, width, budget_pixels)
        with torch.inference_mode():
            # No larger than a tile's window: no pass needs more memory than a tile's.
            window = max(r.stop - r.start for r in plan.rows) * max(c.stop - c.start for c in plan.columns)
            scale = min(1.0, math.sqrt(window / (height * width)))
            small = cv2.resize(frame, (max(1, round(width * scale)), max(1, round(height * scale))),
                               interpolation=cv2.INTER_AREA)
            self._order.clear()
            self._set_mode("record")
            self._run(small)  # also tells the order in which the norms run
            if self.statistics == "exact":
                for norm in list(self._order):
                    norm.start_measuring()
                    self._tiles(frame, plan, None)
                    norm.finish_measuring()
            self._set_mode("apply")
            total = np.zeros((height, width, 3), np.float32)
            self._tiles(frame, plan, total)
        # As common.images.batch_to_frames rounds; in place, for a 48-megapixel frame's float32 copies
        # are 576 MB each.
        np.multiply(total, 255.0, out=total)
        np.clip(total, 0, 255, out=total)
        np.rint(total, out=total)
        return total.astype(np.uint8)

    def _tiles(self, frame: np.ndarray, plan: TilePlan, total: np.ndarray | None) -> None:
        height, width = frame.shape[:2]
        for row in plan.rows:
            weight_y = axis_weights(row, height, self.feather)[:, None, None]
            for column in plan.columns:
                window = frame[row.start:row.stop, column.start:column.stop]
                self._region[:] = [row.stop - row.start, column.stop - column.start,
                                   (row.cut_lo - row.start,
                                    None if row.cut_hi == height else row.cut_hi - row.start,
                                    column.cut_lo - column.start,
                                    None if column.cut_hi == width else column.cut_hi - column.start)]
                if total is None:  # measuring one norm's statistics
                    try:
                        self._run(window)
                    except _Measured:
                        pass
                    continue
                result = self._run(window)
                tile = result[0].float().permute(1, 2, 0).cpu().numpy()
                weight = weight_y * axis_weights(column, width, self.feather)[None, :, None]
                total[row.start:row.stop, column.start:column.stop] += tile * weight

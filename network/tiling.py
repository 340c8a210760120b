"""Frames larger than memory allows, stylised on tiles with the whole frame's instance-norm
statistics.

An instance norm divides each channel by its mean and variance over the whole frame, so a tile
run on its own would be normalised by its own statistics: colours and contrast would jump from
tile to tile. With the statistics fixed, every norm is a per-channel affine map and the network
is a local operator: an output pixel depends only on the input pixels within receptive_radius of
it. A norm's statistics can then be summed over the tiles, each tile adding its own
(non-overlapping) part, once the norms before it have theirs: they are measured one after the
other, in passes over the tiles that stop at the norm being measured.

TiledNetwork cuts a network where its maps are smallest (this project's, network/style_network.py,
and the other projects' layouts it runs: network/examples_network.py, original_network.py; all
three go down twice or more, through residual blocks, and back up), and keeps those maps whole
between the passes:

1. front, frame to the coarsest map (1/16 of the pixels): one pass per norm; the last one's pass
   also keeps its input, for the whole frame, which is then normalised in place;
2. blocks: the first convolution layer runs once over tiles of the kept map, keeping its output
   before the norm, whose statistics that same pass sums (norm and ReLU are then applied in
   place); the second, in a residual block, runs twice, once to measure its norm and once to add
   its output to the block's input map, tile by tile: two coarse maps at a time (the original
   project's blocks add nothing back: their second layer is kept like the first);
3. back, coarse map to output: one pass per norm, then the output pass.

That is about 1.8 passes of the whole network's work; measuring every norm from the frame took
about 8 for the shipped network (docs/tiling.md). Only coarse maps are kept: a full-resolution
map of a 48-megapixel photo would take 6 GB. A layout not cut into stages (_stages) would run
as one, frame to output: a pass per norm, then the output pass.

Each window reaches the receptive radius past the part it owns, so its part equals the whole
frame's output there (up to float rounding), and the parts are written side by side: no seam.
Windows start on multiples of the network's total stride, so that every strided convolution
samples the same grid as on the whole frame.

Only PyTorch networks can be tiled: an ONNX graph computes its norms' statistics inside itself
and cannot be given stored ones (see tileable).
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Callable, Iterator

import numpy as np
import torch
from torch import nn

import config
from common.images import batch_to_frames, frames_to_batch
from network.examples_network import ExamplesNetwork
from network.fast_inference import ChannelGroupNorm, TwoPassInstanceNorm
from network.formats import RangeAdapter
from network.original_network import OriginalNetwork
from network.style_network import StylizingNetwork


# ----------------------------------------------------------------------------- the plan
@dataclass(frozen=True)
class Span:
    """One tile along one axis: the window [start, stop) the network sees, and the part
    [cut_lo, cut_hi) it owns."""

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


def min_window(radius: int, align: int) -> int:
    """The smallest window that still owns a part two strides wide."""
    return 2 * radius + 4 * align


def plan_axis(length: int, window: int, radius: int, align: int) -> list[Span]:
    """Tiles along an axis of `length` pixels with windows of about `window` pixels.

    Cuts lie on multiples of align; window i reaches radius past its cuts (clipped to the
    frame, start floored to align), so that the network sees all the context of its own part
    that the whole frame would give it.
    """
    if length <= window:
        return [Span(0, length, 0, length)]
    core = window - 2 * radius - 2 * align
    if core < 2 * align:
        raise ValueError(f"a window of {window} pixels is too small for a receptive radius of "
                         f"{radius} (at least {min_window(radius, align)})")
    count = math.ceil(length / core)
    cuts = [0, *[round(i * length / count / align) * align for i in range(1, count)], length]
    windows = [(max(0, lo - radius) // align * align, min(length, hi + radius))
               for lo, hi in zip(cuts, cuts[1:])]
    # Windows of one size (more context never changes a tile's part): every tile then needs
    # the same memory, which the allocator reuses, where tiles of many sizes would leave it
    # holding blocks of each (glibc keeps freed memory, common.devices.keep_freed_memory).
    size = max(stop - start for start, stop in windows)
    spans = []
    for (start, stop), lo, hi in zip(windows, cuts, cuts[1:]):
        if start + size < length:
            stop = start + size
        else:  # moved back from the end, which it then reaches: more context, never less
            start, stop = max(0, (length - size) // align * align), length
        spans.append(Span(start, stop, lo, hi))
    return spans


@dataclass(frozen=True)
class TilePlan:
    rows: list[Span]
    columns: list[Span]

    @property
    def count(self) -> int:
        return len(self.rows) * len(self.columns)


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


_SUM_ROWS = 64  # rows of a map summed (or normalised in place) at once


class _Measured(Exception):
    """Ends a tile's run at the norm being measured."""


@dataclass
class _Region:
    """The tile being run, in frame pixels: its window's height and width, the part it owns
    relative to the window (y0, y1, x0, x1; None: to the end of the map, where the network's
    padding belongs to the last tile as on the whole frame) and the window's top left corner."""

    window: tuple[int, int] = (1, 1)
    own: tuple[int, int | None, int, int | None] = (0, None, 0, None)
    origin: tuple[int, int] = (0, 0)

    def owned(self, y: torch.Tensor) -> tuple[torch.Tensor, int, int]:
        """The owned part of a map y of the window, and the row and column of the whole
        frame's map where it begins. Cuts are multiples of the total stride, so the part
        starts on a whole pixel of every map."""
        sy, sx = round(self.window[0] / y.shape[-2]), round(self.window[1] / y.shape[-1])
        y0, y1, x0, x1 = self.own
        part = y[..., y0 // sy: None if y1 is None else y1 // sy,
                 x0 // sx: None if x1 is None else x1 // sx]
        return part, (self.origin[0] + y0) // sy, (self.origin[1] + x0) // sx


class _StoredStatsNorm(nn.Module):
    """Stands in for an instance norm: normalises with stored statistics (apply), records its
    own input's (record), or sums its input over the tile's own part and ends the run
    (measure), keeping that part in a map of the whole frame if given one. Computed in
    float32, like TwoPassInstanceNorm."""

    def __init__(self, weight: torch.Tensor | None, bias: torch.Tensor | None, eps: float,
                 region: _Region):
        super().__init__()
        self.weight, self.bias, self.eps = weight, bias, eps
        self.mode = "apply"
        self.mean: torch.Tensor | None = None
        self.var: torch.Tensor | None = None
        self.region = region  # shared with TiledNetwork, which sets it for each tile
        self.sums = torch.zeros(0)
        self.count = 0
        self.keep: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x.float()
        if self.mode == "record":
            self.mean = y.mean((2, 3), keepdim=True)
            self.var = y.var((2, 3), unbiased=False, keepdim=True)
        elif self.mode == "measure":
            self._add(y)
            raise _Measured  # the layers after this one need its statistics first
        # One multiply-add and one full-size result (a norm at full resolution is a tile's
        # largest tensor).
        scale, shift = self.scale_shift()
        return torch.addcmul(shift, y, scale).to(x.dtype)

    def scale_shift(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The norm and its affine map folded into a per-channel scale and shift."""
        scale = torch.rsqrt(self.var + self.eps)
        shift = -self.mean * scale
        if self.weight is not None:
            scale = scale * self.weight.float()[:, None, None]
            shift = shift * self.weight.float()[:, None, None] + self.bias.float()[:, None, None]
        return scale, shift

    def _add(self, y: torch.Tensor) -> None:
        part, top, left = self.region.owned(y)
        # A band of rows at a time, in float32, into float64 sums: a float64 copy or the squares
        # of a whole full-resolution map would need more memory than the tile's pass itself.
        sums = torch.zeros(2, y.shape[1], dtype=torch.float64, device=y.device)
        for band in part.split(_SUM_ROWS, dim=-2):
            sums[0] += band.sum((0, 2, 3)).double()
            sums[1] += band.square().sum((0, 2, 3)).double()
        self.sums = sums if self.count == 0 else self.sums + sums
        self.count += part.shape[-1] * part.shape[-2]
        if self.keep is not None:
            self.keep[..., top:top + part.shape[-2], left:left + part.shape[-1]] = part

    def start_measuring(self, keep: torch.Tensor | None = None) -> None:
        self.mode, self.count, self.keep = "measure", 0, keep

    def finish_measuring(self) -> None:
        mean = self.sums[0] / self.count
        var = (self.sums[1] / self.count - mean.square()).clamp_min(0)
        self.mean = mean.float()[None, :, None, None]
        self.var = var.float()[None, :, None, None]
        self.mode, self.keep = "apply", None


def _norm_parameters(module: nn.Module) -> tuple[torch.Tensor | None, torch.Tensor | None, float] | None:
    if isinstance(module, nn.InstanceNorm2d):
        return (module.weight, module.bias, module.eps) if module.affine else (None, None, module.eps)
    if isinstance(module, (TwoPassInstanceNorm, ChannelGroupNorm)):
        return module.weight, module.bias, module.eps
    return None


def _relu_follows(layer: nn.Module) -> bool:
    return isinstance(layer, nn.Sequential) and isinstance(layer[-1], nn.ReLU)


@dataclass
class _Layer:
    """A part of a network that ends in an instance norm (then a ReLU if relu), or the back:
    coarse map to output. norms: the stand-in norms it calls, in order."""

    run: Callable[[torch.Tensor], torch.Tensor]
    relu: bool = False
    norms: list[_StoredStatsNorm] = field(default_factory=list)


@dataclass
class _Block:
    layers: list[_Layer]
    residual: bool  # its output is added to its input


@dataclass
class _Stages:
    front: _Layer  # the frame (RGB [0, 1]) to the coarsest map
    blocks: list[_Block]
    back: _Layer  # the coarsest map to the output, RGB [0, 1] (cropped by the output pass)


def _stages(model: nn.Module) -> _Stages | None:
    """The layouts this project can run, cut where their maps are smallest; None for others.
    Each part is the network's own code (its front, blocks and back)."""
    if isinstance(model, StylizingNetwork):
        return _Stages(_Layer(model.front, _relu_follows((model.stem, *model.down)[-1])),
                       [_Block([_Layer(layer, _relu_follows(layer)) for layer in block.body], True)
                        for block in model.res],
                       _Layer(model.back))
    if isinstance(model, RangeAdapter) and isinstance(model.net, (ExamplesNetwork, OriginalNetwork)):
        net = model.net
        # Both have a ReLU after each norm of the front; pytorch/examples' blocks add their
        # input back, the original's "residual" blocks do not (ORIGINAL_NOTES.md).
        residual = isinstance(net, ExamplesNetwork)
        blocks = net.blocks() if residual else net.res_blocks
        return _Stages(_Layer(lambda x: net.front(model.into_range(x)), True),
                       [_Block([_Layer(block.first, True), _Layer(block.second)], residual) for block in blocks],
                       _Layer(lambda y: model.out_of_range(net.back(y))))
    return None


Source = np.ndarray | torch.Tensor  # the frame (uint8 H x W x 3) or a kept map (1 x C x h x w)


class TiledNetwork:
    """Runs `model` (RGB [0, 1] in and out at the input's size, weights in dtype) on one
    uint8 frame at a time, in tiles of about budget_pixels. `source` is the model before
    network.fast_inference rewrote it (same function), whose plain convolutions
    receptive_radius can see."""

    def __init__(self, model: nn.Module, source: nn.Module, device: torch.device,
                 dtype: torch.dtype = torch.float32, staged: bool = True):
        self.device, self.dtype = device, dtype
        radius, self.align = receptive_radius(source)
        self.radius = -(-radius // self.align) * self.align
        self.model = copy.deepcopy(model)
        self._region = _Region()
        self.norms: list[_StoredStatsNorm] = []
        for module in list(self.model.modules()):
            for name, child in module.named_children():
                found = _norm_parameters(child)
                if found is not None:
                    norm = _StoredStatsNorm(*found, region=self._region)
                    setattr(module, name, norm)
                    self.norms.append(norm)
        # staged=False measures every norm from the frame (the comparison in benchmarks/tiling.py).
        self.stages = _stages(self.model) if staged else None
        self._order: list[_StoredStatsNorm] = []  # the norms in call order, when not staged
        if self.staged:
            self._find_stage_norms()
        else:
            self._order, _ = self._norms_called(self.model, self._probe())
        self._progress: Callable[[int, int], None] | None = None
        self._done = self._total = 0

    def _probe(self) -> torch.Tensor:
        side = 8 * self.align
        return torch.rand(1, 3, side, side, device=self.device, dtype=self.dtype)

    def _norms_called(self, run: Callable[[torch.Tensor], torch.Tensor],
                      x: torch.Tensor) -> tuple[list[_StoredStatsNorm], torch.Tensor]:
        """The norms run(x) calls, in order, and run's output."""
        order: list[_StoredStatsNorm] = []
        hooks = [norm.register_forward_pre_hook(lambda m, _: order.append(m)) for norm in self.norms]
        self._set_mode("record")
        try:
            with torch.inference_mode():
                y = run(x)
        finally:
            for hook in hooks:
                hook.remove()
            self._set_mode("apply")
        return order, y

    def _find_stage_norms(self) -> None:
        """Each stage's norms (_Layer.norms), from one small run through the stages."""
        def called(layer: _Layer, x: torch.Tensor) -> torch.Tensor:
            layer.norms, y = self._norms_called(layer.run, x)
            return y

        y = called(self.stages.front, self._probe())
        for block in self.stages.blocks:
            h = y
            for layer in block.layers:
                h = called(layer, h)
            y = y + h if block.residual else h
        called(self.stages.back, y)
        layers = [self.stages.front, *(layer for block in self.stages.blocks for layer in block.layers),
                  self.stages.back]
        found = [id(norm) for layer in layers for norm in layer.norms]
        assert sorted(found) == sorted(map(id, self.norms)), "a norm outside the stages, or in two"

    @property
    def staged(self) -> bool:
        """Whether the network runs cut into stages (else as one, a pass per norm)."""
        return self.stages is not None

    @property
    def min_side(self) -> int:
        return min_window(self.radius, self.align)

    def plan(self, height: int, width: int, budget_pixels: float) -> TilePlan:
        """Tiles of a frame above budget_pixels: windows of config.TILE_WINDOW_SHARE of it."""
        window_h, window_w = tile_window(height, width, budget_pixels * config.TILE_WINDOW_SHARE,
                                         self.min_side)
        return TilePlan(plan_axis(height, window_h, self.radius, self.align),
                        plan_axis(width, window_w, self.radius, self.align))

    def passes(self) -> int:
        """Passes over the tiles per frame (each one cut short or over part of the network):
        one per norm, one more for each residual block's sum, and the output pass."""
        residual = sum(block.residual for block in self.stages.blocks) if self.staged else 0
        return len(self.norms) + residual + 1

    def _set_mode(self, mode: str) -> None:
        for norm in self.norms:
            norm.mode = mode

    def __call__(self, frame: np.ndarray, budget_pixels: float,
                 progress: Callable[[int, int], None] | None = None) -> np.ndarray:
        """The stylised frame (RGB uint8 HxWx3) of an RGB uint8 frame; progress(done, total)
        is called after each tile of each pass."""
        plan = self.plan(*frame.shape[:2], budget_pixels)
        self._progress, self._done, self._total = progress, 0, plan.count * self.passes()
        with torch.inference_mode():
            if not self.staged:
                for norm in self._order:
                    self._measure(frame, 1, self.model, norm, plan)
                return self._output(frame, 1, self.model, plan)
            scale = self.align
            # The coarsest map's size: the frame padded as the network pads it, over the stride
            # (this project's network pads to a multiple of it; the others' strided convolutions
            # round up).
            size = tuple(max(-(-side // scale) * scale, self.model.min_side) // scale
                         for side in frame.shape[:2])
            front = self.stages.front
            coarse = self._kept(frame, 1, front, plan, size)
            for block in self.stages.blocks:
                *inner, last = block.layers
                hidden = coarse
                if not block.residual:
                    coarse = None  # only the block's first layer reads its input
                for layer in inner:
                    hidden = self._kept(hidden, scale, layer, plan, size)
                if block.residual:
                    # The block's sum goes into its input's map, each tile's part once the last
                    # layer's norm is measured: two coarse maps at a time rather than three.
                    for norm in last.norms:
                        self._measure(hidden, scale, last.run, norm, plan)
                    self._write(hidden, scale, last.run, plan, lambda part, top, left: coarse[
                        ..., top:top + part.shape[-2], left:left + part.shape[-1]].add_(part))
                else:
                    coarse = self._kept(hidden, scale, last, plan, size)
                del hidden
            back = self.stages.back
            for norm in back.norms:
                self._measure(coarse, scale, back.run, norm, plan)
            return self._output(coarse, scale, back.run, plan)

    def _windows(self, source: Source, scale: int, plan: TilePlan) -> Iterator[tuple[Span, Span, torch.Tensor]]:
        """Each tile's window of the frame (scale 1) or of a kept map (frame pixels per map
        pixel), as the network's input, with self._region set to it."""
        height, width = plan.rows[-1].cut_hi, plan.columns[-1].cut_hi
        map_h, map_w = source.shape[:2] if scale == 1 else source.shape[-2:]
        for row in plan.rows:
            for column in plan.columns:
                r0, c0 = row.start // scale, column.start // scale
                r1 = map_h if row.stop == height else min(map_h, -(-row.stop // scale))
                c1 = map_w if column.stop == width else min(map_w, -(-column.stop // scale))
                self._region.window = ((r1 - r0) * scale, (c1 - c0) * scale)
                self._region.own = (row.cut_lo - row.start,
                                    None if row.cut_hi == height else row.cut_hi - row.start,
                                    column.cut_lo - column.start,
                                    None if column.cut_hi == width else column.cut_hi - column.start)
                self._region.origin = (row.start, column.start)
                if scale == 1:
                    # NCHW, as the Processor runs whole frames: from channels-last input
                    # oneDNN's convolutions keep channels-last, where the reflection pads and
                    # phase shuffles of this network were several times slower. The copy: a
                    # decoded picture is read-only, which torch.from_numpy warns about.
                    window = frames_to_batch(torch.from_numpy(source[r0:r1, c0:c1].copy())[None].to(self.device),
                                             self.dtype).contiguous()
                else:
                    window = source[..., r0:r1, c0:c1].to(self.dtype)
                yield row, column, window
                self._done += 1
                if self._progress is not None:
                    self._progress(self._done, self._total)

    def _measure(self, source: Source, scale: int, run: Callable, norm: _StoredStatsNorm,
                 plan: TilePlan, keep: torch.Tensor | None = None) -> None:
        norm.start_measuring(keep)
        for _, _, window in self._windows(source, scale, plan):
            try:
                run(window)
            except _Measured:
                pass
        norm.finish_measuring()

    def _kept(self, source: Source, scale: int, layer: _Layer, plan: TilePlan,
              size: tuple[int, int]) -> torch.Tensor:
        """The whole frame's map (size: its height and width) after a layer that ends with a
        norm (and its ReLU): the layer's norms are measured one after the other, and the last
        one's pass keeps its input, which is then normalised in place."""
        for norm in layer.norms[:-1]:
            self._measure(source, scale, layer.run, norm, plan)
        last = layer.norms[-1]
        kept = torch.empty((1, len(last.weight), *size), device=self.device)
        self._measure(source, scale, layer.run, last, plan, keep=kept)
        factor, shift = last.scale_shift()
        for band in kept.split(_SUM_ROWS, dim=-2):
            band.mul_(factor).add_(shift)
            if layer.relu:
                band.clamp_min_(0)
        return kept

    def _write(self, source: Source, scale: int, run: Callable, plan: TilePlan,
               write: Callable[[torch.Tensor, int, int], object]) -> None:
        """A pass that hands each tile's own part of run's output, with the row and column of
        the whole frame's map where it begins, to write."""
        for _, _, window in self._windows(source, scale, plan):
            write(*self._region.owned(run(window)))

    def _output(self, source: Source, scale: int, run: Callable, plan: TilePlan) -> np.ndarray:
        """The output pass: each tile's own part, written into the frame (the part of the last
        row and column of tiles cut at the frame's edge, where the network padded)."""
        height, width = plan.rows[-1].cut_hi, plan.columns[-1].cut_hi
        result = np.empty((height, width, 3), np.uint8)

        def write(part: torch.Tensor, top: int, left: int) -> None:
            part = part[..., :height - top, :width - left]
            result[top:top + part.shape[-2], left:left + part.shape[-1]] = batch_to_frames(part)[0].cpu().numpy()

        self._write(source, scale, run, plan, write)
        return result

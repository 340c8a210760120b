"""Exact rewrites of the stylizing network for stylisation: the same function, faster kernels.

Two kinds of layer in network/style_network.py leave most of a vector unit idle:

- UpsampleConv (nearest x2, then a 3x3 convolution): every 3x3 window of a nearest-upsampled
  map covers only 2x2 distinct source pixels, so each of the four output phases is a 2x2
  convolution of the small map (sub-pixel convolution, Shi et al. 2016). One 2x2 convolution
  with the four phases as output channels, then a pixel shuffle, does 4/9 of the work and
  never builds the upsampled copy.
- The head (reflection pad, 9x9 convolution to 3 channels): CPU and GPU kernels block over
  output channels (16 at a time with AVX-512), so 3 outputs waste most of each block. One
  stride-r convolution whose r*r*3 outputs are the r x r output phases keeps the blocks full
  for (k + r - 1)^2 / k^2 times the multiply-adds, then a pixel shuffle puts the phases back.

Instance norms run as group norms with one group per channel (the same function): eager
PyTorch computes an instance norm as a batch norm of a reshaped copy with repeated weights, and
its CPU group-norm kernel is faster in float32 (8-14% for the whole network) and as fast in
bf16 (docs/stylization_speed.md).
When compiled (stylization/compile_cache.py), they are instead spelled out as two plain
reductions (mean, then mean square of the deviation) in float32: the compiler turns those into
vectorised loops, where its own instance-norm kernel came out slower in profiles of full-size
maps. The norms are swapped in other projects' networks too; the other rewrites need this
project's layers.

Training keeps the plain layers (their gradients are the usual ones); only stylisation
(stylization/processor.py) runs these. tests/test_fast_inference.py checks that outputs agree
to float32 rounding.
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

import config
from network.style_network import ConvLayer, StylizingNetwork, UpsampleConv

# Which 2 of the 3 taps of a 3x3 kernel land on the same source pixel of a nearest x2
# upsample: [output phase, source offset, tap]. Phase 0 is the odd output row 2i+1, reading
# source rows i (taps 0 and 1) and i+1 (tap 2); phase 1 is row 2i+2, reading i (tap 0) and
# i+1 (taps 1 and 2).
_UPSAMPLE_TAPS = torch.tensor([[[1.0, 1.0, 0.0], [0.0, 0.0, 1.0]],
                               [[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]]])


def interleave_phases(y: torch.Tensor, phases: int) -> torch.Tensor:
    """N x (r*r*C) x h x w, channel (a * r + b) * C + c holding output pixel (r*i + a, r*j + b),
    -> N x C x r*h x r*w. pixel_shuffle's order (c * r * r + a * r + b) would be the same
    function, but this one keeps each pixel's C channels adjacent, so that in channels-last
    memory the shuffle (and what a compiler fuses into it) copies runs of C values."""
    n, _, h, w = y.shape
    r = phases
    y = y.reshape(n, r, r, -1, h, w).permute(0, 3, 4, 1, 5, 2)
    return y.reshape(n, -1, h * r, w * r)


class SubpixelUpsampleConv(nn.Module):
    """UpsampleConv(mode="nearest", 3x3) as a 2x2 convolution of the small map and a shuffle."""

    @staticmethod
    def applies_to(layer: UpsampleConv) -> bool:
        conv = layer.conv[1]
        return layer.mode == "nearest" and conv.kernel_size == (3, 3) and conv.stride == (1, 1)

    def __init__(self, layer: UpsampleConv):
        super().__init__()
        if not self.applies_to(layer):
            raise ValueError("only a nearest x2 upsample followed by a 3x3 stride-1 convolution")
        _reflection_pad, conv, *rest = layer.conv
        taps = _UPSAMPLE_TAPS.to(conv.weight)
        # Output channel (row phase * 2 + column phase) * C + o, as interleave_phases reads them.
        weight = torch.einsum("aiu,bjv,ocuv->abocij", taps, taps, conv.weight.detach())
        self.weight = nn.Parameter(weight.reshape(-1, conv.in_channels, 2, 2), requires_grad=False)
        self.bias = nn.Parameter(conv.bias.detach().repeat(4), requires_grad=False)
        self.rest = nn.Sequential(*rest)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Reflecting the upsampled map by one pixel repeats its border, as replicating the
        # small map does; the shuffled result then has one extra row and column on each side.
        x = F.pad(x, (1, 1, 1, 1), mode="replicate")
        y = interleave_phases(F.conv2d(x, self.weight, self.bias), 2)
        return self.rest(y[..., 1:-1, 1:-1])


class PhaseConv(nn.Module):
    """ConvLayer (reflection pad, k x k stride-1 convolution, ...) as one stride-r convolution
    whose outputs are the r x r output phases; the input's sides must divide by r."""

    def __init__(self, layer: ConvLayer, phases: int):
        super().__init__()
        pad, conv, *rest = layer
        if conv.stride != (1, 1):
            raise ValueError("only stride-1 convolutions")
        r, k = phases, conv.kernel_size[0]
        weight = conv.weight.detach()
        # Output channel (a * r + b) * C + o is output pixel (r * I + a, r * J + b): the kernel
        # shifted by (a, b) inside a (k + r - 1)-wide window.
        wide = weight.new_zeros(r, r, conv.out_channels, conv.in_channels, k + r - 1, k + r - 1)
        for a in range(r):
            for b in range(r):
                wide[a, b, :, :, a:a + k, b:b + k] = weight
        self.phases, self.pad = r, pad
        self.weight = nn.Parameter(wide.reshape(-1, conv.in_channels, k + r - 1, k + r - 1),
                                   requires_grad=False)
        self.bias = nn.Parameter(conv.bias.detach().repeat(r * r), requires_grad=False)
        self.rest = nn.Sequential(*rest)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.conv2d(self.pad(x), self.weight, self.bias, stride=self.phases)
        return self.rest(interleave_phases(y, self.phases))


class TwoPassInstanceNorm(nn.Module):
    """nn.InstanceNorm2d(affine=True) as explicit reductions, computed in float32."""

    def __init__(self, norm: nn.InstanceNorm2d):
        super().__init__()
        self.weight, self.bias, self.eps = norm.weight, norm.bias, norm.eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x.float()
        y = y - y.mean((2, 3), keepdim=True)
        variance = y.square().mean((2, 3), keepdim=True)
        scale = self.weight.float()[:, None, None] * torch.rsqrt(variance + self.eps)
        return (y * scale + self.bias.float()[:, None, None]).to(x.dtype)


class ChannelGroupNorm(nn.Module):
    """nn.InstanceNorm2d (without running statistics) as a group norm of one channel a group."""

    def __init__(self, norm: nn.InstanceNorm2d):
        super().__init__()
        self.weight, self.bias, self.eps = norm.weight, norm.bias, norm.eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.group_norm(x, x.shape[1], self.weight, self.bias, self.eps)


def _instance_norm(layer: nn.Module) -> bool:
    return isinstance(layer, nn.InstanceNorm2d) and not layer.track_running_stats


def _normalised(layer: nn.Module) -> bool:
    """Whether layer subtracts each channel's own mean over the frame (an instance norm)."""
    return isinstance(layer, (TwoPassInstanceNorm, ChannelGroupNorm)) or _instance_norm(layer)


def swap_norms(model: nn.Module, compiled: bool) -> None:
    """Replace, in place, every instance norm by the same function in faster kernels: a
    ChannelGroupNorm eager, a TwoPassInstanceNorm (affine ones) for the compiler."""
    for module in list(model.modules()):
        for name, child in module.named_children():
            if not _instance_norm(child):
                continue
            if not compiled:
                setattr(module, name, ChannelGroupNorm(child))
            elif child.affine:
                setattr(module, name, TwoPassInstanceNorm(child))


def drop_cancelled_biases(model: nn.Module) -> None:
    """Remove, in place, the bias of every convolution whose output goes straight into an
    instance norm: the norm subtracts each channel's mean, bias included, so the function is
    the same. In bf16 it is not: a convolution's output is rounded to 8 significant bits
    before the norm subtracts its mean, and a bias that lifts a channel far from zero makes that
    rounding coarse against the channel's variation. Without the biases the output of the
    shipped fast network came closer to float32's (docs/stylization_speed.md)."""
    for module in model.modules():
        if isinstance(module, nn.Sequential):
            layers = list(module)
            for conv, after in zip(layers, layers[1:]):
                if isinstance(conv, nn.Conv2d) and _normalised(after):
                    conv.bias = None
        elif isinstance(module, SubpixelUpsampleConv) and len(module.rest) and _normalised(module.rest[0]):
            module.bias = None


def for_inference(model: nn.Module, compiled: bool = False) -> nn.Module:
    """A copy of this project's network with the rewrites applied where its sizes allow, the
    biases that instance norms cancel dropped and the instance norms swapped (swap_norms); of
    another project's network a copy with its norms swapped; a model without instance norms
    (ONNX) is returned as it is."""
    ours = isinstance(model, StylizingNetwork)
    if not ours and not any(_instance_norm(module) for module in model.modules()):
        return model
    fast = copy.deepcopy(model)
    swap_norms(fast, compiled)
    if not ours:
        return fast
    fast.up = nn.Sequential(*[SubpixelUpsampleConv(layer) if SubpixelUpsampleConv.applies_to(layer)
                              else layer for layer in fast.up])
    phases = config.HEAD_PHASES
    # The head sees the input padded to a multiple of model.multiple (pad_to_fit).
    if model.multiple % phases == 0:
        fast.head = PhaseConv(fast.head, phases)
    drop_cancelled_biases(fast)
    return fast

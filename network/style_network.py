"""The feed-forward stylizing network (Johnson et al. 2016, with the usual fixes).

RGB in [0, 1] goes in, RGB in [0, 1] comes out, at exactly the input's height and width.
Reflection padding at every convolution (no dark borders), instance normalisation (style
independent of the frame's contrast; Ulyanov et al. 2016), residual blocks with their skip
connections, and upsampling by resize + convolution instead of transposed convolutions
(no checkerboard artefacts; Odena et al. 2016). Sizes come from config.NetworkConfig.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from config import NetworkConfig


def pad_to_fit(x: torch.Tensor, multiple: int, min_side: int) -> torch.Tensor:
    """x padded at the bottom and right so both sides divide by multiple and are at least
    min_side; callers crop their output back to the input's size.

    Replicate, not reflect: reflection fails on sides smaller than the pad. The pad is always
    applied (often by zero) so that an exported graph keeps height and width dynamic.
    """
    height, width = x.shape[-2:]
    pad_h = max(-height % multiple, min_side - height)
    pad_w = max(-width % multiple, min_side - width)
    return F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")


class ConvLayer(nn.Sequential):
    """Reflection pad + conv (+ instance norm + ReLU)."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int = 1,
                 norm: bool = True, relu: bool = True):
        layers: list[nn.Module] = [nn.ReflectionPad2d(kernel // 2),
                                   nn.Conv2d(c_in, c_out, kernel, stride)]
        if norm:
            layers.append(nn.InstanceNorm2d(c_out, affine=True))
        if relu:
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


class ResidualBlock(nn.Module):
    def __init__(self, channels: int, kernel: int):
        super().__init__()
        self.body = nn.Sequential(ConvLayer(channels, channels, kernel),
                                  ConvLayer(channels, channels, kernel, relu=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class UpsampleConv(nn.Module):
    """x2 resize, then a convolution: learns the upsampling without checkerboard patterns."""

    def __init__(self, c_in: int, c_out: int, kernel: int, mode: str):
        super().__init__()
        self.mode = mode
        self.conv = ConvLayer(c_in, c_out, kernel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        align = False if self.mode == "bilinear" else None
        return self.conv(F.interpolate(x, scale_factor=2.0, mode=self.mode, align_corners=align))


class StylizingNetwork(nn.Module):
    def __init__(self, cfg: NetworkConfig = NetworkConfig()):
        super().__init__()
        if cfg.upsample not in ("nearest", "bilinear"):
            raise ValueError(f"upsample must be 'nearest' or 'bilinear', not {cfg.upsample!r}")
        self.cfg = cfg
        widths = list(cfg.channels)
        self.stem = ConvLayer(3, widths[0], cfg.stem_kernel)
        self.down = nn.Sequential(*[ConvLayer(a, b, cfg.kernel, stride=2)
                                    for a, b in zip(widths, widths[1:])])
        self.res = nn.Sequential(*[ResidualBlock(widths[-1], cfg.kernel) for _ in range(cfg.res_blocks)])
        self.up = nn.Sequential(*[UpsampleConv(b, a, cfg.kernel, cfg.upsample)
                                  for a, b in reversed(list(zip(widths, widths[1:])))])
        self.head = ConvLayer(widths[0], 3, cfg.final_kernel, norm=False, relu=False)
        self.multiple = 2 ** (len(widths) - 1)  # input sides must divide by this
        # Reflection padding needs every side to exceed the pad, at full and at lowest resolution.
        smallest = max(2 * self.multiple, max(cfg.stem_kernel, cfg.final_kernel) // 2 + 1)
        self.min_side = -(-smallest // self.multiple) * self.multiple

    def front(self, x: torch.Tensor) -> torch.Tensor:
        """The layers down to the coarsest map, of the input padded to fit (pad_to_fit)."""
        return self.down(self.stem(pad_to_fit(x, self.multiple, self.min_side)))

    def back(self, y: torch.Tensor) -> torch.Tensor:
        """The layers from the coarsest map up to the output, at the padded input's size."""
        # Scaled tanh keeps the output in the input's [0, 1] range with useful gradients.
        return (torch.tanh(self.head(self.up(y))) + 1) * 0.5

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # In three parts so that network/tiling.py can keep the coarse maps between them.
        height, width = x.shape[-2:]
        return self.back(self.res(self.front(x)))[..., :height, :width]

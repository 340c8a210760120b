"""The network of pytorch/examples' fast_neural_style, rebuilt from its key layout, so that the
models it publishes (candy, mosaic, rain_princess, udnie `.pth` files, bare state dicts) run here.

Layout: conv1 (9x9, 3->32), in1, conv2 (3x3 stride 2, 32->64), in2, conv3 (3x3 stride 2,
64->128), in3, res1..res5 (conv1, in1, ReLU, conv2, in2, plus the skip connection), deconv1
(x2 nearest resize, 3x3 128->64), in4, deconv2 (the same, 64->32), in5, deconv3 (9x9 32->3,
no norm, no activation). Every convolution is reflection-padded by kernel // 2 and stored as
`<name>.conv2d`. Values are 0-255 in and (unbounded) 0-255 out, and the output is
4*ceil(H/4) x 4*ceil(W/4); network.formats wraps it to RGB [0, 1] at the input's size.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

WIDTHS = (32, 64, 128)
RES_BLOCKS = 5
OUTER_KERNEL = 9
KERNEL = 3
# Reflection padding needs a side above the pad: 4 for the 9x9 convolutions, and 1 at the
# lowest resolution, ceil(5 / 4) = 2.
MIN_SIDE = 5
VALUE_RANGE = (0.0, 255.0)


class PaddedConv(nn.Module):
    """Reflection pad of kernel // 2 and a convolution stored as `conv2d`, optionally after a
    x2 nearest-neighbour resize."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int = 1, upsample: bool = False):
        super().__init__()
        self.upsample = upsample
        self.conv2d = nn.Conv2d(c_in, c_out, kernel, stride, padding=kernel // 2, padding_mode="reflect")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.upsample:
            x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        return self.conv2d(x)


class SkipBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = PaddedConv(channels, channels, KERNEL)
        self.in1 = nn.InstanceNorm2d(channels, affine=True)
        self.conv2 = PaddedConv(channels, channels, KERNEL)
        self.in2 = nn.InstanceNorm2d(channels, affine=True)

    def first(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.in1(self.conv1(x)))

    def second(self, x: torch.Tensor) -> torch.Tensor:
        return self.in2(self.conv2(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.second(self.first(x))


class ExamplesNetwork(nn.Module):
    """0-255 in, 0-255 out (not clamped), 4*ceil(H/4) x 4*ceil(W/4)."""

    def __init__(self):
        super().__init__()
        small, middle, large = WIDTHS
        self.conv1 = PaddedConv(3, small, OUTER_KERNEL)
        self.in1 = nn.InstanceNorm2d(small, affine=True)
        self.conv2 = PaddedConv(small, middle, KERNEL, stride=2)
        self.in2 = nn.InstanceNorm2d(middle, affine=True)
        self.conv3 = PaddedConv(middle, large, KERNEL, stride=2)
        self.in3 = nn.InstanceNorm2d(large, affine=True)
        # Attribute names are the checkpoints' keys, res1..res5.
        for index in range(1, RES_BLOCKS + 1):
            self.add_module(f"res{index}", SkipBlock(large))
        self.deconv1 = PaddedConv(large, middle, KERNEL, upsample=True)
        self.in4 = nn.InstanceNorm2d(middle, affine=True)
        self.deconv2 = PaddedConv(middle, small, KERNEL, upsample=True)
        self.in5 = nn.InstanceNorm2d(small, affine=True)
        self.deconv3 = PaddedConv(small, 3, OUTER_KERNEL)

    def front(self, x: torch.Tensor) -> torch.Tensor:
        """The layers down to the coarsest map."""
        x = F.relu(self.in1(self.conv1(x)))
        x = F.relu(self.in2(self.conv2(x)))
        return F.relu(self.in3(self.conv3(x)))

    def blocks(self) -> list[SkipBlock]:
        return [getattr(self, f"res{index}") for index in range(1, RES_BLOCKS + 1)]

    def back(self, x: torch.Tensor) -> torch.Tensor:
        """The layers from the coarsest map up to the output."""
        x = F.relu(self.in4(self.deconv1(x)))
        x = F.relu(self.in5(self.deconv2(x)))
        return self.deconv3(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # In parts so that network/tiling.py can keep the coarse maps between them; the blocks
        # spelled out, which TorchScript (python -m network.export) can compile.
        return self.back(self.res5(self.res4(self.res3(self.res2(self.res1(self.front(x)))))))

"""The network of the project this one grew from, rebuilt from its checkpoints' key layout, so
that the `.pth.tar` files it released (a dict with `state_dict` and `optimizer`) run here.

It is kept as it was, defects included (ORIGINAL_NOTES.md): every kernel is 3x3 with
reflection padding, the "residual" blocks have no skip connection, upsampling is bilinear
resize + convolution, the last convolution is followed by an instance norm and tanh, values
are in [-1, 1], and the output is 4*ceil(H/4) x 4*ceil(W/4). network.formats wraps it so that
it takes and returns RGB in [0, 1] at the input's size, like StylizingNetwork.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

WIDTHS = (32, 48, 64)
RES_BLOCKS = 5
KERNEL = 3
# Reflection padding needs a side above the pad at the lowest resolution: ceil(5 / 4) = 2.
MIN_SIDE = 5
VALUE_RANGE = (-1.0, 1.0)


class ConvNorm(nn.Module):
    """Reflection-padded 3x3 convolution and affine instance norm, stored as `conv` and `norm`."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, KERNEL, stride, padding=KERNEL // 2, padding_mode="reflect")
        self.norm = nn.InstanceNorm2d(c_out, affine=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.conv(x))


class PlainBlock(nn.Module):
    """conv1 -> ReLU -> conv2, with no skip connection: the original's "residual" block."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = ConvNorm(channels, channels)
        self.conv2 = ConvNorm(channels, channels)

    def first(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.conv1(x))

    def second(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.second(self.first(x))


class UpBlock(nn.Module):
    """Bilinear x2 resize, convolution, norm; the convolution is `conv.1` in the checkpoints."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.conv = nn.Sequential(
            nn.Upsample(scale_factor=2.0, mode="bilinear", align_corners=False),
            nn.Conv2d(c_in, c_out, KERNEL, padding=KERNEL // 2, padding_mode="reflect"))
        self.norm = nn.InstanceNorm2d(c_out, affine=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.conv(x))


class OriginalNetwork(nn.Module):
    """[-1, 1] in, [-1, 1] out, 4*ceil(H/4) x 4*ceil(W/4)."""

    def __init__(self):
        super().__init__()
        first, middle, last = WIDTHS
        self.initial_block = ConvNorm(3, first)
        self.down_blocks = nn.ModuleList([ConvNorm(first, middle, stride=2),
                                          ConvNorm(middle, last, stride=2)])
        self.res_blocks = nn.ModuleList([PlainBlock(last) for _ in range(RES_BLOCKS)])
        self.up_blocks = nn.ModuleList([UpBlock(last, middle), UpBlock(middle, first)])
        self.final_block = ConvNorm(first, 3)

    def front(self, x: torch.Tensor) -> torch.Tensor:
        """The layers down to the coarsest map."""
        x = F.relu(self.initial_block(x))
        for block in self.down_blocks:
            x = F.relu(block(x))
        return x

    def back(self, x: torch.Tensor) -> torch.Tensor:
        """The layers from the coarsest map up to the output."""
        for block in self.up_blocks:
            x = F.relu(block(x))
        return torch.tanh(self.final_block(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # In parts so that network/tiling.py can keep the coarse maps between them.
        x = self.front(x)
        for block in self.res_blocks:
            x = block(x)
        return self.back(x)

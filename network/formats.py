"""Which network a model file holds, recognised from its keys and shapes, built ready to stylise.

Supported: this project's checkpoints (their `network` entry gives the sizes), the original
project's released `.pth.tar` files, pytorch/examples fast_neural_style `.pth` files, and ONNX
files exported by `python -m network.export`. Whatever the file, the network comes back taking
and returning RGB in [0, 1] (N x 3 x H x W) at the input's size, so stylize.py and the exporter
never need to know where it came from.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

import config
from common.errors import fail
from common.model_files import read_checkpoint
from network import examples_network, original_network
from network.style_network import StylizingNetwork, pad_to_fit

SUPPORTED = ("checkpoints written by train.py", "the original project's released .pth.tar files",
             "pytorch/examples fast_neural_style .pth files (candy, mosaic, rain_princess, udnie)",
             "ONNX files written by `python -m network.export`")
# Instance norms of old PyTorch releases saved running statistics that inference never used.
STALE_SUFFIXES = (".running_mean", ".running_var", ".num_batches_tracked")


class RangeAdapter(nn.Module):
    """Runs a network made for another value range on RGB in [0, 1] and crops its output to
    the input's size, so that it behaves like StylizingNetwork."""

    def __init__(self, net: nn.Module, value_range: tuple[float, float], min_side: int):
        super().__init__()
        self.net = net
        self.offset = float(value_range[0])
        self.scale = float(value_range[1] - value_range[0])
        self.min_side = min_side

    def into_range(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale + self.offset

    def out_of_range(self, y: torch.Tensor) -> torch.Tensor:
        return ((y - self.offset) / self.scale).clamp(0, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        # Only frames smaller than min_side are padded: the foreign networks keep their own
        # rounding of other sizes, so they give what their projects gave, cropped.
        y = self.net(self.into_range(pad_to_fit(x, 1, self.min_side)))
        return self.out_of_range(y)[..., :height, :width]


@dataclass(frozen=True)
class ForeignLayout:
    name: str
    build: Callable[[], nn.Module]
    value_range: tuple[float, float]
    min_side: int

    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {key: tuple(value.shape) for key, value in self.build().state_dict().items()}


FOREIGN_LAYOUTS = (
    ForeignLayout("the original project's network", original_network.OriginalNetwork,
                  original_network.VALUE_RANGE, original_network.MIN_SIDE),
    ForeignLayout("pytorch/examples fast_neural_style TransformerNet", examples_network.ExamplesNetwork,
                  examples_network.VALUE_RANGE, examples_network.MIN_SIDE),
)


def mismatch(state: dict[str, torch.Tensor], want: dict[str, tuple[int, ...]]) -> list[str]:
    """What keeps state from being a state dict of the layout `want`; empty when it is one."""
    problems = [f"missing {key}" for key in want if key not in state]
    problems += [f"unexpected {key}" for key in state if key not in want]
    problems += [f"{key} has shape {tuple(state[key].shape)}, expected {shape}"
                 for key, shape in want.items() if key in state and tuple(state[key].shape) != shape]
    return problems


def recognise(state: dict[str, torch.Tensor]) -> tuple[ForeignLayout | None, str]:
    """The foreign layout state fits exactly, or None and why the closest one did not fit."""
    closest, closest_problems, shared_keys = None, [], 0
    for layout in FOREIGN_LAYOUTS:
        want = layout.shapes()
        problems = mismatch(state, want)
        if not problems:
            return layout, ""
        shared = len(set(state) & set(want))
        if shared > shared_keys:
            closest, closest_problems, shared_keys = layout, problems, shared
    if closest is None or shared_keys < len(state) // 2:
        return None, ""
    more = f" and {len(closest_problems) - 2} more" if len(closest_problems) > 2 else ""
    return None, f"; it resembles {closest.name} but: {', '.join(closest_problems[:2])}{more}"


def refuse(path: Path, detail: str = "") -> None:
    fail(f"{path} is not a model this toolkit can run{detail}. Supported: {'; '.join(SUPPORTED)}")


def own_network(path: Path, checkpoint: dict) -> nn.Module:
    model = StylizingNetwork(config.NetworkConfig.from_dict(checkpoint["network"]))
    try:
        model.load_state_dict({k: v.float() for k, v in checkpoint["state_dict"].items()})
    except RuntimeError as err:
        fail(f"{path} does not match the network it describes ({str(err).splitlines()[0]})")
    return model


def load_network(path: str | Path, device: torch.device | str = "cpu") -> tuple[nn.Module, str]:
    """The network in the file at path, on device, in eval mode, and what kind of file it was."""
    path = Path(path)
    if path.suffix.lower() == ".onnx":
        from network.onnx_model import OnnxModel  # onnxruntime is needed for .onnx files only

        return OnnxModel(path, torch.device(device)), "an ONNX model"
    checkpoint = read_checkpoint(path)
    state = checkpoint.get("state_dict", checkpoint)
    if not isinstance(state, dict) or not state or not all(
            isinstance(key, str) and isinstance(value, torch.Tensor) for key, value in state.items()):
        refuse(path, " (it holds no state dict of tensors)")
    if "network" in checkpoint:
        return own_network(path, checkpoint).to(device).eval(), "a checkpoint of this project"
    state = {k: v.float() for k, v in state.items() if not k.endswith(STALE_SUFFIXES)}
    layout, why_not = recognise(state)
    if layout is None:
        refuse(path, why_not)
    net = layout.build()
    net.load_state_dict(state)
    return RangeAdapter(net, layout.value_range, layout.min_side).to(device).eval(), layout.name


def load_model(path: str | Path, device: torch.device | str = "cpu") -> nn.Module:
    """The stylizing network in a model file, on device, in eval mode: RGB [0, 1] in and out,
    whatever kind of file it is (see load_network)."""
    return load_network(path, device)[0]

"""The frozen VGG16/VGG19 that measures content and style (Gatys et al.; Johnson et al.).

Two weight-file layouts are accepted and each gets the preprocessing its weights expect
(config.PREPROCESSING):
- features-only Caffe conversions such as vgg16_features-amdegroot-88682ab5.pth, keys
  `0.weight`, `0.bias`, `2.weight`...: RGB 0-255 minus the mean;
- torchvision's full files such as vgg16-397923af.pth / vgg19-dcbb9e9d.pth, keys
  `features.0.weight`... (the classifier is ignored): RGB 0-1 with ImageNet mean and std.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torchvision.models.vgg import cfgs, make_layers

import config
from common.errors import fail
from common.files import existing_file

ARCHITECTURES = {"VGG16": cfgs["D"], "VGG19": cfgs["E"]}


def layer_names(arch: str) -> list[str]:
    """Name of every module of the architecture's `features`, e.g. conv1_1, relu1_1, pool1."""
    names, block, conv = [], 1, 0
    for item in ARCHITECTURES[arch]:
        if item == "M":
            names.append(f"pool{block}")
            block, conv = block + 1, 0
        else:
            conv += 1
            names += [f"conv{block}_{conv}", f"relu{block}_{conv}"]
    return names


def expected_shapes(arch: str) -> dict[str, tuple[int, ...]]:
    """Keys and shapes of the architecture's `features` state dict, without building it."""
    shapes, index, c_in = {}, 0, 3
    for item in ARCHITECTURES[arch]:
        if item == "M":
            index += 1
            continue
        shapes[f"{index}.weight"] = (item, c_in, 3, 3)
        shapes[f"{index}.bias"] = (item,)
        index, c_in = index + 2, item
    return shapes


def read_vgg_weights(path: str | Path, arch: str, preprocess: str = "auto") -> tuple[dict, str]:
    """Features state dict of the file and the preprocessing it wants; refuses a mismatch."""
    path = existing_file(path, "a .pth weight file (--loss_net_path)",
                         "download the loss network as the README says and pass it with --loss_net_path")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        fail(f"{path} is not a readable PyTorch weight file ({type(err).__name__}): "
             "download a VGG file as the README says")
    if not isinstance(state, dict) or not state:
        fail(f"{path} does not hold a state dict: download a VGG file as the README says")
    if any(key.startswith("features.") for key in state):
        layout = "torchvision"
        state = {key[len("features."):]: value for key, value in state.items()
                 if key.startswith("features.")}
    else:
        layout = "caffe"

    def fits(candidate: str) -> bool:
        want = expected_shapes(candidate)
        return set(state) == set(want) and all(tuple(state[k].shape) == s for k, s in want.items())

    if not fits(arch):
        other = next((a for a in ARCHITECTURES if a != arch and fits(a)), None)
        if other:
            fail(f"{path} holds {other} weights but --loss_net_choice is {arch}: "
                 f"pass --loss_net_choice {other} or a {arch} file")
        fail(f"{path} is not a {arch} weight file (its keys and shapes match neither VGG16 nor "
             "VGG19 features): use the files linked in the README")
    if preprocess == "auto":
        preprocess = layout
    if preprocess not in config.PREPROCESSING:
        fail(f"unknown preprocessing {preprocess!r}: use auto, caffe or torchvision")
    return state, preprocess


class LossNetwork(nn.Module):
    """Frozen VGG features, run only up to the deepest requested layer.

    forward(x) takes RGB in [0, 1] (N x 3 x H x W) and returns {layer name: activation}.
    """

    def __init__(self, arch: str, weights: dict, preprocess: str, layers: tuple[str, ...]):
        super().__init__()
        if arch not in ARCHITECTURES:
            raise ValueError(f"arch must be one of {sorted(ARCHITECTURES)}, not {arch!r}")
        names = layer_names(arch)
        unknown = [layer for layer in layers if layer not in names]
        if unknown:
            raise ValueError(f"{arch} has no layer {unknown}; it has {names}")
        depth = max(names.index(layer) for layer in layers) + 1
        features = make_layers(ARCHITECTURES[arch])
        features.load_state_dict(weights)
        self.features = features[:depth]
        self.names = names[:depth]
        self.layers = tuple(layers)
        spec = config.PREPROCESSING[preprocess]
        self.preprocess = preprocess
        self.scale = spec["scale"]
        self.register_buffer("mean", torch.tensor(spec["mean"]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(spec["std"]).view(1, 3, 1, 1))
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> "LossNetwork":
        return super().train(False)  # always frozen

    def forward(self, x: torch.Tensor, layers: tuple[str, ...] | None = None) -> dict[str, torch.Tensor]:
        """Activations of `layers` (default: all requested at construction), stopping at the
        deepest of them, so content targets (a shallow layer) cost only a few convolutions."""
        wanted = set(layers or self.layers)
        x = (x * self.scale - self.mean.to(x.dtype)) / self.std.to(x.dtype)
        out: dict[str, torch.Tensor] = {}
        for name, module in zip(self.names, self.features):
            # torchvision's VGG uses in-place ReLUs, which would overwrite the conv outputs that
            # autograd saved; an out-of-place ReLU keeps them intact.
            x = torch.relu(x) if isinstance(module, nn.ReLU) else module(x)
            if name in wanted:
                out[name] = x
                if len(out) == len(wanted):
                    break
        return out


def build_loss_network(path: str | Path, arch: str, preprocess: str = "auto",
                       device: torch.device | str = "cpu",
                       content_layers: tuple[str, ...] | None = None) -> LossNetwork:
    """The frozen loss network, computing config.LOSS_LAYERS's style layers and content_layers
    (None: LOSS_LAYERS's content layers)."""
    weights, preprocess = read_vgg_weights(path, arch, preprocess)
    spec = config.LOSS_LAYERS[arch]
    layers = tuple(dict.fromkeys(spec["style"] + (content_layers or spec["content"])))
    memory_format = torch.channels_last if config.LOSS_NET_CHANNELS_LAST else torch.contiguous_format
    return LossNetwork(arch, weights, preprocess, layers).to(device, memory_format=memory_format)

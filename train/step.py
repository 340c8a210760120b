"""One training step: the loss terms assembled from the loss network's features, and the update.

A step stylises a batch of content frames (with a noise pattern, also the same frames with it
added; with a flow pair, also each frame's successor in its video; all in one forward call),
measures content, style, total variation, noise and flow losses through the frozen loss
network, and takes an optimizer step. train/loop.py runs it; the benchmarks time it as it is.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

import config
from common.precision import autocast
from network.loss_network import LossNetwork
from train import loss as L

LOSS_TERMS = ("content", "style", "regu", "noise", "flow")
# (stylised frames t+1, flow from t+1 to t, valid mask) for the flow loss
FlowPair = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


@dataclass
class Objective:
    """What every step of a run is measured against, fixed for the run.

    style_grams: the style image's Gram matrices (style_targets); layers: loss-network layers
    of the content and style terms (loss_layers); weights: the lambda of each of LOSS_TERMS;
    noise_pattern: the fixed noise of the noise loss, or None; loss_downscale: the content and
    style terms judge the pictures averaged over blocks of that size (L.loss_view)."""
    style_grams: list[torch.Tensor]
    layers: dict[str, tuple[str, ...]]
    weights: dict[str, float]
    style_layer_weights: list[float] | None = None
    noise_pattern: torch.Tensor | None = None
    loss_downscale: int = 1


@dataclass
class Updater:
    """The optimizer, the loss scaler and the autocast dtype (None: float32) of a run."""
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    dtype: torch.dtype | None


def loss_layers(arch: str, content_layers: list[str] | None = None) -> dict[str, tuple[str, ...]]:
    """config.LOSS_LAYERS[arch], with content_layers (--content_layers) in place of its content
    layers when given."""
    layers = dict(config.LOSS_LAYERS[arch])
    if content_layers:
        layers["content"] = tuple(content_layers)
    return layers


def style_targets(loss_net: LossNetwork, style_image: torch.Tensor,
                  layers: dict[str, tuple[str, ...]]) -> list[torch.Tensor]:
    """The style image's Gram matrices, in float32: computed once, not every step."""
    with torch.no_grad():
        features = loss_net(style_image, layers["style"])
    return [L.gram_matrix(features[n]) for n in layers["style"]]


def loss_terms(features: dict[str, torch.Tensor], targets: dict[str, torch.Tensor],
               stylised: torch.Tensor, stylised_noisy: torch.Tensor | None,
               objective: Objective, flow_pair: FlowPair | None = None) -> dict[str, torch.Tensor]:
    """The loss terms before the lambdas, from the loss network's features of the stylised
    frames and the content targets (flow_pair: see FlowPair; the spatial terms use frame t
    only)."""
    layers = objective.layers
    zero = stylised.new_zeros((), dtype=torch.float32)
    return {
        "content": sum(L.content_loss(features[n], targets[n]) for n in layers["content"]),
        "style": L.style_loss([features[n] for n in layers["style"]], objective.style_grams,
                              objective.style_layer_weights),
        "regu": L.total_variation(stylised),
        "noise": L.noise_loss(stylised, stylised_noisy) if stylised_noisy is not None else zero,
        "flow": L.flow_loss(flow_pair[0], stylised, *flow_pair[1:]) if flow_pair is not None else zero,
    }


def weighted_total(terms: dict[str, torch.Tensor], weights: dict[str, float]) -> torch.Tensor:
    return sum(weights[t] * terms[t] for t in LOSS_TERMS)


def training_step(model: nn.Module, loss_net: nn.Module, images: torch.Tensor, objective: Objective,
                  pair: FlowPair | None = None,
                  ) -> tuple[torch.Tensor, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Total loss, the terms before the lambdas, and the images for samples, for one batch.

    model and loss_net are a StylizingNetwork and a LossNetwork, or their torch.compile'd
    wrappers. pair: the batch's next frames (not yet stylised), flows and masks for the
    flow loss, or None. The content and style terms judge the pictures through
    L.loss_view; the other terms see them whole."""
    noise = objective.noise_pattern
    noisy_inputs = L.add_noise(images, noise) if noise is not None else None
    next_inputs = pair[0] if pair is not None else None
    parts = [x for x in (images, noisy_inputs, next_inputs) if x is not None]
    # clean, noisy and next frames in one call: one pass over the weights
    outputs = model(torch.cat(parts) if len(parts) > 1 else images)
    stylised, *others = outputs.split(len(images))
    stylised_noisy = others.pop(0) if noisy_inputs is not None else None
    flow_pair = (others[0], *pair[1:]) if pair is not None else None
    with torch.no_grad():
        targets = loss_net(L.loss_view(images, objective.loss_downscale), objective.layers["content"])
    features = loss_net(L.loss_view(stylised, objective.loss_downscale))
    terms = loss_terms(features, targets, stylised, stylised_noisy, objective, flow_pair)
    total = weighted_total(terms, objective.weights)
    shown = {"input": images, "output": stylised}
    if noisy_inputs is not None:
        shown.update(noisy_input=noisy_inputs, noisy_output=stylised_noisy)
    return total, terms, shown


def optimization_step(model: nn.Module, loss_net: nn.Module, updater: Updater, images: torch.Tensor,
                      objective: Objective, pair: FlowPair | None = None,
                      ) -> tuple[torch.Tensor, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """One update of model on one batch, in the updater's autocast dtype; returns what
    training_step returns. The scaler is enabled for float16 only."""
    with autocast(images.device, updater.dtype):
        total, terms, shown = training_step(model, loss_net, images, objective, pair)
    updater.optimizer.zero_grad(set_to_none=True)
    updater.scaler.scale(total).backward()
    updater.scaler.step(updater.optimizer)
    updater.scaler.update()
    return total, terms, shown


def make_scaler(device: torch.device, dtype: torch.dtype | None) -> torch.amp.GradScaler:
    """float16's narrow range needs loss scaling so small gradients do not flush to zero;
    bfloat16 has float32's range and needs none."""
    return torch.amp.GradScaler(device.type, enabled=dtype is torch.float16)

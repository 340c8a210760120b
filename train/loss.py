"""Loss terms of perceptual style-transfer training, as pure functions of tensors.

Images are N x 3 x H x W in [0, 1]; features are N x C x H x W activations of the loss
network. Every term is computed in float32, also under autocast, and keeps the samples of a
batch apart (Gram matrices are per sample).

The content and style terms are relative: each layer's error is measured against the size of
its target. Raw activations differ by orders of magnitude between layers (by about 1e8 between
relu1_2 and relu4_3 Grams, measured with a VGG16 in Caffe scale) and between weight files (0-255
Caffe input against ImageNet-normalised 0-1 input), so raw errors let the shallow layers alone
drive training and make the lambdas mean different things for each file.

The style term is a relative distance (a norm over a norm), not a relative squared error: a
photo's deep Grams overshoot the style's many times (relu4_3's relative squared error is 17.9
for tubingen.jpg against mosaic, of a 4-layer sum of 24.6), so with squares that one layer
drove training, the network flattened its output to grey to lower it, and relu1_2's colours
and strokes were never learnt (1.01 after a short run, worse than the photo's own 0.53). With
distances the same run learnt the texture on every layer (docs/shipped_models.md).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from flow import warp


def _float32(*tensors: torch.Tensor) -> list[torch.Tensor]:
    return [t.float() for t in tensors]


def gram_matrix(features: torch.Tensor) -> torch.Tensor:
    """Per-sample Gram matrices N x C x C, normalised by C*H*W, in float32.

    Autocast is switched off here: in float16 the channel products of deep layers overflow
    or underflow, so the Gram matrices would be wrong exactly where style lives.
    """
    n, c, h, w = features.shape
    with torch.autocast(device_type=features.device.type, enabled=False):
        flat = features.float().reshape(n, c, h * w)
        return torch.bmm(flat, flat.transpose(1, 2)) / (c * h * w)


def relative_error(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per sample, the mean squared difference divided by the target's mean square (0 = equal,
    1 = as far off as predicting zeros); averaged over the batch.

    Per sample, so that a batch's loss is the mean of its samples' losses whichever samples
    share a batch (a batch of 2 on one GPU trains as 1 + 1 on two). The floor only keeps an
    all-zero target finite: deep-layer Grams of ImageNet-normalised input are legitimately as
    small as 1e-12."""
    return _relative_errors(output, target).mean()


def relative_distance(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per sample, ||output - target|| / ||target||, averaged over the batch: the square root
    of relative_error's terms, so that a target overshot k times costs k - 1, not (k - 1)^2."""
    return _relative_errors(output, target).clamp_min(torch.finfo(torch.float32).tiny).sqrt().mean()


def _relative_errors(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    output, target = _float32(output, target)
    error = (output - target).pow(2).flatten(1).mean(1)
    energy = target.pow(2).flatten(1).mean(1).clamp_min(torch.finfo(torch.float32).tiny)
    return error / energy


def loss_view(images: torch.Tensor, downscale: int) -> torch.Tensor:
    """images as the loss network judges them: the mean of each downscale x downscale block
    (train.py --loss_downscale; 1 returns images)."""
    return F.avg_pool2d(images, downscale) if downscale > 1 else images


def content_loss(output_features: torch.Tensor, target_features: torch.Tensor) -> torch.Tensor:
    """Relative squared error of feature maps (Johnson et al. 2016, feature reconstruction)."""
    return relative_error(output_features, target_features)


def style_loss(output_features: Sequence[torch.Tensor], style_grams: Sequence[torch.Tensor],
               layer_weights: Sequence[float] | None = None) -> torch.Tensor:
    """Weighted sum over layers of the relative distance between Gram matrices (see the
    module's note); layer_weights None weights every layer 1.

    style_grams are the style image's Grams (1 x C x C each), computed once before training;
    they are compared with every sample of the batch.
    """
    if layer_weights is None:
        layer_weights = [1.0] * len(style_grams)
    total = output_features[0].new_zeros((), dtype=torch.float32)
    for features, target, weight in zip(output_features, style_grams, layer_weights, strict=True):
        grams = gram_matrix(features)
        total = total + weight * relative_distance(grams, target.expand_as(grams))
    return total


def style_errors(output_features: Sequence[torch.Tensor],
                 style_grams: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Per layer, the relative squared error between Gram matrices: the measure the benchmarks
    report (the quality issue's style ratio sums them), where training minimises distances."""
    errors = []
    for features, target in zip(output_features, style_grams, strict=True):
        grams = gram_matrix(features)
        errors.append(relative_error(grams, target.expand_as(grams)))
    return errors


def total_variation(images: torch.Tensor) -> torch.Tensor:
    """Mean squared difference of neighbouring pixels: discourages high-frequency noise."""
    images = images.float()
    dx = images[..., :, 1:] - images[..., :, :-1]
    dy = images[..., 1:, :] - images[..., :-1, :]
    return dx.pow(2).mean() + dy.pow(2).mean()


def noise_loss(stylised: torch.Tensor, stylised_noisy: torch.Tensor) -> torch.Tensor:
    """Mean squared difference between the stylised frame and the stylised noisy frame.

    A network that answers small input changes with small output changes flickers less on
    video (the "popping reduction" of chainer fast-neuralstyle).
    """
    stylised, stylised_noisy = _float32(stylised, stylised_noisy)
    return F.mse_loss(stylised, stylised_noisy)


def make_noise_pattern(height: int, width: int, count: int, noise_range: float,
                       generator: torch.Generator | None = None) -> torch.Tensor:
    """A 1 x 1 x H x W pattern: `count` random pixels, each moved by U(-range, +range).

    noise_range is on the 0-255 scale; the pattern is on the [0, 1] scale. A pixel drawn
    twice collects both values, as repeated additions would.
    """
    positions = torch.randint(0, height * width, (count,), generator=generator)
    values = (torch.rand(count, generator=generator) * 2 - 1) * (noise_range / 255.0)
    pattern = torch.zeros(height * width).index_add_(0, positions, values)
    return pattern.view(1, 1, height, width)


def add_noise(images: torch.Tensor, pattern: torch.Tensor) -> torch.Tensor:
    """Images plus the noise pattern on every channel, clipped to [0, 1]."""
    return (images + pattern.to(images.device, images.dtype)).clamp_(0, 1)


def flow_loss(stylised_next: torch.Tensor, stylised: torch.Tensor, flow: torch.Tensor,
              valid: torch.Tensor) -> torch.Tensor:
    """Masked mean squared difference between the stylised frame t+1 and the stylised frame t
    warped to it (Ruder et al. 2016; Huang et al. 2017).

    flow (N x 2 x H x W) runs from frame t+1 to frame t, so warp(stylised, flow) lines frame t
    up with frame t+1; valid (N x 1 x H x W) is 0 at occlusions and motion boundaries, and for
    samples without a successor frame, which therefore add nothing.
    """
    stylised_next, valid = _float32(stylised_next, valid)
    squared = (stylised_next - warp(stylised, flow)).pow(2) * valid
    return squared.sum() / (valid.sum() * stylised_next.shape[1]).clamp_min(1)

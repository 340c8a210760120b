"""Known values for every loss term and the Gram matrix, batches of more than one included."""
from __future__ import annotations

import pytest
import torch

from train import loss as L


def test_gram_matrix_known_values_per_sample():
    features = torch.tensor([[[[1.0, 2.0]], [[3.0, 4.0]]],     # sample 0: C=2, H=1, W=2
                             [[[0.0, 1.0]], [[1.0, 0.0]]]])    # sample 1
    grams = L.gram_matrix(features)
    # F F^T / (C*H*W) with C*H*W = 4, and no mixing of the two samples.
    assert torch.allclose(grams[0], torch.tensor([[5.0, 11.0], [11.0, 25.0]]) / 4)
    assert torch.allclose(grams[1], torch.tensor([[1.0, 0.0], [0.0, 1.0]]) / 4)


def test_gram_matrix_is_float32_under_autocast():
    features = torch.randn(2, 8, 4, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        grams = L.gram_matrix(features.bfloat16())
    assert grams.dtype == torch.float32
    assert torch.allclose(grams, L.gram_matrix(features.bfloat16().float()))


def test_content_loss_is_squared_error_relative_to_the_target():
    output = torch.full((1, 2, 2, 2), 1.0)
    target = torch.full((1, 2, 2, 2), 3.0)
    assert L.content_loss(output, target).item() == pytest.approx(4.0 / 9.0)
    assert L.content_loss(torch.zeros_like(target), target).item() == pytest.approx(1.0)
    assert L.content_loss(target, target).item() == 0.0


def test_content_loss_of_a_batch_is_the_mean_over_its_samples():
    torch.manual_seed(0)
    output, target = torch.randn(3, 4, 5, 5), torch.randn(3, 4, 5, 5)
    target[1] *= 100  # samples of very different energy still count alike
    singles = [L.content_loss(output[i:i + 1], target[i:i + 1]) for i in range(3)]
    assert L.content_loss(output, target).item() == pytest.approx(torch.stack(singles).mean().item(), rel=1e-6)


def test_content_loss_ignores_the_scale_of_the_features():
    torch.manual_seed(0)
    output, target = torch.randn(2, 4, 3, 3), torch.randn(2, 4, 3, 3)
    scaled = L.content_loss(output * 255, target * 255)
    assert scaled.item() == pytest.approx(L.content_loss(output, target).item(), rel=1e-5)


def test_style_loss_known_value_and_zero_for_the_style_itself():
    features = torch.tensor([[[[1.0, 2.0]], [[3.0, 4.0]]]])
    target = torch.eye(2).unsqueeze(0)
    gram = torch.tensor([5.0, 11.0, 11.0, 25.0]) / 4
    # ||G - T|| / ||T||: the root of the mean squared difference over mean(T^2) = 0.5
    expected = (((gram - torch.tensor([1.0, 0.0, 0.0, 1.0])) ** 2).mean() / 0.5).sqrt()
    assert L.style_loss([features], [target]).item() == pytest.approx(expected.item())
    assert L.style_loss([features], [L.gram_matrix(features)]).item() == pytest.approx(0.0, abs=1e-12)


def test_style_loss_costs_an_overshoot_linearly_not_quadratically():
    """A Gram k times the target's costs k - 1: a layer whose Grams overshoot many times (a
    photo's deep layers against a style's) must not outweigh the others by its square."""
    features = torch.rand(1, 4, 5, 5) + 0.1
    target = L.gram_matrix(features)
    for k in (2.0, 10.0):
        overshoot = L.style_loss([features * k ** 0.5], [target]).item()
        assert overshoot == pytest.approx(k - 1, rel=1e-5)


def test_style_errors_are_the_squares_of_the_style_loss_per_layer():
    torch.manual_seed(0)
    layers = [torch.rand(1, 4, 5, 5), torch.rand(1, 6, 3, 3)]
    targets = [L.gram_matrix(torch.rand(1, 4, 6, 6)), L.gram_matrix(torch.rand(1, 6, 4, 4))]
    errors = L.style_errors(layers, targets)
    for features, target, error in zip(layers, targets, errors):
        assert error.item() == pytest.approx(L.style_loss([features], [target]).item() ** 2, rel=1e-5)


def test_style_loss_gradient_is_finite_at_the_target():
    features = torch.rand(1, 3, 4, 4, requires_grad=True)
    L.style_loss([features], [L.gram_matrix(features).detach()]).backward()
    assert torch.isfinite(features.grad).all()


def test_style_loss_weighs_layers_of_very_different_scales_alike():
    torch.manual_seed(0)
    shallow, deep = torch.randn(1, 4, 6, 6), torch.randn(1, 8, 3, 3)
    targets = [L.gram_matrix(torch.randn(1, 4, 6, 6)), L.gram_matrix(torch.randn(1, 8, 3, 3))]
    both = L.style_loss([shallow, deep], targets)
    # Scaling the deep layer's activations (and its target's) by 1e-3 changes nothing.
    rescaled = L.style_loss([shallow, deep * 1e-3], [targets[0], targets[1] * 1e-6])
    assert rescaled.item() == pytest.approx(both.item(), rel=1e-4)


def test_style_layer_weights_scale_each_layers_distance():
    torch.manual_seed(0)
    layers = [torch.randn(2, 4, 6, 6), torch.randn(2, 8, 3, 3)]
    targets = [L.gram_matrix(torch.randn(1, 4, 6, 6)), L.gram_matrix(torch.randn(1, 8, 3, 3))]
    shallow = L.style_loss(layers[:1], targets[:1]).item()
    deep = L.style_loss(layers[1:], targets[1:]).item()
    assert L.style_loss(layers, targets).item() == pytest.approx(shallow + deep, rel=1e-6)
    assert L.style_loss(layers, targets, [1.0, 1.0]).item() == pytest.approx(shallow + deep, rel=1e-6)
    assert L.style_loss(layers, targets, [0.5, 3.0]).item() == pytest.approx(0.5 * shallow + 3 * deep, rel=1e-6)
    with pytest.raises(ValueError):  # one weight per layer, no silent truncation
        L.style_loss(layers, targets, [1.0])


def test_style_loss_of_a_batch_is_the_mean_over_its_samples():
    torch.manual_seed(0)
    layers = [torch.randn(3, 4, 5, 5), torch.randn(3, 6, 3, 3)]
    targets = [L.gram_matrix(torch.randn(1, 4, 7, 7)), L.gram_matrix(torch.randn(1, 6, 4, 4))]
    batch = L.style_loss(layers, targets)
    singles = [L.style_loss([f[i:i + 1] for f in layers], targets) for i in range(3)]
    assert batch.item() == pytest.approx(torch.stack(singles).mean().item(), rel=1e-6)


def test_total_variation_known_value():
    image = torch.zeros(1, 1, 2, 3)
    image[..., :, 2] = 1.0  # a vertical edge between columns 1 and 2
    # horizontal differences: [0, 1] in both rows -> mean 0.5; vertical differences all 0.
    assert L.total_variation(image).item() == pytest.approx(0.5)
    assert L.total_variation(torch.ones(2, 3, 4, 4)).item() == 0.0


def test_noise_loss_is_mse_of_the_two_outputs():
    a = torch.zeros(2, 3, 2, 2)
    b = torch.full((2, 3, 2, 2), 0.5)
    assert L.noise_loss(a, b).item() == pytest.approx(0.25)
    assert L.noise_loss(a, a).item() == 0.0


def test_noise_pattern_count_range_and_reproducibility():
    pattern = L.make_noise_pattern(16, 16, 10, 200, torch.Generator().manual_seed(1))
    again = L.make_noise_pattern(16, 16, 10, 200, torch.Generator().manual_seed(1))
    assert pattern.shape == (1, 1, 16, 16)
    assert torch.equal(pattern, again)
    assert 1 <= int((pattern != 0).sum()) <= 10
    assert pattern.abs().max() <= 2 * 200 / 255  # a pixel drawn twice can collect two values
    images = torch.full((2, 3, 16, 16), 0.5)
    noisy = L.add_noise(images, pattern)
    assert noisy.min() >= 0 and noisy.max() <= 1
    changed = (noisy != images).any(dim=1)  # the same pixels change in every channel and sample
    assert torch.equal(changed[0], changed[1]) and torch.equal(changed[0], pattern[0, 0] != 0)

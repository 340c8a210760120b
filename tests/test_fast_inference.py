"""network/fast_inference.py: the rewritten layers compute what the network as trained does."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from config import NETWORK_SIZES, NetworkConfig
from network.fast_inference import (ChannelGroupNorm, PhaseConv, SubpixelUpsampleConv,
                                    TwoPassInstanceNorm, for_inference)
from network import examples_network, fast_inference, original_network
from network.formats import RangeAdapter
from network.style_network import ConvLayer, StylizingNetwork, UpsampleConv
from stylization.processor import Processor, RunOptions


def random_network(cfg: NetworkConfig, seed: int = 0) -> StylizingNetwork:
    """Random weights large enough to move every layer, small enough not to saturate the tanh."""
    torch.manual_seed(seed)
    model = StylizingNetwork(cfg).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.normal_(0.0, 0.1)
    return model


@pytest.mark.parametrize("cfg", [*NETWORK_SIZES.values(), NetworkConfig(channels=(8, 12, 16), res_blocks=1),
                                 NetworkConfig(channels=(8, 12), stem_kernel=5, final_kernel=7,
                                               res_blocks=1),
                                 # inner 5x5 kernels: the sub-pixel rewrite does not apply
                                 NetworkConfig(channels=(8, 12), kernel=5, stem_kernel=3,
                                               final_kernel=3, res_blocks=1)])
@pytest.mark.parametrize("shape", [(2, 3, 36, 64), (1, 3, 37, 61), (1, 3, 5, 9)])
@pytest.mark.parametrize("compiled", [False, True])
def test_rewritten_network_matches_the_network_as_trained(cfg, shape, compiled):
    model = random_network(cfg)
    fast = for_inference(model, compiled=compiled)
    x = torch.rand(shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected, got = model(x), fast(x)
    assert got.shape == expected.shape == shape
    assert expected.std() > 0.02  # a live output, not a saturated constant
    assert (got - expected).abs().max() < 1e-5


def test_every_layer_it_can_rewrite_is_rewritten_and_the_original_is_left_alone():
    model = random_network(NetworkConfig())
    fast = for_inference(model, compiled=True)
    assert isinstance(fast.head, PhaseConv)
    assert all(isinstance(layer, SubpixelUpsampleConv) for layer in fast.up)
    assert not any(isinstance(m, nn.InstanceNorm2d) for m in fast.modules())
    assert any(isinstance(m, TwoPassInstanceNorm) for m in fast.modules())
    eager = for_inference(model)
    assert not any(isinstance(m, (nn.InstanceNorm2d, TwoPassInstanceNorm)) for m in eager.modules())
    assert any(isinstance(m, ChannelGroupNorm) for m in eager.modules())
    # the network passed in is not changed: training and export keep using it
    assert isinstance(model.head, ConvLayer)
    assert all(isinstance(layer, UpsampleConv) for layer in model.up)


@pytest.mark.parametrize("name", list(NETWORK_SIZES))
def test_every_named_size_gets_both_rewrites(name):
    fast = for_inference(random_network(NETWORK_SIZES[name]))
    assert isinstance(fast.head, PhaseConv)
    assert fast.head.weight.shape[-1] == NETWORK_SIZES[name].final_kernel + 1  # k + phases - 1
    assert all(isinstance(layer, SubpixelUpsampleConv) for layer in fast.up)


def test_what_it_cannot_rewrite_stays_and_still_matches():
    bilinear = random_network(NetworkConfig(channels=(8, 12), upsample="bilinear", res_blocks=1))
    fast = for_inference(bilinear)
    assert all(isinstance(layer, UpsampleConv) for layer in fast.up)
    assert isinstance(fast.head, PhaseConv)  # the head does not depend on the upsampling
    wide = for_inference(random_network(NetworkConfig(channels=(8, 12), kernel=5, res_blocks=1)))
    assert all(isinstance(layer, UpsampleConv) for layer in wide.up)  # 5x5 after the upsample
    single = random_network(NetworkConfig(channels=(8,), res_blocks=1))  # sides need not be even
    assert isinstance(for_inference(single).head, ConvLayer)
    x = torch.rand(1, 3, 21, 30)
    with torch.no_grad():
        assert (for_inference(bilinear)(x) - bilinear(x)).abs().max() < 1e-5
        assert (for_inference(single)(x) - single(x)).abs().max() < 1e-5


def test_models_without_instance_norms_are_returned_unchanged():
    other = nn.Sequential(nn.Conv2d(3, 3, 3, padding=1))
    assert for_inference(other) is other


@pytest.mark.parametrize("layout", [original_network, examples_network])
@pytest.mark.parametrize("compiled", [False, True])
def test_other_layouts_get_the_faster_norms_and_keep_their_function(layout, compiled):
    torch.manual_seed(0)
    net = layout.OriginalNetwork() if layout is original_network else layout.ExamplesNetwork()
    with torch.no_grad():  # norms' weights and biases away from 1 and 0, as trained ones are
        for parameter in net.parameters():
            parameter.normal_(0.0, 0.5 if parameter.ndim == 1 else 0.1)
    model = RangeAdapter(net, layout.VALUE_RANGE, layout.MIN_SIDE).eval()
    norms = sum(isinstance(m, nn.InstanceNorm2d) for m in model.modules())
    fast = for_inference(model, compiled=compiled)
    swapped = [m for m in fast.modules() if isinstance(m, (ChannelGroupNorm, TwoPassInstanceNorm))]
    assert norms > 0 and len(swapped) == norms  # every one of them (all affine in both layouts)
    assert all(isinstance(m, TwoPassInstanceNorm if compiled else ChannelGroupNorm) for m in swapped)
    assert sum(isinstance(m, nn.InstanceNorm2d) for m in model.modules()) == norms  # a copy
    x = torch.rand(1, 3, 40, 56, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected, got = model(x), fast(x)
    assert expected.std() > 1e-3  # live (the examples layout's 0-255 output is small here)
    assert (got - expected).abs().max() < 1e-3 * expected.std()


@pytest.mark.parametrize("affine", [True, False])
def test_channel_group_norm_is_the_instance_norm(affine):
    norm = nn.InstanceNorm2d(6, affine=affine)
    if affine:
        with torch.no_grad():
            norm.weight.normal_(1.0, 0.5)
            norm.bias.normal_(0.0, 0.5)
    x = torch.randn(2, 6, 9, 13, generator=torch.Generator().manual_seed(0)) * 3 + 2
    with torch.no_grad():
        assert (ChannelGroupNorm(norm)(x) - norm(x)).abs().max() < 1e-5


@pytest.mark.parametrize("compiled", [False, True])
def test_biases_that_instance_norms_cancel_are_dropped_and_bf16_comes_closer(compiled, monkeypatch):
    model = random_network(NetworkConfig(channels=(8, 12, 16), res_blocks=2))
    with torch.no_grad():  # biases far from zero, as trained networks can have them
        for module in model.modules():
            if isinstance(module, nn.Conv2d) and module is not model.head[1]:
                module.bias.add_(8.0)
    x = torch.rand(2, 3, 32, 48, generator=torch.Generator().manual_seed(0))
    dropped = for_inference(model, compiled=compiled)
    with_biases = [m for m in dropped.modules() if isinstance(m, (nn.Conv2d, SubpixelUpsampleConv, PhaseConv))
                   and m.bias is not None]
    assert len(with_biases) == 1  # the head's, which no norm follows
    monkeypatch.setattr(fast_inference, "drop_cancelled_biases", lambda module: None)
    kept = for_inference(model, compiled=compiled)
    with torch.no_grad():
        reference = model(x)
        assert (dropped(x) - reference).abs().max() < 1e-4  # the same function in float32
        errors = [(net.to(torch.bfloat16)(x.bfloat16()).float() - reference).abs().mean()
                  for net in (kept, dropped)]
    assert errors[1] < 0.5 * errors[0]


def test_speed_benchmarks_norm_comparison_runs_the_instance_norm_kernel_and_restores(tmp_path, monkeypatch):
    from benchmarks import stylize_speed
    from conftest import tiny_checkpoint

    kinds = []

    def recording(*args, **kwargs) -> Processor:
        processor = Processor(*args, **kwargs)
        kinds.append({type(m).__name__ for m in processor.model.modules()})
        return processor

    monkeypatch.setattr(stylize_speed, "Processor", recording)
    path = tiny_checkpoint(tmp_path / "tiny.pth.tar")
    frames = [np.random.default_rng(i).integers(0, 256, (20, 28, 3), dtype=np.uint8) for i in range(3)]
    ours = stylize_speed.model_only(path, torch.device("cpu"), RunOptions(), frames)[2]
    theirs = stylize_speed.model_only(path, torch.device("cpu"), RunOptions(), frames, group_norms=False)[2]
    assert "ChannelGroupNorm" in kinds[0] and "InstanceNorm2d" not in kinds[0]
    assert "InstanceNorm2d" in kinds[1] and "ChannelGroupNorm" not in kinds[1]
    assert fast_inference.swap_norms.__name__ == "swap_norms"  # put back
    assert all(np.abs(a.astype(int) - b.astype(int)).max() <= 1 for a, b in zip(ours, theirs))


def test_speed_tables_name_each_model_by_file_and_network(tmp_path):
    from benchmarks.stylize_speed import model_label, model_labels
    from conftest import tiny_checkpoint

    fast = tiny_checkpoint(tmp_path / "a.pth.tar", cfg=NETWORK_SIZES["fast"])
    coarse = tiny_checkpoint(tmp_path / "b.pth.tar", cfg=NETWORK_SIZES["coarse"])
    assert model_label(fast) == "a.pth.tar (fast network)"
    assert model_label(coarse) == "b.pth.tar (coarse network)"
    assert model_label(tiny_checkpoint(tmp_path / "c.pth.tar")) == "c.pth.tar"  # no named size
    assert model_label(tmp_path / "d.onnx") == "d.onnx"
    (tmp_path / "other").mkdir()
    twin = tiny_checkpoint(tmp_path / "other" / "a.pth.tar", cfg=NETWORK_SIZES["fast"])
    assert model_labels([fast, twin, coarse]) == [f"{fast} (fast network)", f"{twin} (fast network)",
                                                  "b.pth.tar (coarse network)"]  # one file name, two rows

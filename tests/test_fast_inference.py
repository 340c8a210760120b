"""network/fast_inference.py: the rewritten layers compute what the network as trained does."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from torch import nn

from config import NETWORK_SIZES, NetworkConfig
from network.fast_inference import (PhaseConv, SubpixelUpsampleConv, TwoPassInstanceNorm,
                                    for_inference)
from network import fast_inference
from network.style_network import ConvLayer, StylizingNetwork, UpsampleConv
from stylization.processor import Processor


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
    # the network passed in is not changed: training and export keep using it
    assert isinstance(model.head, ConvLayer)
    assert all(isinstance(layer, UpsampleConv) for layer in model.up)
    assert not any(isinstance(m, TwoPassInstanceNorm) for m in for_inference(model).modules())


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


def test_models_of_other_layouts_are_returned_unchanged():
    other = nn.Sequential(nn.Conv2d(3, 3, 3, padding=1))
    assert for_inference(other) is other


@pytest.mark.skipif(shutil.which("c++") is None and shutil.which("g++") is None,
                    reason="compiling on the CPU builds C++ kernels: no C++ compiler here")
def test_compiled_processor_gives_the_eager_processors_frames(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path))  # not the user's cache
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (24, 40, 3), dtype=np.uint8) for _ in range(3)]
    model = random_network(NetworkConfig(channels=(8, 12, 16), res_blocks=1))
    eager = Processor(model, "cpu")(frames)
    compiled = Processor(model, "cpu", compile=True, batch_size=3)
    got = compiled(frames) + compiled(frames[:1])  # a short last batch is padded, then cut
    for ours, theirs in zip(got, eager + eager[:1]):
        assert np.abs(ours.astype(int) - theirs.astype(int)).max() <= 1


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

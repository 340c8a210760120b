"""The stylizing network's shape contract and the loss network's weight files."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import config
from common.errors import UserError
from conftest import TINY_NETWORK, random_vgg_file
from network.loss_network import build_loss_network, layer_names, read_vgg_weights
from network.style_network import ResidualBlock, StylizingNetwork


@pytest.mark.parametrize("height,width", [(251, 333), (1, 1), (7, 5), (64, 64), (30, 17)])
def test_output_has_the_input_size_and_range(height, width):
    torch.manual_seed(0)
    model = StylizingNetwork(TINY_NETWORK).eval()
    with torch.no_grad():
        out = model(torch.rand(2, 3, height, width))
    assert out.shape == (2, 3, height, width)
    assert out.min() >= 0 and out.max() <= 1


def test_default_network_sizes_come_from_config_and_have_no_transposed_convs():
    model = StylizingNetwork()
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert convs[0].kernel_size == (config.NetworkConfig().stem_kernel,) * 2
    assert convs[0].out_channels == config.NetworkConfig().channels[0]
    assert sum(isinstance(m, ResidualBlock) for m in model.modules()) == config.NetworkConfig().res_blocks
    assert not any(isinstance(m, nn.ConvTranspose2d) for m in model.modules())
    assert all(isinstance(m, nn.InstanceNorm2d) for m in model.modules() if "Norm" in type(m).__name__)


def test_residual_blocks_keep_their_skip_connection():
    block = ResidualBlock(4, 3)
    last_norm = [m for m in block.modules() if isinstance(m, nn.InstanceNorm2d)][-1]
    nn.init.zeros_(last_norm.weight)
    nn.init.zeros_(last_norm.bias)
    x = torch.randn(1, 4, 8, 8)
    assert torch.equal(block(x), x)  # the body adds nothing, so the block is the identity


def test_vgg_layer_names():
    names = layer_names("VGG16")
    assert names.index("relu4_3") == 22 and names.index("relu2_2") == 8
    assert layer_names("VGG19").index("relu4_2") == 22


@pytest.mark.parametrize("arch", ["VGG16", "VGG19"])
@pytest.mark.parametrize("layout,preprocess", [("caffe", "caffe"), ("torchvision", "torchvision")])
def test_both_weight_layouts_load_with_their_preprocessing(tmp_path, arch, layout, preprocess):
    path = random_vgg_file(tmp_path / f"{arch}.pth", arch, layout)
    net = build_loss_network(path, arch)
    assert net.preprocess == preprocess
    deepest = max(layer_names(arch).index(n) for n in config.LOSS_LAYERS[arch]["style"])
    assert len(net.features) == deepest + 1  # cut at the deepest layer used
    assert not any(p.requires_grad for p in net.parameters())
    net.train()
    assert not net.training
    raw = torch.load(path, weights_only=True)
    prefix = "features." if layout == "torchvision" else ""
    assert torch.equal(net.features[0].weight, raw[f"{prefix}0.weight"])
    out = net(torch.rand(2, 3, 32, 32))
    assert set(out) == set(config.LOSS_LAYERS[arch]["style"] + config.LOSS_LAYERS[arch]["content"])


@pytest.mark.parametrize("layout", ["caffe", "torchvision"])
def test_loss_network_feeds_vgg_what_its_layout_expects(tmp_path, layout):
    net = build_loss_network(random_vgg_file(tmp_path / "v.pth", "VGG16", layout), "VGG16")
    seen = []
    net.features[0].register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    net(torch.full((1, 3, 16, 16), 0.5))
    if layout == "caffe":  # RGB 0-255 minus the mean, std 1
        expected = [127.5 - 123.0, 127.5 - 117.0, 127.5 - 104.0]
    else:  # RGB 0-1, ImageNet mean and std
        expected = [(0.5 - 0.485) / 0.229, (0.5 - 0.456) / 0.224, (0.5 - 0.406) / 0.225]
    assert torch.allclose(seen[0][0, :, 0, 0], torch.tensor(expected), atol=1e-4)


def test_forward_stops_at_the_deepest_requested_layer(tmp_path):
    net = build_loss_network(random_vgg_file(tmp_path / "v.pth", "VGG16", "caffe"), "VGG16")
    calls = []
    hooks = [m.register_forward_hook(lambda m, i, o: calls.append(m)) for m in net.features]
    out = net(torch.rand(1, 3, 16, 16), ("relu2_2",))
    assert list(out) == ["relu2_2"]
    assert len(calls) == sum(1 for n in net.names[:9] if not n.startswith("relu"))
    for hook in hooks:
        hook.remove()


def test_content_layers_replace_the_default_ones_and_may_lie_deeper_than_the_style(tmp_path):
    path = random_vgg_file(tmp_path / "v.pth", "VGG16", "caffe")
    assert build_loss_network(path, "VGG16").layers == config.LOSS_LAYERS["VGG16"]["style"]  # relu2_2 among them
    net = build_loss_network(path, "VGG16", content_layers=("relu5_1",))
    assert net.layers == (*config.LOSS_LAYERS["VGG16"]["style"], "relu5_1")
    assert set(net(torch.rand(1, 3, 32, 32))) == {*config.LOSS_LAYERS["VGG16"]["style"], "relu5_1"}


def test_preprocessing_can_be_forced(tmp_path):
    path = random_vgg_file(tmp_path / "v.pth", "VGG16", "caffe")
    assert build_loss_network(path, "VGG16", "torchvision").preprocess == "torchvision"


@pytest.mark.parametrize("arch,other", [("VGG16", "VGG19"), ("VGG19", "VGG16")])
def test_a_file_of_the_other_architecture_is_refused(tmp_path, arch, other):
    path = random_vgg_file(tmp_path / "v.pth", other, "torchvision")
    with pytest.raises(UserError, match=f"holds {other} weights but --loss_net_choice is {arch}"):
        read_vgg_weights(path, arch)


def test_files_that_are_not_vgg_are_refused(tmp_path):
    torch.save({"conv.weight": torch.zeros(3, 3)}, tmp_path / "other.pth")
    with pytest.raises(UserError, match="not a VGG16 weight file"):
        read_vgg_weights(tmp_path / "other.pth", "VGG16")
    (tmp_path / "text.pth").write_text("hello")
    with pytest.raises(UserError, match="not a readable PyTorch weight file"):
        read_vgg_weights(tmp_path / "text.pth", "VGG16")
    with pytest.raises(UserError, match="does not exist"):
        read_vgg_weights(tmp_path / "missing.pth", "VGG16")

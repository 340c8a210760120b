"""Named network sizes: train.py --network, the checkpoint records it, stylize.py follows it;
benchmarks/network_sizes.py runs on tiny inputs."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

import config
from common.errors import UserError
from common.model_files import read_checkpoint
from conftest import run_entry, write_image
from network.formats import load_model
from network.style_network import StylizingNetwork
from train.checkpoints import network_config


def train_args(ws: Path, *extra: str) -> list[str]:
    """train.py on conftest's workspace, in float32, without the noise loss's options."""
    return ["--content_dir", str(ws / "frames"), "--style_path", str(ws / "style.png"),
            "--loss_net_path", str(ws / "vgg16.pth"), "--model_dir", str(ws / "models"),
            "--train_output_dir", str(ws / "out"), "--model_name", "m.pth.tar", "--img_size", "32",
            "--style_size", "48", "--batch_size", "2", "--device", "cpu", "--precision", "fp32", *extra]


def test_the_fast_size_trains_is_recorded_and_stylises_without_a_flag(workspace):
    fast = config.NETWORK_SIZES["fast"]
    assert fast != config.NETWORK_SIZES["default"]
    assert run_entry("train.py", *train_args(workspace, "--network", "fast")).returncode == 0
    checkpoint = read_checkpoint(workspace / "models" / "m.pth.tar")
    assert config.NetworkConfig.from_dict(checkpoint["network"]) == fast
    assert checkpoint["network_size"] == "fast"
    model = load_model(workspace / "models" / "m.pth.tar")
    assert isinstance(model, StylizingNetwork) and model.cfg == fast
    # resuming keeps the recorded size without the flag
    assert run_entry("train.py", *train_args(workspace, "--load_model", "True")).returncode == 0
    resumed = read_checkpoint(workspace / "models" / "m.pth.tar")
    assert resumed["network"] == checkpoint["network"] and resumed["step"] == 6  # two epochs of 3
    photo = write_image(workspace / "photo.png", 45, 37)
    assert run_entry("stylize.py", "--content_type", "image", "--source", str(photo), "--model_path",
                     str(workspace / "models" / "m.pth.tar"), "--output_dir", str(workspace / "styled"),
                     "--real_time", "False", "--device", "cpu").returncode == 0
    assert [p.name for p in (workspace / "styled").iterdir()] == ["photo_m.png"]


def test_the_network_size_comes_from_the_flag_or_the_resumed_checkpoint():
    default, fast = config.NETWORK_SIZES["default"], config.NETWORK_SIZES["fast"]
    assert network_config(None, None) == default
    assert network_config("fast", None) == fast
    resumed = {"network": fast.to_dict()}
    assert network_config(None, resumed) == fast
    assert network_config("fast", resumed) == fast
    with pytest.raises(UserError, match="--network default differs from the network of the checkpoint"):
        network_config("default", resumed)
    assert config.network_name(fast) == "fast"
    assert config.network_name(config.NetworkConfig(channels=(8, 8))) is None


def receptive_field(cfg: config.NetworkConfig, size: int = 320) -> int:
    """Width of the input window one output pixel depends on, norms left out (they add only
    whole-picture statistics): the extent of the input gradient of the centre pixel."""
    model = StylizingNetwork(cfg)
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, torch.nn.modules.instancenorm._InstanceNorm):
                setattr(module, name, torch.nn.Identity())
    x = torch.rand(1, 3, size, size, requires_grad=True)
    model(x)[0, :, size // 2, size // 2].sum().backward()
    columns = (x.grad.abs().sum((0, 1, 2)) > 0).nonzero()
    return int(columns.max() - columns.min() + 1)


def test_the_coarse_size_draws_from_a_larger_window_with_the_default_s_parameters():
    default, coarse = config.NETWORK_SIZES["default"], config.NETWORK_SIZES["coarse"]
    count = lambda cfg: sum(p.numel() for p in StylizingNetwork(cfg).parameters())
    assert count(coarse) == count(default)
    assert receptive_field(default) == 107 and receptive_field(coarse) == 175


def test_the_tiny_size_does_under_half_the_fast_size_s_arithmetic_and_reaches_further():
    """Real time without native bf16 comes from less arithmetic per frame (docs/speed.md), not
    from a smaller window: tiny's extra downsampling makes up for its narrower full-size layers."""
    from benchmarks.network_sizes import gflop_per_frame
    fast, tiny = config.NETWORK_SIZES["fast"], config.NETWORK_SIZES["tiny"]
    assert gflop_per_frame(tiny, (640, 360)) < 0.5 * gflop_per_frame(fast, (640, 360))
    assert receptive_field(tiny) > receptive_field(fast)


def test_network_sizes_benchmark_runs_on_tiny_inputs(workspace, capsys):
    from benchmarks import network_sizes as bench
    tiny = "channels=8-12,res_blocks=1,stem_kernel=3,final_kernel=3"
    assert bench.parse_candidate(tiny) == config.NetworkConfig(channels=(8, 12), res_blocks=1,
                                                                stem_kernel=3, final_kernel=3)
    assert bench.parse_candidate("fast") == config.NETWORK_SIZES["fast"]
    with pytest.raises(Exception, match="key=value"):
        bench.parse_candidate("widths=8")
    torch.manual_seed(0)
    bench.main(["--candidates", tiny, "channels=8-16,res_blocks=1,stem_kernel=5,final_kernel=5",
                "--size", "40x24", "--frames", "2", "--rounds", "1", "--device", "cpu",
                "--train_steps", "2", "--content_dir", str(workspace / "frames"),
                "--style_path", str(workspace / "style.png"), "--loss_net_path", str(workspace / "vgg16.pth"),
                "--img_size", "32", "--style_size", "48", "--eval_images", "2", "--train_batch_size", "2",
                "--train_precision", "fp32"])
    out = capsys.readouterr().out
    speed_rows = [line for line in out.splitlines() if line.startswith("| 8-")]
    assert len(speed_rows) == 4  # two candidates, speed and loss tables
    assert "fp32 frames/s" in out and "bf16 frames/s" in out
    assert "1.00x" in speed_rows[0]  # the first candidate is the reference
    loss_rows = [line.split("|") for line in speed_rows[2:]]
    assert all(float(row[2]) > 0 and float(row[4]) > 0 for row in loss_rows)  # content, style losses

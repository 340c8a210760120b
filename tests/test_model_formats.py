"""Model files of other projects load and run as those projects ran them.

Each layout's state dict is written here from the key names and shapes those projects use
(not from this project's modules), filled with random weights, saved in that project's
container, and the output of load_model is compared with a forward pass written here with
torch.nn.functional.
"""
from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from common.errors import UserError
import common.model_files
from conftest import run_script, tiny_checkpoint, write_image
from network.formats import load_model

EPS = 1e-5  # InstanceNorm2d's default, used by both projects


def conv_entry(gen: torch.Generator, c_out: int, c_in: int, kernel: int, gain: float = 1.0) -> dict:
    fan_in = c_in * kernel * kernel
    return {"weight": torch.randn(c_out, c_in, kernel, kernel, generator=gen) * gain / fan_in ** 0.5,
            "bias": torch.randn(c_out, generator=gen) * 0.1}


def norm_entry(gen: torch.Generator, channels: int) -> dict:
    return {"weight": 1 + 0.2 * torch.randn(channels, generator=gen),
            "bias": 0.2 * torch.randn(channels, generator=gen)}


def flatten(prefix: str, entry: dict) -> dict:
    return {f"{prefix}.{key}": value for key, value in entry.items()}


# ----------------------------------------------------------------------------- the original project
def original_state(seed: int = 0) -> OrderedDict:
    """initial_block, down_blocks.0/1, res_blocks.0-4 (conv1, conv2), up_blocks.0/1 (conv at
    conv.1), final_block; each with conv.weight/bias and norm.weight/bias."""
    gen = torch.Generator().manual_seed(seed)
    state = OrderedDict()

    def block(name: str, c_in: int, c_out: int, conv_name: str = "conv") -> None:
        state.update(flatten(f"{name}.{conv_name}", conv_entry(gen, c_out, c_in, 3, gain=2.0)))
        state.update(flatten(f"{name}.norm", norm_entry(gen, c_out)))

    block("initial_block", 3, 32)
    block("down_blocks.0", 32, 48)
    block("down_blocks.1", 48, 64)
    for i in range(5):
        block(f"res_blocks.{i}.conv1", 64, 64)
        block(f"res_blocks.{i}.conv2", 64, 64)
    block("up_blocks.0", 64, 48, "conv.1")
    block("up_blocks.1", 48, 32, "conv.1")
    block("final_block", 32, 3)
    return state


def original_forward(s: dict, x: torch.Tensor) -> torch.Tensor:
    """The original network on [-1, 1] input: reflection-padded 3x3 convs, no skips, bilinear up."""
    def conv_norm(t: torch.Tensor, name: str, stride: int = 1, conv: str = "conv") -> torch.Tensor:
        t = F.conv2d(F.pad(t, (1, 1, 1, 1), mode="reflect"), s[f"{name}.{conv}.weight"],
                     s[f"{name}.{conv}.bias"], stride=stride)
        return F.instance_norm(t, weight=s[f"{name}.norm.weight"], bias=s[f"{name}.norm.bias"], eps=EPS)

    t = F.relu(conv_norm(x, "initial_block"))
    t = F.relu(conv_norm(t, "down_blocks.0", 2))
    t = F.relu(conv_norm(t, "down_blocks.1", 2))
    for i in range(5):
        t = conv_norm(F.relu(conv_norm(t, f"res_blocks.{i}.conv1")), f"res_blocks.{i}.conv2")
    for i in range(2):
        t = F.interpolate(t, scale_factor=2, mode="bilinear", align_corners=False)
        t = F.relu(conv_norm(t, f"up_blocks.{i}", conv="conv.1"))
    return torch.tanh(conv_norm(t, "final_block"))


def save_original(path: Path, state: dict) -> Path:
    """The original's container: a dict with state_dict and optimizer."""
    exp_avg = {i: {"step": torch.tensor(10.0), "exp_avg": torch.zeros_like(v), "exp_avg_sq": torch.zeros_like(v)}
               for i, v in enumerate(state.values())}
    torch.save({"state_dict": state, "optimizer": {"state": exp_avg, "param_groups": [
        {"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0, "amsgrad": False,
         "params": list(range(len(state)))}]}}, path)
    return path


# ----------------------------------------------------------------------------- pytorch/examples
def examples_state(seed: int = 0, running_stats: bool = False) -> OrderedDict:
    """TransformerNet: conv1..3 + in1..3, res1..5 (conv1, in1, conv2, in2), deconv1..3 + in4, in5;
    convolutions under <name>.conv2d. Old files also hold in*.running_mean/var."""
    gen = torch.Generator().manual_seed(seed)
    state = OrderedDict()

    def norm(name: str, channels: int) -> None:
        state.update(flatten(name, norm_entry(gen, channels)))
        if running_stats:
            state[f"{name}.running_mean"] = torch.randn(channels, generator=gen)
            state[f"{name}.running_var"] = torch.rand(channels, generator=gen) + 0.5

    def conv(name: str, c_in: int, c_out: int, kernel: int, gain: float = 2.0) -> None:
        state.update(flatten(f"{name}.conv2d", conv_entry(gen, c_out, c_in, kernel, gain)))

    conv("conv1", 3, 32, 9), norm("in1", 32)
    conv("conv2", 32, 64, 3), norm("in2", 64)
    conv("conv3", 64, 128, 3), norm("in3", 128)
    for i in range(1, 6):
        conv(f"res{i}.conv1", 128, 128, 3), norm(f"res{i}.in1", 128)
        conv(f"res{i}.conv2", 128, 128, 3), norm(f"res{i}.in2", 128)
    conv("deconv1", 128, 64, 3), norm("in4", 64)
    conv("deconv2", 64, 32, 3), norm("in5", 32)
    # Outputs that span 0-255 like a trained model's, so that clamping hides little.
    conv("deconv3", 32, 3, 9, gain=120.0)
    state["deconv3.conv2d.bias"] = torch.full((3,), 127.5)
    return state


def examples_forward(s: dict, x: torch.Tensor) -> torch.Tensor:
    """TransformerNet on 0-255 input: reflection pad kernel // 2, nearest x2 before deconv1/2."""
    def conv(t: torch.Tensor, name: str, stride: int = 1, up: bool = False) -> torch.Tensor:
        if up:
            t = F.interpolate(t, scale_factor=2, mode="nearest")
        weight = s[f"{name}.conv2d.weight"]
        pad = weight.shape[-1] // 2
        return F.conv2d(F.pad(t, (pad,) * 4, mode="reflect"), weight, s[f"{name}.conv2d.bias"], stride=stride)

    def norm(t: torch.Tensor, name: str) -> torch.Tensor:
        return F.instance_norm(t, weight=s[f"{name}.weight"], bias=s[f"{name}.bias"], eps=EPS)

    t = F.relu(norm(conv(x, "conv1"), "in1"))
    t = F.relu(norm(conv(t, "conv2", 2), "in2"))
    t = F.relu(norm(conv(t, "conv3", 2), "in3"))
    for i in range(1, 6):
        r = F.relu(norm(conv(t, f"res{i}.conv1"), f"res{i}.in1"))
        t = t + norm(conv(r, f"res{i}.conv2"), f"res{i}.in2")
    t = F.relu(norm(conv(t, "deconv1", up=True), "in4"))
    t = F.relu(norm(conv(t, "deconv2", up=True), "in5"))
    return conv(t, "deconv3")


# ----------------------------------------------------------------------------- tests
def rgb(height: int, width: int, batch: int = 2) -> torch.Tensor:
    return torch.rand(batch, 3, height, width, generator=torch.Generator().manual_seed(1))


# 38x29: not a multiple of 4, so the crop back to the input's size is exercised.
@pytest.mark.parametrize("height,width", [(38, 29), (32, 48)])
def test_original_release_runs_as_the_original_did(tmp_path, height, width):
    state = original_state()
    path = save_original(tmp_path / "mosaic.pth.tar", state)
    model = load_model(path)
    x = rgb(height, width)
    with torch.no_grad():
        got = model(x)
        expected = (original_forward(state, x * 2 - 1) + 1) / 2  # the original works in [-1, 1]
    assert got.shape == x.shape
    assert expected.shape[-2:] == (-(-height // 4) * 4, -(-width // 4) * 4)  # its own rounding up
    expected = expected[..., :height, :width]
    assert expected.std() > 0.05  # the comparison is not between two flat images
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("running_stats", [False, True])
def test_pytorch_examples_model_runs_as_pytorch_examples_did(tmp_path, running_stats):
    state = examples_state(running_stats=running_stats)
    path = tmp_path / "candy.pth"
    torch.save(state, path)  # pytorch/examples publishes bare state dicts
    model = load_model(path)
    x = rgb(38, 29)
    with torch.no_grad():
        got = model(x)
        weights = {k: v for k, v in state.items() if "running" not in k}
        raw = examples_forward(weights, x * 255)[..., :38, :29] / 255
    assert got.shape == x.shape
    clamped = ((raw < 0) | (raw > 1)).float().mean()
    assert clamped < 0.2 and raw.std() > 0.1  # most of the output is compared before clamping
    torch.testing.assert_close(got, raw.clamp(0, 1), atol=1e-5, rtol=1e-4)


def test_foreign_networks_run_on_tiny_frames(tmp_path):
    torch.save(examples_state(), tmp_path / "udnie.pth")
    save_original(tmp_path / "orig.pth.tar", original_state())
    for path in (tmp_path / "udnie.pth", tmp_path / "orig.pth.tar"):
        with torch.no_grad():
            out = load_model(path)(rgb(3, 2))
        assert out.shape == (2, 3, 3, 2) and torch.isfinite(out).all()


def test_float16_weights_load_as_float32(tmp_path):
    state = original_state()
    save_original(tmp_path / "half.pth.tar", OrderedDict((k, v.half()) for k, v in state.items()))
    model = load_model(tmp_path / "half.pth.tar")
    assert all(p.dtype == torch.float32 for p in model.parameters())


def _message(path: Path) -> str:
    with pytest.raises(UserError) as caught:
        load_model(path)
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_unknown_layouts_are_refused_with_what_is_supported(tmp_path):
    torch.save({"fc.weight": torch.zeros(4, 4)}, tmp_path / "other.pth")
    torch.save({"state_dict": {"fc.weight": torch.zeros(4, 4)}, "optimizer": {}}, tmp_path / "other.pth.tar")
    torch.save({"epoch": 3}, tmp_path / "no_weights.pth")
    for name in ("other.pth", "other.pth.tar", "no_weights.pth"):
        message = _message(tmp_path / name)
        assert "not a model this toolkit can run" in message
        for supported in ("train.py", "original project", "pytorch/examples", "ONNX"):
            assert supported in message


def test_a_near_miss_says_what_differs(tmp_path):
    state = examples_state()
    state["conv1.conv2d.weight"] = torch.zeros(16, 3, 9, 9)  # a narrower network of that layout
    torch.save(state, tmp_path / "narrow.pth")
    message = _message(tmp_path / "narrow.pth")
    assert "resembles pytorch/examples" in message and "conv1.conv2d.weight has shape (16, 3, 9, 9)" in message


def test_stylize_runs_a_pytorch_examples_file_and_the_original_release(tmp_path):
    image = write_image(tmp_path / "photo.png", 45, 37)
    torch.save(examples_state(), tmp_path / "rain_princess.pth")
    save_original(tmp_path / "mosaic.pth.tar", original_state())
    for model, name in (("rain_princess.pth", "photo_rain_princess.png"), ("mosaic.pth.tar", "photo_mosaic.png")):
        result = run_script("stylize.py", "--content_type", "image", "--source", str(image),
                            "--model_path", str(tmp_path / model), "--output_dir", str(tmp_path / "out"),
                            "--real_time", "False", "--device", "cpu", env={"OMP_NUM_THREADS": "1"})
        assert result.returncode == 0, result.stderr
        out = np.asarray(Image.open(tmp_path / "out" / name))
        assert out.shape == (37, 45, 3) and out.std() > 5


def test_stylize_refuses_an_unknown_file_in_one_line(tmp_path):
    torch.save({"fc.weight": torch.zeros(4, 4)}, tmp_path / "other.pth")
    result = run_script("stylize.py", "--content_type", "image", "--source",
                        str(write_image(tmp_path / "p.png", 20, 20)), "--model_path",
                        str(tmp_path / "other.pth"), "--real_time", "False", "--output_dir", str(tmp_path / "out"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.count("error:") == 1 and "pytorch/examples" in result.stderr
    assert not (tmp_path / "out").exists()


def test_own_checkpoints_still_load_from_their_metadata(tmp_path):
    path = tiny_checkpoint(tmp_path / "tiny.pth.tar")
    data = common.model_files.read_checkpoint(path)
    data["network"]["res_blocks"] = 2  # metadata that no longer matches the weights
    common.model_files.save_checkpoint(data, tmp_path / "bad.pth.tar")
    assert load_model(path)(rgb(20, 20)).shape == (2, 3, 20, 20)
    assert "does not match the network it describes" in _message(tmp_path / "bad.pth.tar")

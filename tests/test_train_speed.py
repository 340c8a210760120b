"""The fast training step against the straightforward one, and the precision choice."""
from __future__ import annotations

import warnings

import pytest
import torch

import config
from benchmarks.train_speed import StraightforwardObjective, straightforward_step, unfrozen_loss_network
from common.errors import UserError
import common.precision
from common.precision import resolve_precision
from conftest import TINY_NETWORK, random_vgg_file
from network.loss_network import build_loss_network
from network.style_network import StylizingNetwork
from train import loss as L
from train.step import Objective, style_targets, training_step


def test_fast_step_and_straightforward_step_give_the_same_loss(tmp_path):
    torch.manual_seed(0)
    vgg = random_vgg_file(tmp_path / "v.pth", "VGG16", "caffe")
    model = StylizingNetwork(TINY_NETWORK)
    loss_net = build_loss_network(vgg, "VGG16")
    layers = config.LOSS_LAYERS["VGG16"]
    style, images = torch.rand(1, 3, 40, 48), torch.rand(3, 3, 32, 32)
    pattern = L.make_noise_pattern(32, 32, 60, 200, torch.Generator().manual_seed(0))
    weights = {"content": 10.0, "style": 100.0, "regu": 1e-2, "noise": 1.0, "flow": 0.0}

    objective = Objective(style_targets(loss_net, style, layers), layers, weights, noise_pattern=pattern)
    fast, fast_terms, _ = training_step(model, loss_net, images, objective)
    slow, slow_terms = straightforward_step(model, unfrozen_loss_network(vgg, torch.device("cpu")), images,
                                            StraightforwardObjective(style, layers, weights, pattern))
    assert fast.item() == pytest.approx(slow.item(), rel=1e-4)
    for name, value in fast_terms.items():
        assert value.item() == pytest.approx(slow_terms[name].item(), rel=1e-4), name
    assert fast_terms["noise"] > 0 and fast_terms["style"] > 0


def test_the_straightforward_step_really_trains_the_loss_network_too(tmp_path):
    vgg = random_vgg_file(tmp_path / "v.pth", "VGG16", "caffe")
    loss_net = unfrozen_loss_network(vgg, torch.device("cpu"))
    objective = StraightforwardObjective(torch.rand(1, 3, 32, 32), config.LOSS_LAYERS["VGG16"],
                                         {t: 1.0 for t in ("content", "style", "regu", "noise", "flow")})
    total, _ = straightforward_step(StylizingNetwork(TINY_NETWORK), loss_net, torch.rand(2, 3, 32, 32), objective)
    total.backward()
    assert all(p.grad is not None for p in loss_net.parameters())


@pytest.mark.parametrize("native", [True, False])
def test_precision_on_the_cpu(monkeypatch, native):
    monkeypatch.setattr(common.precision, "has_native_bf16_cpu", lambda: native)
    cpu = torch.device("cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert resolve_precision("fp32", cpu) is None
        assert resolve_precision("auto", cpu) == (torch.bfloat16 if native else None)
    with pytest.warns(UserWarning, match="fp16 on the CPU"):
        assert resolve_precision("fp16", cpu) == (torch.bfloat16 if native else None)
    if native:
        assert resolve_precision("bf16", cpu) == torch.bfloat16
    else:
        with pytest.warns(UserWarning, match="emulated"):
            assert resolve_precision("bf16", cpu) == torch.bfloat16


def test_precision_on_cuda_is_fp16_by_default(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    cuda = torch.device("cuda")
    assert resolve_precision("auto", cuda) == torch.float16
    with pytest.warns(UserWarning, match="no bf16"):
        assert resolve_precision("bf16", cuda) == torch.float16


def test_precision_names_round_trip():
    for name in config.PRECISIONS:
        assert common.precision.precision_name(None if name == "fp32" else getattr(torch, config.PRECISIONS[name])) == name
    with pytest.raises(UserError, match="unknown precision"):
        resolve_precision("fp8", torch.device("cpu"))


def test_autocast_follows_the_precision():
    x = torch.rand(2, 4)
    with common.precision.autocast(torch.device("cpu"), torch.bfloat16):
        assert (x @ x.T).dtype == torch.bfloat16
        assert L.gram_matrix(x.view(1, 2, 2, 2)).dtype == torch.float32  # Grams stay float32
    with common.precision.autocast(torch.device("cpu"), None):
        assert (x @ x.T).dtype == torch.float32


def test_benchmark_with_several_seeds_prints_the_seed_summary(tmp_path, capsys):
    from benchmarks.train_speed import main
    from conftest import write_image
    frames = tmp_path / "frames"
    frames.mkdir()
    for k in range(4):
        write_image(frames / f"f{k}.png", 40, 36, seed=k)
    style = write_image(tmp_path / "style.png", 48, 48, seed=9)
    vgg = random_vgg_file(tmp_path / "v.pth", "VGG16", "caffe")
    main(["--loss_net_path", str(vgg), "--content_dir", str(frames), "--style_path", str(style),
          "--device", "cpu", "--img_size", "32", "--style_size", "48", "--batch_size", "2", "--steps", "3",
          "--baseline_steps", "1", "--warmup", "1", "--precisions", "fp32", "--seeds", "0", "1"])
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| project | fp32 |")]
    assert [row.split("|")[3].strip() for row in rows] == ["0", "1"]
    summary = [line for line in out.splitlines() if line.startswith("| fp32 | 2 |")]
    assert len(summary) == 1 and summary[0].count("+0.0%") == 2

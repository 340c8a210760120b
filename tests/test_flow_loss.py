"""The optical-flow temporal loss: the loss itself, the frame pairs with their cached flow,
and train.py --lambda_flow."""
from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from common.model_files import read_checkpoint
from conftest import random_vgg_file, run_script, write_image
from train import loss as L
from train.dataset import FramePairDataset, successors

QUIET = {"OMP_NUM_THREADS": "1"}


def shifted_right(images: torch.Tensor) -> torch.Tensor:
    """The frames' content moved one pixel right (column 0 is new: filled with noise)."""
    moved = torch.rand_like(images)
    moved[..., 1:] = images[..., :-1]
    return moved


def test_flow_loss_is_zero_for_a_correctly_warped_copy_and_positive_otherwise():
    torch.manual_seed(0)
    stylised = torch.rand(2, 3, 8, 10, requires_grad=True)
    following = shifted_right(stylised.detach())
    flow = torch.zeros(2, 2, 8, 10)
    flow[:, 0] = -1  # frame t+1's pixel x was at x - 1 in frame t
    valid = torch.ones(2, 1, 8, 10)
    valid[..., 0] = 0  # the new column has no source in frame t
    assert L.flow_loss(following, stylised, flow, valid).item() == pytest.approx(0, abs=1e-12)

    flickering = following + 0.1 * torch.randn_like(following)
    loss = L.flow_loss(flickering, stylised, flow, valid)
    assert loss.item() > 1e-3
    loss.backward()
    assert stylised.grad.abs().sum() > 0  # it trains frame t through the warp
    assert L.flow_loss(following, stylised, torch.zeros_like(flow), valid).item() > 1e-3  # wrong flow
    assert L.flow_loss(flickering, stylised, flow, torch.zeros_like(valid)).item() == 0  # all masked


def test_successors_follow_extract_frames_naming():
    files = [Path(p) for p in ("a/clip_000000.jpg", "a/clip_000010.jpg", "a/clip_000002.jpg",
                               "a/photo.jpg", "a/other_000000.jpg", "b/clip_000004.jpg")]
    assert successors(files) == [2, None, 1, None, None, None]


def write_pan(folder: Path, name: str, count: int, every: int = 2) -> None:
    """Frames of a pan across a texture, named as common.frames.extract_frames names them."""
    rng = np.random.default_rng(1)
    wide = cv2.GaussianBlur(rng.integers(0, 256, (48, 64 + 4 * count, 3)).astype(np.uint8), (0, 0), 5)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        cv2.imwrite(str(folder / f"{name}_{i * every:06d}.png"), wide[:, 4 * i: 4 * i + 64])


def test_frame_pairs_come_with_cached_flow_outside_the_data_folder(tmp_path):
    frames, cache = tmp_path / "frames", tmp_path / "cache"
    write_pan(frames, "pan", 3)
    write_image(frames / "photo.png", 40, 30)
    before = sorted(p.name for p in frames.iterdir())
    dataset = FramePairDataset(frames, 32, cache)
    assert dataset.prepare(progress=False) == 2
    assert len(list(cache.glob("*.npz"))) == 2
    assert sorted(p.name for p in frames.iterdir()) == before  # the user's folder is untouched
    assert FramePairDataset(frames, 32, cache).prepare(progress=False) == 0  # computed once

    index = [p.name for p in dataset.files].index("pan_000000.png")
    frame, following, flow, valid = dataset[index]
    assert frame.shape == following.shape == (3, 32, 32) and flow.shape == (2, 32, 32)
    assert valid.mean() > 0.5
    # The content moves left (4 px of 48 scaled to 32: about 2.7 px), so frame t's pixel
    # sits to the right of frame t+1's: the flow from t+1 to t points right.
    assert flow[0][valid[0] > 0].median() == pytest.approx(4 * 32 / 48, abs=0.5)
    assert L.flow_loss(following.unsqueeze(0), frame.unsqueeze(0), flow.unsqueeze(0),
                       valid.unsqueeze(0)) < 0.2 * L.flow_loss(following.unsqueeze(0), frame.unsqueeze(0),
                                                               torch.zeros(1, 2, 32, 32), valid.unsqueeze(0))
    photo = dataset[[p.name for p in dataset.files].index("photo.png")]
    assert photo[3].sum() == 0  # a photo has no successor: no flow loss from it


def test_train_with_flow_loss_and_noise_loss(tmp_path):
    frames = tmp_path / "frames"
    write_pan(frames, "pan", 4)
    write_image(frames / "photo.png", 40, 30)
    write_image(tmp_path / "style.png", 64, 64, seed=42)
    random_vgg_file(tmp_path / "vgg16.pth", "VGG16", "caffe")
    args = ["--content_dir", str(frames), "--style_path", str(tmp_path / "style.png"),
            "--loss_net_path", str(tmp_path / "vgg16.pth"), "--model_dir", str(tmp_path / "models"),
            "--train_output_dir", str(tmp_path / "out"), "--model_name", "m.pth.tar",
            "--img_size", "32", "--style_size", "64", "--batch_size", "2", "--device", "cpu",
            "--lambda_noise", "1e-2", "--noise_per_img", "50", "--lambda_flow", "5",
            "--flow_cache_dir", str(tmp_path / "cache")]
    result = run_script("train.py", *args, env=QUIET)
    assert result.returncode == 0, result.stderr
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 3
    checkpoint = read_checkpoint(tmp_path / "models" / "m.pth.tar")
    assert checkpoint["loss_weights"]["flow"] == 5 and checkpoint["step"] == 3
    with open(tmp_path / "out" / "m_losses.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert all(float(r["noise"]) > 0 for r in rows) and any(float(r["flow"]) > 0 for r in rows)

    result = run_script("train.py", *args[:-4], "--lambda_flow", "-1", env=QUIET)
    assert result.returncode == 2 and "--lambda_flow must be 0 or more" in result.stderr

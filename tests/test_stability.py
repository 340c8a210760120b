"""The warping error E_warp: its definition on hand-made frames, .flo files, and the commands
that report it (stylize.py --report_stability, python -m stylization.stability)."""
from __future__ import annotations

import struct
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from common.errors import UserError
from conftest import run_script, write_video
from flow import FLO_MAGIC, is_scene_cut, read_flo, valid_flow_mask
from stylization.stability import WarpErrorMeter, score_videos

QUIET = {"OMP_NUM_THREADS": "1"}


def textured(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A smooth random texture (blurred noise) that optical flow can follow."""
    rng = np.random.default_rng(seed)
    noise = rng.integers(0, 256, (height, width, 3)).astype(np.uint8)
    return cv2.GaussianBlur(noise, (0, 0), 2.0)


def moving_frames(count: int, shift: int = 1, height: int = 48, width: int = 64) -> list[np.ndarray]:
    """A camera pan: each frame is the texture moved `shift` pixels left."""
    wide = textured(height, width + count * shift)
    return [np.ascontiguousarray(wide[:, i * shift: i * shift + width]) for i in range(count)]


def meter_result(inputs: list[np.ndarray], stylised: list[np.ndarray]):
    meter = WarpErrorMeter()
    for frame, out in zip(inputs, stylised, strict=True):
        meter.add(frame, out)
    return meter.result()


def test_static_video_scores_zero():
    frame = textured(40, 56)
    stylised = textured(40, 56, seed=1)
    result = meter_result([frame] * 4, [stylised] * 4)
    assert result.pairs == 3 and result.cuts == 0
    assert result.stylised == pytest.approx(0, abs=1e-10)
    assert result.input == pytest.approx(0, abs=1e-10)


def test_brightness_flicker_scores_higher_than_the_same_frames_without_it():
    frames = moving_frames(6)
    rng = np.random.default_rng(3)
    jittered = [np.clip(f.astype(np.int16) + int(rng.integers(-25, 26)), 0, 255).astype(np.uint8)
                for f in frames]
    steady = meter_result(frames, frames)
    flicker = meter_result(frames, jittered)
    assert steady.pairs == flicker.pairs == 5
    assert flicker.stylised > 5 * steady.stylised + 1e-3
    assert flicker.input == pytest.approx(steady.input)  # the reference ignores the stylised frames


def test_hand_computed_value_on_a_known_shift():
    # 2 x 3 frames; the flow from frame t to t+1 is one pixel to the right everywhere.
    forward = np.zeros((2, 3, 2), np.float32)
    forward[..., 0] = 1
    backward = -forward
    backward[0, 2] = (5, 0)  # inconsistent: masks (0,1) and (0,2), which look it up at (0,2)
    first = np.repeat(np.array([51, 102, 153], np.uint8)[None, :, None], 2, 0).repeat(3, 2)
    second = np.repeat(np.array([0, 51, 102], np.uint8)[None, :, None], 2, 0).repeat(3, 2)
    # warp(second)(x) = second(x + 1), the last column clamped: 51, 102, 102. Against the first
    # frame's 51, 102, 153 only the last column differs, by 51/255 = 0.2 in each of the three
    # channels: 3 * 0.04 = 0.12 there. Unmasked: (0,0), (1,0), (1,1), (1,2) -> 0.12 / 4.
    inputs = textured(2, 3)
    meter = WarpErrorMeter()
    meter.add(inputs, first)
    meter.add(inputs, second, flows=(forward, backward))
    result = meter.result()
    assert result.pairs == 1
    assert result.stylised == pytest.approx(0.03, rel=1e-5)


def test_motion_boundaries_and_inconsistent_flow_are_masked():
    flow = torch.zeros(1, 2, 8, 12)
    flow[:, 0, :, 6:] = 4  # the right half moves: a motion boundary at columns 5-6
    valid = valid_flow_mask(flow, -flow)[0, 0]
    assert valid[:, :5].all() and valid[:, 8:].all()
    assert not valid[:, 5:7].any()
    assert valid_flow_mask(flow, flow)[0, 0, :, 8:].sum() == 0  # backward flow disagrees


def test_scene_cuts_are_detected_and_skipped():
    frames = moving_frames(3)
    other = textured(48, 64, seed=9)
    assert not is_scene_cut(frames[0], frames[1])
    assert is_scene_cut(frames[1], other)
    assert not is_scene_cut(frames[0], np.clip(frames[0] * 0.6 + 40, 0, 255).astype(np.uint8))
    result = meter_result([*frames, other], [*frames, other])
    assert (result.pairs, result.cuts) == (2, 1)


def write_flo(path: Path, flow: np.ndarray) -> Path:
    """A Middlebury .flo file, as optical-flow tools write them."""
    path.parent.mkdir(parents=True, exist_ok=True)
    height, width = flow.shape[:2]
    path.write_bytes(struct.pack("<fii", FLO_MAGIC, width, height) + np.ascontiguousarray(flow, "<f4").tobytes())
    return path


def test_reads_a_flo_file_written_by_hand(tmp_path):
    height, width = 3, 4
    flow = np.arange(height * width * 2, dtype=np.float32).reshape(height, width, 2) / 7 - 1
    path = tmp_path / "pair.flo"
    path.write_bytes(struct.pack("<fii", 202021.25, width, height)
                     + b"".join(struct.pack("<ff", *flow[y, x]) for y in range(height) for x in range(width)))
    np.testing.assert_array_equal(read_flo(path), flow)
    np.testing.assert_array_equal(read_flo(write_flo(tmp_path / "copy.flo", flow)), flow)
    assert (tmp_path / "copy.flo").read_bytes() == path.read_bytes()
    (tmp_path / "bad.flo").write_bytes(path.read_bytes()[:-4])
    with pytest.raises(UserError, match="not a Middlebury .flo"):
        read_flo(tmp_path / "bad.flo")


def write_frames(folder: Path, frames: list[np.ndarray]) -> Path:
    folder.mkdir(parents=True)
    for i, frame in enumerate(frames):
        assert cv2.imwrite(str(folder / f"frame_{i:04d}.png"), frame[..., ::-1].copy())
    return folder


def test_warp_error_command_scores_frame_folders_with_ground_truth_flow(tmp_path):
    frames = moving_frames(4)
    inputs = write_frames(tmp_path / "in", frames)
    steady = write_frames(tmp_path / "steady", frames)
    rng = np.random.default_rng(0)
    noisy = write_frames(tmp_path / "noisy", [np.clip(f + rng.normal(0, 20, f.shape), 0, 255).astype(np.uint8)
                                              for f in frames])
    flows = tmp_path / "flow"
    for i in range(3):  # the texture moves one pixel left per frame
        write_flo(flows / f"frame_{i:04d}.flo", np.tile(np.array([-1, 0], np.float32), (48, 64, 1)))
    assert score_videos(inputs, steady, flows, progress=False).stylised < 1e-3
    result = run_script("-m stylization.stability", "--input", str(inputs), "--stylised", str(noisy),
                        "--flow_dir", str(flows), env=QUIET)
    assert result.returncode == 0, result.stderr
    line = result.stdout.strip().splitlines()[-1]
    assert line.startswith("E_warp:") and "3 frame pairs" in line
    assert float(line.split()[1]) > 0.01

    result = run_script("-m stylization.stability", "--input", str(inputs), "--stylised",
                        str(tmp_path / "missing"), env=QUIET)
    assert result.returncode == 2 and result.stderr.startswith("error:"), result.stderr


def test_stylize_reports_stability_of_videos_only(tmp_path, tiny_model):
    video = write_video(tmp_path / "clip.mp4", frames=8, width=64, height=48)
    common = ["--model_path", str(tiny_model), "--output_dir", str(tmp_path / "out"), "--real_time", "False"]
    result = run_script("stylize.py", "--content_type", "video", "--source", str(video),
                        "--report_stability", "True", *common, env=QUIET)
    assert result.returncode == 0, result.stderr
    lines = [l for l in result.stdout.splitlines() if l.startswith("E_warp:")]
    assert len(lines) == 1 and "stylised" in lines[0] and "input" in lines[0] and "7 frame pairs" in lines[0]
    stylised, reference = float(lines[0].split()[1]), float(lines[0].split()[3])
    assert stylised > 0 and reference >= 0

    plain = run_script("stylize.py", "--content_type", "video", "--source", str(video), *common, env=QUIET)
    assert plain.returncode == 0 and "E_warp" not in plain.stdout

    image = tmp_path / "photo.png"
    cv2.imwrite(str(image), textured(20, 20))
    refused = run_script("stylize.py", "--content_type", "image", "--source", str(image),
                         "--report_stability", "True", *common, env=QUIET)
    assert refused.returncode == 2 and "--content_type video" in refused.stderr

"""--target_fps: a live source's size paced to the frames/s this machine holds."""
from __future__ import annotations

import numpy as np
import pytest

import config
from conftest import run_script
from stylization import pacing
from stylization.pacing import SizePacer, next_side


def test_the_next_side_follows_the_rate_in_steps_and_bounds():
    step, margin = config.TARGET_FPS["side_step"], config.TARGET_FPS["margin"]
    assert next_side(640, 25.0, 25.0, 640) == 640  # on target: stay
    smaller = next_side(640, 10.0, 25.0, 640)
    assert smaller % step == 0 and smaller <= 640 * (10 / 25 * margin) ** 0.5
    assert next_side(320, 100.0, 25.0, 640) <= 320 * 2 ** 0.5 and next_side(320, 100.0, 25.0, 640) > 320
    assert next_side(600, 100.0, 25.0, 640) == 640  # never past the source
    assert next_side(200, 0.1, 25.0, 640) == config.TARGET_FPS["min_side"]
    assert next_side(200, 0.1, 25.0, 100) == 100  # a source smaller than the floor keeps its size


def test_the_pacer_settles_at_the_size_that_holds_the_target(monkeypatch):
    clock = [0.0]
    monkeypatch.setattr(pacing.time, "perf_counter", lambda: clock[0])
    seconds_per_pixel = 1 / (10 * 640 * 360)  # 10 frames/s at 640x360

    def network(batch):
        clock[0] += sum(f.shape[0] * f.shape[1] for f in batch) * seconds_per_pixel
        return [f + 1 for f in batch]

    pacer = SizePacer(25.0, (640, 360))
    paced = pacer.wrap(network)
    frame = np.zeros((360, 640, 3), np.uint8)
    for _ in range(200):
        out = paced([frame])[0]
        assert out.shape == frame.shape and out.max() == 1  # back at the source's size
    assert pacer.rate is not None and 25 <= pacer.rate <= 25 / config.TARGET_FPS["margin"] ** 2 * 1.2
    assert pacer.size[0] < 640 and pacer.size[0] / pacer.size[1] == pytest.approx(640 / 360, rel=0.02)
    assert pacer.label.startswith(f"{pacer.size[0]}x{pacer.size[1]}, ") and "of 25 frames/s" in pacer.label


def test_frames_stylised_side_by_side_count_their_shared_seconds_once(monkeypatch):
    """The page's camera runs two frames at once: its rate is frames over the seconds in which any
    was in flight, not over the sum of each frame's own seconds."""
    clock = [0.0]
    monkeypatch.setattr(pacing.time, "perf_counter", lambda: clock[0])
    monkeypatch.setitem(pacing.config.TARGET_FPS, "window_s", 1.0)
    pacer = SizePacer(25.0, (64, 48))
    paced = pacer.wrap(lambda batch: batch)
    frame = np.zeros((48, 64, 3), np.uint8)

    def overlapping(batch):  # 0.1 s of its own, with a second frame started 0.05 s in
        clock[0] += 0.05
        paced_again([frame])
        clock[0] += 0.05
        return batch

    def one_more(batch):  # the second frame: from 0.05 to 0.15 s
        clock[0] += 0.1
        return batch

    outer, paced_again = pacer.wrap(overlapping), pacer.wrap(one_more)
    outer([frame])  # frames in flight from 0 to 0.2 s, 0.3 s of frame time between them
    clock[0] = 5.0  # idle: not counted
    paced([frame])  # starts the next window, which reads the first
    assert pacer.rate == pytest.approx(2 / 0.2)


def test_target_fps_is_for_live_sources(tmp_path, tiny_model, sample_image):
    result = run_script("stylize.py", "--content_type", "image", "--source", str(sample_image),
                        "--model_path", str(tiny_model), "--target_fps", "25", "--real_time", "False")
    assert result.returncode == 2 and "use it with --content_type webcam" in result.stderr

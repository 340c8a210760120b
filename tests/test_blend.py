"""The output's look (stylization/blend.py) on frames the tests make: strength, the input's
colours, and the temporal smoother (identity at 0, convergence, scene cuts, occlusions)."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from conftest import write_image
from stylization.blend import (Look, TemporalSmoother, blend_previous, blend_strength, frame_to_tensor,
                               gaussian_blur, keep_detail, preserve_color)


def ycbcr(frame: np.ndarray) -> np.ndarray:
    """Y, Cb, Cr in 0-255 as OpenCV computes them (a reference independent of blend.py)."""
    y, cr, cb = np.moveaxis(cv2.cvtColor(frame, cv2.COLOR_RGB2YCrCb).astype(np.float64), -1, 0)
    return np.stack([y, cb, cr])


def textured(height: int = 48, width: int = 64, seed: int = 0) -> np.ndarray:
    """Smooth random texture, which optical flow can follow."""
    noise = np.random.default_rng(seed).integers(0, 256, (height // 4, width // 4, 3), dtype=np.uint8)
    return cv2.resize(noise, (width, height), interpolation=cv2.INTER_CUBIC)


def muted(frame: np.ndarray) -> np.ndarray:
    """Colours of a photo rather than of a test chart: away from the RGB cube's corners."""
    return (frame.astype(np.float32) * 0.6 + 50).astype(np.uint8)


def pair(tmp_path, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """An input frame and an unrelated 'stylised' frame of the same size."""
    frame = muted(cv2.cvtColor(cv2.imread(str(write_image(tmp_path / "a.png", 60, 44, seed))),
                               cv2.COLOR_BGR2RGB))
    return frame, textured(44, 60, seed + 1)


# ----------------------------------------------------------------------------- strength
def test_strength_blends_linearly_from_the_input_to_the_stylised_frame(tmp_path):
    frame, stylised = pair(tmp_path)
    np.testing.assert_array_equal(blend_strength(stylised, frame, 0.0), frame)
    np.testing.assert_array_equal(blend_strength(stylised, frame, 1.0), stylised)
    quarter = blend_strength(stylised, frame, 0.25).astype(np.float64)
    expected = 0.25 * stylised + 0.75 * frame.astype(np.float64)
    assert np.abs(quarter - expected).max() <= 0.5 + 1e-6
    with pytest.raises(ValueError):
        blend_strength(stylised, frame, 1.5)


# ----------------------------------------------------------------------------- colour
def test_preserve_color_keeps_the_inputs_chroma_and_the_stylised_luminance(tmp_path):
    frame, stylised = pair(tmp_path)
    out = ycbcr(preserve_color(stylised, frame))
    source, styled = ycbcr(frame), ycbcr(stylised)
    assert np.abs(styled[1:] - source[1:]).mean() > 10  # the stylised colours were different
    assert np.abs(out[0] - styled[0]).mean() <= 1.0
    assert np.abs(out[1:] - source[1:]).mean() <= 2.0
    # where nothing leaves the RGB cube, the split is exact up to rounding
    assert np.median(np.abs(out - np.stack([styled[0], *source[1:]]))) <= 1.0


def test_preserve_color_with_strength_halves_the_luminance_change(tmp_path):
    frame, stylised = pair(tmp_path, seed=3)
    finish = Look(strength=0.5, preserve_color=True).start()
    out, source, styled = ycbcr(finish(frame, stylised)), ycbcr(frame), ycbcr(stylised)
    assert np.abs(out[0] - (styled[0] + source[0]) / 2).mean() <= 1.5
    assert np.abs(out[1:] - source[1:]).mean() <= 2.0


# ----------------------------------------------------------------------------- smoothing
def moving_frames(count: int) -> list[np.ndarray]:
    """A texture panning right by 2 pixels a frame."""
    wide = textured(48, 64 + 2 * count)
    return [np.ascontiguousarray(wide[:, 2 * (count - i): 2 * (count - i) + 64]) for i in range(count)]


def test_weight_zero_is_the_identity():
    smoother = TemporalSmoother(0.0)
    frames = moving_frames(4)
    stylised = [textured(seed=10 + i) for i in range(4)]
    for frame, result in zip(frames, stylised):
        np.testing.assert_array_equal(smoother(frame, result), result)
    assert Look().is_identity and not Look(smooth=0.1).is_identity


def test_on_a_static_scene_the_output_converges_to_the_stylised_frame():
    scene = textured(seed=5)
    first, steady = np.full_like(scene, 40), np.full_like(scene, 200)
    weight = 0.5
    smoother = TemporalSmoother(weight)
    smoother(scene, first)
    gaps = [np.abs(smoother(scene, steady).astype(float) - steady).mean() for _ in range(8)]
    for step, gap in enumerate(gaps, start=1):
        # each frame keeps `weight` of the previous output's distance from the steady frame
        assert gap == pytest.approx(160 * weight ** step, abs=1.0)
    assert smoother.blended == 8


def test_nothing_is_blended_across_a_scene_cut():
    smoother = TemporalSmoother(0.8)
    before, after = textured(seed=1), textured(seed=2)[::-1].copy()
    smoother(before, np.full_like(before, 10))
    stylised = textured(seed=3)
    np.testing.assert_array_equal(smoother(after, stylised), stylised)
    assert smoother.cuts == 1 and smoother.blended == 0


def test_occluded_pixels_are_not_blended():
    """A square moves 6 pixels right over a still background; the flows are exact. The strip
    it uncovers was hidden in the previous frame: there the output is the new stylised frame
    alone, elsewhere it is blended."""
    height, width, top, left, side, step = 48, 64, 16, 12, 16, 6
    background = textured(height, width, seed=7)
    square = textured(side, side, seed=8)
    frames = []
    for x in (left, left + step):
        frame = background.copy()
        frame[top:top + side, x:x + side] = square
        frames.append(frame)
    back = np.zeros((height, width, 2), np.float32)  # current -> previous
    back[top:top + side, left + step:left + step + side, 0] = -step
    forward = np.zeros((height, width, 2), np.float32)  # previous -> current
    forward[top:top + side, left:left + side, 0] = step

    weight = 0.5
    smoother = TemporalSmoother(weight)
    smoother(frames[0], np.full_like(background, 100))
    out = smoother(frames[1], np.full_like(background, 200), flows=(back, forward)).astype(float)
    rows = slice(top + 2, top + side - 2)  # away from the square's top and bottom edges
    uncovered = out[rows, left + 1:left + step - 1]
    assert (uncovered == 200).all()
    blended = 200 - weight * 100
    assert (out[:, 40:] == blended).all()  # the still background, away from the square
    assert (out[rows, left + step + 3:left + step + side - 3] == blended).all()  # inside the square


def test_bad_weights_are_refused():
    for weight in (-0.1, 1.0, float("nan")):
        with pytest.raises(ValueError):
            TemporalSmoother(weight)


def detail_energy(frames: torch.Tensor) -> float:
    return float((frames - gaussian_blur(frames, 2.0)).pow(2).mean())


def test_keep_detail_restores_the_contrast_that_averaging_fades():
    rng = np.random.default_rng(0)
    current, unrelated = (frame_to_tensor(rng.integers(0, 256, (40, 50, 3), dtype=np.uint8))
                          for _ in range(2))
    faded = blend_previous(current, unrelated, torch.ones(1, 40, 50), 0.5)
    assert detail_energy(faded) < 0.6 * detail_energy(current)  # the mean of two textures fades
    kept = keep_detail(faded, current)
    restored = keep_detail(faded, current, share=1.0)
    assert detail_energy(restored) == pytest.approx(detail_energy(current), rel=0.02)
    assert detail_energy(faded) < detail_energy(kept) < detail_energy(current)  # share 0.5: part of it
    # the colours on average stay, and frames that agree are left as they are
    torch.testing.assert_close(kept.mean((1, 2)), faded.mean((1, 2)), atol=0.5, rtol=0)
    torch.testing.assert_close(keep_detail(current, current), current)

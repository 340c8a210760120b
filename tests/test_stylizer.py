"""The Python API: a model loaded once, then pictures, videos and folders."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
from PIL import Image

from conftest import write_image
from stylization import processor as processor_module
from stylization.stylizer import StyleOptions, Stylizer


def test_pictures_come_back_as_they_went_in(tiny_model, sample_image):
    stylizer = Stylizer(tiny_model, device="cpu")
    picture = Image.open(sample_image)
    out = stylizer.image(picture)
    assert isinstance(out, Image.Image) and out.size == picture.size
    array = np.asarray(picture.convert("RGB"))
    assert np.array_equal(stylizer.image(array), np.asarray(out))  # the same frame either way
    small = stylizer.image(array, StyleOptions(max_size=100))
    assert max(small.shape[:2]) == 100
    assert np.array_equal(stylizer.image(array, StyleOptions(strength=0.0)), array)  # strength 0: the input


def test_a_video_reports_progress_and_a_cancelled_one_leaves_nothing(tmp_path, tiny_model, sample_video):
    stylizer = Stylizer(tiny_model, StyleOptions(strength=0.5), device="cpu")
    seen = []
    out = stylizer.video(sample_video, tmp_path / "out.mp4", progress=lambda done, total: seen.append((done, total)))
    capture = cv2.VideoCapture(str(out))
    frames = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    capture.release()
    assert frames == 12 and seen[-1] == (12, 12) and [d for d, _ in seen] == sorted(d for d, _ in seen)
    gone = stylizer.video(sample_video, tmp_path / "cancelled.mp4", cancelled=lambda: True)
    assert not gone.exists() and not list(tmp_path.glob("cancelled*"))


def test_a_folder_is_stylised_file_by_file(tmp_path, tiny_model):
    for i in range(3):
        write_image(tmp_path / "in" / f"p{i}.png", 40 + i, 30, seed=i)
    written = Stylizer(tiny_model, device="cpu").folder(tmp_path / "in", tmp_path / "out")
    assert sorted(p.name for p in written) == ["p0_tiny.png", "p1_tiny.png", "p2_tiny.png"]
    assert Image.open(written[1]).size == (41, 30)


@pytest.mark.parametrize("compiler", ["/usr/bin/g++", None])
def test_camera_frames_use_packages_an_earlier_run_built_and_never_build(tmp_path, tiny_model, monkeypatch,
                                                                         compiler):
    """The page's live camera runs as stylize.py's webcam path: packages only from the cache
    (where a compiler could have built them), frames identical to eager ones either way."""
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(processor_module, "find_compiler", lambda: compiler)
    camera = Stylizer(tiny_model, device="cpu", camera=True)
    assert camera.processor.cached_only is (compiler is not None)
    assert camera.processor.compiled is (compiler is not None)
    frame = np.random.default_rng(0).integers(0, 256, (24, 40, 3), dtype=np.uint8)
    assert np.array_equal(camera.image(frame), Stylizer(tiny_model, device="cpu").image(frame))
    assert not camera.processor.built

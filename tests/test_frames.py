"""Frame extraction: the function, its command line and the notebook that calls it."""
from __future__ import annotations

import os
from pathlib import Path

import cv2
import pytest

from common.errors import UserError
from common.frames import extract_frames
from conftest import ROOT, run_script, write_video


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def test_extracts_every_nth_frame_scaled_and_leaves_videos_alone(tmp_path):
    videos = tmp_path / "videos"
    write_video(videos / "a.mp4", frames=10, width=96, height=64)
    write_video(videos / "b.mp4", frames=5, width=96, height=64)
    (videos / "notes.txt").write_text("not a video")
    before = snapshot(videos)

    counts = extract_frames(videos, tmp_path / "frames", every=3, max_size=48, progress=False)

    assert counts == {"a.mp4": 4, "b.mp4": 2}  # frames 0, 3, 6, 9 and 0, 3
    names = sorted(p.name for p in (tmp_path / "frames").iterdir())
    assert names == ["a_000000.jpg", "a_000003.jpg", "a_000006.jpg", "a_000009.jpg",
                     "b_000000.jpg", "b_000003.jpg"]
    assert cv2.imread(str(tmp_path / "frames" / "a_000003.jpg")).shape == (32, 48, 3)
    assert snapshot(videos) == before


def test_missing_folder_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        extract_frames(tmp_path / "nope", tmp_path / "frames")


def test_command_line(tmp_path):
    write_video(tmp_path / "v" / "clip.mp4", frames=4, width=64, height=48)
    result = run_script("utils.py", "extract-frames", "--video_dir", str(tmp_path / "v"),
                        "--frames_dir", str(tmp_path / "f"), "--every", "2")
    assert result.returncode == 0, result.stderr
    assert "clip.mp4: 2 frames" in result.stdout
    assert len(list((tmp_path / "f").glob("clip_*.jpg"))) == 2


def test_notebook_runs(tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    write_video(tmp_path / "v" / "clip.mp4", frames=6, width=64, height=48)
    monkeypatch.setenv("VST_VIDEO_DIR", str(tmp_path / "v"))
    monkeypatch.setenv("VST_FRAMES_DIR", str(tmp_path / "f"))
    monkeypatch.setenv("VST_EVERY", "3")
    monkeypatch.setenv("VST_MAX_SIZE", "32")
    notebook = nbformat.read(ROOT / "notebook" / "data_util.ipynb", as_version=4)
    nbclient.NotebookClient(notebook, timeout=120, kernel_name="python3",
                            resources={"metadata": {"path": str(ROOT / "notebook")}}).execute()
    frames = sorted((tmp_path / "f").glob("*.jpg"))
    assert [p.name for p in frames] == ["clip_000000.jpg", "clip_000003.jpg"]
    assert max(cv2.imread(str(frames[0])).shape[:2]) == 32
    assert os.listdir(tmp_path / "v") == ["clip.mp4"]

"""Training frames from videos (`python utils.py extract-frames`, notebook/data_util.ipynb)."""
from __future__ import annotations

import errno
import os
import shutil
import warnings
from pathlib import Path

import numpy as np

import config
from common.errors import fail
from common.files import atomic_write
from common.images import fit_within


def extract_frames(video_dir: str | Path, frames_dir: str | Path, every: int = 1,
                   max_size: int | None = None, progress: bool = True) -> dict[str, int]:
    """Save every `every`-th frame of each video in video_dir as JPEG in frames_dir.

    Frames are named <video stem>_<frame index, 6 digits>.jpg, so they keep their order and
    the video they came from. The videos themselves are only read. Returns frames per video.
    """
    import cv2
    from tqdm import tqdm

    video_dir, frames_dir = Path(video_dir), Path(frames_dir)
    if not video_dir.is_dir():
        fail(f"video folder {video_dir} does not exist: give the folder holding your videos")
    if every < 1:
        fail(f"every must be at least 1 (got {every})")
    videos = sorted(p for p in video_dir.iterdir()
                    if p.is_file() and p.suffix.lower() in config.VIDEO_EXTENSIONS)
    if not videos:
        fail(f"no videos in {video_dir} (looked for {', '.join(config.VIDEO_EXTENSIONS)})")
    frames_dir.mkdir(parents=True, exist_ok=True)
    counts: dict[str, int] = {}
    for video in tqdm(videos, desc="videos", unit="video", disable=not progress):
        capture = cv2.VideoCapture(str(video))
        if not capture.isOpened():
            warnings.warn(f"skipping {video.name}: OpenCV cannot open it", stacklevel=2)
            continue
        saved, index = 0, 0
        try:
            while True:
                ok, frame = capture.read()
                if not ok:
                    break
                if index % every == 0:
                    height, width = frame.shape[:2]
                    size = fit_within(width, height, max_size)
                    if size != (width, height):
                        frame = cv2.resize(frame, size, interpolation=cv2.INTER_AREA)
                    target = frames_dir / f"{video.stem}_{index:06d}.jpg"
                    atomic_write(target, lambda tmp, f=frame: _write_jpeg(cv2, tmp, f))
                    saved += 1
                index += 1
        finally:
            capture.release()
        counts[video.name] = saved
    return counts


def _write_jpeg(cv2, path: str, frame: np.ndarray) -> None:
    """cv2.imwrite, raising where it only returns False: OpenCV does not say why, so a full
    disk is told by the free space left (atomic_write then reports it and keeps nothing)."""
    if cv2.imwrite(path, frame, [cv2.IMWRITE_JPEG_QUALITY, 95]):
        return
    if shutil.disk_usage(Path(path).parent).free < frame.nbytes:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)
    raise OSError(f"OpenCV could not write {path}")

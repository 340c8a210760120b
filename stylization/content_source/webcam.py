"""A camera (given by its index, such as 0) or a stream URL or path, read until it ends."""
from __future__ import annotations

from pathlib import Path, PurePosixPath
from urllib.parse import urlparse

import cv2

from stylization.content_source.video import CaptureSource


def camera_index(source: str) -> int | None:
    """The camera index a --source names ("0", "1"...), or None for a URL or path."""
    stripped = source.strip()
    return int(stripped) if stripped.isdigit() else None


def stream_label(source: str) -> str:
    """A file-name-friendly name for a camera or stream: webcam0, or the stream's stem."""
    index = camera_index(source)
    if index is not None:
        return f"webcam{index}"
    if "://" in source:
        return PurePosixPath(urlparse(source).path).stem or "stream"
    return Path(source).stem or "stream"


class WebcamSource(CaptureSource):
    def __init__(self, source: str, max_size: int | None = None):
        index = camera_index(source)
        if index is not None:
            what = f"camera {index}"
            advice = ("check the index (0 is the first camera) and that no other program "
                      "is using it")
        else:
            what = f"stream {source}"
            advice = "check the URL or path"
        super().__init__(source if index is None else index, stream_label(source), max_size,
                         cannot_open=f"{what} could not be opened: {advice}",
                         no_frames=f"{what} opened but gave no frames: {advice}")
        # A live source has no known length, even when its stream reports one.
        self.frame_count = None
        self.live = True
        if index is not None:
            # Drivers queue several frames by default; the pipeline wants the newest one.
            self._capture.set(cv2.CAP_PROP_BUFFERSIZE, 1)

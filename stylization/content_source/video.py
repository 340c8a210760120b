"""Frames decoded by OpenCV: video files here, cameras and streams in webcam.py."""
from __future__ import annotations

import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

from common.errors import fail
from stylization.content_source.base import ContentSource, Frame, scale_to, scale_within

FALLBACK_FPS = 30.0  # used when a container or camera reports no frame rate


@contextmanager
def _quiet_opencv() -> Iterator[None]:
    level = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    try:
        yield
    finally:
        cv2.utils.logging.setLogLevel(level)


class CaptureSource(ContentSource):
    """Frames of a cv2.VideoCapture of target, converted to RGB and scaled once, here.

    The first frame is decoded on opening, both to prove the capture yields frames before
    any output is created and to learn the real frame size (container properties can
    disagree with decoded frames, e.g. for rotated phone videos); it is still yielded first.
    Later frames are brought to that same size so a video writer never drops one.
    """

    def __init__(self, target: str | int, label: str, max_size: int | None,
                 cannot_open: str, no_frames: str):
        with _quiet_opencv():
            # Failing captures log OpenCV warnings; the user gets one clear message instead.
            self._capture = cv2.VideoCapture(target)
            first = self._read() if self._capture.isOpened() else None
        if first is None:
            opened = self._capture.isOpened()
            self.close()
            fail(no_frames if opened else cannot_open)
        self._first = scale_within(first, max_size)
        height, width = self._first.shape[:2]
        self.label = label
        self.size = (width, height)
        reported_fps = self._capture.get(cv2.CAP_PROP_FPS)
        self.fps = reported_fps if reported_fps > 0 else FALLBACK_FPS
        count = int(self._capture.get(cv2.CAP_PROP_FRAME_COUNT))
        self.frame_count = count if count > 0 else None

    def _read(self) -> np.ndarray | None:
        ok, frame = self._capture.read()
        if not ok or frame is None:
            return None
        return cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)

    def frames(self) -> Iterator[Frame]:
        yield 0, self._first
        index = 1
        while (frame := self._read()) is not None:
            yield index, scale_to(frame, self.size)
            index += 1
        # Containers' frame counts are estimates (often off by one), so only a clear shortfall
        # means the file is damaged; what decoded has been stylised.
        if self.frame_count and index < self.frame_count - 1:
            warnings.warn(f"{self.label}: decoding stopped at frame {index} of the "
                          f"{self.frame_count} the file reports; the rest could not be decoded "
                          "and the output ends there", stacklevel=2)

    def close(self) -> None:
        self._capture.release()


class VideoSource(CaptureSource):
    def __init__(self, path: str | Path, max_size: int | None = None):
        path = Path(path)
        if not path.exists():
            fail(f"{path} does not exist: check --source")
        if not path.is_file():
            fail(f"{path} is not a file, but a video file is expected")
        super().__init__(str(path), path.stem, max_size,
                         cannot_open=f"{path} is not a readable video: OpenCV cannot open it",
                         no_frames=f"{path} is not a readable video: it holds no frames "
                                   "OpenCV can decode")

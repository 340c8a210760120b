"""Where stylised frames go: image files, video files and the display window.

Only this module writes output files. Every sink takes RGB uint8 HxWx3 frames.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np

from utils import fail, save_image, temp_file_beside

# OpenCV codec per video container; mp4v plays nearly everywhere without extra libraries.
VIDEO_CODECS = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".avi": "MJPG"}
QUIT_KEYS = (ord("q"), ord("Q"), 27)  # 27 is Esc
DISPLAY_PROBE_TIMEOUT_S = 15


def _to_bgr(frame: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(frame, cv2.COLOR_RGB2BGR)


class ImageSink:
    """Saves the one frame of an image source, atomically, in the format of its extension."""

    def __init__(self, path: Path):
        self.path = path
        self.saved = False
        self.partial = False  # an image is saved whole or not at all

    def write(self, frame: np.ndarray) -> None:
        save_image(frame, self.path)
        self.saved = True

    def __enter__(self) -> "ImageSink":
        return self

    def __exit__(self, *exc_info: object) -> None:
        pass


class VideoSink:
    """Writes frames into a temporary file beside `path`, renamed into place on close.

    A crash never leaves a broken file under the final name. Used as a context manager, the
    video is finalised when the block ends normally or by KeyboardInterrupt (then
    `partial` is True) and deleted when it ends by any other error.
    """

    def __init__(self, path: Path, fps: float, size: tuple[int, int]):
        codec = VIDEO_CODECS.get(path.suffix.lower())
        if codec is None:
            fail(f"cannot write video {path.name}: use a name ending in "
                 f"{', '.join(VIDEO_CODECS)}")
        self.path = path
        self.size = size
        # The codecs behind these containers store 4:2:0 colour, which needs even sides; OpenCV
        # would silently trim an odd side, so do it here, once, and say so.
        self.encoded_size = (size[0] - size[0] % 2, size[1] - size[1] % 2)
        if self.encoded_size != size:
            print(f"note: {path.suffix} video needs even sizes; writing "
                  f"{self.encoded_size[0]}x{self.encoded_size[1]} (the last odd row/column is dropped)",
                  file=sys.stderr)
        self.frames_written = 0
        self.saved = False
        self.partial = False
        # The temporary name keeps the container extension: OpenCV picks the muxer from it.
        tmp = temp_file_beside(path)
        self._tmp = Path(tmp)
        self._writer = cv2.VideoWriter(tmp, cv2.VideoWriter_fourcc(*codec), fps, self.encoded_size)
        if not self._writer.isOpened():
            self.discard()
            fail(f"OpenCV cannot write a {codec} video to {path}")

    def write(self, frame: np.ndarray) -> None:
        height, width = frame.shape[:2]
        if (width, height) != self.size:
            # OpenCV would silently drop a frame of another size.
            raise ValueError(f"frame of {width}x{height} for a {self.size[0]}x{self.size[1]} video")
        self._writer.write(_to_bgr(frame[:self.encoded_size[1], :self.encoded_size[0]]))
        self.frames_written += 1

    def finish(self) -> Path | None:
        """Close the video and move it to its final name; None if no frame was written."""
        self._writer.release()
        if self.frames_written == 0:
            self._tmp.unlink(missing_ok=True)
            return None
        with open(self._tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(self._tmp, self.path)
        self.saved = True
        return self.path

    def discard(self) -> None:
        self._writer.release()
        self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> "VideoSink":
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *rest: object) -> None:
        if exc_type is None or issubclass(exc_type, KeyboardInterrupt):
            self.partial = exc_type is not None
            self.finish()
        else:
            self.discard()


def display_available() -> bool:
    """Whether an OpenCV window can be opened here, decided without risking this process.

    With OpenCV's Qt backend, opening a window with no reachable display aborts the whole
    process (SIGABRT), which no exception handler can catch; so a throwaway child process
    tries first.
    """
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY")
                                                 or os.environ.get("WAYLAND_DISPLAY")):
        return False
    if os.environ.get("QT_QPA_PLATFORM", "").lower() in ("offscreen", "minimal"):
        return False  # windows would open, but nobody could see them
    probe = ("import cv2; cv2.namedWindow('probe'); cv2.waitKey(1); "
             "cv2.destroyAllWindows(); cv2.waitKey(1)")
    try:
        result = subprocess.run([sys.executable, "-c", probe], capture_output=True,
                                timeout=DISPLAY_PROBE_TIMEOUT_S)
    except (subprocess.TimeoutExpired, OSError):
        return False
    return result.returncode == 0


class Display:
    """One OpenCV window showing frames; q or Esc (or closing the window) asks to stop."""

    def __init__(self, title: str = "stylize.py - press q or Esc to stop"):
        self.title = title
        cv2.namedWindow(title, cv2.WINDOW_AUTOSIZE)

    def show(self, frame: np.ndarray, wait_ms: int = 1) -> bool:
        """Show a frame for at least wait_ms; False when the user asked to stop."""
        cv2.imshow(self.title, _to_bgr(frame))
        key = cv2.waitKey(max(1, wait_ms))
        if key >= 0 and (key & 0xFF) in QUIT_KEYS:
            return False
        return cv2.getWindowProperty(self.title, cv2.WND_PROP_VISIBLE) >= 1

    def close(self) -> None:
        cv2.destroyWindow(self.title)
        cv2.waitKey(1)  # lets the GUI thread actually remove the window

"""Where stylised frames go: image files, video files and the display window.

Only this module writes output files. Every sink takes RGB uint8 HxWx3 frames.
"""
from __future__ import annotations

import errno
import functools
import math
import os
import shutil
import subprocess
import sys
import tempfile
import warnings
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np

import config
from common.errors import disk_full, fail, full_disk_is_an_error
from common.files import temp_file_beside
from common.images import fit_within, save_image

QUIT_KEYS = (ord("q"), ord("Q"), 27)  # 27 is Esc
DISPLAY_PROBE_TIMEOUT_S = 15


def _to_bgr(frame: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(frame, cv2.COLOR_RGB2BGR)


def _outlined_text(image: np.ndarray, text: str, origin: tuple[int, int], scale: float = 0.6) -> None:
    """White text outlined in black: readable on any style."""
    for colour, thickness in (((0, 0, 0), 3), ((255, 255, 255), 1)):
        cv2.putText(image, text, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, colour, thickness,
                    cv2.LINE_AA)


LABEL_BAND = 28  # pixels of the band under each picture of a contact sheet, for its label


def contact_sheet(cells: list[tuple[str, np.ndarray]], cell: int | None = None) -> np.ndarray:
    """RGB uint8 pictures, each scaled to fit cell x cell and labelled underneath, in a grid
    of ceil(sqrt(n)) columns on white."""
    cell = config.CONTACT_SHEET_CELL if cell is None else cell
    columns = math.ceil(math.sqrt(len(cells)))
    rows = math.ceil(len(cells) / columns)
    sheet = np.full((rows * (cell + LABEL_BAND), columns * cell, 3), 255, np.uint8)
    for index, (label, picture) in enumerate(cells):
        height, width = picture.shape[:2]
        size = fit_within(width, height, cell)
        small = cv2.resize(picture, size, interpolation=cv2.INTER_AREA)
        top, left = (index // columns) * (cell + LABEL_BAND), (index % columns) * cell
        y, x = top + (cell - size[1]) // 2, left + (cell - size[0]) // 2
        sheet[y:y + size[1], x:x + size[0]] = small
        cv2.putText(sheet, label[:40], (left + 6, top + cell + LABEL_BAND - 9),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 0, 0), 1, cv2.LINE_AA)
    return sheet


def write_contact_sheet(path: Path, cells: list[tuple[str, np.ndarray]]) -> Path:
    """Save contact_sheet(cells) atomically as path."""
    return save_image(contact_sheet(cells), path)


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


@functools.lru_cache(maxsize=1)
def find_ffmpeg() -> str | None:
    """The FFmpeg executable of the imageio-ffmpeg package (or the one its IMAGEIO_FFMPEG_EXE
    names); None where there is none."""
    try:
        import imageio_ffmpeg
        return imageio_ffmpeg.get_ffmpeg_exe()
    except (ImportError, RuntimeError):
        return None


@functools.lru_cache(maxsize=4)
def ffmpeg_encoders(exe: str) -> frozenset[str]:
    """The encoder names an FFmpeg executable offers."""
    listing = subprocess.run([exe, "-hide_banner", "-encoders"], capture_output=True, text=True,
                             timeout=60).stdout
    return frozenset(line.split()[1] for line in listing.splitlines()
                     if len(line.split()) > 1 and line.startswith(" ") and line.split()[0][0] in "VAS")


@functools.lru_cache(maxsize=4)
def nvenc_opens(exe: str) -> bool:
    """Whether this FFmpeg can encode H.264 on an NVIDIA GPU here: it lists h264_nvenc (the
    imageio-ffmpeg build does) and one tiny frame encodes, which needs the GPU's driver. Then a
    video is encoded on the GPU's encoder and leaves the CPU to decoding and the network."""
    if "h264_nvenc" not in ffmpeg_encoders(exe):
        return False
    probe = [exe, "-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i", "color=black:s=256x256",
             "-frames:v", "1", "-c:v", "h264_nvenc", "-f", "null", "-"]
    try:
        return subprocess.run(probe, capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def frame_rate(fps: float) -> Fraction:
    """The exact rate behind a container's float fps: 29.97002997 -> 30000/1001."""
    return Fraction(fps).limit_denominator(1001)


# How FFmpeg's log says that the disk or quota is full (it words errno as the C library does).
DISK_FULL_REASONS = {os.strerror(code): code for code in (errno.ENOSPC, errno.EDQUOT)}


def ffmpeg_command(exe: str, target: str, fps: float, size: tuple[int, int], fmt: dict,
                   audio_from: str | Path | None) -> list[str]:
    """The FFmpeg command that encodes rgb24 frames from its stdin into `target` as `fmt`
    (config.VIDEO_FORMATS) says, with audio_from's first audio track cut to the video's length."""
    rate = frame_rate(fps)
    video = fmt["video"]
    if "libx264" in video and nvenc_opens(exe):
        video = config.H264_NVENC
    elif "libx264" in video and "libx264" not in ffmpeg_encoders(exe):
        video = config.H264_FALLBACK
    command = [exe, "-hide_banner", "-loglevel", "error", "-y",
               "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{size[0]}x{size[1]}",
               "-framerate", f"{rate.numerator}/{rate.denominator}", "-i", "pipe:0"]
    if audio_from is not None:
        # "?": a source without audio is fine. apad + -shortest: the output ends with the
        # video, sound padded with silence if it ends sooner or cut if it goes on (a
        # partial video gets partial sound); -shortest alone would end it with the sound.
        command += ["-i", str(audio_from), "-map", "0:v:0", "-map", "1:a:0?", *fmt["audio"],
                    "-af", "apad", "-shortest"]
    return [*command, *video, *fmt["container"], target]


class _FFmpegEncoder:
    """RGB frames piped into an FFmpeg command (ffmpeg_command). FFmpeg's messages go to a log
    file, never to the terminal; `path`, the video's final name, is what errors name."""

    def __init__(self, command: list[str], path: Path):
        self._path = path
        self._log = tempfile.TemporaryFile()
        # Its own session: Ctrl-C reaches only this process, which then closes the pipe so
        # that FFmpeg finishes a playable partial file instead of dying half-way.
        self._process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                         stderr=self._log, start_new_session=True)

    def _failure(self) -> Exception:
        self._log.seek(0)
        message = self._log.read().decode(errors="replace").strip()
        for reason in DISK_FULL_REASONS:
            if reason in message:
                return disk_full(self._path, OSError(DISK_FULL_REASONS[reason], reason))
        return RuntimeError(f"FFmpeg failed (exit status {self._process.returncode}): "
                            f"{message[-500:] or 'no message'}")

    def write(self, frame: np.ndarray) -> None:
        try:
            self._process.stdin.write(np.ascontiguousarray(frame).data)
        except (BrokenPipeError, OSError):
            self._process.wait()
            raise self._failure() from None

    def close(self) -> None:
        try:
            self._process.stdin.close()
        except (BrokenPipeError, OSError):
            pass  # reported below by the exit status
        if self._process.wait() != 0:
            raise self._failure()
        self._log.close()

    def abort(self) -> None:
        self._process.kill()
        self._process.wait()
        self._log.close()


class _OpenCVEncoder:
    """The fallback without FFmpeg: OpenCV's own writer, no sound."""

    def __init__(self, target: str, fps: float, size: tuple[int, int], fourcc: str, path: Path):
        self._writer = cv2.VideoWriter(target, cv2.VideoWriter_fourcc(*fourcc), fps, size)
        self.opened = self._writer.isOpened()
        self._path = path

    def write(self, frame: np.ndarray) -> None:
        # OpenCV reports a failed write only by returning False (OpenCV 4 returns None even
        # then); it does not say why, so a full disk is told by the free space left.
        if self._writer.write(_to_bgr(frame)) is False:
            if shutil.disk_usage(self._path.parent).free < frame.nbytes:
                raise disk_full(self._path)
            raise RuntimeError(f"OpenCV could not write a frame of {self._path}")

    def close(self) -> None:
        self._writer.release()

    def abort(self) -> None:
        self._writer.release()


class VideoSink:
    """Writes frames into a temporary file beside `path`, renamed into place on close.

    The video is encoded by the FFmpeg that imageio-ffmpeg ships (H.264 in MP4, with the first
    audio track of `audio_from` when given); without it, by OpenCV, without sound, after a
    warning. A crash never leaves a broken file under the final name. Used as a context
    manager, the video is finalised when the block ends normally or by KeyboardInterrupt
    (also SIGTERM and SIGHUP, which stylize.py turns into one; then `partial` is True) and
    deleted when it ends by any other error. A full disk raises common.errors.DiskFull naming `path`.
    """

    def __init__(self, path: Path, fps: float, size: tuple[int, int],
                 audio_from: str | Path | None = None):
        fmt = config.VIDEO_FORMATS.get(path.suffix.lower())
        if fmt is None:
            fail(f"cannot write video {path.name}: use a name ending in "
                 f"{', '.join(config.VIDEO_FORMATS)}")
        self.path = path
        self.size = size
        # The codecs behind these containers store 4:2:0 colour, which needs even sides;
        # encoders would refuse or silently trim an odd side, so trim it here, once, and say so.
        self.encoded_size = (size[0] - size[0] % 2, size[1] - size[1] % 2)
        if self.encoded_size != size:
            print(f"note: {path.suffix} video needs even sizes; writing "
                  f"{self.encoded_size[0]}x{self.encoded_size[1]} (the last odd row/column is dropped)",
                  file=sys.stderr)
        self.frames_written = 0
        self.saved = False
        self.partial = False
        # The temporary name keeps the container extension: OpenCV picks the muxer from it.
        with full_disk_is_an_error(path):
            self._tmp = Path(temp_file_beside(path))
        exe = find_ffmpeg()
        if exe is not None:
            self.with_audio = audio_from is not None
            self._encoder = _FFmpegEncoder(
                ffmpeg_command(exe, str(self._tmp), fps, self.encoded_size, fmt, audio_from), path)
            return
        warnings.warn(f"no FFmpeg found (pip install imageio-ffmpeg): {path.name} is written "
                      f"by OpenCV ({fmt['opencv']}), without sound", stacklevel=2)
        self.with_audio = False
        self._encoder = _OpenCVEncoder(str(self._tmp), fps, self.encoded_size, fmt["opencv"], path)
        if not self._encoder.opened:
            self.discard()
            fail(f"OpenCV cannot write a {fmt['opencv']} video to {path}")

    def write(self, frame: np.ndarray) -> None:
        height, width = frame.shape[:2]
        if (width, height) != self.size:
            # Encoders would drop or garble a frame of another size.
            raise ValueError(f"frame of {width}x{height} for a {self.size[0]}x{self.size[1]} video")
        self._encoder.write(frame[:self.encoded_size[1], :self.encoded_size[0]])
        self.frames_written += 1

    def finish(self) -> Path | None:
        """Close the video and move it to its final name; None if no frame was written.

        Any failure (a full disk among them) deletes the temporary file: nothing unfinished
        is left, under the final name or beside it."""
        try:
            with full_disk_is_an_error(self.path):
                self._encoder.close()
                if self.frames_written == 0:
                    self._tmp.unlink(missing_ok=True)
                    return None
                with open(self._tmp, "rb+") as handle:
                    os.fsync(handle.fileno())
                os.replace(self._tmp, self.path)
        except BaseException:
            self._tmp.unlink(missing_ok=True)
            raise
        self.saved = True
        return self.path

    def discard(self) -> None:
        self._encoder.abort()
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
        self.last_key: int | None = None  # the key pressed during the last show, if any
        cv2.namedWindow(title, cv2.WINDOW_AUTOSIZE)

    def show(self, frame: np.ndarray, wait_ms: int = 1, fps: float | None = None,
             label: str | None = None) -> bool:
        """Show a frame for at least wait_ms, with the frames/s and a label (the model, when
        there are several) written on it when given; False when the user asked to stop."""
        image = _to_bgr(frame)
        if fps is not None:
            _outlined_text(image, f"{fps:.1f} frames/s", (8, 24))
        if label is not None:
            _outlined_text(image, label, (8, 48))
        cv2.imshow(self.title, image)
        key = cv2.waitKey(max(1, wait_ms))
        self.last_key = key & 0xFF if key >= 0 else None
        if key >= 0 and (key & 0xFF) in QUIT_KEYS:
            return False
        return cv2.getWindowProperty(self.title, cv2.WND_PROP_VISIBLE) >= 1

    def close(self) -> None:
        cv2.destroyWindow(self.title)
        cv2.waitKey(1)  # lets the GUI thread actually remove the window

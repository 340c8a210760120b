"""--target_fps for webcams and streams: the largest size, up to the source's, at which this
machine stylises the target frames per second, found in the first second and kept as it runs.

The rate is the stylising's own (frames over the seconds in which at least one frame was being
scaled or in the network: frames stylised side by side, as the page's camera runs them, count
their shared seconds once), so a camera slower than the target does not shrink the picture.
The network's time grows with the pixels, so a measured rate r against a target t asks for
the side to scale by sqrt(r / t). Sides move in steps of config.TARGET_FPS["side_step"] pixels
(a compiled network meets few shapes) and are reconsidered once per measuring window; the
stylised frame is scaled back to the source's size, so the window and the recording keep it.
"""
from __future__ import annotations

import math
import threading
import time
from typing import Callable

import cv2
import numpy as np

import config

Process = Callable[[list[np.ndarray]], list[np.ndarray]]


def next_side(side: int, rate: float, target: float, full_side: int) -> int:
    """The longer side to stylise at next, after frames ran at `rate` frames/s at `side`.

    Below the target: shrink so the pixels match the rate, with a margin. Well above it:
    grow, at most doubling the pixels at a time, never past the source's side."""
    step, smallest = config.TARGET_FPS["side_step"], config.TARGET_FPS["min_side"]
    margin = config.TARGET_FPS["margin"]
    if rate < target:
        wanted = side * math.sqrt(rate / target * margin)
    elif rate > target / margin ** 2:
        wanted = side * math.sqrt(min(2.0, rate / target * margin))
    else:
        return side
    snapped = int(wanted // step * step)
    return max(min(snapped, full_side), min(smallest, full_side))


class SizePacer:
    """Wraps a live source's frame function so that frames run at the paced size."""

    def __init__(self, target_fps: float, full_size: tuple[int, int]):
        self.target = target_fps
        self.full_size = full_size  # (width, height) of the source's frames
        self.full_side = max(full_size)
        self.side = self.full_side
        self.rate: float | None = None
        self._window_start: float | None = None
        self._frames, self._busy = 0, 0.0
        self._lock = threading.Lock()
        self._running, self._busy_since = 0, 0.0  # batches in flight; the last start or end

    @property
    def size(self) -> tuple[int, int]:
        scale = self.side / self.full_side
        width, height = self.full_size
        return max(1, round(width * scale)), max(1, round(height * scale))

    @property
    def label(self) -> str:
        rate = f"{self.rate:.1f}" if self.rate is not None else "..."
        return f"{self.size[0]}x{self.size[1]}, {rate} of {self.target:g} frames/s"

    def wrap(self, process: Process) -> Process:
        def paced(batch: list[np.ndarray]) -> list[np.ndarray]:
            size = self._start()
            try:
                small = [frame if frame.shape[1::-1] == size else cv2.resize(frame, size, interpolation=cv2.INTER_AREA)
                         for frame in batch]
                results = process(small)
                full = self.full_size
                return [out if out.shape[1::-1] == full else cv2.resize(out, full, interpolation=cv2.INTER_LINEAR)
                        for out in results]
            finally:
                self._end(len(batch))
        return paced

    def _start(self) -> tuple[int, int]:
        """A batch begins: the size it runs at, after the window's rate has been read."""
        with self._lock:
            now = time.perf_counter()
            self._count_busy(now)
            if self._window_start is None:
                self._window_start = now
            elif now - self._window_start >= config.TARGET_FPS["window_s"] and self._busy > 0:
                self.rate = self._frames / self._busy
                self.side = next_side(self.side, self.rate, self.target, self.full_side)
                self._window_start, self._frames, self._busy = now, 0, 0.0
            self._running += 1
            return self.size

    def _end(self, frames: int) -> None:
        with self._lock:
            self._count_busy(time.perf_counter())
            self._running -= 1
            self._frames += frames

    def _count_busy(self, now: float) -> None:
        """Adds the seconds since the last start or end if a frame was in flight through them."""
        if self._running:
            self._busy += now - self._busy_since
        self._busy_since = now

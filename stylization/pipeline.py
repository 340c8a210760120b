"""Frames through the network with decoding, inference and encoding overlapped.

Files (video, images): a decode thread fills a bounded queue with batches, the calling thread
runs the network and the window (OpenCV wants its window on one thread), and an encode thread
writes from a second bounded queue. OpenCV's decoder, torch's kernels and the FFmpeg pipe all
release the GIL, so the three stages overlap; the bounds keep memory flat however long the
video is (config.DECODE_QUEUE_BATCHES, config.ENCODE_QUEUE_FRAMES).

Live sources (webcam, stream): a capture thread keeps only the newest frame, so the window shows
what the camera sees now however slow the network is; frames it had no time for are skipped.

This module knows neither the network nor output files: it gets callables for those.
"""
from __future__ import annotations

import queue
import threading
import time
from collections import deque
from typing import Callable, Iterable, Iterator

import numpy as np

import config

Frame = tuple[int, np.ndarray]
Process = Callable[[list[np.ndarray]], list[np.ndarray]]
Write = Callable[[np.ndarray], None]
Show = Callable[[np.ndarray, float | None], bool]  # (frame, frames/s or None) -> keep going

_END = object()  # the last item a stage puts in its queue
_POLL_S = 0.1  # how often a blocked stage checks whether the others are still there


class _Stage(threading.Thread):
    """A daemon thread whose exception is kept for the calling thread to raise."""

    def __init__(self, name: str, work: Callable[[], None]):
        super().__init__(name=name, daemon=True)
        self._work = work
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._work()
        except BaseException as err:  # handed to the calling thread, which reports it
            self.error = err

    def raise_error(self) -> None:
        if self.error is not None:
            raise self.error


def _put(items: queue.Queue, item: object, keep_going: Callable[[], bool]) -> bool:
    """Put item, waiting while the queue is full; False once keep_going() turns False."""
    while keep_going():
        try:
            items.put(item, timeout=_POLL_S)
            return True
        except queue.Full:
            continue
    return False


def _get(items: queue.Queue, producer: _Stage) -> object:
    """The next item; _END if the producer died without saying so."""
    while True:
        try:
            return items.get(timeout=_POLL_S)
        except queue.Empty:
            if not producer.is_alive() and items.empty():
                return _END


def batches(frames: Iterable[Frame], size: int) -> Iterator[list[np.ndarray]]:
    """Consecutive frames in lists of `size` (the last one may be shorter)."""
    batch: list[np.ndarray] = []
    for _, frame in frames:
        batch.append(frame)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


class BackgroundWriter:
    """Calls write(frame) on its own thread, from a bounded queue, in order.

    close() writes everything queued before it returns (also after Ctrl-C, so a partial video
    holds every frame that was stylised) and raises the writer's error, if it had one.
    """

    def __init__(self, write: Write, max_frames: int | None = None):
        max_frames = config.ENCODE_QUEUE_FRAMES if max_frames is None else max_frames
        self._frames: queue.Queue = queue.Queue(max_frames)
        self._stage = _Stage("encode", self._drain)
        self._write = write
        self._stage.start()

    def _drain(self) -> None:
        # Polled, not a blocking get(): Ctrl-C (and SIGTERM/SIGHUP, raised the same way) can
        # strike the main thread inside Queue.put after the frame went in but before the
        # wake-up; a blocking get() would then sleep through every later put, _END included,
        # and close() would wait for ever (seen once in a SIGHUP test).
        while True:
            try:
                frame = self._frames.get(timeout=_POLL_S)
            except queue.Empty:
                continue
            if frame is _END:
                return
            self._write(frame)

    def put(self, frame: np.ndarray) -> None:
        if not _put(self._frames, frame, self._stage.is_alive):
            self._stage.raise_error()  # the writer died: say why instead of waiting forever

    def close(self) -> None:
        _put(self._frames, _END, self._stage.is_alive)
        self._stage.join()
        self._stage.raise_error()


def _shut_down(stop: threading.Event, writer: BackgroundWriter | None, producer: _Stage) -> None:
    """How both pipelines end, normally, on an error or on Ctrl-C (or SIGTERM/SIGHUP, which
    stylize.py turns into the same): the producer is told to stop, everything stylised so far is
    written (so a partial video holds it), and the producer is waited for even when the writer
    failed (a full disk), so no thread still reads the source after the call returns."""
    stop.set()
    try:
        if writer is not None:
            writer.close()
    finally:
        producer.join()


def stylize_stream(frames: Iterable[Frame], process: Process, batch_size: int,
                   write: Write | None = None, show: Show | None = None,
                   on_batch: Callable[[int], None] | None = None) -> bool:
    """Stylise every frame, in order, into write and show; False if show asked to stop.

    on_batch(n) is called after each batch of n frames is stylised (for a progress bar).
    """
    stop = threading.Event()
    decoded: queue.Queue = queue.Queue(config.DECODE_QUEUE_BATCHES)

    def decode() -> None:
        try:
            for batch in batches(frames, batch_size):
                if not _put(decoded, batch, lambda: not stop.is_set()):
                    return
        finally:
            _put(decoded, _END, lambda: not stop.is_set())

    reader = _Stage("decode", decode)
    reader.start()
    writer = BackgroundWriter(write) if write is not None else None
    try:
        while (batch := _get(decoded, reader)) is not _END:
            for result in process(batch):
                if writer is not None:
                    writer.put(result)
                if show is not None and not show(result, None):
                    return False
            if on_batch is not None:
                on_batch(len(batch))
        reader.join()
        reader.raise_error()
        return True
    finally:
        _shut_down(stop, writer, reader)


class LatestFrame:
    """A one-frame mailbox: put() replaces an untaken frame, take() gets the newest one."""

    def __init__(self) -> None:
        self._ready = threading.Condition()
        self._item: Frame | None = None
        self._ended = False
        self.skipped = 0

    def put(self, item: Frame) -> None:
        with self._ready:
            if self._item is not None:
                self.skipped += 1
            self._item = item
            self._ready.notify()

    def end(self) -> None:
        with self._ready:
            self._ended = True
            self._ready.notify()

    def take(self) -> Frame | None:
        """The newest frame not taken yet, waiting for one; None once the source has ended."""
        with self._ready:
            self._ready.wait_for(lambda: self._item is not None or self._ended)
            item, self._item = self._item, None
            return item


class RateMeter:
    """Frames per second over the last `window` ticks."""

    def __init__(self, window: int | None = None):
        window = config.LIVE_FPS_WINDOW if window is None else window
        self._times: deque[float] = deque(maxlen=window)

    def tick(self) -> float | None:
        self._times.append(time.perf_counter())
        if len(self._times) < 2:
            return None
        return (len(self._times) - 1) / max(self._times[-1] - self._times[0], 1e-9)


def stylize_live(frames: Iterable[Frame], process: Process, write: Write | None = None,
                 show: Show | None = None) -> bool:
    """Stylise the newest frame of a live source, again and again, until it ends.

    The recording (write) is what was shown, in real time: a shown frame is repeated for
    the source frames that were skipped while it was on screen, so the video keeps the
    source's frame rate and length. False if show asked to stop.
    """
    stop = threading.Event()
    mailbox = LatestFrame()

    def capture() -> None:
        try:
            for item in frames:
                if stop.is_set():
                    return
                mailbox.put(item)
        finally:
            mailbox.end()

    capturer = _Stage("capture", capture)
    capturer.start()
    writer = BackgroundWriter(write) if write is not None else None
    rate = RateMeter()
    last_index, last_result = -1, None
    try:
        while (item := mailbox.take()) is not None:
            index, frame = item
            result = process([frame])[0]
            if writer is not None:
                held = last_result if last_result is not None else result
                for _ in range(index - last_index - 1):
                    writer.put(held)
                writer.put(result)
            last_index, last_result = index, result
            if show is not None and not show(result, rate.tick()):
                return False
        capturer.raise_error()
        return True
    finally:
        _shut_down(stop, writer, capturer)

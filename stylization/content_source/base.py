"""What every content source offers: RGB uint8 frames with their index, fps and size.

Sources know nothing about the network or about output files; they only decode and scale.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Iterator

import cv2
import numpy as np

from common.images import fit_within

Frame = tuple[int, np.ndarray]  # (index from 0, RGB uint8 HxWx3)


def scale_to(frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize an HxWx3 frame to size (width, height) unless it already has it."""
    height, width = frame.shape[:2]
    if (width, height) == size:
        return frame
    # INTER_AREA averages source pixels, so downscaling does not alias.
    return cv2.resize(frame, size, interpolation=cv2.INTER_AREA)


def scale_within(frame: np.ndarray, max_size: int | None) -> np.ndarray:
    """Scale a frame down so its longer side is at most max_size; never up."""
    height, width = frame.shape[:2]
    return scale_to(frame, fit_within(width, height, max_size))


class ContentSource(ABC):
    """A finite or endless stream of frames that all share one size.

    Attributes set by subclasses:
      label:       a short name for messages and default output names.
      size:        (width, height) of every frame yielded, after scaling.
      fps:         frames per second as the container reports it; None for still images.
      frame_count: the number of frames if known in advance, else None.
      live:        frames come at the source's pace and cannot wait (cameras, streams).
    """

    label: str
    size: tuple[int, int]
    fps: float | None
    frame_count: int | None
    live: bool = False

    @abstractmethod
    def frames(self) -> Iterator[Frame]:
        """Yield (index, RGB uint8 frame) from the first frame on."""

    def close(self) -> None:
        """Release whatever the source holds open (captures); safe to call twice."""

    def __enter__(self) -> "ContentSource":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

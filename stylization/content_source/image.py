"""A single still image as a one-frame source."""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np

from common.images import load_image
from stylization.content_source.base import ContentSource, Frame, scale_within


class ImageSource(ContentSource):
    def __init__(self, path: str | Path, max_size: int | None = None):
        path = Path(path)
        # load_image applies the EXIF rotation and flattens alpha, palette and 16-bit images.
        self._frame = scale_within(np.asarray(load_image(path)), max_size)
        height, width = self._frame.shape[:2]
        self.label = path.stem
        self.size = (width, height)
        self.fps = None
        self.frame_count = 1

    def frames(self) -> Iterator[Frame]:
        yield 0, self._frame

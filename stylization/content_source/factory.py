"""Picks the content source for a --content_type."""
from __future__ import annotations

from pathlib import Path

from stylization.content_source.base import ContentSource
from stylization.content_source.image import ImageSource
from stylization.content_source.video import VideoSource
from stylization.content_source.webcam import WebcamSource
from stylization.enum_class import ContentType

_SOURCES = {
    ContentType.IMAGE: ImageSource,
    ContentType.VIDEO: VideoSource,
    ContentType.WEBCAM: WebcamSource,
}


def create_source(content_type: ContentType, source: str | Path,
                  max_size: int | None = None) -> ContentSource:
    """Open one image, video or camera/stream; frames' longer side is at most max_size."""
    return _SOURCES[ContentType(content_type)](source, max_size)

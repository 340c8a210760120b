"""The kinds of content stylize.py reads (its --content_type choices)."""
from __future__ import annotations

from enum import Enum


class ContentType(str, Enum):
    IMAGE = "image"
    VIDEO = "video"
    WEBCAM = "webcam"

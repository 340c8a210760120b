"""The page's live camera: one connection's settings and the state its frames carry, and the
note the tab shows on a processor without native bf16.

The page sends JSON settings and JPEG frames; each frame is answered with the stylised frame
as JPEG, made as stylize.py's webcam path makes it: the model loaded once, --target_fps's
SizePacer, then the Look (strength, colours, and the smoother that remembers the last frame).
The network half of a frame (LiveCamera.stylise) may run beside the next frame's; the look
and the JPEG (LiveCamera.finish) run in the frames' order, as the smoother needs.

{"speed_up": true} asks for the style to be compiled for the camera's frame size (the package
`stylize.py --compile True` builds, kept for later runs); the frames go on meanwhile, and run
compiled once it is built (LiveCamera.speed_up).
"""
from __future__ import annotations

import io
import json
import threading
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from fastapi import HTTPException
from PIL import Image

import config
from common.errors import first_line
from common.images import IMAGE_READ_ERRORS, decode_image
from common.precision import has_native_bf16_cpu
from stylization.blend import Finish, Look
from stylization.pacing import SizePacer
from stylization.stylizer import Stylizer


@dataclass(frozen=True)
class LiveSettings:
    """What the page's Live camera controls set; target_fps 0: the camera's own size."""
    style: str | None = None
    strength: float = 1.0
    preserve_color: bool = False
    smooth: float = 0.0
    target_fps: float = 0.0

    @property
    def look(self) -> Look:
        return Look(self.strength, self.preserve_color, self.smooth)


def parse_live_settings(text: str) -> dict:
    """The settings a JSON message sets; anything else, or out of range, is ignored."""
    try:
        data = json.loads(text)
    except ValueError:
        return {}
    if not isinstance(data, dict):
        return {}
    number = lambda key: isinstance(data.get(key), (int, float)) and not isinstance(data[key], bool)  # noqa: E731
    out = {}
    if isinstance(data.get("style"), str):
        out["style"] = data["style"]
    if number("strength") and 0 <= data["strength"] <= 1:
        out["strength"] = float(data["strength"])
    if isinstance(data.get("preserve_color"), bool):
        out["preserve_color"] = data["preserve_color"]
    if number("smooth") and 0 <= data["smooth"] < 1:
        out["smooth"] = float(data["smooth"])
    if number("target_fps") and 0 <= data["target_fps"] <= config.WEB_LIMITS["live_max_target_fps"]:
        out["target_fps"] = float(data["target_fps"])
    return out


def asks_speed_up(text: str) -> bool:
    """Whether a JSON message asks for the style to be compiled (LiveCamera.speed_up)."""
    try:
        data = json.loads(text)
    except ValueError:
        return False
    return isinstance(data, dict) and data.get("speed_up") is True


# Compiling takes every core for a minute or so: one build at a time on this machine, whichever
# page asked.
_BUILDS = threading.Lock()


def live_note(styles: list[str]) -> str | None:
    """What the Live camera tab says on a CPU without native bf16, where the _fast styles run in
    float32 at about half the tiny network's frames/s (docs/speed.md): the _tiny styles among
    those offered, or where to find them."""
    if torch.cuda.is_available() or has_native_bf16_cpu():
        return None
    tiny = [name for name in styles if name.endswith("_tiny")]
    if not tiny:
        return ("This computer's processor has no native bf16: for a smooth camera use a _tiny style "
                "(trained_models/ has three; python train.py --network tiny trains one), or aim for "
                "a frame rate (a smaller picture).")
    return (f"This computer's processor has no native bf16: for a smooth camera pick a _tiny style "
            f"({', '.join(tiny)}), about twice the frames/s of the _fast ones, or aim for a frame rate "
            f"(a smaller picture).")


class LiveCamera:
    """One page's camera connection: settings from the socket handler, frames on the server's
    live threads, stylise() for several frames at once, finish() one frame at a time in order."""

    def __init__(self, model_file: Callable[[str], Path]):
        self.model_file = model_file  # style id -> model file; refuses ids it does not offer
        self.settings = LiveSettings()
        self.stylizers: dict[str, Stylizer] = {}
        self.finish_look: Finish | None = None  # started again when the look or the frame size changes
        self.pacer: SizePacer | None = None  # likewise for the target or the frame size
        self.size: tuple[int, int] | None = None
        self._setup = threading.Lock()  # the stylizers, pacer and size, which frames share
        self.speed_up_state: str | None = None  # "building", "done", or "failed: why"

    def update(self, text: str) -> None:
        new = replace(self.settings, **parse_live_settings(text))
        if new.look != self.settings.look:
            self.finish_look = None
        if new.target_fps != self.settings.target_fps:
            self.pacer = None
        self.settings = new

    @property
    def paced_size(self) -> tuple[int, int] | None:
        """The size the network runs at under a frames/s target (None: the camera's)."""
        return self.pacer.size if self.pacer is not None else None

    @property
    def compiled(self) -> bool:
        """Whether the current style's frames run as a compiled package at the size they run at."""
        stylizer = self.stylizers.get(self.settings.style)
        size = self.paced_size or self.size
        return stylizer is not None and size is not None and stylizer.processor.runs_compiled(size[1], size[0])

    def report(self) -> dict:
        """What the page shows beside the frames: the size a frames/s target runs at ("WxH",
        None: the camera's), whether the frames run compiled, how a speed-up went."""
        size = self.paced_size
        return {"live_size": "x".join(map(str, size)) if size else None, "compiled": self.compiled,
                "speed_up": self.speed_up_state}

    def speed_up(self) -> None:
        """Compiles the current style for the camera's frame size, as `stylize.py --content_type
        webcam --compile True` would (its package serves later runs and pages too); blocks until
        built, the frames going on eager meanwhile. The outcome: speed_up_state."""
        with self._setup:
            stylizer, size = self.stylizers.get(self.settings.style), self.size
        if stylizer is None or size is None:
            self.speed_up_state = "failed: start the camera first"
            return
        self.speed_up_state = "building"
        try:
            with _BUILDS:
                stylizer.processor.compile_for(size[1], size[0])
        except Exception as err:  # noqa: BLE001 - the compilers raise many types; the page says which
            self.speed_up_state = f"failed: {first_line(err)[:300]}"
            return
        self.speed_up_state = "done"

    # JPEG both ways, even from a page on this machine: raw pixels, sent or answered, made the
    # page's camera slower in headless Chromium than a JPEG encoded and decoded on each side.
    def stylise(self, jpeg: bytes) -> tuple[np.ndarray, np.ndarray]:
        """The camera frame and the network's output, at the camera's size."""
        try:
            frame = np.asarray(decode_image(io.BytesIO(jpeg)))
        except IMAGE_READ_ERRORS:
            raise HTTPException(400, "a camera frame was not a JPEG the server can read: reload the page") from None
        with self._setup:
            style = self.settings.style
            if style not in self.stylizers:
                self.stylizers[style] = Stylizer(self.model_file(style), camera=True)
            size = (frame.shape[1], frame.shape[0])
            if size != self.size:
                self.size, self.finish_look, self.pacer = size, None, None
            process = self.stylizers[style].processor
            if self.settings.target_fps:
                self.pacer = self.pacer or SizePacer(self.settings.target_fps, size)
                process = self.pacer.wrap(process)
        return frame, process([frame])[0]

    def finish(self, frame: np.ndarray, stylised: np.ndarray) -> bytes:
        """The look applied (in the frames' order: the smoother blends with the last one) and
        the JPEG the page is answered with."""
        finish = self.finish_look = self.finish_look or self.settings.look.start()
        buffer = io.BytesIO()
        Image.fromarray(finish(frame, stylised)).save(buffer, "JPEG", quality=config.WEB_LIMITS["live_jpeg_quality"])
        return buffer.getvalue()

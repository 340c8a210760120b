"""The Python API: a model loaded once, then pictures, video files and folders stylised with
the options of stylize.py.

    from stylization.stylizer import Stylizer, StyleOptions
    mosaic = Stylizer("trained_models/mosaic_coarse.pth.tar", StyleOptions(strength=0.8))
    picture = mosaic.image(Image.open("docs/grace_hopper.jpg"))  # a PIL image back
    mosaic.video("clip.mp4", "clip_mosaic.mp4")  # H.264 with the clip's sound
    mosaic.folder("photos/", "stylised/")

Frames go through the same Processor (precision guard, tiles, out-of-memory fallbacks) and
the same Look (strength, colours, smoothing) as stylize.py's; the web page uses this class.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

import config
from common.devices import resolve_device
from common.files import list_files
from common.images import load_image, save_image
from common.model_files import model_stem
from network.formats import load_model
from stylization.blend import Look
from stylization.content_source.base import scale_within
from stylization.content_source.video import VideoSource
from stylization.pipeline import stylize_stream
from stylization.processor import build_processor, compiles_here
from stylization.sink import VideoSink

# (frames done, frames in all or None) after each batch of a video
Progress = Callable[[int, int | None], None]


@dataclass
class StyleOptions:
    """stylize.py's options for how a picture is stylised (README, Stylization)."""
    strength: float = 1.0
    preserve_color: bool = False
    smooth: float = 0.0  # videos only
    max_size: int | None = None
    tile_budget: float = field(default_factory=lambda: config.STYLIZE_DEFAULTS["tile_budget"])
    precision: str = "auto"
    batch_size: int | None = None  # None: config.STYLIZE_BATCH_SIZE for the device

    @property
    def look(self) -> Look:
        return Look(self.strength, self.preserve_color, self.smooth)


class Stylizer:
    """One model file, loaded once on device ("auto": CUDA when present). camera: its frames
    come from a live camera (the page's), run as stylize.py's webcam path runs them: compiled
    where an earlier `stylize.py --compile True` run left a package for the frame size, else
    eager at once (nothing is built while the camera waits)."""

    def __init__(self, model_path: str | Path, options: StyleOptions | None = None, device: str = "auto",
                 camera: bool = False):
        self.options = options or StyleOptions()
        self.device = resolve_device(device)
        self.model_path = Path(model_path)
        cached = camera and compiles_here(self.device)
        self.processor = build_processor(load_model(model_path, self.device), self.device,
                                         self.options.precision, self.options.batch_size,
                                         self.options.tile_budget, compile=cached, cached_only=cached)

    def image(self, picture: np.ndarray | Image.Image, options: StyleOptions | None = None,
              ) -> np.ndarray | Image.Image:
        """A picture (RGB uint8 H x W x 3 array, or a PIL image in any mode) stylised; the same
        kind back, at --max_size if set. options: this call's strength, colours and size."""
        options = options or self.options
        frame = np.asarray(picture.convert("RGB")) if isinstance(picture, Image.Image) else picture
        frame = scale_within(np.ascontiguousarray(frame[..., :3]), options.max_size)
        out = self.processor([frame])[0]
        if not options.look.is_identity:
            out = options.look.start()(frame, out)
        return Image.fromarray(out) if isinstance(picture, Image.Image) else out

    def video(self, source: str | Path, output: str | Path, progress: Progress | None = None,
              cancelled: Callable[[], bool] | None = None) -> Path:
        """A video file stylised into output (its extension picks the format; MP4: H.264 with
        the source's sound). progress is called after each batch; when cancelled() turns True
        the run stops and no output is kept. Returns output's path."""
        output, finish = Path(output), self.options.look.start()
        with VideoSource(source, self.options.max_size) as video:
            sink = VideoSink(output, video.fps, video.size, audio_from=source)
            done = 0

            def process(batch: list[np.ndarray]) -> list[np.ndarray]:
                return [finish(frame, out) for frame, out in zip(batch, self.processor(batch))]

            def on_batch(count: int) -> None:
                nonlocal done
                done += count
                if progress is not None:
                    progress(done, video.frame_count)

            keep_going = (lambda frame, fps: not cancelled()) if cancelled is not None else None
            try:
                with sink:
                    finished = stylize_stream(video.frames(), process, self.processor.batch_size,
                                              sink.write, keep_going, on_batch)
                    if not finished:
                        raise _Cancelled
            except _Cancelled:
                output.unlink(missing_ok=True)
        return output

    def folder(self, folder: str | Path, output_dir: str | Path) -> list[Path]:
        """Every image in folder stylised into output_dir as <name>_<model>.png."""
        images, _ = list_files(folder, config.IMAGE_EXTENSIONS)
        Path(output_dir).mkdir(parents=True, exist_ok=True)
        stem = model_stem(self.model_path)
        written = []
        for path in images:
            out = self.image(np.asarray(load_image(path)))
            written.append(save_image(out, Path(output_dir) / f"{path.stem}_{stem}.png"))
        return written


class _Cancelled(Exception):
    """Raised inside the sink's block so that it deletes the unfinished video."""

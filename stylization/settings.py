"""What a stylisation run is asked to do: stylize.py's flags as one dataclass, and their checks.

stylize.py builds StylizeSettings from its flags; a script builds it with stylize_settings(),
which fills what it leaves out from config.STYLIZE_DEFAULTS, read when it is called.
"""
from __future__ import annotations

from dataclasses import dataclass

import config
from common.cli import with_defaults
from common.devices import check_compiler
from common.errors import fail
from stylization.enum_class import ContentType

MIN_MAX_SIZE = 16  # smaller frames carry too little for the network's 9x9 kernels


@dataclass
class StylizeSettings:
    """One field per stylize.py flag, named as the flag (README, Stylization)."""
    content_type: str
    source: str
    model_path: list[str]
    device: str
    max_size: int | None
    output_dir: str
    real_time: bool
    save_output: bool
    batch_size: int | None
    precision: str
    compile: bool | str
    strength: float
    preserve_color: bool
    smooth: float
    tile_budget: float
    output_name: str | None = None
    overwrite: bool = False
    report_stability: bool = False
    target_fps: float | None = None


def stylize_settings(**values) -> StylizeSettings:
    """StylizeSettings with config.STYLIZE_DEFAULTS for every field not given."""
    return with_defaults(StylizeSettings, config.STYLIZE_DEFAULTS, values)


def check(args: StylizeSettings) -> None:
    """A one-line error (UserError) for the first setting out of range or at odds with another."""
    if args.max_size is not None and args.max_size < MIN_MAX_SIZE:
        fail(f"--max_size must be at least {MIN_MAX_SIZE} (got {args.max_size})")
    if args.tile_budget < 0:
        fail(f"--tile_budget is in megapixels and cannot be negative (got {args.tile_budget}); "
             "0 turns tiling off")
    if args.batch_size is not None and args.batch_size < 1:
        fail(f"--batch_size must be at least 1 (got {args.batch_size})")
    if not 0 <= args.strength <= 1:
        fail(f"--strength must be between 0 (the input) and 1 (fully stylised), got {args.strength}")
    if not 0 <= args.smooth < 1:
        fail(f"--smooth must be at least 0 (off) and below 1, got {args.smooth}")
    if args.smooth > 0 and args.content_type == ContentType.IMAGE.value:
        fail("--smooth steadies frames of a video against each other: use it with --content_type "
             "video or webcam, not with still images")
    if args.report_stability and args.content_type != ContentType.VIDEO.value:
        fail("--report_stability measures flicker between video frames: use it with --content_type video")
    if args.target_fps is not None and args.target_fps <= 0:
        fail(f"--target_fps must be more than 0 (got {args.target_fps})")
    if args.target_fps is not None and args.content_type != ContentType.WEBCAM.value:
        fail("--target_fps paces a live camera or stream: use it with --content_type webcam; for files "
             "--max_size sets the size")
    if args.compile is True:
        check_compiler()
    if not args.real_time and not args.save_output:
        fail("--real_time and --save_output are both False: nothing would be shown or saved")



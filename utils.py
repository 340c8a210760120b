"""`python utils.py extract-frames | finalize-model`: the command line of the shared helpers.

extract-frames saves a folder of videos' frames as JPEG training images (common/frames.py);
finalize-model writes the stylisation-only copy of a training checkpoint
(common/model_files.py). The helpers themselves live in the common package.
"""
from __future__ import annotations

import argparse

from common.cli import run_cli, str2bool
from common.frames import extract_frames
from common.model_files import finalize_model


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Utilities for the style-transfer toolkit.")
    commands = parser.add_subparsers(dest="command", required=True)
    extract = commands.add_parser("extract-frames", help="extract training frames from videos")
    extract.add_argument("--video_dir", required=True, help="folder holding the videos (read only)")
    extract.add_argument("--frames_dir", required=True, help="folder the JPEG frames are written to")
    extract.add_argument("--every", type=int, default=1, help="keep every Nth frame (default 1)")
    extract.add_argument("--max_size", type=int, default=None,
                         help="scale the longer side down to this many pixels (default: keep)")
    extract.add_argument("--debug", action="store_true", help="show tracebacks")
    final = commands.add_parser("finalize-model",
                                help="copy a training checkpoint without optimizer state, for stylisation")
    final.add_argument("src", help="checkpoint written by train.py")
    final.add_argument("dst", help="where to write the stylisation-only copy")
    final.add_argument("--half", type=str2bool, default=True, help="store weights in float16 (default True)")
    final.add_argument("--debug", action="store_true", help="show tracebacks")
    args = parser.parse_args(argv)
    if args.command == "finalize-model":
        path = finalize_model(args.src, args.dst, args.half)
        print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB)")
        return
    counts = extract_frames(args.video_dir, args.frames_dir, args.every, args.max_size)
    for name, count in counts.items():
        print(f"{name}: {count} frames")
    print(f"{sum(counts.values())} frames in {args.frames_dir}")


if __name__ == "__main__":
    run_cli(main)

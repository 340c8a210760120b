"""stylize.py's command line: flags -> StylizeSettings -> stylization.jobs.run."""
from __future__ import annotations

import argparse
import sys
from dataclasses import fields

import config
from common.cli import str2bool
from stylization.enum_class import ContentType
from stylization.jobs import run
from stylization.settings import StylizeSettings, check


def build_parser() -> argparse.ArgumentParser:
    d = config.STYLIZE_DEFAULTS
    p = argparse.ArgumentParser(
        description="Stylise an image, a video or a webcam stream with a trained model.")
    p.add_argument("--content_type", required=True, choices=[t.value for t in ContentType],
                   help="what --source is")
    p.add_argument("--source", required=True,
                   help="image: an image file, a folder of images or a quoted glob pattern "
                        "such as 'photos/*.jpg'; video: the same for video files; webcam: a "
                        "camera index (0 is the first camera) or a stream URL or path")
    p.add_argument("--device", default=d["device"],
                   help="cuda, cpu, or auto (CUDA when present; the default); cuda without a GPU "
                        "falls back to the CPU")
    p.add_argument("--max_size", type=int, default=d["max_size"],
                   help="scale frames down so their longer side is at most this many pixels "
                        "(never up; default: keep the source's size)")
    p.add_argument("--model_path", required=True, nargs="+",
                   help="the model: a train.py checkpoint such as trained_models/mosaic.pth.tar, the "
                        "original project's .pth.tar, a pytorch/examples .pth, or an exported .onnx; "
                        "or several of them, or folders of them: every source is stylised with every "
                        "model (images also get a labelled contact sheet), and on a webcam keys n "
                        "and p switch models")
    p.add_argument("--output_dir", default=d["output_dir"],
                   help="folder for the stylised output, created if missing (default: %(default)s)")
    p.add_argument("--output_name", default=None,
                   help="file name of the output of a single source; the extension picks the "
                        "format (default: <source>_<model>.png for images, .mp4 for videos)")
    p.add_argument("--real_time", type=str2bool, default=d["real_time"],
                   help="show the stylised output in a window as it is made (q or Esc stops); "
                        "ignored with a warning when no display is available (default: %(default)s)")
    p.add_argument("--save_output", type=str2bool, default=d["save_output"],
                   help="save the stylised output in --output_dir (default: %(default)s)")
    p.add_argument("--overwrite", type=str2bool, default=False,
                   help="replace existing output files instead of picking a free name (inputs "
                        "are never replaced; default: %(default)s)")
    # Speed: results are the same up to the precision's rounding (README, Stylization speed).
    p.add_argument("--batch_size", type=int, default=d["batch_size"],
                   help="video frames per network call (default: "
                        f"{', '.join(f'{k} {v}' for k, v in config.STYLIZE_BATCH_SIZE.items())})")
    p.add_argument("--precision", choices=config.PRECISION_CHOICES, default=d["precision"],
                   help="arithmetic of the network: auto (the default) is fp16 on CUDA, bf16 on "
                        "CPUs with native bf16, fp32 elsewhere, and fp32 for a model whose first "
                        "frames differ from fp32 by a mean of more than "
                        f"{config.AUTO_PRECISION_MAX_MEAN_DIFF}/255 in that precision")
    p.add_argument("--compile", type=auto_or_bool, default=d["compile"],
                   help="compile the network ahead of time (torch.export, AOTInductor): True, "
                        "False, or auto (the default): only for videos long enough to repay the "
                        "compiler's wait, on a CPU, or shorter ones once an earlier run compiled "
                        "this model for their frame size (compiled packages are kept in "
                        f"$TORCHINDUCTOR_CACHE_DIR or ~/.cache/{config.COMPILE_CACHE_SUBDIR})")
    # The look of the output (stylization/blend.py; docs/smoothing.md): any model, no retraining.
    p.add_argument("--strength", type=float, default=d["strength"],
                   help="how much of the style, 0 to 1: the output is strength x the stylised frame "
                        "+ (1 - strength) x the input (default: %(default)s)")
    p.add_argument("--preserve_color", type=str2bool, default=d["preserve_color"],
                   help="keep the input's colours: the stylised luminance with the input's chroma "
                        "(YCbCr), applied before --strength (default: %(default)s)")
    p.add_argument("--smooth", type=float, default=d["smooth"],
                   help="videos and webcams: steadier output, 0 (off, the default) to below 1: each "
                        "frame is blended this much with the previous output, moved along the "
                        "input's optical flow where it is reliable; never across scene cuts")
    p.add_argument("--tile_budget", type=float, default=d["tile_budget"],
                   help="megapixels: larger frames run on overlapping tiles (windows of a quarter of this "
                        "size) with the whole frame's instance-norm statistics, so memory stays "
                        "bounded; ONNX models are never tiled (0: never tile; default: %(default)s)")
    p.add_argument("--target_fps", type=float, default=None,
                   help="webcams and streams: stylise at the largest size, up to the source's (or "
                        "--max_size), that holds this many frames/s here; measured in the first "
                        "second and adjusted as it runs; the window shows the size and rate")
    p.add_argument("--report_stability", type=str2bool, default=False,
                   help="videos: print each video's warping error E_warp (temporal flicker; "
                        "lower is steadier) and the input's own after the run (default: %(default)s)")
    p.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    return p


def auto_or_bool(value: str) -> str | bool:
    """argparse type of --compile: auto, or a boolean as str2bool reads it."""
    if str(value).strip().lower() == "auto":
        return "auto"
    try:
        return str2bool(value)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"expected True, False or auto, got {value!r}") from None


def main(argv: list[str] | None = None) -> None:
    args = vars(build_parser().parse_args(argv))
    settings = StylizeSettings(**{f.name: args[f.name] for f in fields(StylizeSettings)})
    check(settings)
    status = run(settings)
    if status:
        sys.exit(status)

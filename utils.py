"""What training and stylisation share: errors, devices, precision, image conversions, atomic
files, checkpoints and frame extraction. It imports no module of the project but config, so
every other module can import it.

Run `python utils.py --help` for its commands: extract-frames, finalize-model.
"""
from __future__ import annotations

import argparse
import ctypes
import errno
import io
import os
import platform
import shutil
import sys
import tempfile
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
import torch
from PIL import Image, ImageOps

import config


class UserError(Exception):
    """A problem with the user's input: printed as one line, exit status 2, no traceback."""


class DiskFull(UserError):
    """A write failed because the disk (or the user's quota) is full. Unlike other user errors
    it ends a whole run, also one over a folder of files: every later write would fail too."""


# Both mean that nothing more fits: ENOSPC a full file system, EDQUOT a full quota.
DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


def fail(message: str) -> None:
    raise UserError(message)


def disk_full(path: str | Path, err: OSError | None = None) -> DiskFull:
    """The one-line error for a write of path that found the disk full."""
    reason = os.strerror(err.errno) if err is not None and err.errno else os.strerror(errno.ENOSPC)
    return DiskFull(f"cannot write {path}: the disk is full ({reason}); free some space or "
                    "write to another disk (nothing half-written was left under that name)")


@contextmanager
def full_disk_is_an_error(path: str | Path) -> Iterator[None]:
    """Turn an OSError of a full disk inside the block into DiskFull naming path; other errors
    pass unchanged. The block cleans up its own temporary files."""
    try:
        yield
    except OSError as err:
        if err.errno not in DISK_FULL_ERRNOS:
            raise
        raise disk_full(path, err) from None


def warn_if_short_of_space(folder: str | Path, needed_bytes: int, what: str) -> bool:
    """Warn (and return True) when folder's disk has less free space than needed_bytes, before
    anything is written, rather than failing hours later."""
    free = shutil.disk_usage(folder).free
    if free >= needed_bytes:
        return False
    warnings.warn(f"{folder} has {free / 1e6:.1f} MB free, but {what} need about "
                  f"{needed_bytes / 1e6:.1f} MB: the disk may fill up during the run", stacklevel=2)
    return True


def run_cli(main: Callable[[list[str] | None], None], argv: list[str] | None = None) -> None:
    """Run an entry point; user errors become one line on stderr and exit status 2."""
    debug = "--debug" in (argv if argv is not None else sys.argv[1:])
    if not debug:  # warnings read as one line each, like errors
        warnings.formatwarning = lambda message, *args, **kwargs: f"warning: {message}\n"
    try:
        main(argv)
    except UserError as err:
        if debug:
            raise
        # Under torchrun the processes of one machine read the same flags and files, so they
        # meet the same problems: its first process says it once.
        if os.environ.get("LOCAL_RANK", "0") == "0":
            _close_progress_bars()
            print(f"error: {err}", file=sys.stderr)
        sys.exit(2)


def _close_progress_bars() -> None:
    """Close the progress bars an error left drawn (training's epoch bar), so that the error
    gets a line of its own rather than trailing the bar."""
    tqdm = sys.modules.get("tqdm")
    for bar in list(getattr(getattr(tqdm, "tqdm", None), "_instances", ())):
        bar.close()


# ----------------------------------------------------------------------------- arguments
def str2bool(value: str | bool) -> bool:
    """argparse type for the README's boolean flags: True/False, yes/no, 1/0, on/off."""
    if isinstance(value, bool):
        return value
    lowered = value.strip().lower()
    if lowered in ("true", "yes", "y", "1", "on", "t"):
        return True
    if lowered in ("false", "no", "n", "0", "off", "f"):
        return False
    raise argparse.ArgumentTypeError(f"expected True or False, got {value!r}")


def keep_freed_memory() -> None:
    """Make glibc keep the memory of freed tensors in the process for the next ones.

    By default glibc gives large blocks (every full-size activation of a video frame or a
    training batch) back to the kernel when a tensor is freed, so each frame or step pays page
    faults to get them again: at 640x360 on the 2-core CPU that was a fifth (bf16) to a third
    (fp32) of stylisation's time, and a fifth of a bf16 training step's (README, Stylization
    speed, Training speed). Taking every block from the heap and never trimming it keeps them;
    peak memory stays about what it was. Does nothing where the C library is not glibc.
    """
    if platform.libc_ver()[0] != "glibc":
        return
    libc = ctypes.CDLL(None)
    m_trim_threshold, m_top_pad, m_mmap_max = -1, -2, -4  # mallopt parameters, <malloc.h>
    libc.mallopt(m_mmap_max, 0)
    libc.mallopt(m_trim_threshold, config.MALLOC_KEEP_BYTES)
    libc.mallopt(m_top_pad, config.MALLOC_TOP_PAD_BYTES)


def find_compiler() -> str | None:
    """The C++ compiler torch.compile would build its kernels with (C++ on a CPU, Triton's
    launchers on CUDA), or None."""
    names = (os.environ.get("CXX", ""), "g++", "clang++", "c++")
    return next((found for name in names if name and (found := shutil.which(name))), None)


def check_compiler() -> None:
    """Refuse --compile True where torch.compile could not work."""
    if find_compiler() is None:
        fail("--compile True needs a C++ compiler (torch.compile builds its kernels with one): "
             "install g++ (e.g. apt install g++) or leave --compile False")


def resolve_device(requested: str) -> torch.device:
    """'auto' picks CUDA when present; 'cuda' without CUDA warns and falls back to the CPU.

    cuda:N must name a GPU that is there, and becomes the current one: what uses the current
    GPU implicitly (pinned memory, the bf16 check) then opens no stray context on GPU 0."""
    requested = requested.lower()
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested != "cpu" and not requested.startswith("cuda"):
        fail(f"unknown device {requested!r}: use cuda, cuda:N (N counted from 0), cpu or auto")
    try:
        device = torch.device(requested)
    except RuntimeError:
        fail(f"unknown device {requested!r}: use cuda, cuda:N (N counted from 0), cpu or auto")
    if device.type == "cuda" and not torch.cuda.is_available():
        warnings.warn("CUDA was requested but is not available here; using the CPU.", stacklevel=2)
        return torch.device("cpu")
    if device.type == "cuda" and device.index is not None:
        count = torch.cuda.device_count()
        if device.index >= count:
            present = "cuda:0" if count == 1 else f"cuda:0 to cuda:{count - 1}"
            fail(f"--device {requested}: this machine has {count} GPU(s), {present} "
                 "(as CUDA_VISIBLE_DEVICES shows them): pick one of them")
        torch.cuda.set_device(device)
    return device


# ----------------------------------------------------------------------------- torchrun
@dataclass(frozen=True)
class Place:
    """This process's place among those torchrun started (a group of one without torchrun)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """The process that writes the shared files and reports progress."""
        return self.rank == 0


def torchrun_place(script: str) -> Place:
    """Where torchrun's environment (WORLD_SIZE, RANK, LOCAL_RANK) puts this process.

    Processes other than the first print nothing to stdout, and only the first of each machine
    shows warnings: the others read the same flags and files (a machine missing the data still
    says so, through its own first process)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return Place()
    if "RANK" not in os.environ or "LOCAL_RANK" not in os.environ:
        fail(f"WORLD_SIZE is {world_size} but RANK or LOCAL_RANK is not set: start {script} with "
             "torchrun, which sets them (or unset WORLD_SIZE)")
    place = Place(int(os.environ["RANK"]), world_size, int(os.environ["LOCAL_RANK"]))
    if place.rank != 0:
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 (for the life of the process)
    if place.local_rank != 0:
        warnings.simplefilter("ignore")
    return place


def local_gpu(local_rank: int) -> torch.device:
    """The GPU of this process's LOCAL_RANK, made the current one; a one-line error where
    torchrun started more processes on this machine than it has GPUs."""
    local_size = int(os.environ.get("LOCAL_WORLD_SIZE", local_rank + 1))
    if local_size > torch.cuda.device_count():
        gpus = torch.cuda.device_count()
        fail(f"torchrun started {local_size} processes on this machine but it has {gpus} GPU(s): "
             f"pass --nproc_per_node {gpus} or fewer")
    device = torch.device("cuda", local_rank)
    torch.cuda.set_device(device)
    return device


# ----------------------------------------------------------------------------- precision
def has_native_bf16_cpu() -> bool:
    """Whether this CPU does bfloat16 arithmetic in hardware (AVX512-BF16 or AMX), where
    oneDNN's bf16 convolutions beat float32; elsewhere bf16 is emulated and slower."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")  # private, hence getattr
    return torch.backends.mkldnn.is_available() and any(
        getattr(torch.cpu, check, lambda: False)() for check in checks)


def has_native_bf16_gpu(device: torch.device) -> bool:
    """Whether the GPU `device` (the current one if it has no index) does bfloat16 in
    hardware (compute capability 8.0 on). torch's default check also counts emulation, which
    runs (slowly) on older cards such as Turing, and asks the current GPU, not this one."""
    if device.index is None:
        return torch.cuda.is_bf16_supported(including_emulation=False)
    with torch.cuda.device(device.index):  # the check looks at the current GPU
        return torch.cuda.is_bf16_supported(including_emulation=False)


def resolve_precision(name: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype that --precision asks for on device; None means plain float32.

    auto: float16 on CUDA, bfloat16 on CPUs with native bf16, float32 elsewhere.
    fp16 on a CPU warns and uses what auto would: CPU autocast accepts float16 but runs it
    about ten times slower than float32 and needs loss scaling, for nothing in return.
    bf16 on a GPU without it warns and uses fp16; bf16 on a CPU without native bf16 is
    honoured (it is correct, only slow) with a warning.
    """
    if name not in config.PRECISION_CHOICES:
        fail(f"unknown precision {name!r}: use {', '.join(config.PRECISION_CHOICES)}")
    cuda = device.type == "cuda"
    cpu_choice = "bf16" if not cuda and has_native_bf16_cpu() else "fp32"
    if name == "auto":
        name = "fp16" if cuda else cpu_choice
    elif name == "fp16" and not cuda:
        warnings.warn(f"fp16 on the CPU is slow and needs loss scaling; using {cpu_choice} instead",
                      stacklevel=2)
        name = cpu_choice
    elif name == "bf16" and cuda and not has_native_bf16_gpu(device):
        warnings.warn(f"the GPU {device} has no bf16 in hardware (only a slow emulation); using fp16 instead",
                      stacklevel=2)
        name = "fp16"
    elif name == "bf16" and not cuda and not has_native_bf16_cpu():
        warnings.warn("this CPU has no native bf16: bf16 will be emulated and slower than fp32",
                      stacklevel=2)
    return None if name == "fp32" else getattr(torch, config.PRECISIONS[name])


def precision_name(dtype: torch.dtype | None) -> str:
    """The --precision name of an autocast dtype from resolve_precision (None: fp32)."""
    names = {getattr(torch, value): key for key, value in config.PRECISIONS.items()}
    return names[dtype or torch.float32]


def autocast(device: torch.device, dtype: torch.dtype | None) -> torch.autocast:
    """Mixed precision in dtype on device; a no-op for float32 (dtype None). One call for
    every device, so there is no CUDA branch and CPU branch of the same step."""
    return torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None)


# ----------------------------------------------------------------------------- images
# What decoding a damaged, truncated or vanished image file raises (PIL and the file system).
IMAGE_READ_ERRORS = (OSError, SyntaxError, ValueError)


def decode_image(path: str | Path) -> Image.Image:
    """Any image file as 8-bit RGB, with its EXIF rotation applied; raises one of
    IMAGE_READ_ERRORS where it cannot be read (load_image turns that into a user error)."""
    with Image.open(path) as img:
        img = ImageOps.exif_transpose(img)
        if img.mode in ("I;16", "I;16B", "I;16L", "I"):
            # 16-bit greyscale: scale to 8 bits rather than clipping at 255.
            arr = np.asarray(img, dtype=np.float64)
            img = Image.fromarray(np.clip(arr / 257.0, 0, 255).astype(np.uint8), "L")
        if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
            rgba = img.convert("RGBA")
            background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            img = Image.alpha_composite(background, rgba)
        return img.convert("RGB")


def existing_file(path: str | Path, expected: str, fix: str) -> Path:
    """path, if it is a file; else a one-line error: `fix` for a missing one, `expected` (what
    should have been given, e.g. "an image file") for a folder."""
    path = Path(path)
    if not path.exists():
        fail(f"{path} does not exist: {fix}")
    if path.is_dir():
        fail(f"{path} is a directory, but {expected} is expected")
    return path


def load_image(path: str | Path) -> Image.Image:
    """Open any image file as 8-bit RGB, with its EXIF rotation applied."""
    path = existing_file(path, "an image file", "check the path")
    try:
        return decode_image(path)
    except IMAGE_READ_ERRORS as err:
        fail(f"{path} is not a readable image ({err}): give a JPEG, PNG or other image file")
    raise AssertionError("unreachable")


def frames_to_batch(frames: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """RGB uint8 frames N x H x W x 3 -> N x 3 x H x W in [0, 1] of dtype.

    A permuted view, so the result keeps the frames' channels-last memory order."""
    return frames.permute(0, 3, 1, 2).to(dtype).div(255.0)


def batch_to_frames(batch: torch.Tensor) -> torch.Tensor:
    """N x 3 x H x W in [0, 1] (any float dtype) -> RGB uint8 frames N x H x W x 3, rounded."""
    return batch.float().clamp(0, 1).mul(255).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous()


def image_to_tensor(image: Image.Image | np.ndarray) -> torch.Tensor:
    """RGB uint8 (PIL or HxWx3 array) -> float tensor 3xHxW in [0, 1]."""
    array = np.asarray(image, dtype=np.uint8)
    return frames_to_batch(torch.from_numpy(array.copy())[None])[0]


def tensor_to_array(tensor: torch.Tensor) -> np.ndarray:
    """Float tensor 3xHxW (or 1x3xHxW) in [0, 1] -> RGB uint8 HxWx3, rounded."""
    if tensor.dim() == 3:
        tensor = tensor[None]
    return batch_to_frames(tensor[:1].detach())[0].cpu().numpy()


def fit_within(width: int, height: int, max_size: int | None) -> tuple[int, int]:
    """Size with the longer side scaled down to max_size (never up), aspect kept."""
    if not max_size or max(width, height) <= max_size:
        return width, height
    scale = max_size / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def center_crop_resize(image: Image.Image, size: int) -> Image.Image:
    """Square centre crop of the shorter side, resized to size x size."""
    return ImageOps.fit(image, (size, size), method=Image.Resampling.BICUBIC)


def list_files(folder: str | Path, extensions: Iterable[str]) -> tuple[list[Path], list[Path]]:
    """Files under folder (recursively) split into (matching extension, others), sorted."""
    extensions = tuple(extensions)
    matching, others = [], []
    for path in sorted(Path(folder).rglob("*")):
        if path.is_file() and not path.name.startswith("."):
            (matching if path.suffix.lower() in extensions else others).append(path)
    return matching, others


# ----------------------------------------------------------------------------- files
def temp_file_beside(path: Path) -> str:
    """An empty temporary file in path's folder (created if missing), to be renamed onto path.

    It keeps path's extension, so writers choosing a format from the name (PIL, OpenCV)
    still do, and gets the permissions of an ordinary new file rather than mkstemp's 0600.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}")
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    return tmp


def atomic_write(path: str | Path, write: Callable[[str], None]) -> Path:
    """Call write(tmp_path), fsync, then rename over path: readers see old or new, never half.

    The temporary file keeps path's extension (see temp_file_beside).
    A full disk (ENOSPC, EDQUOT) raises DiskFull naming path, with the old file kept.
    """
    path = Path(path)
    with full_disk_is_an_error(path):
        tmp = temp_file_beside(path)
        try:
            write(tmp)
            with open(tmp, "rb+") as handle:
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    return path


def save_image(array: np.ndarray, path: str | Path) -> Path:
    """Write an RGB uint8 array atomically; the format comes from the extension."""
    image = Image.fromarray(array)
    fmt = Image.registered_extensions().get(Path(path).suffix.lower())
    if fmt is None:
        fail(f"cannot tell the image format of {path}: use a name ending in .png or .jpg")
    if fmt == "JPEG":
        return atomic_write(path, lambda tmp: image.save(tmp, format=fmt, quality=95))
    return atomic_write(path, lambda tmp: image.save(tmp, format=fmt))


# ----------------------------------------------------------------------------- checkpoints
def model_stem(model_path: str | Path) -> str:
    """The model's name without its checkpoint suffix: mosaic.pth.tar -> mosaic."""
    name = Path(model_path).name
    for suffix in config.MODEL_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


def save_checkpoint(checkpoint: dict, path: str | Path) -> Path:
    """Write a checkpoint atomically. It is serialised in memory first and written with plain
    file writes: torch.save's own writer reports a full disk as a RuntimeError without errno
    ("unexpected pos"), which could not be told from other faults."""
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    return atomic_write(path, lambda tmp: Path(tmp).write_bytes(buffer.getbuffer()))


def expected_checkpoint_bytes(model: torch.nn.Module) -> int:
    """About how large a training checkpoint of model is: its weights and Adam's two moments
    of each, plus a little for the rest."""
    weights = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    return 3 * weights + (64 << 10)


def read_checkpoint(path: str | Path) -> dict:
    """Read a checkpoint safely: weights_only=True refuses pickles that would run code."""
    path = existing_file(path, "a model file (.pth.tar)", "check --model_path")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for corrupt or unsafe files
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        fail(f"{path} is not a loadable checkpoint ({first_line[:200]})")
    if not isinstance(data, dict):
        fail(f"{path} does not hold a checkpoint dictionary")
    return data


def finalize_model(src: str | Path, dst: str | Path, half: bool = True) -> Path:
    """A stylisation-only copy of a training checkpoint: no optimizer state, and float16
    weights when `half` (a quarter of the size; load_model returns float32 either way)."""
    src, dst = Path(src), Path(dst)
    if dst.resolve() == src.resolve():
        fail(f"{dst} is the checkpoint being read: give another destination")
    checkpoint = read_checkpoint(src)
    if "network" not in checkpoint:
        fail(f"{src} is not a checkpoint of this project (no network description)")
    slim = {k: v for k, v in checkpoint.items() if k not in ("optimizer", "scaler")}
    slim["state_dict"] = {k: (v.half() if half and v.is_floating_point() else v)
                          for k, v in checkpoint["state_dict"].items()}
    return save_checkpoint(slim, dst)


# ----------------------------------------------------------------------------- frames
def extract_frames(video_dir: str | Path, frames_dir: str | Path, every: int = 1,
                   max_size: int | None = None, progress: bool = True) -> dict[str, int]:
    """Save every `every`-th frame of each video in video_dir as JPEG in frames_dir.

    Frames are named <video stem>_<frame index, 6 digits>.jpg, so they keep their order and
    the video they came from. The videos themselves are only read. Returns frames per video.
    """
    import cv2
    from tqdm import tqdm

    video_dir, frames_dir = Path(video_dir), Path(frames_dir)
    if not video_dir.is_dir():
        fail(f"video folder {video_dir} does not exist: give the folder holding your videos")
    if every < 1:
        fail(f"every must be at least 1 (got {every})")
    videos = sorted(p for p in video_dir.iterdir()
                    if p.is_file() and p.suffix.lower() in config.VIDEO_EXTENSIONS)
    if not videos:
        fail(f"no videos in {video_dir} (looked for {', '.join(config.VIDEO_EXTENSIONS)})")
    frames_dir.mkdir(parents=True, exist_ok=True)
    counts: dict[str, int] = {}
    for video in tqdm(videos, desc="videos", unit="video", disable=not progress):
        capture = cv2.VideoCapture(str(video))
        if not capture.isOpened():
            warnings.warn(f"skipping {video.name}: OpenCV cannot open it", stacklevel=2)
            continue
        saved, index = 0, 0
        try:
            while True:
                ok, frame = capture.read()
                if not ok:
                    break
                if index % every == 0:
                    height, width = frame.shape[:2]
                    size = fit_within(width, height, max_size)
                    if size != (width, height):
                        frame = cv2.resize(frame, size, interpolation=cv2.INTER_AREA)
                    target = frames_dir / f"{video.stem}_{index:06d}.jpg"
                    atomic_write(target, lambda tmp, f=frame: _write_jpeg(cv2, tmp, f))
                    saved += 1
                index += 1
        finally:
            capture.release()
        counts[video.name] = saved
    return counts


def _write_jpeg(cv2, path: str, frame: np.ndarray) -> None:
    """cv2.imwrite, raising where it only returns False: OpenCV does not say why, so a full
    disk is told by the free space left (atomic_write then reports it and keeps nothing)."""
    if cv2.imwrite(path, frame, [cv2.IMWRITE_JPEG_QUALITY, 95]):
        return
    if shutil.disk_usage(Path(path).parent).free < frame.nbytes:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)
    raise OSError(f"OpenCV could not write {path}")


def _main(argv: list[str] | None = None) -> None:
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
    # Run the imported module, not this __main__ copy: the modules the commands use raise
    # utils.UserError, which is the class the imported run_cli catches.
    import utils

    utils.run_cli(utils._main)

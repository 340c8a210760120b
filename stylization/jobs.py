"""A stylisation run: sources -> processor -> sinks, for every source and model asked for.

run(settings) plans the outputs, loads the models and stylises each source with each model;
the three parts meet in stylize_frames, which hands them to stylization/pipeline.py: decoding,
the network and encoding overlapped for files, the newest frame only for live sources.
Ctrl-C, SIGTERM and SIGHUP keep what was done (a partial video) and end the run.
"""
from __future__ import annotations

import errno
import os
import signal
import sys
import threading
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
from tqdm import tqdm

import config
from stylization import compile_cache
from stylization.blend import Look
from stylization.content_source.base import ContentSource
from stylization.content_source.factory import create_source
from stylization.content_source.video import VideoSource
from stylization.enum_class import ContentType
from stylization import shard
from stylization.content_source.base import scale_within
from stylization.pacing import SizePacer
from stylization.paths import Job, Sheet, find_inputs, find_models, model_labels, plan_outputs
from stylization.pipeline import stylize_live, stylize_stream
from stylization.processor import (Processor, build_processor, compiles_here, default_batch_size,
                                   stylize_precision)
from stylization.sink import (Display, ImageSink, VideoSink, display_available,
                              write_contact_sheet)
from common.devices import keep_freed_memory, resolve_device
from common.precision import has_native_bf16_cpu
from common.errors import DiskFull, fail, UserError
from common.images import load_image
from network.formats import load_model
from stylization.settings import StylizeSettings
from stylization.stability import StabilityResult, WarpErrorMeter

IMAGE_SHOW_MS = 2000  # how long a stylised image stays on screen unless a key is pressed
EXIT_INTERRUPTED = 130  # the shell's convention for a run ended by Ctrl-C
# What job schedulers, `timeout`, `docker stop` and a closed terminal send instead of Ctrl-C.
STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name))


class Stopped(KeyboardInterrupt):
    """SIGTERM or SIGHUP, raised as a KeyboardInterrupt so that the run ends the way Ctrl-C
    ends it: the video sink saves the frames done so far as a partial video."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_status(self) -> int:
        return 128 + self.signum  # the shell's convention for a run ended by a signal


def _silence_hung_up_terminal() -> None:
    """After a hang-up the terminal is gone and every write to it fails (EIO): the progress
    bar copes (tqdm stops drawing), but the note on the partial video would then end the run
    with a traceback and status 1. Output meant for that terminal goes to /dev/null instead;
    files and pipes are left alone."""
    import termios  # Unix only, like SIGHUP

    for fd in (1, 2):
        try:
            termios.tcgetattr(fd)
        except termios.error as err:
            if err.args and err.args[0] == errno.EIO:
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, fd)
                os.close(devnull)
        except (OSError, ValueError):
            continue


def _stop(signum: int, frame: object) -> None:
    # Once: a second signal while the partial video is being finished must not cut that short
    # (SIGKILL still ends the process).
    for each in STOP_SIGNALS:
        signal.signal(each, signal.SIG_IGN)
    if signum == getattr(signal, "SIGHUP", None):
        _silence_hung_up_terminal()
    raise Stopped(signum)


@contextmanager
def signals_stop_like_ctrl_c() -> Iterator[None]:
    """Within the block, SIGTERM and SIGHUP raise Stopped in the main thread (only it may
    install handlers); the earlier handlers come back afterwards."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    earlier = {each: signal.signal(each, _stop) for each in STOP_SIGNALS}
    try:
        yield
    finally:
        for each, handler in earlier.items():
            signal.signal(each, handler)


@dataclass
class Report:
    """What a run saved, for the summary printed at its end."""

    saved: list[Path] = field(default_factory=list)
    partial: list[Path] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    stability: list[tuple[str, StabilityResult]] = field(default_factory=list)

    def add(self, sink: ImageSink | VideoSink) -> None:
        (self.partial if sink.partial else self.saved).append(sink.path)

    def merge(self, others: list["Report"]) -> "Report":
        """One report of several processes' (torchrun)."""
        return Report(*[[item for other in others for item in getattr(other, name)]
                        for name in ("saved", "partial", "skipped", "stability")])

    def print(self) -> None:
        for path in self.partial:
            print(f"partial video (interrupted) saved to {path}")
        if len(self.saved) > 10:
            folders = sorted({str(p.parent) for p in self.saved})
            print(f"{len(self.saved)} stylised files saved under {', '.join(folders)}")
        else:
            for path in self.saved:
                print(f"saved {path}")
        for label, result in self.stability:
            print(result.line(label))


class ModelSwitch:
    """The processor a live source runs, switched by the keys n (next) and p (previous) in the
    window; called like a Processor."""

    NEXT, PREVIOUS = (ord("n"), ord("N")), (ord("p"), ord("P"))

    def __init__(self, processors: list[Processor], labels: list[str]):
        self.processors, self.labels, self.index = processors, labels, 0
        self.batch_size = 1
        self._told = False

    def __call__(self, batch: list[np.ndarray]) -> list[np.ndarray]:
        return self.processors[self.index](batch)

    @property
    def label(self) -> str | None:
        """What the window shows: the model, when there is a choice."""
        if len(self.processors) == 1:
            return None
        return f"{self.labels[self.index]} ({self.index + 1}/{len(self.processors)}, n/p)"

    def key(self, key: int | None) -> None:
        step = 1 if key in self.NEXT else -1 if key in self.PREVIOUS else 0
        if step and len(self.processors) == 1:
            if not self._told:
                print("note: n and p switch between models, and this run has one: give --model_path "
                      "several models or a folder of them", file=sys.stderr)
                self._told = True
        elif step:
            self.index = (self.index + step) % len(self.processors)


def load_models(paths: list[str], device: torch.device) -> tuple[list[str], list[torch.nn.Module]]:
    """The models --model_path names, loaded: files as given (a bad one is an error), folders'
    files that load (the others are skipped with a warning; a folder with none is an error)."""
    files, folders = find_models(paths)
    loaded: list[tuple[str, torch.nn.Module]] = []
    refused: list[str] = []
    for file in files:
        try:
            loaded.append((file, load_model(file, device)))
        except UserError as err:
            if file in paths:
                raise
            refused.append(f"{file} ({err})")
    if not loaded:
        fail(f"no loadable model in {', '.join(folders)}: {refused[0]}")
    for reason in refused:
        print(f"warning: skipped model {reason}", file=sys.stderr)
    return [file for file, _ in loaded], [model for _, model in loaded]


def write_sheet(sheet: Sheet, labels: list[str], max_size: int | None, report: Report) -> None:
    """The contact sheet of one image source: the input and each output that was saved."""
    cells = [("input", scale_within(np.asarray(load_image(sheet.source)), max_size))]
    cells += [(labels[job.model], np.asarray(load_image(job.output)))
              for job in sheet.parts if job.output is not None and job.output.exists()]
    if len(cells) > 2:
        report.saved.append(write_contact_sheet(sheet.output, cells))


def compile_pays(content_type: ContentType, jobs: list[Job], max_size: int | None,
                 device: torch.device, warm: Callable[[tuple[int, int]], bool] | None = None) -> bool:
    """What --compile auto means for these jobs: video files on a CPU with a compiler, holding
    config.COMPILE_AUTO_MIN_MEGAPIXEL_FRAMES in all (README, Stylization speed), or
    COMPILE_AUTO_WARM_MIN_MEGAPIXEL_FRAMES when warm((height, width)) says an earlier run
    compiled every video's frame size (stylization/compile_cache.py)."""
    if content_type != ContentType.VIDEO or not compiles_here(device):
        return False
    megapixels, all_warm = 0.0, warm is not None
    for job in jobs:
        try:
            with VideoSource(job.source, max_size) as source:
                megapixels += (source.frame_count or 0) * source.size[0] * source.size[1] / 1e6
                all_warm = all_warm and warm((source.size[1], source.size[0]))
        except UserError:
            continue  # reported when its turn comes
        if megapixels >= config.COMPILE_AUTO_MIN_MEGAPIXEL_FRAMES:
            return True  # no need to open the rest
    return all_warm and megapixels >= config.COMPILE_AUTO_WARM_MIN_MEGAPIXEL_FRAMES


def open_display(real_time: bool, save_output: bool) -> Display | None:
    if not real_time:
        return None
    if display_available():
        return Display()
    if not save_output:
        fail("no display available and --save_output is False: nothing would be shown or saved")
    print("warning: no display available; --real_time ignored, output is still saved",
          file=sys.stderr)
    return None


def open_sink(content_type: ContentType, path: Path, source: ContentSource,
              source_path: str) -> ImageSink | VideoSink:
    if content_type is ContentType.IMAGE:
        return ImageSink(path)
    # A video keeps its file's sound; a camera or stream is recorded without.
    audio = source_path if content_type is ContentType.VIDEO else None
    return VideoSink(path, source.fps, source.size, audio_from=audio)


@dataclass
class Outputs:
    """Where a run's frames go besides its sinks, the same for every job: the window, the
    report, the look applied to every frame, and whether flicker is measured."""
    content_type: ContentType
    max_size: int | None
    display: Display | None
    report: Report
    look: Look = field(default_factory=Look)
    stability: bool = False
    progress: bool = True  # progress bars (the first process only, under torchrun)
    target_fps: float | None = None  # live sources: pace the size to this rate


def stylize_frames(source: ContentSource, processor: Processor | ModelSwitch,
                   sink: ImageSink | VideoSink | None, out: Outputs, meter: WarpErrorMeter | None = None,
                   progress: bool = False) -> bool:
    """Stylise every frame of source into the sink, window and stability meter, with the look
    applied (the meter scores the output); False if the user stopped. A live source with
    --target_fps runs its network at the paced size (stylization/pacing.py)."""
    display, look = out.display, out.look
    pacer = SizePacer(out.target_fps, source.size) if source.live and out.target_fps else None
    network = pacer.wrap(processor) if pacer is not None else processor
    write = sink.write if sink is not None else None
    wait_ms = IMAGE_SHOW_MS if source.fps is None else 1
    show = (lambda frame, fps: display.show(frame, wait_ms, fps)) if display is not None else None
    if display is not None and (isinstance(processor, ModelSwitch) or pacer is not None):
        def show(frame: np.ndarray, fps: float | None) -> bool:
            labels = [processor.label if isinstance(processor, ModelSwitch) else None,
                      pacer.label if pacer is not None else None]
            keep_going = display.show(frame, wait_ms, fps, label=", ".join(part for part in labels if part) or None)
            if isinstance(processor, ModelSwitch):
                processor.key(display.last_key)
            return keep_going
    process = network
    finish = None if look.is_identity else look.start()
    if meter is not None or finish is not None:
        def process(batch: list[np.ndarray]) -> list[np.ndarray]:
            results = network(batch)
            if finish is not None:  # on this thread, in frame order, as the smoother needs
                results = [finish(frame, result) for frame, result in zip(batch, results)]
            if meter is not None:
                for frame, result in zip(batch, results):
                    meter.add(frame, result)
            return results
    if source.live:
        return stylize_live(source.frames(), process, write, show)
    with tqdm(total=source.frame_count, unit="frame", desc=source.label, disable=not progress) as bar:
        return stylize_stream(source.frames(), process, processor.batch_size, write, show,
                              on_batch=bar.update)


def run_job(job: Job, processor: Processor | ModelSwitch, out: Outputs, progress: bool) -> bool:
    """Stylise one source; False if the user asked to stop the whole run."""
    sink = None
    meter = WarpErrorMeter() if out.stability else None
    try:
        with create_source(out.content_type, job.source, out.max_size) as source, ExitStack() as stack:
            if job.output is not None:
                sink = stack.enter_context(open_sink(out.content_type, job.output, source, job.source))
            return stylize_frames(source, processor, sink, out, meter, progress)
    finally:
        # Also on Ctrl-C: the video sink has then saved what was done as a partial video.
        if sink is not None and sink.saved:
            out.report.add(sink)
        if meter is not None and meter.frames:
            out.report.stability.append((Path(job.source).name, meter.result()))


def run_jobs(jobs: list[Job], processors: list[Processor] | ModelSwitch, out: Outputs) -> None:
    """Each job with its model's processor (job.model indexes the list; a webcam's one job
    runs the ModelSwitch)."""
    batch = len(jobs) > 1
    for job in tqdm(jobs, unit="file", disable=not batch or not out.progress):
        processor = processors if isinstance(processors, ModelSwitch) else processors[job.model]
        try:
            keep_going = run_job(job, processor, out, progress=out.progress and not batch
                                 and out.content_type is not ContentType.IMAGE)
        except UserError as err:
            if not batch or isinstance(err, DiskFull):  # with a full disk the rest would fail too
                raise
            # One bad file should not cost the user the rest of a folder.
            tqdm.write(f"warning: skipped: {err}", file=sys.stderr)
            out.report.skipped.append(job.source)
            continue
        if not keep_going:
            print("stopped by the user", file=sys.stderr)
            return


def build_processors(args: StylizeSettings, models: list[torch.nn.Module], jobs: list[Job],
                     device: torch.device, notes: list[str]) -> list[Processor]:
    """One Processor per model, compiled where --compile (auto: compile_pays) says."""
    dtype = stylize_precision(args.precision, device)
    batch_size = args.batch_size or default_batch_size(device)
    compiled, cached_only = args.compile, False
    if compiled == "auto" and ContentType(args.content_type) is ContentType.WEBCAM:
        # A camera cannot wait a minute for a build, but a package an earlier --compile True
        # run left for its frame size loads in a second: 16.7 -> 19.7 frames/s on 2 AVX2
        # cores, 21.8 -> 30.0 with native bf16 (docs/speed.md).
        compiled = cached_only = compiles_here(device)
    elif compiled == "auto":
        ids = [compile_cache.model_id(model) for model in models]
        compiled = compile_pays(ContentType(args.content_type), jobs, args.max_size, device,
                                warm=lambda size: all(compile_cache.is_warm(
                                    compile_cache.compile_key(model, dtype, device, size, batch_size))
                                    for model in ids))
        if compiled:
            notes.append("compiling the network for these videos (--compile auto): the first "
                         "frames wait for the compiler")
    return [build_processor(model, device, args.precision, batch_size, args.tile_budget, compiled, cached_only)
            for model in models]


def real_time_hint(content_type: ContentType, device: torch.device, models: list[torch.nn.Module]) -> str | None:
    """Where a webcam would run float32 on a CPU (no native bf16) without a tiny-network model: a
    line naming the model that keeps real time there (docs/speed.md: held to AVX2, 27.6 frames/s
    against the fast network's 13.5 at 640x360)."""
    if content_type is not ContentType.WEBCAM or device.type != "cpu" or has_native_bf16_cpu():
        return None
    if any(config.network_name(getattr(model, "cfg", None)) == "tiny" for model in models):
        return None
    return ("note: this CPU has no native bf16, so the network runs in float32; for real time here use "
            "a tiny-network model (trained_models/*_tiny.pth.tar, or train.py --network tiny): "
            "about twice the fast models' frames/s")


def run(args: StylizeSettings) -> int:
    """Stylise what args asks for; the exit status (0, or the signal's when stopped: the
    partial outputs are saved and reported)."""
    content_type = ContentType(args.content_type)
    share = shard.join()
    if share.world_size > 1 and content_type is ContentType.WEBCAM:
        fail("torchrun shares files among processes: use it with a folder or pattern of images or "
             "videos, not a webcam")
    output_dir = Path(args.output_dir) if args.save_output else None
    inputs = find_inputs(content_type, args.source, output_dir)
    device = share.device(resolve_device(args.device))
    keep_freed_memory()
    model_paths, models = load_models(args.model_path, device)
    labels = model_labels(model_paths)
    # Every process plans every output, so that all pick the same names; each then does its
    # share of the sources (with all their models, so that a contact sheet's parts are its own).
    jobs, notes, sheets = plan_outputs(inputs, content_type, output_dir, args.output_name,
                                       model_paths, args.overwrite)
    mine = set(share.take(inputs.sources))
    all_jobs, jobs = jobs, [job for job in jobs if job.source in mine]
    sheets = [sheet for sheet in sheets if sheet.source in mine]
    processors = build_processors(args, models, jobs, device, notes)
    hint = real_time_hint(content_type, device, models)
    if hint:
        notes.append(hint)
    if share.world_size > 1:
        notes.append(f"{share.world_size} processes share the {len(inputs.sources)} files")
    if share.is_main:
        for note in notes:
            print(note)
    share.barrier()  # names are planned everywhere before anything is written
    real_time = args.real_time
    if share.world_size > 1 and real_time:
        print("warning: --real_time is ignored under torchrun; output is still saved", file=sys.stderr)
        real_time = False
        if not args.save_output:
            fail("under torchrun nothing can be shown and --save_output is False: nothing would be saved")
    out = Outputs(content_type, args.max_size, open_display(real_time, args.save_output), Report(),
                  Look(args.strength, args.preserve_color, args.smooth), args.report_stability, share.is_main,
                  args.target_fps)
    work = ModelSwitch(processors, labels) if content_type is ContentType.WEBCAM else processors
    try:
        with signals_stop_like_ctrl_c():
            run_jobs(jobs, work, out)
            for sheet in sheets:
                write_sheet(sheet, labels, args.max_size, out.report)
    except KeyboardInterrupt as stop:  # Ctrl-C, SIGTERM or SIGHUP
        out.report.print()
        print(f"stopped by {stop}" if isinstance(stop, Stopped) else "interrupted", file=sys.stderr)
        return stop.exit_status if isinstance(stop, Stopped) else EXIT_INTERRUPTED
    except DiskFull:
        out.report.print()  # what was saved before the disk filled
        raise
    finally:
        if out.display is not None:
            out.display.close()
    report = out.report.merge(share.gather(out.report))
    report.print()  # on the first process only: the others' stdout goes nowhere
    if report.skipped:
        fail(f"{len(report.skipped)} of {len(all_jobs)} files could not be stylised (see the warnings above)")
    return 0

"""Turns RGB uint8 frames into stylised RGB uint8 frames with the stylizing network."""
from __future__ import annotations

import copy
import multiprocessing
import sys
import threading
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
from tqdm import tqdm

import config
from common.devices import find_compiler
from common.errors import fail, first_line
from common.images import batch_to_frames, frames_to_batch
from common.precision import has_native_bf16_cpu, resolve_precision
from network.fast_inference import for_inference
from network.tiling import TiledNetwork, tileable
from stylization import compile_cache, precision_guard


def stylize_precision(name: str, device: torch.device) -> torch.dtype | None:
    """The dtype of weights and activations for --precision on device (None: float32).

    auto follows config.STYLIZE_AUTO_PRECISION, which holds a reduced precision only where its
    output was measured close enough to float32's; explicit names go through
    common.precision.resolve_precision, so an unusable choice warns and falls back as in training.
    """
    if name == "auto":
        kind = device.type if device.type == "cuda" else (
            "cpu_native_bf16" if has_native_bf16_cpu() else "cpu")
        name = config.STYLIZE_AUTO_PRECISION[kind]
    return resolve_precision(name, device)


def default_batch_size(device: torch.device) -> int:
    return config.STYLIZE_BATCH_SIZE.get(device.type, 1)


def is_out_of_memory(err: BaseException) -> bool:
    """Whether err is a device or host allocation failure: CUDA's OutOfMemoryError, or the
    RuntimeError of the CPU allocator ("DefaultCPUAllocator: can't allocate memory")."""
    if isinstance(err, torch.OutOfMemoryError):
        return True
    message = str(err)
    return isinstance(err, RuntimeError) and ("out of memory" in message
                                              or "can't allocate memory" in message)


def _advance(bar: tqdm, done: int, total: int) -> None:
    bar.total = total
    bar.update(done - bar.n)


def _size(frame: np.ndarray) -> str:
    return f"{frame.shape[1]}x{frame.shape[0]}"


class FramesToFrames(torch.nn.Module):
    """The whole step a compile covers: RGB uint8 frames N x H x W x 3 in and out, so that the
    conversions fuse with the first and last layers."""

    def __init__(self, model: torch.nn.Module, dtype: torch.dtype, memory_format: torch.memory_format):
        super().__init__()
        self.model, self.dtype, self.memory_format = model, dtype, memory_format

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        batch = frames_to_batch(frames, self.dtype).contiguous(memory_format=self.memory_format)
        return batch_to_frames(self.model(batch))


@dataclass(frozen=True)
class RunOptions:
    """How a Processor runs its network.

    dtype: weights and activations (None: float32; measured faster than autocast, which converts
    around every layer). channels_last: NHWC memory for the network's input. compile: run
    FramesToFrames compiled ahead of time by AOTInductor, one package per batch shape kept across
    runs (stylization/compile_cache.py); the first batch of a new shape waits for its build (a
    failed build is one note, and the run goes on eager). cached_only (with compile): only
    shapes whose package an earlier run left are compiled, by loading it; others run eager and
    never wait for a build (--compile auto on a webcam). batch_size: how many frames a video
    pipeline hands over per call. guard_precision (--precision auto): the first batch also runs
    in float32, and a reduced dtype that strays too far from it is dropped for float32
    (stylization/precision_guard.py). tile_budget: frames of more megapixels run on tiles
    (None: no limit).
    """
    dtype: torch.dtype | None = None
    channels_last: bool = False
    compile: bool = False
    cached_only: bool = False
    batch_size: int = 1
    guard_precision: bool = False
    tile_budget: float | None = None


class Processor:
    """Runs the network on batches of same-sized frames; one code path for every device.

    The network runs as network/fast_inference.py rewrites it, as RunOptions say. After a
    guarded first batch, `precision_difference` holds its difference from float32.

    Memory: frames of more than the tile budget run on tiles
    (network/tiling.py). A batch that runs out of memory is retried in halves, and a single
    frame that does is tiled, in ever smaller tiles; each step is said in one line and kept
    for the batches that follow.
    """

    def __init__(self, model: torch.nn.Module, device: torch.device | str,
                 options: RunOptions = RunOptions()):
        self.device = torch.device(device)
        self.tile_pixels = options.tile_budget * 1e6 if options.tile_budget else None
        self._source_model = model  # the plain layers, for the tiles' receptive radius
        # From the weights as given, before .to(dtype) below rounds them.
        self._model_id = compile_cache.model_id(model) if options.compile else None
        self._tiler: TiledNetwork | None = None
        self._max_batch: int | None = None
        self._told: set[str] = set()
        self.dtype = options.dtype or torch.float32
        self.batch_size = options.batch_size
        self.memory_format = (torch.channels_last if options.channels_last
                              else torch.contiguous_format)
        self.cached_only = options.cached_only
        # The compiler's kernels where anything may be built; eager ones where only cached
        # packages are loaded (they hold their own) and the other shapes run eager.
        fast = for_inference(model, compiled=options.compile and not options.cached_only)
        self._reference = None  # the float32 model while the precision is still to be checked
        if options.guard_precision and self.dtype != torch.float32:
            # Copied before .to(dtype), which converts a module in place; a model without
            # parameters (ONNX) stays float32 anyway, and may not be copyable.
            has_weights = next(fast.parameters(), None) is not None
            self._reference = (copy.deepcopy(fast) if has_weights else fast).to(self.device).eval()
        self.precision_difference: float | None = None
        # An ONNX model has no parameters: .to(dtype) leaves it in its own float32.
        self.model = fast.to(self.device, self.dtype).eval()
        self._eager = FramesToFrames(self.model, self.dtype, self.memory_format)
        self.compiled = options.compile and tileable(model)  # an ONNX model runs in ONNX Runtime as it is
        # One compiled step per batch shape, each loaded from (or first built into) a package of
        # stylization/compile_cache.py; `built` tells whether any had to be built.
        self._steps: dict[tuple[int, ...], compile_cache.Step] = {}
        # Frames may come from several threads at once (the page's live camera): a call that
        # still has to settle the precision or build a shape's step runs alone.
        self._first_calls = threading.Lock()
        self.built = False
        self._full_batch: dict[tuple[int, ...], int] = {}

    def compile_for(self, height: int, width: int) -> bool:
        """Builds (or loads) the compiled package for single frames of this size, the one a run
        with compile=True builds, and runs such frames with it from then on; frames from other
        threads go on meanwhile. For the page's camera, whose processor otherwise only loads
        packages an earlier run left (cached_only). Returns whether it had to be built."""
        if not self.compiled:
            raise ValueError("this model runs without compiling here (a C++ compiler and a "
                             "PyTorch model are needed)")
        if self._reference is not None:
            raise ValueError("the precision is not settled yet: let the camera run on a picture first")
        key = compile_cache.compile_key(self._model_id, self.dtype, self.device, (height, width), 1)
        built = not compile_cache.is_warm(key)
        if built:
            # In a process of its own: tracing the network for the compiler swaps PyTorch's
            # module calls process-wide, which broke frames other threads ran meanwhile.
            build_elsewhere(build_package, self._source_model, self.dtype, self.memory_format, self.device,
                            (height, width), key)
        example = torch.zeros(1, height, width, 3, dtype=torch.uint8, device=self.device)
        step, _ = compile_cache.compiled_step(compiled_graph(self._source_model, self.dtype, self.memory_format,
                                                             self.device), example, key)
        self._steps[(1, height, width, 3)] = step
        self.built = self.built or built
        return built

    def runs_compiled(self, height: int, width: int) -> bool:
        """Whether single frames of this size run as a compiled package (so far)."""
        step = self._steps.get((1, height, width, 3))
        return step is not None and step is not self._eager

    def _compiled(self, frames: torch.Tensor) -> torch.Tensor:
        shape = tuple(frames.shape)
        if shape not in self._steps:
            with self._first_calls:
                return self._first_compiled(frames, shape)
        return self._steps[shape](frames)

    def _first_compiled(self, frames: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
        if shape not in self._steps:  # another thread may have built it meanwhile
            key = compile_cache.compile_key(self._model_id, self.dtype, self.device, shape[1:3],
                                            shape[0])
            if self.cached_only and not compile_cache.is_warm(key):
                self._steps[shape] = self._eager
                return self._eager(frames)
            try:
                self._steps[shape], built = compile_cache.compiled_step(self._eager, frames, key)
            except Exception as err:  # noqa: BLE001 - the compilers raise many types
                self._tell("compile", f"note: compiling the network failed ({first_line(err)[:200]}); "
                           "continuing without --compile")
                self.compiled = False
                return self._eager(frames)
            self.built = self.built or built
        return self._steps[shape](frames)

    def _settle_precision(self, frames: torch.Tensor) -> torch.Tensor:
        """The first batch, eager, in dtype and in float32; keeps the dtype only if they agree.
        A nearly flat batch (a camera's first frames, a fade from black) runs in float32 and
        leaves the judgement to a later one: instance norms over almost no contrast magnify
        any rounding, so it would tell nothing of the precision on real pictures."""
        if precision_guard.too_flat(frames):
            return FramesToFrames(self._reference, torch.float32, self.memory_format)(frames)
        reference_model, self._reference = self._reference, None
        reduced = self._eager(frames)
        reference_step = FramesToFrames(reference_model, torch.float32, self.memory_format)
        reference = reference_step(frames)
        self.precision_difference = precision_guard.mean_difference(reference, reduced)
        if precision_guard.keeps_reduced(self.precision_difference):
            return reduced
        # Before the first compiled call, so that the float32 model is the one compiled.
        precision_guard.report(precision_guard.fallback_note(self.dtype, self.precision_difference))
        self.model, self.dtype, self._eager = reference_model, torch.float32, reference_step
        return reference

    def __call__(self, frames: Sequence[np.ndarray]) -> list[np.ndarray]:
        if not frames:
            return []
        shapes = {frame.shape for frame in frames}
        if len(shapes) > 1:
            raise ValueError(f"a batch needs frames of one size, got {sorted(shapes)}")
        height, width = frames[0].shape[:2]
        if self.tile_pixels is not None and height * width > self.tile_pixels:
            if tileable(self.model):
                return [self._tiled(frame) for frame in frames]
            self._tell(f"onnx {height}x{width}",
                       f"note: {_size(frames[0])} frames exceed --tile_budget, but an ONNX model "
                       "cannot run on tiles (its instance norms measure each tile on its own): "
                       "they run whole; --max_size or the model's .pth.tar bounds memory")
        results: list[np.ndarray] = []
        size = min(len(frames), self._max_batch or len(frames))
        while len(results) < len(frames):
            chunk = frames[len(results):len(results) + size]
            try:
                results += self._whole(chunk)
                continue
            except RuntimeError as err:
                if not is_out_of_memory(err):
                    raise
            self._free()
            if size > 1:
                size = self._max_batch = size // 2
                self._full_batch.clear()  # a compiled step is traced again at the new size
                self._tell(f"batch {size}", f"note: out of memory on a batch of {size * 2} "
                           f"{_size(chunk[0])} frames; continuing with batches of {size}")
            else:
                if not tileable(self.model):
                    fail(f"out of memory on one {_size(chunk[0])} frame, and an ONNX model cannot "
                         "run on tiles: use --max_size, or the model's .pth.tar")
                self.tile_pixels = height * width / 2
                self._tell(f"tile {height}x{width}", f"note: out of memory on one {_size(chunk[0])} "
                           "frame; stylising such frames in tiles (--tile_budget "
                           f"{self.tile_pixels / 1e6:.3g} megapixels)")
                results += [self._tiled(frame) for frame in chunk]
        return results

    def _tell(self, key: str, line: str) -> None:
        if key not in self._told:
            self._told.add(key)
            print(line, file=sys.stderr)

    def _free(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.empty_cache()  # what the failed batch held, for the retry

    def _tiled(self, frame: np.ndarray) -> np.ndarray:
        """One frame on tiles of self.tile_pixels, smaller ones while memory runs out."""
        if self._tiler is None:
            self._tiler = TiledNetwork(self.model, self._source_model, self.device, self.dtype)
        while True:
            plan = self._tiler.plan(*frame.shape[:2], self.tile_pixels)
            self._tell(f"tiles {frame.shape} {self.tile_pixels}",
                       f"note: {_size(frame)} frames are above --tile_budget "
                       f"{self.tile_pixels / 1e6:.3g} megapixels: stylising them in {plan.count} "
                       "overlapping tiles with the whole frame's instance-norm statistics "
                       f"({self._tiler.passes()} passes over the tiles)")
            try:
                # A 48-megapixel photo takes a minute or more on a CPU: a bar over the tiles'
                # passes says how long (tqdm draws it only on a terminal: disable=None).
                with tqdm(unit="tile", desc="tiles", leave=False, disable=None) as bar:
                    return self._tiler(frame, self.tile_pixels, lambda done, total: _advance(bar, done, total))
            except RuntimeError as err:
                if not is_out_of_memory(err):
                    raise
            self._free()
            smallest = self._tiler.min_side ** 2
            if self.tile_pixels <= smallest:
                fail(f"out of memory even on the smallest tiles of a {_size(frame)} frame: "
                     "use --max_size, or a device with more memory")
            self.tile_pixels = max(smallest, self.tile_pixels / 2)
            self._tell(f"smaller {self.tile_pixels}", "note: out of memory on a tile; tiles of "
                       f"{self.tile_pixels / 1e6:.3g} megapixels from here on")

    def _whole(self, frames: Sequence[np.ndarray]) -> list[np.ndarray]:
        count = len(frames)
        if self.compiled:
            # Another batch shape would compile again (a minute on a CPU): fill a video's
            # last, short batch up to the size seen before and drop the extra results.
            full = self._full_batch.setdefault(frames[0].shape, count)
            frames = [*frames, *[frames[-1]] * (full - count)]
        with torch.inference_mode():
            # uint8 crosses to the device and back (a quarter of float32's bytes).
            batch = torch.from_numpy(np.stack(frames)).to(self.device)
            result = None
            if self._reference is not None:
                with self._first_calls:
                    result = self._settle_precision(batch) if self._reference is not None else None
            if result is None:
                result = (self._compiled if self.compiled else self._eager)(batch)
            result = result.cpu().numpy()
        return list(result[:count])


def compiled_graph(model: torch.nn.Module, dtype: torch.dtype, memory_format: torch.memory_format,
                   device: torch.device) -> FramesToFrames:
    """The step a Processor with compile=True compiles: the compiler's rewrite of the model."""
    return FramesToFrames(for_inference(model, compiled=True).to(device, dtype).eval(), dtype, memory_format)


def build_package(model: torch.nn.Module, dtype: torch.dtype, memory_format: torch.memory_format,
                  device: torch.device, size: tuple[int, int], key: str) -> None:
    """Builds compiled_graph's package for single frames of size (height, width) under key."""
    example = torch.zeros(1, *size, 3, dtype=torch.uint8, device=device)
    compile_cache.compiled_step(compiled_graph(model, dtype, memory_format, device), example, key)


def build_elsewhere(build: Callable[..., None], *args) -> None:
    """Runs build(*args) in a new Python process (spawned: nothing of this one's threads or
    PyTorch state comes along) and waits for it; its exception, if any, is raised here."""
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as child:
        child.submit(build, *args).result()


def compiles_here(device: torch.device) -> bool:
    """Whether --compile auto may compile at all: on a CPU (GPUs not measured) with a C++
    compiler for Inductor's kernels."""
    return device.type == "cpu" and find_compiler() is not None


def build_processor(model: torch.nn.Module, device: torch.device, precision: str, batch_size: int | None,
                    tile_budget: float | None, compile: bool = False, cached_only: bool = False) -> Processor:
    """The Processor stylize.py runs a model with: --precision by name (auto: with its guard),
    --batch_size (None: the device's), --tile_budget (0 or None: never tile), --compile (and
    cached_only: compiled only from packages already built)."""
    return Processor(model, device, RunOptions(
        dtype=stylize_precision(precision, device), channels_last=config.STYLIZE_CHANNELS_LAST,
        compile=compile, cached_only=cached_only, batch_size=batch_size or default_batch_size(device),
        guard_precision=precision == "auto", tile_budget=tile_budget or None))

"""Compiled networks kept across runs, so that short clips get compiled speed too.

A compile of the stylizing network costs tens of seconds on a 2-core CPU, most of it building
C++ kernels (docs/stylization_speed.md). Inductor's FX graph cache keeps those, but a warm
torch.compile still traces, freezes and loads the graph at every start. So a compiled step is
built ahead of time instead: torch.export of the whole step from uint8 frames to uint8 frames,
compiled by AOTInductor with the weights frozen into it, stored as one package file per compile
key; a later run of the same key loads the package and runs.

The key covers everything the package depends on: the model's layout and weights (they are
constants of the package: another model, or the same file retrained, gets its own), precision,
device, frame size, frames per call, torch version and the code that builds the graph. It is
known before anything is compiled, so --compile auto can ask whether a compile would be warm.
A package that cannot be loaded (cut short, another build of torch) is built again.

Inductor's own caches go to the same folder (use_persistent_cache), so that building the package
of another model of the same sizes reuses the C++ kernels already built.
"""
from __future__ import annotations

import ctypes
import hashlib
import json
import logging
import os
import tempfile
import weakref
import zipfile
from pathlib import Path
from typing import Callable

import torch
from torch import nn

import config
from common.files import atomic_write

ROOT = Path(__file__).resolve().parents[1]
# The code that shapes the compiled graph: a change there makes a new graph, so packages built
# before it are not used.
GRAPH_SOURCES = ("network/style_network.py", "network/fast_inference.py", "stylization/processor.py",
                 "utils.py")
PACKAGE_FOLDER = "video-style-transfer-packages"

Step = Callable[[torch.Tensor], torch.Tensor]


def cache_dir() -> Path:
    """$TORCHINDUCTOR_CACHE_DIR when set, else config.COMPILE_CACHE_SUBDIR under the user's
    cache folder ($XDG_CACHE_HOME, else ~/.cache)."""
    explicit = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / config.COMPILE_CACHE_SUBDIR


def use_persistent_cache() -> Path | None:
    """Make Inductor keep what it builds in cache_dir(); call before the first compile.
    None when that folder cannot be created (Inductor then keeps its default)."""
    folder = cache_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(folder)  # Inductor reads it at each lookup
    return folder


def _code_version() -> str:
    digest = hashlib.sha256()
    for name in GRAPH_SOURCES:
        path = ROOT / name
        digest.update(path.read_bytes() if path.is_file() else name.encode())
    return digest.hexdigest()[:16]


def model_id(model: nn.Module) -> str:
    """A hash of the model's class, layout and weights (float32 bytes); take it before the model
    is converted to a reduced precision, which rounds its weights in place."""
    digest = hashlib.sha256(type(model).__qualname__.encode())
    for name, value in model.state_dict().items():
        digest.update(f"{name}{list(value.shape)}".encode())
        digest.update(value.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()


def compile_key(model: str, dtype: torch.dtype | None, device: torch.device,
                frame_size: tuple[int, int], batch: int) -> str:
    """What a compiled package depends on, hashed: the model (its model_id), precision, device,
    frame size (height, width), frames per call, torch version, the inference settings and the
    code that builds the graph."""
    description = {
        "model": model, "dtype": str(dtype or torch.float32), "device": device.type,
        "frame": list(frame_size), "batch": batch, "torch": torch.__version__,
        "head_phases": config.HEAD_PHASES, "channels_last": config.STYLIZE_CHANNELS_LAST,
        "code": _code_version(),
    }
    return hashlib.sha256(json.dumps(description, sort_keys=True).encode()).hexdigest()


def package_path(key: str) -> Path:
    return cache_dir() / PACKAGE_FOLDER / f"{key}.pt2"


def is_warm(key: str) -> bool:
    """Whether an earlier run left this key's package (see the module's docstring)."""
    return package_path(key).is_file()


def _build(step: nn.Module, example: torch.Tensor, path: Path) -> None:
    # A CUDA build of torch on a machine without CUDA says so while compiling: noise here.
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    with torch.inference_mode():
        program = torch.export.export(step, (example,))
    path.parent.mkdir(parents=True, exist_ok=True)
    # Freezing folds the weights into the kernels (prepacked convolution weights on the CPU).
    atomic_write(path, lambda tmp: torch._inductor.aoti_compile_and_package(
        program, package_path=tmp, inductor_configs={"freezing": True}))


def _load(path: Path) -> Step:
    """The package's step. A CPU package runs through AOTInductor's C interface, which lets go of
    Python's lock while the network runs, so that frames from several threads run side by side
    (the page's live camera); torch's own loaders hold the lock for the whole run. Other
    packages (a GPU's) run through torch's loader in torch._C. Neither imports torch._inductor
    as torch._inductor.aoti_load_package does, which imports Dynamo too: 1.3 s of every warm
    start on a 2-core CPU (docs/stylization_speed.md); builds of torch whose loader takes other
    arguments go through aoti_load_package."""
    with zipfile.ZipFile(path) as archive:
        libraries = [name for name in archive.namelist() if name.endswith(".wrapper.so")]
        metadata = [name for name in archive.namelist() if name.endswith(".wrapper_metadata.json")]
        on_cpu = (len(libraries) == len(metadata) == 1
                  and json.loads(archive.read(metadata[0])).get("AOTI_DEVICE_KEY") == "cpu")
        if on_cpu:
            return PackageStep(archive, libraries[0])
    try:
        loader = torch._C._aoti.AOTIModelPackageLoader(str(path), "model", False, 1, -1)
    except (AttributeError, TypeError):
        return torch._inductor.aoti_load_package(str(path))
    return lambda frames: loader.boxed_run([frames])[0]


class PackageStep:
    """A CPU package's step through the C interface of torch/csrc/inductor/aoti_runtime/interface.h
    (the one AOTInductor keeps stable for deployment), called by ctypes, which releases Python's
    lock during the call. The container holds config.PACKAGE_RUNS_AT_ONCE copies of the model's
    working state; the weights are shared."""

    def __init__(self, archive: zipfile.ZipFile, library: str):
        # Loaded from a temporary copy, deleted at once: the loaded library stays mapped.
        with tempfile.TemporaryDirectory() as folder:
            self._lib = ctypes.CDLL(archive.extract(library, folder))
        c_size, pointer = ctypes.c_size_t, ctypes.c_void_p
        self._lib.AOTInductorModelContainerRun.argtypes = [
            pointer, ctypes.POINTER(pointer), c_size, ctypes.POINTER(pointer), c_size, pointer, pointer]
        self._handle = pointer()
        self._check(self._lib.AOTInductorModelContainerCreateWithDevice(
            ctypes.byref(self._handle), c_size(config.PACKAGE_RUNS_AT_ONCE), b"cpu", None))
        weakref.finalize(self, self._lib.AOTInductorModelContainerDelete, self._handle)
        counts = c_size(), c_size()
        self._check(self._lib.AOTInductorModelContainerGetNumInputs(self._handle, ctypes.byref(counts[0])))
        self._check(self._lib.AOTInductorModelContainerGetNumOutputs(self._handle, ctypes.byref(counts[1])))
        if (counts[0].value, counts[1].value) != (1, 1):
            raise RuntimeError(f"a package of {counts[0].value} inputs and {counts[1].value} outputs, not 1 and 1")

    def __call__(self, frames: torch.Tensor) -> torch.Tensor:
        # The interface takes tensor handles: new ones for the input, which the run takes over,
        # and the output's, which the returned tensor takes over.
        (frames_handle,) = torch._C._aoti.unsafe_alloc_void_ptrs_from_tensors([frames])
        inputs = (ctypes.c_void_p * 1)(_capsule_pointer(frames_handle, None))
        outputs = (ctypes.c_void_p * 1)()
        self._check(self._lib.AOTInductorModelContainerRun(self._handle, inputs, 1, outputs, 1, None, None))
        return torch._C._aoti.alloc_tensors_by_stealing_from_void_ptrs(
            [_new_capsule(outputs[0], None, None)])[0]

    def _check(self, error: int) -> None:
        if error:
            message = ctypes.c_char_p()
            self._lib.AOTInductorGetLastError(ctypes.byref(message))
            raise RuntimeError(f"the compiled package failed: {(message.value or b'').decode(errors='replace')}")


_capsule_pointer = ctypes.pythonapi.PyCapsule_GetPointer
_capsule_pointer.restype, _capsule_pointer.argtypes = ctypes.c_void_p, [ctypes.py_object, ctypes.c_char_p]
_new_capsule = ctypes.pythonapi.PyCapsule_New
_new_capsule.restype, _new_capsule.argtypes = ctypes.py_object, [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p]


def compiled_step(step: nn.Module, example: torch.Tensor, key: str) -> tuple[Step, bool]:
    """(The compiled step for inputs shaped like example, whether it had to be built): loaded
    from key's package, or built into it first."""
    path = package_path(key)
    built = False
    if not is_warm(key):
        use_persistent_cache()
        _build(step, example, path)
        built = True
    try:
        return _load(path), built
    except Exception:  # noqa: BLE001 - a damaged or foreign package: build it again, once
        if built:
            raise
        _build(step, example, path)
        return _load(path), True

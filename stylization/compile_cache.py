"""Compiled networks kept across runs, so that short clips get compiled speed too.

A cold torch.compile of the stylizing network costs 7-14 s on a 2-core CPU, most of it
building C++ kernels. Inductor can keep what it built on disk: its FX graph cache stores the
compiled graph under a key of the graph, the torch version and the compile options, and the C++
kernels it loads. The default folder is under /tmp (lost at reboot); use_persistent_cache points
it at the user's cache instead (config.COMPILE_CACHE_SUBDIR, or $TORCHINDUCTOR_CACHE_DIR when
set). With freezing, weights become constants of the graph, but Inductor keys them by shape and
dtype, not value, and binds each run's own weights: another model of the same sizes gets the
cached kernels with its own weights (tests/test_compile_cache.py checks its outputs).

Before anything is compiled, --compile auto needs to know whether the compile will be warm.
Inductor's key depends on the traced graph, which does not exist yet, so this module keeps its
own small marker per compiled shape (network layout, precision, frame size, batch, torch
version, the code of the network and its rewrites), written after a compiled run. A marker
that is wrong costs one slow start, never a wrong result: Inductor's own key decides what is
reused.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch
from torch import nn

import config
from utils import atomic_write

ROOT = Path(__file__).resolve().parents[1]
# The code that shapes the compiled graph: a change there makes a new graph, so markers written
# before it no longer promise a warm compile.
GRAPH_SOURCES = ("network/style_network.py", "network/fast_inference.py", "stylization/processor.py",
                 "utils.py")
MARKER_FOLDER = "video-style-transfer-warm"


def cache_dir() -> Path:
    """$TORCHINDUCTOR_CACHE_DIR when set, else config.COMPILE_CACHE_SUBDIR under the user's
    cache folder ($XDG_CACHE_HOME, else ~/.cache)."""
    explicit = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / config.COMPILE_CACHE_SUBDIR


def use_persistent_cache() -> Path | None:
    """Make Inductor keep compiled graphs in cache_dir(); call before the first compile.
    None when that folder cannot be created (Inductor then keeps its default)."""
    folder = cache_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(folder)  # Inductor reads it at each lookup
    if "TORCHINDUCTOR_FX_GRAPH_CACHE" not in os.environ:  # a user's explicit choice stands
        import torch._inductor.config as inductor_config

        inductor_config.fx_graph_cache = True
    return folder


def _code_version() -> str:
    digest = hashlib.sha256()
    for name in GRAPH_SOURCES:
        path = ROOT / name
        digest.update(path.read_bytes() if path.is_file() else name.encode())
    return digest.hexdigest()[:16]


def shape_key(model: nn.Module, dtype: torch.dtype | None, device: torch.device,
              frame_size: tuple[int, int], batch: int) -> str:
    """What a compiled graph of this model depends on, hashed: its layout (class and the
    shapes of its weights, not their values), precision, device, frame size (height, width),
    frames per call, torch version, the inference settings and the code that builds the graph."""
    layout = [(name, list(value.shape)) for name, value in model.state_dict().items()]
    description = {
        "model": type(model).__qualname__, "layout": layout, "dtype": str(dtype or torch.float32),
        "device": device.type, "frame": list(frame_size), "batch": batch, "torch": torch.__version__,
        "head_phases": config.HEAD_PHASES, "channels_last": config.STYLIZE_CHANNELS_LAST,
        "code": _code_version(),
    }
    return hashlib.sha256(json.dumps(description, sort_keys=True).encode()).hexdigest()


def marker(key: str) -> Path:
    return cache_dir() / MARKER_FOLDER / key


def is_warm(key: str) -> bool:
    """Whether a compiled run has stored this shape's graph (see the module's docstring)."""
    return marker(key).is_file()


def remember(keys: list[str]) -> None:
    """Mark these shapes as compiled; a cache folder that cannot be written is no error."""
    for key in keys:
        try:
            atomic_write(marker(key), lambda tmp: Path(tmp).write_text(torch.__version__))
        except OSError:
            return

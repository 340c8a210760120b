"""Checkpoint files: names, safe reading, atomic writing, and the slim stylisation copy."""
from __future__ import annotations

import io
from pathlib import Path

import torch

import config
from common.errors import fail
from common.files import atomic_write, existing_file


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

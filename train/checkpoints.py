"""Training checkpoints: where a run starts (resumed, from another model's weights, or fresh),
which files a run has written, and the rolling saves.

A run of model_name writes <stem>_step<N>.pth.tar every --save_freq steps (the newest
config.KEEP_TEMP_CHECKPOINTS kept), <stem>_epoch<E>.pth.tar at each epoch's end, and
model_name itself at each epoch's end, at the end of a --minutes budget and when stopped.
"""
from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

import config
from common.errors import fail, UserError
from common.model_files import model_stem, read_checkpoint, save_checkpoint
from network.formats import STALE_SUFFIXES, recognise

Resumed = tuple[str, dict]  # (path, checkpoint) of the checkpoint a run continues


@dataclass
class Position:
    """Where training stands: epochs completed, batches done in the current epoch, total steps."""
    epoch: int = 0
    batch: int = 0
    step: int = 0


def network_config(choice: str | None, resumed: dict | None) -> config.NetworkConfig:
    """The network sizes to train: a resumed checkpoint's own (an explicit --network must then
    agree with them), else the named size (None: "default")."""
    if resumed is None:
        return config.NETWORK_SIZES[choice or "default"]
    sizes = config.NetworkConfig.from_dict(resumed["network"])
    if choice is not None and config.NETWORK_SIZES[choice] != sizes:
        fail(f"--network {choice} differs from the network of the checkpoint being resumed "
             f"({config.network_name(sizes) or sizes}): leave --network out to continue it, or "
             "choose another --model_name to train a new one")
    return sizes


def checkpoint_files(model_dir: Path, model_name: str, kinds: str = "step|epoch") -> list[Path]:
    """The run's rolling (<stem>_stepN) and per-epoch (<stem>_epochN) checkpoints, sorted."""
    pattern = re.compile(rf"^{re.escape(model_stem(model_name))}_({kinds})\d+\.pth\.tar$")
    return sorted(p for p in model_dir.glob("*.pth.tar") if pattern.match(p.name))


def existing_checkpoints(model_dir: Path, model_name: str) -> list[Path]:
    main_file = model_dir / model_name
    return checkpoint_files(model_dir, model_name) + ([main_file] if main_file.is_file() else [])


def newest_checkpoint(paths: list[Path]) -> Resumed | None:
    """The checkpoint with the most steps among those that load. A damaged one (a truncated
    file, a disk fault) is skipped with a warning naming it, so that one bad file does not
    cost the run; only when every one is damaged is that an error."""
    best, damaged = None, []
    for path in paths:
        try:
            checkpoint = read_checkpoint(path)
        except UserError as err:
            damaged.append(str(err))
            warnings.warn(f"skipping a damaged checkpoint: {err}", stacklevel=1)
            continue
        if best is None or checkpoint.get("step", 0) > best[1].get("step", 0):
            best = (str(path), checkpoint)
    if best is None and damaged:
        fail(f"none of the {len(paths)} checkpoint(s) in {paths[0].parent} loads ({damaged[0]}): "
             "restore one, or start afresh with --load_model False and another --model_name")
    return best


def choose_start(model_dir: Path, model_name: str, load_model: bool, save_model: bool) -> Resumed | None:
    """(path, checkpoint) to resume from, or None for a fresh run. A fresh run never starts
    over checkpoints of the same model (it would overwrite them)."""
    earlier = existing_checkpoints(model_dir, model_name) if model_dir.is_dir() else []
    if not load_model and earlier and save_model:
        fail(f"{model_dir} already holds checkpoints of {model_name} ({earlier[-1].name}): pass "
             "--load_model True to continue training it, or choose another --model_name")
    if not load_model:
        return None
    newest = newest_checkpoint(earlier)
    if newest is None:
        print(f"notice: no checkpoint of {model_name} in {model_dir} yet; starting fresh.")
    return newest


def initial_weights(path: str | Path, choice: str | None) -> tuple[config.NetworkConfig, dict[str, torch.Tensor]]:
    """The network sizes and float32 weights of the model file a fresh run starts from
    (--init_model): a checkpoint of this toolkit, finalised or not, of any network size. Its
    size is the run's; --network (choice), when given, must name the same."""
    path = Path(path)
    if not path.is_file():
        fail(f"--init_model {path} is not a file: give a model of this toolkit, "
             "e.g. trained_models/mosaic.pth.tar")
    if path.suffix.lower() == ".onnx":
        fail(f"--init_model {path} is an ONNX export, which cannot be trained: give the "
             ".pth.tar it was exported from")
    try:
        checkpoint = read_checkpoint(path)
    except UserError as err:
        fail(f"--init_model: {err}")
    state = checkpoint.get("state_dict", checkpoint)
    if "network" not in checkpoint or not isinstance(state, dict):
        tensors = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)
                   and not k.endswith(STALE_SUFFIXES)} if isinstance(state, dict) else {}
        layout, _ = recognise(tensors)
        what = f"holds {layout.name}, whose layout" if layout else "is not a model of this toolkit, and"
        fail(f"--init_model {path} {what} train.py cannot continue: start from a model this "
             "toolkit trained, e.g. trained_models/mosaic.pth.tar")
    sizes = config.NetworkConfig.from_dict(checkpoint["network"])
    if choice is not None and config.NETWORK_SIZES[choice] != sizes:
        fail(f"--init_model {path} holds the {config.network_name(sizes) or sizes} network, but "
             f"--network asks for {choice}: leave --network out, or start from a {choice} model")
    return sizes, {k: v.float() for k, v in state.items()}


def save_rolling(checkpoint: dict, model_dir: Path, model_name: str, step: int) -> None:
    """<stem>_step<step>.pth.tar, keeping only the newest config.KEEP_TEMP_CHECKPOINTS of them."""
    save_checkpoint(checkpoint, model_dir / f"{model_stem(model_name)}_step{step:07d}.pth.tar")
    for old in checkpoint_files(model_dir, model_name, "step")[:-config.KEEP_TEMP_CHECKPOINTS]:
        old.unlink(missing_ok=True)

"""train.py: flags -> one training loop for every device.

Each step stylises a batch of content frames (and, with --lambda_noise > 0, the same frames
with a fixed noise pattern; with --lambda_flow > 0, each frame's successor in its video; all in
the same forward call), measures content, style, total variation, noise and flow losses
through the frozen loss network, and takes an Adam step.
"""
from __future__ import annotations

import argparse
import math
import re
import signal
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, NoReturn

import torch
from torch import nn
from torch.utils.data import DataLoader
from torchvision.utils import make_grid
from tqdm import tqdm

import config
from network.loss_network import LossNetwork, build_loss_network, layer_names
from network.style_network import StylizingNetwork
from train import distributed
from train import loss as L
from train.dataset import (ContentDataset, EpochSampler, FramePairDataset, SkipUnreadable, UnreadableImages,
                           collate_skipping, default_flow_cache_dir, load_style_image)
from train.report import LossLog
from utils import (UserError, autocast, check_compiler, expected_checkpoint_bytes, fail, keep_freed_memory,
                   model_stem, precision_name, read_checkpoint, resolve_device, resolve_precision,
                   save_checkpoint, save_image, str2bool, tensor_to_array, warn_if_short_of_space)

LOSS_TERMS = ("content", "style", "regu", "noise", "flow")
# (stylised frames t+1, flow from t+1 to t, valid mask) for the flow loss
FlowPair = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def build_parser() -> argparse.ArgumentParser:
    d = config.TRAIN_DEFAULTS
    p = argparse.ArgumentParser(
        description="Train a feed-forward network for one style (perceptual losses over a frozen VGG).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--device", default=d["device"],
                   help="cuda, cpu, or auto (CUDA when present); cuda without a GPU falls back to the CPU")
    p.add_argument("--num_workers", type=int, default=d["num_workers"],
                   help="worker processes that decode and crop training images")
    p.add_argument("--precision", default=d["precision"], choices=config.PRECISION_CHOICES,
                   help="autocast precision: auto is fp16 on CUDA, bf16 on CPUs with native bf16, "
                        "else fp32; Gram matrices and losses stay float32")
    p.add_argument("--compile", type=str2bool, default=d["compile"],
                   help="torch.compile the networks: faster steps after a compile of a minute or more")
    p.add_argument("--network", choices=list(config.NETWORK_SIZES), default=None,
                   help="size of the stylizing network (config.NETWORK_SIZES): default, or fast for "
                        "real-time video on a CPU; recorded in the checkpoint, so stylize.py needs no "
                        "flag (default: default, or the resumed checkpoint's)")
    p.add_argument("--batch_size", type=int, default=d["batch_size"], help="images per training step")
    p.add_argument("--img_size", type=int, default=d["img_size"],
                   help="training images are centre-cropped and resized to img_size x img_size")
    p.add_argument("--content_dir", required=True,
                   help="folder of content images (searched recursively), e.g. extracted video frames")
    p.add_argument("--style_path", required=True, help="the style image")
    p.add_argument("--style_size", type=int, default=d["style_size"],
                   help="the style image's longer side is scaled to this many pixels (0: as it is)")
    p.add_argument("--model_dir", default=d["model_dir"], help="folder for checkpoints")
    p.add_argument("--model_name", required=True,
                   help="checkpoint file name in model_dir, e.g. mosaic.pth.tar")
    p.add_argument("--load_model", type=str2bool, default=d["load_model"],
                   help="resume from the newest checkpoint of model_name (model, optimizer, epoch, "
                        "step; the learning rate comes from --lr); starts fresh if there is none")
    p.add_argument("--save_model", type=str2bool, default=d["save_model"],
                   help="write checkpoints (every save_freq batches and at each epoch's end)")
    p.add_argument("--save_freq", type=int, default=d["save_freq"],
                   help="every this many batches: a checkpoint and sample images")
    p.add_argument("--train_output_dir", default=d["train_output_dir"],
                   help="folder for sample images and the loss log and plot")
    p.add_argument("--loss_net_choice", default=d["loss_net_choice"], choices=sorted(config.LOSS_LAYERS),
                   help="loss network architecture")
    p.add_argument("--loss_net_path", required=True,
                   help="VGG weight file (Caffe features-only or torchvision layout; see README)")
    p.add_argument("--loss_net_preprocess", default=d["loss_net_preprocess"],
                   choices=["auto", *config.PREPROCESSING],
                   help="input preprocessing of the loss network; auto picks it from the file's layout")
    p.add_argument("--epochs", type=int, default=d["epochs"],
                   help="epochs to train in this run; resuming an interrupted run finishes that run instead")
    p.add_argument("--lr", type=float, default=d["lr"], help="Adam learning rate")
    p.add_argument("--lambda_content", type=float, default=d["lambda_content"], help="weight of the content loss")
    p.add_argument("--lambda_style", type=float, default=d["lambda_style"], help="weight of the style loss")
    p.add_argument("--style_layer_weights", type=float, nargs="+", default=d["style_layer_weights"],
                   metavar="W", help="one weight per style layer (config.LOSS_LAYERS), shallow to deep; "
                   "default: 1 each")
    p.add_argument("--content_layers", nargs="+", default=d["content_layers"], metavar="LAYER",
                   help="loss-network layers the content loss compares (relu<block>_<conv>); default: "
                   + ", ".join(f"{k} {' '.join(v['content'])}" for k, v in config.LOSS_LAYERS.items()))
    p.add_argument("--loss_downscale", type=int, default=d["loss_downscale"], metavar="N",
                   help="the loss network judges the output, the input and the style image averaged "
                   "over N x N blocks: train at N times the size the picture is judged at, as a photo "
                   "larger than the training crops is (docs/shipped_models.md, point 10)")
    p.add_argument("--lambda_regu", type=float, default=d["lambda_regu"],
                   help="weight of the total-variation regulariser")
    p.add_argument("--lambda_noise", type=float, default=d["lambda_noise"],
                   help="weight of the noise (temporal stability) loss; 0 turns it off")
    p.add_argument("--noise_per_img", type=int, default=d["noise_per_img"],
                   help="number of random pixels that get noise in the noisy copy of each frame")
    p.add_argument("--noise_range", type=int, default=d["noise_range"],
                   help="noise is uniform in +-noise_range (0-255 scale), then the pixel is clipped")
    p.add_argument("--lambda_flow", type=float, default=d["lambda_flow"],
                   help="weight of the optical-flow temporal loss between consecutive frames of a "
                        "video; 0 turns it off (it costs a second frame per sample, see README)")
    p.add_argument("--flow_cache_dir", default=None,
                   help="folder for the optical flow of training pairs, computed once "
                        f"(default: $XDG_CACHE_HOME or ~/.cache, then {config.FLOW_CACHE_SUBDIR})")
    p.add_argument("--seed", type=int, default=d["seed"],
                   help="seed of the initial weights, data order and noise pattern")
    p.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    return p


def validate(args: argparse.Namespace) -> None:
    checks = [
        (args.img_size >= 16, f"--img_size must be at least 16 (got {args.img_size})"),
        (args.batch_size >= 1, f"--batch_size must be at least 1 (got {args.batch_size})"),
        (args.num_workers >= 0, f"--num_workers must be 0 or more (got {args.num_workers})"),
        (args.save_freq >= 1, f"--save_freq must be at least 1 (got {args.save_freq})"),
        (args.epochs >= 1, f"--epochs must be at least 1 (got {args.epochs})"),
        (args.lr > 0, f"--lr must be positive (got {args.lr})"),
        (args.style_size >= 0, f"--style_size must be 0 or more (got {args.style_size})"),
        (args.loss_downscale >= 1 and args.img_size % args.loss_downscale == 0
         and args.img_size // args.loss_downscale >= 16,
         f"--loss_downscale must divide --img_size into at least 16 pixels (got {args.loss_downscale} "
         f"for --img_size {args.img_size})"),
        (0 <= args.noise_range <= 255, f"--noise_range must be within 0-255 (got {args.noise_range})"),
        (args.noise_per_img >= 0, f"--noise_per_img must be 0 or more (got {args.noise_per_img})"),
    ]
    checks += [(getattr(args, f"lambda_{t}") >= 0,
                f"--lambda_{t} must be 0 or more (got {getattr(args, f'lambda_{t}')})") for t in LOSS_TERMS]
    weights = args.style_layer_weights
    if weights is not None:
        count = len(config.LOSS_LAYERS[args.loss_net_choice]["style"])
        checks += [(len(weights) == count, f"--style_layer_weights needs {count} weights, one per style layer "
                                           f"of {args.loss_net_choice} (got {len(weights)})"),
                   (min(weights) >= 0, f"--style_layer_weights must be 0 or more (got {weights})")]
    relus = [n for n in layer_names(args.loss_net_choice) if n.startswith("relu")]
    checks += [(name in relus, f"--content_layers: {name} is not a layer of {args.loss_net_choice}; "
                               f"choose among {', '.join(relus)}") for name in args.content_layers or ()]
    for ok, message in checks:
        if not ok:
            fail(message)
    if args.compile:
        check_compiler()


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


def newest_checkpoint(paths: list[Path]) -> tuple[Path, dict] | None:
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
            best = (path, checkpoint)
    if best is None and damaged:
        fail(f"none of the {len(paths)} checkpoint(s) in {paths[0].parent} loads ({damaged[0]}): "
             "restore one, or start afresh with --load_model False and another --model_name")
    return best


def choose_start(args: argparse.Namespace) -> tuple[str, dict] | None:
    """(path, checkpoint) to resume from, or None for a fresh run. A fresh run never starts
    over checkpoints of the same model (it would overwrite them)."""
    model_dir = Path(args.model_dir)
    earlier = existing_checkpoints(model_dir, args.model_name) if model_dir.is_dir() else []
    if not args.load_model and earlier and args.save_model:
        fail(f"{model_dir} already holds checkpoints of {args.model_name} ({earlier[-1].name}): pass "
             "--load_model True to continue training it, or choose another --model_name")
    if not args.load_model:
        return None
    newest = newest_checkpoint(earlier)
    if newest is None:
        print(f"notice: no checkpoint of {args.model_name} in {model_dir} yet; starting fresh.")
        return None
    return str(newest[0]), newest[1]


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopFlag:
    """Ctrl-C or SIGTERM asks the loop to stop after the current step, so the checkpoint
    written on the way out is never half an optimizer update.

    In a single process a second signal aborts the step at once. Under torchrun it does not:
    the agent passes each signal it gets on to the workers, so one Ctrl-C in a terminal reaches
    them twice (the agent's SIGKILL, 30 s after its own signal, is the hard stop there)."""

    def __init__(self, abort_on_repeat: bool = True):
        self.raised = False
        self.abort_on_repeat = abort_on_repeat

    def __call__(self, signum, frame):
        if self.raised and self.abort_on_repeat:
            raise KeyboardInterrupt
        self.raised = True

    def install(self) -> None:
        for sig in STOP_SIGNALS:
            signal.signal(sig, self)

    def hold(self) -> None:
        """Ignore further stop signals: the save on the way out must not be cut short (the
        atomic write would delete its file and leave nothing to resume)."""
        ignore_stop_signals()


def ignore_stop_signals(worker_id: int | None = None) -> None:
    """Ignore Ctrl-C and SIGTERM in this process. Also each DataLoader worker's init
    (worker_id), leaving the stop to the main process: both signals often reach every process
    of the group (a terminal's Ctrl-C; Slurm, systemd and `kill -- -PGID` stop whole groups),
    and a worker killed by SIGTERM made the main process fail with a traceback at its next batch
    instead of finishing the step and saving."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)


def loss_layers(arch: str, content_layers: list[str] | None = None) -> dict[str, tuple[str, ...]]:
    """config.LOSS_LAYERS[arch], with content_layers (--content_layers) in place of its content
    layers when given."""
    layers = dict(config.LOSS_LAYERS[arch])
    if content_layers:
        layers["content"] = tuple(content_layers)
    return layers


def style_targets(loss_net: LossNetwork, style_image: torch.Tensor,
                  layers: dict[str, tuple[str, ...]]) -> list[torch.Tensor]:
    """The style image's Gram matrices, in float32: computed once, not every step."""
    with torch.no_grad():
        features = loss_net(style_image, layers["style"])
    return [L.gram_matrix(features[n]) for n in layers["style"]]


def loss_terms(features: dict[str, torch.Tensor], targets: dict[str, torch.Tensor],
               style_grams: list[torch.Tensor], stylised: torch.Tensor,
               stylised_noisy: torch.Tensor | None, layers: dict[str, tuple[str, ...]],
               flow_pair: FlowPair | None = None,
               style_layer_weights: list[float] | None = None) -> dict[str, torch.Tensor]:
    """The loss terms before the lambdas, from the loss network's features of the stylised
    frames and the content targets (flow_pair: see FlowPair; the spatial terms use frame t
    only; style_layer_weights: see style_loss)."""
    zero = stylised.new_zeros((), dtype=torch.float32)
    return {
        "content": sum(L.content_loss(features[n], targets[n]) for n in layers["content"]),
        "style": L.style_loss([features[n] for n in layers["style"]], style_grams, style_layer_weights),
        "regu": L.total_variation(stylised),
        "noise": (L.noise_loss(stylised, stylised_noisy) if stylised_noisy is not None
                  else zero),
        "flow": L.flow_loss(flow_pair[0], stylised, *flow_pair[1:]) if flow_pair is not None else zero,
    }


def weighted_total(terms: dict[str, torch.Tensor], weights: dict[str, float]) -> torch.Tensor:
    return sum(weights[t] * terms[t] for t in LOSS_TERMS)


def training_step(model: nn.Module, loss_net: nn.Module, images: torch.Tensor,
                  style_grams: list[torch.Tensor], weights: dict[str, float],
                  noise_pattern: torch.Tensor | None, layers: dict[str, tuple[str, ...]],
                  pair: FlowPair | None = None, style_layer_weights: list[float] | None = None,
                  loss_downscale: int = 1,
                  ) -> tuple[torch.Tensor, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Total loss, the terms before the lambdas, and the images for samples, for one batch.

    model and loss_net are a StylizingNetwork and a LossNetwork, or their torch.compile'd
    wrappers. pair: the batch's next frames (not yet stylised), flows and masks for the
    flow loss, or None. loss_downscale: the content and style terms judge the pictures
    averaged over blocks of that size (L.loss_view); the other terms see them whole."""
    noisy_inputs = L.add_noise(images, noise_pattern) if noise_pattern is not None else None
    next_inputs = pair[0] if pair is not None else None
    parts = [x for x in (images, noisy_inputs, next_inputs) if x is not None]
    # clean, noisy and next frames in one call: one pass over the weights
    outputs = model(torch.cat(parts) if len(parts) > 1 else images)
    stylised, *others = outputs.split(len(images))
    stylised_noisy = others.pop(0) if noisy_inputs is not None else None
    flow_pair = (others[0], *pair[1:]) if pair is not None else None
    with torch.no_grad():
        targets = loss_net(L.loss_view(images, loss_downscale), layers["content"])
    features = loss_net(L.loss_view(stylised, loss_downscale))
    terms = loss_terms(features, targets, style_grams, stylised, stylised_noisy, layers, flow_pair,
                       style_layer_weights)
    total = weighted_total(terms, weights)
    shown = {"input": images, "output": stylised}
    if noisy_inputs is not None:
        shown.update(noisy_input=noisy_inputs, noisy_output=stylised_noisy)
    return total, terms, shown


def optimization_step(model: nn.Module, loss_net: nn.Module, optimizer: torch.optim.Optimizer,
                      scaler: torch.amp.GradScaler, dtype: torch.dtype | None, images: torch.Tensor,
                      style_grams: list[torch.Tensor], weights: dict[str, float],
                      noise_pattern: torch.Tensor | None, layers: dict[str, tuple[str, ...]],
                      pair: FlowPair | None = None, style_layer_weights: list[float] | None = None,
                      loss_downscale: int = 1,
                      ) -> tuple[torch.Tensor, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """One update of model on one batch, in autocast dtype (None: float32); returns what
    training_step returns. The scaler is enabled for float16 only."""
    with autocast(images.device, dtype):
        total, terms, shown = training_step(model, loss_net, images, style_grams, weights,
                                            noise_pattern, layers, pair, style_layer_weights,
                                            loss_downscale)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(total).backward()
    scaler.step(optimizer)
    scaler.update()
    return total, terms, shown


def make_scaler(device: torch.device, dtype: torch.dtype | None) -> torch.amp.GradScaler:
    """float16's narrow range needs loss scaling so small gradients do not flush to zero;
    bfloat16 has float32's range and needs none."""
    return torch.amp.GradScaler(device.type, enabled=dtype is torch.float16)


def save_samples(shown: dict[str, torch.Tensor], path: Path) -> None:
    """First sample of the batch: output, noisy output, input, noisy input, side by side."""
    order = [k for k in ("output", "noisy_output", "input", "noisy_input") if k in shown]
    grid = make_grid(torch.stack([shown[k][0].detach().float().clamp(0, 1) for k in order]), nrow=len(order))
    save_image(tensor_to_array(grid), path)


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    validate(args)
    cluster = distributed.join(resolve_device(args.device))
    keep_freed_memory()
    device = cluster.device
    # Steps repeat one shape (img_size crops; only an epoch's last batch may be smaller), so
    # cuDNN may time its convolution algorithms once per shape and keep the fastest.
    torch.backends.cudnn.benchmark = True
    dtype = resolve_precision(args.precision, device)
    effective_batch = args.batch_size * cluster.world_size

    model_dir, out_dir = Path(args.model_dir), Path(args.train_output_dir)
    stem = model_stem(args.model_name)
    # The first process reads the checkpoints and the others get what it read: machines that
    # do not share --model_dir still resume alike (see Cluster.decide).
    resumed = cluster.decide(lambda: choose_start(args))
    # Every input is checked before anything is written.
    dataset = (FramePairDataset(args.content_dir, args.img_size,
                                args.flow_cache_dir or default_flow_cache_dir())
               if args.lambda_flow > 0 else ContentDataset(args.content_dir, args.img_size))
    style_image = load_style_image(args.style_path, args.style_size, args.loss_downscale).to(device)
    layers = loss_layers(args.loss_net_choice, args.content_layers)
    loss_net = build_loss_network(args.loss_net_path, args.loss_net_choice,
                                  args.loss_net_preprocess, device, layers["content"])
    for folder, flag in ((model_dir, "--model_dir"), (out_dir, "--train_output_dir")):
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            fail(f"cannot create {flag} {folder} ({err.strerror}): choose a writable folder")

    torch.manual_seed(args.seed)
    net_cfg = network_config(args.network, resumed[1] if resumed else None)
    model = StylizingNetwork(net_cfg).to(device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    scaler = make_scaler(device, dtype)
    position = Position()
    if resumed:
        path, checkpoint = resumed
        model.load_state_dict(checkpoint["state_dict"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        if checkpoint.get("scaler") and scaler.is_enabled():
            scaler.load_state_dict(checkpoint["scaler"])
        for group in optimizer.param_groups:
            group["lr"] = args.lr  # the recipes change the learning rate between runs
        position = Position(checkpoint["epoch"], checkpoint["batch"], checkpoint["step"])
        earlier_batch = checkpoint.get("batch_size", args.batch_size) * checkpoint.get("world_size", 1)
        if earlier_batch != effective_batch and position.batch:
            warnings.warn("--batch_size x processes differs from the interrupted run's; the rest of "
                          "that epoch will not visit exactly the images it would have", stacklevel=1)
        print(f"resuming {path} at epoch {position.epoch + 1}, batch {position.batch}, step {position.step}")
    # An interrupted run is finished as it was started, so that repeating its command with
    # --load_model True gives what the uninterrupted run would have; a finished one trains
    # --epochs more (the recipes' one-epoch-per-run workflow).
    end_epoch = position.epoch + args.epochs
    if resumed and position.epoch < resumed[1].get("end_epoch", 0):
        end_epoch = resumed[1]["end_epoch"]
        print(f"finishing the interrupted run: epochs {position.epoch + 1} to {end_epoch}")

    if args.save_model and cluster.is_main:  # the rolling ones, one per epoch, and model_name
        warn_if_short_of_space(model_dir, expected_checkpoint_bytes(model) * (
            config.KEEP_TEMP_CHECKPOINTS + 1 + end_epoch - position.epoch), "the checkpoints of this run")
    if isinstance(dataset, FramePairDataset):
        cluster.once_per_machine(dataset.prepare)  # the others would compute the same files
    style_grams = style_targets(loss_net, style_image, layers)
    noise_pattern = None
    if args.lambda_noise > 0 and args.noise_per_img > 0:
        generator = torch.Generator().manual_seed(args.seed)
        noise_pattern = L.make_noise_pattern(args.img_size, args.img_size, args.noise_per_img,
                                             args.noise_range, generator).to(device)
    weights = {t: getattr(args, f"lambda_{t}") for t in LOSS_TERMS}
    log = LossLog(out_dir, stem)
    style_copy = out_dir / f"style_{Path(args.style_path).stem}.jpg"
    if cluster.is_main and not style_copy.exists():
        save_image(tensor_to_array(style_image), style_copy)

    def checkpoint_dict() -> dict:
        return {
            "format_version": config.CHECKPOINT_FORMAT_VERSION,
            "state_dict": model.state_dict(), "optimizer": optimizer.state_dict(),
            "scaler": scaler.state_dict() if scaler.is_enabled() else {},
            "precision": precision_name(dtype),
            "network": net_cfg.to_dict(), "network_size": config.network_name(net_cfg),
            "loss_net_choice": args.loss_net_choice,
            "loss_net_preprocess": loss_net.preprocess,
            "loss_weights": weights, "style_layer_weights": args.style_layer_weights,
            "content_layers": list(layers["content"]), "loss_downscale": args.loss_downscale,
            "style_image": Path(args.style_path).name,
            "img_size": args.img_size, "batch_size": args.batch_size, "seed": args.seed,
            "world_size": cluster.world_size,
            "epoch": position.epoch, "batch": position.batch, "step": position.step,
            "end_epoch": end_epoch,
        }

    def save_rolling() -> None:
        save_checkpoint(checkpoint_dict(), model_dir / f"{stem}_step{position.step:07d}.pth.tar")
        for old in checkpoint_files(model_dir, args.model_name, "step")[:-config.KEEP_TEMP_CHECKPOINTS]:
            old.unlink(missing_ok=True)

    # Compiled wrappers share the modules' parameters; checkpoints save the modules themselves,
    # so their keys never get the wrappers' "_orig_mod." prefix.
    step_model, step_loss_net = cluster.wrap(model), loss_net
    if args.compile:
        step_model, step_loss_net = torch.compile(step_model), torch.compile(loss_net)
    stop = StopFlag(abort_on_repeat=cluster.world_size == 1)
    stop.install()
    per_epoch = math.ceil(len(dataset) / cluster.world_size) * cluster.world_size  # see EpochSampler
    batches_per_epoch = math.ceil(per_epoch / effective_batch)
    processes = (f" ({cluster.world_size} processes x --batch_size {args.batch_size})"
                 if cluster.world_size > 1 else "")
    print(f"{len(dataset)} images, {batches_per_epoch} batches per epoch, effective batch size "
          f"{effective_batch}{processes}, on {device} in {precision_name(dtype)}"
          + (", compiled" if args.compile else ""))
    first_epoch = position.epoch
    unreadable = UnreadableImages(len(dataset), args.content_dir, report=cluster.is_main)
    for epoch in range(first_epoch, end_epoch):
        skip = position.batch * effective_batch if epoch == first_epoch else 0
        loader = DataLoader(SkipUnreadable(dataset), batch_size=args.batch_size,
                            sampler=EpochSampler(len(dataset), args.seed, epoch, skip, cluster.rank,
                                                 cluster.world_size),
                            num_workers=args.num_workers, pin_memory=device.type == "cuda",
                            collate_fn=collate_skipping, worker_init_fn=ignore_stop_signals)
        # Counted in images, so the rate reads images/s whatever the batch size.
        bar = tqdm(desc=f"epoch {epoch + 1}", total=per_epoch, initial=skip, unit="img",
                   dynamic_ncols=True, disable=not cluster.is_main)
        for batch, skipped in loader:
            unreadable.add(skipped)  # warns about new ones; stops past config.MAX_UNREADABLE_SHARE
            images, *rest = batch if isinstance(batch, (list, tuple)) else (batch,)
            images = images.to(device, non_blocking=True)
            pair = tuple(t.to(device, non_blocking=True) for t in rest) if rest else None
            total, terms, shown = optimization_step(step_model, step_loss_net, optimizer, scaler, dtype,
                                                    images, style_grams, weights, noise_pattern, layers,
                                                    pair, args.style_layer_weights, args.loss_downscale)
            bar.update(len(images) * cluster.world_size)
            position.batch += 1
            position.step += 1
            terms, stopping = cluster.agree({**terms, "total": total}, stop.raised)
            total = terms.pop("total")
            log.add(position.step, {**{t: weights[t] * terms[t] for t in LOSS_TERMS}, "total": total})
            if position.step % 10 == 0 or position.batch == 1:
                bar.set_postfix(log.latest(), refresh=False)
            if position.step % args.save_freq == 0 and cluster.is_main:
                save_samples(shown, out_dir / f"{stem}_e{epoch + 1}_s{position.step:07d}.jpg")
                log.write()
                if args.save_model:
                    save_rolling()
            if stopping:
                bar.close()
                interrupted(args, model_dir, position, checkpoint_dict, log, cluster, stop)
        bar.close()
        unreadable.end_epoch(epoch + 1)
        position.epoch, position.batch = epoch + 1, 0
        if not cluster.is_main:
            continue
        log.write()
        if args.save_model:
            checkpoint = checkpoint_dict()
            save_checkpoint(checkpoint, model_dir / f"{stem}_epoch{position.epoch}.pth.tar")
            save_checkpoint(checkpoint, model_dir / args.model_name)
            print(f"epoch {position.epoch} done: saved {model_dir / args.model_name}")
    print(f"training finished after {position.step} steps; losses in {log.csv_path}")


def interrupted(args: argparse.Namespace, model_dir: Path, position: Position,
                checkpoint_dict: Callable[[], dict], log: LossLog, cluster: distributed.Cluster,
                stop: StopFlag) -> NoReturn:
    """Save where training stands and exit with the shell's status for Ctrl-C.

    Every process gets here after the same step (Cluster.agree). Further signals are ignored
    from now on, and the others wait until the first one has saved: were they to leave at
    once, torchrun would signal the first one in the middle of its save."""
    stop.hold()
    try:
        if cluster.is_main:
            log.write()
            if args.save_model:
                path = save_checkpoint(checkpoint_dict(), model_dir / args.model_name)
                print(f"\ninterrupted: saved {path} at epoch {position.epoch + 1}, batch {position.batch}; "
                      "resume with the same command and --load_model True", file=sys.stderr)
            else:
                print("\ninterrupted (--save_model False: nothing saved)", file=sys.stderr)
    finally:
        cluster.barrier()
    sys.exit(130)

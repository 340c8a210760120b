"""Candidate sizes of the stylizing network side by side: speed, and quality after the same training.

    python benchmarks/network_sizes.py                      # speed of the default candidates
    python benchmarks/network_sizes.py --train_steps 2000 \\
        --content_dir frames/ --style_path style.jpg --loss_net_path vgg16.pth

A candidate is a name in config.NETWORK_SIZES (default, fast) or sizes written as
`channels=16-32-32,res_blocks=3,stem_kernel=5,final_kernel=5` (any config.NetworkConfig field;
the rest keep their defaults).

Speed: frames/s of the network alone, as stylisation runs it (stylization.processor.Processor:
uint8 frames in and out, layers rewritten by network/fast_inference.py, weights and activations
in each precision), on random frames already in memory, --batch_size frames per call, eager.
Every candidate and precision is one row, the rows interleaved over --rounds rounds, medians
printed, so that a change in the machine's load touches all of them alike. The weights are
random: speed does not depend on them.

Quality (--train_steps N > 0): every candidate is trained from the same seed for N steps with
the same recipe (train.py's defaults in config.TRAIN_DEFAULTS, or the flags below) on the same
images in the same order, then its unweighted content and style losses are averaged over the
first --eval_images images of --content_dir, in float32. Nothing is written to disk.
"""
from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Subset
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import config  # noqa: E402
from network.loss_network import build_loss_network  # noqa: E402
from network.style_network import StylizingNetwork  # noqa: E402
from stylization.processor import Processor, RunOptions  # noqa: E402
from train import loss as L  # noqa: E402
from train.dataset import ContentDataset, EpochSampler, load_style_image  # noqa: E402
from train.step import (LOSS_TERMS, Objective, Updater, loss_terms, make_scaler, optimization_step,  # noqa: E402
                        style_targets)
from common.devices import keep_freed_memory, resolve_device  # noqa: E402
from common.precision import autocast, precision_name, resolve_precision  # noqa: E402

DEFAULT_CANDIDATES = (
    "default",
    "fast",
    "channels=16-32-32,res_blocks=5",  # fast's widths, default's depth and 9x9 outer kernels
    "channels=16-32-48,res_blocks=3,stem_kernel=5,final_kernel=5",
    "channels=16-24-32,res_blocks=3,stem_kernel=5,final_kernel=5",
    "channels=24-32-48,res_blocks=4,stem_kernel=7,final_kernel=7",
)


def parse_candidate(text: str) -> config.NetworkConfig:
    """A config.NETWORK_SIZES name, or NetworkConfig fields as key=value pairs (see above)."""
    if text in config.NETWORK_SIZES:
        return config.NETWORK_SIZES[text]
    fields: dict = {}
    for pair in text.split(","):
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or key not in config.NetworkConfig.__dataclass_fields__:
            raise argparse.ArgumentTypeError(
                f"{text!r}: expected a name in config.NETWORK_SIZES ({', '.join(config.NETWORK_SIZES)}) "
                f"or key=value pairs of {', '.join(config.NetworkConfig.__dataclass_fields__)}")
        if key == "channels":
            fields[key] = tuple(int(v) for v in value.split("-"))
        elif key == "upsample":
            fields[key] = value.strip()
        else:
            fields[key] = int(value)
    return config.NetworkConfig(**fields)


def describe(cfg: config.NetworkConfig) -> str:
    name = next((n for n, c in config.NETWORK_SIZES.items() if c == cfg), None)
    sizes = (f"{'-'.join(map(str, cfg.channels))}, {cfg.res_blocks} res, "
             f"{cfg.stem_kernel}/{cfg.kernel}/{cfg.final_kernel} kernels")
    return f"{name} ({sizes})" if name else sizes


def gflop_per_frame(cfg: config.NetworkConfig, size: tuple[int, int]) -> float:
    """Convolution GFLOP of one frame through the network as trained."""
    counter = FlopCounterMode(display=False)
    with counter, torch.inference_mode():
        StylizingNetwork(cfg).eval()(torch.rand(1, 3, size[1], size[0]))
    return counter.get_total_flops() / 1e9


def frames_per_second(processor: Processor, frames: list[np.ndarray], batch_size: int) -> float:
    """Frames/s over `frames`, after one batch of warm-up."""
    batches = [frames[i:i + batch_size] for i in range(0, len(frames), batch_size)]
    processor(batches[0])
    start = time.perf_counter()
    for batch in batches:
        processor(batch)
    return len(frames) / (time.perf_counter() - start)


@dataclass(frozen=True)
class SpeedSettings:
    """How the speed table is measured: --size, --frames, --batch_size and --rounds."""
    size: tuple[int, int]  # width, height
    frames: int
    batch_size: int
    rounds: int


def measure_speed(candidates: list[config.NetworkConfig], precisions: list[str], device: torch.device,
                  speed: SpeedSettings) -> dict[tuple[int, str], float]:
    """Median frames/s per (candidate index, precision name as used)."""
    rng = np.random.default_rng(0)
    width, height = speed.size
    frames = [rng.integers(0, 256, (height, width, 3), dtype=np.uint8) for _ in range(speed.frames)]
    processors = {}
    for (index, cfg), name in itertools.product(enumerate(candidates), precisions):
        torch.manual_seed(0)
        dtype = resolve_precision(name, device)
        processors[index, precision_name(dtype)] = Processor(
            StylizingNetwork(cfg).eval(), device, RunOptions(dtype=dtype, batch_size=speed.batch_size))
    for processor in processors.values():  # the first calls of a process are slower: not counted
        processor(frames[:speed.batch_size])
    measured: dict[tuple[int, str], list[float]] = {key: [] for key in processors}
    for round_ in range(speed.rounds):
        for key, processor in processors.items():
            measured[key].append(frames_per_second(processor, frames, speed.batch_size))
            print(f"round {round_ + 1}: {describe(candidates[key[0]])} {key[1]}: "
                  f"{measured[key][-1]:.2f} frames/s", flush=True)
    return {key: statistics.median(values) for key, values in measured.items()}


def train_and_evaluate(cfg: config.NetworkConfig, args: argparse.Namespace, device: torch.device,
                       dtype: torch.dtype | None) -> dict[str, float]:
    """Train a fresh network of sizes cfg for args.train_steps steps; its mean unweighted
    content and style losses on the first args.eval_images images, and the training time."""
    dataset = ContentDataset(args.content_dir, args.img_size)
    loss_net = build_loss_network(args.loss_net_path, args.loss_net_choice, "auto", device)
    layers = config.LOSS_LAYERS[args.loss_net_choice]
    style_grams = style_targets(loss_net, load_style_image(args.style_path, args.style_size).to(device),
                                layers)
    # The flow loss needs frame pairs; the comparison leaves it out.
    weights = {t: getattr(args, f"lambda_{t}", 0.0) for t in LOSS_TERMS}
    noise_pattern = None
    if args.lambda_noise > 0 and args.noise_per_img > 0:
        generator = torch.Generator().manual_seed(args.seed)
        noise_pattern = L.make_noise_pattern(args.img_size, args.img_size, args.noise_per_img,
                                             args.noise_range, generator).to(device)
    torch.manual_seed(args.seed)
    model = StylizingNetwork(cfg).to(device).train()
    updater = Updater(torch.optim.Adam(model.parameters(), lr=args.lr), make_scaler(device, dtype), dtype)
    objective = Objective(style_grams, layers, weights, noise_pattern=noise_pattern)
    step, start = 0, time.perf_counter()
    for epoch in itertools.count():
        loader = DataLoader(dataset, batch_size=args.train_batch_size,
                            sampler=EpochSampler(len(dataset), args.seed, epoch),
                            num_workers=args.num_workers)
        for images in loader:
            optimization_step(model, loss_net, updater, images.to(device), objective)
            step += 1
            if step % 100 == 0:
                print(f"  {describe(cfg)}: step {step}/{args.train_steps}", flush=True)
            if step == args.train_steps:
                break
        if step == args.train_steps:
            break
    seconds = time.perf_counter() - start
    model.eval()
    totals = {"content": 0.0, "style": 0.0}
    evaluated = Subset(dataset, range(min(args.eval_images, len(dataset))))
    with torch.no_grad(), autocast(device, None):
        for images in DataLoader(evaluated, batch_size=1):
            images = images.to(device)
            stylised = model(images)
            terms = loss_terms(loss_net(stylised), loss_net(images, layers["content"]), stylised, None,
                               objective)
            for name in totals:
                totals[name] += float(terms[name]) / len(evaluated)
    return {**totals, "seconds": seconds}


def build_parser() -> argparse.ArgumentParser:
    d = config.TRAIN_DEFAULTS
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--candidates", nargs="+", type=parse_candidate,
                        default=[parse_candidate(c) for c in DEFAULT_CANDIDATES],
                        help="names in config.NETWORK_SIZES or key=value sizes; the first is the "
                             "reference of the ratios (default: %(default)s)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--size", default="640x360", help="WIDTHxHEIGHT of the frames")
    parser.add_argument("--frames", type=int, default=40, help="frames per measurement")
    parser.add_argument("--batch_size", type=int, default=2, help="frames per network call")
    parser.add_argument("--precisions", default=None,
                        help="comma-separated (default: fp32,bf16 on a CPU, fp32,fp16,bf16 on CUDA)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of speed measurements (medians)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: one per core)")
    parser.add_argument("--skip_speed", action="store_true", help="only the training comparison")
    train = parser.add_argument_group("quality: the same training for every candidate")
    train.add_argument("--train_steps", type=int, default=0, help="steps per candidate (0: no training)")
    train.add_argument("--content_dir", help="training images (as train.py's --content_dir)")
    train.add_argument("--style_path", help="the style image")
    train.add_argument("--loss_net_path", help="VGG weight file")
    train.add_argument("--loss_net_choice", default=d["loss_net_choice"], choices=sorted(config.LOSS_LAYERS))
    train.add_argument("--eval_images", type=int, default=32,
                       help="the losses are averaged over this many of the first content images")
    train.add_argument("--train_precision", default=d["precision"], choices=config.PRECISION_CHOICES)
    train.add_argument("--train_batch_size", type=int, default=4, help="images per training step")
    train.add_argument("--num_workers", type=int, default=d["num_workers"])
    for name in ("img_size", "style_size", "lr", "lambda_content", "lambda_style", "lambda_regu",
                 "lambda_noise", "noise_per_img", "noise_range", "seed"):
        train.add_argument(f"--{name}", type=type(d[name]), default=d[name])
    return parser


def speed_table(candidates: list[config.NetworkConfig], precisions: str | None, device: torch.device,
                speed: SpeedSettings) -> None:
    """Measure every candidate in every precision (--precisions, or the device's defaults) and
    print the speed table."""
    default_precisions = ["fp32", "fp16", "bf16"] if device.type == "cuda" else ["fp32", "bf16"]
    fps = measure_speed(candidates, precisions.split(",") if precisions else default_precisions, device, speed)
    used = list(dict.fromkeys(p for _, p in fps))
    size = speed.size
    print(f"\nnetwork alone (Processor, eager, batch {speed.batch_size}), {size[0]}x{size[1]}, "
          f"frames/s: medians of {speed.rounds} round(s) of {speed.frames} frames\n")
    print("| network | parameters | GFLOP/frame | " + " | ".join(f"{p} frames/s | {p} vs first"
                                                         for p in used) + " |")
    print("| :-- | --: | --: | " + " | ".join("--: | --:" for _ in used) + " |")
    for index, cfg in enumerate(candidates):
        parameters = sum(p.numel() for p in StylizingNetwork(cfg).parameters())
        cells = " | ".join(f"{fps[index, p]:.2f} | {fps[index, p] / fps[0, p]:.2f}x" for p in used)
        print(f"| {describe(cfg)} | {parameters / 1e3:.0f} k | {gflop_per_frame(cfg, size):.2f} | {cells} |")


def quality_table(args: argparse.Namespace, device: torch.device) -> None:
    """Train every candidate of args as its flags say (train_and_evaluate); print the loss table."""
    candidates = args.candidates
    dtype = resolve_precision(args.train_precision, device)
    results = []
    for cfg in candidates:
        print(f"training {describe(cfg)} for {args.train_steps} steps", flush=True)
        results.append(train_and_evaluate(cfg, args, device, dtype))
    print(f"\nafter {args.train_steps} steps of batch {args.train_batch_size} at {args.img_size} px "
          f"({precision_name(dtype)}, seed {args.seed}, lr {args.lr}, lambdas content "
          f"{args.lambda_content} style {args.lambda_style} regu {args.lambda_regu} noise "
          f"{args.lambda_noise}); unweighted losses, mean over "
          f"{min(args.eval_images, len(ContentDataset(args.content_dir, args.img_size)))} images\n")
    print("| network | content loss | vs first | style loss | vs first | training s |")
    print("| :-- | --: | --: | --: | --: | --: |")
    first = results[0]
    for cfg, result in zip(candidates, results):
        print(f"| {describe(cfg)} | {result['content']:.4f} | {result['content'] / first['content']:.2f}x | "
              f"{result['style']:.4f} | {result['style'] / first['style']:.2f}x | {result['seconds']:.0f} |")


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.train_steps and not (args.content_dir and args.style_path and args.loss_net_path):
        parser.error("--train_steps needs --content_dir, --style_path and --loss_net_path")
    if args.threads:
        torch.set_num_threads(args.threads)
    keep_freed_memory()  # as stylize.py and train.py run
    device = resolve_device(args.device)
    size = tuple(int(v) for v in args.size.lower().split("x"))
    print(f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} threads", flush=True)
    if not args.skip_speed:
        speed_table(args.candidates, args.precisions, device,
                    SpeedSettings(size, args.frames, args.batch_size, args.rounds))
    if args.train_steps:
        quality_table(args, device)

if __name__ == "__main__":
    main()

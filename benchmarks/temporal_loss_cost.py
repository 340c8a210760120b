"""What the temporal losses cost per training step: plain, noise loss, flow loss, both.

    python benchmarks/temporal_loss_cost.py --loss_net_path ../shared/weights/vgg16_hed_features.pth \\
        --content_dir /tmp/data/frames --style_path ../shared/media/style/mosaic.jpg

Times train.step.optimization_step (as train.py runs it) on the same batches for the four
configurations, taking turns step by step so that a busy machine slows all of them alike,
and prints the median step time of each with its ratio to the plain step. The flow loss
also needs each pair's optical flow once (cached on disk): the time per pair is printed too.
Data loading is left out (the batches are decoded up front); so are the first --warmup rounds.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import config  # noqa: E402
from common.precision import precision_name, resolve_precision  # noqa: E402
from network.loss_network import build_loss_network  # noqa: E402
from network.style_network import StylizingNetwork  # noqa: E402
from train import loss as L  # noqa: E402
from train.dataset import FramePairDataset, load_style_image  # noqa: E402
from train.step import LOSS_TERMS, Objective, Updater, make_scaler, optimization_step, style_targets  # noqa: E402

VARIANTS = {"plain": (0, 0), "noise": (1, 0), "flow": (0, 1), "noise + flow": (1, 1)}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--loss_net_path", required=True)
    p.add_argument("--content_dir", required=True)
    p.add_argument("--style_path", required=True)
    p.add_argument("--img_size", type=int, default=128)
    p.add_argument("--batch_size", type=int, default=4)
    p.add_argument("--rounds", type=int, default=8, help="timed steps per configuration")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--precision", default="fp32", choices=config.PRECISION_CHOICES)
    args = p.parse_args(argv)

    device = torch.device("cpu")
    dtype = resolve_precision(args.precision, device)
    layers = config.LOSS_LAYERS["VGG16"]
    loss_net = build_loss_network(args.loss_net_path, "VGG16", "auto", device)
    grams = style_targets(loss_net, load_style_image(args.style_path, 384), layers)
    with tempfile.TemporaryDirectory() as cache:
        dataset = FramePairDataset(args.content_dir, args.img_size, cache)
        with_next = [i for i, j in enumerate(dataset.next) if j is not None]
        start = time.perf_counter()
        computed = dataset.prepare(progress=False)
        flow_seconds = (time.perf_counter() - start) / max(computed, 1)
        generator = torch.Generator().manual_seed(0)
        order = torch.randperm(len(with_next), generator=generator).tolist()
        batches = []
        for r in range(args.rounds + args.warmup):
            items = [dataset[with_next[order[(r * args.batch_size + k) % len(order)]]]
                     for k in range(args.batch_size)]
            batches.append([torch.stack(parts) for parts in zip(*items)])
    noise = L.make_noise_pattern(args.img_size, args.img_size, 10000, 200, torch.Generator().manual_seed(0))
    runs = {}
    for name in VARIANTS:
        torch.manual_seed(0)
        model = StylizingNetwork(config.NetworkConfig()).train()
        runs[name] = (model, Updater(torch.optim.Adam(model.parameters(), lr=5e-4), make_scaler(device, dtype), dtype), [])
    for r, (images, following, flow, valid) in enumerate(batches):
        for name, (noise_on, flow_on) in VARIANTS.items():
            model, updater, times = runs[name]
            objective = Objective(grams, layers, {t: 1.0 for t in LOSS_TERMS},
                                  noise_pattern=noise if noise_on else None)
            start = time.perf_counter()
            optimization_step(model, loss_net, updater, images, objective,
                              (following, flow, valid) if flow_on else None)
            if r >= args.warmup:
                times.append(time.perf_counter() - start)
    plain = statistics.median(runs["plain"][3])
    print(f"\n{precision_name(dtype)}, img_size {args.img_size}, batch {args.batch_size}, "
          f"{args.rounds} timed steps each (median), {torch.get_num_threads()} threads\n")
    print("| loss terms | s/step | vs plain |")
    print("| :-- | --: | --: |")
    for name, (_, _, times) in runs.items():
        print(f"| {name} | {statistics.median(times):.2f} | {statistics.median(times) / plain:.2f}x |")
    print(f"\noptical flow and mask, once per training pair: {1000 * flow_seconds:.1f} ms "
          f"({computed} pairs at {args.img_size}x{args.img_size})")


if __name__ == "__main__":
    main()
